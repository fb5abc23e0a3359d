//! lvm's shared VGs (lvmlockd, lock_type sanlock) on two hosts of this
//! machine, each with lvmlockd over its own lock daemon: both hactl, both
//! the real sanlock, and mixed. The same steps and the same assertions run
//! on every pair, as an admin would type them, so hactl is held to what
//! sanlock does under lvm. See tests/common/lvm.rs for how a host is made
//! (namespaces, lvm.conf, the lvmlock LV without device-mapper).
//!
//! Two tests run side by side, each running its cases in parallel threads:
//! the shared-VG walk-through at lvmlockd's default io_timeout (10 s), and
//! the takeover after a host's lock daemon is killed, at io_timeout 5
//! because the wait for the dead host is what it tests.

mod common;

use common::lvm::{LvmHost, Manager, Ran, SharedDisk, wait_for};
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Runs each case in its own thread and fails naming every case that failed
/// (each panic message is printed by its thread, with the hosts' logs).
fn run_cases(cases: Vec<(String, Box<dyn FnOnce() + Send>)>) {
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(name, f)| {
            let h = std::thread::Builder::new()
                .name(name.clone())
                .spawn(f)
                .unwrap();
            (name, h)
        })
        .collect();
    let failed: Vec<String> = handles
        .into_iter()
        .filter_map(|(name, h)| h.join().is_err().then_some(name))
        .collect();
    assert!(failed.is_empty(), "failed: {}", failed.join(", "));
}

fn pair_label(m1: Manager, m2: Manager) -> String {
    format!("{}+{}", m1.name(), m2.name())
}

/// The `r` lines of a host's `sanlock client status` in VG `vg`'s lockspace.
fn leases(h: &LvmHost, vg: &str) -> Vec<String> {
    h.client(&["status"])
        .lines()
        .filter(|l| l.starts_with(&format!("r lvm_{vg}:")))
        .map(str::to_string)
        .collect()
}

fn has_lockspace(h: &LvmHost, vg: &str) -> bool {
    let want = format!("s lvm_{vg}:{}:/dev/mapper/{vg}-lvmlock:0", h.host_id);
    h.client(&["status"]).lines().any(|l| l == want)
}

fn lv_uuid(h: &LvmHost, vg: &str, lv: &str) -> String {
    h.lvm(&[
        "lvs",
        "--noheadings",
        "-o",
        "lv_uuid",
        &format!("{vg}/{lv}"),
    ])
    .expect_ok()
    .stdout
    .trim()
    .to_string()
}

fn vg_seqno(h: &LvmHost, vg: &str) -> u32 {
    h.lvm(&["vgs", "--noheadings", "-o", "vg_seqno", vg])
        .expect_ok()
        .stdout
        .trim()
        .parse()
        .unwrap()
}

/// The version lvmlockd on `h` has for a VG's `VG` or `GL` lock (from
/// `lvmlockctl --info`: `LK VG un ver 4`): what it last read from, or
/// wrote to, the lock's LVB.
fn lock_version(h: &LvmHost, vg: &str, kind: &str) -> Option<u32> {
    h.lock_info(vg).iter().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 5 && f[0] == "LK" && f[1] == kind && f[3] == "ver")
            .then(|| f[4].parse().unwrap())
    })
}

/// The LV lock mode lvmlockd on `h` holds for `uuid`, per `lvmlockctl --info`.
fn lv_lock_mode(h: &LvmHost, vg: &str, uuid: &str) -> Option<String> {
    h.lock_info(vg).iter().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 4 && f[0] == "LK" && f[1] == "LV" && f[3] == uuid).then(|| f[2].to_string())
    })
}

/// A field of `sanlock direct read_leader` on the lvmlock LV, read from
/// outside the hosts (the loop device under it): of host 1's delta lease
/// in lockspace `lvm_VG` (`resource` None), or of the resource lease at
/// `offset` (whatever its name).
fn leader_field(disk: &SharedDisk, vg: &str, resource: Option<u64>, field: &str) -> String {
    let dev = &disk.lvmlock.dev;
    let (flag, spec) = match resource {
        None => ("-s", format!("lvm_{vg}:1:{dev}:0")),
        Some(offset) => ("-r", format!("lvm_{vg}:any:{dev}:{offset}")),
    };
    let out = run(sanlock(), &["direct", "read_leader", flag, &spec]).text();
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field} ")))
        .unwrap_or_else(|| panic!("no {field} in read_leader {spec}:\n{out}"))
        .to_string()
}

