//! The Rust client API (`hactl::client`) through the real sanlock daemon
//! and through `hactl daemon`: the same results from both, leases released
//! when a Registration is dropped, and a lease held by one registration
//! refused to another (-EEXIST on the same host, SANLK_ACQUIRE_IDLIVE from
//! another host).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use hactl::client::{AcquireFlags, ForceMode, Lockspace, Resource, Sanlock, WriteOptions};

const MIB: usize = 1 << 20;

struct Files {
    _dir: tempfile::TempDir,
    ls: PathBuf,
    res: PathBuf,
}

fn files() -> Files {
    let dir = workdir();
    let ls = dir.path().join("ls");
    let res = dir.path().join("res");
    make_file(&ls, MIB, 0);
    make_file(&res, 8 * MIB, 0);
    for args in [
        vec![
            "direct",
            "init",
            "-s",
            &format!("LS:0:{}:0", p(&ls)),
            "-o",
            "1",
        ],
        vec!["direct", "init", "-r", &format!("LS:R1:{}:1M", p(&res))],
        vec!["direct", "init", "-r", &format!("LS:R2:{}:2M", p(&res))],
    ] {
        assert_eq!(run(hactl(), &args).code, 0, "{args:?}");
    }
    Files { _dir: dir, ls, res }
}

fn lockspace(f: &Files, host_id: u64) -> Lockspace {
    Lockspace {
        name: "LS".into(),
        host_id,
        path: f.ls.clone(),
        offset: 0,
    }
}

fn rv<T>(r: &Result<T, hactl::client::Error>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.rv(),
    }
}

/// Exclusive leases through the API; returns each step's result so the two
/// daemons can be compared.
fn exclusive_steps(rd: &Path, f: &Files) -> Vec<(&'static str, String)> {
    let sl = Sanlock::connect(rd).unwrap();
    sl.add_lockspace(&lockspace(f, 1), 1, true).unwrap();
    assert_eq!(rv(&sl.inq_lockspace(&lockspace(f, 1))), 0);
    let lss = sl.get_lockspaces().unwrap();
    assert_eq!(lss, vec![lockspace(f, 1)]);

    let r1 = Resource::new("LS", "R1", &f.res, MIB as u64);
    let r2 = Resource::new("LS", "R2", &f.res, 2 * MIB as u64);
    let mut steps = Vec::new();
    let mut a = sl.register().unwrap();
    let mut b = sl.register().unwrap();

    let r = a.acquire(std::slice::from_ref(&r1), AcquireFlags::default());
    assert_eq!(rv(&r), 0, "{r:?}");
    steps.push(("a acquire R1", rv(&r).to_string()));
    let held = a.inquire().unwrap();
    assert_eq!(
        held,
        vec![Resource {
            lver: Some(1),
            ..r1.clone()
        }]
    );
    steps.push(("a inquire", format!("{held:?}")));

    // Held by a: refused to b on the same host.
    let r = b.acquire(std::slice::from_ref(&r1), AcquireFlags::default());
    assert_eq!(rv(&r), -libc::EEXIST, "{r:?}");
    steps.push(("b acquire R1", rv(&r).to_string()));
    let r = b.acquire(
        &[Resource {
            lver: Some(7),
            ..r2.clone()
        }],
        AcquireFlags::default(),
    );
    assert_eq!(rv(&r), hactl::rv::SANLK_ACQUIRE_LVER, "{r:?}");
    steps.push(("b acquire R2 lver 7", rv(&r).to_string()));
    let r = b.acquire(
        &[Resource::new("LS", "R9", &f.res, 2 * MIB as u64)],
        AcquireFlags::default(),
    );
    steps.push(("b acquire wrong name", rv(&r).to_string()));
    let r = b.release(std::slice::from_ref(&r2));
    steps.push(("b release not held", rv(&r).to_string()));
    let r = b.acquire(std::slice::from_ref(&r2), AcquireFlags::default());
    assert_eq!(rv(&r), 0, "{r:?}");
    let r = b.release_all();
    steps.push(("b release_all", rv(&r).to_string()));
    assert_eq!(b.inquire().unwrap(), vec![]);

    // Dropping a closes its registration: the daemon releases R1, b gets
    // it (with the next version).
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = b.acquire(std::slice::from_ref(&r1), AcquireFlags::default());
        if rv(&r) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "R1 never released: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let held = b.inquire().unwrap();
    assert_eq!(held[0].lver, Some(2), "{held:?}");
    steps.push(("b inquire after a dropped", format!("{held:?}")));
    let r = b.release(std::slice::from_ref(&r1));
    assert_eq!(rv(&r), 0, "{r:?}");
    steps.push(("b release R1", rv(&r).to_string()));
    steps
}

