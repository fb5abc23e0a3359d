//! `client shutdown` on a daemon that has a lockspace and a lease holder,
//! against the real sanlock and hactl's daemon side by side (sanlock 3.8.5's
//! `SM_CMD_SHUTDOWN`, `daemon_shutdown_start` and main_loop):
//! - a plain shutdown, or SIGTERM, is ignored while a lockspace exists, and
//!   forgotten: the daemon keeps serving, adds and removes lockspaces, and
//!   does not exit when a lockspace goes later;
//! - `shutdown -w 1` is refused with -EBUSY;
//! - `shutdown -f 1` (with or without `-w 1`) SIGKILLs the lease holders,
//!   then stops the lockspaces (releasing the host_id) and exits; `-w 1`
//!   answers once it is done.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::*;

/// What one daemon did, in terms both can be compared on.
#[derive(Debug, PartialEq)]
struct Seen {
    /// (command, exit code, stdout) of each client command.
    outs: Vec<(String, i32, String)>,
    /// After the ignored shutdowns: daemon still up once its lockspace
    /// was removed; with a lockspace and a holder: daemon and holder up.
    alive_after_ignored: (bool, bool, bool),
    /// How the holder ended after the forced shutdown.
    holder_end: String,
    /// The host_id lease's timestamp is 0 (released) after the shutdown.
    host_id_released: bool,
    /// R1's leader after the shutdown: owner_id and whether its timestamp
    /// is 0 (a lease of a killed holder is not released on disk; the
    /// released host_id makes it free to take).
    r1_owner: (String, bool),
}

