//! `hactl daemon -w 1` drives wdmd as sanlock does. There is no watchdog
//! device here, so wdmd is played by a peer of ours: a socket at
//! `$WDMD_RUN_DIR/wdmd.sock` that answers as wdmd and records every message.
//! The same peer is put under the real sanlock (in a mount namespace where
//! it is /run/wdmd, sanlock's built-in path), so the protocol is checked
//! against sanlock's own libwdmd, not only against our encoder.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hactl::timeouts::monotime;
use hactl::wdmd::{
    CMD_OPEN_WATCHDOG, CMD_REFCOUNT_CLEAR, CMD_REFCOUNT_SET, CMD_REGISTER, CMD_STATUS,
    CMD_TEST_LIVE, HEADER_SIZE, Header,
};

#[derive(Clone, Debug)]
enum Ev {
    /// A message on connection `conn`, received at monotonic second `at`.
    Msg {
        conn: usize,
        at: u64,
        h: Header,
    },
    Closed,
}

/// How the fake wdmd answers.
#[derive(Clone, Copy)]
struct Answers {
    /// The fire timeout `status` reports.
    status_fire_timeout: u32,
}

const WDMD_OK: Answers = Answers {
    status_fire_timeout: 60,
};

struct FakeWdmd {
    dir: PathBuf,
    log: Arc<Mutex<Vec<Ev>>>,
}

impl FakeWdmd {
    fn start(dir: &Path, answers: Answers) -> FakeWdmd {
        std::fs::create_dir_all(dir).unwrap();
        let l = UnixListener::bind(dir.join("wdmd.sock")).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lg = log.clone();
        std::thread::spawn(move || {
            for (conn, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { return };
                let lg = lg.clone();
                std::thread::spawn(move || {
                    let mut b = [0u8; HEADER_SIZE];
                    while s.read_exact(&mut b).is_ok() {
                        let h = Header::decode(&b);
                        lg.lock().unwrap().push(Ev::Msg {
                            conn,
                            at: monotime(),
                            h,
                        });
                        // wdmd answers with a copy of the request, filled in.
                        let answer = match h.cmd {
                            // Newer wdmd's; answered as a device that takes it.
                            CMD_OPEN_WATCHDOG => Some(h),
                            CMD_STATUS => Some(Header {
                                test_interval: 10,
                                fire_timeout: answers.status_fire_timeout,
                                last_keepalive: monotime(),
                                ..h
                            }),
                            _ => None,
                        };
                        if let Some(a) = answer {
                            let _ = s.write_all(&a.encode());
                        }
                    }
                    lg.lock().unwrap().push(Ev::Closed);
                });
            }
        });
        FakeWdmd {
            dir: dir.to_path_buf(),
            log,
        }
    }

