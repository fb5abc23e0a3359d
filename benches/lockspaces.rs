//! hactl's daemon beside the real sanlock 3.8.5 daemon, in one run:
//!
//! 1. `add_lockspace` latency of a fresh host_id (synchronous add) at
//!    io_timeout 1 and 10, the area initialised with the same io_timeout.
//! 2. One daemon holding N lockspaces (io_timeout 10, each its own 1 MiB
//!    area of one sparse file), added with SANLK_ADD_ASYNC and waited for
//!    with inq_lockspace; then a window of observation: renewals on time
//!    (from each lockspace's `renewal` history), CPU, threads, RSS.
//!
//! `cargo bench --bench lockspaces`. Knobs (environment):
//! - `HACTL_BENCH_N` (default `100,1000`): lockspace counts for part 2
//! - `HACTL_BENCH_WINDOW` (default 60): seconds observed once all joined
//! - `HACTL_BENCH_LATENCY` (default `1x5,10x2`): io_timeout x repetitions
//!   for part 1; empty to skip it
//! - `HACTL_BENCH_BUDGET` (default 900): seconds; a part-2 phase that would
//!   end past it is skipped, and the table says so
//! - `HACTL_BENCH_DAEMONS` (default `sanlock,hactl`): which daemons to run
//! - `HACTL_BENCH_KEEP=1`: keep the lease files (else only logs are kept)
//! - `HACTL_BENCH_SANLOCK_T`: `-t` (max worker threads) for sanlock in
//!   part 2; 0 = never. Unset: sanlock keeps its default 8 workers unless
//!   N / 8 * 2 * io_timeout > 300 s, because sanlock holds a worker thread
//!   for each add (even SANLK_ADD_ASYNC) until the host_id is acquired, so
//!   1000 adds take ~125 * 20 s with 8; then it gets enough for ~80 s.
//!
//! Daemons are started as tests/common does (own run dir, unprivileged,
//! `-w 0 -l 0 -h 0 -U root -G root -D`) and killed by pid. Everything goes
//! under `target/bench-lockspaces/run-<time>/`, on a real file system
//! (O_DIRECT does not work on tmpfs). Part 1 runs the two daemons at the
//! same time (the latency is sleeps); part 2 runs one daemon at a time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hactl::ondisk::Name;
use hactl::proto::client::{Client, ClientError};
use hactl::proto::structs::{SanlkLockspace, SanlkPath};
use hactl::proto::{SANLK_ADD_ASYNC, SANLK_INQ_WAIT};

const MIB: u64 = 1 << 20;
const SANLOCK: &str = "/usr/sbin/sanlock";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Sanlock,
    Hactl,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sanlock => "sanlock",
            Kind::Hactl => "hactl",
        }
    }
}

const KINDS: [Kind; 2] = [Kind::Sanlock, Kind::Hactl];

/// A daemon in its own run dir, SIGKILLed by pid on drop.
struct Daemon {
    kind: Kind,
    run_dir: PathBuf,
    child: Child,
}

