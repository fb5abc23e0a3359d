//! Shared leases across implementations: a real sanlock host and an hactl
//! host hold one lease SHARED at once; an exclusive request from either is
//! refused (-EAGAIN) while the other still holds it shared; converting
//! SH→EX waits for the other holder to go, EX→SH lets it back in; lver
//! grows with every Paxos acquisition; `read_resource_owners` names the
//! right hosts and generations through either daemon.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::*;

/// A registered python3-sanlock process taking orders on stdin.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const HOLDER: &str = r#"
import sanlock, sys, os
path = sys.argv[1]
fd = sanlock.register()
print(os.getpid(), flush=True)
for line in sys.stdin:
    op, name, off = line.split()[:3]
    shared = line.split()[3:] == ["sh"]
    d = [(path, int(off))]
    try:
        if op == "acq":
            sanlock.acquire(b"LS", name.encode(), d, slkfd=fd, shared=shared)
            print("ok", flush=True)
        elif op == "rel":
            sanlock.release(b"LS", name.encode(), d, slkfd=fd)
            print("ok", flush=True)
        elif op == "own":
            print(" ".join("%d/%d" % (h["host_id"], h["generation"])
                           for h in sanlock.read_resource_owners(b"LS", name.encode(), d)) or "-", flush=True)
    except sanlock.SanlockException as e:
        print("err %d" % e.errno, flush=True)
"#;