#[test]
fn api_exclusive_leases_same_on_both_daemons() {
    let mut t = Tally("client API (EX)", 0);
    let (fs, fh) = (files(), files());
    let sd = SanlockDaemon::start(&fs._dir.path().join("run"));
    let hd = HactlDaemon::start(&fh._dir.path().join("run"));
    let theirs = exclusive_steps(&sd.run_dir, &fs);
    let ours = exclusive_steps(&hd.run_dir, &fh);
    assert_eq!(theirs.len(), ours.len());
    for ((what, s), (_, h)) in theirs.iter().zip(&ours) {
        let (s, h) = (s.replace(p(&fs.res), "RES"), h.replace(p(&fh.res), "RES"));
        t.same(what, h.as_bytes(), s.as_bytes());
    }
}

/// A lease held through one daemon is refused through the other daemon
/// (another host of the same lockspace, alive): SANLK_ACQUIRE_IDLIVE.
#[test]
fn api_lease_held_on_one_host_is_refused_on_the_other() {
    let mut t = Tally("client API (two hosts)", 0);
    let f = files();
    let sd = SanlockDaemon::start(&f._dir.path().join("s"));
    let hd = HactlDaemon::start(&f._dir.path().join("h"));
    let (s, h) = (
        Sanlock::connect(&sd.run_dir).unwrap(),
        Sanlock::connect(&hd.run_dir).unwrap(),
    );
    s.add_lockspace(&lockspace(&f, 1), 1, true).unwrap();
    h.add_lockspace(&lockspace(&f, 2), 1, true).unwrap();
    let r1 = Resource::new("LS", "R1", &f.res, MIB as u64);
    let r2 = Resource::new("LS", "R2", &f.res, 2 * MIB as u64);

    let mut on_s = s.register().unwrap();
    let mut on_h = h.register().unwrap();
    on_s.acquire(std::slice::from_ref(&r1), AcquireFlags::default())
        .unwrap();
    on_h.acquire(std::slice::from_ref(&r2), AcquireFlags::default())
        .unwrap();
    let refused_by_h = rv(&on_h.acquire(std::slice::from_ref(&r1), AcquireFlags::default()));
    let refused_by_s = rv(&on_s.acquire(std::slice::from_ref(&r2), AcquireFlags::default()));
    assert_eq!(refused_by_s, hactl::rv::SANLK_ACQUIRE_IDLIVE);
    t.same(
        "acquire of a lease held by a live host of the other implementation",
        refused_by_h.to_string().as_bytes(),
        refused_by_s.to_string().as_bytes(),
    );
    // Released on one host, the other gets it.
    on_s.release(std::slice::from_ref(&r1)).unwrap();
    on_h.acquire(std::slice::from_ref(&r1), AcquireFlags::default())
        .unwrap();
    assert_eq!(on_h.inquire().unwrap().len(), 2);
}

