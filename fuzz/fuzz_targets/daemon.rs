//! The socket protocol against a live daemon: a whole `hactl daemon` runs
//! inside the fuzzer (so its code is covered and any panic of any of its
//! threads is a crash), with a lockspace joined and a lease file beside
//! it; each input is sent as the bytes of one connection, from a forked
//! child (the daemon may kill a client it thinks holds a lease: the child,
//! not the fuzzer), and after each input the daemon must still answer
//! `version` within 10 s. A daemon that was legitimately shut down (a
//! shutdown request, also forced) is replaced by a new one.
//!
//! The fuzzer runs as root, and an input may name any path: before the
//! daemon starts, the process moves to a mount namespace of its own where
//! every mount is read-only, nodev and noexec, except the fuzz directory
//! (read-write, nodev, noexec), where the daemon's files live. It refuses
//! to run if that did not take.
#![no_main]

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hactl::daemon::Daemon;
use hactl::daemon::config::DaemonConfig;
use hactl::proto::{Cmd, Header, SanlkLockspace, SanlkPath, WireStruct};
use libfuzzer_sys::fuzz_target;

const MIB: u64 = 1 << 20;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

fn mount(src: Option<&Path>, target: &Path, fstype: Option<&str>, flags: libc::c_ulong) -> i32 {
    let src = src.map(cstr);
    let target = cstr(target);
    let fstype = fstype.map(|f| CString::new(f).unwrap());
    // SAFETY: valid NUL-terminated strings or null pointers.
    unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            std::ptr::null(),
        )
    }
}

/// Mount points, from /proc/self/mountinfo (octal escapes undone).
fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| {
            let mut out = Vec::new();
            let b = m.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'\\' && i + 3 < b.len() {
                    let o = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
                    if let Ok(v) = u8::from_str_radix(o, 8) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
                out.push(b[i]);
                i += 1;
            }
            PathBuf::from(std::ffi::OsString::from(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&out),
            ))
        })
        .collect()
}

/// A private mount namespace in which nothing but the fuzz directory can
/// be written, no device opened and nothing executed.
fn sandbox(keep: &Path) {
    // SAFETY: unshare with a flag word.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNS) },
        0,
        "unshare(CLONE_NEWNS) (the daemon target runs as root): {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(
        mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE),
        0
    );
    assert_eq!(
        mount(Some(keep), keep, None, libc::MS_BIND | libc::MS_REC),
        0,
        "bind {}",
        keep.display()
    );
    let base = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NODEV | libc::MS_NOSUID | libc::MS_NOEXEC;
    for mp in mount_points() {
        let flags = if mp == keep { base } else { base | libc::MS_RDONLY };
        // Some (e.g. under /proc) refuse; the probe below checks the
        // ones that matter.
        let _ = mount(None, &mp, None, flags);
    }
    // Fail closed: the root file system must refuse writes, devices opens.
    let probe = Path::new("/hactl-fuzz-daemon-probe");
    assert!(
        std::fs::write(probe, b"").is_err(),
        "the sandbox did not make / read-only"
    );
    assert!(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .is_err(),
        "the sandbox did not make /dev nodev"
    );
}

struct Live {
    daemon: Arc<Daemon>,
    run_dir: PathBuf,
    lease_file: PathBuf,
    generation: u32,
}

fn init_files(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let f = dir.join("leases");
    let _ = std::fs::remove_file(&f);
    std::fs::File::create(&f).unwrap().set_len(4 * MIB).unwrap();
    let ls = hactl::lease_str::parse_lockspace(&format!("LS:1:{}:0", f.display())).unwrap();
    let opts = hactl::direct::DirectOpts {
        io_timeout: 1,
        ..Default::default()
    };
    hactl::direct::init_lockspace(&ls, &opts).expect("init lockspace");
    for k in 1..=2u64 {
        let r = hactl::lease_str::parse_resource(&format!("LS:R{k}:{}:{}", f.display(), k * MIB))
            .unwrap();
        hactl::direct::init_resource(&r, &opts).expect("init resource");
    }
    f
}

