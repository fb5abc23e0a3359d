//! HA scenarios on a real cluster on this machine (src/ha/cluster.rs):
//! three hosts, each an `hactl daemon -w 0` plus an `hactl ha agent` in
//! one process group, and demo VMs that write their host id into their own
//! disk files. Each scenario ends with the split-brain check over every VM
//! disk (no two runs of a VM ever wrote at the same time), and each VM of
//! a lost host must write again from a survivor, never before the lost host
//! was DEAD. io_timeout is 1 s, so DEAD comes 68 s after the last renewal:
//! each test takes 90-120 s; they run in parallel.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use hactl::ha::cluster::{Cluster, ClusterOpts};

use common::ha::*;
use common::*;

const FRESH: Duration = Duration::from_millis(1500);

fn started(dir: &Path, opts: ClusterOpts) -> Cluster {
    let mut c = Cluster::create(dir, opts).expect("cluster files");
    c.start_all().expect("hosts start");
    wait_for("every VM to run", Duration::from_secs(60), || {
        c.running_on(FRESH).iter().all(Option::is_some)
    });
    c
}

fn opts(vms: usize) -> ClusterOpts {
    ClusterOpts::new(Path::new(hactl()), 3, vms)
}

/// The host running the most VMs among `among`.
fn busiest(c: &Cluster, among: &[u64]) -> u64 {
    let on = c.running_on(FRESH);
    *among
        .iter()
        .max_by_key(|&&h| on.iter().filter(|o| **o == Some(h)).count())
        .unwrap()
}

fn on_host(c: &Cluster, h: u64) -> Vec<usize> {
    let on = c.running_on(FRESH);
    (0..on.len()).filter(|&i| on[i] == Some(h)).collect()
}

