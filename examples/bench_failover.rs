//! Failover time of the HA layer: a three-host cluster on this machine
//! (src/ha/cluster.rs), N demo VMs all preferring host 1, host 1 crashed
//! (kill -9 of its daemon, agent and VMs), and for each VM the time from
//! the crash until its disk shows writes from a surviving host, beside the
//! time the survivors' daemons called host 1 DEAD (sanlock's own DEAD
//! time, host_dead_seconds = 8 × io_timeout + 60). Beside them, when
//! it is installed and we are root, a real sanlock daemon (Debian's) joined
//! to the same lockspace with a spare host id, no agent and no VMs, says
//! when sanlock itself calls host 1 FAIL and DEAD in the same run.
//!
//! `--gateway [N...]` (root, iproute2; default 1 10) measures host
//! health's move instead: host 1's gateway is cut (each host's agent in a
//! network namespace of its own) and each VM's time until it writes from a
//! healthy host.
//!
//! `cargo run --release --example bench_failover -- [--guests] [N...]`
//! (default 1 10 100; with `--guests` 1 10 30); `tools/bench-failover.sh`
//! runs it and docs/bench-failover.md holds results. Needs a file system
//! with O_DIRECT under target/.
//!
//! `--guests` (root, libvirt, libvirt-sanlock, qemu): each N runs twice in
//! the same invocation, first with demo VMs, then with tiny real guests
//! under libvirt (runner "libvirt", src/ha/guest.rs; each host its own
//! libvirtd in its own mount namespace, the crash kills every process of
//! it, qemu included). A guest is back at the first record a survivor's
//! run of it wrote to its virtio disk: its boot time is in the number.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The host id the sanlock observer joins with: not one of the cluster's.
const OBSERVER_ID: u64 = 4;

/// The real sanlock binary, or why the observer column is skipped.
fn sanlock_bin() -> std::result::Result<&'static str, String> {
    let bin = ["/usr/sbin/sanlock", "/sbin/sanlock", "/usr/bin/sanlock"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("sanlock is not installed (apt-get install sanlock)")?;
    if !nix::unistd::getuid().is_root() {
        return Err("not root (the sanlock daemon runs as root here)".into());
    }
    Ok(bin)
}

/// A real sanlock daemon in its own run dir (started as tests/common's
/// SanlockDaemon is, which an example cannot use), joined to the
/// cluster's lockspace as host OBSERVER_ID. Stopped by its pid.
struct Observer {
    bin: &'static str,
    run_dir: PathBuf,
    lockspace: String,
    child: Option<Child>,
}

