//! Fast failover with fencing (issue 16), on a real cluster on this
//! machine (src/ha/cluster.rs: each host an `hactl daemon -w 0` plus an
//! `hactl ha agent` in one process group, demo VMs writing their disks).
//! A hung host is fenced by a fence agent (`hactl ha fence-test`, which
//! powers a test host off by SIGKILL of its process group, or Debian's
//! real `fence_ipmilan` talking IPMI over LAN to OpenIPMI's `ipmi_sim`,
//! whose chassis power control runs a script that does the same), then
//! declared dead on storage: its delta lease released as sanlock releases
//! a host_id. Its VMs run again elsewhere long before sanlock's DEAD
//! (68 s at io_timeout 1), and a real sanlock 3.8.5 host takes its lease
//! at once. Without a confirmed off nothing is declared.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hactl::ha::cluster::{Cluster, ClusterOpts};
use hactl::ha::fence;

use common::*;

const FRESH: Duration = Duration::from_millis(1500);
/// sanlock's host_dead_seconds at io_timeout 1.
const HOST_DEAD: f64 = 68.0;

/// The test's directory, kept (and named) when the test fails.
struct Dir(Option<tempfile::TempDir>);

impl Dir {
    fn new() -> Dir {
        Dir(Some(workdir()))
    }
    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(d) = self.0.take()
        {
            eprintln!("test files kept in {}", d.keep().display());
        }
    }
}

fn wait(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(
        lvm::wait_for(limit, f),
        "timed out after {limit:?} waiting for {what}"
    );
}

/// A three-host cluster whose VMs all prefer host 3, with fencing by the
/// test agent (`knobs` per host) unless `fencing` says otherwise.
fn opts(dir: &Path, vms: usize, knobs: &[(u64, &str)], fencing: Option<String>) -> ClusterOpts {
    let mut o = ClusterOpts::new(Path::new(hactl()), 3, vms);
    for i in 0..vms {
        o.vm_extra.insert(i, "preferred_hosts = [3]".into());
    }
    let knobs: BTreeMap<u64, String> = knobs.iter().map(|(h, k)| (*h, k.to_string())).collect();
    o.extra_config =
        fencing.unwrap_or_else(|| fence::test_section(Path::new(hactl()), dir, 3, 20, &knobs));
    o
}

/// Host 3 joins alone and starts its VMs before hosts 1 and 2 join: with
/// all three agents at once, a host 3 slow to join on a loaded machine
/// lets another host start the VMs first (and they stay there).
fn started(dir: &Path, o: ClusterOpts) -> Cluster {
    let mut c = Cluster::create(dir, o).expect("cluster files");
    for id in 1..=3 {
        c.start_daemon(id).expect("daemon starts");
    }
    c.start_agent(3).expect("agent 3 starts");
    wait("every VM to run on host 3", Duration::from_secs(90), || {
        c.running_on(FRESH).iter().all(|o| *o == Some(3))
    });
    for id in 1..=2 {
        c.start_agent(id).expect("agent starts");
    }
    wait(
        "hosts 1 and 2 to see host 3 LIVE",
        Duration::from_secs(60),
        || {
            (1..=2).all(|h| {
                c.status(h).is_some_and(|s| {
                    s["hosts"].as_array().is_some_and(|hs| {
                        hs.iter().any(|x| x["host_id"] == 3 && x["state"] == "LIVE")
                    })
                })
            })
        },
    );
    c
}

/// The reasons of `host`'s events of `kind`.
fn reasons(c: &Cluster, host: u64, kind: &str) -> Vec<String> {
    c.events(host)
        .iter()
        .filter(|e| e["kind"] == kind)
        .filter_map(|e| e["reason"].as_str().map(String::from))
        .collect()
}

/// When `host` logged an event of `kind` whose reason contains `text`.
fn event_at(c: &Cluster, host: u64, kind: &str, text: &str) -> Option<f64> {
    c.events(host)
        .iter()
        .find(|e| e["kind"] == kind && e["reason"].as_str().is_some_and(|r| r.contains(text)))
        .and_then(|e| e["t_unix"].as_f64())
}

