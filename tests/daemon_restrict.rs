//! `sanlock_restrict()`, as libvirt uses it: before it execs qemu, libvirt
//! restricts the registered connection qemu inherits with
//! `SANLK_RESTRICT_ALL`, so a compromised qemu can do nothing through it.
//! A C program linked with the real libsanlock (tests/c/restricted.c)
//! restricts its connection and then tries to acquire a free lease, to lift
//! the restriction and to inquire: against hactl's daemon every one of
//! these is refused at once and nothing is acquired; against sanlock's
//! daemon nothing is acquired either (sanlock never answers such a
//! connection). The SIGKILL restriction swaps the signal that the kill
//! sequence sends, in both daemons alike.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;

/// A lockspace and a lease R1 on files in `dir`, the lockspace joined as
/// host 1 by the daemon in `rd`; returns (LOCKSPACE, RESOURCE).
fn setup(dir: &Path, rd: &Path) -> (String, String) {
    let (ls, res) = (dir.join("ls"), dir.join("res"));
    make_file(&ls, MIB, 0);
    make_file(&res, 2 * MIB, 0);
    let lss = format!("LS:1:{}:0", p(&ls));
    let r1 = format!("LS:R1:{}:1048576", p(&res));
    // io_timeout 3: nothing here is about timing, and a 1 s dblock write
    // can time out on a loaded machine (-211); 10 would make each join
    // wait 20 s.
    assert_eq!(
        run(hactl(), &["direct", "init", "-s", &lss, "-o", "3"]).code,
        0
    );
    assert_eq!(run(hactl(), &["direct", "init", "-r", &r1]).code, 0);
    add_lockspace(rd, 1, &ls);
    (lss, r1)
}

