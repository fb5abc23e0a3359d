//! "Why is host 2 FAIL?" Two hactl daemons in one lockspace (io_timeout
//! 1); host 2 is hung with SIGSTOP. Host 1's `client host_status
//! --history` explains the FAIL and then the DEAD of host 2 with the rule
//! and the timestamps that decided them, and host 1's Prometheus endpoint
//! (opt-in, `metrics_listen` in its sanlock.conf) moves with it: host 2's
//! state gauge goes LIVE, FAIL, DEAD while host 1's renewals keep counting.
//! Against the real sanlock daemon `--history` is a clear error.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

fn monotime() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap()
        .tv_sec() as u64
}

/// `hactl client host_status -s LS --history --json` against `run_dir`.
fn history(run_dir: &std::path::Path) -> Value {
    let o = run_env(
        hactl(),
        &["client", "host_status", "-s", "LS", "--history", "--json"],
        &[("SANLOCK_RUN_DIR", p(run_dir))],
    );
    assert_eq!(o.code, 0, "history: {} {}", o.text(), o.stderr);
    let v: Value = serde_json::from_slice(&o.stdout).expect("history JSON");
    v["history"].clone()
}

fn host(h: &Value, id: u64) -> Option<&Value> {
    h["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["host_id"] == id)
}

fn state_of(h: &Value, id: u64) -> String {
    host(h, id)
        .map(|x| x["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

fn host_state(s: &Samples, id: &str) -> Vec<String> {
    ["UNKNOWN", "FREE", "LIVE", "FAIL", "DEAD"]
        .iter()
        .filter(|st| {
            get(
                s,
                "hactl_host_state",
                &[("lockspace", "LS"), ("host_id", id), ("state", st)],
            ) == Some(1.0)
        })
        .map(|s| s.to_string())
        .collect()
}

fn renewals_ok(s: &Samples) -> f64 {
    get(
        s,
        "hactl_renewals_total",
        &[("lockspace", "LS"), ("result", "ok")],
    )
    .expect("renewals_total ok")
}

/// A change of host 2 to `to` in the history: (its moment's mono, rule).
fn change_to(h: &Value, to: &str) -> Option<(u64, String)> {
    host(h, 2)?["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["to"] == to)
        .map(|c| {
            (
                c["at"]["mono"].as_u64().unwrap(),
                c["rule"].as_str().unwrap().to_string(),
            )
        })
}

/// The N of "unchanged for Ns" in a rule.
fn unchanged_for(rule: &str) -> u64 {
    rule.split("unchanged for ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'unchanged for' in {rule:?}"))
}

#[test]
fn history_and_metrics_explain_a_hung_host() {
    let dir = workdir();
    let ids = dir.path().join("ids");
    let leases = dir.path().join("leases");
    make_file(&ids, 1 << 20, 0);
    make_file(&leases, 1 << 20, 0);
    let ids_s = format!("LS:0:{}:0", p(&ids));
    assert_eq!(
        run(hactl(), &["direct", "init", "-s", &ids_s, "-o", "1"]).code,
        0
    );
    let res_s = format!("LS:r1:{}:0", p(&leases));
    assert_eq!(run(hactl(), &["direct", "init", "-r", &res_s]).code, 0);

    // Host 1 serves metrics on a free port, from its sanlock.conf.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("sanlock.conf");
    std::fs::write(&conf, format!("metrics_listen = 127.0.0.1:{port}\n")).unwrap();
    let h1 = HactlDaemon::start_with_env(
        &dir.path().join("h1"),
        &[],
        &[("HACTL_SANLOCK_CONF", p(&conf))],
    );
    let mut h2 = HactlDaemon::start(&dir.path().join("h2"));

    // Off by default: host 2 has no endpoint, so nothing else listens there.
    let before = scrape(port);
    assert_eq!(get(&before, "hactl_clients_registered", &[]), Some(0.0));
    assert_eq!(
        get(&before, "hactl_kills_total", &[("how", "sigkill")]),
        Some(0.0)
    );

    std::thread::scope(|s| {
        s.spawn(|| add_lockspace(&h1.run_dir, 1, &ids));
        s.spawn(|| add_lockspace(&h2.run_dir, 2, &ids));
    });

    // Host 1 sees host 2 LIVE (in the history and in the gauge).
    let deadline = Instant::now() + Duration::from_secs(30);
    while state_of(&history(&h1.run_dir), 2) != "LIVE" {
        assert!(Instant::now() < deadline, "{}", history(&h1.run_dir));
        std::thread::sleep(Duration::from_millis(500));
    }
    let (mut holder, line) = python_holder(&h1.run_dir, &leases, "r1", 0, false);
    assert_eq!(line, "held");
    let live = scrape(port);
    assert_eq!(host_state(&live, "2"), ["LIVE"]);
    assert_eq!(host_state(&live, "1"), ["LIVE"], "this host");
    assert_eq!(
        get(&live, "hactl_leases_held", &[("lockspace", "LS")]),
        Some(1.0)
    );
    assert_eq!(get(&live, "hactl_clients_registered", &[]), Some(1.0));
    let ok_live = renewals_ok(&live);
    assert!(ok_live >= 1.0, "renewals counted: {ok_live}");
    assert_eq!(
        get(
            &live,
            "hactl_renewal_latency_seconds_count",
            &[("lockspace", "LS")]
        ),
        Some(ok_live)
    );
    assert_eq!(
        get(&live, "hactl_io_timeouts_total", &[("lockspace", "LS")]),
        Some(0.0)
    );

    // Hang host 2.
    let stopped_at = monotime();
    kill(Pid::from_raw(h2.pid()), Signal::SIGSTOP).unwrap();

    let mut fail_scrape = None;
    let deadline = Instant::now() + Duration::from_secs(100);
    let h = loop {
        let h = history(&h1.run_dir);
        let st = state_of(&h, 2);
        if st == "FAIL" && fail_scrape.is_none() {
            fail_scrape = Some(scrape(port));
        }
        if st == "DEAD" {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "host 2 not DEAD after 100 s: {h}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let dead_scrape = scrape(port);

    // What host 1 last saw of host 2: its timestamp (host 2's monotonic
    // clock, the same clock here) from before the hang, seen at most one
    // renewal interval (2 s) later.
    let h2v = host(&h, 2).unwrap();
    let last = h2v["seen"].as_array().unwrap().last().unwrap().clone();
    let ts = last["timestamp"].as_u64().unwrap();
    let seen_mono = last["at"]["mono"].as_u64().unwrap();
    assert!(
        ts <= stopped_at && ts + 3 >= stopped_at,
        "last timestamp {ts}, hung at {stopped_at}"
    );
    assert!(
        seen_mono >= ts && seen_mono <= stopped_at + 3,
        "seen at {seen_mono}"
    );
    assert!(last["at"]["wall"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(h2v["timestamp"].as_u64(), Some(ts));

    // The FAIL: timestamp unchanged for more than 8 x io_timeout, counted
    // from when it was last seen to change; decided within 2 s of that.
    let (fail_at, fail_rule) = change_to(&h, "FAIL").expect("a change to FAIL");
    let n = unchanged_for(&fail_rule);
    assert!((9..=10).contains(&n), "{fail_rule}");
    assert_eq!(fail_at - seen_mono, n, "the rule counts from the sighting");
    assert_eq!(
        fail_rule,
        format!(
            "timestamp {ts} unchanged for {n}s > id_renewal_fail_seconds 8s (8 x io_timeout 1s) \
             (DEAD after host_dead_seconds 68s (8 x io_timeout 1s + watchdog_fire_timeout 60s))"
        )
    );
    let fail_change = &h2v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["to"] == "FAIL")
        .unwrap()
        .clone();
    assert_eq!(fail_change["from"], "LIVE");

    // The DEAD: unchanged for more than 8 x io_timeout + watchdog_fire_timeout.
    let (dead_at, dead_rule) = change_to(&h, "DEAD").expect("a change to DEAD");
    let n = unchanged_for(&dead_rule);
    assert!((69..=70).contains(&n), "{dead_rule}");
    assert_eq!(dead_at - seen_mono, n);
    assert_eq!(
        dead_rule,
        format!(
            "timestamp {ts} unchanged for {n}s > host_dead_seconds 68s \
             (8 x io_timeout 1s + watchdog_fire_timeout 60s): its watchdog has fired"
        )
    );
    assert!(dead_at > fail_at);

    // Before the FAIL, host 1 showed host 2 at risk (an early warning with
    // the time left), and cleared it when the FAIL came.
    let warnings = h["warnings"].as_array().unwrap();
    let late2 = |event: &str| {
        warnings
            .iter()
            .find(|w| w["host_id"] == 2 && w["reason"] == "host_late" && w["event"] == event)
            .unwrap_or_else(|| panic!("no host_late {event} for host 2: {warnings:?}"))
    };
    let risk = late2("raised");
    let risk_at = risk["at"]["mono"].as_u64().unwrap();
    assert!(
        risk_at < fail_at && risk_at >= seen_mono + 6,
        "at risk at {risk_at}, last sighting {seen_mono}, FAIL at {fail_at}"
    );
    let msg = risk["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "lockspace LS: host 2 at risk: timestamp {ts} unchanged for "
        )) && msg.contains("unless it renews"),
        "{msg}"
    );
    let left = risk["seconds_left"].as_u64().unwrap();
    assert!(
        (left..=left + 1).contains(&(fail_at - risk_at)),
        "FAIL came {} s after the warning that said {left} s: {msg}",
        fail_at - risk_at
    );
    assert!(
        late2("cleared")["message"]
            .as_str()
            .unwrap()
            .ends_with("host 2 no longer at risk: now FAIL")
    );
    eprintln!(
        "host 2 hung at mono {stopped_at}, last timestamp {ts} seen at {seen_mono}; FAIL judged at {fail_at}, DEAD at {dead_at}"
    );
    assert!(
        h2v["rule"]
            .as_str()
            .unwrap()
            .contains("host_dead_seconds 68s"),
        "{h2v}"
    );

    // Host 1's own renewals went on, each with its I/O time and result.
    let renewals = h["renewals"].as_array().unwrap();
    assert!(renewals.len() >= 20, "{} renewals", renewals.len());
    for r in renewals {
        assert_eq!(r["result"], 0, "{r}");
        assert!(r["timestamp"].as_u64().unwrap() > 0);
        assert!(r["total_ms"].as_u64().unwrap() >= r["read_ms"].as_u64().unwrap());
    }
    assert_eq!(
        (h["host_id"].as_u64(), h["io_timeout"].as_u64()),
        (Some(1), Some(1))
    );

    // The text view says the same.
    let o = run_env(
        hactl(),
        &["client", "host_status", "-s", "LS", "--history"],
        &[("SANLOCK_RUN_DIR", p(&h1.run_dir))],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let t = o.text();
    assert!(t.contains("host 2 DEAD generation"), "{t}");
    assert!(
        t.contains(&format!("seen timestamp {ts} generation")),
        "{t}"
    );
    assert!(t.contains("state LIVE -> FAIL at mono "), "{t}");
    assert!(t.contains("state FAIL -> DEAD at mono "), "{t}");
    assert!(t.contains(" UTC): timestamp "), "{t}");

    // The metrics moved: host 2's gauge went FAIL then DEAD, renewals counted on.
    let fail_scrape = fail_scrape.expect("a scrape while host 2 was FAIL");
    assert_eq!(host_state(&fail_scrape, "2"), ["FAIL"]);
    assert_eq!(host_state(&dead_scrape, "2"), ["DEAD"]);
    assert_eq!(host_state(&dead_scrape, "1"), ["LIVE"]);
    let ok_dead = renewals_ok(&dead_scrape);
    assert!(
        ok_dead >= ok_live + 20.0,
        "renewals ok {ok_live} -> {ok_dead} over ~70 s at one per 2-3 s"
    );
    assert!(renewals_ok(&fail_scrape) > ok_live);
    assert_eq!(
        get(
            &dead_scrape,
            "hactl_renewals_total",
            &[("lockspace", "LS"), ("result", "error")]
        ),
        Some(0.0)
    );
    assert_eq!(
        get(
            &dead_scrape,
            "hactl_renewal_latency_seconds_bucket",
            &[("lockspace", "LS"), ("le", "+Inf")]
        ),
        Some(ok_dead)
    );

    assert!(
        get(
            &dead_scrape,
            "hactl_lease_warnings_total",
            &[("lockspace", "LS"), ("reason", "host_late")]
        )
        .unwrap()
            >= 1.0
    );

    // Bad HTTP gets a clear status; the endpoint and daemon stay up.
    // Not HTTP, so no version to answer in: hyper answers HTTP/1.1.
    let (st, _, _) = http(port, "\x01\x02garbage\r\n\r\n");
    assert_eq!(st, "HTTP/1.1 400 Bad Request");
    let (st, _, _) = http(port, "GET /other HTTP/1.0\r\n\r\n");
    assert!(st.starts_with("HTTP/1.0 404"), "{st}");
    assert_eq!(host_state(&scrape(port), "2"), ["DEAD"]);

    // An unknown lockspace is a clear error.
    let o = run_env(
        hactl(),
        &["client", "host_status", "-s", "NOPE", "--history"],
        &[("SANLOCK_RUN_DIR", p(&h1.run_dir))],
    );
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("no lockspace named NOPE"), "{}", o.stderr);

    // The hung host is killed by its pid; the holder lets go.
    kill(Pid::from_raw(h2.pid()), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h2.alive() {
        assert!(Instant::now() < deadline, "host 2 survived SIGKILL");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(holder.stdin.take());
    let _ = holder.wait();
}

#[test]
fn history_against_sanlock_is_a_clear_error() {
    let dir = workdir();
    let s = SanlockDaemon::start(&dir.path().join("s"));
    let t0 = Instant::now();
    let o = run_env(
        hactl(),
        &["client", "host_status", "-s", "LS", "--history"],
        &s.env(),
    );
    assert_eq!(o.code, 1, "{}", o.text());
    assert!(o.stdout.is_empty(), "{}", o.text());
    assert!(
        o.stderr.contains("not hactl's daemon"),
        "stderr: {}",
        o.stderr
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    let o = run_env(
        hactl(),
        &["client", "host_status", "-s", "LS", "--history", "--json"],
        &s.env(),
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON error");
    assert_eq!(v["rv"], -libc::EOPNOTSUPP);
    // sanlock's daemon is still there and answers its own commands.
    let o = s.client(&["status"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.text().contains("daemon "), "{}", o.text());
}

/// Storage that hangs under a host (a FUSE pass-through whose server is
/// SIGSTOPped): its renewals time out and are counted, its lockspace fails
/// and its two lease holders are killed, counted by signal; the history
/// shows the timed-out renewals with their result.
#[test]
fn metrics_count_io_timeouts_and_kills() {
    let dir = workdir();
    let (back, mnt) = (dir.path().join("back"), dir.path().join("mnt"));
    std::fs::create_dir_all(&back).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let direct = back.join("leases");
    make_file(&direct, 3 << 20, 0);
    let ds = p(&direct);
    for args in [
        vec!["direct", "init", "-s", &format!("LS:0:{ds}:0"), "-o", "1"],
        vec!["direct", "init", "-r", &format!("LS:R1:{ds}:1M")],
        vec!["direct", "init", "-r", &format!("LS:R2:{ds}:2M")],
    ] {
        assert_eq!(run(hactl(), &args).code, 0);
    }
    let fuse = Fuse::start(&back, &mnt);
    let via_fuse = mnt.join("leases");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The flag this time, and a short kill grace (SIGTERM, then SIGKILL 3 s on).
    let listen = format!("127.0.0.1:{port}");
    let h = HactlDaemon::start_with(
        &dir.path().join("h"),
        &["-g", "3", "--metrics-listen", &listen],
    );
    add_lockspace(&h.run_dir, 1, &via_fuse);
    let (mut term, t) = python_holder(&h.run_dir, &via_fuse, "R1", 1 << 20, false);
    let (mut stubborn, k) = python_holder(&h.run_dir, &via_fuse, "R2", 2 << 20, true);
    assert_eq!((t.as_str(), k.as_str()), ("held", "held"));
    let before = scrape(port);
    assert_eq!(
        get(&before, "hactl_leases_held", &[("lockspace", "LS")]),
        Some(2.0)
    );
    assert_eq!(get(&before, "hactl_clients_registered", &[]), Some(2.0));
    assert_eq!(
        get(&before, "hactl_io_timeouts_total", &[("lockspace", "LS")]),
        Some(0.0)
    );
    for how in ["sigterm", "sigkill", "killpath"] {
        assert_eq!(
            get(&before, "hactl_kills_total", &[("how", how)]),
            Some(0.0)
        );
    }

    fuse.signal(libc::SIGSTOP);
    let t0 = Instant::now();
    let mut timed_out_renewal = None;
    loop {
        if timed_out_renewal.is_none() {
            let o = run_env(
                hactl(),
                &["client", "host_status", "-s", "LS", "--history", "--json"],
                &[("SANLOCK_RUN_DIR", p(&h.run_dir))],
            );
            if let Ok(v) = serde_json::from_slice::<Value>(&o.stdout) {
                timed_out_renewal = v["history"]["renewals"]
                    .as_array()
                    .and_then(|r| r.iter().find(|x| x["result"] == -202).cloned());
            }
        }
        let gone = term.try_wait().unwrap().is_some() && stubborn.try_wait().unwrap().is_some();
        if gone {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "holders still there 60 s after the storage hung"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = scrape(port);
    let timeouts = get(&after, "hactl_io_timeouts_total", &[("lockspace", "LS")]).unwrap();
    assert!(timeouts >= 1.0, "io timeouts {timeouts}");
    let errors = get(
        &after,
        "hactl_renewals_total",
        &[("lockspace", "LS"), ("result", "error")],
    )
    .unwrap();
    assert!(errors >= timeouts, "errors {errors} < timeouts {timeouts}");
    let term_n = get(&after, "hactl_kills_total", &[("how", "sigterm")]).unwrap();
    let kill_n = get(&after, "hactl_kills_total", &[("how", "sigkill")]).unwrap();
    assert!(term_n >= 2.0, "SIGTERMs {term_n}: one per holder at least");
    assert!(
        kill_n >= 1.0,
        "SIGKILLs {kill_n}: the holder ignoring SIGTERM"
    );
    eprintln!(
        "storage hung: holders gone after {:?}; io_timeouts {timeouts}, renewal errors {errors}, SIGTERM {term_n}, SIGKILL {kill_n}",
        t0.elapsed()
    );
    let r =
        timed_out_renewal.expect("a renewal with result -202 (SANLK_AIO_TIMEOUT) in the history");
    assert_eq!(r["timestamp"], 0, "{r}");
    assert!(
        r["total_ms"].as_u64().unwrap() >= 900,
        "timed out after io_timeout 1 s: {r}"
    );
    fuse.signal(libc::SIGCONT);
    drop(fuse);
}