fn activate(h: &LvmHost, mode: &str, vg: &str, lv: &str) -> Ran {
    h.lvm(&["lvchange", mode, &format!("{vg}/{lv}")])
}

/// `vgremove VG` on `h`, retried until it succeeds: after the other host
/// stops the VG, `h`'s daemon sees its host_id released at one of its
/// renewals (every 2 × io_timeout).
fn vgremove_once_alone(h: &LvmHost, vg: &str) -> Ran {
    let mut last = None;
    let removed = wait_for(Duration::from_secs(90), || {
        let r = h.lvm(&["vgremove", vg]);
        let ok = r.ok();
        last = Some(r);
        ok
    });
    let last = last.unwrap();
    assert!(removed, "vgremove after the other host stopped: {last}");
    assert!(
        last.stdout
            .contains(&format!("Volume group \"{vg}\" successfully removed")),
        "{last}"
    );
    last
}

const LOCKED: &str = "LV locked by other host";

/// LV locks on `vg`: exclusive and shared, contended by the two hosts.
fn lv_locks(h1: &LvmHost, h2: &LvmHost, vg: &str) {
    let locked = format!("{LOCKED}: {vg}/lv1");
    // lvcreate activates the new LV, so host 1 holds its lock exclusively.
    h1.lvm(&["lvcreate", "-n", "lv1", "-L", "8m", vg])
        .expect_ok();
    let uuid = lv_uuid(h1, vg, "lv1");
    assert_eq!(lv_lock_mode(h1, vg, &uuid).as_deref(), Some("ex"));
    let held = leases(h1, vg);
    assert!(
        held.len() == 1 && held[0].contains(&uuid),
        "host 1's daemon should hold the LV's lease: {held:?}"
    );

    activate(h2, "-aey", vg, "lv1").expect_refused(&locked);
    activate(h2, "-asy", vg, "lv1").expect_refused(&locked);
    assert!(leases(h2, vg).is_empty());

    activate(h1, "-an", vg, "lv1").expect_ok();
    assert!(leases(h1, vg).is_empty(), "deactivation releases the lease");
    assert!(matches!(
        lv_lock_mode(h1, vg, &uuid).as_deref(),
        None | Some("un")
    ));

    // Shared on both hosts; neither can then have it exclusively.
    activate(h2, "-asy", vg, "lv1").expect_ok();
    activate(h1, "-asy", vg, "lv1").expect_ok();
    let mut shown = Vec::new();
    for h in [h1, h2] {
        assert_eq!(lv_lock_mode(h, vg, &uuid).as_deref(), Some("sh"));
        let held = leases(h, vg);
        assert!(held.len() == 1 && held[0].contains(&uuid), "{held:?}");
        // `r LS:RES:PATH:OFFSET:SH p PID`: the same text from either daemon.
        shown.push(held[0].rsplit_once(" p ").unwrap().0.to_string());
    }
    assert_eq!(shown[0], shown[1]);
    assert!(shown[0].ends_with(":SH"), "{}", shown[0]);
    activate(h1, "-aey", vg, "lv1").expect_refused(&locked);
    activate(h2, "-aey", vg, "lv1").expect_refused(&locked);
    assert_eq!(lv_lock_mode(h1, vg, &uuid).as_deref(), Some("sh"));

    // Once host 2 lets go, host 1 converts its shared lock to exclusive.
    activate(h2, "-an", vg, "lv1").expect_ok();
    activate(h1, "-aey", vg, "lv1").expect_ok();
    assert_eq!(lv_lock_mode(h1, vg, &uuid).as_deref(), Some("ex"));
    activate(h2, "-asy", vg, "lv1").expect_refused(&locked);
    activate(h1, "-an", vg, "lv1").expect_ok();
    assert!(leases(h1, vg).is_empty() && leases(h2, vg).is_empty());
}

