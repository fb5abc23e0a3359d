//! `hactl demo`: a three-host HA cluster on this machine, one host crashed,
//! its VMs restarted on the survivors, and every VM disk checked for
//! split brain. Everything lives in one temporary directory and every
//! process is stopped by its process group at the end (also on Ctrl-C).
//!
//! `--libvirt`: the VMs are tiny real guests (src/ha/guest.rs) run by
//! runner "libvirt": each host gets its own mount namespace with its own
//! libvirtd whose sanlock plugin talks to that host's daemon, and a crash
//! kills every process of the host's namespace, qemu included.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::agent::{Event, render_event};
use super::cluster::{Cluster, ClusterOpts};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub struct DemoOpts {
    pub hosts: u64,
    pub vms: usize,
    /// Where the temporary directory goes (None: /var/tmp, then .).
    pub parent: Option<PathBuf>,
    pub keep: bool,
    /// The fencing scene: the host hangs instead of crashing, and a fence
    /// agent (`hactl ha fence-test`) powers it off so that its VMs run
    /// again without waiting for DEAD.
    pub fence: bool,
    /// Real guests under libvirt instead of `hactl ha demo-vm`.
    pub libvirt: bool,
}

fn interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted (Ctrl-C): every host stopped".into())
    } else {
        Ok(())
    }
}

/// Sleeps in small steps so Ctrl-C is noticed at once.
fn nap(d: Duration) -> Result<(), String> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        interrupted()?;
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    interrupted()
}

/// A directory where O_DIRECT works (not tmpfs).
fn make_dir(parent: Option<&Path>) -> Result<PathBuf, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let candidates: Vec<PathBuf> = match parent {
        Some(p) => vec![p.to_path_buf()],
        None => vec![
            PathBuf::from("/var/tmp"),
            std::env::current_dir().unwrap_or_default(),
        ],
    };
    let mut why = Vec::new();
    for p in candidates {
        let d = p.join(format!("hactl-demo-{}", std::process::id()));
        if std::fs::create_dir_all(&d).is_err() {
            why.push(format!("{}: cannot create a directory", p.display()));
            continue;
        }
        let probe = d.join("probe");
        let ok = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_ok();
        let _ = std::fs::remove_file(&probe);
        if ok {
            return Ok(d);
        }
        let _ = std::fs::remove_dir_all(&d);
        why.push(format!("{}: no O_DIRECT (tmpfs?)", p.display()));
    }
    Err(format!(
        "no directory for the demo's lease files: {} (use --dir)",
        why.join("; ")
    ))
}

/// Reads new events of every host's agent.
struct EventTail {
    pos: Vec<u64>,
}

impl EventTail {
    fn new(hosts: usize) -> Self {
        EventTail {
            pos: vec![0; hosts],
        }
    }

    fn poll(&mut self, c: &Cluster) -> Vec<Event> {
        use std::io::{Read, Seek};
        let mut out = Vec::new();
        for (k, h) in c.hosts.iter().enumerate() {
            let Ok(mut f) = std::fs::File::open(h.agent_dir.join(super::agent::EVENTS_FILE)) else {
                continue;
            };
            let _ = f.seek(std::io::SeekFrom::Start(self.pos[k]));
            let mut buf = String::new();
            let _ = f.read_to_string(&mut buf);
            let whole = buf.rfind('\n').map_or(0, |i| i + 1);
            self.pos[k] += whole as u64;
            out.extend(
                buf[..whole]
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Event>(l).ok()),
            );
        }
        out.sort_by(|a, b| a.t_unix.total_cmp(&b.t_unix));
        out
    }
}