fn start(generation: u32) -> Live {
    let base = fuzz_dir().join("target/live-daemon");
    let run_dir = base.join(format!("run-{}-{generation}", std::process::id()));
    let lease_file = init_files(&base.join(format!("files-{}", std::process::id())));
    let cfg = DaemonConfig {
        run_dir: run_dir.clone(),
        privileged: false,
        use_watchdog: false,
        mlock_level: 0,
        io_timeout: 1,
        ..DaemonConfig::default()
    };
    let daemon = hactl::daemon::spawn_in_process(cfg).expect("start the daemon");
    let live = Live {
        daemon,
        run_dir,
        lease_file,
        generation,
    };
    join_lockspace(&live, true);
    live
}

fn lockspace(live: &Live) -> SanlkLockspace {
    let name = hactl::ondisk::Name::new("LS").unwrap();
    SanlkLockspace::new(
        name,
        1,
        SanlkPath::new(&live.lease_file.to_string_lossy()).unwrap(),
        0,
    )
}

/// (Re)joins the lockspace an input may have removed; waits only at start.
fn join_lockspace(live: &Live, wait: bool) {
    let ls = lockspace(live);
    let name = ls.name;
    if live.daemon.find_by_name(&name).is_some() {
        return;
    }
    let path = live.lease_file.to_string_lossy().into_owned();
    if let Ok(sp) = live.daemon.add_lockspace_start(name, 1, &path, 0, 1) {
        let d = live.daemon.clone();
        let t = std::thread::spawn(move || d.add_lockspace_wait(&sp));
        if wait {
            assert_eq!(t.join().unwrap(), 0, "join the lockspace");
        }
    }
}

/// Sends `data` on one connection from a forked child and waits for it
/// (at most 10 s; then it is killed). The child only makes syscalls.
fn send_from_child(sock: &CString, data: &[u8]) {
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: the child calls only async-signal-safe functions on memory
    // allocated before the fork, then _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as u16;
            let path = sock.as_bytes();
            for (i, &b) in path.iter().enumerate().take(107) {
                addr.sun_path[i] = b as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as u32;
            if libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) != 0 {
                libc::_exit(1);
            }
            let tv = libc::timeval {
                tv_sec: 2,
                tv_usec: 0,
            };
            let tvp = &tv as *const _ as *const libc::c_void;
            let tvl = std::mem::size_of::<libc::timeval>() as u32;
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, tvp, tvl);
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, tvp, tvl);
            let mut off = 0;
            while off < data.len() {
                let n = libc::send(
                    fd,
                    data[off..].as_ptr().cast(),
                    data.len() - off,
                    libc::MSG_NOSIGNAL,
                );
                if n <= 0 {
                    break;
                }
                off += n as usize;
            }
            libc::shutdown(fd, libc::SHUT_WR);
            // Read replies until EOF, a quiet 2 s, or 16 MiB.
            let mut total = 0usize;
            loop {
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n <= 0 || total > 16 << 20 {
                    break;
                }
                total += n as usize;
            }
            libc::_exit(0);
        }
    }
    assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return;
        }
        if Instant::now() > end {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The daemon answers `version` within 10 s.
fn answers(run_dir: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(run_dir.join("sanlock.sock")) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s
        .write_all(&Header::request(Cmd::Version, 0, 0, 0, 0).encode())
        .is_err()
    {
        return false;
    }
    let mut h = [0u8; 32];
    s.read_exact(&mut h).is_ok()
}

static LIVE: OnceLock<Mutex<Live>> = OnceLock::new();

fuzz_target!(
    init: {
        sandbox(&fuzz_dir());
        let _ = LIVE.set(Mutex::new(start(0)));
    },
    |data: &[u8]| {
        let mut live = LIVE.get().expect("initialised").lock().unwrap();
        let sock = cstr(&live.run_dir.join("sanlock.sock"));
        send_from_child(&sock, data);
        if live.daemon.shutting_down.load(Ordering::Relaxed) {
            // A shutdown was asked for (and may be under way): wait for the
            // daemon to go, then start another.
            let end = Instant::now() + Duration::from_secs(120);
            while !live.daemon.spaces.lock().unwrap().is_empty() {
                assert!(Instant::now() < end, "a shutdown did not finish in 120 s");
                std::thread::sleep(Duration::from_millis(50));
            }
            let g = live.generation + 1;
            *live = start(g);
            return;
        }
        assert!(
            answers(&live.run_dir),
            "the daemon stopped answering after this input"
        );
        join_lockspace(&live, false);
    }
);