/// The VG lock's LVB carries the VG's seqno from the host that changed the
/// VG to the other one.
fn vg_lvb(h1: &LvmHost, h2: &LvmHost, vg: &str) {
    h1.lvm(&["lvcreate", "-n", "lv2", "-L", "8m", vg])
        .expect_ok();
    activate(h1, "-an", vg, "lv2").expect_ok();
    let seq = vg_seqno(h1, vg);
    assert_eq!(lock_version(h1, vg, "VG"), Some(seq));
    let lvs = h2
        .lvm(&["lvs", "--noheadings", "-o", "lv_name", vg])
        .expect_ok();
    assert!(
        lvs.stdout.contains("lv2"),
        "host 2 sees host 1's new LV: {lvs}"
    );
    assert_eq!(
        lock_version(h2, vg, "VG"),
        Some(seq),
        "host 2's lvmlockd read the VG seqno host 1 left in the VG lock's LVB"
    );

    h2.lvm(&["lvremove", "-y", &format!("{vg}/lv2")])
        .expect_ok();
    let seq2 = vg_seqno(h2, vg);
    assert!(seq2 > seq);
    let lvs = h1
        .lvm(&["lvs", "--noheadings", "-o", "lv_name", vg])
        .expect_ok();
    assert!(!lvs.stdout.contains("lv2"), "{lvs}");
    assert_eq!(lock_version(h1, vg, "VG"), Some(seq2));
}

/// The walk-through on one pair: `a` on a 512-byte disk, created by host 1
/// (the first sanlock VG: it holds the global lock), `b` on a 4K disk,
/// created by host 2 under that global lock.
fn shared_vgs(dir: &Path, m1: Manager, m2: Manager, a: &str, b: &str) {
    let label = pair_label(m1, m2);
    let t = Instant::now();
    let d512 = SharedDisk::new(dir, "d512", 512);
    let d4k = SharedDisk::new(dir, "d4k", 4096);
    let disks = [&d512, &d4k];
    let h1 = LvmHost::start(&dir.join("h1"), &label, 1, m1, &disks, None);
    let h2 = LvmHost::start(&dir.join("h2"), &label, 2, m2, &disks, None);
    for h in [&h1, &h2] {
        h.add_lvmlock(a, &d512);
        h.add_lvmlock(b, &d4k);
    }

    // vgcreate --shared starts the VG's lockspace on the creating host.
    let made = h1.vgcreate(a, &d512);
    assert!(
        made.stdout.contains("Enabling sanlock global lock")
            && made
                .stdout
                .contains(&format!("Volume group \"{a}\" successfully created")),
        "{made}"
    );
    let lt = h1.lvm(&["vgs", "--noheadings", "-o", "vg_lock_type", a]);
    assert_eq!(lt.expect_ok().stdout.trim(), "sanlock");
    assert!(has_lockspace(&h1, a));
    assert_eq!(leader_field(&d512, a, None, "sector_size"), "512");

    h2.lvm(&["vgchange", "--lock-start", a]).expect_ok();
    assert!(has_lockspace(&h2, a));

    // Host 2 creates the second VG under the global lock in `a`.
    h2.vgcreate(b, &d4k);
    assert_eq!(leader_field(&d4k, b, None, "sector_size"), "4096");
    h1.lvm(&["vgchange", "--lock-start", b]).expect_ok();
    assert!(has_lockspace(&h1, b));
    eprintln!(
        "[{label}] both VGs started on both hosts after {:?}",
        t.elapsed()
    );

    lv_locks(&h1, &h2, a);
    lv_locks(&h2, &h1, b);
    vg_lvb(&h1, &h2, a);
    vg_lvb(&h2, &h1, b);

    // The global lock's LVB: host 2 was the last to release it exclusive
    // (after creating `b`; lvmlockd counts those releases), and host 1
    // reads the version host 2 left.
    h1.lvm(&["vgs"]).expect_ok();
    let gl = lock_version(&h2, a, "GL");
    assert!(gl.is_some_and(|v| v >= 1), "{:?}", h2.lock_info(a));
    assert_eq!(lock_version(&h1, a, "GL"), gl);

    // Moving the global lock from `a` to `b`.
    h1.lvm(&["lvmlockctl", "--gl-disable", a]).expect_ok();
    h1.lvm(&["lvmlockctl", "--gl-enable", b]).expect_ok();
    // The global lock's lease is the 65th of the lvmlock LV (1 MiB leases on
    // 512-byte sectors, 8 MiB on 4K).
    let name_a = leader_field(&d512, a, Some(65 << 20), "resource_name");
    let name_b = leader_field(&d4k, b, Some(65 * (8 << 20)), "resource_name");
    assert_eq!(
        (name_a.as_str(), name_b.as_str()),
        ("_GLLK_disabled", "GLLK")
    );
    h1.lvm(&["vgs"]).expect_ok();
    assert!(lock_version(&h1, b, "GL").is_some() && lock_version(&h1, a, "GL").is_none());
    // Host 2's lvmlockd still looks in `a`: its first try finds the lock
    // disabled there, after which it searches the started VGs.
    let mut tries = 0;
    while lock_version(&h2, b, "GL").is_none() {
        tries += 1;
        assert!(tries <= 2, "host 2 never found the moved global lock");
        h2.lvm(&["vgs"]).expect_ok();
    }
    assert_eq!(lock_version(&h2, a, "GL"), None);

    // Lock stop and start: a stopped VG gives its host no locks.
    h2.lvm(&["vgchange", "--lock-stop", a]).expect_ok();
    assert!(!has_lockspace(&h2, a));
    activate(&h2, "-aey", a, "lv1")
        .expect_refused(&format!("Cannot access VG {a} due to failed lock"));
    h2.lvm(&["vgchange", "--lock-start", a]).expect_ok();
    activate(&h2, "-aey", a, "lv1").expect_ok();
    activate(&h1, "-aey", a, "lv1").expect_refused(LOCKED);
    activate(&h2, "-an", a, "lv1").expect_ok();

    // vgremove is refused while the other host has the lockspace started.
    h1.lvm(&["lvremove", "-y", &format!("{a}/lv1")]).expect_ok();
    h1.lvm(&["vgremove", a])
        .expect_refused(&format!("Lockspace for \"{a}\" not stopped on other hosts"));
    h2.lvm(&["vgs", a]).expect_ok();
    h2.lvm(&["vgchange", "--lock-stop", a]).expect_ok();
    let t_stop = Instant::now();
    vgremove_once_alone(&h1, a);
    eprintln!(
        "[{label}] vgremove succeeded {:?} after host 2 stopped the VG",
        t_stop.elapsed()
    );
    assert!(!has_lockspace(&h1, a));
    // Its VG lease released renamed (SANLK_REL_RENAME) so that no host can
    // take it again, its lockspace renamed by write_lockspace.
    let name = leader_field(&d512, a, Some(66 << 20), "resource_name");
    assert_eq!(name, "invalid_removed");
    assert_eq!(leader_field(&d512, a, None, "space_name"), "#unused");
    h2.lvm(&["vgs", a])
        .expect_refused(&format!("Volume group \"{a}\" not found"));

    // Removing the VG that holds the global lock: its global lock's lease
    // is released renamed too.
    h2.lvm(&["lvremove", "-y", &format!("{b}/lv1")]).expect_ok();
    h1.lvm(&["vgchange", "--lock-stop", b]).expect_ok();
    assert!(!h1.client(&["status"]).lines().any(|l| l.starts_with("s ")));
    vgremove_once_alone(&h2, b);
    for (lease, offset) in [("global", 65u64), ("VG", 66)] {
        let name = leader_field(&d4k, b, Some(offset * (8 << 20)), "resource_name");
        assert_eq!(name, "invalid_removed", "the {lease} lock's lease");
    }
    assert_eq!(leader_field(&d4k, b, None, "space_name"), "#unused");
    assert!(!h2.client(&["status"]).lines().any(|l| l.starts_with("s ")));
    eprintln!("[{label}] walk-through done in {:?}", t.elapsed());
}

