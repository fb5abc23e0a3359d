//! `hactl client` against `sanlock client`, both talking to the REAL sanlock
//! daemon: the same stdout and the same exit code for every action, and the
//! same bytes on disk for `init`.
//!
//! Outputs that carry live values (timestamps, monotime, last_check) are
//! compared with a sandwich: sanlock, hactl, sanlock. When sanlock's two
//! outputs are identical nothing moved in between (those values only grow),
//! so hactl's must be identical too; otherwise the triple is retried.
//! Freezing the daemon with SIGSTOP cannot work: a stopped daemon does not
//! answer the very commands being compared.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;

fn hactl_client(d: &SanlockDaemon, args: &[&str]) -> Out {
    let mut a = vec!["client"];
    a.extend_from_slice(args);
    run_env(hactl(), &a, &d.env())
}

fn hactl_in(run_dir: &str, args: &[&str]) -> Out {
    let mut a = vec!["client"];
    a.extend_from_slice(args);
    run_env(hactl(), &a, &[("SANLOCK_RUN_DIR", run_dir)])
}

fn sanlock_in(run_dir: &str, args: &[&str]) -> Out {
    let mut a = vec!["client"];
    a.extend_from_slice(args);
    run_env(sanlock(), &a, &[("SANLOCK_RUN_DIR", run_dir)])
}

fn check(t: &mut Tally, what: &str, ours: &Out, theirs: &Out) {
    t.same(what, &ours.stdout, &theirs.stdout);
    assert_eq!(
        ours.code, theirs.code,
        "{what}: exit codes differ (sanlock {}, hactl {}; hactl stderr: {})",
        theirs.code, ours.code, ours.stderr
    );
}

/// The same command through both clients: same stdout, same exit code.
fn same(t: &mut Tally, d: &SanlockDaemon, args: &[&str]) -> Out {
    let theirs = d.client(args);
    let ours = hactl_client(d, args);
    check(t, &format!("client {args:?}"), &ours, &theirs);
    theirs
}

