//! Helpers for black-box tests that run hactl beside the real sanlock.
#![allow(dead_code)]

pub mod lvm;

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

/// Compiles `tests/c/NAME.c` against the real libsanlock into `dir`.
pub fn compile_c(name: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let bin = dir.join(name);
    let o = run(
        "gcc",
        &["-Wall", "-Werror", "-o", p(&bin), p(&src), "-lsanlock"],
    );
    assert_eq!(
        o.code, 0,
        "gcc (libsanlock-dev must be installed): {}",
        o.stderr
    );
    bin
}

/// The first line a child writes to its piped stdout, trimmed ("" at EOF).
pub fn first_line(c: &mut Child) -> String {
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().expect("piped stdout")),
        &mut line,
    );
    line.trim().to_string()
}

/// A file of `size` bytes, every byte `fill` (guard pattern).
pub fn make_file(path: &Path, size: usize, fill: u8) {
    std::fs::write(path, vec![fill; size]).expect("write file");
}

/// A 1 MiB lockspace "LS" at `ids`, initialised by hactl with io_timeout 1.
pub fn lockspace_file(ids: &Path) {
    make_file(ids, 1 << 20, 0);
    let ids_s = format!("LS:0:{}:0", p(ids));
    let o = run(hactl(), &["direct", "init", "-s", &ids_s, "-o", "1"]);
    assert_eq!(o.code, 0, "{}", o.text());
}

