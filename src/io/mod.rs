//! Lease I/O: O_DIRECT reads and writes on files and block devices, each
//! bounded by a timeout, and [`Area`]s that refuse any write outside the
//! byte range they were opened for.

mod buf;

pub use buf::{AlignedBuf, BUF_ALIGN};

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// I/Os that did not complete within their timeout and were abandoned; their
/// threads still own the buffers until the kernel returns.
static ABANDONED_IOS: AtomicU64 = AtomicU64::new(0);

pub fn abandoned_ios() -> u64 {
    ABANDONED_IOS.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("cannot open {path}: {source}{}", hint_for_open(source))]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{op} of {len} bytes at offset {offset} of {path} did not complete within {timeout:?} (abandoned)"
    )]
    Timeout {
        path: PathBuf,
        op: &'static str,
        offset: u64,
        len: usize,
        timeout: Duration,
    },
    #[error("{path} is too short: reading {len} bytes at offset {offset} needs {} bytes, it has {size}", offset + *len as u64)]
    Short {
        path: PathBuf,
        offset: u64,
        len: usize,
        size: u64,
    },
    #[error("{path}: writing {len} bytes at offset {offset} needs {} bytes, the device has only {size}; nothing was written", offset + *len as u64)]
    DeviceTooShort {
        path: PathBuf,
        offset: u64,
        len: usize,
        size: u64,
    },
    #[error(
        "{path}: offset {offset} / length {len} is not a multiple of the {sector_size}-byte sector size"
    )]
    Misaligned {
        path: PathBuf,
        offset: u64,
        len: usize,
        sector_size: u32,
    },
    #[error(
        "{path} has {device_sector}-byte sectors; a {sector_size}-byte sector layout cannot be used on it (use -Z 4096)"
    )]
    SectorTooSmall {
        path: PathBuf,
        sector_size: u32,
        device_sector: u32,
    },
    #[error(
        "refusing to write {len} bytes at offset {offset} of {path}: outside the area {area_offset}..{area_end}"
    )]
    OutsideArea {
        path: PathBuf,
        offset: u64,
        len: usize,
        area_offset: u64,
        area_end: u64,
    },
    #[error("{op} of {len} bytes at offset {offset} of {path} failed: {source}")]
    Os {
        path: PathBuf,
        op: &'static str,
        offset: u64,
        len: usize,
        source: std::io::Error,
    },
}

fn hint_for_open(e: &std::io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::EINVAL) {
        " (the file system does not support O_DIRECT; lease files cannot live on tmpfs)"
    } else {
        ""
    }
}

