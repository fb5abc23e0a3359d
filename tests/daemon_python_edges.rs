//! Edges that sanlock's own upstream tests (tests/python_test.py) check,
//! through python3-sanlock against both daemons: get_hosts answers
//! -EAGAIN between add_lockspace and the daemon's first check of the
//! other hosts, then the host LIVE (flags 3); on a 4K-sector device, read_lockspace
//! with a 512-byte sector fails with the I/O's -EINVAL; write_resource of
//! a lease that starts inside the device and runs past its end fails with
//! -EMSGSIZE, one that starts at or past the end with -ENOSPC. hactl
//! refuses those writes before touching the device; the device must be
//! unchanged.

mod common;

use std::path::Path;

use common::*;

const MIB: u64 = 1 << 20;
const DEV_SIZE: u64 = 64 * MIB;

const SCRIPT: &str = r#"
import sanlock, sys, time, errno
ids, dev, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rec(name, f):
    try:
        r = f()
        if isinstance(r, list):
            r = [{k: v for k, v in sorted(h.items()) if k != "timestamp"} for h in r]
        print(name, "ok", r)
    except sanlock.SanlockException as e:
        print(name, "err", e.errno)
LS = b"LS"
rec("write_lockspace", lambda: sanlock.write_lockspace(LS, ids, iotimeout=1))
rec("add_lockspace", lambda: sanlock.add_lockspace(LS, 1, ids, iotimeout=1))
rec("get_hosts at once", lambda: sanlock.get_hosts(LS, 1))
hosts = None
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        hosts = sanlock.get_hosts(LS, 1)
        break
    except sanlock.SanlockException as e:
        if e.errno != errno.EAGAIN:
            raise
        time.sleep(0.1)
print("get_hosts later", [(h["host_id"], h["generation"], h["flags"]) for h in hosts or []])
rec("write_lockspace 4K", lambda: sanlock.write_lockspace(LS, dev, iotimeout=1, sector=4096))
rec("read_lockspace 512 on 4K", lambda: sanlock.read_lockspace(dev, sector=512))
rec("read_lockspace 4K", lambda: sanlock.read_lockspace(dev, sector=4096))
rec("read_lockspace sizes from disk", lambda: sanlock.read_lockspace(dev))
for what, off in [("inside", size - 2 * 1048576), ("runs past the end", size - 4096),
                  ("at the end", size), ("past the end", size + 8 * 1048576)]:
    rec("write_resource " + what, lambda: sanlock.write_resource(LS, b"R", [(dev, off)], sector=4096))
"#;

/// The script's lines against the daemon in `rd`, with `ids` a lockspace
/// file and `dev` a fresh 4K loop device.
fn lines(rd: &Path, ids: &Path, dev: &str) -> String {
    let o = run_env(
        python3(),
        &["-c", SCRIPT, p(ids), dev, &DEV_SIZE.to_string()],
        &[("SANLOCK_RUN_DIR", p(rd))],
    );
    assert_eq!(o.code, 0, "{}{}", o.text(), o.stderr);
    o.text()
}

#[test]
fn upstream_edges_match_sanlock() {
    let mut t = Tally("python edges (get_hosts, 4K errors)", 0);
    let dir = workdir();
    let mut outs = Vec::new();
    for who in ["sanlock", "hactl"] {
        let d = dir.path().join(who);
        std::fs::create_dir_all(&d).unwrap();
        let ids = d.join("ids");
        make_file(&ids, MIB as usize, 0);
        let img = d.join("dev.img");
        make_file(&img, DEV_SIZE as usize, 0x5a);
        let lb = LoopDev::new(&img, 4096);
        let rd = d.join("run");
        let text = if who == "sanlock" {
            let _sd = SanlockDaemon::start(&rd);
            lines(&rd, &ids, &lb.dev)
        } else {
            let _hd = HactlDaemon::start(&rd);
            let text = lines(&rd, &ids, &lb.dev);
            // Refused writes left the end of the device as it was.
            drop(lb);
            let bytes = std::fs::read(&img).unwrap();
            assert!(
                bytes[(DEV_SIZE - MIB) as usize..]
                    .iter()
                    .all(|&b| b == 0x5a),
                "a refused write changed the last MiB of the device"
            );
            text
        };
        outs.push(text);
    }
    let (theirs, ours) = (&outs[0], &outs[1]);
    for want in [
        "get_hosts at once err 11",
        "get_hosts later [(1, 1, 3)]",
        "read_lockspace 512 on 4K err 22",
        "write_resource runs past the end err 90",
        "write_resource at the end err 28",
    ] {
        assert!(theirs.contains(want), "sanlock: no {want:?} in\n{theirs}");
    }
    for (a, b) in theirs.lines().zip(ours.lines()) {
        t.same(a, b.as_bytes(), a.as_bytes());
    }
    assert_eq!(theirs.lines().count(), ours.lines().count());
}

