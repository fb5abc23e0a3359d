//! Helpers for black-box tests that run hactl beside the real sanlock.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod ha;
pub mod libvirt;

pub fn hactl() -> &'static str {
    env!("CARGO_BIN_EXE_hactl")
}

/// The real sanlock binary. Missing it is a failure, not a skip: the
/// README's test command installs it.
pub fn sanlock() -> &'static str {
    for p in ["/usr/sbin/sanlock", "/sbin/sanlock", "/usr/bin/sanlock"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!(
        "the real sanlock is not installed: run the README's test command (apt-get install sanlock python3-sanlock)"
    );
}

/// Debian's python3, which has the sanlock module (not a pyenv python).
pub fn python3() -> &'static str {
    "/usr/bin/python3"
}

#[derive(Debug)]
pub struct Out {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub code: i32,
}

impl Out {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

pub fn run(bin: &str, args: &[&str]) -> Out {
    run_env(bin, args, &[])
}

pub fn run_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = Command::new(bin);
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    Out {
        stdout: o.stdout,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        code: o.status.code().unwrap_or(-1),
    }
}

/// A scratch directory on a real file system (O_DIRECT does not work on tmpfs).
pub fn workdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hactl-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
}

/// A file of `size` bytes, every byte `fill` (guard pattern).
pub fn make_file(path: &Path, size: usize, fill: u8) {
    std::fs::write(path, vec![fill; size]).expect("write file");
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Asserts every byte outside `[start, end)` still equals `fill`.
pub fn assert_guards(bytes: &[u8], start: usize, end: usize, fill: u8, what: &str) {
    if let Some(i) = bytes[..start].iter().position(|&b| b != fill) {
        panic!(
            "{what}: guard byte at {i} (before the area at {start}) was changed to {:#x}",
            bytes[i]
        );
    }
    if let Some(i) = bytes[end..].iter().position(|&b| b != fill) {
        panic!(
            "{what}: guard byte at {} (after the area ending at {end}) was changed to {:#x}",
            end + i,
            bytes[end + i]
        );
    }
}

/// Zeroes the 4 tail-padding bytes of a paxos request record (offset 20..24
/// of the lease's second sector): sanlock copies them from an uninitialised
/// stack struct, so they are not part of the format.
pub fn mask_request_padding(bytes: &mut [u8], lease_offset: usize, sector_size: usize) {
    let at = lease_offset + sector_size + 20;
    if at + 4 <= bytes.len() {
        bytes[at..at + 4].fill(0);
    }
}

/// Counts checks that compared hactl with sanlock, printed at the end of
/// each test so the totals can be reported.
pub struct Tally(pub &'static str, pub usize);

impl Tally {
    pub fn same(&mut self, what: &str, ours: &[u8], theirs: &[u8]) {
        if ours != theirs {
            let at = ours
                .iter()
                .zip(theirs)
                .position(|(a, b)| a != b)
                .unwrap_or(ours.len().min(theirs.len()));
            let show = |b: &[u8]| {
                String::from_utf8_lossy(&b[at.saturating_sub(200)..b.len().min(at + 200)])
                    .into_owned()
            };
            panic!(
                "{what}: hactl and sanlock differ at byte {at} (lengths {} / {})\n--- sanlock\n{}\n--- hactl\n{}",
                theirs.len(),
                ours.len(),
                show(theirs),
                show(ours)
            );
        }
        self.1 += 1;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            eprintln!("[{}] checks equal to sanlock: {}", self.0, self.1);
            // libtest captures the output of passing tests, so the counts
            // also go to a file that tools/test.sh sums.
            let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sanlock-checks.log");
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
            {
                use std::io::Write;
                let _ = writeln!(f, "{}\t{}", self.0, self.1);
            }
        }
    }
}

/// Makes a spawned daemon die with the test that started it, even if the
/// test process is killed before its Drop can stop the daemon by pid.
pub fn die_with_parent(c: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and only affects the child.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// Starts `bin daemon` (sanlock's or hactl's) in its own run dir, the way
/// every test runs one, and waits for its socket.
fn spawn_daemon(
    bin: &str,
    extra: &[&str],
    run_dir: &Path,
    log_name: &str,
    env: &[(&str, &str)],
    ns: Option<&hactl::ha::lab::HostNs>,
) -> Child {
    std::fs::create_dir_all(run_dir).unwrap();
    let log = std::fs::File::create(run_dir.join(log_name)).unwrap();
    let mut args = vec![
        "daemon", "-D", "-w", "0", "-l", "0", "-h", "0", "-U", "root", "-G", "root",
    ];
    args.extend_from_slice(extra);
    let mut cmd = Command::new(bin);
    die_with_parent(&mut cmd)
        .args(&args)
        .env("SANLOCK_RUN_DIR", run_dir)
        .env("SANLOCK_PRIVILEGED", "0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    if let Some(ns) = ns {
        ns.enter(&mut cmd);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin} daemon: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !run_dir.join("sanlock.sock").exists() {
        if Instant::now() >= deadline {
            stop_daemon(&mut child);
            panic!("{bin} daemon did not create its socket");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Stops a daemon by its pid (also if it is SIGSTOPped).
fn stop_daemon(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

/// Whether process `pid` has exited (gone, or a zombie not yet reaped).
pub fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A real sanlock daemon in its own run dir, stopped by pid on drop.
pub struct SanlockDaemon {
    pub run_dir: PathBuf,
    child: Child,
}

impl SanlockDaemon {
    pub fn start(run_dir: &Path) -> SanlockDaemon {
        Self::start_with_env(run_dir, &[], &[])
    }

    pub fn start_with(run_dir: &Path, extra: &[&str]) -> SanlockDaemon {
        Self::start_with_env(run_dir, extra, &[])
    }

    pub fn start_with_env(run_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> SanlockDaemon {
        let child = spawn_daemon(sanlock(), extra, run_dir, "daemon.log", env, None);
        SanlockDaemon {
            run_dir: run_dir.to_path_buf(),
            child,
        }
    }

    /// Started inside a lab host's mount namespace (libvirt's killpath
    /// helper, which the daemon runs, must reach that host's libvirtd).
    pub fn start_in(ns: &hactl::ha::lab::HostNs, run_dir: &Path, extra: &[&str]) -> SanlockDaemon {
        let child = spawn_daemon(sanlock(), extra, run_dir, "daemon.log", &[], Some(ns));
        SanlockDaemon {
            run_dir: run_dir.to_path_buf(),
            child,
        }
    }

    pub fn env(&self) -> [(&str, &str); 1] {
        [("SANLOCK_RUN_DIR", self.run_dir.to_str().unwrap())]
    }

    pub fn client(&self, args: &[&str]) -> Out {
        let mut a = vec!["client"];
        a.extend_from_slice(args);
        run_env(sanlock(), &a, &self.env())
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for SanlockDaemon {
    fn drop(&mut self) {
        stop_daemon(&mut self.child);
    }
}

/// A loop device over an image file, detached on drop.
pub struct LoopDev {
    pub dev: String,
}

impl LoopDev {
    pub fn new(image: &Path, sector_size: u32) -> LoopDev {
        let o = run(
            "losetup",
            &[
                "-f",
                "--show",
                "--sector-size",
                &sector_size.to_string(),
                "--direct-io=on",
                p(image),
            ],
        );
        assert_eq!(
            o.code, 0,
            "losetup failed (tests need root and loop devices): {}",
            o.stderr
        );
        LoopDev {
            dev: o.text().trim().to_string(),
        }
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = run("losetup", &["-d", &self.dev]);
    }
}

/// An `hactl daemon` in its own run dir, killed by pid on drop.
pub struct HactlDaemon {
    pub run_dir: PathBuf,
    child: Child,
}

impl HactlDaemon {
    pub fn start(run_dir: &Path) -> HactlDaemon {
        Self::start_with(run_dir, &[])
    }

    pub fn start_with(run_dir: &Path, extra: &[&str]) -> HactlDaemon {
        Self::start_with_env(run_dir, extra, &[])
    }

    pub fn start_with_env(run_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> HactlDaemon {
        let mut all = vec![("HACTL_SANLOCK_CONF", "/nonexistent")];
        all.extend_from_slice(env);
        let child = spawn_daemon(hactl(), extra, run_dir, "daemon.stderr", &all, None);
        HactlDaemon {
            run_dir: run_dir.to_path_buf(),
            child,
        }
    }

    /// Started inside a lab host's mount namespace, as [`SanlockDaemon::start_in`].
    pub fn start_in(ns: &hactl::ha::lab::HostNs, run_dir: &Path, extra: &[&str]) -> HactlDaemon {
        let env = [("HACTL_SANLOCK_CONF", "/nonexistent")];
        let child = spawn_daemon(hactl(), extra, run_dir, "daemon.stderr", &env, Some(ns));
        HactlDaemon {
            run_dir: run_dir.to_path_buf(),
            child,
        }
    }

    pub fn env(&self) -> [(&str, &str); 1] {
        [("SANLOCK_RUN_DIR", self.run_dir.to_str().unwrap())]
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the daemon process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for HactlDaemon {
    fn drop(&mut self) {
        stop_daemon(&mut self.child);
    }
}

/// The states `client gets -h 1` printed, by host_id.
pub fn parse_gets_hosts(text: &str) -> std::collections::BTreeMap<u64, (u64, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // h <id> gen <g> timestamp <t> <STATE>
            if f.len() == 7 && f[0] == "h" {
                Some((f[1].parse().ok()?, (f[3].parse().ok()?, f[6].to_string())))
            } else {
                None
            }
        })
        .collect()
}

/// `sanlock client add_lockspace -s LS:HOST_ID:F:0 -o 1` against the daemon
/// in `run_dir` (either implementation); it must succeed.
pub fn add_lockspace(run_dir: &Path, host_id: u64, f: &Path) {
    let o = run_env(
        sanlock(),
        &[
            "client",
            "add_lockspace",
            "-s",
            &format!("LS:{host_id}:{}:0", p(f)),
            "-o",
            "1",
        ],
        &[("SANLOCK_RUN_DIR", p(run_dir))],
    );
    assert!(o.text().contains("done 0"), "{}", o.text());
}

/// The lver of lease `name` of lockspace LS at `offset` of `f`, as the
/// real `sanlock direct read_leader` reads it.
pub fn lease_lver(f: &Path, name: &str, offset: u64) -> u64 {
    let t = run(
        sanlock(),
        &[
            "direct",
            "read_leader",
            "-r",
            &format!("LS:{name}:{}:{offset}", p(f)),
        ],
    )
    .text();
    t.lines()
        .find_map(|l| l.strip_prefix("lver "))
        .unwrap()
        .parse()
        .unwrap()
}

/// A registered python3-sanlock process that acquires LS:`res` at `off`
/// and holds it until its stdin closes or it is killed (`ignore_term`: it
/// survives SIGTERM). Returns it and its first line: `held` or `refused N`.
pub fn python_holder(
    run_dir: &Path,
    f: &Path,
    res: &str,
    off: u64,
    ignore_term: bool,
) -> (Child, String) {
    let script = r#"
import sanlock, sys, signal
if sys.argv[4] == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
fd = sanlock.register()
try:
    sanlock.acquire(b"LS", sys.argv[2].encode(), [(sys.argv[1], int(sys.argv[3]))], slkfd=fd)
    print("held", flush=True)
except sanlock.SanlockException as e:
    print("refused %d" % e.errno, flush=True)
    sys.exit(0)
sys.stdin.read()
"#;
    let mut c = Command::new(python3())
        .args([
            "-c",
            script,
            p(f),
            res,
            &off.to_string(),
            if ignore_term { "1" } else { "0" },
        ])
        .env("SANLOCK_RUN_DIR", run_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    (c, line.trim().to_string())
}

/// A python3-sanlock process that keeps acquiring LS:`res` at `off` every
/// half second while the answer is one of `retry` (e.g. -243: the owner
/// looks alive), for at most `deadline_secs`, as vdsm retries. Joins to
/// its answer (`held` or `refused N`) and the moment it came.
pub fn acquire_blocking(
    run_dir: &Path,
    f: &Path,
    res: &str,
    off: u64,
    retry: &[i32],
    deadline_secs: u64,
) -> std::thread::JoinHandle<(String, Instant)> {
    let script = r#"
import sanlock, sys, time
fd = sanlock.register()
retry = [int(x) for x in sys.argv[4].split(",")]
deadline = time.monotonic() + int(sys.argv[5])
while True:
    try:
        sanlock.acquire(b"LS", sys.argv[2].encode(), [(sys.argv[1], int(sys.argv[3]))], slkfd=fd)
        print("held", flush=True)
        break
    except sanlock.SanlockException as e:
        if e.errno not in retry or time.monotonic() > deadline:
            print("refused %d" % e.errno, flush=True)
            break
        time.sleep(0.5)
time.sleep(2)
"#;
    let retry = retry
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let (rd, f, res) = (run_dir.to_path_buf(), f.to_path_buf(), res.to_string());
    std::thread::spawn(move || {
        let mut c = Command::new(python3())
            .args([
                "-c",
                script,
                p(&f),
                &res,
                &off.to_string(),
                &retry,
                &deadline_secs.to_string(),
            ])
            .env("SANLOCK_RUN_DIR", &rd)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let when = Instant::now();
        let _ = c.wait();
        (line.trim().to_string(), when)
    })
}

/// A FUSE pass-through of `back` at `mnt` (tools/fuse-passthrough.py): its
/// server can be SIGSTOPped to hang the storage behind it, as a hung NFS
/// server. Unmounted and stopped on drop.
pub struct Fuse {
    child: Child,
    mnt: PathBuf,
}

impl Fuse {
    pub fn start(back: &Path, mnt: &Path) -> Fuse {
        Self::start_with(back, mnt, None)
    }

    /// With `fail_flag`: every read and write through the mount fails with
    /// EIO while that file exists.
    pub fn start_with(back: &Path, mnt: &Path, fail_flag: Option<&Path>) -> Fuse {
        let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fuse-passthrough.py");
        let child = Command::new(python3())
            .arg(&tool)
            .args([back, mnt])
            .args(fail_flag)
            .stderr(Stdio::null())
            .spawn()
            .expect("fuse-passthrough.py (needs fuse3 and python3-fusepy)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains(p(mnt))
        {
            assert!(Instant::now() < deadline, "the FUSE mount did not appear");
            std::thread::sleep(Duration::from_millis(50));
        }
        Fuse {
            child,
            mnt: mnt.to_path_buf(),
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = Command::new("fusermount")
            .args(["-u", "-z", p(&self.mnt)])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
