//! python3-sanlock's lockspace calls return the same values and raise the
//! same errors against `hactl daemon` as against the real daemon; and
//! malformed socket input costs its sender the connection, nobody else.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;

const SCRIPT: &str = r#"
import sanlock, sys, json, time, errno
path, missing = sys.argv[1], sys.argv[2]
out = []
def norm(r):
    if isinstance(r, list):
        return [norm(x) for x in r]
    if isinstance(r, dict):
        return {k: norm(v) for k, v in sorted(r.items()) if k != "timestamp"}
    if isinstance(r, bytes):
        return r.decode()
    return r
def rec(name, f):
    try:
        out.append([name, "ok", norm(f())])
    except sanlock.SanlockException as e:
        out.append([name, "err", e.errno])
rec("write_lockspace", lambda: sanlock.write_lockspace(b"PY", path, iotimeout=1))
rec("write_lockspace missing", lambda: sanlock.write_lockspace(b"PY", missing))
rec("read_lockspace", lambda: sanlock.read_lockspace(path))
rec("get_alignment", lambda: sanlock.get_alignment(path))
rec("add_lockspace", lambda: sanlock.add_lockspace(b"PY", 1, path, iotimeout=1))
rec("inq_lockspace", lambda: sanlock.inq_lockspace(b"PY", 1, path))
rec("add_lockspace again", lambda: sanlock.add_lockspace(b"PY", 1, path, iotimeout=1))
rec("add other host_id", lambda: sanlock.add_lockspace(b"PY", 2, path, iotimeout=1))
rec("add bad host_id", lambda: sanlock.add_lockspace(b"PY2", 0, path, iotimeout=1))
rec("get_lockspaces", lambda: sanlock.get_lockspaces())
for _ in range(50):
    try:
        sanlock.get_hosts(b"PY")
        break
    except sanlock.SanlockException as e:
        if e.errno != errno.EAGAIN:
            break
        time.sleep(0.2)
rec("get_hosts", lambda: sanlock.get_hosts(b"PY"))
rec("get_hosts host 1", lambda: sanlock.get_hosts(b"PY", 1))
rec("get_hosts unknown", lambda: sanlock.get_hosts(b"NOPE"))
rec("set_event", lambda: sanlock.set_event(b"PY", 1, 0, 7, flags=sanlock.SETEV_CUR_GENERATION))
rec("set_event busy", lambda: sanlock.set_event(b"PY", 1, 0, 8, flags=sanlock.SETEV_CUR_GENERATION))
rec("rem_lockspace", lambda: sanlock.rem_lockspace(b"PY", 1, path))
rec("inq after rem", lambda: sanlock.inq_lockspace(b"PY", 1, path))
rec("rem again", lambda: sanlock.rem_lockspace(b"PY", 1, path))
rec("add async", lambda: sanlock.add_lockspace(b"PY", 1, path, iotimeout=1, wait=False))
rec("inq while adding", lambda: sanlock.inq_lockspace(b"PY", 1, path))
rec("inq wait", lambda: sanlock.inq_lockspace(b"PY", 1, path, wait=True))
rec("rem async", lambda: sanlock.rem_lockspace(b"PY", 1, path, wait=False))
time.sleep(1.5)
rec("get_lockspaces after", lambda: sanlock.get_lockspaces())
print(json.dumps(out))
"#;

fn python_run(
    run_dir: &std::path::Path,
    file: &std::path::Path,
    missing: &str,
) -> serde_json::Value {
    let o = run_env(
        python3(),
        &["-c", SCRIPT, p(file), missing],
        &[("SANLOCK_RUN_DIR", p(run_dir))],
    );
    assert_eq!(o.code, 0, "python3-sanlock script failed: {}", o.stderr);
    serde_json::from_slice(&o.stdout).expect("json from the script")
}

#[test]
fn python3_sanlock_lockspace_calls_match() {
    let mut t = Tally("python3-sanlock lockspace", 0);
    let dir = workdir();
    let (fa, fb) = (dir.path().join("a.ids"), dir.path().join("b.ids"));
    make_file(&fa, 1 << 20, 0);
    make_file(&fb, 1 << 20, 0);
    let sd = SanlockDaemon::start(&dir.path().join("s"));
    let hd = HactlDaemon::start(&dir.path().join("h"));
    let missing = dir.path().join("missing/ids");
    let theirs = python_run(&sd.run_dir, &fa, p(&missing));
    let ours = python_run(&hd.run_dir, &fb, p(&missing));
    let (ta, oa) = (theirs.as_array().unwrap(), ours.as_array().unwrap());
    assert_eq!(ta.len(), oa.len());
    for (t_row, o_row) in ta.iter().zip(oa) {
        // Paths differ by file name only.
        let norm =
            |v: &serde_json::Value| v.to_string().replace(p(&fa), "IDS").replace(p(&fb), "IDS");
        t.same(
            &t_row[0].to_string(),
            norm(o_row).as_bytes(),
            norm(t_row).as_bytes(),
        );
    }
    // write_lockspace wrote the same bytes through each daemon (host 1's
    // sector then carries each daemon's own host name, so it is left out).
    t.same(
        "write_lockspace bytes",
        &std::fs::read(&fb).unwrap()[512..],
        &std::fs::read(&fa).unwrap()[512..],
    );
}

