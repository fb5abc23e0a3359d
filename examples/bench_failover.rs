//! Failover time of the HA layer: a three-host cluster on this machine
//! (src/ha/cluster.rs), N demo VMs all preferring host 1, host 1 crashed
//! (kill -9 of its daemon, agent and VMs), and for each VM the time from
//! the crash until its disk shows writes from a surviving host, beside the
//! time the survivors' daemons called host 1 DEAD (sanlock's own DEAD
//! time, host_dead_seconds = 8 × io_timeout + 60).
//!
//! `cargo run --release --example bench_failover -- [N...]` (default 1 10
//! 100); `tools/bench-failover.sh` runs it and docs/bench-failover.md
//! holds results. Needs a file system with O_DIRECT under target/.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hactl::ha::cluster::{Cluster, ClusterOpts};

fn hactl_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/examples/bench_failover -> target/<profile>/hactl
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("hactl"));
    match bin {
        Some(b) if b.exists() => b,
        _ => panic!("build the hactl binary first (cargo build --release)"),
    }
}

fn unix_now() -> f64 {
    hactl::ha::agent::unix_now()
}

struct Result {
    vms: usize,
    dead: Vec<(u64, f64)>,
    back: Vec<f64>,
    on: [usize; 2],
    lost_races: usize,
    failed_starts: usize,
    ok_disks: bool,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[k]
}

fn bench(dir: &Path, n: usize) -> std::result::Result<Result, String> {
    let mut o = ClusterOpts::new(&hactl_bin(), 3, n);
    o.capacity = (n as u32 + 8).max(64);
    // Others race for an orphan only after this long: while host 1 starts
    // its N VMs, and after the crash only for the VMs not assigned to them.
    o.grace = 30;
    o.env.push((
        hactl::ha::demo_vm::INTERVAL_ENV.into(),
        if n > 20 { "250" } else { "100" }.into(),
    ));
    for i in 0..n {
        o.vm_extra.insert(i, "preferred_hosts = [1]".into());
    }
    let fresh = Duration::from_millis(if n > 20 { 1500 } else { 800 });
    let mut c = Cluster::create(dir, o)?;
    c.start_all()?;
    let t = Instant::now();
    while !c.running_on(fresh).iter().all(|h| *h == Some(1)) {
        if t.elapsed() > Duration::from_secs(120 + n as u64) {
            return Err(format!("the {n} VMs did not all run on host 1"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "{n} VM(s) run on host 1 after {:.1} s; crashing host 1",
        t.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    let t0 = unix_now();
    let crash = Instant::now();
    c.crash(1);
    let mut back: Vec<Option<f64>> = vec![None; n];
    let mut hosts = vec![0u64; n];
    while back.iter().any(Option::is_none) && crash.elapsed() < Duration::from_secs(200) {
        std::thread::sleep(Duration::from_millis(100));
        // The disks are the truth: the first record from a survivor.
        for (i, d) in c.disks.iter().enumerate() {
            if back[i].is_some() {
                continue;
            }
            if let Ok(rep) = hactl::ha::demo_vm::check_file(d)
                && let Some(r) = rep.runs.iter().find(|r| r.host_id != 1)
            {
                back[i] = Some(r.first_ns as f64 / 1e9 - t0);
                hosts[i] = r.host_id;
            }
        }
    }
    let mut dead = Vec::new();
    let (mut lost_races, mut failed_starts) = (0, 0);
    for h in [2, 3] {
        for e in c.events(h) {
            let t = e["t_unix"].as_f64().unwrap_or(0.0);
            let r = e["reason"].as_str().unwrap_or("");
            if e["kind"] == "state" && r.starts_with("host 1 ") && r.contains("-> DEAD") {
                dead.push((h, t - t0));
            }
            if t > t0 && e["kind"] == "lost_race" {
                lost_races += 1;
            }
            if t > t0 && e["kind"] == "failed_start" {
                failed_starts += 1;
            }
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    c.stop_all();
    let ok_disks = c.check_disks().iter().all(|(_, r)| r.violations.is_empty());
    let missing = back.iter().filter(|b| b.is_none()).count();
    if missing > 0 {
        return Err(format!("{missing} of {n} VMs never ran again"));
    }
    Ok(Result {
        vms: n,
        dead,
        back: back.into_iter().flatten().collect(),
        on: [
            hosts.iter().filter(|&&h| h == 2).count(),
            hosts.iter().filter(|&&h| h == 3).count(),
        ],
        lost_races,
        failed_starts,
        ok_disks,
    })
}

fn main() {
    let mut ns: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("VM counts"))
        .collect();
    if ns.is_empty() {
        ns = vec![1, 10, 100];
    }
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-failover");
    let _ = std::fs::remove_dir_all(&base);
    println!(
        "| VMs | host 1 DEAD (host 2 / host 3) | first VM back | median | p90 | last VM back | last - DEAD | restarted on host 2 / 3 | lost races | failed starts | split-brain check |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for n in ns {
        let dir = base.join(format!("n{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        match bench(&dir, n) {
            Ok(mut r) => {
                r.back.sort_by(f64::total_cmp);
                let dead_s: Vec<String> = r.dead.iter().map(|(_, t)| format!("{t:.1} s")).collect();
                let first_dead = r.dead.iter().map(|d| d.1).fold(f64::INFINITY, f64::min);
                let last = *r.back.last().unwrap();
                println!(
                    "| {} | {} | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {:+.1} s | {} / {} | {} | {} | {} |",
                    r.vms,
                    dead_s.join(" / "),
                    r.back[0],
                    pct(&r.back, 0.5),
                    pct(&r.back, 0.9),
                    last,
                    last - first_dead,
                    r.on[0],
                    r.on[1],
                    r.lost_races,
                    r.failed_starts,
                    if r.ok_disks { "ok" } else { "VIOLATION" }
                );
                failed |= !r.ok_disks;
            }
            Err(e) => {
                println!("| {n} | failed: {e} |");
                failed = true;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::process::exit(i32::from(failed));
}