/// One compact line: every host's state (as `observer` sees it), score and VMs.
fn status_line(c: &Cluster, observer: u64, t: f64) -> String {
    let Some(st) = c.status(observer) else {
        return format!("t={t:5.1}s  (host {observer}'s agent has no status yet)");
    };
    let mut parts = Vec::new();
    for h in st["hosts"].as_array().into_iter().flatten() {
        let running: Vec<&str> = h["running"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let state = h["state"].as_str().unwrap_or("?");
        // A host that is not LIVE runs nothing we know of: its sector is
        // only what it last wrote.
        let vms = if state == "LIVE" {
            format!("[{}]", running.join(" "))
        } else {
            format!("(last wrote [{}])", running.join(" "))
        };
        parts.push(format!(
            "host{} {:<4} {:>4} {vms}",
            h["host_id"],
            state,
            h["score"].as_u64().map_or("-".into(), |s| s.to_string()),
        ));
    }
    format!("t={t:5.1}s  {}", parts.join(" | "))
}

fn interesting(e: &Event) -> bool {
    // Joining and each agent's first look at every host are noise here.
    !(e.kind == "state" && (e.reason.starts_with("join") || e.reason.contains(" - -> ")))
}

pub fn run(opts: &DemoOpts) -> Result<i32, String> {
    if !(2..=16).contains(&opts.hosts) || !(1..=200).contains(&opts.vms) {
        return Err("the demo runs 2..=16 hosts and 1..=200 VMs".into());
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
    let dir = make_dir(opts.parent.as_deref())?;
    let r = run_in(&dir, opts);
    // Kept for a look after a failure, not after Ctrl-C.
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);
    if opts.keep || (r.is_err() && !interrupted) {
        println!("\nfiles kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if interrupted {
        eprintln!("hactl demo: interrupted; every host stopped");
        return Ok(130);
    }
    r
}

fn run_in(dir: &Path, opts: &DemoOpts) -> Result<i32, String> {
    let hactl = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut copts = ClusterOpts::new(&hactl, opts.hosts, opts.vms);
    if opts.fence {
        copts.extra_config = super::fence::test_section(
            &hactl,
            dir,
            opts.hosts,
            30,
            &std::collections::BTreeMap::new(),
        );
    }
    if opts.libvirt {
        copts.guests = Some(guest_image(dir, opts.parent.as_deref(), &hactl)?);
    }
    let io = copts.io_timeout as u64;
    let host_dead = crate::timeouts::Timeouts::new(io).host_dead_seconds();
    println!(
        "hactl demo: {} hosts, {} HA VMs, io_timeout {io} s (a host is DEAD {host_dead} s after its last renewal)",
        opts.hosts, opts.vms
    );
    println!("  files: {}", dir.display());
    if let Some(img) = &copts.guests {
        println!(
            "  each host: hactl daemon -w 0 + its own libvirtd (sanlock plugin at that daemon) + hactl ha agent, in its own mount namespace"
        );
        println!(
            "  each VM: a libvirt domain (runner libvirt) with its <lease>: a tiny real guest writing records to its virtio disk"
        );
        println!("  guests: {}\n", img.accel_reason);
    } else {
        println!(
            "  each host: hactl daemon -w 0 + hactl ha agent, in its own process group; each VM: hactl ha demo-vm DISK\n"
        );
    }
    // Real guests boot in seconds (KVM) to a minute (emulation on a busy
    // machine), and their clocks step by whole seconds at boot.
    let (fresh, start_limit) = if copts.guests.is_some() {
        (Duration::from_secs(3), Duration::from_secs(240))
    } else {
        (Duration::from_millis(1500), Duration::from_secs(60))
    };
    let mut c = Cluster::create(dir, copts)?;
    c.start_all()?;
    let t0 = Instant::now();
    let mut tail = EventTail::new(c.hosts.len());
    // While the cluster forms, the agents' waits (warming up, nobody to
    // start it yet) are noise: show what they do, not what they wait for.
    let show = |tail: &mut EventTail, c: &Cluster, waits: bool| {
        let evs = tail.poll(c);
        for e in evs
            .iter()
            .filter(|e| interesting(e) && (waits || e.kind != "wait"))
        {
            println!("    {}", render_event(e));
        }
        evs
    };

    // 1. Everyone joins; the VMs start, spread over the hosts.
    let mut last_line = Instant::now() - Duration::from_secs(10);
    loop {
        nap(Duration::from_millis(250))?;
        show(&mut tail, &c, false);
        if last_line.elapsed() >= Duration::from_secs(2) {
            println!("{}", status_line(&c, 1, t0.elapsed().as_secs_f64()));
            last_line = Instant::now();
        }
        if c.running_on(fresh).iter().all(Option::is_some) {
            break;
        }
        if t0.elapsed() > start_limit {
            return Err(format!(
                "the VMs did not all start within {} s",
                start_limit.as_secs()
            ));
        }
        for id in 1..=opts.hosts {
            if !c.agent_alive(id) {
                let log = std::fs::read_to_string(c.host(id).agent_dir.join("agent.log"))
                    .unwrap_or_default();
                return Err(format!("host {id}'s agent exited: {log}"));
            }
        }
    }
    let placed = c.running_on(fresh);
    println!(
        "\nall {} VMs run: {}\n",
        opts.vms,
        placed
            .iter()
            .zip(&c.vm_names)
            .map(|(h, n)| format!("{n}@host{}", h.unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    nap(Duration::from_secs(4))?;
    show(&mut tail, &c, false);

    // 2. Crash the host running the most VMs.
    let victim = (1..=opts.hosts)
        .max_by_key(|&h| {
            (
                placed.iter().filter(|p| **p == Some(h)).count(),
                std::cmp::Reverse(h),
            )
        })
        .unwrap_or(1);
    let lost: Vec<usize> = (0..placed.len())
        .filter(|&i| placed[i] == Some(victim))
        .collect();
    let observer = (1..=opts.hosts).find(|&h| h != victim).unwrap_or(1);
    let lost_names = lost
        .iter()
        .map(|&i| c.vm_names[i].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if opts.fence {
        println!(
            ">>> host {victim} hangs: SIGSTOP of its process group (daemon, agent, {} VM(s): {lost_names}); a fence agent will power it off\n",
            lost.len()
        );
        c.hang(victim);
    } else {
        let how = if c.opts.guests.is_some() {
            "kill -9 of every process of its namespace (daemon, agent, libvirtd, qemu"
        } else {
            "kill -9 of its process group (daemon, agent"
        };
        println!(
            ">>> crashing host {victim}: {how}, {} VM(s): {lost_names})\n",
            lost.len()
        );
        c.crash(victim);
    }
    let crash = Instant::now();
    let crash_unix = super::agent::unix_now();
    let what = if opts.fence { "hang" } else { "crash" };
    // When each survivor's agent saw its daemon call the victim DEAD.
    let mut dead_by: Vec<(u64, f64)> = Vec::new();
    let dead_mark = format!("host {victim} FAIL -> DEAD");
    // With fencing: when a survivor declared the victim dead on storage.
    let mut declared: Option<(u64, f64)> = None;
    let declared_mark = format!("host {victim}: fenced in");
    let mut back: Vec<Option<(Duration, u64)>> = vec![None; placed.len()];
    let limit = Duration::from_secs(host_dead + 60);
    loop {
        nap(Duration::from_millis(250))?;
        for e in show(&mut tail, &c, true) {
            if e.kind == "state" && e.reason.starts_with(&dead_mark) {
                dead_by.push((e.host, e.t_unix - crash_unix));
            }
            if e.kind == "fence" && e.reason.starts_with(&declared_mark) {
                declared = Some((e.host, e.t_unix - crash_unix));
            }
        }
        let st = c.status(observer);
        let state = st
            .as_ref()
            .and_then(|s| {
                s["hosts"]
                    .as_array()?
                    .iter()
                    .find(|h| h["host_id"] == victim)
                    .and_then(|h| h["state"].as_str().map(String::from))
            })
            .unwrap_or_else(|| "?".into());
        let now_on = c.running_on(fresh);
        for &i in &lost {
            if back[i].is_none()
                && let Some(h) = now_on[i].filter(|&h| h != victim)
            {
                back[i] = Some((crash.elapsed(), h));
            }
        }
        if last_line.elapsed() >= Duration::from_secs(2) {
            let t = crash.elapsed().as_secs_f64();
            let width = 30usize;
            let done = ((t / host_dead as f64) * width as f64).min(width as f64) as usize;
            println!(
                "{}   host {victim} {state} [{}{}] {t:.0}/{host_dead} s",
                status_line(&c, observer, t0.elapsed().as_secs_f64()),
                "#".repeat(done),
                ".".repeat(width - done)
            );
            last_line = Instant::now();
        }
        if lost.iter().all(|&i| back[i].is_some()) {
            break;
        }
        if crash.elapsed() > limit {
            break;
        }
    }
    for e in show(&mut tail, &c, true) {
        if e.kind == "state" && e.reason.starts_with(&dead_mark) {
            dead_by.push((e.host, e.t_unix - crash_unix));
        }
        if e.kind == "fence" && e.reason.starts_with(&declared_mark) {
            declared = Some((e.host, e.t_unix - crash_unix));
        }
    }
    println!();
    if let Some((h, t)) = declared {
        println!(
            "host {victim} was fenced (powered off, off confirmed) and declared dead on storage by host {h} {t:.1} s after it hung; without fencing it would be DEAD about {host_dead} s after its last renewal"
        );
    } else if opts.fence {
        println!("host {victim} was not declared dead by a fence");
    }
    let dead_at = dead_by.iter().map(|d| d.1).reduce(f64::min);
    if dead_by.is_empty() && declared.is_none() {
        println!("host {victim} was never called DEAD");
    }
    for (h, t) in &dead_by {
        println!("host {victim} was called DEAD by host {h} {t:.1} s after the {what}");
    }
    let mut missing = 0;
    for &i in &lost {
        match back[i] {
            Some((t, h)) => println!(
                "  {} runs again on host {h}, {:.1} s after the {what}{}",
                c.vm_names[i],
                t.as_secs_f64(),
                match (declared, dead_at) {
                    (Some((_, d)), _) => format!(
                        " ({:+.1} s after the declaration; {:.1} s before DEAD)",
                        t.as_secs_f64() - d,
                        host_dead as f64 - t.as_secs_f64()
                    ),
                    (None, Some(d)) =>
                        format!(" ({:+.1} s after the first DEAD)", t.as_secs_f64() - d),
                    (None, None) => String::new(),
                }
            ),
            None => {
                missing += 1;
                println!(
                    "  {} did NOT run again within {} s",
                    c.vm_names[i],
                    limit.as_secs()
                );
            }
        }
    }
    nap(Duration::from_secs(3))?;
    println!(
        "\n{}",
        status_line(&c, observer, t0.elapsed().as_secs_f64())
    );

    // 3. Stop everything, then prove no VM ever ran twice at once.
    c.stop_all();
    println!("\nall hosts stopped; checking every VM disk for two writers at once:\n");
    let mut bad = 0;
    for (path, rep) in c.check_disks() {
        if !rep.violations.is_empty() {
            bad += 1;
        }
        print!("{}", super::demo_vm::render(&path, &rep));
    }
    println!();
    if bad > 0 {
        println!("SPLIT BRAIN: {bad} disk(s) were written by two runs at once");
        return Ok(1);
    }
    if missing > 0 {
        println!("{missing} VM(s) did not run again on a surviving host");
        return Ok(1);
    }
    println!(
        "ok: every VM of the crashed host runs again on a survivor, and no disk was ever written by two hosts at once"
    );
    Ok(0)
}

/// `--libvirt`: the guest image (the kernel cached beside the demo's
/// directory, so a second run does not fetch it again), and what it needs.
fn guest_image(
    dir: &Path,
    parent: Option<&Path>,
    hactl: &Path,
) -> Result<super::guest::GuestImage, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "hactl demo --libvirt needs root (libvirtd per host in its own mount namespace, loop devices)"
                .into(),
        );
    }
    for (prog, pkg) in [
        ("/usr/sbin/libvirtd", "libvirt-daemon"),
        ("/usr/bin/virsh", "libvirt-clients"),
        ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
        (
            "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/sanlock.so",
            "libvirt-sanlock",
        ),
    ] {
        if !Path::new(prog).exists() {
            return Err(format!(
                "hactl demo --libvirt: {prog} is missing (install {pkg}; tools/test.sh installs everything it needs)"
            ));
        }
    }
    let cache = parent
        .unwrap_or(dir.parent().unwrap_or(dir))
        .join("hactl-guest-cache");
    println!(
        "  preparing the guest (kernel cached in {})",
        cache.display()
    );
    let img = super::guest::GuestImage::prepare(&cache, hactl, &dir.join("guest-image"))?;
    super::lab::make_reachable(&dir.join("guest-image"))?;
    Ok(img)
}