fn split_brain_check(c: &Cluster) -> Vec<PathBuf> {
    let mut bad = Vec::new();
    for (path, rep) in c.check_disks() {
        eprint!("{}", hactl::ha::demo_vm::render(&path, &rep));
        if !rep.violations.is_empty() {
            bad.push(path);
        }
    }
    bad
}

/// A hung host (SIGSTOP of its daemon, agent and VMs) is fenced by the
/// lowest LIVE host with the test agent, which kills its process group and
/// confirms off; its delta lease is released and its VMs run again on the
/// others within seconds, not after host_dead_seconds. Host 2 leaves the
/// fence to host 1. Status, events and status.json say what happened.
#[test]
fn hung_host_is_fenced_and_its_vms_run_again_within_seconds() {
    let dir = Dir::new();
    let mut c = started(dir.path(), opts(dir.path(), 3, &[], None));
    let pgid = c.host(3).pgid;
    let t0 = Instant::now();
    let t_hang = hactl::ha::agent::unix_now();
    c.hang(3);
    wait(
        "host 3's VMs to run on hosts 1 and 2",
        Duration::from_secs(60),
        || {
            c.running_on(FRESH)
                .iter()
                .all(|o| matches!(o, Some(1) | Some(2)))
        },
    );
    let failover = t0.elapsed().as_secs_f64();
    eprintln!("failover with fencing: {failover:.1} s after the hang (DEAD at {HOST_DEAD} s)");
    assert!(
        failover < HOST_DEAD - 20.0,
        "VMs back only {failover:.1} s after the hang: fencing did not shorten the wait for DEAD"
    );
    assert!(
        !fence::group_runs(pgid),
        "host 3's processes still run after its fence"
    );
    let fences = reasons(&c, 1, "fence");
    let all = fences.join("\n");
    assert!(
        all.contains("host 3 FAIL for") && all.contains("fencing it with hactl ha fence-test"),
        "{all}"
    );
    assert!(
        all.contains("fence-test -o off: exit 0") && all.contains("Success: Powered OFF"),
        "{all}"
    );
    assert!(
        all.contains("fence-test -o status: exit 2") && all.contains("Status: OFF"),
        "{all}"
    );
    let declared = event_at(&c, 1, "fence", "declared dead").expect("host 1 declared host 3 dead");
    assert!(all.contains("delta lease released on storage"), "{all}");
    // Nobody started a VM of host 3 before the declaration.
    for h in [1, 2] {
        for e in c.events(h) {
            if e["kind"] == "start" && e["t_unix"].as_f64().unwrap() > t_hang {
                assert!(
                    e["t_unix"].as_f64().unwrap() >= declared,
                    "host {h} started {} before host 3 was declared dead",
                    e["vm"]
                );
            }
        }
    }
    let waits = reasons(&c, 2, "fence_wait").join("\n");
    assert!(
        waits.contains("host 1 (lowest LIVE host id) fences it")
            || waits.contains("host 1 is fencing it")
            || waits.contains("host 1 reports it fenced"),
        "host 2 left the fence to host 1: {waits}"
    );
    assert!(reasons(&c, 2, "fence").is_empty(), "host 2 fenced too");
    let st = c.status(1).expect("status.json");
    assert_eq!(st["fencing"]["fences"]["declared"], 1, "{st}");
    // `hactl ha status` from host 1 shows the fence from the whiteboard.
    let o = run_env(
        hactl(),
        &["ha", "status", "-c", p(&c.host(1).config)],
        &[("SANLOCK_RUN_DIR", p(&c.host(1).daemon_dir))],
    );
    assert_eq!(o.code, 0, "{}", o.text());
    assert!(o.text().contains("declared dead by host 1"), "{}", o.text());
    assert!(
        split_brain_check(&c).is_empty(),
        "two runs of a VM wrote at once"
    );
}

