//! Two real sanlock hosts and two hactl hosts in one lockspace, all driven
//! by the real `sanlock client`. Everyone sees everyone LIVE; one host of
//! each kind is hung with SIGSTOP, and every observer, sanlock or hactl,
//! sees it turn FAIL and then DEAD at the same moments. A LIVE host's
//! host_id cannot be taken; a DEAD one's can, with generation + 1.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

enum Host {
    Sanlock(SanlockDaemon),
    Hactl(HactlDaemon),
}

impl Host {
    fn run_dir(&self) -> &std::path::Path {
        match self {
            Host::Sanlock(d) => &d.run_dir,
            Host::Hactl(d) => &d.run_dir,
        }
    }
    fn pid(&self) -> i32 {
        match self {
            Host::Sanlock(d) => d.pid(),
            Host::Hactl(d) => d.pid(),
        }
    }
    /// The real sanlock client, whatever the daemon.
    fn client(&self, args: &[&str]) -> Out {
        let mut a = vec!["client"];
        a.extend_from_slice(args);
        run_env(
            sanlock(),
            &a,
            &[("SANLOCK_RUN_DIR", self.run_dir().to_str().unwrap())],
        )
    }
    fn hosts(&self) -> BTreeMap<u64, (u64, String)> {
        parse_gets_hosts(&self.client(&["gets", "-h", "1"]).text())
    }
    fn kind(&self) -> &'static str {
        match self {
            Host::Sanlock(_) => "sanlock",
            Host::Hactl(_) => "hactl",
        }
    }
}

