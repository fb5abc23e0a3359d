//! Requests across implementations, and acquires whose client goes away.
//!
//! A forced request (`request -f 1` for lver + 1) written through one
//! host's daemon makes the other host's daemon kill the lease's holder
//! with SIGKILL; the lease is then free for the requester. Shown both
//! ways between the real sanlock and hactl. And a client that closes its
//! connection in the middle of an acquire (half a payload, or before
//! reading the reply) leaves nothing held and the daemon serving.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use hactl::ondisk::Name;
use hactl::proto::{self, Header, SanlkDisk, SanlkOptions, SanlkPath, SanlkResource, WireStruct};

fn setup(dir: &std::path::Path) -> std::path::PathBuf {
    let f = dir.join("lease");
    make_file(&f, 2 << 20, 0);
    let fs = p(&f);
    for args in [
        vec!["direct", "init", "-s", &format!("LS:0:{fs}:0"), "-o", "1"],
        vec!["direct", "init", "-r", &format!("LS:R:{fs}:1M")],
    ] {
        assert_eq!(run(hactl(), &args).code, 0);
    }
    f
}

/// Waits until `c` exits; how long it took and the signal that ended it.
fn wait_exit(c: &mut Child, limit: Duration) -> (Duration, Option<i32>) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return (t0.elapsed(), st.signal());
        }
        assert!(
            t0.elapsed() < limit,
            "the holder was not killed within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn forced_requests_kill_the_holder_across_implementations() {
    let mut t = Tally("requests across implementations", 0);
    let dir = workdir();
    let f = setup(dir.path());
    let sd = SanlockDaemon::start(&dir.path().join("s"));
    let hd = HactlDaemon::start(&dir.path().join("h"));
    std::thread::scope(|s| {
        s.spawn(|| add_lockspace(&sd.run_dir, 1, &f));
        s.spawn(|| add_lockspace(&hd.run_dir, 2, &f));
    });
    std::thread::sleep(Duration::from_secs(3));
    let r = |l: u64| format!("LS:R:{}:1048576:{l}", p(&f));

    for (holder_side, requester) in [(&hd.run_dir, &sd.run_dir), (&sd.run_dir, &hd.run_dir)] {
        let (mut h, st) = python_holder(holder_side, &f, "R", 1 << 20, false);
        assert_eq!(st, "held");
        let l = lease_lver(&f, "R", 1 << 20);
        // The requester's own holder is refused while the lease is held.
        let (_, st) = python_holder(requester, &f, "R", 1 << 20, false);
        assert_eq!(st, "refused -243");
        // A request for an lver already reached is refused as old.
        let old = run_env(
            sanlock(),
            &["client", "request", "-r", &r(l), "-f", "1"],
            &[("SANLOCK_RUN_DIR", p(requester))],
        );
        t.same(
            "request for the current lver",
            old.text().trim().as_bytes(),
            b"request\nrequest done -272",
        );
        let req = run_env(
            sanlock(),
            &["client", "request", "-r", &r(l + 1), "-f", "1"],
            &[("SANLOCK_RUN_DIR", p(requester))],
        );
        t.same(
            "forced request",
            req.text().trim().as_bytes(),
            b"request\nrequest done 0",
        );
        let (took, sig) = wait_exit(&mut h, Duration::from_secs(30));
        eprintln!(
            "holder on {} killed {took:?} after the request (signal {sig:?})",
            holder_side.display()
        );
        assert_eq!(sig, Some(libc::SIGKILL), "a forced request is a SIGKILL");
        // Its daemon released the lease for it: the requester gets it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = loop {
            let (c, st) = python_holder(requester, &f, "R", 1 << 20, false);
            if st == "held" {
                break c;
            }
            assert!(
                Instant::now() < deadline,
                "the requester never got the lease: {st}"
            );
            std::thread::sleep(Duration::from_millis(300));
        };
        assert_eq!(lease_lver(&f, "R", 1 << 20), l + 1);
        // Clear the request record for the next round: request lver 0, mode 0.
        got.kill().unwrap();
        got.wait().unwrap();
        let clear = run_env(
            sanlock(),
            &["client", "request", "-r", &r(0), "-f", "0"],
            &[("SANLOCK_RUN_DIR", p(requester))],
        );
        assert!(clear.text().contains("request done 0"), "{}", clear.text());
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn resource(f: &std::path::Path) -> SanlkResource {
    SanlkResource {
        lockspace_name: Name::new("LS").unwrap(),
        name: Name::new("R").unwrap(),
        disks: vec![SanlkDisk::new(SanlkPath::new(p(f)).unwrap(), 1 << 20)],
        ..Default::default()
    }
}

fn acquire_msg(f: &std::path::Path) -> Vec<u8> {
    let res = resource(f).encode();
    let opts = SanlkOptions::default().encode();
    let h = Header {
        magic: proto::SM_MAGIC,
        version: proto::SM_PROTO,
        cmd: proto::Cmd::Acquire as u32,
        length: (proto::HEADER_SIZE + res.len() + opts.len()) as u32,
        data: 1,
        data2: u32::MAX,
        ..Default::default()
    };
    let mut m = h.encode().to_vec();
    m.extend(res);
    m.extend(opts);
    m
}

fn register() -> Vec<u8> {
    Header {
        magic: proto::SM_MAGIC,
        version: proto::SM_PROTO,
        cmd: proto::Cmd::Register as u32,
        length: proto::HEADER_SIZE as u32,
        ..Default::default()
    }
    .encode()
    .to_vec()
}

#[test]
fn a_client_gone_mid_acquire_leaves_nothing_held() {
    let dir = workdir();
    let f = setup(dir.path());
    let mut hd = HactlDaemon::start(&dir.path().join("h"));
    add_lockspace(&hd.run_dir, 1, &f);
    let sock = hd.run_dir.join("sanlock.sock");
    let status = || run_env(sanlock(), &["client", "status"], &hd.env()).text();

    // Half an acquire payload, then the connection closes.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(&register()).unwrap();
    let m = acquire_msg(&f);
    s.write_all(&m[..100]).unwrap();
    drop(s);
    // A whole acquire whose client closes without reading the reply.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(&register()).unwrap();
    s.write_all(&m).unwrap();
    drop(s);
    // The daemon notices, releases, and keeps serving.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = status();
        let leader = run(
            sanlock(),
            &["direct", "read_leader", "-r", &format!("LS:R:{}:1M", p(&f))],
        )
        .text();
        let free = leader.lines().any(|l| l == "timestamp 0");
        if !st.lines().any(|l| l.starts_with("r ")) && free {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a lease stayed held for a gone client:\n{st}\n{leader}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(hd.alive());
    // And the lease is acquirable by the next client.
    let (mut c, st) = python_holder(&hd.run_dir, &f, "R", 1 << 20, false);
    assert_eq!(st, "held");
    c.kill().unwrap();
    c.wait().unwrap();
}
