//! The soak (issue 17), behind a flag: `HACTL_SOAK_MINUTES=N tools/test.sh`
//! (or `HACTL_SOAK_MINUTES=N cargo test --release --test soak -- --ignored
//! --nocapture`). Two hactl hosts share two lockspaces: LS on a local
//! file, and LSF, which host 2 reaches through a FUSE pass-through whose
//! storage is made slow, failing (EIO) and frozen in turns (a freeze
//! longer than 8 x io_timeout loses host 2 the lockspace, and it joins
//! again after). Hundreds of client slots each run `hactl client command
//! -r LEASE -c hactl ha demo-vm DISK` on a random lease of either host and
//! kill it (SIGKILL or SIGTERM) after a random time; a third lockspace is
//! added and removed over and over. Each demo VM appends checksummed
//! records to its lease's disk file, so the disks prove whether two
//! holders ever ran at once.
//!
//! At the end, after the clients are gone and a minute of quiet: both
//! daemons answer; their threads, fds and RSS are within the bounds below
//! of what they were after the warm-up; no disk shows two holders; every
//! lease is free or taken over at once by the next user (none is held by
//! a live instance nobody can take it from); `hactl direct check` finds
//! the lease files clean; the log files are within their cap.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;
const LS_LEASES: u64 = 64;
const LSF_LEASES: u64 = 16;
/// The log cap given to both daemons.
const LOG_KB: u64 = 256;
/// Growth allowed between the warm-up's figures and the end's.
const MAX_MORE_THREADS: u64 = 4;
const MAX_MORE_FDS: u64 = 4;
const MAX_RSS_RATIO: f64 = 1.5;

fn hactl_run(args: &[&str], run_dir: Option<&Path>) -> Out {
    match run_dir {
        Some(d) => run_env(hactl(), args, &[("SANLOCK_RUN_DIR", p(d))]),
        None => run(hactl(), args),
    }
}

fn add_ls(run_dir: &Path, spec: &str, io: &str) -> Out {
    hactl_run(
        &["client", "add_lockspace", "-s", spec, "-o", io],
        Some(run_dir),
    )
}