fn send(run_dir: &std::path::Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(run_dir.join("sanlock.sock")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    reply
}

fn header(cmd: u32, length: u32) -> Vec<u8> {
    let mut h = Vec::new();
    for v in [0x0428_2010u32, 1, cmd, 0, length, 0, 0, 0] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

#[test]
fn malformed_messages_cost_only_their_connection() {
    let dir = workdir();
    let ids = dir.path().join("ids");
    make_file(&ids, 1 << 20, 0);
    assert_eq!(
        run(
            hactl(),
            &[
                "direct",
                "init",
                "-s",
                &format!("LS:0:{}:0", p(&ids)),
                "-o",
                "1"
            ]
        )
        .code,
        0
    );
    let mut hd = HactlDaemon::start(&dir.path().join("h"));
    let run_dir = hd.run_dir.clone();
    let env = [("SANLOCK_RUN_DIR", p(&run_dir))];
    let add = run_env(
        sanlock(),
        &[
            "client",
            "add_lockspace",
            "-s",
            &format!("LS:1:{}:0", p(&ids)),
            "-o",
            "1",
        ],
        &env,
    );
    assert_eq!(add.code, 0, "{}", add.text());

    // A client that sends half a payload and stalls holds only its own thread.
    let mut staller = UnixStream::connect(run_dir.join("sanlock.sock")).unwrap();
    staller.write_all(&header(2, 32 + 1104)).unwrap();
    staller.write_all(&[0u8; 100]).unwrap();

    let mut wrong_magic = header(5, 32);
    wrong_magic[0] = 0xEE;
    let mut name_no_nul = header(16, 32 + 1104); // inq_lockspace
    let mut ls = vec![b'x'; 48];
    ls.extend_from_slice(&1u64.to_le_bytes());
    ls.extend_from_slice(&[0u8; 8]);
    ls.extend_from_slice(&[b'/'; 1024]); // a path with no NUL at all
    ls.extend_from_slice(&[0u8; 16]);
    name_no_nul.extend_from_slice(&ls);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short header", header(5, 32)[..10].to_vec()),
        ("wrong magic", wrong_magic),
        ("unknown command", header(999, 32)),
        ("huge length", header(7, u32::MAX)),
        ("length that lies", {
            let mut h = header(16, 32);
            h.extend_from_slice(&[1u8; 40]);
            h
        }),
        ("name and path without NUL", name_no_nul),
        ("garbage", (0..4096).map(|i| (i * 37 % 251) as u8).collect()),
    ];
    for (what, bytes) in cases {
        let reply = send(&run_dir, &bytes);
        if reply.len() >= 32 {
            let data = i32::from_le_bytes(reply[24..28].try_into().unwrap());
            assert!(data < 0, "{what}: a reply that is not an error ({data})");
        }
        // The daemon still serves everyone else, with correct answers.
        let gets = run_env(sanlock(), &["client", "gets"], &env);
        assert_eq!(gets.code, 0, "{what}: daemon stopped answering");
        assert!(
            gets.text().contains(&format!("s LS:1:{}:0", p(&ids))),
            "{what}: {}",
            gets.text()
        );
        assert!(hd.alive(), "{what} killed the daemon");
    }
    let inq = run_env(
        sanlock(),
        &[
            "client",
            "inq_lockspace",
            "-s",
            &format!("LS:1:{}:0", p(&ids)),
        ],
        &env,
    );
    assert!(
        inq.text().contains("inq_lockspace done 0"),
        "{}",
        inq.text()
    );
    drop(staller);
}

#[test]
fn without_a_watchdog_a_host_id_is_refused_under_w1() {
    let dir = workdir();
    let ids = dir.path().join("ids");
    make_file(&ids, 1 << 20, 0);
    assert_eq!(
        run(
            hactl(),
            &[
                "direct",
                "init",
                "-s",
                &format!("LS:0:{}:0", p(&ids)),
                "-o",
                "1"
            ]
        )
        .code,
        0
    );
    // -w 1 is sanlock's default: holding a host_id needs a watchdog.
    let hd = HactlDaemon::start_with(&dir.path().join("h"), &["-w", "1"]);
    let add = run_env(
        sanlock(),
        &[
            "client",
            "add_lockspace",
            "-s",
            &format!("LS:1:{}:0", p(&ids)),
            "-o",
            "1",
        ],
        &hd.env(),
    );
    assert!(
        add.text().contains("add_lockspace_timeout done -203"),
        "{}",
        add.text()
    );
    let gets = run_env(sanlock(), &["client", "gets"], &hd.env());
    assert!(
        !gets.text().contains("s LS:"),
        "a refused lockspace is still listed: {}",
        gets.text()
    );
    // Nothing was written: host 1 never joined.
    let dump = run(hactl(), &["direct", "dump", p(&ids)]).text();
    assert_eq!(dump.lines().count(), 1, "{dump}");
}

#[test]
fn one_daemon_per_run_dir() {
    let dir = workdir();
    let mut first = HactlDaemon::start(&dir.path().join("run"));
    let second = std::process::Command::new(hactl())
        .args(["daemon", "-D", "-w", "0", "-U", "root", "-G", "root"])
        .env("SANLOCK_RUN_DIR", &first.run_dir)
        .env("SANLOCK_PRIVILEGED", "0")
        .env("HACTL_SANLOCK_CONF", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another daemon is running"), "{err}");
    // The first daemon still owns its socket and answers.
    assert!(first.alive());
    let pidfile = std::fs::read_to_string(first.run_dir.join("sanlock.pid")).unwrap();
    assert_eq!(pidfile.trim(), first.pid().to_string());
    let v = run_env(sanlock(), &["client", "version"], &first.env());
    assert!(v.text().contains("daemon version 3.8.5"), "{}", v.text());
}
