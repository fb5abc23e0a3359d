//! Resource leases through `hactl daemon`, driven by the unmodified
//! python3-sanlock: the same results and errors as against the real
//! daemon, and exclusion across implementations: while a process on one
//! host holds a lease, a process on the other host (hactl or sanlock) is
//! refused; after release, or when the holder dies, the other gets it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
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

fn add_ls(run_dir: &std::path::Path, host_id: u64, f: &std::path::Path) {
    let o = run_env(
        sanlock(),
        &[
            "client",
            "add_lockspace",
            "-s",
            &format!("LS:{host_id}:{}:0", p(f)),
            "-o",
            "1",
        ],
        &[("SANLOCK_RUN_DIR", p(run_dir))],
    );
    assert!(o.text().contains("done 0"), "{}", o.text());
}

#[test]
fn python3_sanlock_resource_calls_match() {
    let mut t = Tally("python3-sanlock resources", 0);
    let dir = workdir();
    let (fa, fb) = (setup(dir.path(), "a"), setup(dir.path(), "b"));
    let sd = SanlockDaemon::start(&dir.path().join("s"));
    let hd = HactlDaemon::start(&dir.path().join("h"));
    add_ls(&sd.run_dir, 1, &fa);
    add_ls(&hd.run_dir, 1, &fb);
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

/// A python process that holds VM1 until its stdin closes (or it is killed).
fn holder(run_dir: &std::path::Path, f: &std::path::Path) -> (Child, String) {
    let script = r#"
import sanlock, sys
fd = sanlock.register()
try:
    sanlock.acquire(b"LS", b"VM1", [(sys.argv[1], 1048576)], slkfd=fd)
    print("held", flush=True)
except sanlock.SanlockException as e:
    print("refused %d" % e.errno, flush=True)
    sys.exit(0)
sys.stdin.read()
"#;
    let mut c = Command::new(python3())
        .args(["-c", script, p(f)])
        .env("SANLOCK_RUN_DIR", run_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (c, line.trim().to_string())
}

fn lver(f: &std::path::Path) -> u64 {
    let t = run(
        sanlock(),
        &[
            "direct",
            "read_leader",
            "-r",
            &format!("LS:VM1:{}:1M", p(f)),
        ],
    )
    .text();
    t.lines()
        .find_map(|l| l.strip_prefix("lver "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn exclusion_across_implementations() {
    let dir = workdir();
    let f = setup(dir.path(), "shared");
    let hd = HactlDaemon::start(&dir.path().join("h"));
    let sd = SanlockDaemon::start(&dir.path().join("s"));
    std::thread::scope(|s| {
        s.spawn(|| add_ls(&hd.run_dir, 1, &f));
        s.spawn(|| add_ls(&sd.run_dir, 2, &f));
    });
    // Let each host see the other renew (so owners are judged LIVE).
    std::thread::sleep(Duration::from_secs(4));

    // hactl's process holds; sanlock's is refused; after release, sanlock gets it.
    let (mut h1, s1) = holder(&hd.run_dir, &f);
    assert_eq!(s1, "held");
    let l1 = lver(&f);
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
    let (_, s2) = holder(&sd.run_dir, &f);
    assert!(
        s2.starts_with("refused"),
        "sanlock took a lease hactl holds: {s2}"
    );
    assert_eq!(lver(&f), l1, "a refused acquire changed the lease");
    h1.stdin.take().unwrap().write_all(b"").unwrap();
    h1.wait().unwrap();
    let (mut s3, st) = holder(&sd.run_dir, &f);
    assert_eq!(
        st, "held",
        "sanlock could not take the lease hactl released"
    );
    assert_eq!(lver(&f), l1 + 1);

    // sanlock's process holds; hactl's is refused; the holder is killed,
    // sanlock releases for it, and hactl gets it.
    let (_, h2) = holder(&hd.run_dir, &f);
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
        let (c, st) = holder(&hd.run_dir, &f);
        if st == "held" {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "hactl never got the lease after sanlock's holder died: {st}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(lver(&f), l1 + 2);

    // hactl's holder is killed: hactl releases for it; sanlock gets it.
    h4.kill().unwrap();
    h4.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, st) = holder(&sd.run_dir, &f);
        if st == "held" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sanlock never got the lease after hactl's holder died: {st}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(lver(&f), l1 + 3);
}