/// (VmRSS kB, threads, open fds) of a process.
fn figures(pid: i32) -> (u64, u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (field("VmRSS"), field("Threads"), fds)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Where things are.
struct Layout {
    ls: PathBuf,
    lsf_direct: PathBuf,
    lsf_fuse: PathBuf,
    lsx: PathBuf,
    disks: PathBuf,
    run: [PathBuf; 2],
}

impl Layout {
    fn lsf(&self, host: usize) -> &Path {
        if host == 2 {
            &self.lsf_fuse
        } else {
            &self.lsf_direct
        }
    }
    fn disk(&self, ls: &str, k: u64) -> PathBuf {
        self.disks.join(format!("{ls}-R{k}"))
    }
}

#[derive(Default)]
struct Counts {
    held: AtomicU64,
    refused: AtomicU64,
    sigkill: AtomicU64,
    sigterm: AtomicU64,
    lsx_cycles: AtomicU64,
    lsf_rejoins: AtomicU64,
}

/// One client slot: a demo VM holding a random lease for a random time.
fn slot(l: Arc<Layout>, n: u64, stop: Arc<AtomicBool>, c: Arc<Counts>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let host = 1 + (n % 2) as usize;
    while !stop.load(Ordering::Relaxed) {
        let (ls, path, k) = if rng.below(4) == 0 {
            ("LSF", l.lsf(host).to_path_buf(), 1 + rng.below(LSF_LEASES))
        } else {
            ("LS", l.ls.clone(), 1 + rng.below(LS_LEASES))
        };
        let res = format!("{ls}:R{k}:{}:{}", p(&path), k * MIB);
        let disk = l.disk(ls, k);
        let mut child: Child = Command::new(hactl())
            .args([
                "client",
                "command",
                "-r",
                &res,
                "-c",
                hactl(),
                "ha",
                "demo-vm",
            ])
            .arg(&disk)
            .env("SANLOCK_RUN_DIR", &l.run[host - 1])
            .env("HACTL_HA_HOST_ID", host.to_string())
            .env("HACTL_HA_DEMO_VM_INTERVAL_MS", "200")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a client");
        let hold = Duration::from_millis(300 + rng.below(4000));
        let end = Instant::now() + hold;
        let mut exited = false;
        while Instant::now() < end {
            if matches!(child.try_wait(), Ok(Some(_))) {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if exited {
            c.refused.fetch_add(1, Ordering::Relaxed);
            let _ = child.wait();
        } else {
            let sig = if rng.below(2) == 0 {
                c.sigkill.fetch_add(1, Ordering::Relaxed);
                libc::SIGKILL
            } else {
                c.sigterm.fetch_add(1, Ordering::Relaxed);
                libc::SIGTERM
            };
            c.held.fetch_add(1, Ordering::Relaxed);
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, sig) };
            let _ = child.wait();
        }
        std::thread::sleep(Duration::from_millis(rng.below(500)));
    }
}

/// Joined on `host`? (`inq_lockspace`).
fn joined(l: &Layout, host: usize, spec: &str) -> bool {
    hactl_run(
        &["client", "inq_lockspace", "-s", spec],
        Some(&l.run[host - 1]),
    )
    .text()
    .contains("done 0")
}

/// Host 2 has LSF again, joining it as often as needed (after a freeze
/// lost it, until its old delta lease may be taken).
fn rejoin_lsf(l: &Layout, c: &Counts, log: &Mutex<Vec<String>>) {
    let spec = format!("LSF:2:{}:0", p(&l.lsf_fuse));
    let deadline = Instant::now() + Duration::from_secs(300);
    while !joined(l, 2, &spec) {
        assert!(
            Instant::now() < deadline,
            "host 2 could not join LSF again in 300 s"
        );
        let o = add_ls(&l.run[1], &spec, "2");
        if o.text().contains("done 0") {
            c.lsf_rejoins.fetch_add(1, Ordering::Relaxed);
            log.lock()
                .unwrap()
                .push("host 2 joined LSF again".to_string());
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

struct Flags {
    fail: PathBuf,
    slow: PathBuf,
}

/// Host 2's LSF storage: normal, slow, failing, frozen, in turns.
fn faults(
    l: Arc<Layout>,
    fuse: Arc<Fuse>,
    flags: Arc<Flags>,
    stop: Arc<AtomicBool>,
    c: Arc<Counts>,
    log: Arc<Mutex<Vec<String>>>,
) {
    let t0 = Instant::now();
    let note = |what: &str| {
        log.lock()
            .unwrap()
            .push(format!("{:>6.0}s {what}", t0.elapsed().as_secs_f64()));
    };
    let pause = |secs: u64| {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    while !stop.load(Ordering::Relaxed) {
        pause(45);
        note("slow: 50 ms per I/O");
        std::fs::write(&flags.slow, "0.05").unwrap();
        pause(30);
        let _ = std::fs::remove_file(&flags.slow);
        note("normal");
        pause(30);
        note("EIO");
        std::fs::write(&flags.fail, "").unwrap();
        pause(6);
        let _ = std::fs::remove_file(&flags.fail);
        note("normal");
        pause(30);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        note("frozen (SIGSTOP) for 25 s");
        fuse.signal(libc::SIGSTOP);
        std::thread::sleep(Duration::from_secs(25));
        fuse.signal(libc::SIGCONT);
        note("thawed");
        rejoin_lsf(&l, &c, &log);
        note("LSF joined on host 2");
    }
}

/// rem/add of a third lockspace on host 1, over and over.
fn lsx_churn(l: Arc<Layout>, stop: Arc<AtomicBool>, c: Arc<Counts>) {
    let spec = format!("LSX:1:{}:0", p(&l.lsx));
    while !stop.load(Ordering::Relaxed) {
        let o = add_ls(&l.run[0], &spec, "1");
        assert!(o.text().contains("done 0"), "add LSX: {}", o.text());
        std::thread::sleep(Duration::from_secs(5));
        let o = hactl_run(&["client", "rem_lockspace", "-s", &spec], Some(&l.run[0]));
        assert!(o.text().contains("done 0"), "rem LSX: {}", o.text());
        c.lsx_cycles.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(3));
    }
}

fn run_clients(
    l: &Arc<Layout>,
    n: u64,
    c: &Arc<Counts>,
) -> (Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (0..n)
        .map(|i| {
            let (l, stop, c) = (l.clone(), stop.clone(), c.clone());
            std::thread::spawn(move || slot(l, i, stop, c))
        })
        .collect();
    (stop, threads)
}

fn leader_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

#[test]
#[ignore = "long: HACTL_SOAK_MINUTES=N tools/test.sh runs it"]
fn soak() {
    let minutes: u64 = std::env::var("HACTL_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("the soak runs for HACTL_SOAK_MINUTES=N minutes: set it");
    let clients: u64 = std::env::var("HACTL_SOAK_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = workdir();
    let d = dir.path();
    let back = d.join("back");
    let mnt = d.join("mnt");
    for x in [&back, &mnt, &d.join("disks")] {
        std::fs::create_dir_all(x).unwrap();
    }
    let l = Arc::new(Layout {
        ls: d.join("ls"),
        lsf_direct: back.join("lsf"),
        lsf_fuse: mnt.join("lsf"),
        lsx: d.join("lsx"),
        disks: d.join("disks"),
        run: [d.join("run1"), d.join("run2")],
    });
    for (name, f, n) in [
        ("LS", &l.ls, LS_LEASES),
        ("LSF", &l.lsf_direct, LSF_LEASES),
        ("LSX", &l.lsx, 0),
    ] {
        std::fs::File::create(f)
            .unwrap()
            .set_len((1 + n) * MIB)
            .unwrap();
        let o = hactl_run(
            &["direct", "init", "-s", &format!("{name}:0:{}:0", p(f))],
            None,
        );
        assert_eq!(o.code, 0, "{}", o.text());
        for k in 1..=n {
            let o = hactl_run(
                &[
                    "direct",
                    "init",
                    "-r",
                    &format!("{name}:R{k}:{}:{}", p(f), k * MIB),
                ],
                None,
            );
            assert_eq!(o.code, 0, "{}", o.text());
        }
    }
    let flags = Arc::new(Flags {
        fail: d.join("fail"),
        slow: d.join("slow"),
    });
    let fuse = Arc::new(Fuse::start_full(
        &back,
        &mnt,
        Some(&flags.fail),
        Some(&flags.slow),
    ));
    let conf = d.join("sanlock.conf");
    std::fs::write(&conf, format!("logfile_max_kb = {LOG_KB}\n")).unwrap();
    let mut hosts: Vec<HactlDaemon> = l
        .run
        .iter()
        .map(|r| HactlDaemon::start_with_env(r, &[], &[("HACTL_SANLOCK_CONF", p(&conf))]))
        .collect();
    for host in [1, 2] {
        let rd = &l.run[host - 1];
        let o = add_ls(rd, &format!("LS:{host}:{}:0", p(&l.ls)), "2");
        assert!(o.text().contains("done 0"), "{}", o.text());
        let o = add_ls(rd, &format!("LSF:{host}:{}:0", p(l.lsf(host))), "2");
        assert!(o.text().contains("done 0"), "{}", o.text());
    }
    let pids: Vec<i32> = hosts.iter().map(|h| h.pid()).collect();
    let counts = Arc::new(Counts::default());
    let events = Arc::new(Mutex::new(Vec::new()));

    // Warm-up: a minute of clients, then quiet; the baseline.
    eprintln!("soak: warm-up, {clients} client slots");
    let (stop, threads) = run_clients(&l, clients, &counts);
    std::thread::sleep(Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    std::thread::sleep(Duration::from_secs(30));
    let base: Vec<_> = pids.iter().map(|&p| figures(p)).collect();
    eprintln!("soak: baseline (RSS kB, threads, fds) {base:?}");

    // The soak proper.
    let start = Instant::now();
    let (stop, threads) = run_clients(&l, clients, &counts);
    let stop_bg = Arc::new(AtomicBool::new(false));
    let bg = vec![
        {
            let (l, fuse, flags, s, c, e) = (
                l.clone(),
                fuse.clone(),
                flags.clone(),
                stop_bg.clone(),
                counts.clone(),
                events.clone(),
            );
            std::thread::spawn(move || faults(l, fuse, flags, s, c, e))
        },
        {
            let (l, s, c) = (l.clone(), stop_bg.clone(), counts.clone());
            std::thread::spawn(move || lsx_churn(l, s, c))
        },
    ];
    let mut peak = [(0u64, 0u64, 0u64); 2];
    while start.elapsed() < Duration::from_secs(minutes * 60) {
        for (i, h) in hosts.iter_mut().enumerate() {
            assert!(h.alive(), "host {} died during the soak", i + 1);
            let f = figures(pids[i]);
            peak[i] = (peak[i].0.max(f.0), peak[i].1.max(f.1), peak[i].2.max(f.2));
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    eprintln!("soak: stopping after {minutes} min");
    stop_bg.store(true, Ordering::Relaxed);
    fuse.signal(libc::SIGCONT);
    let _ = std::fs::remove_file(&flags.fail);
    let _ = std::fs::remove_file(&flags.slow);
    bg.into_iter().for_each(|t| t.join().unwrap());
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    rejoin_lsf(&l, &counts, &events);
    std::thread::sleep(Duration::from_secs(60));

    // The end.
    let mut report = Vec::new();
    let c = &counts;
    report.push(format!(
        "{minutes} min, {clients} client slots: {} holds killed ({} SIGKILL, {} SIGTERM), {} clients refused or failed, \
         {} LSX add/rem cycles, {} LSF rejoins on host 2",
        c.held.load(Ordering::Relaxed),
        c.sigkill.load(Ordering::Relaxed),
        c.sigterm.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        c.lsx_cycles.load(Ordering::Relaxed),
        c.lsf_rejoins.load(Ordering::Relaxed),
    ));
    let mut failures = Vec::new();
    for (i, h) in hosts.iter_mut().enumerate() {
        assert!(h.alive(), "host {} died", i + 1);
        let o = hactl_run(&["client", "status"], Some(&l.run[i]));
        assert_eq!(o.code, 0, "host {} does not answer: {}", i + 1, o.text());
        let end = figures(pids[i]);
        let (b, pk) = (base[i], peak[i]);
        report.push(format!(
            "host {}: RSS {} kB after warm-up, {} kB peak, {} kB at the end ({:.2}x); threads {} / {} / {}; fds {} / {} / {}",
            i + 1,
            b.0,
            pk.0,
            end.0,
            end.0 as f64 / b.0 as f64,
            b.1,
            pk.1,
            end.1,
            b.2,
            pk.2,
            end.2
        ));
        if end.1 > b.1 + MAX_MORE_THREADS {
            failures.push(format!("host {}: threads {} -> {}", i + 1, b.1, end.1));
        }
        if end.2 > b.2 + MAX_MORE_FDS {
            failures.push(format!("host {}: fds {} -> {}", i + 1, b.2, end.2));
        }
        if end.0 as f64 > MAX_RSS_RATIO * b.0 as f64 {
            failures.push(format!("host {}: RSS {} -> {} kB", i + 1, b.0, end.0));
        }
        for f in ["hactl.log", "hactl.log.old"] {
            let n = std::fs::metadata(l.run[i].join(f))
                .map(|m| m.len())
                .unwrap_or(0);
            report.push(format!("host {}: {f} {n} bytes", i + 1));
            if n > LOG_KB * 1024 {
                failures.push(format!(
                    "host {}: {f} is {n} bytes, over {LOG_KB} KiB",
                    i + 1
                ));
            }
        }
    }
    // Never two holders: the disks.
    let mut runs = 0;
    for entry in std::fs::read_dir(&l.disks).unwrap() {
        let path = entry.unwrap().path();
        match hactl::ha::demo_vm::check_file(&path) {
            Ok(rep) => {
                runs += rep.runs.len();
                for v in rep.violations {
                    failures.push(format!("{}: {v}", path.display()));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    report.push(format!(
        "{runs} holder runs on the disks, none overlapping (else listed below)"
    ));
    // Every lease free, or taken over at once by the next user.
    let mut left = 0;
    for (ls, path, n) in [("LS", &l.ls, LS_LEASES), ("LSF", &l.lsf_direct, LSF_LEASES)] {
        for k in 1..=n {
            let spec = format!("{ls}:R{k}:{}:{}", p(path), k * MIB);
            let t = hactl_run(&["direct", "read_leader", "-r", &spec], None).text();
            if leader_field(&t, "timestamp") == 0 {
                continue;
            }
            left += 1;
            let owner = leader_field(&t, "owner_id") as usize;
            let host = if owner == 2 { 2 } else { 1 };
            let res = format!(
                "{ls}:R{k}:{}:{}",
                p(if ls == "LSF" { l.lsf(host) } else { path }),
                k * MIB
            );
            // Acquired (exit 1 if not), then released as /bin/true exits.
            let o = hactl_run(
                &["client", "command", "-r", &res, "-c", "/bin/true"],
                Some(&l.run[host - 1]),
            );
            let free = || {
                let t = hactl_run(&["direct", "read_leader", "-r", &spec], None).text();
                leader_field(&t, "timestamp") == 0
            };
            let end = Instant::now() + Duration::from_secs(10);
            while o.code == 0 && !free() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(200));
            }
            if o.code != 0 || !free() {
                failures.push(format!(
                    "{spec}: held by host {owner} and not taken over: {} {}",
                    o.text(),
                    o.stderr
                ));
            }
        }
    }
    report.push(format!(
        "{left} leases left held at the end (by a lost lockspace instance or a release that failed on EIO), each taken over at once by its next user"
    ));
    std::thread::sleep(Duration::from_secs(2));
    for f in [&l.ls, &l.lsf_direct] {
        let o = hactl_run(&["direct", "check", p(f)], None);
        report.push(format!(
            "direct check {}: {}",
            f.display(),
            o.text().lines().last().unwrap_or("")
        ));
        if o.code != 0 {
            failures.push(format!("direct check {}: {}", f.display(), o.text()));
        }
    }
    report.push("storage events on host 2's LSF path:".into());
    report.extend(events.lock().unwrap().iter().cloned());
    println!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "soak failures:\n{}",
        failures.join("\n")
    );
}
