//! A lockspace whose renewals fail (its disk path returns EIO: a FUSE
//! pass-through told to fail every read and write) has its lease holders
//! killed; a holder that registered a killpath (python3-sanlock's
//! `sanlock.killpath`) gets that program run with its arguments instead of
//! SIGTERM, once, and SIGKILL when the kill grace ends if it is still there
//! (sanlock's `kill_pids` / `send_helper_kill`: `CL_RUNPATH_SENT`). Two
//! holders, both with a killpath: one whose killpath makes it exit, one
//! whose killpath only records its arguments. The same scenario runs against
//! the real sanlock and hactl's daemon, which must behave alike: the same
//! arguments, no SIGTERM, the same exits, at about the same times.

mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The killpath program: appends its argv (JSON) to `killpath.log` beside
/// itself, and if its last argument is `kill`, sends SIGUSR1 to the pid
/// before it (the holder, which exits on it).
const KILLPATH: &str = r#"#!/usr/bin/python3
import json, os, signal, sys
with open(os.path.join(os.path.dirname(sys.argv[0]), "killpath.log"), "a") as f:
    f.write(json.dumps(sys.argv) + "\n")
if sys.argv[-1] == "kill":
    os.kill(int(sys.argv[-2]), signal.SIGUSR1)
"#;

/// A holder: records every SIGTERM/SIGINT/SIGHUP/SIGUSR1 it gets in its
/// signal log and keeps running, except that SIGUSR1 (its killpath's
/// signal) makes it exit with 42. It registers the killpath with arguments
/// that need sanlock's escaping (a space, a backslash), its pid and ACTION.
const HOLDER: &str = r#"
import os, signal, sys, time, sanlock
path, res, off, sig_log, kp, action = sys.argv[1:7]
def record(sig, frame):
    with open(sig_log, "a") as f:
        f.write(signal.Signals(sig).name + "\n")
    if sig == signal.SIGUSR1:
        os._exit(42)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
    signal.signal(s, record)
fd = sanlock.register()
sanlock.killpath(kp, ["two words", "back\\slash", str(os.getpid()), action], slkfd=fd)
sanlock.acquire(b"LS", res.encode(), [(path, int(off))], slkfd=fd)
print("held", flush=True)
while True:
    time.sleep(0.1)
"#;

/// The kill grace both daemons get (`-g`), short to keep the test short.
const GRACE: u64 = 10;

