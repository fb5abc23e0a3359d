//! Who may talk to the daemon. The socket is sanlock's gate (mode 0660,
//! owned by -U/-G), and what a user outside it sees is what sanlock's
//! users see; behind it hactl also checks each connection's credentials,
//! so a loosened socket still admits only root, -U and -G's members.
//! A privileged daemon becomes -U/-G, locks its memory and takes its
//! priority as sanlock does. Runs clients as two test users it creates:
//! a member of the test group and an outsider.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Once;

use common::*;

const GROUP: &str = "hactl-test-access";
const MEMBER: &str = "hactl-tmember";
const OTHER: &str = "hactl-tother";

/// Creates the test group and users once (as root, system accounts with
/// no home and no shell).
fn users() -> (u32, u32, u32) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let o = run("groupadd", &["-f", GROUP]);
        assert_eq!(o.code, 0, "groupadd (tests run as root): {}", o.stderr);
        for (u, extra) in [(MEMBER, Some(GROUP)), (OTHER, None)] {
            if run("id", &["-u", u]).code == 0 {
                continue;
            }
            let mut a = vec![
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ];
            if let Some(g) = extra {
                a.extend(["-G", g]);
            }
            a.push(u);
            let o = run("useradd", &a);
            assert_eq!(o.code, 0, "useradd {u}: {}", o.stderr);
        }
    });
    let uid = |n: &str| {
        nix::unistd::User::from_name(n)
            .unwrap()
            .unwrap()
            .uid
            .as_raw()
    };
    let gid = nix::unistd::Group::from_name(GROUP)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    (uid(MEMBER), uid(OTHER), gid)
}

/// Runs `bin args` as `user` with its groups (setpriv), against `run_dir`.
fn run_as(user: &str, run_dir: &Path, bin: &str, args: &[&str]) -> Out {
    let mut a = vec!["--reuid", user, "--regid", user, "--init-groups", "--", bin];
    a.extend_from_slice(args);
    run_env("setpriv", &a, &[("SANLOCK_RUN_DIR", p(run_dir))])
}

