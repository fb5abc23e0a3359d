//! Lockspaces: add, inq, rem (which wait for the lockspace as tasks),
//! write, read and align (lease I/O, on the pool), set_config, host
//! events, examine.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::warn;

use super::{Conn, Next};
use crate::daemon::Daemon;
use crate::geometry::Geometry;
use crate::lease_str::{DiskArg, LockspaceArg};
use crate::ondisk::{LeaderRecord, Name};
use crate::proto::request::Request;
use crate::proto::{self, Cmd, Header, SanlkDisk, SanlkHostEvent, SanlkLockspace, WireStruct};
use crate::rv;
use crate::timeouts::monotime;

fn ls_path(ls: &SanlkLockspace) -> Result<String, i32> {
    crate::daemon::path_string(&ls.host_id_disk.path)
}

fn lockspace(req: Result<Request, i32>) -> Result<SanlkLockspace, i32> {
    match req? {
        Request::Lockspace(ls) => Ok(ls),
        _ => Err(-libc::EINVAL),
    }
}

pub(super) fn apply(
    d: &Arc<Daemon>,
    c: &mut Conn,
    h: &Header,
    cmd: Cmd,
    req: Result<Request, i32>,
) -> Next {
    match cmd {
        Cmd::WriteLockspace => {
            let rv = match lockspace(req) {
                Err(e) => e,
                Ok(ls) => write_lockspace(d, &ls, h.data2),
            };
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::ReadLockspace => {
            let (rv, io, ls) = match lockspace(req) {
                Err(e) => (e, 0, SanlkLockspace::default()),
                Ok(ls) => read_lockspace(d, ls),
            };
            c.reply_listing(h, rv, io, &ls.encode());
            Next::Keep
        }
        Cmd::Align => {
            let rv = match req {
                Err(e) => e,
                Ok(Request::Align(disk)) => align(&disk),
                Ok(_) => -libc::EINVAL,
            };
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::SetConfig => {
            c.set_owner(d, "set_config");
            let rv = match lockspace(req) {
                Err(e) => e,
                Ok(ls) => set_config(d, &ls.name, h.data),
            };
            c.reply_echo(h, rv);
            Next::Close
        }
        Cmd::RegEvent => {
            c.set_owner(d, "reg_event");
            let rv = match req {
                Ok(Request::LockspaceEvent(Ok((ls, _)))) => reg_event(d, c, &ls.name),
                Ok(Request::LockspaceEvent(Err(e))) | Err(e) => e,
                Ok(_) => -libc::EINVAL,
            };
            c.reply_echo(h, rv);
            Next::Close
        }
        Cmd::EndEvent => {
            c.set_owner(d, "end_event");
            let rv = match lockspace(req) {
                Err(e) => e,
                Ok(ls) if ls.name.is_empty() => -libc::EINVAL,
                Ok(ls) => match d.find_active(&ls.name) {
                    None => -libc::ENOENT,
                    Some(sp) => {
                        sp.prune_event_fds();
                        0
                    }
                },
            };
            c.reply_echo(h, rv);
            Next::Close
        }
        Cmd::SetEvent => {
            let rv = match req {
                Ok(Request::LockspaceEvent(Ok((ls, he)))) => {
                    set_event(d, &ls.name, he, h.cmd_flags)
                }
                Ok(Request::LockspaceEvent(Err(e))) | Err(e) => e,
                Ok(_) => -libc::EINVAL,
            };
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::ExamineLockspace => {
            if let Ok(ls) = lockspace(req)
                && let Some(sp) = d.find_active(&ls.name)
            {
                sp.examine.store(true, Ordering::Relaxed);
            }
            // sanlock replies 0 whatever it found.
            c.reply(h, 0);
            Next::Keep
        }
        _ => {
            c.reply(h, -libc::EINVAL);
            Next::Close
        }
    }
}

/// add_lockspace, inq_lockspace, rem_lockspace: the change is started at
/// once; the wait for it is a task's, holding no thread.
pub(super) async fn apply_wait(
    d: &Arc<Daemon>,
    c: &mut Conn,
    h: &Header,
    cmd: Cmd,
    req: Result<Request, i32>,
) -> Next {
    c.set_owner(
        d,
        match cmd {
            Cmd::AddLockspace => "add_lockspace",
            Cmd::InqLockspace => "inq_lockspace",
            _ => "rem_lockspace",
        },
    );
    let ls = match lockspace(req) {
        Ok(ls) => ls,
        Err(e) => {
            c.reply(h, e);
            return Next::Keep;
        }
    };
    let rv = match cmd {
        Cmd::AddLockspace => add_lockspace(d, h, ls).await,
        Cmd::InqLockspace => {
            let path = ls_path(&ls).unwrap_or_default();
            let off = ls.host_id_disk.offset;
            loop {
                let r = d.inq_lockspace(&ls.name, ls.host_id, &path, off);
                if r != -libc::EINPROGRESS || h.cmd_flags & proto::SANLK_INQ_WAIT == 0 {
                    break r;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        _ => rem_lockspace(d, h, &ls).await,
    };
    c.reply(h, rv);
    Next::Keep
}

async fn add_lockspace(d: &Arc<Daemon>, h: &Header, ls: SanlkLockspace) -> i32 {
    let path = match ls_path(&ls) {
        Ok(p) => p,
        Err(e) => return e,
    };
    // Opening the lease file may wait on storage: on the pool.
    let d2 = d.clone();
    let io_timeout = h.data as u64;
    let started = tokio::task::spawn_blocking(move || {
        d2.add_lockspace_start(
            ls.name,
            ls.host_id,
            &path,
            ls.host_id_disk.offset,
            io_timeout,
        )
    })
    .await;
    let sp = match started {
        Ok(Ok(sp)) => sp,
        Ok(Err(e)) => return e,
        Err(_) => return -libc::ENOMSG,
    };
    if h.cmd_flags & proto::SANLK_ADD_ASYNC != 0 {
        Daemon::add_lockspace_later(d, sp, |_| {});
        return 0;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    Daemon::add_lockspace_later(d, sp, move |rv| {
        let _ = tx.send(rv);
    });
    rx.await.unwrap_or(-libc::ENOMSG)
}

async fn rem_lockspace(d: &Arc<Daemon>, h: &Header, ls: &SanlkLockspace) -> i32 {
    let path = ls_path(ls).unwrap_or_default();
    let Some(sp) = d.find_exact(&ls.name, ls.host_id, &path, ls.host_id_disk.offset) else {
        return -libc::ENOENT;
    };
    if h.cmd_flags & proto::SANLK_REM_UNUSED != 0 && d.space_has_resources(sp.space_id) {
        return -libc::EBUSY;
    }
    let rv = d.rem_lockspace(&sp);
    if rv != 0 || h.cmd_flags & proto::SANLK_REM_ASYNC != 0 {
        return rv;
    }
    while d.spaces.lock().iter().any(|s| Arc::ptr_eq(s, &sp)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    0
}

fn set_config(d: &Daemon, name: &Name, what: u32) -> i32 {
    let Some(sp) = d.find_active(name) else {
        return -libc::ENOENT;
    };
    let mut st = sp.state.lock();
    match what {
        proto::SANLK_CONFIG_USED if st.space_dead() => -libc::ENOSPC,
        proto::SANLK_CONFIG_USED => {
            st.external_used = true;
            0
        }
        proto::SANLK_CONFIG_UNUSED => {
            st.external_used = false;
            0
        }
        proto::SANLK_CONFIG_USED_BY_ORPHANS => {
            st.used_by_orphans = true;
            0
        }
        proto::SANLK_CONFIG_UNUSED_BY_ORPHANS => {
            st.used_by_orphans = false;
            0
        }
        _ => -libc::EINVAL,
    }
}

fn reg_event(d: &Daemon, c: &Conn, name: &Name) -> i32 {
    if name.is_empty() {
        return -libc::EINVAL;
    }
    let Some(sp) = d.find_active(name) else {
        return -libc::ENOENT;
    };
    // The events go out on a copy of the client's descriptor (non-
    // blocking, as the connection's: a client that does not read misses
    // events rather than stopping the renewal that sends them).
    // SAFETY: the connection's descriptor is open while it is served.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(c.fd) };
    let Ok(dup) = fd.try_clone_to_owned() else {
        return -libc::ENOMEM;
    };
    let dup = std::os::unix::net::UnixStream::from(dup);
    let mut fds = sp.event_fds.lock();
    if fds.len() >= 32 {
        drop(fds);
        sp.prune_event_fds();
        fds = sp.event_fds.lock();
        if fds.len() >= 32 {
            return -libc::ENOCSI;
        }
    }
    fds.push(dup);
    0
}

fn set_event(d: &Daemon, name: &Name, he: SanlkHostEvent, flags: u32) -> i32 {
    if name.is_empty() || he.host_id == 0 || he.host_id > proto::DEFAULT_MAX_HOSTS as u64 {
        return -libc::EINVAL;
    }
    let Some(sp) = d.find_active(name) else {
        return -libc::ENOENT;
    };
    let now = monotime();
    match sp.state.lock().core.set_event(now, he, flags) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

fn write_lockspace(d: &Daemon, ls: &SanlkLockspace, io_timeout: u32) -> i32 {
    let Ok(path) = ls_path(ls) else {
        return -libc::EINVAL;
    };
    if path.is_empty() {
        return -libc::ENODEV;
    }
    let ss = proto::lsf_sector_size(ls.flags);
    let al = proto::lsf_align_size(ls.flags);
    let opts = crate::direct::DirectOpts {
        io_timeout: if io_timeout == 0 {
            d.cfg.io_timeout as u16
        } else {
            io_timeout as u16
        },
        sector_size: (ss != 0).then_some(ss),
        align_size: (al != 0).then_some(al),
        ..Default::default()
    };
    let arg = LockspaceArg {
        name: ls.name,
        host_id: ls.host_id,
        disk: DiskArg {
            path,
            offset: ls.host_id_disk.offset,
        },
    };
    match crate::direct::init_lockspace(&arg, &opts) {
        Ok(()) => 0,
        Err(e) => {
            warn!("write_lockspace {}: {e}", ls.name);
            e.sanlk_rv()
        }
    }
}

/// `read_lockspace`: the name, io_timeout and geometry of a lockspace on disk.
fn read_lockspace(d: &Daemon, mut ls: SanlkLockspace) -> (i32, u32, SanlkLockspace) {
    let Ok(path) = ls_path(&ls) else {
        return (-libc::EINVAL, 0, ls);
    };
    if ls.host_id == 0 {
        ls.host_id = 1;
    }
    let Ok(disk) = crate::io::Disk::open(path.as_ref()) else {
        return (-libc::ENODEV, 0, ls);
    };
    let t = Duration::from_secs(d.cfg.io_timeout);
    let off = ls.host_id_disk.offset;
    // As sanlock: a sector size the caller gives is used as it is (a wrong
    // one fails the read with the I/O's own error, e.g. -EINVAL for 512
    // bytes on a 4K device); without one, the first leader says.
    let sector_size = match proto::lsf_sector_size(ls.flags) {
        0 => {
            use crate::daemon::lockspace::{SizesError, read_lockspace_sizes};
            match read_lockspace_sizes(&disk, off, t) {
                Ok(g) => g.sector_size,
                Err(SizesError::Read(e)) => return (e, 0, ls),
                Err(SizesError::Magic) => return (rv::SANLK_LEADER_MAGIC, 0, ls),
                Err(SizesError::Version) => return (rv::SANLK_LEADER_VERSION, 0, ls),
                Err(SizesError::SectorSize | SizesError::Geometry) => {
                    return (-libc::EINVAL, 0, ls);
                }
            }
        }
        s => s,
    };
    let at = off + (ls.host_id - 1) * sector_size as u64;
    let buf = match disk.read(at, sector_size as usize, t) {
        Ok(b) => b,
        Err(e) => return (e.sanlk_rv(), 0, ls),
    };
    let lr = LeaderRecord::decode(&buf).expect("a sector holds a leader");
    let expect = if ls.name.is_empty() {
        lr.space_name
    } else {
        ls.name
    };
    if let Err(e) = crate::delta::verify_sector(&buf, &expect) {
        return (e, 0, ls);
    }
    // The flags the caller set may have been wrong: the leader's win.
    let Some(g) = Geometry::from_leader(lr.sector_size, lr.flags) else {
        return (rv::SANLK_LEADER_SECTORSIZE, 0, ls);
    };
    ls.name = lr.space_name;
    ls.flags &= !(proto::SANLK_LSF_SECTOR512 | proto::SANLK_LSF_SECTOR4K);
    ls.flags &= !(proto::SANLK_LSF_ALIGN1M
        | proto::SANLK_LSF_ALIGN2M
        | proto::SANLK_LSF_ALIGN4M
        | proto::SANLK_LSF_ALIGN8M);
    ls.flags |= proto::lsf_sector_flag(g.sector_size) | proto::lsf_align_flag(g.align_size);
    (0, lr.io_timeout as u32, ls)
}

fn align(disk: &SanlkDisk) -> i32 {
    let Ok(p) = disk.path.as_bytes() else {
        return -libc::ENODEV;
    };
    if p.is_empty() {
        return -libc::ENODEV;
    }
    let Ok(d) = crate::io::Disk::open(std::path::Path::new(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(p),
    )) else {
        return -libc::ENODEV;
    };
    match d.device_sector {
        512 => 1 << 20,
        4096 => 8 << 20,
        _ => -libc::EINVAL,
    }
}
