//! Lease I/O: O_DIRECT reads and writes on files and block devices, each
//! bounded by a timeout, and [`Area`]s that refuse any write outside the
//! byte range they were opened for.

mod buf;
pub mod engine;

pub use buf::{AlignedBuf, BUF_ALIGN, IoData, PoolDemand, decay_pool, drain_pool};
use engine::{Outcome, Request, Storage};

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// I/Os that did not complete within their timeout; the engine holds
/// their buffers until the kernel returns.
pub fn abandoned_ios() -> u64 {
    engine::get()
        .stats
        .timed_out
        .load(std::sync::atomic::Ordering::Relaxed)
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

/// Whether `file` is on ext4 or xfs, whose O_DIRECT reads and writes
/// io_uring may start without a worker (see [`Storage::nowait`]).
fn local_fs(file: &File) -> bool {
    const EXT4_SUPER_MAGIC: i64 = 0xEF53;
    const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the struct of an open descriptor.
    if unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstatfs succeeded, so the struct is filled.
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
    let f_type = unsafe { st.assume_init() }.f_type as i64;
    matches!(f_type, EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC)
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
    /// The storage under it (the device for a block device, the file
    /// system's for a file), for the engine's bound on hung I/O, and
    /// whether its I/O may skip the io-wq worker.
    storage: Storage,
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
        use std::os::unix::fs::MetadataExt;
        let storage = if meta.file_type().is_block_device() {
            Storage {
                dev: meta.rdev(),
                nowait: true,
            }
        } else {
            Storage {
                dev: meta.dev(),
                nowait: local_fs(&file),
            }
        };
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
            storage,
        })
    }

    /// No other clone of this disk is open (its drop closes the file).
    pub fn is_last_ref(&self) -> bool {
        Arc::strong_count(&self.file) == 1
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
        let out = engine::get().wait(
            self.file.clone(),
            self.storage,
            offset,
            Request::Read { len },
            timeout,
        );
        self.read_outcome(offset, len, timeout, out)
    }

    /// [`Disk::read`] without waiting: `done` runs on the engine thread.
    pub fn read_then(
        &self,
        offset: u64,
        len: usize,
        timeout: Duration,
        done: impl FnOnce(Result<AlignedBuf, IoError>) + Send + 'static,
    ) {
        if let Err(e) = self.check_aligned(offset, len) {
            return engine::get().soon(Box::new(move || done(Err(e))));
        }
        let disk = self.clone();
        engine::get().submit(
            self.file.clone(),
            self.storage,
            offset,
            Request::Read { len },
            timeout,
            Box::new(move |out| done(disk.read_outcome(offset, len, timeout, out))),
        );
    }

    fn read_outcome(
        &self,
        offset: u64,
        len: usize,
        timeout: Duration,
        out: Outcome,
    ) -> Result<AlignedBuf, IoError> {
        match out {
            Outcome::TimedOut => Err(IoError::Timeout {
                path: self.path.clone(),
                op: "read",
                offset,
                len,
                timeout,
            }),
            Outcome::Done { n, buf } if n == len => Ok(buf),
            // O_DIRECT reads stop short only at the end of the file or device.
            Outcome::Done { .. } => Err(IoError::Short {
                path: self.path.clone(),
                offset,
                len,
                size: self.current_size(),
            }),
            Outcome::Failed(source) => Err(IoError::Os {
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
        self.check_write(offset, data.len())?;
        let buf = AlignedBuf::from_slice(data);
        let out = engine::get().wait(
            self.file.clone(),
            self.storage,
            offset,
            Request::Write { buf },
            timeout,
        );
        self.write_outcome(offset, data.len(), timeout, out)
    }

    /// [`Disk::write`] without waiting: `done` runs on the engine thread.
    pub fn write_then(
        &self,
        offset: u64,
        data: &[u8],
        timeout: Duration,
        done: impl FnOnce(Result<(), IoError>) + Send + 'static,
    ) {
        let len = data.len();
        if let Err(e) = self.check_write(offset, len) {
            return engine::get().soon(Box::new(move || done(Err(e))));
        }
        let disk = self.clone();
        engine::get().submit(
            self.file.clone(),
            self.storage,
            offset,
            Request::Write {
                buf: AlignedBuf::from_slice(data),
            },
            timeout,
            Box::new(move |out| done(disk.write_outcome(offset, len, timeout, out))),
        );
    }

    fn check_write(&self, offset: u64, len: usize) -> Result<(), IoError> {
        self.check_aligned(offset, len)?;
        if self.kind == DiskKind::Block && offset + len as u64 > self.size {
            return Err(IoError::DeviceTooShort {
                path: self.path.clone(),
                offset,
                len,
                size: self.size,
            });
        }
        Ok(())
    }

    fn write_outcome(
        &self,
        offset: u64,
        len: usize,
        timeout: Duration,
        out: Outcome,
    ) -> Result<(), IoError> {
        let source = match out {
            Outcome::TimedOut => {
                return Err(IoError::Timeout {
                    path: self.path.clone(),
                    op: "write",
                    offset,
                    len,
                    timeout,
                });
            }
            Outcome::Done { n, .. } if n == len => return Ok(()),
            // A short O_DIRECT write: the file system is full.
            Outcome::Done { .. } => std::io::Error::from_raw_os_error(libc::ENOSPC),
            Outcome::Failed(e) => e,
        };
        Err(IoError::Os {
            path: self.path.clone(),
            op: "write",
            offset,
            len,
            source,
        })
    }

    fn current_size(&self) -> u64 {
        match self.kind {
            DiskKind::Block => self.size,
            DiskKind::File => self.file.metadata().map(|m| m.len()).unwrap_or(self.size),
        }
    }

    /// What the open file is now and what its path names now (None: no
    /// such path), by statx of the descriptor and of the path (and the
    /// device's size by BLKGETSIZE64), within `timeout`: None if they did
    /// not answer (a hung NFS server hangs stat as it hangs reads).
    pub fn identity(&self, timeout: Duration) -> Option<(FileId, Option<FileId>)> {
        let slot = Arc::new((parking_lot::Mutex::new(None), parking_lot::Condvar::new()));
        let s = slot.clone();
        self.identity_then(timeout, move |r| {
            *s.0.lock() = Some(r);
            s.1.notify_one();
        });
        let mut g = slot.0.lock();
        loop {
            if let Some(r) = g.take() {
                return r;
            }
            slot.1.wait(&mut g);
        }
    }

    /// [`Disk::identity`] without waiting: `done` runs on the engine thread.
    pub fn identity_then(
        &self,
        timeout: Duration,
        done: impl FnOnce(Option<(FileId, Option<FileId>)>) + Send + 'static,
    ) {
        use std::os::unix::ffi::OsStrExt;
        let Ok(path) = std::ffi::CString::new(self.path.as_os_str().as_bytes()) else {
            return engine::get().soon(Box::new(move || done(None)));
        };
        let deadline = std::time::Instant::now() + timeout;
        let disk = self.clone();
        let e = engine::get();
        e.submit(
            self.file.clone(),
            self.storage,
            0,
            Request::Statx { path: None },
            timeout,
            Box::new(move |out| {
                let Outcome::Done { buf, .. } = out else {
                    return done(None);
                };
                let mut open = FileId::of(&engine::statx_of(&buf));
                if disk.kind == DiskKind::Block {
                    let mut bytes: u64 = 0;
                    // SAFETY: an open block device; the ioctl writes one u64
                    // (the size the kernel keeps: it does no I/O).
                    if unsafe { blkgetsize64(disk.file.as_raw_fd(), &mut bytes) }.is_ok() {
                        open.size = bytes;
                    }
                }
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                engine::get().submit(
                    disk.file.clone(),
                    disk.storage,
                    0,
                    Request::Statx { path: Some(path) },
                    left,
                    Box::new(move |out| match out {
                        Outcome::Done { buf, .. } => {
                            done(Some((open, Some(FileId::of(&engine::statx_of(&buf))))))
                        }
                        Outcome::Failed(_) => done(Some((open, None))),
                        Outcome::TimedOut => done(None),
                    }),
                );
            }),
        );
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

impl FileId {
    fn of(s: &libc::statx) -> FileId {
        FileId {
            dev: libc::makedev(s.stx_dev_major, s.stx_dev_minor),
            ino: s.stx_ino,
            rdev: libc::makedev(s.stx_rdev_major, s.stx_rdev_minor),
            nlink: s.stx_nlink as u64,
            size: s.stx_size,
        }
    }
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

    /// [`Area::read`] without waiting: `done` runs on the engine thread.
    pub fn read_then(
        &self,
        rel: u64,
        len: usize,
        done: impl FnOnce(Result<AlignedBuf, IoError>) + Send + 'static,
    ) {
        match self.check_inside(rel, len) {
            Ok(()) => self
                .disk
                .read_then(self.offset + rel, len, self.timeout, done),
            Err(e) => engine::get().soon(Box::new(move || done(Err(e)))),
        }
    }

    /// [`Area::write`] without waiting: `done` runs on the engine thread.
    pub fn write_then(
        &self,
        rel: u64,
        data: &[u8],
        done: impl FnOnce(Result<(), IoError>) + Send + 'static,
    ) {
        match self.check_inside(rel, data.len()) {
            Ok(()) => self
                .disk
                .write_then(self.offset + rel, data, self.timeout, done),
            Err(e) => engine::get().soon(Box::new(move || done(Err(e)))),
        }
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
