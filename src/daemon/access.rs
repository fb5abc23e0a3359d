//! Who may talk to the daemon, and the process setup that goes with it
//! (sanlock's `setup_groups`, `setup_limits`, `setup_uid_gid`,
//! `setup_priority`).
//!
//! sanlock's only gate is the socket file: mode 0660, owned by `-U`/`-G`
//! (default `sanlock:sanlock`), so the kernel refuses `connect()` to anyone
//! else with `EACCES`. hactl keeps that gate and adds a second one: each
//! connection's peer credentials (SO_PEERCRED, SO_PEERGROUPS) are checked
//! against the same rule, so a socket whose mode was loosened by hand (or
//! a file system that ignores socket modes) still admits only those users.
//! A refused client gets `-EACCES` for every request, the error sanlock's
//! clients see when the socket refuses them.

use std::os::unix::io::AsRawFd;

use tracing::{error, warn};

use super::config::DaemonConfig;

/// A connected client's credentials, as the kernel recorded them at
/// `connect()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (empty if the kernel cannot say).
    pub groups: Vec<u32>,
}

/// The socket's rule, as the kernel applies it to a 0660 file owned by
/// `uid:gid`: root, the owner, or a member of the group (primary or
/// supplementary). The daemon's own user is let in as well: it owns the
/// process and could chmod the socket anyway.
pub fn allowed(peer: &Peer, uid: u32, gid: u32, daemon_uid: u32) -> bool {
    peer.uid == 0
        || peer.uid == uid
        || peer.uid == daemon_uid
        || peer.gid == gid
        || peer.groups.contains(&gid)
}

/// The peer's credentials; `None` if the kernel gives none (never on a
/// Unix stream socket).
pub fn peer_of(s: &impl AsRawFd) -> Option<Peer> {
    let fd = s.as_raw_fd();
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    Some(Peer {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
        groups: peer_groups(fd),
    })
}

/// SO_PEERGROUPS (Linux 4.13): the supplementary groups at `connect()`.
fn peer_groups(fd: i32) -> Vec<u32> {
    let mut buf = vec![0u32; 256];
    loop {
        let mut len = (buf.len() * 4) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `buf`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            buf.truncate(len as usize / 4);
            return buf;
        }
        // ERANGE: `len` now says how much room the list needs.
        let need = len as usize / 4;
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) && need > buf.len()
        {
            buf.resize(need, 0);
            continue;
        }
        return Vec::new();
    }
}

/// The log line for a refused connection: who it was, and who may.
pub fn refusal_line(p: &Peer, cfg: &DaemonConfig) -> String {
    format!(
        "client pid {} uid {} gid {} refused: not root, uid {} or group {} (socket owner {}:{})",
        p.pid,
        p.uid,
        p.gid,
        cfg.uid,
        cfg.gid,
        cfg.uname.as_deref().unwrap_or("-"),
        cfg.gname.as_deref().unwrap_or("-"),
    )
}

/// Whether the daemon switches to `-U`/`-G`: only privileged and with both
/// names given (or defaulted to `sanlock`), as sanlock.
fn switches_user(cfg: &DaemonConfig) -> bool {
    cfg.privileged && cfg.uname.is_some() && cfg.gname.is_some()
}

/// sanlock's `setup_groups`: the supplementary groups of `-U` (e.g. `disk`,
/// to open the lease devices) before switching to it.
pub fn setup_groups(cfg: &DaemonConfig) {
    if !switches_user(cfg) {
        return;
    }
    let name = cfg.uname.as_deref().unwrap_or_default();
    let Ok(cname) = std::ffi::CString::new(name) else {
        return;
    };
    if let Err(e) = nix::unistd::initgroups(&cname, cfg.gid.into()) {
        error!("error initializing groups errno {}", e as i32);
    }
}