#[test]
fn shared_vgs_on_hactl_sanlock_and_mixed_pairs() {
    let w = workdir();
    let pairs = [
        (Manager::Hactl, Manager::Hactl, "hh"),
        (Manager::Sanlock, Manager::Sanlock, "ss"),
        (Manager::Sanlock, Manager::Hactl, "sh"),
    ];
    let cases = pairs
        .into_iter()
        .map(|(m1, m2, tag)| {
            let dir = w.path().join(tag);
            let f: Box<dyn FnOnce() + Send> = Box::new(move || {
                shared_vgs(&dir, m1, m2, &format!("{tag}512"), &format!("{tag}4k"))
            });
            (pair_label(m1, m2), f)
        })
        .collect();
    run_cases(cases);
}

/// lvmlockd's `--sanlock-timeout` in the takeover: below the default, as
/// the wait for the dead host is what is tested, but not 1 or 2. While the
/// other test's vgcreates write their lease areas (~0.5 GB on the 4K disk),
/// reads here took over 1 s, then over 2 s: the real sanlock's 8 MiB ballot
/// reads timed out, and once its LVB read timed out in an acquire, after
/// which sanlock 3.8.5 aborted ("corrupted size vs. prev_size"). At 5 the
/// wait (~100 s) still ends before the other test does.
const TAKEOVER_IO_TIMEOUT: u64 = 5;