    fn events(&self) -> Vec<Ev> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the events so far.
    fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&[Ev]) -> bool) -> Vec<Ev> {
        let end = Instant::now() + limit;
        loop {
            let ev = self.events();
            if pred(&ev) {
                return ev;
            }
            assert!(Instant::now() < end, "wdmd never saw {what}: {ev:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn closed(ev: &[Ev]) -> bool {
    ev.iter().any(|e| matches!(e, Ev::Closed))
}

fn disarmed(ev: &[Ev]) -> bool {
    ev.iter()
        .any(|e| matches!(e, Ev::Msg { h, .. } if h.cmd == CMD_TEST_LIVE && h.expire_time == 0))
}

/// One message in a form two daemons' runs can be compared in: refreshes
/// by how far ahead they arm.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Open(u32),
    Register(String),
    RefcountSet,
    Status,
    /// test_live(t, t + ahead), any number in a row.
    Refresh {
        ahead: u64,
    },
    Disarm,
    RefcountClear,
    Closed,
    Other(u32),
}

fn steps(ev: &[Ev]) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for e in ev {
        let s = match e {
            Ev::Closed => Step::Closed,
            Ev::Msg { h, .. } => match h.cmd {
                CMD_OPEN_WATCHDOG => Step::Open(h.fire_timeout),
                CMD_REGISTER => Step::Register(h.name_str()),
                CMD_REFCOUNT_SET => Step::RefcountSet,
                CMD_REFCOUNT_CLEAR => Step::RefcountClear,
                CMD_STATUS => Step::Status,
                CMD_TEST_LIVE if h.renewal_time == 0 && h.expire_time == 0 => Step::Disarm,
                CMD_TEST_LIVE => Step::Refresh {
                    ahead: h.expire_time - h.renewal_time,
                },
                c => Step::Other(c),
            },
        };
        if !matches!(s, Step::Refresh { .. }) || out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

/// The refreshes (renewal_time, expire_time, received at).
fn refreshes(ev: &[Ev]) -> Vec<(u64, u64, u64)> {
    ev.iter()
        .filter_map(|e| match e {
            Ev::Msg { h, at, .. } if h.cmd == CMD_TEST_LIVE && h.expire_time != 0 => {
                Some((h.renewal_time, h.expire_time, *at))
            }
            _ => None,
        })
        .collect()
}

fn lockspace_file(dir: &Path) -> PathBuf {
    let f = dir.join("ids");
    make_file(&f, 1 << 20, 0);
    let o = run(
        hactl(),
        &["direct", "init", "-s", &format!("LS:0:{}:0", p(&f))],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    f
}

fn client(run_dir: &Path, args: &[&str]) -> String {
    run_env(
        hactl(),
        &[&["client"], args].concat(),
        &[("SANLOCK_RUN_DIR", p(run_dir))],
    )
    .text()
}

fn hactl_w1(dir: &Path, wdmd_dir: &Path) -> HactlDaemon {
    HactlDaemon::start_with_env(
        &dir.join("run"),
        &["-w", "1"],
        &[("WDMD_RUN_DIR", p(wdmd_dir))],
    )
}

/// The sequence every -w 1 lockspace goes through, add to rem: sanlock's.
fn expected_lifecycle() -> Vec<Step> {
    vec![
        Step::Register("sanlock_LS:1".into()),
        Step::RefcountSet,
        Step::Status,
        Step::Refresh { ahead: 8 },
        Step::Disarm,
        Step::RefcountClear,
        Step::Closed,
    ]
}

#[test]
fn registers_refreshes_each_renewal_and_disarms_on_rem_lockspace() {
    let dir = workdir();
    let f = lockspace_file(dir.path());
    let w = FakeWdmd::start(&dir.path().join("wdmd"), WDMD_OK);
    let d = hactl_w1(dir.path(), &w.dir);
    let ls = format!("LS:1:{}:0", p(&f));
    let o = client(&d.run_dir, &["add_lockspace", "-s", &ls, "-o", "1"]);
    assert!(o.contains("done 0"), "{o}");
    std::thread::sleep(Duration::from_secs(7));
    let o = client(&d.run_dir, &["rem_lockspace", "-s", &ls]);
    assert!(
        o.contains("done 0"),
        "{o}\n{}\n{:#?}",
        std::fs::read_to_string(d.run_dir.join("daemon.stderr")).unwrap(),
        steps(&w.events())
    );
    let ev = w.wait_for("the connection closed", Duration::from_secs(10), closed);
    assert_eq!(steps(&ev), expected_lifecycle(), "{ev:#?}");
    assert!(
        ev.iter()
            .all(|e| !matches!(e, Ev::Msg { conn, .. } if *conn != 0)),
        "one connection per lockspace"
    );
    // Armed at the acquire (with its timestamp, from before the acquire's
    // 20 s wait), then refreshed at each renewal (every 2 s with
    // io_timeout 1) with its own timestamp, on the monotonic clock wdmd uses.
    let r = refreshes(&ev);
    assert!(r.len() >= 4, "{r:?}");
    assert!(r[1].0 >= r[0].0 + 19, "{r:?}");
    for (renewal, expire, _) in &r {
        assert_eq!(expire - renewal, 8);
    }
    let r = &r[1..];
    for w in r.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!((1..=3).contains(&gap), "renewals {gap}s apart: {r:?}");
    }
    for (renewal, _, at) in r {
        assert!(at.abs_diff(*renewal) <= 2, "renewal {renewal} sent at {at}");
    }
    drop(d);
}

#[test]
fn add_lockspace_without_wdmd_fails_with_sanlk_wd_error() {
    let dir = workdir();
    let f = lockspace_file(dir.path());
    let ls = format!("LS:1:{}:0", p(&f));

    // Nothing listening: what a 3.8.5 wdmd without a watchdog device
    // leaves (it exits at start).
    let d = hactl_w1(dir.path(), &dir.path().join("nowdmd"));
    let o = client(&d.run_dir, &["add_lockspace", "-s", &ls, "-o", "1"]);
    assert!(o.contains("done -203"), "{o}");

    // wdmd running with another fire timeout: refused after the acquire,
    // and the host_id given back (a free slot: timestamp 0).
    let other = FakeWdmd::start(
        &dir.path().join("wdmd-30"),
        Answers {
            status_fire_timeout: 30,
        },
    );
    let d2 = hactl_w1(&dir.path().join("2"), &other.dir);
    let o = client(&d2.run_dir, &["add_lockspace", "-s", &ls, "-o", "1"]);
    assert!(o.contains("done -203"), "{o}");
    let ev = other.wait_for("the connection closed", Duration::from_secs(5), closed);
    assert_eq!(
        steps(&ev),
        vec![
            Step::Register("sanlock_LS:1".into()),
            Step::RefcountSet,
            Step::Status,
            Step::RefcountClear,
            Step::Closed
        ]
    );
    let o = run(hactl(), &["direct", "read_leader", "-s", &ls]);
    assert!(o.text().contains("timestamp 0\n"), "{}", o.text());
    drop((d, d2));
}

/// Storage freezes under a lease holder: refreshes stop with the renewals,
/// so wdmd's expiry stays at the last good renewal + 8 s; the holder is
/// killed; only then is wdmd disarmed, well before it would fire (expiry
/// + 60 s).
#[test]
fn storage_freeze_stops_refreshes_and_disarms_only_after_the_holder_is_gone() {
    let dir = workdir();
    let (back, mnt) = fuse_lease_dirs(dir.path());
    let fuse = Fuse::start(&back, &mnt);
    let via_fuse = mnt.join("leases");
    let w = FakeWdmd::start(&dir.path().join("wdmd"), WDMD_OK);
    let d = hactl_w1(dir.path(), &w.dir);
    let o = client(
        &d.run_dir,
        &[
            "add_lockspace",
            "-s",
            &format!("LS:1:{}:0", p(&via_fuse)),
            "-o",
            "1",
        ],
    );
    assert!(o.contains("done 0"), "{o}");
    std::thread::sleep(Duration::from_secs(3));
    let script = r#"
import sanlock, sys, time
fd = sanlock.register()
sanlock.acquire(b"LS", b"R1", [(sys.argv[1], 1048576)], slkfd=fd)
print("held", flush=True)
while True:
    time.sleep(1)
"#;
    let mut holder = Command::new(python3())
        .args(["-c", script, p(&via_fuse)])
        .env("SANLOCK_RUN_DIR", &d.run_dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");

    fuse.signal(libc::SIGSTOP);
    let frozen_at = monotime();
    let end = Instant::now() + Duration::from_secs(30);
    while holder.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < end,
            "the holder outlived the frozen lockspace"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let holder_gone = monotime();
    let ev = w.wait_for("the disarm", Duration::from_secs(20), disarmed);
    // Resume the storage first: a daemon blocked on the stopped FUSE server
    // cannot be reaped.
    drop(fuse);
    let disarm_at = ev
        .iter()
        .find_map(|e| match e {
            Ev::Msg { h, at, .. } if h.cmd == CMD_TEST_LIVE && h.expire_time == 0 => Some(*at),
            _ => None,
        })
        .unwrap();
    let r = refreshes(&ev);
    let (_, last_expire, last_sent) = *r.last().unwrap();
    // A renewal already past its I/O may still be sent just after the freeze.
    assert!(
        last_sent <= frozen_at + 1,
        "refreshed at {last_sent}, frozen at {frozen_at}: {r:?}"
    );
    assert!(
        last_expire + 3 >= frozen_at + 8,
        "{r:?} frozen at {frozen_at}"
    );
    // Killed at the expiry (the lease's fail time), not before.
    assert!(
        holder_gone + 1 >= last_expire,
        "holder gone {holder_gone}, expiry {last_expire}"
    );
    assert!(
        disarm_at >= holder_gone,
        "disarmed at {disarm_at} before the holder went at {holder_gone}"
    );
    assert!(
        disarm_at < last_expire + 60,
        "disarmed at {disarm_at}: after wdmd fired"
    );
    // Nothing armed after the disarm.
    let after: Vec<_> = steps(&ev)
        .into_iter()
        .skip_while(|s| *s != Step::Disarm)
        .collect();
    assert!(
        after == [Step::Disarm, Step::RefcountClear]
            || after == [Step::Disarm, Step::RefcountClear, Step::Closed],
        "{ev:#?}"
    );
    drop(d);
}

/// The real sanlock -w 1 in a private mount namespace whose /run/wdmd is our
/// fake wdmd's directory (sanlock has no setting for the path).
fn sanlock_w1(run_dir: &Path, wdmd_dir: &Path) -> Child {
    std::fs::create_dir_all(run_dir).unwrap();
    let log = std::fs::File::create(run_dir.join("daemon.log")).unwrap();
    let sh = format!(
        "mount -t tmpfs none /run && mkdir /run/wdmd && mount --bind '{}' /run/wdmd && exec {} daemon -D -w 1 -l 0 -h 0 -U root -G root",
        p(wdmd_dir),
        sanlock()
    );
    let mut cmd = Command::new("unshare");
    die_with_parent(&mut cmd)
        .args(["-m", "--propagation", "private", "sh", "-c", &sh])
        .env("SANLOCK_RUN_DIR", run_dir)
        .env("SANLOCK_PRIVILEGED", "0")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let child = cmd.spawn().expect("unshare");
    let end = Instant::now() + Duration::from_secs(10);
    while !run_dir.join("sanlock.sock").exists() {
        assert!(Instant::now() < end, "sanlock -w 1 did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn sanlock_speaks_the_same_sequence_to_wdmd() {
    let dir = workdir();
    let f = lockspace_file(dir.path());
    let ls = format!("LS:1:{}:0", p(&f));
    let w = FakeWdmd::start(&dir.path().join("wdmd"), WDMD_OK);
    let run_dir = dir.path().join("srun");
    let mut s = sanlock_w1(&run_dir, &w.dir);
    let env = [("SANLOCK_RUN_DIR", p(&run_dir))];
    let o = run_env(
        sanlock(),
        &["client", "add_lockspace", "-s", &ls, "-o", "1"],
        &env,
    );
    assert!(o.text().contains("done 0"), "{}", o.text());
    std::thread::sleep(Duration::from_secs(5));
    let o = run_env(sanlock(), &["client", "rem_lockspace", "-s", &ls], &env);
    assert!(o.text().contains("done 0"), "{}", o.text());
    let ev = w.wait_for("sanlock close", Duration::from_secs(10), closed);
    let _ = s.kill();
    let _ = s.wait();
    assert_eq!(steps(&ev), expected_lifecycle(), "{ev:#?}");
    for (renewal, _, at) in refreshes(&ev).into_iter().skip(1) {
        assert!(
            at.abs_diff(renewal) <= 2,
            "sanlock's renewal {renewal} sent at {at}"
        );
    }
    // The bytes libwdmd leaves at 0 (magic, len, flags) are 0 from us too.
    assert!(ev.iter().all(|e| match e {
        Ev::Msg { h, .. } => h.magic == 0 && h.len == 0 && h.flags == 0,
        _ => true,
    }));
}