/// `back/leases` (2 MiB: lockspace "LS" with io_timeout 1 at 0, resource R1
/// at 1 MiB) for a FUSE pass-through mount of `back` on `mnt`; returns
/// (back, mnt).
pub fn fuse_lease_dirs(dir: &Path) -> (PathBuf, PathBuf) {
    let (back, mnt) = (dir.join("back"), dir.join("mnt"));
    std::fs::create_dir_all(&back).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let direct = back.join("leases");
    make_file(&direct, 2 << 20, 0);
    let ds = p(&direct);
    for args in [
        vec!["direct", "init", "-s", &format!("LS:0:{ds}:0"), "-o", "1"],
        vec!["direct", "init", "-r", &format!("LS:R1:{ds}:1M")],
    ] {
        let o = run(hactl(), &args);
        assert_eq!(o.code, 0, "{}", o.text());
    }
    (back, mnt)
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
                // One write per line: tests append side by side, and a
                // line written in pieces could interleave with another's.
                let _ = f.write_all(format!("{}\t{}\n", self.0, self.1).as_bytes());
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

/// `nsenter` into a lab host's mount namespace, as `via` of [`spawn_daemon`].
fn nsenter(ns: &hactl::ha::lab::HostNs) -> Vec<String> {
    vec![
        "nsenter".into(),
        format!("--mount=/proc/{}/ns/mnt", ns.holder_pid()),
        "--".into(),
    ]
}

/// Starts `bin daemon` (sanlock's or hactl's) in its own run dir, the way
/// every test runs one, and waits for its socket. `via` is a command that
/// execs the daemon, e.g. `nsenter --mount=... --` to start it in another
/// mount namespace (it must exec, not fork, so the pid is the daemon's).
fn spawn_daemon(
    via: &[String],
    bin: &str,
    extra: &[&str],
    run_dir: &Path,
    log_name: &str,
    env: &[(&str, &str)],
    limits: &[Limit],
) -> Child {
    std::fs::create_dir_all(run_dir).unwrap();
    let log = std::fs::File::create(run_dir.join(log_name)).unwrap();
    let mut args = vec![
        "daemon", "-D", "-w", "0", "-l", "0", "-h", "0", "-U", "root", "-G", "root",
    ];
    args.extend_from_slice(extra);
    let mut cmd = match via.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    die_with_parent(&mut cmd)
        .args(&args)
        .env("SANLOCK_RUN_DIR", run_dir)
        .env("SANLOCK_PRIVILEGED", "0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    if !limits.is_empty() {
        use std::os::unix::process::CommandExt;
        let limits = limits.to_vec();
        // SAFETY: setrlimit is async-signal-safe and only affects the child.
        unsafe {
            cmd.pre_exec(move || {
                for &(resource, value) in &limits {
                    let r = libc::rlimit {
                        rlim_cur: value,
                        rlim_max: value,
                    };
                    if libc::setrlimit(resource, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
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

/// A resource limit for a daemon (`RLIMIT_AS`, `RLIMIT_NOFILE`, ...), as
/// `ulimit` would set it (soft and hard).
pub type Limit = (libc::__rlimit_resource_t, u64);

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
        Self::start_via(&[], run_dir, extra, env)
    }

    /// Started inside a lab host's mount namespace (libvirt's killpath
    /// helper, which the daemon runs, must reach that host's libvirtd).
    pub fn start_in(ns: &hactl::ha::lab::HostNs, run_dir: &Path, extra: &[&str]) -> SanlockDaemon {
        let child = spawn_daemon(
            &nsenter(ns),
            sanlock(),
            extra,
            run_dir,
            "daemon.log",
            &[],
            &[],
        );
        SanlockDaemon {
            run_dir: run_dir.to_path_buf(),
            child,
        }
    }

    /// Started through `via` (a command that execs it, e.g. nsenter).
    pub fn start_via(
        via: &[String],
        run_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> SanlockDaemon {
        let child = spawn_daemon(via, sanlock(), extra, run_dir, "daemon.log", env, &[]);
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
        Self::attach(image, sector_size, &[])
    }

    /// A loop device over `size` bytes of `image` from `offset` (e.g. the
    /// extents of one LV, where device-mapper is missing).
    pub fn range(image: &Path, sector_size: u32, offset: u64, size: u64) -> LoopDev {
        let (o, s) = (offset.to_string(), size.to_string());
        Self::attach(image, sector_size, &["--offset", &o, "--sizelimit", &s])
    }

    fn attach(image: &Path, sector_size: u32, range: &[&str]) -> LoopDev {
        let sector_size = sector_size.to_string();
        let mut args = vec![
            "-f",
            "--show",
            "--sector-size",
            &sector_size,
            "--direct-io=on",
        ];
        args.extend_from_slice(range);
        args.push(p(image));
        let o = run("losetup", &args);
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
        Self::start_via(&[], run_dir, extra, env)
    }

    /// Started through `via` (a command that execs it, e.g. nsenter).
    pub fn start_via(
        via: &[String],
        run_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> HactlDaemon {
        Self::start_full(via, run_dir, extra, env, &[])
    }

    /// Started under resource limits (e.g. a tight `RLIMIT_AS`, as `ulimit -v`).
    pub fn start_limited(
        run_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        limits: &[Limit],
    ) -> HactlDaemon {
        Self::start_full(&[], run_dir, extra, env, limits)
    }

    fn start_full(
        via: &[String],
        run_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        limits: &[Limit],
    ) -> HactlDaemon {
        let mut all = vec![("HACTL_SANLOCK_CONF", "/nonexistent")];
        all.extend_from_slice(env);
        let child = spawn_daemon(via, hactl(), extra, run_dir, "daemon.stderr", &all, limits);
        HactlDaemon {
            run_dir: run_dir.to_path_buf(),
            child,
        }
    }

    /// Started inside a lab host's mount namespace, as [`SanlockDaemon::start_in`].
    pub fn start_in(ns: &hactl::ha::lab::HostNs, run_dir: &Path, extra: &[&str]) -> HactlDaemon {
        let env = [("HACTL_SANLOCK_CONF", "/nonexistent")];
        let child = spawn_daemon(
            &nsenter(ns),
            hactl(),
            extra,
            run_dir,
            "daemon.stderr",
            &env,
            &[],
        );
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
/// Joins LS as `host_id` with io_timeout 1 (what the callers' timings are
/// built on). An I/O timeout at the join (-202: a 1 s I/O limit on a
/// loaded 2-core machine) is tried again, against either daemon alike:
/// the join is set-up here, not what is tested.
pub fn add_lockspace(run_dir: &Path, host_id: u64, f: &Path) {
    let mut tries = 0;
    loop {
        tries += 1;
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
        if tries < 4 && o.text().contains("done -202") {
            eprintln!("add_lockspace LS:{host_id}: -202 (I/O timeout), trying again");
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        assert!(o.text().contains("done 0"), "{}", o.text());
        return;
    }
}

/// Waits until the daemon in `rd` no longer lists a lease of LS named
/// `name` (a gone holder's leases are released asynchronously).
pub fn wait_released(rd: &Path, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let needle = format!("r LS:{name}:");
    while run_env(
        sanlock(),
        &["client", "status"],
        &[("SANLOCK_RUN_DIR", p(rd))],
    )
    .text()
    .contains(&needle)
    {
        assert!(Instant::now() < deadline, "{name} never released");
        std::thread::sleep(Duration::from_millis(50));
    }
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
        Self::start_full(back, mnt, fail_flag, None)
    }

    /// With `delay_file`: every read and write through the mount first
    /// sleeps the seconds written in that file (missing or empty: none).
    pub fn start_full(
        back: &Path,
        mnt: &Path,
        fail_flag: Option<&Path>,
        delay_file: Option<&Path>,
    ) -> Fuse {
        let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fuse-passthrough.py");
        let mut cmd = Command::new(python3());
        cmd.arg(&tool).args([back, mnt]).args(fail_flag);
        if let Some(d) = delay_file {
            cmd.arg("--delay-file").arg(d);
        }
        let child = cmd
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

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A raw HTTP exchange with the metrics endpoint: status line, headers, body.
pub fn http(port: u16, request: &str) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut s, request.as_bytes()).unwrap();
    let mut b = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut b).unwrap();
    let t = String::from_utf8(b).expect("utf-8 reply");
    let (head, body) = t.split_once("\r\n\r\n").expect("header end");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

pub type Labels = Vec<(String, String)>;
pub type Samples = std::collections::BTreeMap<(String, Labels), f64>;

/// A strict reader of the Prometheus text format (0.0.4): every line is a
/// HELP, a TYPE (once per family, before its samples) or a sample with a
/// valid name, well-formed labels and a float value; histogram buckets are
/// cumulative and end with +Inf equal to _count. Panics on anything else.
pub fn parse_exposition(text: &str) -> Samples {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let mut out = Samples::new();
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut f = rest.splitn(3, ' ');
            let (kw, name, arg) = (f.next().unwrap(), f.next().unwrap(), f.next());
            assert!(valid_name(name), "bad family name in {line:?}");
            match kw {
                "HELP" => assert!(arg.is_some_and(|a| !a.is_empty()), "{line:?}"),
                "TYPE" => {
                    let t = arg.unwrap();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line:?}"
                    );
                    assert!(
                        types.insert(name.to_string(), t.to_string()).is_none(),
                        "TYPE twice for {name}"
                    );
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "{line:?}");
        let name_end = line.find(['{', ' ']).expect("sample has a value");
        let name = &line[..name_end];
        assert!(valid_name(name), "bad metric name in {line:?}");
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut r = r;
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = r.find('=').expect("label has =");
                let key = &r[..eq];
                assert!(valid_name(key) && !key.contains(':'), "label {key:?}");
                r = r[eq + 1..].strip_prefix('"').expect("label value quoted");
                let mut val = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars.next().expect("label value ends") {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next().unwrap().1 {
                            'n' => val.push('\n'),
                            c @ ('\\' | '"') => val.push(c),
                            c => panic!("bad escape \\{c} in {line:?}"),
                        },
                        (_, c) => val.push(c),
                    }
                };
                labels.push((key.to_string(), val));
                r = &r[end + 1..];
                r = r.strip_prefix(',').unwrap_or(r);
            }
        }
        let value = rest.strip_prefix(' ').expect("space before value");
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample before its TYPE: {line:?}"
        );
        labels.sort();
        assert!(
            out.insert((name.to_string(), labels), v).is_none(),
            "duplicate sample {line:?}"
        );
    }
    // Histograms: cumulative buckets, +Inf == _count.
    for (fam, t) in &types {
        if t != "histogram" {
            continue;
        }
        let mut series: std::collections::BTreeMap<Labels, Vec<(f64, f64)>> =
            std::collections::BTreeMap::new();
        for ((n, l), v) in &out {
            if n == &format!("{fam}_bucket") {
                let le = l.iter().find(|(k, _)| k == "le").expect("le label");
                let bound = if le.1 == "+Inf" {
                    f64::INFINITY
                } else {
                    le.1.parse().unwrap()
                };
                let rest: Vec<_> = l.iter().filter(|(k, _)| k != "le").cloned().collect();
                series.entry(rest).or_default().push((bound, *v));
            }
        }
        for (l, mut b) in series {
            b.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap());
            assert!(
                b.windows(2).all(|w| w[0].1 <= w[1].1),
                "{fam} not cumulative"
            );
            assert_eq!(b.last().unwrap().0, f64::INFINITY, "{fam} has no +Inf");
            assert_eq!(
                out.get(&(format!("{fam}_count"), l.clone())),
                Some(&b.last().unwrap().1),
                "{fam} +Inf != _count"
            );
        }
    }
    out
}

pub fn get(s: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    s.get(&(name.to_string(), l)).copied()
}

pub fn scrape(port: u16) -> Samples {
    let (status, headers, body) = http(port, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    parse_exposition(&body)
}

/// One HTTP/1.1 exchange on 127.0.0.1:`port` (Connection: close): the
/// status code and the body (chunked bodies decoded).
pub fn http_call(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let b = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    // chromedriver keeps the connection open: read the head, then the
    // body by its Content-Length (or its chunks).
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).expect("HTTP read");
        assert!(n > 0, "connection closed before the head ended");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let mut body = raw[head_end + 4..].to_vec();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let done = |b: &[u8]| match length {
        Some(n) => b.len() >= n,
        None => b.ends_with(b"0\r\n\r\n"),
    };
    while !done(&body) {
        let n = s.read(&mut buf).expect("HTTP read");
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let rest = String::from_utf8_lossy(&body).into_owned();
    if length.is_some() || !head.contains("transfer-encoding: chunked") {
        return (code, rest);
    }
    let mut out = String::new();
    let mut r = rest.as_str();
    while let Some((size, after)) = r.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        r = &after[n + 2..];
    }
    (code, out)
}

/// Standard base64 (screenshots come as such).
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter_map(val) {
        acc = acc << 6 | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A real headless Chromium (Debian's `chromium`) driven through
/// Debian's `chromedriver` over WebDriver: pages load and run their
/// scripts as for a person. Both stopped by pid on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: tools/test.sh installs Debian's chromium and chromium-driver"
            );
        }
        let port = free_port();
        let mut cmd = Command::new("/usr/bin/chromedriver");
        // Its own process group, with the Chromium it starts: ended whole
        // on drop, whatever state the session is in.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        die_with_parent(&mut cmd)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut driver = cmd.spawn().expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                kill_group(&mut driver);
                panic!("chromedriver did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = workdir();
        // The flags that keep Chromium quiet on a machine without network.
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         format!("--user-data-dir={}", p(profile.path()))]
            }
        }}});
        let (code, body) = http_call(port, "POST", "/session", Some(&caps.to_string()));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let Some(session) = v["value"]["sessionId"].as_str().map(String::from) else {
            kill_group(&mut driver);
            panic!("chromedriver refused a session ({code}): {body}");
        };
        Browser {
            driver,
            port,
            session,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, what: &str, body: serde_json::Value) -> serde_json::Value {
        let path = format!("/session/{}{what}", self.session);
        let b = body.to_string();
        let (code, text) = http_call(
            self.port,
            method,
            &path,
            (method == "POST").then_some(b.as_str()),
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(code, 200, "WebDriver {method} {what}: {text}");
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", serde_json::json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub fn eval(&self, script: &str) -> serde_json::Value {
        self.call(
            "POST",
            "/execute/sync",
            serde_json::json!({"script": script, "args": []}),
        )
    }

    /// The cells' text of each body row of the table `#id`.
    pub fn table(&self, id: &str) -> Vec<Vec<String>> {
        let v = self.eval(&format!(
            "var t = document.getElementById({id:?}); if (!t) return null; \
             return Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(c => c.textContent.trim()));"
        ));
        serde_json::from_value(v).unwrap_or_default()
    }

    /// The page's text content (what a person reads).
    pub fn text(&self) -> String {
        self.eval("return document.body.innerText;")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Resizes the window to the whole page and saves a PNG of it.
    pub fn screenshot(&self, path: &Path) {
        let h = self
            .eval("return document.documentElement.scrollHeight;")
            .as_u64()
            .unwrap_or(1000);
        self.call(
            "POST",
            "/window/rect",
            serde_json::json!({"width": 1280, "height": h.clamp(600, 4000) + 140}),
        );
        let b64 = self.call("GET", "/screenshot", serde_json::Value::Null);
        let png = base64_decode(b64.as_str().expect("screenshot base64"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            http_call(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            )
        }));
        kill_group(&mut self.driver);
    }
}

/// SIGKILL of the process group led by `c` (which it made), then reaps it.
fn kill_group(c: &mut Child) {
    // SAFETY: kill(2) of the group our own child leads.
    unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
    let _ = c.wait();
}

/// Where tests leave screenshots: `target/screenshots/NAME`.
pub fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("../screenshots")
        .join(name)
}