/// sanlock's `setup_limits`: unlimited memlock and rtprio so the daemon
/// can still lock its memory and run SCHED_RR after giving up root;
/// a privileged daemon that cannot set them does not start.
pub fn setup_limits(cfg: &DaemonConfig) -> Result<(), String> {
    if !cfg.privileged {
        return Ok(());
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    for (res, what) in [
        (libc::RLIMIT_MEMLOCK, "memlock"),
        (libc::RLIMIT_RTPRIO, "rtprio"),
        (libc::RLIMIT_CORE, "core dumps"),
    ] {
        // SAFETY: setrlimit reads one valid rlimit.
        if unsafe { libc::setrlimit(res, &unlimited) } < 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!(
                "cannot set the limits for {what} {}",
                e.raw_os_error().unwrap_or(0)
            ));
        }
    }
    Ok(())
}

/// sanlock's `setup_uid_gid`: become `-G` then `-U`; failures are logged
/// and the daemon goes on as it is, as sanlock does.
pub fn setup_uid_gid(cfg: &DaemonConfig) {
    if !switches_user(cfg) {
        return;
    }
    if let Err(e) = nix::unistd::setgid(cfg.gid.into()) {
        error!("cannot set group id to {} errno {}", cfg.gid, e as i32);
    }
    if let Err(e) = nix::unistd::setuid(cfg.uid.into()) {
        error!("cannot set user id to {} errno {}", cfg.uid, e as i32);
    }
    // Changing uid clears "dumpable"; keep core dumps possible.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } < 0 {
        error!(
            "cannot set dumpable process errno {}",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        );
    }
}

/// sanlock's `setup_priority`: `-l 1` locks current memory, `-l 2` also
/// future; `-h 1` runs SCHED_RR at the highest priority (reset on fork, so
/// killpath programs do not inherit it). Failures are logged, not fatal.
pub fn setup_priority(cfg: &DaemonConfig) {
    let flags = match cfg.mlock_level {
        1 => libc::MCL_CURRENT,
        2 => libc::MCL_CURRENT | libc::MCL_FUTURE,
        _ => 0,
    };
    // SAFETY: mlockall takes flags only.
    if flags != 0 && unsafe { libc::mlockall(flags) } < 0 {
        error!(
            "mlockall {} failed: {}",
            cfg.mlock_level,
            std::io::Error::last_os_error()
        );
    }
    if !cfg.high_priority {
        return;
    }
    // SAFETY: plain syscalls on this process with a valid sched_param.
    unsafe {
        let max = libc::sched_get_priority_max(libc::SCHED_RR);
        if max < 0 {
            error!(
                "could not get max scheduler priority err {}",
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
            );
            return;
        }
        let p = libc::sched_param {
            sched_priority: max,
        };
        if libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &p) < 0 {
            warn!(
                "set scheduler RR|RESET_ON_FORK priority {max} failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            pid: 1,
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn the_socket_rule() {
        // socket owned 102:105 (sanlock:sanlock), daemon running as 102
        let ok = |p: &Peer| allowed(p, 102, 105, 102);
        assert!(ok(&peer(0, 0, &[])), "root");
        assert!(ok(&peer(102, 999, &[])), "the -U user");
        assert!(ok(&peer(1000, 105, &[])), "primary group");
        assert!(ok(&peer(1000, 1000, &[27, 105])), "supplementary group");
        assert!(!ok(&peer(1000, 1000, &[27, 6])), "anyone else");
        assert!(!ok(&peer(65534, 65534, &[])), "nobody");
        // unprivileged daemon run by user 1000 with -U root -G root
        assert!(allowed(&peer(1000, 1000, &[]), 0, 0, 1000));
    }

    #[test]
    fn refusal_names_the_client() {
        let c = DaemonConfig {
            uid: 102,
            gid: 105,
            uname: Some("sanlock".into()),
            gname: Some("sanlock".into()),
            ..Default::default()
        };
        let l = refusal_line(&peer(1001, 1001, &[]), &c);
        assert!(l.contains("pid 1 uid 1001 gid 1001 refused"), "{l}");
        assert!(l.contains("uid 102 or group 105"), "{l}");
    }
}