/// write/read_resource, owners, SH, convert, request, LVB.
fn full_steps(rd: &Path, f: &Files) -> Vec<(&'static str, String)> {
    let sl = Sanlock::connect(rd).unwrap();
    sl.add_lockspace(&lockspace(f, 1), 1, true).unwrap();
    let mut steps = Vec::new();
    let r3 = Resource::new("LS", "R3", &f.res, 3 * MIB as u64);
    let r = sl.write_resource(&r3, WriteOptions::default());
    assert_eq!(rv(&r), 0, "{r:?}");
    let got = sl.read_resource(&f.res, 3 * MIB as u64).unwrap();
    assert_eq!((got.name.as_str(), got.lver), ("R3", None));
    steps.push((
        "read_resource",
        format!("{:?}", (got.lockspace, got.name, got.lver)),
    ));
    let r = sl.read_resource(&f.res, 5 * MIB as u64);
    steps.push(("read_resource nothing", rv(&r).to_string()));
    assert_eq!(sl.read_resource_owners(&r3).unwrap(), vec![]);

    let mut a = sl.register().unwrap();
    steps.push(("restrict 0", rv(&a.restrict(0)).to_string()));
    let kp = a.killpath("/bin/true", &["a b", "c\\"]);
    steps.push(("killpath", rv(&kp).to_string()));
    let long = "x".repeat(200);
    steps.push(("killpath too long", rv(&a.killpath(&long, &[])).to_string()));
    a.acquire(
        std::slice::from_ref(&r3),
        AcquireFlags {
            lvb: true,
            ..Default::default()
        },
    )
    .unwrap();
    let owners = sl.read_resource_owners(&r3).unwrap();
    assert_eq!((owners.len(), owners[0].host_id), (1, 1));
    assert_ne!(owners[0].timestamp, 0);
    let zero = sl.get_lvb(&r3, 512).unwrap();
    assert_eq!(zero, vec![0u8; 512]);
    sl.set_lvb(&r3, b"hello").unwrap();
    let lvb = sl.get_lvb(&r3, 8).unwrap();
    steps.push(("get_lvb", format!("{lvb:?}")));
    steps.push(("set_lvb 513", rv(&sl.set_lvb(&r3, &[1u8; 513])).to_string()));
    a.convert(&r3, true).unwrap();
    steps.push((
        "inquire after convert",
        format!("{:?}", a.inquire().unwrap()),
    ));
    a.convert(&r3, false).unwrap();
    let req = sl.request(
        &Resource {
            lver: Some(1),
            ..r3.clone()
        },
        ForceMode::None,
    );
    steps.push(("request old", rv(&req).to_string()));
    a.release(std::slice::from_ref(&r3)).unwrap();
    // The LVB went to disk on release: the next holder reads it.
    a.acquire(
        std::slice::from_ref(&r3),
        AcquireFlags {
            lvb: true,
            ..Default::default()
        },
    )
    .unwrap();
    steps.push((
        "get_lvb after release",
        format!("{:?}", sl.get_lvb(&r3, 8).unwrap()),
    ));
    steps
        .iter_mut()
        .for_each(|(_, v)| *v = v.replace(p(&f.res), "RES"));
    steps
}

#[test]
fn api_resource_io_on_sanlock_daemon() {
    let f = files();
    let d = SanlockDaemon::start(&f._dir.path().join("run"));
    let steps = full_steps(&d.run_dir, &f);
    let get = |k: &str| steps.iter().find(|(w, _)| *w == k).unwrap().1.clone();
    assert_eq!(get("get_lvb"), format!("{:?}", b"hello\0\0\0".to_vec()));
    assert_eq!(get("get_lvb after release"), get("get_lvb"));
    assert_eq!(get("set_lvb 513"), (-libc::E2BIG).to_string());
    assert_eq!(get("request old"), hactl::rv::SANLK_REQUEST_OLD.to_string());
    assert_eq!(
        get("read_resource nothing"),
        hactl::rv::SANLK_LEADER_MAGIC.to_string()
    );
    assert_eq!(get("restrict 0"), "0");
    assert_eq!(get("killpath"), "0");
    assert_eq!(get("killpath too long"), (-libc::EINVAL).to_string());
}

#[test]
fn api_resource_io_same_on_both_daemons() {
    let mut t = Tally("client API (LVB, convert, request, read/write)", 0);
    let (fs, fh) = (files(), files());
    let sd = SanlockDaemon::start(&fs._dir.path().join("run"));
    let hd = HactlDaemon::start(&fh._dir.path().join("run"));
    let theirs = full_steps(&sd.run_dir, &fs);
    let ours = full_steps(&hd.run_dir, &fh);
    for ((what, s), (_, h)) in theirs.iter().zip(&ours) {
        t.same(what, h.as_bytes(), s.as_bytes());
    }
}
