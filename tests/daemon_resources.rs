//! Resource leases through `hactl daemon`, driven by the unmodified
//! python3-sanlock: the same results and errors as against the real
//! daemon, and exclusion across implementations: while a process on one
//! host holds a lease, a process on the other host (hactl or sanlock) is
//! refused; after release, or when the holder dies, the other gets it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const CALLS: &str = r#"
import sanlock, sys, json
path = sys.argv[1]
out = []
def rec(name, f):
    try:
        r = f()
        out.append([name, "ok", r if not isinstance(r, list) else [[x.decode() if isinstance(x, bytes) else str(x) for x in t] for t in r]])
    except sanlock.SanlockException as e:
        out.append([name, "err", e.errno])
fd = sanlock.register()
res = lambda name, off=1048576: (b"LS", name, [(path, off)])
rec("acquire", lambda: sanlock.acquire(*res(b"VM1"), slkfd=fd))
rec("inquire", lambda: sanlock.inquire(slkfd=fd))
rec("acquire again", lambda: sanlock.acquire(*res(b"VM1"), slkfd=fd))
rec("acquire unknown lockspace", lambda: sanlock.acquire(b"NOPE", b"VM1", [(path, 1048576)], slkfd=fd))
rec("acquire wrong resource name", lambda: sanlock.acquire(*res(b"VM9"), slkfd=fd))
rec("acquire no lease there", lambda: sanlock.acquire(*res(b"VM2", 3145728), slkfd=fd))
rec("acquire wrong version", lambda: sanlock.acquire(*res(b"VM2", 2097152), slkfd=fd, version=7))
rec("acquire VM2", lambda: sanlock.acquire(*res(b"VM2", 2097152), slkfd=fd, version=0))
rec("inquire two", lambda: sanlock.inquire(slkfd=fd))
rec("release VM1", lambda: sanlock.release(*res(b"VM1"), slkfd=fd))
rec("release VM1 again", lambda: sanlock.release(*res(b"VM1"), slkfd=fd))
rec("acquire VM1 lver 2", lambda: sanlock.acquire(*res(b"VM1"), slkfd=fd))
rec("inquire after", lambda: sanlock.inquire(slkfd=fd))
rec("acquire unregistered", lambda: sanlock.acquire(*res(b"VM2", 2097152)))
print(json.dumps(out))
"#;

fn setup(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let f = dir.join(name);
    make_file(&f, 4 << 20, 0);
    let fs = p(&f);
    for args in [
        vec!["direct", "init", "-s", &format!("LS:0:{fs}:0"), "-o", "1"][..].to_vec(),
        vec!["direct", "init", "-r", &format!("LS:VM1:{fs}:1M")],
        vec!["direct", "init", "-r", &format!("LS:VM2:{fs}:2M")],
    ] {
        assert_eq!(run(hactl(), &args).code, 0);
    }
    f
}

#[test]
fn python3_sanlock_resource_calls_match() {
    let mut t = Tally("python3-sanlock resources", 0);
    let dir = workdir();
    let (fa, fb) = (setup(dir.path(), "a"), setup(dir.path(), "b"));
    let sd = SanlockDaemon::start(&dir.path().join("s"));
    let hd = HactlDaemon::start(&dir.path().join("h"));
    add_lockspace(&sd.run_dir, 1, &fa);
    add_lockspace(&hd.run_dir, 1, &fb);
    let run_calls = |rd: &std::path::Path, f: &std::path::Path| {
        let o = run_env(
            python3(),
            &["-c", CALLS, p(f)],
            &[("SANLOCK_RUN_DIR", p(rd))],
        );
        assert_eq!(o.code, 0, "{}", o.stderr);
        o.text().replace(p(f), "LEASES")
    };
    let theirs = run_calls(&sd.run_dir, &fa);
    let ours = run_calls(&hd.run_dir, &fb);
    let (tv, ov): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&theirs).unwrap(),
        serde_json::from_str(&ours).unwrap(),
    );
    for (a, b) in tv.as_array().unwrap().iter().zip(ov.as_array().unwrap()) {
        t.same(
            &a[0].to_string(),
            b.to_string().as_bytes(),
            a.to_string().as_bytes(),
        );
    }
    // Both leases show up in lver order on disk the same way.
    let dump =
        |f: &std::path::Path| run(sanlock(), &["direct", "dump", &format!("{}:1M", p(f))]).text();
    let owners = |s: String| {
        s.lines()
            .skip(1)
            .map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    t.same(
        "lease owners after the calls",
        format!("{:?}", owners(dump(&fb))).as_bytes(),
        format!("{:?}", owners(dump(&fa))).as_bytes(),
    );
}

