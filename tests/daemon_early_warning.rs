//! Early warning of lease loss, end to end: one hactl daemon with
//! io_timeout 1 s whose lockspace lies behind a FUSE pass-through. The
//! storage is slowed (every read and write sleeps 0.6 s) until the daemon
//! warns, then made to fail (EIO); each time the warning is checked where
//! an admin and a program would see it — the log line that says when the
//! holders will be killed, the `host_status --history` record, the
//! Prometheus metrics, and the event a registered python3-sanlock client
//! receives on its `reg_event` fd — and then cleared once the storage is
//! healthy again. A lease holder is there throughout and is never killed.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const WARNING: u64 = 0x4841_0000_0000_0100;
const HEALTHY: u64 = 0x4841_0000_0000_0200;
const REASONS: [&str; 3] = ["slow_renewal", "renewal_failed", "renewal_late"];

/// A python3-sanlock process registered for LS's events, printing each as
/// a JSON line.
fn event_listener(run_dir: &Path) -> (Child, Receiver<Value>) {
    let script = r#"
import json, select, sanlock, sys
fd = sanlock.reg_event(b"LS")
print(json.dumps({"registered": fd}), flush=True)
while True:
    r, _, _ = select.select([fd, sys.stdin], [], [])
    if sys.stdin in r:
        break
    for e in sanlock.get_event(fd):
        print(json.dumps(e), flush=True)
"#;
    let mut c = Command::new(python3())
        .args(["-c", script])
        .env("SANLOCK_RUN_DIR", run_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = c.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && tx.send(v).is_err()
            {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(first["registered"].as_i64().unwrap() >= 0, "{first}");
    (c, rx)
}

fn history(run_dir: &Path) -> Value {
    let o = run_env(
        hactl(),
        &["client", "host_status", "-s", "LS", "--history", "--json"],
        &[("SANLOCK_RUN_DIR", p(run_dir))],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    serde_json::from_slice::<Value>(&o.stdout).unwrap()["history"].clone()
}

fn log_dump(run_dir: &Path) -> String {
    run_env(
        hactl(),
        &["client", "log_dump"],
        &[("SANLOCK_RUN_DIR", p(run_dir))],
    )
    .text()
}

fn warning_gauge(port: u16, reason: &str) -> f64 {
    get(
        &scrape(port),
        "hactl_lease_warning",
        &[("lockspace", "LS"), ("reason", reason)],
    )
    .expect("hactl_lease_warning")
}

/// Waits for the next event the listener prints (at most `secs`).
fn next_event(rx: &Receiver<Value>, secs: u64) -> Value {
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("no event on the reg_event fd within {secs} s"))
}

/// One episode: make the storage bad with `harm`, wait for the warning of
/// `reason`, check it everywhere, heal with `heal`, check it cleared.
/// Returns the event's seconds until kill.
#[allow(clippy::too_many_arguments)]
fn episode(
    run_dir: &Path,
    port: u16,
    rx: &Receiver<Value>,
    reason: &str,
    code: u64,
    log_start: &str,
    harm: impl FnOnce(),
    heal: impl FnOnce(),
) -> u64 {
    let before = history(run_dir)["warnings"].as_array().unwrap().len();
    harm();
    let t0 = Instant::now();
    // The event comes first, as it is sent with the log line.
    let ev = loop {
        let e = next_event(rx, 30);
        if e["event"] == WARNING && e["data"].as_u64().unwrap() >> 32 == code {
            break e;
        }
    };
    let raised_after = t0.elapsed();
    assert_eq!(ev["from_host_id"], 1, "{ev}");
    assert_eq!(ev["host_id"], 1, "{ev}");
    assert_eq!(ev["generation"], ev["from_generation"], "{ev}");
    let left = ev["data"].as_u64().unwrap() & 0xffff_ffff;
    assert!(left <= 8, "at most id_renewal_fail_seconds left: {ev}");

    // The log line says what will happen and when.
    let log = log_dump(run_dir);
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(log_start))
        .unwrap_or_else(|| panic!("no log line with {log_start:?}:\n{log}"));
    assert!(
        line.contains("; last good renewal ")
            && (line.contains(" unless storage answers") || line.contains("being killed")),
        "{line}"
    );
    // The history has it, with the same seconds left as the event.
    let h = history(run_dir);
    let w: Vec<&Value> = h["warnings"].as_array().unwrap()[before..]
        .iter()
        .filter(|w| w["reason"] == reason && w["event"] == "raised")
        .collect();
    assert_eq!(w.len(), 1, "{:?}", h["warnings"]);
    assert_eq!(w[0]["host_id"], 1);
    assert_eq!(w[0]["seconds_left"].as_u64(), Some(left));
    assert!(line.ends_with(w[0]["message"].as_str().unwrap()), "{line}");
    // And the metric.
    assert_eq!(warning_gauge(port, reason), 1.0, "{reason} gauge");
    let total = get(
        &scrape(port),
        "hactl_lease_warnings_total",
        &[("lockspace", "LS"), ("reason", reason)],
    )
    .unwrap();
    assert!(total >= 1.0);

    heal();
    let ev = loop {
        let e = next_event(rx, 30);
        if e["event"] == HEALTHY {
            break e;
        }
    };
    assert_eq!(
        (ev["from_host_id"].as_u64(), ev["data"].as_u64()),
        (Some(1), Some(0))
    );
    let log = log_dump(run_dir);
    assert!(
        log.lines()
            .any(|l| l.contains("lockspace LS: renewals healthy again (renewed in ")),
        "{log}"
    );
    let h = history(run_dir);
    let last = h["warnings"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "cleared", "{last}");
    for r in REASONS {
        assert_eq!(warning_gauge(port, r), 0.0, "{r} cleared");
    }
    eprintln!(
        "{reason}: raised {raised_after:?} after the storage turned bad, {left} s before holders would be killed; cleared"
    );
    left
}

#[test]
fn slow_then_failing_storage_warns_and_clears() {
    let dir = workdir();
    let (back, mnt) = fuse_lease_dirs(dir.path());
    let delay = dir.path().join("delay");
    let fail = dir.path().join("fail");
    let fuse = Fuse::start_full(&back, &mnt, Some(&fail), Some(&delay));
    let via_fuse = mnt.join("leases");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let h = HactlDaemon::start_with(&dir.path().join("h"), &["--metrics-listen", &listen]);
    add_lockspace(&h.run_dir, 1, &via_fuse);
    let (mut holder, held) = python_holder(&h.run_dir, &via_fuse, "R1", 1 << 20, false);
    assert_eq!(held, "held");
    let (mut listener, rx) = event_listener(&h.run_dir);
    // Healthy storage first: any warning of the startup has cleared.
    let deadline = Instant::now() + Duration::from_secs(20);
    while REASONS.iter().any(|r| warning_gauge(port, r) != 0.0) {
        assert!(Instant::now() < deadline, "warnings on healthy storage");
        std::thread::sleep(Duration::from_millis(500));
    }
    while rx.try_recv().is_ok() {}

    // Slow: each read and write takes 0.6 s, more than half io_timeout.
    episode(
        &h.run_dir,
        port,
        &rx,
        "slow_renewal",
        1,
        "lockspace LS: renewal ",
        || std::fs::write(&delay, "0.6").unwrap(),
        || std::fs::write(&delay, "0").unwrap(),
    );
    // Failing: every I/O gets EIO.
    episode(
        &h.run_dir,
        port,
        &rx,
        "renewal_failed",
        2,
        "lockspace LS: renewal failed after ",
        || std::fs::write(&fail, "").unwrap(),
        || std::fs::remove_file(&fail).unwrap(),
    );
    assert!(
        holder.try_wait().unwrap().is_none(),
        "the holder lived through the warnings"
    );
    assert_eq!(
        get(&scrape(port), "hactl_kills_total", &[("how", "sigterm")]),
        Some(0.0)
    );
    drop(listener.stdin.take());
    let _ = listener.wait();
    drop(holder.stdin.take());
    let _ = holder.wait();
    drop(h);
    drop(fuse);
}