fn holder(run_dir: &Path, f: &Path, res: &str, off: u64, dir: &Path, action: &str) -> Child {
    let sig_log = dir.join(format!("{res}.signals"));
    let mut c = Command::new(python3())
        .args(["-c", HOLDER, p(f), res, &off.to_string()])
        .args([p(&sig_log), p(&dir.join("killpath")), action])
        .env("SANLOCK_RUN_DIR", run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held", "{res} was not acquired");
    c
}

fn wait_exit(c: &mut Child, t0: Instant, limit: Duration, what: &str) -> (ExitStatus, Duration) {
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return (st, t0.elapsed());
        }
        if t0.elapsed() > limit {
            let _ = c.kill();
            panic!("{what} outlived {limit:?} after the disk failed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one daemon did.
#[derive(Debug)]
struct Seen {
    /// Each killpath run's argv after argv[0], holder pids replaced by PID.
    killpath_runs: Vec<Vec<String>>,
    /// The signals each holder recorded (the one whose killpath kills it,
    /// the one whose killpath does nothing).
    signals: [String; 2],
    /// How each holder ended: exit code or signal.
    ends: [String; 2],
    /// When each was gone, after the disk failed.
    gone: [Duration; 2],
    /// The lockspace was dropped once its holders were gone.
    lockspace_gone: bool,
    /// The daemon answers `client status` afterwards.
    status_ok: bool,
}

fn end(st: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => "?".into(),
    }
}

fn scenario(use_hactl: bool) -> Seen {
    let dir = workdir();
    let (back, mnt) = (dir.path().join("back"), dir.path().join("mnt"));
    std::fs::create_dir_all(&back).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let leases = back.join("leases");
    make_file(&leases, 3 << 20, 0);
    let ls = p(&leases);
    for args in [
        vec!["direct", "init", "-s", &format!("LS:0:{ls}:0"), "-o", "1"],
        vec!["direct", "init", "-r", &format!("LS:R1:{ls}:1M")],
        vec!["direct", "init", "-r", &format!("LS:R2:{ls}:2M")],
    ] {
        assert_eq!(run(hactl(), &args).code, 0);
    }
    let kp = dir.path().join("killpath");
    std::fs::write(&kp, KILLPATH).unwrap();
    std::fs::set_permissions(&kp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let flag = dir.path().join("fail");
    let fuse = Fuse::start_with(&back, &mnt, Some(&flag));
    let f = mnt.join("leases");
    let run_dir = dir.path().join("run");
    let grace = GRACE.to_string();
    let extra = ["-g", grace.as_str()];
    let (hd, sd);
    let (client, env): (&str, [(&str, &str); 1]) = if use_hactl {
        hd = HactlDaemon::start_with(&run_dir, &extra);
        (hactl(), hd.env())
    } else {
        sd = SanlockDaemon::start_with(&run_dir, &extra);
        (sanlock(), sd.env())
    };
    add_lockspace(&run_dir, 1, &f);
    let mut kills = holder(&run_dir, &f, "R1", 1 << 20, dir.path(), "kill");
    let mut keeps = holder(&run_dir, &f, "R2", 2 << 20, dir.path(), "keep");
    let pids = [kills.id(), keeps.id()];

    std::fs::write(&flag, b"").unwrap();
    let t0 = Instant::now();
    let limit = Duration::from_secs(8 + 2 + GRACE + 10);
    let (st1, g1) = wait_exit(&mut kills, t0, limit, "the holder whose killpath kills it");
    let (st2, g2) = wait_exit(
        &mut keeps,
        t0,
        limit,
        "the holder whose killpath does nothing",
    );

    // Once its holders are gone the lockspace is stopped (its host_id
    // cannot be released: the disk still fails).
    let mut lockspace_gone = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let o = run_env(client, &["client", "gets"], &env);
        if o.code == 0 && !o.text().contains("s LS:") {
            lockspace_gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status_ok = run_env(client, &["client", "status"], &env).code == 0;
    std::fs::remove_file(&flag).unwrap();
    drop(fuse);

    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let mut killpath_runs: Vec<Vec<String>> = read("killpath.log")
        .lines()
        .map(|l| {
            let v: Vec<String> = serde_json::from_str(l).unwrap();
            assert_eq!(v[0], p(&kp), "argv[0] of the killpath");
            v[1..]
                .iter()
                .map(|a| {
                    if pids.iter().any(|pid| pid.to_string() == *a) {
                        "PID".to_string()
                    } else {
                        a.clone()
                    }
                })
                .collect()
        })
        .collect();
    killpath_runs.sort();
    Seen {
        killpath_runs,
        signals: [read("R1.signals"), read("R2.signals")],
        ends: [end(st1), end(st2)],
        gone: [g1, g2],
        lockspace_gone,
        status_ok,
    }
}

#[test]
fn failed_lockspace_runs_killpath_instead_of_sigterm_like_sanlock() {
    let (s, h) = std::thread::scope(|sc| {
        let s = sc.spawn(|| scenario(false));
        let h = sc.spawn(|| scenario(true));
        (s.join().unwrap(), h.join().unwrap())
    });
    eprintln!("sanlock: {s:?}\nhactl:   {h:?}");
    let mut t = Tally("killpath", 0);
    for (who, seen) in [("sanlock", &s), ("hactl", &h)] {
        // Each holder's killpath ran exactly once, with its arguments
        // unescaped; no holder got SIGTERM.
        let runs = &seen.killpath_runs;
        let arg = |a: &'static str| vec!["two words", "back\\slash", "PID", a];
        assert_eq!(
            *runs,
            vec![arg("keep"), arg("kill")],
            "{who}: killpath runs"
        );
        assert_eq!(
            seen.signals[0], "SIGUSR1\n",
            "{who}: signals of the killed holder"
        );
        assert_eq!(
            seen.signals[1], "",
            "{who}: signals of the surviving holder"
        );
        assert_eq!(
            seen.ends,
            ["exit 42", "signal 9"],
            "{who}: how the holders ended"
        );
        // The killpath at the fail time (8 io_timeouts after the last
        // renewal, at most one renewal interval before the failure), SIGKILL
        // when the grace ends.
        let [g1, g2] = seen.gone.map(|d| d.as_secs_f64());
        assert!((5.0..13.0).contains(&g1), "{who}: killpath after {g1:.1}s");
        let after = g2 - g1;
        assert!(
            (GRACE as f64 - 2.0..GRACE as f64 + 3.0).contains(&after),
            "{who}: SIGKILL {after:.1}s after the killpath, grace {GRACE}s"
        );
        assert!(seen.lockspace_gone, "{who}: the lockspace stayed");
        assert!(seen.status_ok, "{who}: the daemon no longer answers");
    }
    t.same(
        "killpath argv",
        format!("{:?}", h.killpath_runs).as_bytes(),
        format!("{:?}", s.killpath_runs).as_bytes(),
    );
    t.same(
        "signals",
        h.signals.concat().as_bytes(),
        s.signals.concat().as_bytes(),
    );
    t.same(
        "ends",
        h.ends.concat().as_bytes(),
        s.ends.concat().as_bytes(),
    );
    for i in 0..2 {
        let d = h.gone[i].as_secs_f64() - s.gone[i].as_secs_f64();
        assert!(
            d.abs() < 4.0,
            "holder {i} gone {d:+.1}s later with hactl: {h:?} vs {s:?}"
        );
    }
}
