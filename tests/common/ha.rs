//! Helpers for the HA scenario tests (tests/ha_scenarios.rs with demo VMs,
//! tests/ha_libvirt.rs with real guests): both run a cluster of
//! src/ha/cluster.rs and judge it by its events and its VM disks.

use std::path::Path;
use std::time::{Duration, Instant};

use hactl::ha::cluster::Cluster;

use super::*;

/// host_dead_seconds at io_timeout 1: 8 + 60.
pub const HOST_DEAD: u64 = 68;

/// The test's directory, kept (and named) when the test fails so its
/// events, logs and disks can be read.
pub struct Dir(Option<tempfile::TempDir>);

impl Dir {
    pub fn new() -> Dir {
        Dir(Some(workdir()))
    }
    pub fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(d) = self.0.take()
        {
            eprintln!("test files kept in {}", d.keep().display());
        }
    }
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if f() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The split-brain check over every disk; also prints what ran where.
pub fn assert_disks_ok(c: &Cluster) {
    let mut bad = Vec::new();
    for (path, rep) in c.check_disks() {
        eprint!("{}", hactl::ha::demo_vm::render(&path, &rep));
        if !rep.violations.is_empty() {
            bad.push(path);
        }
    }
    assert!(bad.is_empty(), "two runs wrote at once: {bad:?}");
    // The command-line checker agrees.
    let disks: Vec<&str> = c.disks.iter().map(|d| p(d)).collect();
    let mut args = vec!["ha", "check-disks", "-q"];
    args.extend(disks);
    let o = run(hactl(), &args);
    assert_eq!(o.code, 0, "{}", o.text());
}

/// When `observer`'s agent logged host `h` going DEAD (unix seconds).
pub fn dead_logged_at(c: &Cluster, observer: u64, h: u64) -> Option<f64> {
    c.events(observer)
        .iter()
        .find(|e| {
            e["kind"] == "state"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(&format!("host {h} ")) && r.contains("-> DEAD"))
        })
        .and_then(|e| e["t_unix"].as_f64())
}

/// Every start of `vm` by `host`'s agent after `since` (unix seconds).
pub fn starts_after(c: &Cluster, host: u64, vm: &str, since: f64) -> Vec<f64> {
    c.events(host)
        .iter()
        .filter(|e| e["kind"] == "start" && e["vm"] == vm)
        .filter_map(|e| e["t_unix"].as_f64())
        .filter(|&t| t > since)
        .collect()
}

pub fn unix_now() -> f64 {
    hactl::ha::agent::unix_now()
}

/// No survivor started a VM of the lost host before it saw that host DEAD.
pub fn assert_no_start_before_dead(
    c: &Cluster,
    lost: &[usize],
    victim: u64,
    survivors: &[u64],
    t_lost: f64,
) {
    for &s in survivors {
        let dead = dead_logged_at(c, s, victim);
        for &i in lost {
            for t in starts_after(c, s, &c.vm_names[i], t_lost) {
                let dead = dead.unwrap_or_else(|| {
                    panic!(
                        "host {s} started {} but never saw host {victim} DEAD",
                        c.vm_names[i]
                    )
                });
                assert!(
                    t >= dead,
                    "host {s} started {} {:.1} s before it saw host {victim} DEAD",
                    c.vm_names[i],
                    dead - t
                );
                assert!(
                    t - t_lost >= (HOST_DEAD - 10) as f64,
                    "host {s} started {} only {:.1} s after host {victim} was lost",
                    c.vm_names[i],
                    t - t_lost
                );
            }
        }
    }
}

/// Real guests (tests/ha_libvirt.rs, tests/ha_migrate.rs): a guest writes
/// every 100 ms and its clock is the host's within ~0.1 s
/// (src/ha/guest.rs): 3 s without a record means it does not run.
pub const GUEST_FRESH: Duration = Duration::from_secs(3);
/// Guests boot in seconds under KVM; a loaded machine takes longer.
pub const GUEST_BOOT: Duration = Duration::from_secs(150);

/// A cluster of `hosts` hosts with `vms` real guests, each preferring host 1.
pub fn guest_opts(hosts: u64, vms: usize) -> hactl::ha::cluster::ClusterOpts {
    let mut o = hactl::ha::cluster::ClusterOpts::new(Path::new(hactl()), hosts, vms);
    o.guests = Some(super::libvirt::image().clone());
    for i in 0..vms {
        o.vm_extra.insert(i, "preferred_hosts = [1]".into());
    }
    o
}

/// Starts host 1 alone until it runs every guest (they prefer it), then
/// the others, until they see host 1 LIVE.
pub fn start_guests_on_host1(c: &mut Cluster) {
    c.start_daemon(1).expect("host 1's daemon and libvirtd");
    c.start_agent(1).expect("host 1's agent");
    wait_for("every guest to run on host 1", GUEST_BOOT, || {
        c.running_on(GUEST_FRESH).iter().all(|h| *h == Some(1))
    });
    for h in 2..=c.opts.hosts {
        c.start_daemon(h).expect("daemon and libvirtd");
        c.start_agent(h).expect("agent");
    }
    wait_for(
        "the others to see host 1 LIVE",
        Duration::from_secs(60),
        || {
            (2..=c.opts.hosts).all(|h| {
                c.status(h).is_some_and(|s| {
                    s["hosts"].as_array().is_some_and(|a| {
                        a.iter().any(|x| x["host_id"] == 1 && x["state"] == "LIVE")
                    })
                })
            })
        },
    );
}
