//! The killpath helper, as sanlock's (`helper.c`): a process the daemon
//! starts before it opens any lease file, which starts the killpath
//! programs for it. A program the daemon started itself would inherit the
//! daemon's descriptors, lease files among them, and exec closes those:
//! closing a file whose storage hangs (a FUSE or NFS server that does not
//! answer) waits for that storage, so the killpath would never run just
//! when the lockspace fails because its storage hangs (libvirt's killpath
//! would never destroy the domain). The helper has nothing but its pipe.
//!
//! Requests go over the helper's stdin: `PATH\0ARGS\0PID\0` (PID empty
//! when the killpath takes no pid); the helper splits ARGS as
//! [`crate::recovery::killpath_argv`] does and starts the program. It
//! exits when the daemon's end of the pipe closes.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use tracing::warn;

/// The hidden hactl subcommand the helper runs as.
pub const SUBCOMMAND: &str = "daemon-killpath-helper";

static HELPER: OnceLock<Mutex<Option<ChildStdin>>> = OnceLock::new();

/// Starts the helper (the daemon, at startup, before any lease file is
/// open). Without it killpaths are started by the daemon itself.
pub fn start() {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            warn!("killpath helper not started: {e}");
            return;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg(SUBCOMMAND).stdin(Stdio::piped());
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; it only affects the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    match cmd.spawn() {
        Ok(mut child) => {
            let stdin = child.stdin.take();
            if let Some(s) = &stdin {
                // The main loop must never wait on the helper.
                // SAFETY: fcntl on our own pipe descriptor.
                unsafe {
                    let fd = s.as_raw_fd();
                    let fl = libc::fcntl(fd, libc::F_GETFL);
                    libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
                }
            }
            // Reaped when it exits (after the daemon closes the pipe).
            let _ = std::thread::Builder::new()
                .name("helper".into())
                .spawn(move || child.wait());
            let _ = HELPER.set(Mutex::new(stdin));
        }
        Err(e) => warn!("killpath helper not started: {e}"),
    }
}

/// Hands a killpath to the helper; false when there is none or it does
/// not take the request (the caller starts the program itself).
pub fn request(path: &str, args: &str, pid: Option<i32>) -> bool {
    let Some(h) = HELPER.get() else {
        return false;
    };
    let mut g = h.lock().unwrap_or_else(|e| e.into_inner());
    let Some(stdin) = g.as_mut() else {
        return false;
    };
    if path.contains('\0') || args.contains('\0') {
        return false;
    }
    let msg = format!(
        "{path}\0{args}\0{}\0",
        pid.map_or(String::new(), |p| p.to_string())
    );
    match stdin.write_all(msg.as_bytes()) {
        Ok(()) => true,
        Err(e) => {
            warn!("killpath helper: {e}; starting killpaths from the daemon");
            *g = None;
            false
        }
    }
}

/// The helper's loop (`hactl daemon-killpath-helper`): reads requests
/// until the daemon closes the pipe.
pub fn run() -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let mut input = std::io::stdin().lock();
    let field = |input: &mut std::io::StdinLock| -> Option<Vec<u8>> {
        let mut b = Vec::new();
        match input.read_until(0, &mut b) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                if b.last() == Some(&0) {
                    b.pop();
                }
                Some(b)
            }
        }
    };
    loop {
        let (Some(path), Some(args), Some(pid)) =
            (field(&mut input), field(&mut input), field(&mut input))
        else {
            return 0;
        };
        let pid = std::str::from_utf8(&pid)
            .ok()
            .and_then(|p| p.parse::<i32>().ok());
        let argv = crate::recovery::killpath_argv(&path, &args, pid);
        let prog = std::ffi::OsStr::from_bytes(&path);
        match Command::new(prog)
            .args(argv[1..].iter().map(|a| std::ffi::OsStr::from_bytes(a)))
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(mut ch) => {
                let _ = std::thread::Builder::new()
                    .name("killpath".into())
                    .spawn(move || ch.wait());
            }
            Err(e) => eprintln!(
                "hactl killpath helper: {}: {e}",
                String::from_utf8_lossy(&path)
            ),
        }
    }
}