/// A fence that fails (the agent says so) declares nothing: the others
/// wait for sanlock's DEAD, and the event says so.
#[test]
fn failed_fence_falls_back_to_waiting_for_dead() {
    let dir = Dir::new();
    let mut c = started(
        dir.path(),
        opts(dir.path(), 2, &[(3, "fail = \"1\"")], None),
    );
    let t0 = Instant::now();
    c.hang(3);
    wait("host 1's fence to fail", Duration::from_secs(40), || {
        event_at(&c, 1, "fence", "fence failed").is_some()
    });
    let all = reasons(&c, 1, "fence").join("\n");
    assert!(
        all.contains("fence-test -o off: exit 1") && all.contains("told to fail"),
        "{all}"
    );
    assert!(
        all.contains("never declared without a confirmed off: waiting for DEAD"),
        "{all}"
    );
    assert!(!all.contains("declared dead:"), "{all}");
    wait(
        "host 3's VMs to run elsewhere after DEAD",
        Duration::from_secs(120),
        || {
            c.running_on(FRESH)
                .iter()
                .all(|o| matches!(o, Some(1) | Some(2)))
        },
    );
    let took = t0.elapsed().as_secs_f64();
    assert!(
        took > HOST_DEAD - 10.0,
        "VMs back after {took:.1} s: before DEAD without a fence"
    );
    // Host 2 did not try again after host 1's failure.
    assert!(reasons(&c, 2, "fence").is_empty());
    let st = c.status(1).expect("status.json");
    assert_eq!(st["fencing"]["fences"]["failed"], 1, "{st}");
    c.kill(3);
    assert!(split_brain_check(&c).is_empty());
}

/// An agent that lies about off (the test agent's `lie`) gets the host
/// declared dead while it only hung; its VMs start elsewhere. When it
/// comes back, its daemon's next renewal finds its delta lease changed
/// (timestamp 0: not what it wrote), the lockspace is lost and the daemon
/// kills its lease holders, as on any lost lease. Until then two instances
/// of each VM exist: what the rule "declare only on a confirmed off" is for.
#[test]
fn host_declared_dead_by_a_lying_agent_kills_its_vms_when_it_comes_back() {
    let dir = Dir::new();
    let mut c = started(dir.path(), opts(dir.path(), 2, &[(3, "lie = \"1\"")], None));
    let pgid = c.host(3).pgid;
    let pids = |c: &Cluster| -> Vec<i32> {
        (0..2)
            .filter_map(|i| {
                c.status(3)?["vms"][i]["local"]["pid"]
                    .as_i64()
                    .map(|p| p as i32)
            })
            .collect()
    };
    wait(
        "host 3's status to show both VMs' pids",
        Duration::from_secs(10),
        || pids(&c).len() == 2,
    );
    let vm_pids = pids(&c);
    c.hang(3);
    wait(
        "host 3's VMs to run on hosts 1 and 2",
        Duration::from_secs(60),
        || {
            c.running_on(FRESH)
                .iter()
                .all(|o| matches!(o, Some(1) | Some(2)))
        },
    );
    assert!(event_at(&c, 1, "fence", "declared dead").is_some());
    assert!(fence::group_runs(pgid), "the lying agent killed nothing");
    // Two instances of each VM now: the hung one may resume any moment.
    assert!(
        vm_pids.iter().all(|&p| !exited(p)),
        "host 3's VM processes exist beside the restarted ones"
    );
    // SAFETY: SIGCONT of the test host's process group: it comes back.
    unsafe { libc::kill(-pgid, libc::SIGCONT) };
    wait(
        "host 3's daemon to kill its VMs",
        Duration::from_secs(30),
        || vm_pids.iter().all(|&p| exited(p)),
    );
    // Back after longer than id_renewal_fail_seconds, it fails its
    // lockspace on the time alone, or on its renewal (next test).
    let log = std::fs::read_to_string(c.host(3).daemon_dir.join("daemon.log")).unwrap();
    assert!(log.contains("killing its lease holders"), "{log}");
    // Whether they wrote again before the kill landed is a race (the
    // disks show it when they did): what "confirmed off" rules out.
    let _ = split_brain_check(&c);
    c.kill(3);
}