/// For outputs with live values: sanlock, hactl, sanlock until sanlock's
/// two outputs agree, then hactl's must be the same.
fn same_stable(t: &mut Tally, d: &SanlockDaemon, args: &[&str]) -> Out {
    for _ in 0..40 {
        let s1 = d.client(args);
        let ours = hactl_client(d, args);
        let s2 = d.client(args);
        if s1.stdout == s2.stdout && s1.code == s2.code {
            check(t, &format!("client {args:?} (stable)"), &ours, &s1);
            return s1;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!("client {args:?}: sanlock's own output never stayed still for three calls");
}

/// A lockspace file initialised by hactl with io_timeout 1 (so joining
/// takes ~3 s and renewals come every ~2 s).
fn lockspace_file(dir: &std::path::Path, file: &str, name: &str) -> String {
    let f = dir.join(file);
    make_file(&f, MIB, 0);
    let fs = p(&f).to_string();
    let o = run(
        hactl(),
        &[
            "direct",
            "init",
            "-s",
            &format!("{name}:0:{fs}:0"),
            "-o",
            "1",
        ],
    );
    assert_eq!(o.code, 0, "direct init: {}", o.stderr);
    fs
}

/// Waits until `gets -h 1` lists hosts for every lockspace (the daemon has
/// read the lockspace once after joining).
fn wait_hosts_ready(d: &SanlockDaemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = d.client(&["gets", "-h", "1"]);
        if o.code == 0 && !o.text().contains("hosts not ready") && o.text().contains("\nh ") {
            return;
        }
        assert!(Instant::now() < deadline, "hosts never ready: {}", o.text());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_exit(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if exited(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn without_a_daemon_and_usage_errors() {
    let mut t = Tally("client without daemon", 0);
    let dir = workdir();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let rd = p(&run_dir).to_string();
    let cases: &[&[&str]] = &[
        &["version"],
        &["status"],
        &["status", "-D"],
        &["gets"],
        &["gets", "-h", "1"],
        &["host_status"],
        &["host_status", "-s", "LS"],
        &["renewal", "-s", "LS"],
        &["renewal"],
        &["log_dump"],
        &["shutdown"],
        &["shutdown", "-f", "1", "-w", "1"],
        &["add_lockspace", "-s", "LS:1:/x:0"],
        &["add_lockspace", "-s", "LS:1:/x:0", "-o", "5"],
        &["inq_lockspace", "-s", "LS:1:/x:0"],
        &["rem_lockspace", "-s", "LS:1:/x:0"],
        &["set_config", "-s", "LS", "-u", "1"],
        &["set_event", "-s", "LS", "-i", "1", "-e", "0x10", "-d", "7"],
        &["read", "-s", "LS:1:/x:0"],
        &["read"],
        &["init", "-s", "LS:0:/x:0"],
        &["write", "-s", "LS:0:/x:0"],
        &["align", "-s", "LS:1:/x:0"],
        // Usage errors, printed before anything is sent.
        &["frobnicate"],
        &["frobnicate", "-Z4096"],
        &["gets", "-x"],
        &["status", "-Z4096"],
        &["status", "-q", "1"],
        &["init", "-s", "LS:0:/x:0", "-Z", "512", "-A", "8M"],
    ];
    for args in cases {
        let ours = hactl_in(&rd, args);
        let theirs = sanlock_in(&rd, args);
        check(&mut t, &format!("no daemon: {args:?}"), &ours, &theirs);
    }
    // A socket path that exists but does not listen: -ECONNREFUSED.
    let bogus = run_dir.join("sanlock.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&bogus).unwrap();
    drop(_listener);
    for args in [&["gets"][..], &["version"], &["align", "-s", "LS:1:/x:0"]] {
        let ours = hactl_in(&rd, args);
        let theirs = sanlock_in(&rd, args);
        check(&mut t, &format!("refused: {args:?}"), &ours, &theirs);
    }
}

#[test]
fn lockspace_actions_match_sanlock() {
    let mut t = Tally("client lockspace actions", 0);
    let dir = workdir();
    let f1 = lockspace_file(dir.path(), "ls1.img", "LS");
    let f2 = lockspace_file(dir.path(), "ls2.img", "LS2");
    let zero = dir.path().join("zero.img");
    make_file(&zero, MIB, 0);
    let zero = p(&zero).to_string();
    let d = SanlockDaemon::start(&dir.path().join("run"));

    let ls1 = format!("LS:1:{f1}:0");
    let ls2 = format!("LS2:1:{f2}:0");
    // Each client joins one lockspace: the same text, and both join.
    let theirs = d.client(&["add_lockspace", "-s", &ls1, "-o", "1"]);
    let ours = hactl_client(&d, &["add_lockspace", "-s", &ls2, "-o", "1"]);
    assert_eq!(
        theirs.text(),
        "add_lockspace_timeout 1\nadd_lockspace_timeout done 0\n"
    );
    check(&mut t, "add_lockspace -o 1", &ours, &theirs);

    same(&mut t, &d, &["gets"]);
    for s in [
        ls1.clone(),
        format!("LS:0:{f1}:0"),
        "LS".to_string(),
        format!("LS:1:{f2}:0"),
        format!("NOPE:1:{f1}:0"),
        ls2.clone(),
    ] {
        same(&mut t, &d, &["inq_lockspace", "-s", &s]);
    }
    // Joining again: -EEXIST; a clash of name or path: -EINVAL.
    same(&mut t, &d, &["add_lockspace", "-s", &ls1]);
    same(&mut t, &d, &["add_lockspace", "-s", &ls1, "-o", "1"]);
    same(
        &mut t,
        &d,
        &["add_lockspace", "-s", &format!("LS:2:{f2}:0")],
    );
    same(
        &mut t,
        &d,
        &["add_lockspace", "-s", &format!("LS3:1:{f1}:0"), "-o", "1"],
    );
    same(
        &mut t,
        &d,
        &["add_lockspace", "-s", &format!("LS3:0:{zero}:0")],
    );

    wait_hosts_ready(&d);
    for args in [
        &["gets", "-h", "1"][..],
        &["gets", "-h", "1", "-D"],
        &["status"],
        &["status", "-D"],
        &["status", "-o", "p"],
        &["status", "-o", "s", "-D"],
        &["host_status"],
        &["host_status", "-D"],
        &["host_status", "-s", "LS"],
        &["host_status", "-s", "LS", "-D"],
        &["host_status", "-s", &ls2, "-D"],
        &["host_status", "-s", "NOPE"],
        &["renewal", "-s", "LS"],
        &["renewal", "-s", "LS2"],
        &["renewal", "-s", "NOPE"],
        &["renewal"],
    ] {
        same_stable(&mut t, &d, args);
    }
    // The structured form carries the same values as the text.
    let j = hactl_client(&d, &["gets", "-h", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("gets --json");
    assert_eq!(v["lockspaces"].as_array().unwrap().len(), 2);
    assert_eq!(v["lockspaces"][0]["hosts"][0]["state"], "LIVE");
    let j = hactl_client(&d, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("status --json");
    let e = v["entries"].as_array().unwrap();
    assert_eq!(e[0]["type"], "daemon");
    assert!(e.iter().any(|x| x["type"] == "lockspace"
        && x["name"] == "LS"
        && x["fields"]["list"] == "spaces"
        && x["fields"]["io_timeout"] == 1));

    for args in [
        &["set_config", "-s", "LS", "-u", "1"][..],
        &["set_config", "-s", "LS", "-u", "0"],
        &["set_config", "-s", "LS", "-O", "1"],
        &["set_config", "-s", "LS", "-O", "0", "-u", "1"],
        &["set_config", "-s", "LS", "-u", "0"],
        &["set_config", "-s", "LS"],
        &["set_config", "-s", "NOPE", "-u", "1"],
        &["set_config"],
        &["set_event", "-s", "LS", "-i", "2", "-e", "1", "-d", "0x22"],
        &["set_event", "-s", "LS", "-i", "2", "-e", "3"],
        &["set_event", "-s", "LS", "-i", "0", "-e", "1"],
        &["set_event", "-s", "LS", "-i", "2001", "-e", "1"],
        &["set_event", "-s", "NOPE", "-i", "1", "-e", "1"],
        &["read", "-s", &ls1],
        &["read", "-s", &ls1, "-D"],
        &["read", "-s", &format!(":7:{f1}:0"), "-D"],
        &["read", "-s", &format!("LS2:1:{f1}:0")],
        &[
            "read",
            "-s",
            &format!("LS:1:{f1}:0"),
            "-Z",
            "512",
            "-A",
            "1M",
            "-D",
        ],
        &["read", "-s", &format!("LS:1:{zero}:0")],
        &["read", "-s", "LS:1:/nonexistent/file:0"],
        &["align", "-s", &ls1],
        &["align", "-s", "LS:1:/nonexistent/file:0"],
        &["align"],
    ] {
        same(&mut t, &d, args);
    }

    // log_dump: the first line (the ring buffer grows) and the exit code.
    let ours = hactl_client(&d, &["log_dump"]);
    let theirs = d.client(&["log_dump"]);
    let first = |o: &Out| {
        o.stdout
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or(&[])
            .to_vec()
    };
    t.same("log_dump first line", &first(&ours), &first(&theirs));
    assert!(!first(&theirs).is_empty());
    assert_eq!((ours.code, theirs.code), (1, 1));

    // Each client leaves the lockspace the other joined.
    let ours = hactl_client(&d, &["rem_lockspace", "-s", &ls1]);
    let theirs = d.client(&["rem_lockspace", "-s", &ls2]);
    assert_eq!(theirs.text(), "rem_lockspace\nrem_lockspace done 0\n");
    check(&mut t, "rem_lockspace", &ours, &theirs);
    same(&mut t, &d, &["rem_lockspace", "-s", &ls1]);
    same(&mut t, &d, &["inq_lockspace", "-s", &ls1]);
    same(&mut t, &d, &["gets"]);
    same(&mut t, &d, &["gets", "-h", "1"]);
    same_stable(&mut t, &d, &["status"]);
    same(&mut t, &d, &["host_status"]);
}

#[test]
fn lockspace_being_added_shows_add() {
    let mut t = Tally("client while adding", 0);
    let dir = workdir();
    let f = lockspace_file(dir.path(), "ls.img", "LS");
    let d = SanlockDaemon::start(&dir.path().join("run"));
    let ls = format!("LS:1:{f}:0");
    // The add takes ~3 s (io_timeout 1): compare while it is under way.
    let mut adder = Command::new(sanlock())
        .args(["client", "add_lockspace", "-s", &ls, "-o", "1"])
        .envs(d.env())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.client(&["gets"]).text().contains("ADD") {
        assert!(Instant::now() < deadline, "the add never showed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let g = same_stable(&mut t, &d, &["gets"]);
    assert!(g.text().ends_with(" ADD \n"), "{}", g.text());
    same_stable(&mut t, &d, &["status"]);
    same_stable(&mut t, &d, &["status", "-o", "s"]);
    same_stable(&mut t, &d, &["inq_lockspace", "-s", &ls]);
    same_stable(&mut t, &d, &["host_status", "-s", "LS", "-D"]);
    assert!(adder.wait().unwrap().success());
    same(&mut t, &d, &["gets"]);
}

const HOLDER: &str = r#"
import sanlock, sys
path = sys.argv[1]
fd = sanlock.register()
sanlock.acquire(b"LS", b"R1", [(path, 1048576)], slkfd=fd)
sanlock.acquire(b"LS", b"R2", [(path, 2097152)], slkfd=fd, shared=True)
print("held", flush=True)
sys.stdin.read()
"#;

#[test]
fn status_with_held_resources_matches() {
    let mut t = Tally("client status with resources", 0);
    let dir = workdir();
    let f = dir.path().join("leases.img");
    make_file(&f, 4 * MIB, 0);
    let fs = p(&f).to_string();
    for args in [
        vec!["direct", "init", "-s", &format!("LS:0:{fs}:0"), "-o", "1"],
        vec!["direct", "init", "-r", &format!("LS:R1:{fs}:1M")],
        vec!["direct", "init", "-r", &format!("LS:R2:{fs}:2M")],
    ] {
        let o = run(hactl(), &args);
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
    }
    let d = SanlockDaemon::start(&dir.path().join("run"));
    let add = d.client(&["add_lockspace", "-s", &format!("LS:1:{fs}:0"), "-o", "1"]);
    assert_eq!(add.code, 0, "{}", add.text());
    let mut holder = Command::new(python3())
        .args(["-c", HOLDER, &fs])
        .envs(d.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    for args in [
        &["status"][..],
        &["status", "-D"],
        &["status", "-o", "p"],
        &["status", "-o", "p", "-D"],
        &["status", "-o", "s"],
        &["status", "-o", "s", "-D"],
        &["status", "-o", "x"],
    ] {
        let o = same_stable(&mut t, &d, args);
        if args.len() == 1 {
            let text = o.text();
            assert!(text.contains(&format!(":SH p {}", holder.id())), "{text}");
            assert!(text.contains("r LS:R1:"), "{text}");
        }
    }
    let j = hactl_client(&d, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    let res: Vec<_> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "resource")
        .collect();
    assert_eq!(res.len(), 2);
    assert!(res.iter().all(|r| r["pid"] == holder.id() as i64));
    assert!(res.iter().any(|r| r["name"] == "R2" && r["shared"] == true));
    drop(holder.stdin.take());
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn init_writes_the_same_bytes() {
    let mut t = Tally("client init", 0);
    let dir = workdir();
    let d = SanlockDaemon::start(&dir.path().join("run"));
    let a = dir.path().join("sanlock.img");
    let b = dir.path().join("hactl.img");
    const GUARD: u8 = 0xA5;
    let cases: &[&[&str]] = &[
        &[],
        &["-o", "3"],
        &["-m", "100"],
        &["-Z", "512", "-A", "1M"],
        &["-Z", "4096", "-A", "1M"],
        &["-Z", "4096", "-A", "2M"],
        &["-Z", "4096", "-A", "4M", "-o", "1"],
        &["-Z", "4096", "-A", "8M"],
        &["-Z", "4096"],
        &["-Z", "512"],
    ];
    for (i, extra) in cases.iter().enumerate() {
        let off = MIB;
        let size = off + 8 * MIB + MIB;
        make_file(&a, size, GUARD);
        make_file(&b, size, GUARD);
        let action = if i % 2 == 0 { "init" } else { "write" };
        let mut sa = vec![action, "-s"];
        let la = format!("LS{i}:0:{}:{off}", p(&a));
        sa.push(&la);
        sa.extend_from_slice(extra);
        let mut ha = vec![action, "-s"];
        let lb = format!("LS{i}:0:{}:{off}", p(&b));
        ha.push(&lb);
        ha.extend_from_slice(extra);
        let theirs = d.client(&sa);
        let ours = hactl_client(&d, &ha);
        check(&mut t, &format!("{action} {extra:?}"), &ours, &theirs);
        let (ab, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        t.same(&format!("{action} {extra:?} bytes"), &bb, &ab);
        if theirs.code == 0 {
            // What was written reads back the same through both clients.
            for f in [&a, &b] {
                same(
                    &mut t,
                    &d,
                    &["read", "-s", &format!("LS{i}:1:{}:{off}", p(f)), "-D"],
                );
            }
        }
    }
    for args in [
        &["init", "-s", "LS:0:/nonexistent/file:0"][..],
        &["init"],
        &["init", "-s", "LS"],
    ] {
        same(&mut t, &d, args);
    }
}

#[test]
fn shutdown_matches() {
    let mut t = Tally("client shutdown", 0);
    let dir = workdir();
    let f = lockspace_file(dir.path(), "ls.img", "LS");
    let ls = format!("LS:1:{f}:0");
    let d = SanlockDaemon::start(&dir.path().join("run-a"));
    let add = d.client(&["add_lockspace", "-s", &ls, "-o", "1"]);
    assert_eq!(add.code, 0);
    // With a lockspace: a plain shutdown is ignored, shutdown -w 1 is -EBUSY.
    same(&mut t, &d, &["shutdown"]);
    same(&mut t, &d, &["shutdown", "-w", "1"]);
    same(&mut t, &d, &["shutdown", "-f", "0", "-w", "1"]);
    assert!(!exited(d.pid()));
    assert_eq!(d.client(&["rem_lockspace", "-s", &ls]).code, 0);

    // Idle daemons: each client shuts one down and waits for it.
    let ours = hactl_client(&d, &["shutdown", "-w", "1"]);
    assert!(
        wait_exit(d.pid()),
        "hactl's shutdown -w 1 did not stop sanlock"
    );
    let d2 = SanlockDaemon::start(&dir.path().join("run-b"));
    let theirs = d2.client(&["shutdown", "-w", "1"]);
    assert!(wait_exit(d2.pid()));
    check(&mut t, "shutdown -w 1", &ours, &theirs);

    let d3 = SanlockDaemon::start(&dir.path().join("run-c"));
    let ours = hactl_client(&d3, &["shutdown", "-f", "1"]);
    assert!(
        wait_exit(d3.pid()),
        "hactl's shutdown -f 1 did not stop sanlock"
    );
    let d4 = SanlockDaemon::start(&dir.path().join("run-d"));
    let theirs = d4.client(&["shutdown", "-f", "1"]);
    assert!(wait_exit(d4.pid()));
    check(&mut t, "shutdown -f 1", &ours, &theirs);
}

#[test]
fn version_matches() {
    let mut t = Tally("client version", 0);
    let dir = workdir();
    let d = SanlockDaemon::start(&dir.path().join("run"));
    let o = same(&mut t, &d, &["version"]);
    assert!(o.text().contains("daemon version 3.8.5 (0x03080500)"));
    let j = hactl_client(&d, &["version", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["daemon_version"], "3.8.5");
    assert_eq!(v["daemon_socket_protocol"], "0.1");
}