/// The leases file `name` in `dir`, a hactl host (host_id 1) and a real
/// sanlock host (host_id 2) joined to its lockspace, each having seen the
/// other renew (so owners are judged LIVE).
fn two_hosts(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, HactlDaemon, SanlockDaemon) {
    let f = setup(dir, name);
    let hd = HactlDaemon::start(&dir.join("h"));
    let sd = SanlockDaemon::start(&dir.join("s"));
    std::thread::scope(|s| {
        s.spawn(|| add_lockspace(&hd.run_dir, 1, &f));
        s.spawn(|| add_lockspace(&sd.run_dir, 2, &f));
    });
    std::thread::sleep(Duration::from_secs(4));
    (f, hd, sd)
}

#[test]
fn exclusion_across_implementations() {
    let dir = workdir();
    let (f, hd, sd) = two_hosts(dir.path(), "shared");

    // hactl's process holds; sanlock's is refused; after release, sanlock gets it.
    let (mut h1, s1) = python_holder(&hd.run_dir, &f, "VM1", 1 << 20, false);
    assert_eq!(s1, "held");
    let l1 = lease_lver(&f, "VM1", 1 << 20);
    let status = run_env(
        sanlock(),
        &["client", "status"],
        &[("SANLOCK_RUN_DIR", p(&hd.run_dir))],
    )
    .text();
    let want = format!("r LS:VM1:{}:1048576:{l1} p {}", p(&f), h1.id());
    assert!(
        status.lines().any(|l| l == want),
        "sanlock client status does not show {want:?}:\n{status}"
    );
    let (_, s2) = python_holder(&sd.run_dir, &f, "VM1", 1 << 20, false);
    assert!(
        s2.starts_with("refused"),
        "sanlock took a lease hactl holds: {s2}"
    );
    assert_eq!(
        lease_lver(&f, "VM1", 1 << 20),
        l1,
        "a refused acquire changed the lease"
    );
    h1.stdin.take().unwrap().write_all(b"").unwrap();
    h1.wait().unwrap();
    wait_released(&hd.run_dir, "VM1");
    let (mut s3, st) = python_holder(&sd.run_dir, &f, "VM1", 1 << 20, false);
    assert_eq!(
        st, "held",
        "sanlock could not take the lease hactl released"
    );
    assert_eq!(lease_lver(&f, "VM1", 1 << 20), l1 + 1);

    // sanlock's process holds; hactl's is refused; the holder is killed,
    // sanlock releases for it, and hactl gets it.
    let (_, h2) = python_holder(&hd.run_dir, &f, "VM1", 1 << 20, false);
    assert!(
        h2.starts_with("refused"),
        "hactl took a lease sanlock holds: {h2}"
    );
    // Refused for the same reason on both sides (the holder is alive).
    assert_eq!(h2, s2, "hactl and sanlock refuse for different reasons");
    eprintln!("a live holder's lease is refused with: {h2}");
    s3.kill().unwrap();
    s3.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut h4 = loop {
        let (c, st) = python_holder(&hd.run_dir, &f, "VM1", 1 << 20, false);
        if st == "held" {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "hactl never got the lease after sanlock's holder died: {st}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(lease_lver(&f, "VM1", 1 << 20), l1 + 2);

    // hactl's holder is killed: hactl releases for it; sanlock gets it.
    h4.kill().unwrap();
    h4.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, st) = python_holder(&sd.run_dir, &f, "VM1", 1 << 20, false);
        if st == "held" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sanlock never got the lease after hactl's holder died: {st}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(lease_lver(&f, "VM1", 1 << 20), l1 + 3);
}

#[test]
fn a_hung_holders_lease_is_taken_over_only_once_it_is_dead() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let dir = workdir();
    let f = setup(dir.path(), "hang");
    // hactl host 1 holds VM1, sanlock host 2 holds VM2; sanlock host 3 and
    // hactl host 4 will take them over.
    let h1 = HactlDaemon::start(&dir.path().join("h1"));
    let s2 = SanlockDaemon::start(&dir.path().join("s2"));
    let s3 = SanlockDaemon::start(&dir.path().join("s3"));
    let h4 = HactlDaemon::start(&dir.path().join("h4"));
    let dirs = [
        h1.run_dir.clone(),
        s2.run_dir.clone(),
        s3.run_dir.clone(),
        h4.run_dir.clone(),
    ];
    std::thread::scope(|s| {
        for (i, d) in dirs.iter().enumerate() {
            let f = &f;
            s.spawn(move || add_lockspace(d, i as u64 + 1, f));
        }
    });
    std::thread::sleep(Duration::from_secs(4));
    let (mut hold1, st1) = python_holder(&dirs[0], &f, "VM1", 1 << 20, false);
    assert_eq!(st1, "held");
    let vm2 = r#"
import sanlock, sys
fd = sanlock.register()
sanlock.acquire(b"LS", b"VM2", [(sys.argv[1], 2097152)], slkfd=fd)
print("held", flush=True)
sys.stdin.read()
"#;
    let mut hold2 = Command::new(python3())
        .args(["-c", vm2, p(&f)])
        .env("SANLOCK_RUN_DIR", &dirs[1])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(hold2.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let (l1, l2) = (
        lease_lver(&f, "VM1", 1 << 20),
        lease_lver(&f, "VM2", 2 << 20),
    );

    // Hang both holding hosts: their daemons and their lease holders.
    let t0 = Instant::now();
    for pid in [h1.pid(), hold1.id() as i32, s2.pid(), hold2.id() as i32] {
        kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    }
    let take1 = acquire_blocking(&dirs[2], &f, "VM1", 1 << 20, &[-243], 110);
    let take2 = acquire_blocking(&dirs[3], &f, "VM2", 2 << 20, &[-243], 110);
    let (r1, w1) = take1.join().unwrap();
    let (r2, w2) = take2.join().unwrap();
    let (a1, a2) = (
        w1.duration_since(t0).as_secs_f64(),
        w2.duration_since(t0).as_secs_f64(),
    );
    eprintln!(
        "sanlock took over hung hactl's VM1 after {a1:.1}s ({r1}); hactl took over hung sanlock's VM2 after {a2:.1}s ({r2})"
    );
    assert_eq!(
        r1, "held",
        "sanlock never took over the hung hactl host's lease"
    );
    assert_eq!(
        r2, "held",
        "hactl never took over the hung sanlock host's lease"
    );
    // host_dead_seconds at io_timeout 1 is 68 s after the last renewal,
    // which happened at most one renewal interval (~3 s) before the hang.
    assert!(
        a1 >= 65.0,
        "sanlock took the lease {a1:.1}s after the hang, before its owner could be dead"
    );
    assert!(
        a2 >= 65.0,
        "hactl took the lease {a2:.1}s after the hang, before its owner could be dead"
    );
    assert!(
        a1 < 90.0 && a2 < 90.0,
        "takeover far later than host_dead_seconds: {a1:.1}s / {a2:.1}s"
    );
    assert_eq!(lease_lver(&f, "VM1", 1 << 20), l1 + 1);
    assert_eq!(lease_lver(&f, "VM2", 2 << 20), l2 + 1);
    for pid in [hold1.id() as i32, hold2.id() as i32] {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = (hold1.wait(), hold2.wait());
}

/// `io_warm_acquires` of hactl's `status -D`.
fn warm_acquires(run_dir: &std::path::Path) -> u64 {
    let t = run_env(
        sanlock(),
        &["client", "status", "-D"],
        &[("SANLOCK_RUN_DIR", p(run_dir))],
    )
    .text();
    t.split_whitespace()
        .find_map(|f| f.strip_prefix("io_warm_acquires="))
        .unwrap_or_else(|| panic!("no io_warm_acquires in status -D:\n{t}"))
        .parse()
        .unwrap()
}

/// hactl acquires a lease it freed itself from a leader-sector read (its
/// area read skipped, `io_warm_acquires` counting it), and only while the
/// leader is the one it wrote free: after the real sanlock has taken and
/// freed the lease, hactl's next acquire reads the area as usual and takes
/// the next lver; while either holds the lease, the other is refused.
#[test]
fn a_lease_hactl_freed_is_taken_again_warm_until_sanlock_writes_it() {
    let dir = workdir();
    let (f, hd, sd) = two_hosts(dir.path(), "warm");
    let cycle = |run_dir: &std::path::Path, other: &std::path::Path| {
        let (mut c, st) = python_holder(run_dir, &f, "VM1", 1 << 20, false);
        assert_eq!(st, "held");
        let (_, o) = python_holder(other, &f, "VM1", 1 << 20, false);
        assert!(o.starts_with("refused"), "both hold VM1: {o}");
        c.stdin.take().unwrap().write_all(b"").unwrap();
        c.wait().unwrap();
        wait_released(run_dir, "VM1");
        lease_lver(&f, "VM1", 1 << 20)
    };
    let (h, s) = (&hd.run_dir, &sd.run_dir);
    assert_eq!(warm_acquires(h), 0);
    let l1 = cycle(h, s);
    assert_eq!(warm_acquires(h), 0, "the first acquire reads the area");
    assert_eq!(cycle(h, s), l1 + 1);
    assert_eq!(warm_acquires(h), 1, "freed by hactl: taken again warm");
    assert_eq!(cycle(h, s), l1 + 2);
    assert_eq!(warm_acquires(h), 2);
    // sanlock takes it and frees it: the leader is not hactl's any more.
    assert_eq!(cycle(s, h), l1 + 3);
    assert_eq!(cycle(h, s), l1 + 4);
    assert_eq!(warm_acquires(h), 2, "the leader changed: a cold acquire");
    assert_eq!(cycle(h, s), l1 + 5);
    assert_eq!(warm_acquires(h), 3);
}
