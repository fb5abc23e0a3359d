//! The socket protocol against a live daemon: a whole `hactl daemon` runs
//! inside the fuzzer (so its code is covered and any panic of any of its
//! threads is a crash), with a lockspace joined and a lease file beside
//! it; each input is sent as the bytes of one connection, from a forked
//! child fed through a pipe (the daemon may kill a client it thinks holds
//! a lease: the child, not the fuzzer), and after each input the daemon must still answer
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
use hactl::proto::{
    Cmd, Header, SanlkDisk, SanlkLockspace, SanlkOptions, SanlkPath, SanlkResource, SanlkRindex,
    WireStruct,
};
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

/// The longest input sent (libFuzzer's default -max_len is 4096).
const MAX_INPUT: usize = 1 << 20;

/// A child process that sends each input on a connection of its own:
/// forked once (and again if the daemon killed it, as it may kill a
/// client it thinks holds a lease), fed through a pipe. Forking per input
/// cost more than the input.
struct Sender {
    pid: libc::pid_t,
    to: libc::c_int,
    from: libc::c_int,
}

impl Sender {
    fn fork(sock: &CString) -> Sender {
        let mut a = [0; 2];
        let mut b = [0; 2];
        let mut buf = vec![0u8; MAX_INPUT];
        let mut reply = vec![0u8; 64 * 1024];
        // SAFETY: pipes into arrays we own.
        unsafe {
            assert_eq!(libc::pipe2(a.as_mut_ptr(), libc::O_CLOEXEC), 0);
            assert_eq!(libc::pipe2(b.as_mut_ptr(), libc::O_CLOEXEC), 0);
        }
        // SAFETY: the child calls only async-signal-safe functions on
        // memory allocated before the fork, and never returns.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe { helper(sock, a[0], b[1], &mut buf, &mut reply) }
        }
        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        // SAFETY: closing the child's ends in the parent.
        unsafe {
            libc::close(a[0]);
            libc::close(b[1]);
        }
        Sender {
            pid,
            to: a[1],
            from: b[0],
        }
    }

    /// Sends `data`; false if the sender died or hung (then it is gone).
    fn send(&mut self, data: &[u8]) -> bool {
        let data = &data[..data.len().min(MAX_INPUT)];
        let len = (data.len() as u32).to_ne_bytes();
        let mut msg = len.to_vec();
        msg.extend_from_slice(data);
        // SAFETY: writing our buffer to our pipe.
        let n = unsafe { libc::write(self.to, msg.as_ptr().cast(), msg.len()) };
        if n != msg.len() as isize {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: self.from,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd; then a one-byte read into a local.
        unsafe {
            if libc::poll(&mut pfd, 1, 15_000) != 1 {
                return false;
            }
            let mut ack = 0u8;
            libc::read(self.from, (&mut ack as *mut u8).cast(), 1) == 1
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // SAFETY: our own child and descriptors.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            let mut st = 0;
            libc::waitpid(self.pid, &mut st, 0);
            libc::close(self.to);
            libc::close(self.from);
        }
    }
}

/// The sender's loop: read a length and that many bytes, send them on a
/// new connection, half-close, read until EOF or a quiet 2 s, ack.
unsafe fn helper(sock: &CString, input: i32, ack: i32, buf: &mut [u8], reply: &mut [u8]) -> ! {
    unsafe {
        let read_full = |fd: i32, p: *mut u8, n: usize| -> bool {
            let mut off = 0;
            while off < n {
                let r = libc::read(fd, p.add(off).cast(), n - off);
                if r <= 0 {
                    return false;
                }
                off += r as usize;
            }
            true
        };
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as u16;
        for (i, &b) in sock.as_bytes().iter().enumerate().take(107) {
            addr.sun_path[i] = b as libc::c_char;
        }
        let alen = std::mem::size_of::<libc::sockaddr_un>() as u32;
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        let tvp = &tv as *const _ as *const libc::c_void;
        let tvl = std::mem::size_of::<libc::timeval>() as u32;
        loop {
            let mut len = [0u8; 4];
            if !read_full(input, len.as_mut_ptr(), 4) {
                libc::_exit(0);
            }
            let n = (u32::from_ne_bytes(len) as usize).min(buf.len());
            if !read_full(input, buf.as_mut_ptr(), n) {
                libc::_exit(0);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if libc::connect(fd, &addr as *const _ as *const libc::sockaddr, alen) == 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, tvp, tvl);
                libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, tvp, tvl);
                let mut off = 0;
                while off < n {
                    let r = libc::send(fd, buf[off..n].as_ptr().cast(), n - off, libc::MSG_NOSIGNAL);
                    if r <= 0 {
                        break;
                    }
                    off += r as usize;
                }
                libc::shutdown(fd, libc::SHUT_WR);
                let mut total = 0usize;
                loop {
                    let r = libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0);
                    if r <= 0 || total > 16 << 20 {
                        break;
                    }
                    total += r as usize;
                }
            }
            libc::close(fd);
            let one = 1u8;
            if libc::write(ack, (&one as *const u8).cast(), 1) != 1 {
                libc::_exit(0);
            }
        }
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

