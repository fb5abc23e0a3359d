//! libvirt's sanlock lock plugin (Debian `libvirt-sanlock` 9.0) with real
//! guests, against hactl's daemon and, to keep the tests honest, against
//! the real sanlock 3.8.5 where it behaves the same: each test runs once
//! per daemon. A host is a lab host (tests/common/libvirt.rs): its daemon,
//! its own libvirtd (own mount namespace) with `SANLOCK_RUN_DIR` at that
//! daemon, tiny guests writing records to their disks.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::ha::wait_for;
use common::libvirt::*;
use common::*;
use hactl::ha::lab::LibvirtConf;

/// io_timeout of the test lockspace: nothing here is timed, and a busy
/// machine must not fail a renewal.
const IO: u32 = 2;
const BOOT: Duration = Duration::from_secs(90);

/// md5 of a disk path: the name of libvirt's automatic disk lease.
fn md5_hex(s: &str) -> String {
    let mut c = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(c.stdin.as_mut().unwrap(), s.as_bytes()).unwrap();
    drop(c.stdin.take());
    let o = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn lease_of(s: &Storage, n: usize) -> (&'static str, String, &Path, u64) {
    (
        "LS",
        format!("vm{n}"),
        s.xleases.as_path(),
        s.offsets[n - 1],
    )
}

/// Defines and starts `name` on `h` with lease vmN and disk `disk`;
/// waits for its guest to write.
fn start_guest(h: &VirtHost, s: &Storage, name: &str, n: usize, disk: &Path) {
    let (ls, key, path, off) = lease_of(s, n);
    h.define(name, &h.guest_xml(name, disk, Some((ls, &key, path, off))));
    let o = h.virsh(&["start", name]);
    assert_eq!(o.code, 0, "virsh start {name}: {}", o.stderr);
    wait_for_guest(disk, h.id, BOOT, || h.console(name));
}

/// A domain with a `<lease>` and an automatic disk lease starts; its qemu
/// holds both in the daemon; destroy releases both.
fn leases_held_by_qemu_until_destroy(kind: Kind) {
    let d = lab_dir();
    let s = Storage::create(d.path(), 1, IO);
    let leases_dir = d.path().join("disk-leases");
    let conf = LibvirtConf {
        auto_disk_leases: true,
        io_timeout: IO,
        disk_lease_dir: Some(leases_dir.clone()),
        ..LibvirtConf::new(1)
    };
    let h = VirtHost::start(d.path(), 1, kind, &conf);
    // libvirt's plugin made its lockspace and joined it at start.
    let st = h.client(&["status"]).text();
    assert!(
        st.contains(&format!(
            "s __LIBVIRT__DISKS__:1:{}/__LIBVIRT__DISKS__:0",
            p(&leases_dir)
        )),
        "{st}"
    );
    h.join(&s, IO);
    let disk = d.path().join("vm1.img");
    start_guest(&h, &s, "vm1", 1, &disk);
    let qemu = h.qemu_pid("vm1").expect("qemu registered as vm1");
    assert!(
        std::fs::read_to_string(format!("/proc/{qemu}/cmdline"))
            .unwrap()
            .contains("qemu-system-x86_64"),
        "pid {qemu} is not qemu"
    );
    let res = h.resources();
    let disk_lease = md5_hex(p(&disk));
    let want_vm = format!("r {}:", s.lease(1));
    let want_disk = format!(
        "r __LIBVIRT__DISKS__:{disk_lease}:{}/{disk_lease}:0:",
        p(&leases_dir)
    );
    for want in [&want_vm, &want_disk] {
        assert!(
            res.iter()
                .any(|r| r.starts_with(want.as_str()) && r.ends_with(&format!(" p {qemu}"))),
            "want {want}... p {qemu} in {res:?}"
        );
    }
    assert!(leases_dir.join(&disk_lease).exists());
    let (owner, lver, ts) = s.leader(1);
    assert_eq!(owner, 1);
    assert!(lver >= 1 && ts > 0, "lver {lver} timestamp {ts}");

    let o = h.virsh(&["destroy", "vm1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    wait_for("the leases to be released", Duration::from_secs(20), || {
        h.resources().is_empty()
    });
    let (_, lver2, ts2) = s.leader(1);
    assert_eq!((lver2, ts2), (lver, 0), "released on disk at the same lver");
    assert!(h.qemu_pid("vm1").is_none());
}

#[test]
fn hactl_leases_held_by_qemu_until_destroy() {
    leases_held_by_qemu_until_destroy(Kind::Hactl);
}

#[test]
fn sanlock_leases_held_by_qemu_until_destroy() {
    leases_held_by_qemu_until_destroy(Kind::Sanlock);
}

/// The last `error:` line of virsh.
fn libvirt_error(o: &Out) -> String {
    o.stderr
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or("")
        .to_string()
}

/// A second domain on a held lease is refused, on the same host and on
/// another host of the lockspace, with libvirt's own error text; the
/// first keeps running. Returns the two errors.
fn second_domain_refused(kind1: Kind, kind2: Kind) -> (String, String) {
    let d = lab_dir();
    let s = Storage::create(d.path(), 1, IO);
    let h1 = VirtHost::start(d.path(), 1, kind1, &LibvirtConf::new(1));
    let h2 = VirtHost::start(d.path(), 2, kind2, &LibvirtConf::new(2));
    h1.join(&s, IO);
    h2.join(&s, IO);
    let disk = d.path().join("vm1.img");
    start_guest(&h1, &s, "vm1", 1, &disk);

    // Same host, another domain (own disk) with the same <lease>.
    let (ls, key, path, off) = lease_of(&s, 1);
    let other = d.path().join("other.img");
    h1.define(
        "other",
        &h1.guest_xml("other", &other, Some((ls, &key, path, off))),
    );
    let o = h1.virsh(&["start", "other"]);
    assert_ne!(o.code, 0, "a second domain on a held lease started");
    let same_host = libvirt_error(&o);

    // Another host, the same VM's lease. Its own disk: qemu's image
    // locking would refuse host 1's image before libvirt asks for the
    // lease (qemu starts paused; the lease is acquired when it resumes).
    let disk2 = d.path().join("vm1-host2.img");
    h2.define(
        "vm1",
        &h2.guest_xml("vm1", &disk2, Some((ls, &key, path, off))),
    );
    let o = h2.virsh(&["start", "vm1"]);
    assert_ne!(o.code, 0, "host 2 started vm1 while host 1 runs it");
    let other_host = libvirt_error(&o);
    assert!(h2.resources().is_empty(), "{:?}", h2.resources());
    assert_eq!(h2.domstate("vm1"), "shut off");
    assert_eq!(h1.domstate("vm1"), "running");
    let before = hactl::ha::demo_vm::last_record(&disk).unwrap().counter;
    wait_for(
        "vm1 to keep writing on host 1",
        Duration::from_secs(20),
        || {
            hactl::ha::demo_vm::last_record(&disk)
                .is_some_and(|r| r.counter > before && r.host_id == 1)
        },
    );
    let rep = hactl::ha::demo_vm::check_file(&disk).unwrap();
    assert!(rep.violations.is_empty(), "{:?}", rep.violations);
    assert_eq!(rep.runs.len(), 1);
    eprintln!("same host: {same_host}\nother host: {other_host}");
    (same_host, other_host)
}

/// libvirt's words, which hactl's daemon must make it say as sanlock's does.
const REFUSED_SAME_HOST: &str = "error: Failed to acquire lock: File exists";
const REFUSED_OTHER_HOST: &str =
    "error: resource busy: Failed to acquire lock: Lease is held by another host";

#[test]
fn hactl_second_domain_on_a_held_lease_is_refused() {
    let (same, other) = second_domain_refused(Kind::Hactl, Kind::Hactl);
    assert_eq!(same, REFUSED_SAME_HOST);
    assert_eq!(other, REFUSED_OTHER_HOST);
}

#[test]
fn sanlock_second_domain_on_a_held_lease_is_refused() {
    let (same, other) = second_domain_refused(Kind::Sanlock, Kind::Sanlock);
    assert_eq!(same, REFUSED_SAME_HOST);
    assert_eq!(other, REFUSED_OTHER_HOST);
}

#[test]
fn mixed_sanlock_holder_refuses_a_domain_on_hactl() {
    let (_, other) = second_domain_refused(Kind::Sanlock, Kind::Hactl);
    assert_eq!(other, REFUSED_OTHER_HOST);
}

/// Suspend releases the leases (the leader is free on disk); resume
/// acquires them again at the next lver, and the guest goes on.
fn suspend_resume(kind: Kind) {
    let d = lab_dir();
    let s = Storage::create(d.path(), 1, IO);
    let h = VirtHost::start(d.path(), 1, kind, &LibvirtConf::new(1));
    h.join(&s, IO);
    let disk = d.path().join("vm1.img");
    start_guest(&h, &s, "vm1", 1, &disk);
    let (_, lver, _) = s.leader(1);
    let held = |lver: u64| format!("r {}:{lver} p ", s.lease(1));
    assert!(h.resources().iter().any(|r| r.starts_with(&held(lver))));

    let o = h.virsh(&["suspend", "vm1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(h.domstate("vm1"), "paused");
    assert!(h.resources().is_empty(), "{:?}", h.resources());
    assert_eq!(s.leader(1), (1, lver, 0), "released on disk while paused");
    let paused_at = hactl::ha::demo_vm::last_record(&disk).unwrap().counter;

    let o = h.virsh(&["resume", "vm1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let (owner, lver2, ts) = s.leader(1);
    assert_eq!((owner, lver2), (1, lver + 1), "resume takes the next lver");
    assert!(ts > 0);
    let qemu = h.qemu_pid("vm1").unwrap();
    assert!(
        h.resources()
            .iter()
            .any(|r| *r == format!("{}{qemu}", held(lver + 1))),
        "{:?}",
        h.resources()
    );
    wait_for("the guest to write again", Duration::from_secs(30), || {
        hactl::ha::demo_vm::last_record(&disk).is_some_and(|r| r.counter > paused_at + 5)
    });
    let rep = hactl::ha::demo_vm::check_file(&disk).unwrap();
    assert!(rep.violations.is_empty(), "{:?}", rep.violations);
    assert_eq!(rep.runs.len(), 1, "the same boot went on");
}

#[test]
fn hactl_suspend_releases_and_resume_reacquires() {
    suspend_resume(Kind::Hactl);
}

#[test]
fn sanlock_suspend_releases_and_resume_reacquires() {
    suspend_resume(Kind::Sanlock);
}

/// When the host loses its lockspace (here: its delta lease is released
/// behind its back, as another host stealing the host_id would), the
/// daemon runs the killpath libvirt registered for `<on_lockfailure>
/// poweroff`, libvirt_sanlock_helper, which has libvirtd destroy the
/// domain.
fn lease_loss_runs_killpath(kind: Kind) {
    let d = lab_dir();
    let s = Storage::create(d.path(), 1, IO);
    let h = VirtHost::start(d.path(), 1, kind, &LibvirtConf::new(1));
    h.join(&s, IO);
    let disk = d.path().join("vm1.img");
    start_guest(&h, &s, "vm1", 1, &disk);
    let qemu = h.qemu_pid("vm1").unwrap();
    let o = run(
        sanlock(),
        &[
            "direct",
            "release_id",
            "-s",
            &format!("LS:1:{}:0", p(&s.ids)),
        ],
    );
    assert!(o.text().contains("done 0"), "{}", o.text());
    wait_for(
        "the domain to be destroyed",
        Duration::from_secs(60),
        || h.virsh(&["domstate", "vm1", "--reason"]).text().trim() != "running (booted)",
    );
    assert_eq!(
        h.virsh(&["domstate", "vm1", "--reason"]).text().trim(),
        "shut off (destroyed)",
        "destroyed by libvirt (the killpath helper), not killed by a signal"
    );
    wait_for("qemu to be gone", Duration::from_secs(10), || exited(qemu));
    // Each daemon's words for running the killpath: sanlock logs the
    // helper's run as "signal" 100.
    let log = h.client(&["log_dump"]).text();
    let mark = match kind {
        Kind::Hactl => {
            "running killpath /usr/lib/libvirt/libvirt_sanlock_helper qemu:///system".to_string()
        }
        Kind::Sanlock => format!("kill {qemu} sig 100 count 1"),
    };
    assert!(
        log.contains(&mark),
        "the daemon's log does not show the killpath ({mark}):\n{log}"
    );
}

#[test]
fn hactl_lease_loss_runs_libvirts_killpath() {
    lease_loss_runs_killpath(Kind::Hactl);
}

#[test]
fn sanlock_lease_loss_runs_libvirts_killpath() {
    lease_loss_runs_killpath(Kind::Sanlock);
}

/// Takes qemu's own connection to the daemon (the one libvirt registered
/// and restricted with `SANLK_RESTRICT_ALL` before exec'ing qemu): a copy
/// of qemu's descriptor (pidfd_getfd(2)), found among qemu's sockets as the
/// one connected to the daemon's socket, then sends `acquire` of lease
/// vm2 on it with python3-sanlock, as a compromised qemu would. Prints
/// `stolen FD`, then `acquired` or `refused ERRNO`.
const STEAL: &str = r#"
import ctypes, os, socket, sys, sanlock
libc = ctypes.CDLL(None, use_errno=True)
pid, sock_path, lease_path, offset = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
pidfd = libc.syscall(434, pid, 0)  # pidfd_open
if pidfd < 0:
    print("error pidfd_open %d" % ctypes.get_errno(), flush=True); sys.exit(1)
conn = None
for name in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
    try:
        if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
            continue
    except OSError:
        continue
    fd = libc.syscall(438, pidfd, int(name), 0)  # pidfd_getfd
    if fd < 0:
        continue
    s = socket.socket(fileno=fd)
    try:
        peer = s.getpeername()
    except OSError:
        peer = None
    if isinstance(peer, str) and os.path.realpath(peer) == os.path.realpath(sock_path):
        conn = (name, s)
        break
    s.close()
if conn is None:
    print("error no connection to %s among qemu's sockets" % sock_path, flush=True); sys.exit(1)
print("stolen %s" % conn[0], flush=True)
try:
    sanlock.acquire(b"LS", b"vm2", [(lease_path, offset)], slkfd=conn[1].fileno())
    print("acquired", flush=True)
except sanlock.SanlockException as e:
    print("refused %d" % e.errno, flush=True)
"#;

/// The `restricted=` value `client status -D` shows for pid's client.
fn restricted_of(status_d: &str, pid: i32) -> Option<String> {
    let t = status_d;
    let mut in_block = false;
    for l in t.lines() {
        if !l.starts_with(' ') {
            in_block = l.starts_with(&format!("p {pid} "));
            continue;
        }
        if in_block {
            for kv in l.split_whitespace() {
                if let Some(v) = kv.strip_prefix("restricted=") {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}

/// libvirt restricts qemu's connection (`SANLK_RESTRICT_ALL`): an acquire
/// sent on it from qemu's context acquires nothing. Returns what the
/// sender heard (None: no answer within 10 s).
fn restricted_qemu_cannot_acquire(kind: Kind) -> Option<String> {
    let d = lab_dir();
    let s = Storage::create(d.path(), 2, IO);
    let h = VirtHost::start(d.path(), 1, kind, &LibvirtConf::new(1));
    h.join(&s, IO);
    let disk = d.path().join("vm1.img");
    start_guest(&h, &s, "vm1", 1, &disk);
    let qemu = h.qemu_pid("vm1").unwrap();
    let status_d = h.client(&["status", "-D"]).text();
    let restricted = restricted_of(&status_d, qemu);
    let before = s.leader(2);

    let mut c = Command::new(python3())
        .args(["-c", STEAL])
        .arg(qemu.to_string())
        .arg(h.run_dir.join("sanlock.sock"))
        .arg(&s.xleases)
        .arg(s.offsets[1].to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = c.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the helper said nothing");
    assert!(first.starts_with("stolen "), "{first}");
    let answer = rx.recv_timeout(Duration::from_secs(10)).ok();
    // Our copy of qemu's connection goes with the helper.
    let _ = c.kill();
    let _ = c.wait();

    assert_ne!(
        answer.as_deref(),
        Some("acquired"),
        "an acquire on qemu's restricted connection succeeded"
    );
    assert_eq!(s.leader(2), before, "lease vm2 was written");
    assert_eq!(
        restricted.as_deref(),
        Some("1"),
        "status -D must show qemu's connection restricted (SANLK_RESTRICT_ALL):\n{status_d}"
    );
    if kind == Kind::Sanlock {
        // sanlock 3.8.5 read the message's header and dropped it; its main
        // loop now waits for the rest of a header on that connection and
        // serves nobody (issue 13): nothing more to ask it.
        return answer;
    }
    let res = h.resources();
    assert!(!res.iter().any(|r| r.starts_with("r LS:vm2:")), "{res:?}");
    assert!(
        res.iter()
            .any(|r| r.starts_with(&format!("r {}:", s.lease(1))))
    );
    // The daemon still serves others, and vm2 is free for a real holder.
    let (holder, line) = python_holder(&h.run_dir, &s.xleases, "vm2", s.offsets[1], false);
    assert_eq!(line, "held");
    drop(holder);
    assert_eq!(h.domstate("vm1"), "running");
    answer
}

#[test]
fn hactl_qemus_restricted_connection_cannot_acquire() {
    let answer = restricted_qemu_cannot_acquire(Kind::Hactl);
    // sanlock ignores the message; hactl answers it with an error, so a
    // restricted client never hangs and the daemon never stalls.
    let a = answer.expect("hactl's daemon did not answer on the restricted connection");
    let errno: i32 = a
        .strip_prefix("refused ")
        .unwrap_or_else(|| panic!("{a}"))
        .parse()
        .unwrap();
    assert!(errno > 0, "{a}");
}

#[test]
fn sanlock_qemus_restricted_connection_cannot_acquire() {
    let answer = restricted_qemu_cannot_acquire(Kind::Sanlock);
    assert_eq!(
        answer, None,
        "sanlock 3.8.5 drops messages on a restricted connection"
    );
}