/// Local maintenance moves a host's VMs away (stopped there, started
/// elsewhere), and while it lasts a crashed host's VMs go to the one other
/// survivor: the host in maintenance takes none, even when it is the only
/// other one with room.
#[test]
fn crash_while_another_host_is_in_local_maintenance() {
    let dir = Dir::new();
    let mut c = started(dir.path(), opts(4));
    let maint = busiest(&c, &[1, 2, 3]);
    let had = on_host(&c, maint);
    let t_maint = unix_now();
    let o = run(
        hactl(),
        &[
            "ha",
            "maintenance",
            "--local",
            "on",
            "--run-dir",
            p(&c.host(maint).agent_dir),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let moved = wait_for(
        "host in maintenance to hand its VMs over",
        Duration::from_secs(40),
        || {
            let on = c.running_on(FRESH);
            on.iter().all(|h| h.is_some_and(|h| h != maint))
        },
    );
    eprintln!(
        "local maintenance on host {maint}: {} VM(s) moved in {moved:?}",
        had.len()
    );
    let st = c.status(maint).unwrap();
    assert_eq!(st["local_maintenance"], true);
    assert_eq!(
        st["score"], 0,
        "a host in local maintenance publishes score 0"
    );

    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&h| h != maint).collect();
    let victim = busiest(&c, &others);
    let survivor = others.into_iter().find(|&h| h != victim).unwrap();
    let lost = on_host(&c, victim);
    assert!(!lost.is_empty());
    let t_lost = unix_now();
    c.crash(victim);
    let took = wait_for(
        "the lost VMs to run on the survivor",
        Duration::from_secs(HOST_DEAD + 45),
        || {
            let on = c.running_on(FRESH);
            lost.iter().all(|&i| on[i] == Some(survivor))
        },
    );
    eprintln!(
        "host {victim} crashed: {} VM(s) back on host {survivor} after {took:?}",
        lost.len()
    );
    let on = c.running_on(FRESH);
    assert!(
        on.iter().all(|h| *h == Some(survivor)),
        "every VM runs on host {survivor}, none on host {maint} in maintenance: {on:?}"
    );
    assert_no_start_before_dead(&c, &lost, victim, &[survivor, maint], t_lost);
    assert!(
        c.vm_names
            .iter()
            .all(|n| starts_after(&c, maint, n, t_maint).is_empty()),
        "the host in local maintenance started nothing"
    );
    // What an operator sees on the survivor.
    let env = [("SANLOCK_RUN_DIR", p(&c.host(survivor).daemon_dir))];
    let cfg = p(&c.host(survivor).config).to_string();
    // The survivor's sector lists a VM once its agent has seen it run
    // (within a cycle or two of the disk writes).
    let status = || {
        let o = run_env(hactl(), &["ha", "status", "-c", &cfg, "--json"], &env);
        assert_eq!(o.code, 0, "{}", o.stderr);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let mut st = status();
    let listed = |st: &serde_json::Value| {
        st["vms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|vm| vm["whiteboard_hosts"] == serde_json::json!([survivor]))
    };
    let t = Instant::now();
    while !listed(&st) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(500));
        st = status();
    }
    let host = |h: u64| {
        st["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["host_id"] == h)
            .unwrap()
            .clone()
    };
    assert_eq!(host(victim)["state"], "DEAD");
    assert_eq!(host(survivor)["state"], "LIVE");
    assert_eq!(host(maint)["local_maintenance"], true);
    for vm in st["vms"].as_array().unwrap() {
        assert_eq!(vm["lease"]["state"], "held", "{vm}");
        assert_eq!(vm["lease"]["owner"], survivor, "{vm}");
        assert_eq!(
            vm["whiteboard_hosts"],
            serde_json::json!([survivor]),
            "{vm}"
        );
    }
    let text = run_env(hactl(), &["ha", "status", "-c", &cfg], &env).text();
    assert!(text.contains("DEAD") && text.contains("LOCAL"), "{text}");
    let o = run(
        hactl(),
        &["ha", "events", "--run-dir", p(&c.host(survivor).agent_dir)],
    );
    assert_eq!(o.code, 0);
    let timeline = o.text();
    assert!(
        timeline.contains(&format!("host {victim} FAIL -> DEAD"))
            && timeline.contains("never restarted before DEAD"),
        "{timeline}"
    );
    c.stop_all();
    assert_disks_ok(&c);
}

/// Global maintenance: a hung host goes DEAD and nothing is restarted;
/// once maintenance is off, its VMs run on the survivors. The hung host
/// is SIGKILLed only after that (its watchdog would have reset it), and
/// its frozen VMs never write again.
#[test]
fn hang_under_global_maintenance_then_restart() {
    let dir = Dir::new();
    let mut c = started(dir.path(), opts(4));
    let config = c.host(1).config.clone();
    let o = run(
        hactl(),
        &["ha", "maintenance", "--global", "on", "-c", p(&config)],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let victim = busiest(&c, &[1, 2, 3]);
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|&h| h != victim).collect();
    let lost = on_host(&c, victim);
    let kept: Vec<usize> = (0..c.vm_names.len())
        .filter(|i| !lost.contains(i))
        .collect();
    let t_lost = unix_now();
    c.hang(victim);
    wait_for(
        "the survivors to see the hung host DEAD",
        Duration::from_secs(HOST_DEAD + 20),
        || {
            survivors
                .iter()
                .all(|&s| dead_logged_at(&c, s, victim).is_some())
        },
    );
    std::thread::sleep(Duration::from_secs(8));
    let on = c.running_on(FRESH);
    for &i in &lost {
        assert_eq!(
            on[i], None,
            "{} was started under global maintenance",
            c.vm_names[i]
        );
    }
    for &i in &kept {
        assert!(
            on[i].is_some(),
            "{} stopped under global maintenance",
            c.vm_names[i]
        );
    }
    let said = c.events(survivors[0]).iter().any(|e| {
        e["kind"] == "wait"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("global maintenance"))
    });
    assert!(
        said,
        "the survivors' events give global maintenance as the reason"
    );
    let t_off = unix_now();
    let o = run(
        hactl(),
        &["ha", "maintenance", "--global", "off", "-c", p(&config)],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let took = wait_for(
        "the hung host's VMs to run on survivors",
        Duration::from_secs(30),
        || {
            let on = c.running_on(FRESH);
            lost.iter().all(|&i| on[i].is_some_and(|h| h != victim))
        },
    );
    eprintln!(
        "global maintenance off: {} VM(s) back after {took:?}",
        lost.len()
    );
    for &s in &survivors {
        for &i in &lost {
            assert!(
                starts_after(&c, s, &c.vm_names[i], t_lost)
                    .iter()
                    .all(|&t| t >= t_off),
                "host {s} started {} during global maintenance",
                c.vm_names[i]
            );
        }
    }
    // The watchdog's job, late: the hung host never runs again.
    c.kill(victim);
    std::thread::sleep(Duration::from_secs(2));
    c.stop_all();
    assert_disks_ok(&c);
}

/// A host whose storage freezes (its path to the lockspace, xleases and
/// whiteboard goes through a FUSE pass-through whose server is stopped):
/// its daemon cannot renew, kills its VMs (the lease holders) within the
/// kill sequence, and the others restart them once it is DEAD. The VM
/// disks are reached directly, so a VM left running would be caught.
#[test]
fn storage_freeze_kills_the_vms_and_others_restart_them() {
    let dir = Dir::new();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut o = opts(3);
    o.storage_via.insert(1, mnt.clone());
    for i in 0..3 {
        o.vm_extra.insert(i, "preferred_hosts = [1]".into());
    }
    let mut c = Cluster::create(dir.path(), o).expect("cluster files");
    let fuse = Fuse::start(&c.shared, &mnt);
    // Host 1 first, alone: its storage goes through FUSE and is slower, so
    // when all three start together it can still be warming up when the
    // others' grace ends, and they win the race for its preferred VMs
    // (running VMs are not moved back). This test needs them on host 1.
    c.start_daemon(1).expect("host 1's daemon");
    c.start_agent(1).expect("host 1's agent");
    wait_for("every VM to run on host 1", Duration::from_secs(60), || {
        c.running_on(FRESH).iter().all(|h| *h == Some(1))
    });
    for h in [2, 3] {
        c.start_daemon(h).expect("daemon");
        c.start_agent(h).expect("agent");
    }
    wait_for(
        "hosts 2 and 3 to see host 1 LIVE",
        Duration::from_secs(30),
        || {
            [2, 3].iter().all(|&h| {
                c.status(h).is_some_and(|s| {
                    s["hosts"].as_array().is_some_and(|a| {
                        a.iter().any(|x| x["host_id"] == 1 && x["state"] == "LIVE")
                    })
                })
            })
        },
    );
    let t_lost = unix_now();
    fuse.signal(libc::SIGSTOP);
    let stopped = wait_for(
        "host 1's daemon to kill its VMs",
        Duration::from_secs(8 + 40),
        || c.running_on(FRESH).iter().all(Option::is_none),
    );
    eprintln!("storage frozen: host 1's VMs stopped writing after {stopped:?}");
    let took = wait_for(
        "the VMs to run on hosts 2 and 3",
        Duration::from_secs(HOST_DEAD + 45),
        || {
            c.running_on(FRESH)
                .iter()
                .all(|h| h.is_some_and(|h| h != 1))
        },
    );
    eprintln!("... and run on the survivors {took:?} later");
    assert_no_start_before_dead(&c, &[0, 1, 2], 1, &[2, 3], t_lost);
    // The watchdog's reset: SIGKILL first; only then may the storage
    // answer again (processes blocked on it finish dying then).
    c.kill(1);
    fuse.signal(libc::SIGCONT);
    c.stop_all();
    drop(fuse);
    assert_disks_ok(&c);
}

/// An agent that is restarted (upgrade, crash of the agent alone) finds
/// the VMs its host still runs as the holders of their leases and takes
/// charge of them instead of starting them again; it can stop them later
/// (local maintenance moves them to the other hosts).
#[test]
fn restarted_agent_adopts_its_running_vms() {
    let dir = Dir::new();
    let mut o = opts(3);
    o.vms_die_with_agent = false;
    let mut c = started(dir.path(), o);
    let h = busiest(&c, &[1, 2, 3]);
    let mine = on_host(&c, h);
    let runs_before: Vec<u64> = c
        .check_disks()
        .iter()
        .map(|(_, r)| r.runs.last().unwrap().run_id)
        .collect();
    c.restart_agent(h).unwrap();
    wait_for(
        "the new agent to adopt its VMs",
        Duration::from_secs(20),
        || {
            c.events(h)
                .iter()
                .filter(|e| {
                    e["kind"] == "running"
                        && e["reason"].as_str().is_some_and(|r| r.contains("adopted"))
                })
                .count()
                == mine.len()
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let after = c.check_disks();
    for &i in &mine {
        let last = after[i].1.runs.last().unwrap();
        assert_eq!(
            last.run_id, runs_before[i],
            "{} was started again",
            c.vm_names[i]
        );
        assert_eq!(c.running_on(FRESH)[i], Some(h));
    }
    let o = run(
        hactl(),
        &[
            "ha",
            "maintenance",
            "--local",
            "on",
            "--run-dir",
            p(&c.host(h).agent_dir),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    wait_for(
        "the adopted VMs to move to the other hosts",
        Duration::from_secs(30),
        || {
            c.running_on(FRESH)
                .iter()
                .all(|x| x.is_some_and(|x| x != h))
        },
    );
    c.stop_all();
    assert_disks_ok(&c);
}

/// A lease left held by a LIVE host with no process (another host's racing
/// ballot rewrote the leader with that host's value, so the daemon's release
/// left it; made here with `direct acquire` as that host) can be taken by
/// nobody else. When that host is in local maintenance its agent releases
/// it through its daemon, and another host starts the VM.
#[test]
fn leftover_lease_of_a_host_in_local_maintenance_is_released() {
    let dir = Dir::new();
    let mut c = Cluster::create(dir.path(), opts(2)).expect("cluster files");
    let config = c.host(1).config.clone();
    let maint = |on: &str| {
        let o = run(
            hactl(),
            &["ha", "maintenance", "--global", on, "-c", p(&config)],
        );
        assert_eq!(o.code, 0, "{}", o.stderr);
    };
    maint("on");
    c.start_all().expect("hosts start");
    let generation = {
        let mut g = None;
        wait_for("host 3 to join", Duration::from_secs(30), || {
            g = c.status(3).and_then(|st| {
                st["hosts"]
                    .as_array()?
                    .iter()
                    .find(|h| h["host_id"] == 3 && h["state"] == "LIVE")
                    .and_then(|h| h["generation"].as_u64())
            });
            g.is_some()
        });
        g.unwrap()
    };
    let xl = c.shared.join("xleases");
    let res = run(hactl(), &["xleases", "lookup", "-p", p(&xl), "vm1"]).text();
    let o = run(
        hactl(),
        &[
            "direct",
            "acquire",
            "-r",
            res.trim(),
            "-i",
            "3",
            "-g",
            &generation.to_string(),
        ],
    );
    assert_eq!(
        o.code,
        0,
        "direct acquire as host 3: {} {}",
        o.text(),
        o.stderr
    );
    let o = run(
        hactl(),
        &[
            "ha",
            "maintenance",
            "--local",
            "on",
            "--run-dir",
            p(&c.host(3).agent_dir),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    maint("off");
    let took = wait_for("vm1 to run on host 1 or 2", Duration::from_secs(30), || {
        c.running_on(FRESH)
            .iter()
            .all(|h| h.is_some_and(|h| h != 3))
    });
    eprintln!("the leftover lease was released and vm1 runs elsewhere after {took:?}");
    // Host 3's agent logs the release after it: another host may start
    // vm1 (and the wait above end) a moment before the line is written.
    wait_for(
        "host 3's agent to log the leftover lease released",
        Duration::from_secs(10),
        || {
            c.events(3).iter().any(|e| {
                e["vm"] == "vm1"
                    && e["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("leftover lease released"))
            })
        },
    );
    c.stop_all();
    assert_disks_ok(&c);
}
