//! One sanlock.conf, read by the real sanlock and by hactl: the daemons
//! report the same settings (`client status -D`). sanlock reads only
//! /etc/sanlock/sanlock.conf, so its daemon runs in a mount namespace where
//! a scratch directory is bind-mounted there; hactl is pointed at the same
//! file with HACTL_SANLOCK_CONF. Nothing under /etc is written (an empty
//! /etc/sanlock is created if missing, as a mount point).
//!
//! One known difference: Debian's sanlock 3.8.5 binary ignores
//! `kill_grace_seconds` in sanlock.conf (it reports 40 whatever the file
//! says) and has no `io_timeout` / `watchdog_fire_timeout` keys; hactl
//! takes all three, as sanlock's 3.8.5 source does. Checked separately.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const CONF: &str = "\
# every line a sanlock 3.8.5 key, none at its default
quiet_fail = 0
debug_renew = 1
use_aio = 0
logfile_priority = 7
logfile_use_utc = 1
use_watchdog = 0
io_timeout = 5
high_priority = 0
mlock_level = 0
sh_retries = 4
uname = root
gname = root
our_host_name = hactl-conf-test
renewal_history_size = 50
write_init_io_timeout = 40
debug_clients = 1
debug_cmd = -all
debug_cmd = +acquire
debug_cmd=+add_lockspace
max_sectors_kb = align
max_worker_threads = 5
";

fn wait_socket(run_dir: &Path, child: &mut Child) {
    let t0 = Instant::now();
    while !run_dir.join("sanlock.sock").exists() {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("daemon exited: {s:?}");
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `client status -D`'s daemon settings, without the fields that differ
/// by nature (helper process, clock).
fn settings(run_dir: &Path) -> Vec<String> {
    let o = run_env(
        sanlock(),
        &["client", "status", "-D"],
        &[("SANLOCK_RUN_DIR", p(run_dir))],
    );
    let text = o.text();
    // The daemon's line, then one indented `key=value` per line.
    let fields: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("daemon "))
        .skip(1)
        .take_while(|l| l.starts_with("    ") && l.contains('='))
        .map(|l| l.trim().to_string())
        // io_engine, io_abandoned: hactl's own, after sanlock's fields.
        .filter(|f| {
            !f.starts_with("helper_") && !f.starts_with("monotime=") && !f.starts_with("io_")
        })
        .collect();
    assert!(fields.len() > 20, "{text}");
    fields
}

#[test]
fn sanlock_conf_read_alike() {
    let w = workdir();
    let etc = w.path().join("etc-sanlock");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("sanlock.conf"), CONF).unwrap();
    std::fs::create_dir_all("/etc/sanlock").expect("mount point (tests run as root)");

    let (srd, hrd) = (w.path().join("s"), w.path().join("h"));
    std::fs::create_dir_all(&srd).unwrap();
    let slog = std::fs::File::create(w.path().join("s.log")).unwrap();
    let script = format!(
        "mount --bind {} /etc/sanlock && exec {} daemon -D",
        p(&etc),
        sanlock()
    );
    let mut cmd = Command::new("unshare");
    let mut s = die_with_parent(&mut cmd)
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("SANLOCK_RUN_DIR", &srd)
        .env("SANLOCK_PRIVILEGED", "0")
        // Local time 9 hours off UTC, so logfile_use_utc shows.
        .env("TZ", "XST-9")
        .stdin(Stdio::null())
        .stdout(slog.try_clone().unwrap())
        .stderr(slog)
        .spawn()
        .unwrap();
    wait_socket(&srd, &mut s);

    std::fs::create_dir_all(&hrd).unwrap();
    let hlog = std::fs::File::create(w.path().join("h.log")).unwrap();
    let mut cmd = Command::new(hactl());
    let mut h = die_with_parent(&mut cmd)
        .args(["daemon", "-D"])
        .env("SANLOCK_RUN_DIR", &hrd)
        .env("SANLOCK_PRIVILEGED", "0")
        .env("HACTL_SANLOCK_CONF", etc.join("sanlock.conf"))
        .env("TZ", "XST-9")
        .stdin(Stdio::null())
        .stdout(hlog.try_clone().unwrap())
        .stderr(hlog)
        .spawn()
        .unwrap();
    wait_socket(&hrd, &mut h);

    let (ours, theirs) = (settings(&hrd), settings(&srd));
    for _ in [s.kill(), h.kill()] {}
    let _ = (s.wait(), h.wait());
    assert!(
        theirs.contains(&"our_host_name=hactl-conf-test".to_string()),
        "sanlock did not read the file: {theirs:?}"
    );
    // Field by field (the names included), one check each.
    let mut tally = Tally("sanlock.conf settings", 0);
    assert_eq!(ours.len(), theirs.len(), "{ours:?}\n{theirs:?}");
    for (a, b) in ours.iter().zip(&theirs) {
        tally.same("status -D setting", a.as_bytes(), b.as_bytes());
    }

    // The key Debian's binary ignores, taken by hactl.
    let extra = etc.join("grace.conf");
    std::fs::write(&extra, "kill_grace_seconds = 20\nuse_watchdog = 0\n").unwrap();
    let g = HactlDaemon::start_with_env(
        &w.path().join("g"),
        &[],
        &[("HACTL_SANLOCK_CONF", p(&extra))],
    );
    assert!(settings(&g.run_dir).contains(&"kill_grace_seconds=20".to_string()));

    // logfile_use_utc: both daemons stamp their lines in UTC.
    let utc_hour = {
        // SAFETY: time(NULL) and gmtime_r into our own tm.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        unsafe { libc::gmtime_r(&libc::time(std::ptr::null_mut()), &mut tm) };
        format!("{:02}:", tm.tm_hour)
    };
    for log in ["s.log", "h.log"] {
        let text = std::fs::read_to_string(w.path().join(log)).unwrap();
        let first = text.lines().next().unwrap_or("");
        let hour = first.split(' ').nth(1).unwrap_or("").get(..3).unwrap_or("");
        // (a run across an hour boundary would differ: accept the next hour)
        let next = format!("{:02}:", (utc_hour[..2].parse::<u32>().unwrap() + 23) % 24);
        assert!(hour == utc_hour || hour == next, "{log}: {first}");
    }
}
