//! `hactl client` resource actions against `sanlock client`, both talking
//! to one daemon: the same stdout and exit code for acquire, release,
//! inquire (-D), convert, request, examine, init -r, read -r (-h 1, -D) and
//! command, including their error cases.
//!
//! Commands that change the daemon's state are compared in pairs: sanlock
//! does it and hactl undoes it, then hactl does it and sanlock undoes it,
//! so each client meets the same state for the same command. Read-only
//! commands run through both clients back to back.
//!
//! The exclusive-lease sequence runs against the real sanlock daemon and
//! against `hactl daemon`; the rest (SH, convert, request, examine,
//! read/write_resource, owners) runs against sanlock's daemon, and against
//! hactl's in an ignored test until its daemon has those commands.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;

fn client_in(bin: &str, rd: &Path, args: &[&str]) -> Out {
    let mut a = vec!["client"];
    a.extend_from_slice(args);
    run_env(bin, &a, &[("SANLOCK_RUN_DIR", p(rd))])
}

fn check(t: &mut Tally, what: &str, ours: &Out, theirs: &Out) {
    t.same(what, &ours.stdout, &theirs.stdout);
    assert_eq!(
        ours.code, theirs.code,
        "{what}: exit codes differ (sanlock {}, hactl {}; hactl stderr: {})",
        theirs.code, ours.code, ours.stderr
    );
}

/// A read-only command through both clients.
fn same(t: &mut Tally, rd: &Path, args: &[&str]) -> Out {
    let theirs = client_in(sanlock(), rd, args);
    let ours = client_in(hactl(), rd, args);
    check(t, &format!("client {args:?}"), &ours, &theirs);
    theirs
}

/// A state change and its inverse: each client does both, on the same
/// states. Returns sanlock's output of `doit`.
fn pair(t: &mut Tally, rd: &Path, doit: &[&str], undo: &[&str]) -> Out {
    let s_do = client_in(sanlock(), rd, doit);
    let h_undo = client_in(hactl(), rd, undo);
    let h_do = client_in(hactl(), rd, doit);
    let s_undo = client_in(sanlock(), rd, undo);
    check(t, &format!("client {doit:?}"), &h_do, &s_do);
    check(t, &format!("client {undo:?}"), &h_undo, &s_undo);
    s_do
}

/// A lockspace file (io_timeout 1) and a lease file with R1 at 1M and R2
/// at 2M; the rest of the lease file is zeros.
struct Setup {
    _dir: tempfile::TempDir,
    ls: String,
    res: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = workdir();
        let ls = dir.path().join("ls");
        let res = dir.path().join("res");
        make_file(&ls, MIB, 0);
        make_file(&res, 8 * MIB, 0);
        let (ls, res) = (p(&ls).to_string(), p(&res).to_string());
        for args in [
            vec![
                "direct".to_string(),
                "init".into(),
                "-s".into(),
                format!("LS:0:{ls}:0"),
                "-o".into(),
                "1".into(),
            ],
            vec![
                "direct".into(),
                "init".into(),
                "-r".into(),
                format!("LS:R1:{res}:1M"),
            ],
            vec![
                "direct".into(),
                "init".into(),
                "-r".into(),
                format!("LS:R2:{res}:2M"),
            ],
        ] {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = run(hactl(), &a);
            assert_eq!(o.code, 0, "{a:?}: {}", o.stderr);
        }
        Setup { _dir: dir, ls, res }
    }

    fn join(&self, rd: &Path) {
        let o = client_in(
            sanlock(),
            rd,
            &[
                "add_lockspace",
                "-s",
                &format!("LS:1:{}:0", self.ls),
                "-o",
                "1",
            ],
        );
        assert!(o.text().contains("done 0"), "add_lockspace: {}", o.text());
    }

    fn r(&self, name: &str, off: &str) -> String {
        format!("LS:{name}:{}:{off}", self.res)
    }
}

/// A process registered through `<bin> client command ... -c /bin/sleep`,
/// killed by pid on drop.
struct Holder {
    child: Child,
    out: PathBuf,
}