/// A work dir the test users can reach (tempdirs are 0700).
fn open_workdir() -> tempfile::TempDir {
    let w = workdir();
    std::fs::set_permissions(w.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    w
}

const PY_GETS: &str = r#"
import sanlock
try:
    sanlock.get_lockspaces()
    print("ok")
except sanlock.SanlockException as e:
    print("err %d" % e.errno)
"#;

/// A registered process acquiring a lease, as vdsm does.
const PY_ACQUIRE: &str = r#"
import sanlock, sys
try:
    fd = sanlock.register()
    sanlock.acquire(b"LS", b"R", [(sys.argv[1], 1048576)], slkfd=fd)
    print("held")
except sanlock.SanlockException as e:
    print("err %d" % e.errno)
"#;

fn socket_owner(run_dir: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(run_dir.join("sanlock.sock")).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn socket_refuses_others_as_sanlocks_does() {
    let (_member, _other, gid) = users();
    let w = open_workdir();
    let h = HactlDaemon::start_with(&w.path().join("h"), &["-G", GROUP]);
    let s = SanlockDaemon::start_with(&w.path().join("s"), &["-G", GROUP]);
    assert_eq!(socket_owner(&h.run_dir), (0o660, 0, gid));
    assert_eq!(socket_owner(&h.run_dir), socket_owner(&s.run_dir));

    for rd in [&h.run_dir, &s.run_dir] {
        // A member of -G is served by either daemon, with either client.
        for bin in [sanlock(), hactl()] {
            let o = run_as(MEMBER, rd, bin, &["client", "status"]);
            assert_eq!(o.code, 0, "{bin} as member: {}", o.stderr);
            assert!(o.text().starts_with("daemon "), "{}", o.text());
        }
        let o = run_as(MEMBER, rd, python3(), &["-c", PY_GETS]);
        assert_eq!(o.text().trim(), "ok", "{}", o.stderr);
    }

    // An outsider is refused at connect(), identically by both daemons.
    for bin in [sanlock(), hactl()] {
        let at_h = run_as(OTHER, &h.run_dir, bin, &["client", "gets"]);
        let at_s = run_as(OTHER, &s.run_dir, bin, &["client", "gets"]);
        assert_eq!(at_h.code, 1, "{bin}: {}", at_h.text());
        assert_eq!(
            (
                at_h.code,
                at_h.text(),
                at_h.stderr.replace(p(&h.run_dir), "RUN")
            ),
            (
                at_s.code,
                at_s.text(),
                at_s.stderr.replace(p(&s.run_dir), "RUN")
            ),
            "{bin}"
        );
    }
    let o = run_as(OTHER, &h.run_dir, hactl(), &["client", "status"]);
    assert!(o.stderr.contains("Permission denied"), "{}", o.stderr);
    for rd in [&h.run_dir, &s.run_dir] {
        let o = run_as(OTHER, rd, python3(), &["-c", PY_GETS]);
        assert_eq!(o.text().trim(), "err 13", "{}", o.stderr);
    }
}

#[test]
fn credentials_checked_behind_a_loosened_socket() {
    let (_member, other, _gid) = users();
    let w = open_workdir();
    let f = w.path().join("leases");
    make_file(&f, 2 << 20, 0);
    let mut h = HactlDaemon::start_with(&w.path().join("h"), &["-G", GROUP]);
    let s = SanlockDaemon::start_with(&w.path().join("s"), &["-G", GROUP]);
    // An administrator's mistake (or a file system ignoring socket modes).
    for rd in [&h.run_dir, &s.run_dir] {
        std::fs::set_permissions(rd.join("sanlock.sock"), PermissionsExt::from_mode(0o666))
            .unwrap();
    }

    // sanlock has no second gate: the outsider is served.
    let o = run_as(OTHER, &s.run_dir, sanlock(), &["client", "gets"]);
    assert_eq!(o.code, 0, "sanlock serves anyone who can connect");

    // hactl answers -EACCES, whatever the client and the request.
    let o = run_as(OTHER, &h.run_dir, sanlock(), &["client", "gets"]);
    assert_eq!((o.code, o.text().trim()), (1, "gets error -13"));
    let o = run_as(OTHER, &h.run_dir, hactl(), &["client", "gets"]);
    assert_eq!((o.code, o.text().trim()), (1, "gets error -13"));
    let o = run_as(OTHER, &h.run_dir, hactl(), &["client", "status"]);
    assert_eq!((o.code, o.text().as_str()), (1, ""));
    assert!(o.stderr.contains("-13"), "{}", o.stderr);
    let o = run_as(OTHER, &h.run_dir, python3(), &["-c", PY_GETS]);
    assert_eq!(o.text().trim(), "err 13", "{}", o.stderr);
    let o = run_as(OTHER, &h.run_dir, python3(), &["-c", PY_ACQUIRE, p(&f)]);
    assert_eq!(o.text().trim(), "err 13", "{}", o.stderr);

    // Each refusal is logged with the client's uid and pid.
    let log = std::fs::read_to_string(h.run_dir.join("daemon.stderr")).unwrap();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("uid {other} ")) && l.contains("refused"))
        .collect();
    assert_eq!(refusals.len(), 5, "{log}");
    assert!(refusals.iter().all(|l| l.contains("client pid ")), "{log}");

    // The daemon is up, and root and members are still served.
    assert!(h.alive());
    let o = run_env(sanlock(), &["client", "status"], &h.env());
    assert!(o.text().starts_with("daemon "), "{}", o.text());
    let o = run_as(MEMBER, &h.run_dir, hactl(), &["client", "gets"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
}

/// `(uid line, gid line, groups, VmLck kB, scheduling policy)` of a process.
fn creds(pid: i32) -> (String, String, Vec<u32>, u64, i32) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut groups: Vec<u32> = field("Groups:")
        .split(' ')
        .filter_map(|g| g.parse().ok())
        .collect();
    groups.sort();
    let lck = field("VmLck:").split(' ').next().unwrap().parse().unwrap();
    // SAFETY: sched_getscheduler reads another process's policy.
    let policy = unsafe { libc::sched_getscheduler(pid) };
    (field("Uid:"), field("Gid:"), groups, lck, policy)
}

#[test]
fn memory_lock_and_priority_as_sanlocks() {
    let w = open_workdir();
    for (flags, locked) in [
        (["-l", "1", "-h", "1"], true),
        (["-l", "0", "-h", "0"], false),
    ] {
        let h = HactlDaemon::start_with(&w.path().join(format!("h{locked}")), &flags);
        let s = SanlockDaemon::start_with(&w.path().join(format!("s{locked}")), &flags);
        let (hc, sc) = (creds(h.pid()), creds(s.pid()));
        assert_eq!(
            (hc.3 > 0, sc.3 > 0),
            (locked, locked),
            "{flags:?}: {hc:?} {sc:?}"
        );
        assert_eq!(hc.4, sc.4, "{flags:?} scheduling policy");
    }
}

/// Whether this process may raise its hard limits (CAP_SYS_RESOURCE),
/// which a privileged daemon needs before it starts.
fn may_raise_limits() -> bool {
    let st = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = st
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    const CAP_SYS_RESOURCE: u32 = 24; // linux/capability.h
    eff & (1 << CAP_SYS_RESOURCE) != 0
}

#[test]
fn privileged_daemon_becomes_u_g_as_sanlock_does() {
    let (member, other, gid) = users();
    let w = open_workdir();
    let flags = ["-U", MEMBER, "-G", GROUP, "-l", "1", "-h", "0"];
    let env = [("SANLOCK_PRIVILEGED", "1")];
    if !may_raise_limits() {
        // Both daemons raise memlock/rtprio/core to unlimited first and
        // refuse to start when they cannot (a container without
        // CAP_SYS_RESOURCE, as here).
        println!("note: no CAP_SYS_RESOURCE: checking that both refuse to start");
        let mut outs = Vec::new();
        for bin in [hactl(), sanlock()] {
            let rd = w.path().join(if bin == hactl() { "h" } else { "s" });
            std::fs::create_dir_all(&rd).unwrap();
            let mut a = vec!["daemon", "-D", "-w", "0"];
            a.extend_from_slice(&flags);
            let o = run_env(
                "timeout",
                &[&["10", bin][..], &a].concat(),
                &[
                    ("SANLOCK_RUN_DIR", p(&rd)),
                    ("SANLOCK_PRIVILEGED", "1"),
                    ("HACTL_SANLOCK_CONF", "/nonexistent"),
                ],
            );
            assert!(
                o.stderr.contains("cannot set the limits for memlock"),
                "{bin}: {o:?}"
            );
            assert!(!rd.join("sanlock.sock").exists());
            outs.push(o.code);
        }
        assert_eq!(outs, [1, 1]);
        return;
    }
    let h = HactlDaemon::start_with_env(&w.path().join("h"), &flags, &env);
    let s = SanlockDaemon::start_with_env(&w.path().join("s"), &flags, &env);
    let (hc, sc) = (creds(h.pid()), creds(s.pid()));
    assert_eq!(hc.0, format!("{member} {member} {member} {member}"));
    assert_eq!(hc.1, format!("{gid} {gid} {gid} {gid}"));
    assert_eq!((&hc.0, &hc.1, &hc.2), (&sc.0, &sc.1, &sc.2));
    assert!(hc.3 > 0 && sc.3 > 0, "-l 1 locks memory: {hc:?} {sc:?}");
    assert_eq!(socket_owner(&h.run_dir), (0o660, member, gid));
    assert_eq!(socket_owner(&h.run_dir), socket_owner(&s.run_dir));
    for rd in [&h.run_dir, &s.run_dir] {
        let o = run_env(
            hactl(),
            &["client", "status"],
            &[("SANLOCK_RUN_DIR", p(rd))],
        );
        assert!(o.text().starts_with("daemon "), "root: {}", o.stderr);
        let o = run_as(MEMBER, rd, sanlock(), &["client", "gets"]);
        assert_eq!(o.code, 0, "the -U user");
        let o = run_as(OTHER, rd, sanlock(), &["client", "gets"]);
        assert_eq!(o.code, 1, "uid {other}");
    }
}
