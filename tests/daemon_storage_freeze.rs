//! A host whose storage freezes (its path to the lease file goes through a
//! FUSE pass-through whose server is SIGSTOPped, as a hung NFS server; the
//! other host reaches the file directly) must have its lease holders gone
//! before the other host acquires their leases: a holder that exits on
//! SIGTERM, and one that ignores SIGTERM and needs SIGKILL. The other host
//! acquires only once the frozen host is DEAD (when its watchdog would have
//! fired). Measured both ways in a mixed cluster: hactl frozen with sanlock
//! taking over, and sanlock frozen with hactl taking over.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::*;

fn wait_gone(c: &mut Child, t0: Instant, limit: Duration) -> Duration {
    loop {
        if c.try_wait().unwrap().is_some() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "a holder on the frozen host outlived {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Timings {
    term_gone: Duration,
    kill_gone: Duration,
    takeover: [Duration; 2],
}

/// Freezes the storage of host 1 (`frozen_hactl`: hactl's daemon, else
/// sanlock's) while host 2 (the other implementation) waits for its leases.
fn freeze(frozen_hactl: bool) -> Timings {
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
    let (hd, sd) = (
        HactlDaemon::start(&dir.path().join("h")),
        SanlockDaemon::start(&dir.path().join("s")),
    );
    let (frozen_dir, other_dir) = if frozen_hactl {
        (hd.run_dir.clone(), sd.run_dir.clone())
    } else {
        (sd.run_dir.clone(), hd.run_dir.clone())
    };
    std::thread::scope(|s| {
        s.spawn(|| add_lockspace(&frozen_dir, 1, &via_fuse));
        s.spawn(|| add_lockspace(&other_dir, 2, &direct));
    });
    std::thread::sleep(Duration::from_secs(4));
    let (mut term, t) = python_holder(&frozen_dir, &via_fuse, "R1", 1 << 20, false);
    let (mut stubborn, k) = python_holder(&frozen_dir, &via_fuse, "R2", 2 << 20, true);
    assert_eq!(
        (t.as_str(), k.as_str()),
        ("held", "held"),
        "the leases were not acquired"
    );

    fuse.signal(libc::SIGSTOP);
    let t0 = Instant::now();
    let a1 = acquire_blocking(&other_dir, &direct, "R1", 1 << 20, &[-243, 11], 150);
    let a2 = acquire_blocking(&other_dir, &direct, "R2", 2 << 20, &[-243, 11], 150);
    let term_gone = wait_gone(&mut term, t0, Duration::from_secs(100));
    if frozen_hactl {
        // With its storage hung, hactl's daemon still answers at once.
        let t = Instant::now();
        let st = run_env(
            sanlock(),
            &["client", "status"],
            &[("SANLOCK_RUN_DIR", p(&frozen_dir))],
        );
        assert!(
            t.elapsed() < Duration::from_secs(3) && st.text().contains("s LS:1:"),
            "hactl's daemon did not answer status while its storage hung ({:?}): {}",
            t.elapsed(),
            st.text()
        );
    }
    let kill_gone = wait_gone(&mut stubborn, t0, Duration::from_secs(100));
    let (r1, at1) = a1.join().unwrap();
    let (r2, at2) = a2.join().unwrap();
    assert_eq!(
        (r1.as_str(), r2.as_str()),
        ("held", "held"),
        "the other host never took the leases over"
    );
    let takeover = [at1 - t0, at2 - t0];
    // Never before the holders were gone.
    assert!(
        takeover[0] > term_gone && takeover[1] > kill_gone,
        "a lease was taken over while its holder lived"
    );
    // Not before the frozen host's watchdog would have fired: 8 io_timeouts
    // + 60 s after its last renewal, which was at most one renewal interval
    // (2 s) and one io_timeout before the freeze.
    for t in takeover {
        assert!(
            t >= Duration::from_secs(65),
            "taken over {t:?} after the freeze, before the owner could be DEAD"
        );
    }
    drop(fuse);
    Timings {
        term_gone,
        kill_gone,
        takeover,
    }
}

#[test]
fn storage_freeze_kills_holders_before_takeover_both_ways() {
    let h = freeze(true);
    let s = freeze(false);
    let secs = |d: Duration| format!("{:.1}", d.as_secs_f64());
    eprintln!("seconds after the freeze          hactl frozen   sanlock frozen");
    eprintln!(
        "  SIGTERM holder gone             {:>12}   {:>14}",
        secs(h.term_gone),
        secs(s.term_gone)
    );
    eprintln!(
        "  SIGTERM-ignoring holder gone    {:>12}   {:>14}",
        secs(h.kill_gone),
        secs(s.kill_gone)
    );
    eprintln!(
        "  other host holds R1             {:>12}   {:>14}",
        secs(h.takeover[0]),
        secs(s.takeover[0])
    );
    eprintln!(
        "  other host holds R2             {:>12}   {:>14}",
        secs(h.takeover[1]),
        secs(s.takeover[1])
    );
    // hactl kills on sanlock's schedule: the SIGTERM holder at the fail
    // time (8 io_timeouts after the last renewal), the other after the
    // 40 s grace; allow for the renewal phase (≤ 3 s) and the poll period.
    let close = |a: Duration, b: Duration| a.as_secs_f64() - b.as_secs_f64();
    assert!(
        close(h.term_gone, s.term_gone).abs() < 4.0,
        "SIGTERM times differ: {h:?} vs {s:?}",
        h = h.term_gone,
        s = s.term_gone
    );
    assert!(
        close(h.kill_gone, s.kill_gone).abs() < 4.0,
        "SIGKILL times differ: {h:?} vs {s:?}",
        h = h.kill_gone,
        s = s.kill_gone
    );
}

/// The daemon's threads, by name (for a message when there are too many).
fn threads_of(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .map(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A hundred lockspaces on a storage that freezes for over 60 s: every
/// one of them has its renewals hang, yet the daemon's threads stay few
/// (no thread per lockspace, none per hung I/O: the I/O engine holds the
/// hung I/Os' buffers, at most one in the kernel per storage), it answers
/// `client status` at once throughout, and the holders in those
/// lockspaces go on sanlock's schedule: SIGTERM when the renewals have
/// failed for 8 io_timeouts, SIGKILL after the 40 s grace for those that
/// ignore it.
#[test]
fn a_hundred_lockspaces_on_frozen_storage_keep_the_daemon_small() {
    const N: u64 = 100;
    const HOLDERS: u64 = 6;
    const IO: u64 = 3;
    const MIB: u64 = 1 << 20;
    let dir = workdir();
    let (back, mnt) = (dir.path().join("back"), dir.path().join("mnt"));
    std::fs::create_dir_all(&back).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let direct = back.join("leases");
    make_file(&direct, ((N + HOLDERS) * MIB) as usize, 0);
    let ds = p(&direct);
    let name = |i: u64| {
        if i == 0 {
            "LS".to_string()
        } else {
            format!("LS{i}")
        }
    };
    for i in 0..N {
        let s = format!("{}:0:{ds}:{}", name(i), i * MIB);
        assert_eq!(run(hactl(), &["direct", "init", "-s", &s]).code, 0);
    }
    for j in 0..HOLDERS {
        let r = format!("LS:R{j}:{ds}:{}", (N + j) * MIB);
        assert_eq!(run(hactl(), &["direct", "init", "-r", &r]).code, 0);
    }
    let fuse = Fuse::start(&back, &mnt);
    let via_fuse = mnt.join("leases");
    let hd = HactlDaemon::start(&dir.path().join("h"));
    let rd = hd.run_dir.clone();

    // All added at once (SANLK_ADD_ASYNC), then waited for.
    let script = r#"
import sanlock, sys
path, n, io = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = [b"LS" if i == 0 else b"LS%d" % i for i in range(n)]
for i, name in enumerate(names):
    sanlock.add_lockspace(name, 1, path, i << 20, iotimeout=io, wait=False)
# A hundred joins at once through a Python FUSE server on a busy machine
# may see an I/O time out: such a join fails and is tried again.
for i, name in enumerate(names):
    for attempt in range(5):
        if sanlock.inq_lockspace(name, 1, path, i << 20, wait=True):
            break
        try:
            sanlock.add_lockspace(name, 1, path, i << 20, iotimeout=io)
        except sanlock.SanlockException as e:
            print("%s: add_lockspace: %s" % (name.decode(), e), file=sys.stderr, flush=True)
    else:
        print("not joined: %s" % name.decode(), flush=True)
        sys.exit(1)
print("joined", flush=True)
"#;
    let o = run_env(
        python3(),
        &["-c", script, p(&via_fuse), &N.to_string(), &IO.to_string()],
        &[("SANLOCK_RUN_DIR", p(&rd))],
    );
    assert_eq!(o.text().trim(), "joined", "{}", o.stderr);
    let mut holders: Vec<(Child, bool)> = (0..HOLDERS)
        .map(|j| {
            let ignore_term = j % 2 == 1;
            let (c, got) =
                python_holder(&rd, &via_fuse, &format!("R{j}"), (N + j) * MIB, ignore_term);
            assert_eq!(got, "held", "R{j} was not acquired");
            (c, ignore_term)
        })
        .collect();
    let before = threads_of(hd.pid());

    fuse.signal(libc::SIGSTOP);
    let t0 = Instant::now();
    let mut gone: Vec<Option<Duration>> = vec![None; holders.len()];
    let mut most = before.clone();
    let mut slowest_status = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(65) || gone.iter().any(|g| g.is_none()) {
        assert!(
            t0.elapsed() < Duration::from_secs(100),
            "holders outlived the kill sequence: {gone:?}"
        );
        for (i, (c, _)) in holders.iter_mut().enumerate() {
            if gone[i].is_none() && c.try_wait().unwrap().is_some() {
                gone[i] = Some(t0.elapsed());
            }
        }
        let now = threads_of(hd.pid());
        if now.len() > most.len() {
            most = now;
        }
        let t = Instant::now();
        let st = run_env(
            sanlock(),
            &["client", "status"],
            &[("SANLOCK_RUN_DIR", p(&rd))],
        );
        slowest_status = slowest_status.max(t.elapsed());
        assert!(
            st.code == 0 && st.text().starts_with("daemon "),
            "no status from the daemon {:?} after the freeze: {}",
            t0.elapsed(),
            st.text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let status_d = run_env(
        sanlock(),
        &["client", "status", "-D"],
        &[("SANLOCK_RUN_DIR", p(&rd))],
    );
    drop(fuse);
    eprintln!(
        "threads before the freeze {}, most during it {} ({}); slowest status {slowest_status:?}; holders gone at {gone:?}",
        before.len(),
        most.len(),
        most.join(" ")
    );
    assert!(
        slowest_status < Duration::from_secs(3),
        "client status took {slowest_status:?} with the storage frozen"
    );
    // The daemon's own four (main, killpath helper, engine, main loop), one per holder's
    // registered connection and one for the status client, and the kernel's
    // io-wq workers for the ring: at most 4 bounded and 4 unbounded.
    let bound = 4 + HOLDERS as usize + 1 + 8;
    assert!(
        most.len() <= bound,
        "{} threads (bound {bound}) with {N} lockspaces on frozen storage: {}",
        most.len(),
        most.join(" ")
    );
    assert!(
        status_d.text().contains("io_engine=io_uring"),
        "status -D does not say the engine: {}",
        status_d.text()
    );
    // sanlock's schedule: the last renewal was at most one renewal interval
    // (2 io_timeouts) before the freeze; the lockspace fails 8 io_timeouts
    // after it, the main loop sends SIGTERM then (period 1 s), and SIGKILL
    // after the 40 s grace to those still there.
    let fail = Duration::from_secs(8 * IO);
    for (i, (_, ignore_term)) in holders.iter().enumerate() {
        let at = gone[i].unwrap();
        let (lo, hi) = if *ignore_term {
            (
                fail - Duration::from_secs(2 * IO) + Duration::from_secs(40),
                fail + Duration::from_secs(40 + 5),
            )
        } else {
            (
                fail - Duration::from_secs(2 * IO),
                fail + Duration::from_secs(5),
            )
        };
        assert!(
            at >= lo && at <= hi,
            "holder R{i} (ignores SIGTERM: {ignore_term}) gone {at:?} after the freeze, not within {lo:?}..{hi:?}"
        );
    }
}