#[test]
fn mixed_cluster_sees_fail_and_dead_at_the_same_moments() {
    let dir = workdir();
    let ids = dir.path().join("ids");
    make_file(&ids, 1 << 20, 0);
    let ls = |h: u64| format!("LS:{h}:{}:0", p(&ids));
    assert_eq!(
        run(hactl(), &["direct", "init", "-s", &ls(0), "-o", "1"]).code,
        0
    );

    let hosts = [
        Host::Sanlock(SanlockDaemon::start(&dir.path().join("s1"))),
        Host::Sanlock(SanlockDaemon::start(&dir.path().join("s2"))),
        Host::Hactl(HactlDaemon::start(&dir.path().join("h3"))),
        Host::Hactl(HactlDaemon::start(&dir.path().join("h4"))),
    ];
    // Join in parallel; each add takes ~3 s at io_timeout 1.
    std::thread::scope(|s| {
        for (i, h) in hosts.iter().enumerate() {
            let lsi = ls(i as u64 + 1);
            s.spawn(move || {
                let o = h.client(&["add_lockspace", "-s", &lsi, "-o", "1"]);
                assert_eq!(
                    o.code,
                    0,
                    "{} host {} add_lockspace: {}",
                    h.kind(),
                    i + 1,
                    o.text()
                );
                assert!(
                    o.text().contains("add_lockspace_timeout done 0"),
                    "{}",
                    o.text()
                );
            });
        }
    });

    // Everyone sees all four LIVE.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let views: Vec<_> = hosts.iter().map(|h| h.hosts()).collect();
        let all_live = views
            .iter()
            .all(|v| (1..=4).all(|id| v.get(&id).is_some_and(|(_, s)| s == "LIVE")));
        if all_live {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all LIVE after 30 s: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let gens: BTreeMap<u64, u64> = hosts[0].hosts().iter().map(|(k, v)| (*k, v.0)).collect();

    // Hang sanlock host 2 and hactl host 4.
    let t0 = Instant::now();
    kill(Pid::from_raw(hosts[1].pid()), Signal::SIGSTOP).unwrap();
    kill(Pid::from_raw(hosts[3].pid()), Signal::SIGSTOP).unwrap();

    // Meanwhile, try to take host_id 3 (held by LIVE hactl host 3) and
    // host_id 2 (held by hung sanlock host 2) from two new hactl hosts.
    let taker_live = HactlDaemon::start(&dir.path().join("h5"));
    let taker_dead = HactlDaemon::start(&dir.path().join("h6"));
    let env5 = [(
        "SANLOCK_RUN_DIR",
        taker_live.run_dir.to_str().unwrap().to_string(),
    )];
    let env6 = [(
        "SANLOCK_RUN_DIR",
        taker_dead.run_dir.to_str().unwrap().to_string(),
    )];
    let (ls3, ls2) = (ls(3), ls(2));
    let busy = std::thread::spawn(move || {
        run_env(
            sanlock(),
            &["client", "add_lockspace", "-s", &ls3, "-o", "1"],
            &[("SANLOCK_RUN_DIR", &env5[0].1)],
        )
    });
    // The takeover starts watching 8 s after the hang, so that observers
    // call the hung owner DEAD (at ~70 s) before its new lease appears (~76 s).
    let take = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(8));
        let o = run_env(
            sanlock(),
            &["client", "add_lockspace", "-s", &ls2, "-o", "1"],
            &[("SANLOCK_RUN_DIR", &env6[0].1)],
        );
        (o, Instant::now())
    });

    // Observers: sanlock host 1 and hactl host 3. Record when each first
    // reports each hung host FAIL and DEAD, and (once both say FAIL, while
    // nothing moves) when each last saw the hung host renew: `last_live` in
    // `host_status -D`, on the CLOCK_MONOTONIC all these daemons share.
    let mut seen: BTreeMap<(usize, u64, String), f64> = BTreeMap::new();
    let mut last_live: BTreeMap<(usize, u64), i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(100);
    while Instant::now() < deadline {
        for obs in [0usize, 2] {
            let v = hosts[obs].hosts();
            for hung in [2u64, 4] {
                if let Some((_, state)) = v.get(&hung) {
                    seen.entry((obs, hung, state.clone()))
                        .or_insert_with(|| t0.elapsed().as_secs_f64());
                }
            }
        }
        let all_fail = [0usize, 2].iter().all(|&o| {
            [2u64, 4]
                .iter()
                .all(|&h| seen.contains_key(&(o, h, "FAIL".to_string())))
        });
        if all_fail && last_live.is_empty() {
            for obs in [0usize, 2] {
                let text = hosts[obs].client(&["host_status", "-s", "LS", "-D"]).text();
                for hung in [2u64, 4] {
                    let block: Vec<&str> = text
                        .split(&format!("{hung} timestamp"))
                        .nth(1)
                        .unwrap_or("")
                        .lines()
                        .collect();
                    let ll = block
                        .iter()
                        .find_map(|l| l.trim().strip_prefix("last_live="))
                        .and_then(|v| v.parse().ok());
                    last_live.insert(
                        (obs, hung),
                        ll.unwrap_or_else(|| panic!("no last_live for host {hung}:\n{text}")),
                    );
                }
            }
        }
        if [0usize, 2].iter().all(|&o| {
            [2u64, 4]
                .iter()
                .all(|&h| seen.contains_key(&(o, h, "DEAD".to_string())))
        }) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "transitions (observer 0 = sanlock, 2 = hactl; host; state) -> seconds after the hang: {seen:?}"
    );
    eprintln!("last_live (observer, host) -> monotime: {last_live:?}");
    for hung in [2u64, 4] {
        // How much later sanlock's observer happened to read the final renewal.
        let phase = (last_live[&(0, hung)] - last_live[&(2, hung)]) as f64;
        for state in ["FAIL", "DEAD"] {
            let s = seen
                .get(&(0, hung, state.to_string()))
                .unwrap_or_else(|| panic!("sanlock never saw host {hung} {state}"));
            let h = seen
                .get(&(2, hung, state.to_string()))
                .unwrap_or_else(|| panic!("hactl never saw host {hung} {state}"));
            eprintln!(
                "host {hung} {state}: sanlock {s:.1}s, hactl {h:.1}s, raw difference {:.1}s, observation phase {phase}s",
                s - h
            );
            // Same rule from the same observation: the same moment, to the
            // second of the integer clock plus our 0.25 s polling.
            assert!(
                ((s - h) - phase).abs() <= 1.5,
                "host {hung} {state}: sanlock at {s:.1}s, hactl at {h:.1}s, but their observations differ by only {phase}s"
            );
            let (lo, hi) = if state == "FAIL" {
                (7.0, 14.0)
            } else {
                (66.0, 75.0)
            };
            assert!(
                *h >= lo && *h <= hi,
                "host {hung} {state} at {h:.1}s, expected {lo}..{hi}s"
            );
        }
    }

    // The LIVE host's host_id was refused; the DEAD one's was taken.
    let o = busy.join().unwrap();
    assert!(
        o.text().contains("add_lockspace_timeout done -262"),
        "taking a LIVE host's host_id: {}",
        o.text()
    );
    let (o, when) = take.join().unwrap();
    assert!(
        o.text().contains("add_lockspace_timeout done 0"),
        "taking a DEAD host's host_id: {}",
        o.text()
    );
    assert!(
        when.duration_since(t0).as_secs_f64() >= 68.0,
        "took host_id 2 before it could be DEAD"
    );
    // Observers see the new owner at their next renewal (every 2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = hosts[0].hosts();
        if v.get(&2).map(|x| x.0) == Some(gens[&2] + 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "host_id 2 not re-acquired with generation + 1: {v:?} (was {})",
            gens[&2]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