impl Holder {
    fn start(run_dir: &std::path::Path, f: &std::path::Path) -> (Holder, i32) {
        let mut child = Command::new(python3())
            .args(["-c", HOLDER, p(f)])
            .env("SANLOCK_RUN_DIR", run_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut pid = String::new();
        stdout.read_line(&mut pid).unwrap();
        let pid = pid.trim().parse().expect("holder pid");
        (
            Holder {
                child,
                stdin,
                stdout,
            },
            pid,
        )
    }

    fn ask(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        let mut out = String::new();
        self.stdout.read_line(&mut out).unwrap();
        out.trim().to_string()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sanlock client convert` (the real client) against a daemon.
fn convert(run_dir: &std::path::Path, f: &std::path::Path, pid: i32, sh: bool) -> String {
    let r = format!("LS:R:{}:1048576{}", p(f), if sh { ":SH" } else { "" });
    let o = run_env(
        sanlock(),
        &["client", "convert", "-r", &r, "-p", &pid.to_string()],
        &[("SANLOCK_RUN_DIR", p(run_dir))],
    );
    o.text()
        .lines()
        .find_map(|l| l.strip_prefix("convert done "))
        .unwrap_or("?")
        .to_string()
}

#[test]
fn shared_holders_across_implementations() {
    let mut t = Tally("shared leases across implementations", 0);
    let dir = workdir();
    let f = dir.path().join("lease");
    make_file(&f, 2 << 20, 0);
    let fs = p(&f);
    for args in [
        vec!["direct", "init", "-s", &format!("LS:0:{fs}:0"), "-o", "1"],
        vec!["direct", "init", "-r", &format!("LS:R:{fs}:1M")],
    ] {
        assert_eq!(run(hactl(), &args).code, 0);
    }
    let sd = SanlockDaemon::start(&dir.path().join("s"));
    let hd = HactlDaemon::start(&dir.path().join("h"));
    std::thread::scope(|s| {
        s.spawn(|| add_lockspace(&sd.run_dir, 1, &f));
        s.spawn(|| add_lockspace(&hd.run_dir, 2, &f));
    });
    // Each host must have seen the other renew, so a shared holder is
    // judged by its renewals, not by "no knowledge yet".
    std::thread::sleep(Duration::from_secs(4));
    let (mut s1, _) = Holder::start(&sd.run_dir, &f);
    let (mut h1, h1_pid) = Holder::start(&hd.run_dir, &f);
    let (mut s2, _) = Holder::start(&sd.run_dir, &f);

    // Both hosts hold it shared at once; each acquisition is a Paxos round.
    assert_eq!(s1.ask("acq R 1048576 sh"), "ok");
    let l0 = lease_lver(&f, "R", 1 << 20);
    assert_eq!(
        h1.ask("acq R 1048576 sh"),
        "ok",
        "hactl refused a shared lease sanlock holds shared"
    );
    assert_eq!(
        lease_lver(&f, "R", 1 << 20),
        l0 + 1,
        "a shared acquire is a Paxos acquisition"
    );
    let want = "1/1 2/1";
    t.same(
        "owners via sanlock",
        s1.ask("own R 1048576").as_bytes(),
        want.as_bytes(),
    );
    t.same(
        "owners via hactl",
        h1.ask("own R 1048576").as_bytes(),
        want.as_bytes(),
    );

    // Exclusive requests: on a host that holds it shared, -EEXIST locally
    // (sanlock's rule, the same in both); a second local shared holder joins.
    t.same(
        "sanlock EX while its host holds SH",
        s2.ask("acq R 1048576").as_bytes(),
        b"err 17",
    );
    let (mut h2, _) = Holder::start(&hd.run_dir, &f);
    t.same(
        "hactl EX while its host holds SH",
        h2.ask("acq R 1048576").as_bytes(),
        b"err 17",
    );
    assert_eq!(h2.ask("acq R 1048576 sh"), "ok");
    assert_eq!(h2.ask("rel R 1048576"), "ok");

    // Only hactl's host holds it shared now: sanlock's exclusive request
    // must fail with -EAGAIN, without taking it.
    assert_eq!(s1.ask("rel R 1048576"), "ok");
    let before = lease_lver(&f, "R", 1 << 20);
    t.same(
        "sanlock EX vs hactl SH",
        s2.ask("acq R 1048576").as_bytes(),
        b"err 11",
    );
    assert!(
        lease_lver(&f, "R", 1 << 20) > before,
        "sanlock ran its ballot"
    );
    t.same(
        "owners after the refused EX",
        h1.ask("own R 1048576").as_bytes(),
        b"2/1",
    );
    // hactl's holder converts SH->EX: it is the only shared holder left.
    t.same(
        "convert SH->EX alone",
        convert(&hd.run_dir, &f, h1_pid, false).as_bytes(),
        b"0",
    );
    let lex = lease_lver(&f, "R", 1 << 20);
    t.same(
        "owners after convert",
        s2.ask("own R 1048576").as_bytes(),
        b"2/1",
    );
    // sanlock's shared request is refused while hactl holds it EX.
    let r = s1.ask("acq R 1048576 sh");
    t.same("sanlock SH vs hactl EX", r.as_bytes(), b"err -243");
    assert_eq!(
        lease_lver(&f, "R", 1 << 20),
        lex,
        "a refused shared acquire changed the lease"
    );
    // EX -> SH: sanlock may join again.
    t.same(
        "convert EX->SH",
        convert(&hd.run_dir, &f, h1_pid, true).as_bytes(),
        b"0",
    );
    assert_eq!(s1.ask("acq R 1048576 sh"), "ok");
    // hactl's SH->EX now meets sanlock's live shared hold: -EAGAIN, still SH.
    t.same(
        "convert SH->EX vs sanlock SH",
        convert(&hd.run_dir, &f, h1_pid, false).as_bytes(),
        b"-11",
    );
    t.same(
        "owners, both shared again",
        s1.ask("own R 1048576").as_bytes(),
        b"1/1 2/1",
    );

    // Roles reversed: hactl's exclusive request vs sanlock's shared hold.
    assert_eq!(h1.ask("rel R 1048576"), "ok");
    t.same(
        "hactl EX vs sanlock SH",
        h1.ask("acq R 1048576").as_bytes(),
        b"err 11",
    );
    t.same(
        "owners: only sanlock",
        h1.ask("own R 1048576").as_bytes(),
        b"1/1",
    );
    assert_eq!(s1.ask("rel R 1048576"), "ok");
    assert_eq!(
        h1.ask("acq R 1048576"),
        "ok",
        "hactl could not take the free lease"
    );
    t.same(
        "sanlock EX vs hactl EX",
        s1.ask("acq R 1048576").as_bytes(),
        b"err -243",
    );
}