impl IoError {
    /// The number sanlock reports for the same failure.
    pub fn sanlk_rv(&self) -> i32 {
        match self {
            IoError::Open { source, .. } | IoError::Os { source, .. } => {
                -source.raw_os_error().unwrap_or(libc::EIO)
            }
            IoError::Timeout { .. } => crate::rv::SANLK_AIO_TIMEOUT,
            IoError::Short { .. } => -libc::EMSGSIZE,
            // sanlock's write runs short where it starts inside the device
            // (-EMSGSIZE) and fails where it starts past its end (-ENOSPC);
            // we refuse both before writing anything, with its numbers.
            IoError::DeviceTooShort { offset, size, .. } if offset < size => -libc::EMSGSIZE,
            IoError::DeviceTooShort { .. } => -libc::ENOSPC,
            IoError::Misaligned { .. } | IoError::SectorTooSmall { .. } => -libc::EINVAL,
            IoError::OutsideArea { .. } => -libc::EINVAL,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskKind {
    File,
    Block,
}

/// An open lease file or block device (a clone shares the open file).
#[derive(Clone)]
pub struct Disk {
    file: Arc<File>,
    path: PathBuf,
    pub kind: DiskKind,
    /// The smallest unit O_DIRECT allows: BLKSSZGET for devices, 512 for files
    /// (what sanlock assumes for files).
    pub device_sector: u32,
    /// Bytes in a block device (or a file's current length).
    pub size: u64,
}

nix::ioctl_read_bad!(blksszget, 0x1268, libc::c_int);
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

impl Disk {
    /// Opens `path` O_RDWR | O_DIRECT | O_SYNC, as sanlock does.
    pub fn open(path: &Path) -> Result<Disk, IoError> {
        Self::open_mode(path, true)
    }

    /// Opens for reading only (inspection commands that never write).
    pub fn open_readonly(path: &Path) -> Result<Disk, IoError> {
        Self::open_mode(path, false)
    }

    fn open_mode(path: &Path, write: bool) -> Result<Disk, IoError> {
        let open_err = |source| IoError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_DIRECT | libc::O_SYNC)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let (kind, device_sector, size) = if meta.file_type().is_block_device() {
            let fd = file.as_raw_fd();
            let mut ss: libc::c_int = 0;
            let mut bytes: u64 = 0;
            // SAFETY: fd is an open block device; both ioctls write one integer.
            unsafe {
                blksszget(fd, &mut ss).map_err(|e| open_err(e.into()))?;
                blkgetsize64(fd, &mut bytes).map_err(|e| open_err(e.into()))?;
            }
            (DiskKind::Block, ss as u32, bytes)
        } else {
            (DiskKind::File, 512, meta.len())
        };
        Ok(Disk {
            file: Arc::new(file),
            path: path.to_path_buf(),
            kind,
            device_sector,
            size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_aligned(&self, offset: u64, len: usize) -> Result<(), IoError> {
        let ss = self.device_sector as u64;
        if !offset.is_multiple_of(ss) || !(len as u64).is_multiple_of(ss) || len == 0 {
            return Err(IoError::Misaligned {
                path: self.path.clone(),
                offset,
                len,
                sector_size: self.device_sector,
            });
        }
        Ok(())
    }

    /// A layout with `sector_size` sectors can only live on a device whose
    /// own sectors are not larger.
    pub fn check_sector_size(&self, sector_size: u32) -> Result<(), IoError> {
        if sector_size < self.device_sector {
            return Err(IoError::SectorTooSmall {
                path: self.path.clone(),
                sector_size,
                device_sector: self.device_sector,
            });
        }
        Ok(())
    }

    /// Reads exactly `len` bytes at `offset`, or fails (short, error, timeout).
    pub fn read(&self, offset: u64, len: usize, timeout: Duration) -> Result<AlignedBuf, IoError> {
        self.check_aligned(offset, len)?;
        let file = self.file.clone();
        let res = run_bounded(timeout, move || {
            let mut buf = AlignedBuf::zeroed(len);
            let mut pos = 0usize;
            while pos < len {
                match file.read_at(&mut buf[pos..], offset + pos as u64) {
                    Ok(0) => return (buf, Ok(pos)),
                    Ok(n) => pos += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return (buf, Err(e)),
                }
            }
            (buf, Ok(pos))
        });
        match res {
            None => Err(IoError::Timeout {
                path: self.path.clone(),
                op: "read",
                offset,
                len,
                timeout,
            }),
            Some((buf, Ok(n))) if n == len => Ok(buf),
            Some((_, Ok(_))) => Err(IoError::Short {
                path: self.path.clone(),
                offset,
                len,
                size: self.current_size(),
            }),
            Some((_, Err(source))) => Err(IoError::Os {
                path: self.path.clone(),
                op: "read",
                offset,
                len,
                source,
            }),
        }
    }

    /// Writes all of `data` at `offset`. A block device too short for the
    /// write is refused before anything is written; a regular file grows,
    /// as it does under sanlock.
    pub fn write(&self, offset: u64, data: &[u8], timeout: Duration) -> Result<(), IoError> {
        let len = data.len();
        self.check_aligned(offset, len)?;
        if self.kind == DiskKind::Block && offset + len as u64 > self.size {
            return Err(IoError::DeviceTooShort {
                path: self.path.clone(),
                offset,
                len,
                size: self.size,
            });
        }
        let file = self.file.clone();
        let buf = AlignedBuf::from_slice(data);
        let res = run_bounded(timeout, move || {
            let r = file.write_all_at(&buf, offset);
            drop(buf);
            r
        });
        match res {
            None => Err(IoError::Timeout {
                path: self.path.clone(),
                op: "write",
                offset,
                len,
                timeout,
            }),
            Some(Ok(())) => Ok(()),
            Some(Err(source)) => Err(IoError::Os {
                path: self.path.clone(),
                op: "write",
                offset,
                len,
                source,
            }),
        }
    }

    fn current_size(&self) -> u64 {
        match self.kind {
            DiskKind::Block => self.size,
            DiskKind::File => self.file.metadata().map(|m| m.len()).unwrap_or(self.size),
        }
    }

    /// What the open file is now and what its path names now (None: no
    /// such path), by fstat and stat (and the device's size by
    /// BLKGETSIZE64), within `timeout`: None if they did not answer (a
    /// hung NFS server hangs stat as it hangs reads).
    pub fn identity(&self, timeout: Duration) -> Option<(FileId, Option<FileId>)> {
        let file = self.file.clone();
        let path = self.path.clone();
        let kind = self.kind;
        run_bounded(timeout, move || {
            use std::os::unix::fs::MetadataExt;
            let id = |m: &std::fs::Metadata| FileId {
                dev: m.dev(),
                ino: m.ino(),
                rdev: m.rdev(),
                nlink: m.nlink(),
                size: m.len(),
            };
            let mut open = id(&file.metadata().ok()?);
            if kind == DiskKind::Block {
                let mut bytes: u64 = 0;
                // SAFETY: an open block device; the ioctl writes one u64.
                if unsafe { blkgetsize64(file.as_raw_fd(), &mut bytes) }.is_ok() {
                    open.size = bytes;
                }
            }
            let named = std::fs::metadata(&path).ok().map(|m| id(&m));
            Some((open, named))
        })
        .flatten()
    }
}

/// A file as stat sees it: which one (dev, ino; rdev for a device node),
/// how many names it has, how long it is (a device's size for devices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub rdev: u64,
    pub nlink: u64,
    pub size: u64,
}

/// What happened to a lease file that was opened, as its path and its
/// open descriptor now tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileProblem {
    /// No file by that name any more (or the open one has no name).
    Deleted,
    /// The name leads to another file or device than the one opened.
    Replaced,
    /// Shorter than the area used in it.
    Truncated,
}

impl FileProblem {
    pub fn as_str(self) -> &'static str {
        match self {
            FileProblem::Deleted => "deleted",
            FileProblem::Replaced => "replaced",
            FileProblem::Truncated => "truncated",
        }
    }

    /// The judgement: `open` is the descriptor's file now, `named` what
    /// the path names now, `need` the bytes the area needs (offset + len).
    pub fn of(kind: DiskKind, open: &FileId, named: Option<&FileId>, need: u64) -> Option<Self> {
        let Some(named) = named else {
            return Some(FileProblem::Deleted);
        };
        let same = match kind {
            DiskKind::Block => named.rdev == open.rdev,
            DiskKind::File => (named.dev, named.ino) == (open.dev, open.ino),
        };
        if !same {
            return Some(FileProblem::Replaced);
        }
        if kind == DiskKind::File && open.nlink == 0 {
            return Some(FileProblem::Deleted);
        }
        (open.size < need).then_some(FileProblem::Truncated)
    }
}

/// Runs blocking I/O on an I/O thread and waits at most `timeout`. On
/// timeout the thread (with the buffer it owns) is left to finish alone;
/// it rejoins the pool only when the kernel has returned.
fn run_bounded<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    if !pool::submit(Box::new(move || {
        let _ = tx.send(f());
    })) {
        return None;
    }
    match rx.recv_timeout(timeout) {
        Ok(v) => Some(v),
        Err(_) => {
            ABANDONED_IOS.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Reusable I/O threads: spawning one per I/O cost more than the I/O on
/// a busy 2-core host. A thread whose I/O hangs is simply not idle; new
/// work goes to another (or a new) thread. After a burst of I/O the pool
/// shrinks back: a few idle threads are kept, and they too exit after a
/// minute without work.
mod pool {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    pub type Job = Box<dyn FnOnce() + Send>;

    /// Idle threads kept beyond this many exit.
    const MAX_IDLE: usize = 8;
    /// An idle thread exits after this long without work.
    const IDLE_EXIT: Duration = Duration::from_secs(60);
    /// A job is a read or a write and its buffer's handover: shallow.
    const STACK: usize = 256 * 1024;

    static IDLE: Mutex<Vec<(u64, mpsc::Sender<Job>)>> = Mutex::new(Vec::new());
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);

    pub fn submit(job: Job) -> bool {
        let mut job = job;
        loop {
            let Some((_, tx)) = IDLE.lock().unwrap().pop() else {
                break;
            };
            match tx.send(job) {
                Ok(()) => return true,
                Err(mpsc::SendError(j)) => job = j, // that thread has exited
            }
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        std::thread::Builder::new()
            .name("hactl-io".into())
            .stack_size(STACK)
            .spawn(move || {
                let mut next = Some(job);
                while let Some(j) = next.take() {
                    j();
                    {
                        let mut idle = IDLE.lock().unwrap();
                        if idle.len() >= MAX_IDLE {
                            return;
                        }
                        idle.push((id, tx.clone()));
                    }
                    next = match rx.recv_timeout(IDLE_EXIT) {
                        Ok(j) => Some(j),
                        Err(_) => {
                            let mut idle = IDLE.lock().unwrap();
                            if let Some(i) = idle.iter().position(|(i, _)| *i == id) {
                                idle.swap_remove(i);
                                return;
                            }
                            drop(idle);
                            // A submitter took our sender: its job is coming.
                            rx.recv().ok()
                        }
                    };
                }
            })
            .is_ok()
    }
}

/// A byte range of a disk that one lease structure owns (a lockspace, a
/// resource lease, a resource index). Writes through it cannot leave it.
pub struct Area<'d> {
    pub disk: &'d Disk,
    pub offset: u64,
    pub len: u64,
    pub timeout: Duration,
}

impl<'d> Area<'d> {
    /// An area of `len` bytes at `offset`. On a block device the whole area
    /// must fit, so that a sequence of writes is refused before the first one
    /// rather than failing half way through.
    pub fn new(disk: &'d Disk, offset: u64, len: u64, timeout: Duration) -> Result<Self, IoError> {
        if disk.kind == DiskKind::Block && offset.checked_add(len).is_none_or(|end| end > disk.size)
        {
            return Err(IoError::DeviceTooShort {
                path: disk.path.clone(),
                offset,
                len: len as usize,
                size: disk.size,
            });
        }
        Ok(Area {
            disk,
            offset,
            len,
            timeout,
        })
    }

    fn check_inside(&self, rel: u64, len: usize) -> Result<(), IoError> {
        if rel.checked_add(len as u64).is_none_or(|end| end > self.len) {
            return Err(IoError::OutsideArea {
                path: self.disk.path.clone(),
                offset: self.offset + rel,
                len,
                area_offset: self.offset,
                area_end: self.offset + self.len,
            });
        }
        Ok(())
    }

    /// Reads `len` bytes at `rel` bytes into the area.
    pub fn read(&self, rel: u64, len: usize) -> Result<AlignedBuf, IoError> {
        self.check_inside(rel, len)?;
        self.disk.read(self.offset + rel, len, self.timeout)
    }

    /// Writes `data` at `rel` bytes into the area; refuses anything that
    /// would touch a byte outside it.
    pub fn write(&self, rel: u64, data: &[u8]) -> Result<(), IoError> {
        self.check_inside(rel, data.len())?;
        self.disk.write(self.offset + rel, data, self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity check on a real file: deleted, replaced by a rename,
    /// truncated, and renamed back (the same file again: no problem).
    #[test]
    fn a_file_deleted_replaced_or_truncated_under_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids");
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let disk = Disk::open(&path).unwrap();
        let t = Duration::from_secs(5);
        let judge = |disk: &Disk| {
            let (open, named) = disk.identity(t).unwrap();
            FileProblem::of(disk.kind, &open, named.as_ref(), 8192)
        };
        assert_eq!(judge(&disk), None);
        let aside = dir.path().join("aside");
        std::fs::rename(&path, &aside).unwrap();
        assert_eq!(judge(&disk), Some(FileProblem::Deleted));
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        assert_eq!(judge(&disk), Some(FileProblem::Replaced));
        std::fs::rename(&aside, &path).unwrap();
        assert_eq!(judge(&disk), None, "the same file back under its name");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        assert_eq!(judge(&disk), Some(FileProblem::Truncated));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(judge(&disk), Some(FileProblem::Deleted));
    }
}