impl Daemon {
    fn start(kind: Kind, run_dir: &Path, hactl_bin: &Path, extra: &[String]) -> Daemon {
        std::fs::create_dir_all(run_dir).unwrap();
        let (bin, log) = match kind {
            Kind::Sanlock => (PathBuf::from(SANLOCK), "daemon.log"),
            Kind::Hactl => (hactl_bin.to_path_buf(), "daemon.stderr"),
        };
        let log = std::fs::File::create(run_dir.join(log)).unwrap();
        let mut c = Command::new(&bin);
        c.args([
            "daemon", "-D", "-w", "0", "-l", "0", "-h", "0", "-U", "root", "-G", "root",
        ])
        .args(extra)
        .env("SANLOCK_RUN_DIR", run_dir)
        .env("SANLOCK_PRIVILEGED", "0")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        if kind == Kind::Hactl {
            c.env("HACTL_SANLOCK_CONF", "/nonexistent");
        }
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let d = Daemon {
            kind,
            run_dir: run_dir.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !run_dir.join("sanlock.sock").exists() {
            assert!(
                Instant::now() < deadline,
                "{} daemon did not create its socket",
                kind.name()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn client(&self) -> Client {
        Client::with_run_dir(&self.run_dir)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Seconds of CLOCK_MONOTONIC (the clock of delta lease timestamps).
fn monotime() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64)
        .unwrap_or(0)
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as u64 }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// (Threads, VmRSS in kB) from /proc/PID/status.
fn threads_rss(pid: i32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("Threads:")?, field("VmRSS:")?))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn lockspace(name: &str, host_id: u64, path: &Path, offset: u64) -> SanlkLockspace {
    SanlkLockspace::new(
        Name::new(name).unwrap(),
        host_id,
        SanlkPath::new(path.to_str().unwrap()).unwrap(),
        offset,
    )
}

/// `hactl direct init -s NAME:0:FILE:OFFSET -o IO` for each area, a few
/// processes at a time.
fn init_areas(hactl_bin: &Path, file: &Path, areas: &[(String, u64)], io_timeout: u32) {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(file)
        .unwrap();
    let end = areas.iter().map(|a| a.1 + MIB).max().unwrap_or(0);
    if f.metadata().unwrap().len() < end {
        f.set_len(end).unwrap();
    }
    drop(f);
    let escaped = file.to_str().unwrap().replace(':', "\\:");
    for chunk in areas.chunks(4) {
        let kids: Vec<_> = chunk
            .iter()
            .map(|(name, off)| {
                let spec = format!("{name}:0:{escaped}:{off}");
                let kid = Command::new(hactl_bin)
                    .args(["direct", "init", "-s", &spec, "-o", &io_timeout.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (spec, kid)
            })
            .collect();
        for (spec, kid) in kids {
            let o = kid.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "hactl direct init -s {spec} failed: {} {}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------- part 1

#[derive(Default)]
struct Latency {
    secs: Vec<f64>,
    errors: Vec<String>,
}

/// `reps` synchronous adds of a fresh host_id 1, each on its own newly
/// initialised area; each lockspace is removed (synchronously, untimed)
/// before the next add.
fn add_latency(d: &Daemon, dir: &Path, hactl_bin: &Path, io: u32, reps: usize) -> Latency {
    let file = dir.join(format!("add-{}-io{io}.img", d.kind.name()));
    let areas: Vec<(String, u64)> = (0..reps)
        .map(|k| (format!("add{io}x{k}"), k as u64 * MIB))
        .collect();
    init_areas(hactl_bin, &file, &areas, io);
    let c = d.client();
    let mut out = Latency::default();
    for (name, off) in &areas {
        let ls = lockspace(name, 1, &file, *off);
        let t0 = Instant::now();
        let r = c.add_lockspace(&ls, 0, io, Some(Duration::from_secs(30 * io as u64 + 60)));
        let dt = t0.elapsed().as_secs_f64();
        match r {
            Ok(_) => out.secs.push(dt),
            Err(e) => out
                .errors
                .push(format!("add {name}: {e} (rv {}) after {dt:.2} s", e.rv())),
        }
        if let Err(e) = c.rem_lockspace(&ls, 0, Some(Duration::from_secs(120))) {
            out.errors.push(format!("rem {name}: {e} (rv {})", e.rv()));
        }
    }
    out
}

// ---------------------------------------------------------------- part 2

#[derive(Default, Debug)]
struct Phase {
    add_errors: Vec<String>,
    joined: usize,
    join_secs: f64,
    window_secs: f64,
    join_cpu_secs: f64,
    flags: String,
    cpu_pct: f64,
    threads_end: u64,
    threads_min: u64,
    threads_max: u64,
    rss_end_kb: u64,
    rss_max_kb: u64,
    gaps: usize,
    gaps_on_time: usize,
    worst_gap: u64,
    worst_gap_ls: String,
    renewals: usize,
    next_timeouts: u64,
    next_errors: u64,
    max_age_end: u64,
    max_age_ls: String,
    renewal_query_errors: Vec<String>,
    alive_end: bool,
    listed_end: String,
    cpu_pct_min5: f64,
    /// read_ms + write_ms of each renewal in the histories.
    io_ms: Vec<u64>,
    cpu_pct_max5: f64,
    load_before: String,
    load_after: String,
    log_notes: Vec<String>,
}

fn parse_kv(text: &str, key: &str) -> Option<u64> {
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn scale_phase(
    kind: Kind,
    n: usize,
    window: u64,
    dir: &Path,
    hactl_bin: &Path,
    io: u32,
    extra: &[String],
) -> Phase {
    let mut ph = Phase::default();
    let file = dir.join(format!("scale-{}-{n}.img", kind.name()));
    let areas: Vec<(String, u64)> = (0..n)
        .map(|i| (format!("ls{i:04}"), i as u64 * MIB))
        .collect();
    let t = Instant::now();
    init_areas(hactl_bin, &file, &areas, io);
    eprintln!(
        "  [{} N={n}] initialised {n} areas in {:.1} s",
        kind.name(),
        t.elapsed().as_secs_f64()
    );
    let run_dir = dir.join(format!("run-{}-{n}", kind.name()));
    let mut d = Daemon::start(kind, &run_dir, hactl_bin, extra);
    let c = d.client();
    let specs: Vec<SanlkLockspace> = areas
        .iter()
        .map(|(name, off)| lockspace(name, 1, &file, *off))
        .collect();

    // Add everything asynchronously, then wait for each.
    let t0 = Instant::now();
    let mut added = vec![false; n];
    for (i, ls) in specs.iter().enumerate() {
        match c.add_lockspace(ls, SANLK_ADD_ASYNC, io, Some(Duration::from_secs(60))) {
            Ok(_) => added[i] = true,
            Err(e) => ph
                .add_errors
                .push(format!("add {}: {e} (rv {})", areas[i].0, e.rv())),
        }
    }
    let add_secs = t0.elapsed().as_secs_f64();
    let join_deadline = t0 + Duration::from_secs(30 * io as u64 + 120);
    for (i, ls) in specs.iter().enumerate() {
        if !added[i] {
            continue;
        }
        loop {
            let left = join_deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                ph.add_errors
                    .push(format!("{}: not joined by the deadline", areas[i].0));
                break;
            }
            match c.inq_lockspace(ls, SANLK_INQ_WAIT, Some(left)) {
                Ok(_) => {
                    ph.joined += 1;
                    break;
                }
                Err(ClientError::Daemon(rv)) if rv == -libc::EINPROGRESS => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    ph.add_errors
                        .push(format!("inq {}: {e} (rv {})", areas[i].0, e.rv()));
                    break;
                }
            }
        }
    }
    ph.join_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "  [{} N={n}] {n} async adds sent in {add_secs:.1} s; {} joined after {:.1} s; {} errors",
        kind.name(),
        ph.joined,
        ph.join_secs,
        ph.add_errors.len()
    );

    // The window.
    let pid = d.pid();
    ph.load_before = loadavg();
    let w0 = Instant::now();
    let ticks0 = cpu_ticks(pid).unwrap_or(0);
    ph.join_cpu_secs = ticks0 as f64 / clk_tck() as f64;
    ph.threads_min = u64::MAX;
    // (seconds into the window, ticks) every 0.5 s, for 5 s slices.
    let mut samples: Vec<(f64, u64)> = vec![(0.0, ticks0)];
    while w0.elapsed() < Duration::from_secs(window) {
        if let Some(t) = cpu_ticks(pid) {
            samples.push((w0.elapsed().as_secs_f64(), t));
        }
        if let Some((th, rss)) = threads_rss(pid) {
            ph.threads_min = ph.threads_min.min(th);
            ph.threads_max = ph.threads_max.max(th);
            ph.rss_max_kb = ph.rss_max_kb.max(rss);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let ticks1 = cpu_ticks(pid).unwrap_or(0);
    ph.window_secs = w0.elapsed().as_secs_f64();
    samples.push((ph.window_secs, ticks1));
    ph.cpu_pct_min5 = f64::MAX;
    for (i, &(t0, k0)) in samples.iter().enumerate() {
        if let Some(&(t1, k1)) = samples[i..].iter().find(|(t, _)| *t >= t0 + 5.0) {
            let pct = (k1 - k0) as f64 / clk_tck() as f64 / (t1 - t0) * 100.0;
            ph.cpu_pct_min5 = ph.cpu_pct_min5.min(pct);
            ph.cpu_pct_max5 = ph.cpu_pct_max5.max(pct);
        }
    }
    ph.cpu_pct = (ticks1.saturating_sub(ticks0)) as f64 / clk_tck() as f64 / ph.window_secs * 100.0;
    if let Some((th, rss)) = threads_rss(pid) {
        ph.threads_end = th;
        ph.rss_end_kb = rss;
    }
    ph.load_after = loadavg();

    // Renewal histories.
    let limit = 2 * io as u64 + 2;
    let now = monotime();
    for (name, _) in &areas {
        let nm = Name::new(name).unwrap();
        match c.renewal(&nm) {
            Err(e) => ph
                .renewal_query_errors
                .push(format!("renewal {name}: {e} (rv {})", e.rv())),
            Ok(s) => {
                let ts: Vec<u64> = s
                    .entries
                    .iter()
                    .map(|e| {
                        let text = String::from_utf8_lossy(&e.state.text);
                        ph.next_timeouts += parse_kv(&text, "next_timeouts").unwrap_or(0);
                        ph.next_errors += parse_kv(&text, "next_errors").unwrap_or(0);
                        ph.io_ms.push(
                            parse_kv(&text, "read_ms").unwrap_or(0)
                                + parse_kv(&text, "write_ms").unwrap_or(0),
                        );
                        parse_kv(&text, "timestamp").unwrap_or(e.state.data64)
                    })
                    .collect();
                ph.renewals += ts.len();
                for w in ts.windows(2) {
                    let gap = w[1].saturating_sub(w[0]);
                    ph.gaps += 1;
                    if gap <= limit {
                        ph.gaps_on_time += 1;
                    }
                    if gap > ph.worst_gap {
                        ph.worst_gap = gap;
                        ph.worst_gap_ls = name.clone();
                    }
                }
                match ts.last() {
                    Some(&last) => {
                        let age = now.saturating_sub(last);
                        if age > ph.max_age_end {
                            ph.max_age_end = age;
                            ph.max_age_ls = name.clone();
                        }
                    }
                    None => ph
                        .renewal_query_errors
                        .push(format!("renewal {name}: empty history")),
                }
            }
        }
    }
    // sanlock sends at most 1 MiB (949 structs) with -ENOSPC and the total
    // count; libsanlock (and hactl's client) then fail with -1.
    ph.listed_end = match c.get_lockspaces(0) {
        Ok(l) => format!("{} (result {})", l.count, l.result),
        Err(e) => format!("get_lockspaces failed: {e} (rv {})", e.rv()),
    };
    ph.alive_end = d.alive();
    drop(c);
    drop(d);
    ph.log_notes = log_notes(kind, &run_dir);
    if std::env::var("HACTL_BENCH_KEEP").as_deref() != Ok("1") {
        let _ = std::fs::remove_file(&file);
    }
    ph
}

/// Lines of the daemon's logs that say something went wrong: counts by
/// pattern, and the first few lines.
fn log_notes(kind: Kind, run_dir: &Path) -> Vec<String> {
    let files: &[&str] = match kind {
        Kind::Sanlock => &["daemon.log"],
        Kind::Hactl => &["daemon.stderr", "hactl.log"],
    };
    let patterns = [
        "error",
        "fail",
        " late",
        "warning",
        "aio timeout",
        "timed out",
        "ioto",
        "abandon",
        "lost",
        "corrupt",
        "panic",
    ];
    let mut notes = Vec::new();
    for f in files {
        let path = run_dir.join(f);
        let Ok(text) = std::fs::read_to_string(&path) else {
            notes.push(format!("{}: (missing)", path.display()));
            continue;
        };
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut first = Vec::new();
        for line in text.lines() {
            // The message only (after "[tid]: "): paths and names are not news.
            let msg = line.split_once("]: ").map_or(line, |(_, m)| m);
            let low = msg.to_lowercase();
            let hit: Vec<&str> = patterns
                .iter()
                .copied()
                .filter(|p| low.contains(p))
                .collect();
            for p in &hit {
                *counts.entry(p).or_default() += 1;
            }
            if !hit.is_empty() && first.len() < 8 {
                first.push(line.to_string());
            }
        }
        notes.push(format!(
            "{} ({} lines): {}",
            path.display(),
            text.lines().count(),
            if counts.is_empty() {
                format!("no line matches {}", patterns.join("|"))
            } else {
                counts
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
        for l in first {
            notes.push(format!("    {l}"));
        }
    }
    notes
}

// ---------------------------------------------------------------- output

fn ratio(h: f64, s: f64) -> String {
    if s > 0.0 && h.is_finite() && s.is_finite() {
        format!("{:.2}", h / s)
    } else {
        "-".into()
    }
}

fn row(out: &mut String, n: &str, metric: &str, s: String, h: String, r: String) {
    let _ = writeln!(
        out,
        "| {n:>5} | {metric:<40} | {s:>22} | {h:>22} | {r:>7} |"
    );
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn main() {
    // `cargo test --all-targets` runs harness=false benches too; this one
    // takes minutes and starts daemons, so it runs only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("lockspaces bench: skipped (run it with `cargo bench --bench lockspaces`)");
        return;
    }
    let started = Instant::now();
    let budget: u64 = env_or("HACTL_BENCH_BUDGET", "900")
        .parse()
        .expect("HACTL_BENCH_BUDGET");
    // -t for sanlock in part 2: unset = only where 8 workers would not fit.
    let sanlock_t: Option<u64> = std::env::var("HACTL_BENCH_SANLOCK_T")
        .ok()
        .map(|v| v.parse().expect("HACTL_BENCH_SANLOCK_T"));
    let kinds: Vec<Kind> = KINDS
        .into_iter()
        .filter(|k| {
            env_or("HACTL_BENCH_DAEMONS", "sanlock,hactl")
                .split(',')
                .any(|w| w.trim() == k.name())
        })
        .collect();
    let window: u64 = env_or("HACTL_BENCH_WINDOW", "60")
        .parse()
        .expect("HACTL_BENCH_WINDOW");
    let ns: Vec<usize> = env_or("HACTL_BENCH_N", "100,1000")
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().expect("HACTL_BENCH_N"))
        .collect();
    let lat: Vec<(u32, usize)> = env_or("HACTL_BENCH_LATENCY", "1x5,10x2")
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (io, reps) = s
                .trim()
                .split_once('x')
                .expect("HACTL_BENCH_LATENCY: IOxREPS");
            (io.parse().unwrap(), reps.parse().unwrap())
        })
        .collect();

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-lockspaces");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let dir = root.join(format!("run-{stamp}"));
    std::fs::create_dir_all(&dir).unwrap();
    // A private copy: others rebuilding target/ must not change the binary
    // under a running benchmark.
    let hactl_bin = dir.join("hactl");
    std::fs::copy(env!("CARGO_BIN_EXE_hactl"), &hactl_bin).unwrap();
    assert!(
        Path::new(SANLOCK).exists(),
        "the real sanlock is not installed"
    );

    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let sanlock_version = Command::new(SANLOCK)
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    eprintln!(
        "lockspaces bench: dir {} | nproc {nproc} | kernel {} | sanlock {sanlock_version} | N {ns:?} | window {window} s | latency {lat:?} | budget {budget} s",
        dir.display(),
        kernel.trim()
    );

    // Part 1: both daemons at once, one thread each.
    let mut lat_res: BTreeMap<(u32, Kind), Latency> = BTreeMap::new();
    if !lat.is_empty() {
        let daemons: Vec<Daemon> = kinds
            .iter()
            .map(|&k| {
                Daemon::start(
                    k,
                    &dir.join(format!("run-{}-add", k.name())),
                    &hactl_bin,
                    &[],
                )
            })
            .collect();
        for &(io, reps) in &lat {
            let t = Instant::now();
            let res: Vec<(Kind, Latency)> = std::thread::scope(|s| {
                let hs: Vec<_> = daemons
                    .iter()
                    .map(|d| {
                        let (dir, bin) = (&dir, &hactl_bin);
                        s.spawn(move || (d.kind, add_latency(d, dir, bin, io, reps)))
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (k, l) in res {
                eprintln!(
                    "  [{} io_timeout {io}] add_lockspace: {:?} s, errors {:?}",
                    k.name(),
                    l.secs
                        .iter()
                        .map(|x| (x * 100.0).round() / 100.0)
                        .collect::<Vec<_>>(),
                    l.errors
                );
                lat_res.insert((io, k), l);
            }
            eprintln!("  io_timeout {io}: {:.1} s", t.elapsed().as_secs_f64());
        }
        for d in &daemons {
            for n in log_notes(d.kind, &d.run_dir) {
                eprintln!("  log {n}");
            }
        }
    }

    // Part 2: one daemon at a time.
    let io = 10u32;
    let mut phases: BTreeMap<(usize, Kind), Phase> = BTreeMap::new();
    let mut skipped = Vec::new();
    for &n in &ns {
        for &k in &kinds {
            // add + join (~2 io_timeouts + n * a little) + window + histories.
            // sanlock runs an add (ASYNC or not) on one of its worker
            // threads until the host_id is acquired (2 * io_timeout for a
            // free one): with the default 8 workers, N adds take
            // N / 8 * 2 * io_timeout. Where that would not fit, sanlock
            // gets more workers (-t), and the table says so.
            let join_with = |t: u64| (n as u64).div_ceil(t) * 2 * io as u64;
            let t = match (k, sanlock_t) {
                (Kind::Hactl, _) => None,
                (Kind::Sanlock, Some(0)) => None,
                (Kind::Sanlock, Some(t)) => Some(t),
                (Kind::Sanlock, None) if join_with(8) > 300 => {
                    Some((n as u64 * 2 * io as u64).div_ceil(80).next_power_of_two())
                }
                (Kind::Sanlock, None) => None,
            };
            let extra: Vec<String> = match t {
                Some(t) => vec!["-t".into(), t.to_string()],
                None => Vec::new(),
            };
            let join = match (k, t) {
                (Kind::Hactl, _) => 2 * io as u64,
                (Kind::Sanlock, t) => join_with(t.unwrap_or(8)),
            };
            let estimate = join + 15 + window + n as u64 / 50;
            let spent = started.elapsed().as_secs();
            if spent + estimate > budget {
                let why = format!(
                    "{} N={n}: skipped, {spent} s spent + ~{estimate} s estimated > budget {budget} s",
                    k.name()
                );
                eprintln!("  {why}");
                skipped.push(why);
                continue;
            }
            eprintln!("  [{} N={n}] starting at {spent} s", k.name());
            let mut ph = scale_phase(k, n, window, &dir, &hactl_bin, io, &extra);
            ph.flags = if extra.is_empty() {
                "(defaults)".into()
            } else {
                extra.join(" ")
            };
            eprintln!(
                "  [{} N={n}] window {:.0} s: CPU {:.2}%, threads {}..{}, RSS max {} kB, gaps on time {}/{}, worst gap {} s",
                k.name(),
                ph.window_secs,
                ph.cpu_pct,
                ph.threads_min,
                ph.threads_max,
                ph.rss_max_kb,
                ph.gaps_on_time,
                ph.gaps,
                ph.worst_gap
            );
            phases.insert((n, k), ph);
        }
    }

    // The table.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nhactl vs sanlock {sanlock_version} — nproc {nproc}, kernel {}, total {:.0} s, files in {}\n",
        kernel.trim(),
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    let _ = writeln!(
        out,
        "| {:>5} | {:<40} | {:>22} | {:>22} | {:>7} |",
        "N", "metric", "sanlock", "hactl", "h/s"
    );
    let _ = writeln!(
        out,
        "|------:|:{}|{}:|{}:|--------:|",
        "-".repeat(41),
        "-".repeat(23),
        "-".repeat(23)
    );
    for &(io, reps) in &lat {
        let cell = |k: Kind| -> (String, f64) {
            let Some(l) = lat_res.get(&(io, k)) else {
                return ("-".into(), f64::NAN);
            };
            let mut v = l.secs.clone();
            let m = median(&mut v);
            let lo = v.first().copied().unwrap_or(f64::NAN);
            let hi = v.last().copied().unwrap_or(f64::NAN);
            let err = if l.errors.is_empty() {
                String::new()
            } else {
                format!(" {} ERR", l.errors.len())
            };
            (format!("{m:.2} s [{lo:.2}..{hi:.2}]{err}"), m)
        };
        let (s, sm) = cell(Kind::Sanlock);
        let (h, hm) = cell(Kind::Hactl);
        row(
            &mut out,
            "1",
            &format!("add_lockspace io_timeout {io}, median of {reps}"),
            s,
            h,
            ratio(hm, sm),
        );
    }
    for &n in &ns {
        let s = phases.get(&(n, Kind::Sanlock));
        let h = phases.get(&(n, Kind::Hactl));
        if s.is_none() && h.is_none() {
            row(
                &mut out,
                &n.to_string(),
                "not measured (see skipped)",
                "-".into(),
                "-".into(),
                "-".into(),
            );
            continue;
        }
        let ns = n.to_string();
        // A metric as text and as a number (for the ratio); "-" where the
        // daemon was not measured.
        let text = |out: &mut String, m: &str, f: &dyn Fn(&Phase) -> (String, f64)| {
            let (a, an) = s.map(f).unwrap_or(("-".into(), f64::NAN));
            let (b, bn) = h.map(f).unwrap_or(("-".into(), f64::NAN));
            row(out, &ns, m, a, b, ratio(bn, an));
        };
        let num = |out: &mut String, m: &str, f: &dyn Fn(&Phase) -> f64, prec: usize| {
            text(out, m, &|p| (format!("{:.prec$}", f(p)), f(p)));
        };
        text(&mut out, "extra daemon flags", &|p| {
            (p.flags.clone(), f64::NAN)
        });
        num(&mut out, "joined (of N)", &|p| p.joined as f64, 0);
        num(&mut out, "all joined after (s)", &|p| p.join_secs, 1);
        num(
            &mut out,
            "CPU s, start to all joined",
            &|p| p.join_cpu_secs,
            2,
        );
        text(&mut out, "renewal gaps <= 22 s", &|p| {
            let f = p.gaps_on_time as f64 / p.gaps.max(1) as f64;
            (
                format!("{:.2}% ({}/{})", 100.0 * f, p.gaps_on_time, p.gaps),
                f,
            )
        });
        num(
            &mut out,
            "worst renewal gap (s)",
            &|p| p.worst_gap as f64,
            0,
        );
        num(
            &mut out,
            "max age of last renewal at end (s)",
            &|p| p.max_age_end as f64,
            0,
        );
        num(
            &mut out,
            "renewal next_timeouts + next_errors",
            &|p| (p.next_timeouts + p.next_errors) as f64,
            0,
        );
        num(
            &mut out,
            &format!("CPU % of one core ({window} s window)"),
            &|p| p.cpu_pct,
            2,
        );
        text(&mut out, "CPU % in 5 s slices, min..max", &|p| {
            (
                format!("{:.1}..{:.1}", p.cpu_pct_min5, p.cpu_pct_max5),
                p.cpu_pct_min5,
            )
        });
        text(&mut out, "renewal read+write ms, p99 / max", &|p| {
            let mut v = p.io_ms.clone();
            v.sort_unstable();
            let p99 = v
                .get((v.len() * 99).div_ceil(100).saturating_sub(1))
                .copied();
            let max = v.last().copied();
            (
                format!("{} / {}", p99.unwrap_or(0), max.unwrap_or(0)),
                max.unwrap_or(0) as f64,
            )
        });
        num(&mut out, "threads at end", &|p| p.threads_end as f64, 0);
        text(&mut out, "threads min..max in window", &|p| {
            (
                format!("{}..{}", p.threads_min, p.threads_max),
                p.threads_max as f64,
            )
        });
        num(
            &mut out,
            "RSS MiB at end",
            &|p| p.rss_end_kb as f64 / 1024.0,
            1,
        );
        num(
            &mut out,
            "RSS MiB max in window",
            &|p| p.rss_max_kb as f64 / 1024.0,
            1,
        );
    }
    let _ = writeln!(out);
    for s in &skipped {
        let _ = writeln!(out, "skipped: {s}");
    }
    for ((io, k), l) in &lat_res {
        for e in &l.errors {
            let _ = writeln!(out, "{} latency io_timeout {io}: {e}", k.name());
        }
    }
    for ((n, k), p) in &phases {
        let _ = writeln!(
            out,
            "{} N={n}: alive at end {}, lockspaces listed {}, renewals {}, worst gap in {}, oldest at end {}, load {} -> {}, add/join errors {}, renewal query errors {}",
            k.name(),
            p.alive_end,
            p.listed_end,
            p.renewals,
            p.worst_gap_ls,
            p.max_age_ls,
            p.load_before,
            p.load_after,
            p.add_errors.len(),
            p.renewal_query_errors.len()
        );
        for e in p.add_errors.iter().chain(&p.renewal_query_errors).take(5) {
            let _ = writeln!(out, "    {e}");
        }
        for l in &p.log_notes {
            let _ = writeln!(out, "  log {l}");
        }
    }
    println!("{out}");
    let _ = std::fs::write(dir.join("table.txt"), &out);
}