/// Host 1 holds an LV exclusively; its lock daemon is killed (SIGKILL).
/// Host 2 is refused with lvm's error until host 1 is DEAD (8 × io_timeout
/// after its last renewal, plus the 60 s a watchdog would need to reset it),
/// then activates the LV.
fn takeover(dir: &Path, m1: Manager, m2: Manager, vg: &str, sector_size: u32) {
    let label = format!("takeover {}", pair_label(m1, m2));
    let disk = SharedDisk::new(dir, "d", sector_size);
    let io = Some(TAKEOVER_IO_TIMEOUT as u32);
    let mut h1 = LvmHost::start(&dir.join("h1"), &label, 1, m1, &[&disk], io);
    let h2 = LvmHost::start(&dir.join("h2"), &label, 2, m2, &[&disk], io);
    for h in [&h1, &h2] {
        h.add_lvmlock(vg, &disk);
    }
    h1.vgcreate(vg, &disk);
    h2.lvm(&["vgchange", "--lock-start", vg]).expect_ok();
    h1.lvm(&["lvcreate", "-n", "lv1", "-L", "8m", vg])
        .expect_ok();
    let uuid = lv_uuid(&h2, vg, "lv1");
    let locked = format!("{LOCKED}: {vg}/lv1");
    activate(&h2, "-aey", vg, "lv1").expect_refused(&locked);
    let live = wait_for(Duration::from_secs(30), || {
        parse_gets_hosts(&h2.client(&["gets", "-h", "1"]))
            .get(&1)
            .is_some_and(|(_, s)| s == "LIVE")
    });
    assert!(live, "host 2 should see host 1 LIVE before the crash");

    h1.kill_daemon();
    let killed = Instant::now();
    let (mut refusals, mut vg_lock_failures) = (0, 0);
    let got = loop {
        let r = activate(&h2, "-aey", vg, "lv1");
        if r.ok() {
            break killed.elapsed();
        }
        // A VG lock whose I/O timed out on this busy machine fails the
        // command with lvm's generic message; the user retries.
        if r.stderr
            .contains(&format!("Cannot access VG {vg} due to failed lock"))
        {
            let said: Vec<&str> = r
                .stderr
                .lines()
                .filter(|l| !l.contains("WARNING"))
                .collect();
            eprintln!(
                "[{label}] {:?} after the kill, retrying after: {}",
                killed.elapsed(),
                said.join(" / ")
            );
            vg_lock_failures += 1;
        } else {
            r.expect_refused(&locked);
            refusals += 1;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(200),
            "host 2 never got the lock of dead host 1"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    // Host 1 renewed at most 2 × io_timeout before the kill, and
    // timestamps are whole seconds: it cannot be DEAD any earlier.
    let earliest = Duration::from_secs(8 * TAKEOVER_IO_TIMEOUT + 60 - 2 * TAKEOVER_IO_TIMEOUT - 2);
    assert!(
        got >= earliest,
        "host 2 got the lock {got:?} after host 1's daemon died: before host 1 could be DEAD"
    );
    assert!(
        refusals > vg_lock_failures,
        "{refusals} refusals, {vg_lock_failures} VG lock failures"
    );
    let hosts = parse_gets_hosts(&h2.client(&["gets", "-h", "1"]));
    assert_eq!(
        hosts.get(&1).map(|(_, s)| s.as_str()),
        Some("DEAD"),
        "{hosts:?}"
    );
    let held = leases(&h2, vg);
    assert!(held.len() == 1 && held[0].contains(&uuid), "{held:?}");
    assert_eq!(lv_lock_mode(&h2, vg, &uuid).as_deref(), Some("ex"));
    eprintln!(
        "[{label}] host 2 got the LV lock {got:?} after host 1's daemon was killed \
         ({refusals} refusals, {vg_lock_failures} VG lock failures before)"
    );
}

#[test]
fn lv_lock_taken_over_after_a_hosts_daemon_dies() {
    let w = workdir();
    let cases = [
        (Manager::Hactl, Manager::Hactl, "thh", 4096),
        (Manager::Sanlock, Manager::Sanlock, "tss", 4096),
        (Manager::Hactl, Manager::Sanlock, "ths", 512),
        (Manager::Sanlock, Manager::Hactl, "tsh", 512),
    ];
    let cases = cases
        .into_iter()
        .map(|(m1, m2, vg, sector)| {
            let dir = w.path().join(vg);
            let f: Box<dyn FnOnce() + Send> = Box::new(move || takeover(&dir, m1, m2, vg, sector));
            (format!("takeover {}", pair_label(m1, m2)), f)
        })
        .collect();
    run_cases(cases);
}