impl Holder {
    fn start(bin: &str, rd: &Path, out: PathBuf, res: &[&str]) -> Holder {
        let mut args = vec!["client", "command"];
        for r in res {
            args.extend_from_slice(&["-r", r]);
        }
        args.extend_from_slice(&["-c", "/bin/sleep", "1000"]);
        let f = std::fs::File::create(&out).unwrap();
        let child = Command::new(bin)
            .args(&args)
            .env("SANLOCK_RUN_DIR", rd)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let h = Holder { child, out };
        // Registered, acquired and exec'd: the daemon lists the pid, and
        // the process is sleep.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = client_in(sanlock(), rd, &["status"]).text();
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", h.pid()));
            let held = res
                .iter()
                .all(|r| st.contains(&format!("p {}\n", h.pid())) && st.contains(&r[..5]));
            if st.contains(&format!("p {} ", h.pid()))
                && held
                && comm.is_ok_and(|c| c.trim() == "sleep")
            {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "holder {bin} {res:?} never ready: {st}\n{}",
                std::fs::read_to_string(&h.out).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Kills it and returns what it printed.
    fn stop(mut self) -> Vec<u8> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read(&self.out).unwrap()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `command` whose exec fails or whose acquire fails: its whole output
/// (stdout, stderr, code) is printed at exit, so it can be compared.
fn command_once(t: &mut Tally, rd: &Path, args: &[&str], release: Option<&str>) {
    let theirs = client_in(sanlock(), rd, args);
    if let Some(name) = release {
        wait_released(rd, name);
    }
    let ours = client_in(hactl(), rd, args);
    if let Some(name) = release {
        wait_released(rd, name);
    }
    check(t, &format!("client {args:?}"), &ours, &theirs);
    // hactl adds why on stderr; sanlock's own lines (perror) must be there.
    for line in theirs.stderr.lines() {
        assert!(
            ours.stderr.lines().any(|l| l == line),
            "client {args:?}: stderr lacks {line:?}: {}",
            ours.stderr
        );
    }
}

/// Exclusive leases: what `hactl daemon` supports today.
fn exclusive_sequence(t: &mut Tally, rd: &Path, s: &Setup, tmp: &Path) {
    let (r1, r2) = (s.r("R1", "1M"), s.r("R2", "2097152"));
    // A holds R1 from the start (sanlock's command); B is registered with
    // nothing (hactl's command).
    let a = Holder::start(sanlock(), rd, tmp.join("a.out"), &[&r1]);
    let b = Holder::start(hactl(), rd, tmp.join("b.out"), &[]);
    let (pa, pb) = (a.pid().to_string(), b.pid().to_string());
    let me = std::process::id().to_string();

    let o = same(t, rd, &["inquire", "-p", &pa]);
    assert!(o.text().contains(":1048576:1\""), "{}", o.text());
    same(t, rd, &["inquire", "-p", &pa, "-D"]);
    let o = same(t, rd, &["inquire", "-p", &pb]);
    assert!(o.text().contains("\"(null)\""), "{}", o.text());
    same(t, rd, &["inquire"]);
    same(t, rd, &["inquire", "-p", &me]);

    // Refusals: held by another pid, no -p, unregistered pid, bad strings,
    // no lease at that offset, another resource's lease, wrong lver,
    // unknown lockspace.
    let o = same(t, rd, &["acquire", "-r", &r1, "-p", &pb]);
    assert!(o.text().contains("acquire done -17"), "{}", o.text());
    same(t, rd, &["acquire", "-r", &r2]);
    same(t, rd, &["acquire", "-r", &r2, "-p", &me]);
    same(
        t,
        rd,
        &["acquire", "-r", &format!("LS:R2:{}", s.res), "-p", &me],
    );
    same(t, rd, &["acquire", "-r", "L", "-p", &me]);
    same(
        t,
        rd,
        &["acquire", "-r", "LS:R2:a:0:b:0:c:0:d:0:e:0", "-p", &me],
    );
    let o = same(t, rd, &["acquire", "-r", &s.r("R2", "3M"), "-p", &pb]);
    assert!(o.text().contains("done -223"), "{}", o.text());
    same(t, rd, &["acquire", "-r", &s.r("R9", "2M"), "-p", &pb]);
    same(t, rd, &["acquire", "-r", &s.r("R2", "2M:7"), "-p", &pb]);
    same(
        t,
        rd,
        &["acquire", "-r", &format!("NOPE:R2:{}:2M", s.res), "-p", &pb],
    );

    // B takes and gives back R2, through each client.
    pair(
        t,
        rd,
        &["acquire", "-r", &r2, "-p", &pb],
        &["release", "-r", &r2, "-p", &pb],
    );
    let o = pair(
        t,
        rd,
        &["acquire", "-r", &r2, "-p", &pb],
        &["release", "-r", "LS:R2", "-p", &pb],
    );
    assert!(o.text().contains("acquire done 0"), "{}", o.text());
    // Held: inquire shows the lver each acquire raised.
    client_in(sanlock(), rd, &["acquire", "-r", &r2, "-p", &pb]);
    let o = same(t, rd, &["inquire", "-p", &pb, "-D"]);
    assert!(o.text().contains("args_to_state done 0"), "{}", o.text());
    same(t, rd, &["release", "-r", &r1, "-p", &pb]);
    same(t, rd, &["release", "-r", &r2]);
    same(t, rd, &["release", "-r", &r2, "-p", &me]);
    pair(
        t,
        rd,
        &["release", "-a", "1", "-p", &pb],
        &["acquire", "-r", &r2, "-p", &pb],
    );
    same(t, rd, &["inquire", "-p", &pb]);

    // command: acquire refused (R1 is A's), and exec failing after a
    // successful acquire (the lease goes when the process exits).
    command_once(t, rd, &["command", "-r", &r1, "-c", "/bin/true"], None);
    client_in(sanlock(), rd, &["release", "-a", "1", "-p", &pb]);
    command_once(
        t,
        rd,
        &["command", "-r", &r2, "-c", "/nonexistent/x", "arg"],
        Some("R2"),
    );

    // A held its lease through an exec'd sleep; both holders' stdout went
    // to a file, so sanlock's buffered lines vanished at exec, and hactl's
    // must too.
    let (ao, bo) = (a.stop(), b.stop());
    t.same("command output lost at exec", &bo, &ao);
    assert!(ao.is_empty(), "{}", String::from_utf8_lossy(&ao));
    wait_released(rd, "R1");
    same(t, rd, &["inquire", "-p", &pa]);
}

/// SH, convert, request, examine, init/read -r, owners.
fn full_sequence(t: &mut Tally, rd: &Path, s: &Setup, tmp: &Path) {
    let (r1, r2) = (s.r("R1", "1M"), s.r("R2", "2M"));
    let a = Holder::start(sanlock(), rd, tmp.join("a.out"), &[&r1]);
    let b = Holder::start(hactl(), rd, tmp.join("b.out"), &[]);
    let (pa, pb) = (a.pid().to_string(), b.pid().to_string());

    // read -r: leader, owners, sizes; errors.
    let o = same(t, rd, &["read", "-r", &r1, "-h", "1", "-D"]);
    assert!(o.text().contains("\nh 1 gen "), "{}", o.text());
    same(t, rd, &["read", "-r", &r1]);
    same(t, rd, &["read", "-r", &r2, "-h", "1"]);
    same(t, rd, &["read", "-r", &s.r("R2", "3M")]);
    same(t, rd, &["read", "-r", &s.r("R2", "3M"), "-h", "1"]);
    same(t, rd, &["read", "-r", &s.r("", "2M"), "-h", "1"]);
    same(t, rd, &["read", "-r", &r2, "-Z", "4096", "-A", "8M", "-D"]);
    same(
        t,
        rd,
        &["read", "-r", &r2, "-Z", "4096", "-A", "8M", "-h", "1"],
    );
    same(t, rd, &["read", "-r", "LS:R2"]);
    same(t, rd, &["read"]);

    // init -r through each client lays out the same bytes (the daemon
    // writes them): sanlock's at 3M, hactl's at 4M.
    let o = client_in(sanlock(), rd, &["init", "-r", &s.r("R3", "3M"), "-m", "7"]);
    let ours = client_in(hactl(), rd, &["init", "-r", &s.r("R3", "4M"), "-m", "7"]);
    check(t, "client init -r -m 7", &ours, &o);
    let bytes = std::fs::read(&s.res).unwrap();
    t.same(
        "init -r area",
        &bytes[4 * MIB..5 * MIB],
        &bytes[3 * MIB..4 * MIB],
    );
    same(t, rd, &["read", "-r", &s.r("R3", "4M"), "-D"]);
    same(t, rd, &["init", "-r", &s.r("R4", "5M"), "-z", "1"]);
    same(t, rd, &["read", "-r", &s.r("R4", "5M")]);
    same(t, rd, &["init", "-r", &format!("LS:R5:{}x:0", s.res)]);
    same(t, rd, &["init", "-r", "LS:R5"]);
    same(
        t,
        rd,
        &["init", "-r", &s.r("R6", "6M"), "-Z", "4096", "-A", "1M"],
    );
    same(t, rd, &["read", "-r", &s.r("R6", "6M"), "-D"]);

    // Shared: B takes R2 SH and gives it back; owners show the SH holder.
    pair(
        t,
        rd,
        &["acquire", "-r", &format!("{r2}:SH"), "-p", &pb],
        &["release", "-r", &r2, "-p", &pb],
    );
    client_in(
        sanlock(),
        rd,
        &["acquire", "-r", &format!("{r2}:SH"), "-p", &pb],
    );
    let o = same(t, rd, &["inquire", "-p", &pb]);
    assert!(o.text().contains(":SH\""), "{}", o.text());
    same(t, rd, &["inquire", "-p", &pb, "-D"]);
    let o = same(t, rd, &["read", "-r", &r2, "-h", "1"]);
    assert!(o.text().contains(":SH\nh 1 gen "), "{}", o.text());
    same(t, rd, &["acquire", "-r", &r2, "-p", &pa]);

    // convert SH -> EX -> SH, and refusals.
    pair(
        t,
        rd,
        &["convert", "-r", &r2, "-p", &pb],
        &["convert", "-r", &format!("{r2}:SH"), "-p", &pb],
    );
    same(t, rd, &["convert", "-r", &format!("{r2}:SH"), "-p", &pb]);
    same(t, rd, &["convert", "-r", &r1, "-p", &pb]);
    same(t, rd, &["convert", "-r", &r2]);
    same(t, rd, &["convert", "-p", &pb]);
    client_in(sanlock(), rd, &["release", "-a", "1", "-p", &pb]);

    // request: an old version, a clear, a newer one, then one older than
    // the recorded request; never FORCE on a live holder.
    same(t, rd, &["request", "-r", &format!("{r1}:1"), "-f", "1"]);
    same(t, rd, &["request", "-r", &r1]);
    same(t, rd, &["request", "-r", &format!("{r1}:5"), "-f", "0"]);
    same(t, rd, &["request", "-r", &format!("{r1}:3"), "-f", "0"]);
    same(t, rd, &["request", "-r", &s.r("R2", "3M:9")]);
    same(t, rd, &["request"]);
    same(t, rd, &["request", "-r", &r1]);

    // examine: resource, lockspace, neither.
    same(t, rd, &["examine", "-r", &r1]);
    same(t, rd, &["examine", "-s", &format!("LS:1:{}:0", s.ls)]);
    same(t, rd, &["examine", "-s", "LS"]);
    same(t, rd, &["examine"]);

    // Orphans of a lockspace (none): release -O 1 -s LS.
    same(t, rd, &["release", "-s", "LS", "-O", "1", "-p", &pa]);
    same(t, rd, &["release", "-s", "LS", "-O", "1"]);

    drop(a);
    drop(b);
    wait_released(rd, "R1");
}

#[test]
fn exclusive_resource_actions_against_sanlock_daemon() {
    let mut t = Tally("client resources (sanlock daemon, EX)", 0);
    let s = Setup::new();
    let d = SanlockDaemon::start(&s._dir.path().join("run"));
    s.join(&d.run_dir);
    exclusive_sequence(&mut t, &d.run_dir, &s, s._dir.path());
}

#[test]
fn exclusive_resource_actions_against_hactl_daemon() {
    let mut t = Tally("client resources (hactl daemon, EX)", 0);
    let s = Setup::new();
    let d = HactlDaemon::start(&s._dir.path().join("run"));
    s.join(&d.run_dir);
    exclusive_sequence(&mut t, &d.run_dir, &s, s._dir.path());
}

#[test]
fn shared_convert_request_examine_read_init_against_sanlock_daemon() {
    let mut t = Tally(
        "client resources (sanlock daemon, SH/convert/request/read)",
        0,
    );
    let s = Setup::new();
    let d = SanlockDaemon::start(&s._dir.path().join("run"));
    s.join(&d.run_dir);
    full_sequence(&mut t, &d.run_dir, &s, s._dir.path());
}

#[test]
fn shared_convert_request_examine_read_init_against_hactl_daemon() {
    let mut t = Tally(
        "client resources (hactl daemon, SH/convert/request/read)",
        0,
    );
    let s = Setup::new();
    let d = HactlDaemon::start(&s._dir.path().join("run"));
    s.join(&d.run_dir);
    full_sequence(&mut t, &d.run_dir, &s, s._dir.path());
}