fn wait_child(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn wait_exited(pid: i32, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if exited(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn leader_field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

fn scenario(use_hactl: bool, forced: &[&str]) -> (Seen, Duration, Duration) {
    let dir = workdir();
    let (f, f2) = (dir.path().join("leases"), dir.path().join("ls2"));
    make_file(&f, 2 << 20, 0);
    make_file(&f2, 1 << 20, 0);
    let (fs, fs2) = (p(&f), p(&f2));
    for args in [
        vec!["direct", "init", "-s", &format!("LS:0:{fs}:0"), "-o", "1"],
        vec!["direct", "init", "-r", &format!("LS:R1:{fs}:1M")],
        vec!["direct", "init", "-s", &format!("LS2:0:{fs2}:0"), "-o", "1"],
    ] {
        assert_eq!(run(hactl(), &args).code, 0);
    }
    let run_dir = dir.path().join("run");
    let (hd, sd);
    let pid = if use_hactl {
        hd = HactlDaemon::start(&run_dir);
        hd.pid()
    } else {
        sd = SanlockDaemon::start(&run_dir);
        sd.pid()
    };
    let env = [("SANLOCK_RUN_DIR", p(&run_dir))];
    let mut outs = Vec::new();
    let mut client = |args: &[&str]| {
        let mut a = vec!["client"];
        a.extend_from_slice(args);
        let o = run_env(sanlock(), &a, &env);
        // Each daemon has its own files: compare without their directory.
        let at = p(dir.path());
        outs.push((
            args.join(" ").replace(at, "DIR"),
            o.code,
            o.text().replace(at, "DIR"),
        ));
    };
    // An ignored shutdown is forgotten: the daemon stays when its only
    // lockspace goes afterwards.
    let ls2 = format!("LS2:1:{fs2}:0");
    // io_timeout 3: a 1 s I/O limit fails joins on a loaded machine (-202).
    client(&["add_lockspace", "-s", &ls2, "-o", "3"]);
    client(&["shutdown"]);
    client(&["rem_lockspace", "-s", &ls2]);
    std::thread::sleep(Duration::from_millis(1000));
    let alive_when_empty = !exited(pid);
    let who = if use_hactl { "hactl" } else { "sanlock" };
    assert!(
        alive_when_empty,
        "{who}: the daemon exited when its lockspace went after an ignored shutdown"
    );

    add_lockspace(&run_dir, 1, &f);
    let (mut holder, held) = python_holder(&run_dir, &f, "R1", 1 << 20, false);
    assert_eq!(held, "held");
    client(&["shutdown"]);
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    client(&["shutdown", "-w", "1"]);
    std::thread::sleep(Duration::from_millis(1500));
    let alive_after_ignored = (
        alive_when_empty,
        !exited(pid),
        holder.try_wait().unwrap().is_none(),
    );
    client(&["gets"]);

    let t0 = Instant::now();
    client(forced);
    let st = wait_child(&mut holder, Duration::from_secs(15));
    let holder_gone = t0.elapsed();
    let holder_end = match st {
        None => {
            let _ = holder.kill();
            "still running".to_string()
        }
        Some(st) => {
            use std::os::unix::process::ExitStatusExt;
            format!("{:?} {:?}", st.code(), st.signal())
        }
    };
    assert!(
        wait_exited(pid, Duration::from_secs(20)),
        "the daemon did not exit after {forced:?}"
    );
    let daemon_gone = t0.elapsed();
    let h = run(
        sanlock(),
        &["direct", "read_leader", "-s", &format!("LS:1:{fs}:0")],
    )
    .text();
    let r = run(
        sanlock(),
        &["direct", "read_leader", "-r", &format!("LS:R1:{fs}:1M")],
    )
    .text();
    let seen = Seen {
        outs,
        alive_after_ignored,
        holder_end,
        host_id_released: leader_field(&h, "timestamp ") == "0",
        r1_owner: (
            leader_field(&r, "owner_id "),
            leader_field(&r, "timestamp ") == "0",
        ),
    };
    (seen, holder_gone, daemon_gone)
}

fn both(forced: &[&str]) {
    let (s, h) = std::thread::scope(|sc| {
        let s = sc.spawn(|| scenario(false, forced));
        let h = sc.spawn(|| scenario(true, forced));
        (s.join().unwrap(), h.join().unwrap())
    });
    eprintln!("sanlock: {s:?}\nhactl:   {h:?}");
    let (s, s_holder, s_daemon) = s;
    let (h, h_holder, h_daemon) = h;
    // What sanlock does is the reference; these hold for it too, so the
    // test fails if the oracle changes under it.
    assert_eq!(
        s.alive_after_ignored,
        (true, true, true),
        "sanlock ignored shutdown"
    );
    assert_eq!(s.holder_end, "None Some(9)", "sanlock SIGKILLs holders");
    let mut t = Tally("shutdown with holders", 0);
    for (i, (so, ho)) in s.outs.iter().zip(&h.outs).enumerate() {
        assert_eq!(so.0, ho.0);
        t.same(
            &format!("client {} ({i})", so.0),
            ho.2.as_bytes(),
            so.2.as_bytes(),
        );
        assert_eq!(so.1, ho.1, "client {}: exit codes differ", so.0);
    }
    assert_eq!(s.outs.len(), h.outs.len());
    t.same(
        "after the forced shutdown",
        format!(
            "{:?} {} {} {:?}",
            h.alive_after_ignored, h.holder_end, h.host_id_released, h.r1_owner
        )
        .as_bytes(),
        format!(
            "{:?} {} {} {:?}",
            s.alive_after_ignored, s.holder_end, s.host_id_released, s.r1_owner
        )
        .as_bytes(),
    );
    for (what, a, b) in [
        ("holder", h_holder, s_holder),
        ("daemon", h_daemon, s_daemon),
    ] {
        let d = a.as_secs_f64() - b.as_secs_f64();
        assert!(
            d.abs() < 3.0,
            "{what} gone {d:+.1}s later with hactl ({a:?} vs {b:?})"
        );
    }
}

#[test]
fn forced_shutdown_kills_holders_like_sanlock() {
    both(&["shutdown", "-f", "1"]);
}

#[test]
fn forced_shutdown_and_wait_kills_holders_like_sanlock() {
    both(&["shutdown", "-f", "1", "-w", "1"]);
}