/// A host that runs on after its delta lease was declared free (what a
/// lying agent leads to, here while it renews normally): its next renewal
/// reads a lease that is not what it wrote (SANLK_RENEW_DIFF, -261), its
/// lockspace is lost and its daemon kills its lease holders at once.
#[test]
fn a_host_whose_lease_was_declared_free_kills_its_holders_at_its_next_renewal() {
    let dir = Dir::new();
    let c = started(dir.path(), opts(dir.path(), 2, &[], None));
    let pids = |c: &Cluster| -> Vec<i32> {
        (0..2)
            .filter_map(|i| {
                c.status(3)?["vms"][i]["local"]["pid"]
                    .as_i64()
                    .map(|p| p as i32)
            })
            .collect()
    };
    wait("host 3's VM pids", Duration::from_secs(10), || {
        pids(&c).len() == 2
    });
    let vm_pids = pids(&c);
    let ids = c.shared.join("ids");
    let lease = format!("hademo:3:{}:0", p(&ids));
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    // Between two of its renewals (every 2 s), the lease as host 3 wrote it
    // is released as a fence's declaration does.
    let t0 = Instant::now();
    let declared = loop {
        let text = run(hactl(), &["direct", "read_leader", "-s", &lease]).text();
        let v = fence::Victim {
            host_id: 3,
            generation: field(&text, "owner_generation"),
            timestamp: field(&text, "timestamp"),
            lockspace: "hademo".into(),
            ids: ids.clone(),
            sector_size: 512,
            io_timeout: Duration::from_secs(1),
        };
        match fence::declare_dead(&v) {
            Ok(d) => break d,
            Err(e) if e.contains("renewed") && t0.elapsed() < Duration::from_secs(20) => {}
            Err(e) => panic!("declare_dead: {e}"),
        }
    };
    assert!(declared.contains("delta lease released"), "{declared}");
    let t_declared = Instant::now();
    wait(
        "host 3's daemon to kill its VMs",
        Duration::from_secs(15),
        || vm_pids.iter().all(|&p| exited(p)),
    );
    let took = t_declared.elapsed().as_secs_f64();
    let log = std::fs::read_to_string(c.host(3).daemon_dir.join("daemon.log")).unwrap();
    assert!(log.contains("corrupt_result -261"), "{log}");
    assert!(log.contains("killing its lease holders"), "{log}");
    assert!(
        took < 8.0,
        "holders killed {took:.1} s after the declaration: not at the next renewal"
    );
}