impl Observer {
    fn client(bin: &str, run_dir: &Path, args: &[&str]) -> std::result::Result<String, String> {
        let o = Command::new(bin)
            .arg("client")
            .args(args)
            .env("SANLOCK_RUN_DIR", run_dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("sanlock client {args:?}: {e}"))?;
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() {
            Ok(out)
        } else {
            Err(format!(
                "sanlock client {args:?}: {}{}",
                out,
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    }

    fn start(
        bin: &'static str,
        run_dir: &Path,
        ls: &str,
        ids: &Path,
        io_timeout: u32,
    ) -> std::result::Result<Observer, String> {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
        let log = std::fs::File::create(run_dir.join("daemon.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "daemon", "-D", "-w", "0", "-l", "0", "-h", "0", "-U", "root", "-G", "root",
        ])
        .env("SANLOCK_RUN_DIR", run_dir)
        .env("SANLOCK_PRIVILEGED", "0")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
        // SAFETY: prctl is async-signal-safe and only affects the child:
        // the daemon dies with the bench.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start sanlock daemon: {e}"))?;
        let mut obs = Observer {
            bin,
            run_dir: run_dir.to_path_buf(),
            lockspace: format!(
                "{ls}:{OBSERVER_ID}:{}:0",
                hactl::lease_str::escape_path(&ids.display().to_string())
            ),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !run_dir.join("sanlock.sock").exists() {
            if Instant::now() > deadline {
                obs.kill();
                return Err("the sanlock daemon did not create its socket".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Blocks until the delta lease is ours (a few seconds).
        Self::client(
            bin,
            run_dir,
            &[
                "add_lockspace",
                "-s",
                &obs.lockspace,
                "-o",
                &io_timeout.to_string(),
            ],
        )?;
        Ok(obs)
    }

    /// Polls sanlock's own state of `host` (`sanlock client gets -h 1`:
    /// `host_status` prints only timestamps, not FAIL/DEAD) every 100 ms,
    /// from a thread, until it says DEAD or `stop`: the first times (unix)
    /// it said FAIL and DEAD.
    fn watch(&self, host: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Seen> {
        let (bin, run_dir) = (self.bin, self.run_dir.clone());
        std::thread::spawn(move || {
            let (mut fail, mut dead, mut free) = (None, None, None);
            let prefix = format!("h {host} ");
            while dead.is_none() && free.is_none() && !stop.load(Ordering::Relaxed) {
                let t = unix_now();
                let out = Self::client(bin, &run_dir, &["gets", "-h", "1"]);
                // A host declared dead by a fence has a free delta lease:
                // sanlock lists it no more.
                if fail.is_some()
                    && out.as_ref().is_ok_and(|o| {
                        o.contains("s ") && !o.lines().any(|l| l.starts_with(&prefix))
                    })
                {
                    free = Some(t);
                }
                if let Ok(out) = out
                    && let Some(line) = out.lines().find(|l| l.starts_with(&prefix))
                {
                    match line.split_whitespace().last() {
                        Some("FAIL") => _ = fail.get_or_insert(t),
                        // DEAD without FAIL seen: FAIL was before this poll.
                        Some("DEAD") => dead = Some(t),
                        // Declared dead by a fence: its delta lease is free.
                        Some("FREE") if fail.is_some() => free = Some(t),
                        _ => {}
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (fail, dead, free)
        })
    }

    /// Leaves the lockspace, then stops the daemon by its pid.
    fn stop(mut self) -> std::result::Result<(), String> {
        let r = Self::client(
            self.bin,
            &self.run_dir,
            &["rem_lockspace", "-s", &self.lockspace],
        )
        .map(drop);
        self.kill();
        r
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// When the sanlock observer first called host 1 FAIL, DEAD and FREE.
type Seen = (Option<f64>, Option<f64>, Option<f64>);

struct Result {
    vms: usize,
    dead: Vec<(u64, f64)>,
    /// The sanlock observer's FAIL and DEAD of host 1 (None: not seen),
    /// or why there is none.
    sanlock: std::result::Result<Seen, String>,
    /// When a survivor declared host 1 dead after fencing it.
    declared: Option<f64>,
    host_dead: u64,
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

fn bench(
    dir: &Path,
    n: usize,
    sanlock: std::result::Result<&'static str, String>,
    fence: bool,
    io_timeout: u32,
    guests: Option<&hactl::ha::guest::GuestImage>,
) -> std::result::Result<Result, String> {
    let mut o = ClusterOpts::new(&hactl_bin(), 3, n);
    o.guests = guests.cloned();
    o.io_timeout = io_timeout;
    if fence {
        // Every host fenced by the test agent (its process group is its power).
        o.extra_config = hactl::ha::fence::test_section(
            &hactl_bin(),
            dir,
            3,
            30,
            &std::collections::BTreeMap::new(),
        );
    }
    let host_dead = hactl::timeouts::Timeouts::new(io_timeout as u64).host_dead_seconds();
    if sanlock.is_ok() {
        o.whiteboard_hosts = OBSERVER_ID;
    }
    o.capacity = (n as u32 + 8).max(64);
    // Others race for an orphan only after this long: while host 1 starts
    // its N VMs, and after the crash only for the VMs not assigned to them.
    o.grace = 30;
    // Real guests: host 1 takes minutes to start many under emulation, and
    // the others must not race for the ones still starting; after the
    // crash the survivors start their shares at once (no race involved).
    if guests.is_some() {
        o.grace = 60 + 20 * n as u64;
    }
    o.env.push((
        hactl::ha::demo_vm::INTERVAL_ENV.into(),
        if n > 20 { "250" } else { "100" }.into(),
    ));
    for i in 0..n {
        o.vm_extra.insert(i, "preferred_hosts = [1]".into());
    }
    // A guest's clock steps by whole seconds at boot (src/ha/cluster.rs).
    let fresh = Duration::from_millis(match (guests.is_some(), n > 20) {
        (true, _) => 3000,
        (false, true) => 1500,
        (false, false) => 800,
    });
    // Guests boot one after another on two busy cores under emulation.
    // Joining and judging the other hosts take longer with a longer
    // io_timeout (renewals every 2 × io_timeout).
    let boot_limit = Duration::from_secs(
        if guests.is_some() {
            180 + 30 * n as u64
        } else {
            120 + n as u64
        } + 20 * io_timeout as u64,
    );
    let mut c = Cluster::create(dir, o)?;
    let ls = c.opts.lockspace.clone();
    let observer = sanlock.and_then(|bin| {
        Observer::start(
            bin,
            &dir.join("sanlock-observer"),
            &ls,
            &c.shared.join("ids"),
            c.opts.io_timeout,
        )
    });
    if let Err(e) = &observer {
        eprintln!("no sanlock observer: {e}");
    }
    // Host 1 alone first, until it runs them all, for real guests (its
    // libvirtd and agent come up late on a loaded machine) and with a
    // longer io_timeout (joins take 2 x io_timeout each): hosts whose agents
    // ran earlier would start VMs while host 1 has no score yet.
    let host1_first = guests.is_some() || io_timeout > 1;
    let t = Instant::now();
    if host1_first {
        c.start_daemon(1)?;
        c.start_agent(1)?;
    } else {
        c.start_all()?;
    }
    while !c.running_on(fresh).iter().all(|h| *h == Some(1)) {
        if t.elapsed() > boot_limit {
            return Err(format!("the {n} VMs did not all run on host 1"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if host1_first {
        for h in 2..=3 {
            c.start_daemon(h)?;
            c.start_agent(h)?;
        }
        // Until both see host 1 LIVE (the crash must find a formed cluster).
        let t = Instant::now();
        while !(2..=3).all(|h| {
            c.status(h).is_some_and(|s| {
                s["hosts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["host_id"] == 1 && x["state"] == "LIVE"))
            })
        }) {
            if t.elapsed() > Duration::from_secs(120 + 20 * io_timeout as u64) {
                return Err("hosts 2 and 3 did not see host 1 LIVE".into());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    eprintln!(
        "{n} VM(s) run on host 1 after {:.1} s; {} host 1",
        t.elapsed().as_secs_f64(),
        if fence { "hanging" } else { "crashing" }
    );
    std::thread::sleep(Duration::from_secs(3));
    let t0 = unix_now();
    let crash = Instant::now();
    // With fencing the host hangs (SIGSTOP): its power is still on, and
    // the fence agent's off is what kills it, as a BMC's would.
    if fence {
        c.hang(1);
    } else {
        c.crash(1);
    }
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watch = observer
        .as_ref()
        .ok()
        .map(|o| o.watch(1, stop_watch.clone()));
    let mut back: Vec<Option<f64>> = vec![None; n];
    let mut hosts = vec![0u64; n];
    let back_limit =
        Duration::from_secs(host_dead + 130 + if guests.is_some() { 10 * n as u64 } else { 0 });
    while back.iter().any(Option::is_none) && crash.elapsed() < back_limit {
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
    // sanlock may call host 1 DEAD after the last VM is back: wait for it
    // (up to the same 200 s), then stop polling.
    while watch.as_ref().is_some_and(|w| !w.is_finished()) && crash.elapsed() < back_limit {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_watch.store(true, Ordering::Relaxed);
    let sanlock = match (observer, watch) {
        (Ok(obs), Some(w)) => {
            let (fail, dead, free) = w.join().expect("the observer thread");
            if let Err(e) = obs.stop() {
                eprintln!("stopping the sanlock observer: {e}");
            }
            Ok((
                fail.map(|t| t - t0),
                dead.map(|t| t - t0),
                free.map(|t| t - t0),
            ))
        }
        (Err(e), _) => Err(e),
        (Ok(_), None) => unreachable!("a watch thread for every observer"),
    };
    let mut dead = Vec::new();
    let mut declared = None;
    let (mut lost_races, mut failed_starts) = (0, 0);
    for h in [2, 3] {
        for e in c.events(h) {
            let t = e["t_unix"].as_f64().unwrap_or(0.0);
            let r = e["reason"].as_str().unwrap_or("");
            if e["kind"] == "state" && r.starts_with("host 1 ") && r.contains("-> DEAD") {
                dead.push((h, t - t0));
            }
            if e["kind"] == "fence" && r.starts_with("host 1: fenced in") {
                declared = Some(t - t0);
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
        declared,
        host_dead,
        sanlock,
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

/// `--gateway`: what one gateway-loss run measured (seconds from the cut).
struct GwResult {
    vms: usize,
    /// Host 1's agent scored the gateway penalty.
    penalty_seen: f64,
    /// Each VM's first record from a healthy host.
    back: Vec<f64>,
    moves: usize,
    ok_disks: bool,
}

/// Host health's move (issue 18): the three hosts' agents each in a network
/// namespace behind a gateway namespace (src/ha/netlab.rs), `n` demo VMs on
/// host 1 (preferred), then host 1's gateway cut; the time until each VM's
/// disk shows writes from host 2 or 3. The agents ping the gateway every
/// second (timeout 1 s); hold_down 5 s; VMs move one at a time.
fn bench_gateway(dir: &Path, n: usize) -> std::result::Result<GwResult, String> {
    use hactl::ha::netlab::{GATEWAY, Net};
    const HOLD_DOWN: u64 = 5;
    let net = Net::new(3)?;
    let mut o = ClusterOpts::new(&hactl_bin(), 3, n);
    o.capacity = (n as u32 + 8).max(64);
    o.grace = 30;
    o.health = format!(
        "{}hold_down = {HOLD_DOWN}\n[health.gateway]\naddresses = [\"{GATEWAY}\"]\ninterval = 1\ntimeout = 1\n[health.links]\ninterfaces = [\"eth0\"]\ninterval = 1\n",
        hactl::ha::cluster::TEST_HEALTH
    );
    for i in 0..n {
        o.vm_extra.insert(i, "preferred_hosts = [1]".into());
    }
    for h in 1..=3 {
        o.netns.insert(h, net.path(h));
    }
    o.env
        .push((hactl::ha::demo_vm::INTERVAL_ENV.into(), "100".into()));
    let fresh = Duration::from_millis(800);
    let mut c = Cluster::create(dir, o)?;
    // Host 1 alone first, until it runs them all: a VM another host
    // started meanwhile would stay there (nothing moves towards a host).
    c.start_host(1)?;
    let t = Instant::now();
    while !c.running_on(fresh).iter().all(|h| *h == Some(1)) {
        if t.elapsed() > Duration::from_secs(120 + n as u64) {
            return Err(format!("the {n} VMs did not all run on host 1"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for h in 2..=3 {
        c.start_host(h)?;
    }
    // Until hosts 2 and 3 are candidates in host 1's eyes (LIVE, fresh).
    let t2 = Instant::now();
    while !c.sees_candidates(1, &[2, 3]) {
        if t2.elapsed() > Duration::from_secs(120) {
            return Err("host 1 did not see hosts 2 and 3 LIVE".into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "{n} VM(s) run on host 1 after {:.1} s; cutting its gateway",
        t.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    let t0 = unix_now();
    let cut = Instant::now();
    net.cut_gateway(1)?;
    let mut back: Vec<Option<f64>> = vec![None; n];
    let mut penalty_seen = None;
    let limit = Duration::from_secs(60 + 20 * n as u64);
    while back.iter().any(Option::is_none) && cut.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
        if penalty_seen.is_none()
            && c.status(1).is_some_and(|s| {
                s["health"]["penalties"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["kind"] == "gateway"))
            })
        {
            penalty_seen = Some(unix_now() - t0);
        }
        for (i, d) in c.disks.iter().enumerate() {
            if back[i].is_some() {
                continue;
            }
            if let Ok(rep) = hactl::ha::demo_vm::check_file(d)
                && let Some(r) = rep.runs.iter().find(|r| r.host_id != 1)
            {
                back[i] = Some(r.first_ns as f64 / 1e9 - t0);
            }
        }
    }
    let moves = c
        .events(1)
        .iter()
        .filter(|e| {
            e["kind"] == "stop"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("moving it"))
        })
        .count();
    std::thread::sleep(Duration::from_secs(2));
    c.stop_all();
    let ok_disks = c.check_disks().iter().all(|(_, r)| r.violations.is_empty());
    let missing = back.iter().filter(|b| b.is_none()).count();
    if missing > 0 {
        return Err(format!("{missing} of {n} VMs never ran on a healthy host"));
    }
    Ok(GwResult {
        vms: n,
        penalty_seen: penalty_seen.unwrap_or(f64::NAN),
        back: back.into_iter().flatten().collect(),
        moves,
        ok_disks,
    })
}

fn main_gateway(ns: &[usize]) -> ! {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-failover");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    println!(
        "gateway loss: host 1's gateway cut (agents ping it every 1 s, timeout 1 s; hold_down 5 s; agent interval 1 s)"
    );
    println!(
        "| VMs | gateway penalty in host 1's score | first VM on a healthy host | median | last VM on a healthy host | moves | split-brain check |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut failed = false;
    for &n in ns {
        let dir = base.join(format!("gw-n{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        match bench_gateway(&dir, n) {
            Ok(mut r) => {
                r.back.sort_by(f64::total_cmp);
                println!(
                    "| {} demo-vm | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {} | {} |",
                    r.vms,
                    r.penalty_seen,
                    r.back[0],
                    pct(&r.back, 0.5),
                    r.back.last().unwrap(),
                    r.moves,
                    if r.ok_disks { "ok" } else { "VIOLATION" }
                );
                failed |= !r.ok_disks;
            }
            Err(e) => {
                println!("| {n} demo-vm | failed: {e} |");
                failed = true;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::process::exit(i32::from(failed));
}

/// `--guests`: the guest image (the kernel cached where the tests cache it).
fn guest_image(base: &Path) -> hactl::ha::guest::GuestImage {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp/guest-cache");
    let dir = base.join("guest-image");
    std::fs::create_dir_all(&dir).unwrap();
    let img =
        hactl::ha::guest::GuestImage::prepare(&cache, &hactl_bin(), &dir).unwrap_or_else(|e| {
            panic!("cannot assemble the guest (qemu-system-x86, busybox-static, the kernel): {e}")
        });
    hactl::ha::lab::make_reachable(base).unwrap_or_else(|e| panic!("{e}"));
    img
}

fn main() {
    let mut fence = false;
    let mut gateway = false;
    let mut with_guests = false;
    let mut io_timeout = 1u32;
    let mut ns: Vec<usize> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--fence" => fence = true,
            "--gateway" => gateway = true,
            "--guests" => with_guests = true,
            "--io-timeout" => {
                io_timeout = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--io-timeout SECONDS")
            }
            n => ns.push(
                n.parse()
                    .expect("VM counts, --fence, --gateway, --guests, --io-timeout N"),
            ),
        }
    }
    if gateway {
        main_gateway(if ns.is_empty() { &[1, 10] } else { &ns });
    }
    if ns.is_empty() {
        ns = if with_guests {
            vec![1, 10, 30]
        } else {
            vec![1, 10, 100]
        };
    }
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-failover");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let sanlock = sanlock_bin();
    if let Err(e) = &sanlock {
        println!("No sanlock observer column: {e}.");
    }
    let image = with_guests.then(|| guest_image(&base));
    if let Some(img) = &image {
        println!("Real guests: {}.", img.accel_reason);
    }
    // Each N with demo VMs, then (--guests) with real guests.
    let runs: Vec<(usize, Option<&hactl::ha::guest::GuestImage>)> = ns
        .iter()
        .flat_map(|&n| std::iter::once((n, None)).chain(image.as_ref().map(|i| (n, Some(i)))))
        .collect();
    println!(
        "io_timeout {io_timeout} s, {}",
        if fence {
            "fencing: host 1 hangs, host 2 fences it (hactl ha fence-test) and declares it dead"
        } else {
            "no fencing: host 1 crashes"
        }
    );
    println!(
        "| VMs | host 1 declared dead (fence) | host 1 DEAD (host 2 / host 3) | sanlock observer: host 1 FAIL / DEAD / FREE | first VM back | median | p90 | last VM back | host_dead_seconds - last | restarted on host 2 / 3 | lost races | failed starts | split-brain check |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for (n, guests) in runs {
        let kind = if guests.is_some() {
            "guests"
        } else {
            "demo-vm"
        };
        let dir = base.join(format!("n{n}-{kind}"));
        std::fs::create_dir_all(&dir).unwrap();
        match bench(&dir, n, sanlock.clone(), fence, io_timeout, guests) {
            Ok(mut r) => {
                r.back.sort_by(f64::total_cmp);
                let dead_s: Vec<String> = r.dead.iter().map(|(_, t)| format!("{t:.1} s")).collect();
                let last = *r.back.last().unwrap();
                let secs = |t: Option<f64>| t.map_or("-".into(), |t| format!("{t:.1} s"));
                let sanlock_s = match &r.sanlock {
                    Ok((fail, dead, free)) => {
                        format!("{} / {} / {}", secs(*fail), secs(*dead), secs(*free))
                    }
                    Err(_) => "skipped".into(),
                };
                println!(
                    "| {} {kind} | {} | {} | {} | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {:+.1} s | {} / {} | {} | {} | {} |",
                    r.vms,
                    secs(r.declared),
                    if dead_s.is_empty() {
                        "-".into()
                    } else {
                        dead_s.join(" / ")
                    },
                    sanlock_s,
                    r.back[0],
                    pct(&r.back, 0.5),
                    pct(&r.back, 0.9),
                    last,
                    r.host_dead as f64 - last,
                    r.on[0],
                    r.on[1],
                    r.lost_races,
                    r.failed_starts,
                    if r.ok_disks { "ok" } else { "VIOLATION" }
                );
                failed |= !r.ok_disks;
            }
            Err(e) => {
                println!("| {n} {kind} | failed: {e} |");
                failed = true;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::process::exit(i32::from(failed));
}