/// One process holding three leases, acquired R1, R2, R3: `client status`
/// lists them newest first in both daemons (sanlock keeps its lists with
/// the newest at the head), and the same after R2 is released and taken
/// again.
#[test]
fn status_lists_a_process_leases_newest_first() {
    let mut t = Tally("status lease order", 0);
    let script = r#"
import sanlock, sys
ls, res = sys.argv[1], sys.argv[2]
fd = sanlock.register()
for i, name in enumerate([b"R1", b"R2", b"R3"]):
    sanlock.acquire(b"LS", name, [(res, (i + 1) * 1048576)], slkfd=fd)
print("held", flush=True)
sys.stdin.readline()
sanlock.release(b"LS", b"R2", [(res, 2 * 1048576)], slkfd=fd)
sanlock.acquire(b"LS", b"R2", [(res, 2 * 1048576)], slkfd=fd)
print("again", flush=True)
sys.stdin.read()
"#;
    let dir = workdir();
    let mut orders = Vec::new();
    for who in ["sanlock", "hactl"] {
        let d = dir.path().join(who);
        std::fs::create_dir_all(&d).unwrap();
        let (ls, res) = (d.join("ls"), d.join("res"));
        make_file(&ls, MIB as usize, 0);
        make_file(&res, 4 * MIB as usize, 0);
        assert_eq!(
            run(
                hactl(),
                &[
                    "direct",
                    "init",
                    "-s",
                    &format!("LS:0:{}:0", p(&ls)),
                    "-o",
                    "1"
                ]
            )
            .code,
            0
        );
        for (i, n) in ["R1", "R2", "R3"].iter().enumerate() {
            let r = format!("LS:{n}:{}:{}", p(&res), (i + 1) as u64 * MIB);
            assert_eq!(run(hactl(), &["direct", "init", "-r", &r]).code, 0);
        }
        let rd = d.join("run");
        let _daemon: Box<dyn std::any::Any> = if who == "sanlock" {
            Box::new(SanlockDaemon::start(&rd))
        } else {
            Box::new(HactlDaemon::start(&rd))
        };
        add_lockspace(&rd, 1, &ls);
        let mut c = std::process::Command::new(python3())
            .args(["-c", script, p(&ls), p(&res)])
            .env("SANLOCK_RUN_DIR", &rd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
        let names = || {
            run_env(
                sanlock(),
                &["client", "status"],
                &[("SANLOCK_RUN_DIR", p(&rd))],
            )
            .text()
            .lines()
            .filter(|l| l.starts_with("r LS:"))
            .map(|l| l.split(':').nth(1).unwrap().to_string())
            .collect::<Vec<_>>()
            .join(" ")
        };
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "held", "{who}");
        let first = names();
        use std::io::Write;
        writeln!(c.stdin.as_mut().unwrap()).unwrap();
        line.clear();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "again", "{who}");
        let second = names();
        let _ = c.kill();
        let _ = c.wait();
        orders.push(format!("{first} / {second}"));
    }
    assert_eq!(orders[0], "R3 R2 R1 / R2 R3 R1", "sanlock's order");
    t.same("r lines order", orders[1].as_bytes(), orders[0].as_bytes());
}