/// The lease of a fenced host is taken by Debian's sanlock 3.8.5 at once:
/// a sanlock daemon joined to the cluster's lockspace as host 4 starts to
/// acquire a lease that hung host 3 holds (it waits: host 3 is FAIL, not
/// DEAD); right after host 1 declares host 3 dead, sanlock's paxos_acquire
/// finds the owner's delta lease free and takes the lease, long before
/// host_dead_seconds.
#[test]
fn real_sanlock_takes_the_lease_of_a_fenced_host_at_once() {
    let dir = Dir::new();
    let mut o = opts(dir.path(), 1, &[], None);
    o.whiteboard_hosts = 4;
    let mut c = started(dir.path(), o);
    let ids = c.shared.join("ids");
    let lease = c.shared.join("extra");
    make_file(&lease, 1 << 20, 0);
    let res = format!("hademo:extra:{}:0", p(&lease));
    let out = run(hactl(), &["direct", "init", "-r", &res]);
    assert_eq!(out.code, 0, "{}", out.text());
    // Host 3 holds the lease with a process in its process group.
    let mut holder = Command::new(hactl());
    {
        use std::os::unix::process::CommandExt;
        holder
            .args(["client", "command", "-r", &res, "-c", "/bin/sleep", "1000"])
            .env("SANLOCK_RUN_DIR", &c.host(3).daemon_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(c.host(3).pgid);
    }
    let mut holder = die_with_parent(&mut holder).spawn().unwrap();
    let direct = |args: &[&str]| run(hactl(), args).text();
    wait("host 3 to hold the lease", Duration::from_secs(20), || {
        direct(&["direct", "read_leader", "-r", &res]).contains("owner_id 3")
    });
    let s = SanlockDaemon::start(&dir.path().join("sanlock4"));
    let ls = format!("hademo:4:{}:0", p(&ids));
    let out = s.client(&["add_lockspace", "-s", &ls, "-o", "1"]);
    assert_eq!(out.code, 0, "sanlock joins as host 4: {}", out.text());
    c.hang(3);
    let t_hang = hactl::ha::agent::unix_now();
    // sanlock's own client: acquires for a registered process of its own.
    let script = format!(
        "import sanlock, sys, time\nfd = sanlock.register()\nsanlock.acquire(b'hademo', b'extra', [({:?}, 0)], slkfd=fd)\nprint(time.time(), flush=True)\ntime.sleep(1000)\n",
        p(&lease)
    );
    let mut taker: Child = die_with_parent(
        Command::new(python3())
            .args(["-c", &script])
            .envs(s.env())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .spawn()
    .unwrap();
    let line = first_line(&mut taker);
    let acquired: f64 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("sanlock's acquire failed: {line:?}"));
    // Host 1's agent logs the end of its fence at its next cycle.
    wait(
        "host 1 to log the declaration",
        Duration::from_secs(10),
        || event_at(&c, 1, "fence", "declared dead").is_some(),
    );
    let declared = event_at(&c, 1, "fence", "declared dead").unwrap();
    eprintln!(
        "sanlock took the lease {:.1} s after the hang, {:.1} s after the declaration",
        acquired - t_hang,
        acquired - declared
    );
    assert!(
        acquired >= declared,
        "sanlock took the lease before host 3 was declared dead"
    );
    assert!(
        acquired - t_hang < HOST_DEAD - 20.0,
        "sanlock took the lease {:.1} s after the hang: it waited for DEAD",
        acquired - t_hang
    );
    let dump = s.client(&["log_dump"]).text();
    assert!(
        dump.contains("paxos_acquire owner 3 delta free"),
        "sanlock took it by the delta free rule: {dump}"
    );
    assert!(
        direct(&["direct", "read_leader", "-r", &res]).contains("owner_id 4"),
        "the lease is host 4's"
    );
    let _ = taker.kill();
    let _ = taker.wait();
    let _ = s.client(&["rem_lockspace", "-s", &ls]);
    c.kill(3);
    let _ = holder.wait();
}

/// A UDP port on 127.0.0.1 nobody listens on now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// OpenIPMI's BMC simulator, serving IPMI over LAN on 127.0.0.1:`port`,
/// its chassis power the process group in `pgid_file`. Stopped by pid.
struct IpmiSim {
    child: Child,
}

impl IpmiSim {
    fn start(dir: &Path, port: u16, pgid_file: &Path) -> IpmiSim {
        for bin in ["/usr/bin/ipmi_sim", "/usr/sbin/fence_ipmilan"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: tools/test.sh installs openipmi and fence-agents"
            );
        }
        std::fs::create_dir_all(dir.join("state")).unwrap();
        // ipmi_sim's chassis_control protocol: `PROG get power` prints
        // power:1|0, `PROG set power "0"` powers off.
        let chassis = dir.join("chassis.sh");
        std::fs::write(
            &chassis,
            format!(
                "#!/bin/sh\ncase \"$1 $2\" in\n\"get power\") if {hactl} ha fence-test --pgid-file {pgid} -o status >/dev/null; then echo power:1; else echo power:0; fi;;\n\"set power\") v=$(echo \"$3\" | tr -d '\"'); if [ \"$v\" = 0 ]; then {hactl} ha fence-test --pgid-file {pgid} -o off >/dev/null; fi; exit 0;;\n*) exit 1;;\nesac\n",
                pgid = pgid_file.display(),
                hactl = hactl()
            ),
        )
        .unwrap();
        run("chmod", &["755", p(&chassis)]);
        let conf = dir.join("lan.conf");
        std::fs::write(
            &conf,
            format!(
                "name \"hactltest\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    allowed_auths_callback none md2 md5 straight\n    allowed_auths_user none md2 md5 straight\n    allowed_auths_operator none md2 md5 straight\n    allowed_auths_admin none md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{}\"\n  user 2 true \"admin\" \"ipmi-secret\" admin 10 none md2 md5 straight\n",
                chassis.display()
            ),
        )
        .unwrap();
        let emu = dir.join("bmc.emu");
        std::fs::write(
            &emu,
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
        )
        .unwrap();
        let child = die_with_parent(
            Command::new("/usr/bin/ipmi_sim")
                .args(["-n", "-c", p(&conf), "-f", p(&emu), "-s"])
                .arg(dir.join("state"))
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .spawn()
        .unwrap();
        IpmiSim { child }
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's fence_ipmilan (fence-agents 4.12) fences host 3 over IPMI
/// LAN (lanplus, cipher suite 3: ipmi_sim answers no cipher suite query) through OpenIPMI's ipmi_sim, with its password from a
/// secrets file of mode 0600, after a first agent in the list failed: the
/// agents are tried in order, and the one that confirms off declares.
#[test]
fn fence_ipmilan_through_ipmi_sim_fences_after_a_failing_first_agent() {
    let dir = Dir::new();
    let port = free_udp_port();
    let pgid_file = dir.path().join("host3").join("pgid");
    let secrets = dir.path().join("ipmi.secrets");
    std::fs::write(&secrets, "password=ipmi-secret\n").unwrap();
    run("chmod", &["600", p(&secrets)]);
    let mut f = fence::test_section(Path::new(hactl()), dir.path(), 2, 20, &BTreeMap::new());
    f.push_str(&format!(
        "[[fencing.host]]\nhost_id = 3\n[[fencing.host.agent]]\ncommand = [{hactl:?}, \"ha\", \"fence-test\"]\noptions = {{ pgid_file = {pg:?}, fail = \"1\" }}\ntimeout = 10\n[[fencing.host.agent]]\ncommand = [\"/usr/sbin/fence_ipmilan\"]\noptions = {{ ip = \"127.0.0.1\", ipport = {port}, username = \"admin\", lanplus = 1, cipher = 3 }}\nsecrets = {sec:?}\ntimeout = 30\n",
        hactl = hactl(),
        pg = p(&pgid_file),
        sec = p(&secrets),
    ));
    let mut c = started(dir.path(), opts(dir.path(), 2, &[], Some(f)));
    let _bmc = IpmiSim::start(&dir.path().join("bmc"), port, &pgid_file);
    let status = || {
        let mut cmd = Command::new("/usr/sbin/fence_ipmilan");
        cmd.args([
            "-a",
            "127.0.0.1",
            "-u",
            &port.to_string(),
            "-l",
            "admin",
            "-p",
        ])
        .arg("ipmi-secret")
        .args(["-P", "-C", "3", "-o", "status"]);
        cmd.output().map(|o| o.status.code()).ok().flatten()
    };
    wait("ipmi_sim to answer", Duration::from_secs(20), || {
        status() == Some(0)
    });
    let pgid = c.host(3).pgid;
    let t0 = Instant::now();
    c.hang(3);
    wait(
        "host 3's VMs to run on hosts 1 and 2",
        Duration::from_secs(90),
        || {
            c.running_on(FRESH)
                .iter()
                .all(|o| matches!(o, Some(1) | Some(2)))
        },
    );
    let took = t0.elapsed().as_secs_f64();
    eprintln!("failover with fence_ipmilan: {took:.1} s after the hang");
    let all = reasons(&c, 1, "fence").join("\n");
    assert!(
        all.contains("fencing it with hactl ha fence-test, then fence_ipmilan"),
        "{all}"
    );
    assert!(all.contains("fence-test -o off: exit 1"), "{all}");
    assert!(
        all.contains("fence_ipmilan -o off: exit 0") && all.contains("Success: Powered OFF"),
        "{all}"
    );
    assert!(
        all.contains("fence_ipmilan -o status: exit 2") && all.contains("Status: OFF"),
        "{all}"
    );
    assert!(
        all.contains("off confirmed by fence_ipmilan status; declared dead"),
        "{all}"
    );
    assert!(
        !all.contains("ipmi-secret"),
        "the password never shows: {all}"
    );
    assert!(!fence::group_runs(pgid));
    assert_eq!(status(), Some(2), "the BMC reports host 3 off");
    assert!(took < HOST_DEAD - 15.0, "{took:.1} s: not faster than DEAD");
    assert!(split_brain_check(&c).is_empty());
}