fn spawn(bin: &Path, args: &[&str], rd: &Path) -> Child {
    Command::new(bin)
        .args(args)
        .env("SANLOCK_RUN_DIR", rd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The `client status -D` block of the client whose pid is `pid`, its
/// `key=value` lines joined with spaces.
fn client_block(rd: &Path, pid: u32) -> String {
    let t = run_env(
        sanlock(),
        &["client", "status", "-D"],
        &[("SANLOCK_RUN_DIR", p(rd))],
    )
    .text();
    let head = format!("p {pid}");
    let mut lines = t
        .lines()
        .skip_while(|l| *l != head && !l.starts_with(&format!("{head} ")));
    assert!(
        lines.next().is_some(),
        "pid {pid} not in client status -D:\n{t}"
    );
    lines
        .take_while(|l| l.starts_with(' '))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lines the child printed, read on a thread until it has printed `n` or
/// `wait` has passed (sanlock never answers a restricted connection).
fn lines_within(c: &mut Child, n: usize, wait: Duration) -> Vec<String> {
    let out = c.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => got.push(l),
            Err(_) => break,
        }
    }
    got
}

fn kill(c: &mut Child) {
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn restricted_connection_can_do_nothing() {
    let mut t = Tally("restricted connection", 0);
    let dir = workdir();
    let bin = compile_c("restricted", dir.path());
    let (ds, dh) = (dir.path().join("s"), dir.path().join("h"));
    std::fs::create_dir_all(&ds).unwrap();
    std::fs::create_dir_all(&dh).unwrap();
    let sd = SanlockDaemon::start(&ds.join("run"));
    let hd = HactlDaemon::start(&dh.join("run"));
    let (_, rs) = setup(&ds, &sd.run_dir);
    let (_, rh) = setup(&dh, &hd.run_dir);

    // hactl answers every request on the restricted connection at once,
    // with -EPERM, and the restriction cannot be lifted.
    let mut ours = spawn(&bin, &["all", &rh], &hd.run_dir);
    let got = lines_within(&mut ours, 6, Duration::from_secs(30));
    let _ = ours.wait();
    assert_eq!(
        got,
        [
            "register ok",
            "restrict 0",
            "acquire -1",
            "unrestrict -1",
            "acquire after unrestrict -1",
            "inquire -1 count 0",
        ],
        "hactl's answers on a restricted connection"
    );

    // sanlock ignores the restricted connection: the acquire never returns.
    let mut theirs = spawn(&bin, &["all", &rs], &sd.run_dir);
    let got_s = lines_within(&mut theirs, 3, Duration::from_secs(5));
    assert_eq!(got_s, ["register ok", "restrict 0"], "sanlock's answers");
    kill(&mut theirs);
    for (res, what) in [(&ds, "sanlock"), (&dh, "hactl")] {
        let lver = lease_lver(&res.join("res"), "R1", MIB as u64);
        assert_eq!(
            lver, 0,
            "{what}: the lease was acquired by a restricted client"
        );
    }

    // status -D shows the flags of a restricted connection (one that
    // acquired first, then restricted itself, as libvirt's does).
    let mut flags = Vec::new();
    for (rd, res) in [(&sd.run_dir, &rs), (&hd.run_dir, &rh)] {
        let mut held = spawn(&bin, &["hold", "1", res], rd);
        assert_eq!(first_line(&mut held), "held");
        let line = client_block(rd, held.id());
        kill(&mut held);
        let f = line
            .split(' ')
            .find(|w| w.starts_with("restricted="))
            .unwrap_or_else(|| panic!("no restricted= in {line}"))
            .to_string();
        flags.push(f);
    }
    assert_eq!(flags[0], "restricted=1", "sanlock");
    t.same(
        "restricted= in status -D",
        flags[1].as_bytes(),
        flags[0].as_bytes(),
    );
    // The daemon said why it refused, once for the connection.
    let log = std::fs::read_to_string(hd.run_dir.join("hactl.log")).unwrap_or_default()
        + &std::fs::read_to_string(hd.run_dir.join("daemon.stderr")).unwrap_or_default();
    assert!(
        log.contains("connection restricted (SANLK_RESTRICT_ALL)"),
        "no refusal in the log:\n{log}"
    );
}

/// Which signal ended a holder restricted with `flags` when its
/// lockspace is removed (rem_lockspace kills holders with SIGKILL).
fn killed_by(bin: &Path, rd: &Path, lss: &str, res: &str, flags: &str) -> i32 {
    let mut h = spawn(bin, &["hold", flags, res], rd);
    assert_eq!(first_line(&mut h), "held");
    let o = run_env(
        sanlock(),
        &["client", "rem_lockspace", "-s", lss],
        &[("SANLOCK_RUN_DIR", p(rd))],
    );
    assert!(o.text().contains("done 0"), "{}", o.text());
    let st = h.wait().unwrap();
    st.signal().unwrap_or(0)
}

#[test]
fn restricted_sigkill_gets_sigterm_in_both_daemons() {
    let mut t = Tally("restrict sigkill/sigterm", 0);
    let dir = workdir();
    let bin = compile_c("restricted", dir.path());
    for (i, (flags, want)) in [("0", libc::SIGKILL), ("2", libc::SIGTERM)]
        .into_iter()
        .enumerate()
    {
        let (ds, dh) = (
            dir.path().join(format!("s{i}")),
            dir.path().join(format!("h{i}")),
        );
        std::fs::create_dir_all(&ds).unwrap();
        std::fs::create_dir_all(&dh).unwrap();
        let sd = SanlockDaemon::start(&ds.join("run"));
        let hd = HactlDaemon::start(&dh.join("run"));
        let (ls_s, rs) = setup(&ds, &sd.run_dir);
        let (ls_h, rh) = setup(&dh, &hd.run_dir);
        let theirs = killed_by(&bin, &sd.run_dir, &ls_s, &rs, flags);
        let ours = killed_by(&bin, &dh.join("run"), &ls_h, &rh, flags);
        assert_eq!(theirs, want, "sanlock, restrict {flags}");
        t.same(
            &format!("signal with restrict {flags}"),
            theirs.to_string().as_bytes(),
            ours.to_string().as_bytes(),
        );
    }
}