/// Well-formed requests naming the daemon's own lockspace and leases, so
/// that the fuzzer starts past the parsers: written to an empty corpus.
fn seeds(live: &Live) -> Vec<Vec<u8>> {
    let msg = |cmd: Cmd, flags: u32, data: u32, data2: u32, body: &[u8]| {
        let mut b = Header::request(cmd, flags, body.len(), data, data2)
            .encode()
            .to_vec();
        b.extend_from_slice(body);
        b
    };
    let ls = lockspace(live).encode().to_vec();
    let path = SanlkPath::new(&live.lease_file.to_string_lossy()).unwrap();
    let res = |k: u64| SanlkResource {
        lockspace_name: hactl::ondisk::Name::new("LS").unwrap(),
        name: hactl::ondisk::Name::new(&format!("R{k}")).unwrap(),
        disks: vec![SanlkDisk::new(path.clone(), k * MIB)],
        ..Default::default()
    };
    let mut acquire = msg(Cmd::Register, 0, 0, 0, &[]);
    let mut body = res(1).encode();
    body.extend(SanlkOptions::default().encode());
    acquire.extend(msg(Cmd::Acquire, 0, 1, u32::MAX, &body));
    acquire.extend(msg(Cmd::Inquire, 0, 0, u32::MAX, &[]));
    let mut head = res(1).encode();
    head.truncate(SanlkResource::HEAD_SIZE);
    acquire.extend(msg(Cmd::GetLvb, 0, 0, 0, &head));
    acquire.extend(msg(Cmd::Release, 0, 1, u32::MAX, &head));
    let ri = SanlkRindex {
        lockspace_name: hactl::ondisk::Name::new("LS").unwrap(),
        disk: SanlkDisk::new(path.clone(), 3 * MIB),
        ..Default::default()
    };
    vec![
        msg(Cmd::Version, 0, 0, 0, &[]),
        msg(Cmd::Status, 0, 0, 0, &[]),
        msg(Cmd::GetLockspaces, 0, 0, 0, &[]),
        msg(Cmd::HostStatus, 0, 0, 0, &ls),
        msg(Cmd::GetHosts, 0, 0, 0, &ls),
        msg(Cmd::Renewal, 0, 0, 0, &ls),
        msg(Cmd::InqLockspace, 0, 0, 0, &ls),
        msg(Cmd::AddLockspace, 0, 0, 0, &ls),
        msg(Cmd::ReadLockspace, 0, 0, 0, &ls),
        msg(Cmd::ReadResource, 0, 0, 0, &res(2).encode()),
        msg(Cmd::ReadResourceOwners, 0, 0, 0, &res(2).encode()),
        msg(Cmd::FormatRindex, 0, 0, 0, &ri.encode()),
        msg(hactl::proto::Cmd::Align, 0, 0, 0, &SanlkDisk::new(path, 0).encode()),
        acquire,
    ]
}

/// The corpus directory libFuzzer was given (its first non-flag argument).
fn corpus_dir() -> Option<PathBuf> {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
}

struct State {
    live: Live,
    sender: Sender,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();

fuzz_target!(
    init: {
        sandbox(&fuzz_dir());
        let live = start(0);
        if let Some(dir) = corpus_dir()
            && std::fs::read_dir(&dir).map(|mut d| d.next().is_none()).unwrap_or(false)
        {
            for (i, seed) in seeds(&live).into_iter().enumerate() {
                let _ = std::fs::write(dir.join(format!("seed-{i:02}")), seed);
            }
        }
        let sender = Sender::fork(&cstr(&live.run_dir.join("sanlock.sock")));
        let _ = STATE.set(Mutex::new(State { live, sender }));
    },
    |data: &[u8]| {
        let mut st = STATE.get().expect("initialised").lock().unwrap();
        let State { live, sender } = &mut *st;
        if !sender.send(data) {
            // Killed by the daemon (a lease holder it was told to kill) or
            // stuck on a connection the daemon keeps: a new one.
            *sender = Sender::fork(&cstr(&live.run_dir.join("sanlock.sock")));
        }
        if live.daemon.shutting_down.load(Ordering::Relaxed) {
            // A shutdown was asked for (and may be under way): wait for the
            // daemon to go, then start another.
            let end = Instant::now() + Duration::from_secs(120);
            while !live.daemon.spaces.lock().is_empty() {
                assert!(Instant::now() < end, "a shutdown did not finish in 120 s");
                std::thread::sleep(Duration::from_millis(50));
            }
            let g = live.generation + 1;
            *live = start(g);
            *sender = Sender::fork(&cstr(&live.run_dir.join("sanlock.sock")));
            return;
        }
        assert!(
            answers(&live.run_dir),
            "the daemon stopped answering after this input"
        );
        join_lockspace(&live, false);
    }
);
