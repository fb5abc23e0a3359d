//! Host health on a real cluster (src/ha/cluster.rs): each host's agent in
//! a network namespace of its own, made by the test, behind a veth pair to
//! a gateway namespace (src/ha/netlab.rs). Its monitors ping the
//! gateway and watch `eth0`. A host that loses its gateway scores the
//! gateway penalty less and its VMs move, one at a time, stop first, to a
//! healthy host; the gateway coming back moves nothing back. A host cut
//! from every network with isolation policy `stop` stops its VMs and the
//! others run them. The disk check proves one writer at a time.

mod common;

use std::path::Path;
use std::time::Duration;

use hactl::ha::cluster::{Cluster, ClusterOpts, TEST_HEALTH};

use common::ha::*;
use common::*;
use hactl::ha::netlab::{GATEWAY, Net};

const FRESH: Duration = Duration::from_millis(1500);

/// `hosts` hosts in `net`'s namespaces, `vms` VMs that prefer host 1;
/// `last_vm` is added to the last VM's config.
fn cluster(dir: &Path, net: &Net, hosts: u64, vms: usize, health: &str, last_vm: &str) -> Cluster {
    let mut o = ClusterOpts::new(Path::new(hactl()), hosts, vms);
    o.health = format!(
        "{TEST_HEALTH}hold_down = 3\nisolation_after = 3\n{health}\n\
         [health.gateway]\naddresses = [\"{GATEWAY}\"]\ninterval = 1\ntimeout = 1\n\
         [health.links]\ninterfaces = [\"eth0\"]\ninterval = 1\n"
    );
    for v in 0..vms {
        o.vm_extra.insert(v, "preferred_hosts = [1]".into());
    }
    o.vm_extra
        .insert(vms - 1, format!("preferred_hosts = [1]\n{last_vm}"));
    for h in 1..=hosts {
        o.netns.insert(h, net.path(h));
    }
    let mut c = Cluster::create(dir, o).expect("cluster files");
    // Host 1 alone first, until it runs them all: a VM another host
    // started meanwhile would stay there (nothing moves towards a host).
    c.start_host(1).expect("host 1 starts");
    wait_for("every VM to run on host 1", Duration::from_secs(90), || {
        c.running_on(FRESH).iter().all(|h| *h == Some(1))
    });
    let others: Vec<u64> = (2..=hosts).collect();
    for &h in &others {
        c.start_host(h).expect("host starts");
    }
    wait_for(
        "host 1 to see the others as candidates",
        Duration::from_secs(90),
        || c.sees_candidates(1, &others),
    );
    c
}

fn health_score(c: &Cluster, h: u64) -> Option<u64> {
    c.status(h)?["health"]["score"].as_u64()
}

/// Host `of`'s penalty of `kind` as host `seen_by` read it on the whiteboard.
fn penalty_on_board(c: &Cluster, seen_by: u64, of: u64, kind: &str) -> Option<u64> {
    let st = c.status(seen_by)?;
    st["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["host_id"] == of)?["penalties"]["points"][kind]
        .as_u64()
}

/// (t_unix, vm) of every event of `kind` by host `h` whose reason has `word`.
fn events_with(c: &Cluster, h: u64, kind: &str, word: &str) -> Vec<(f64, String)> {
    c.events(h)
        .iter()
        .filter(|e| e["kind"] == kind && e["reason"].as_str().is_some_and(|r| r.contains(word)))
        .map(|e| {
            (
                e["t_unix"].as_f64().unwrap_or(0.0),
                e["vm"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// When the first `start` event of `vm` on a host other than `not` came
/// after `since` (the start takes the lease, then runs the VM).
fn started_elsewhere_at(c: &Cluster, hosts: u64, not: u64, vm: &str, since: f64) -> Option<f64> {
    (1..=hosts)
        .filter(|&h| h != not)
        .flat_map(|h| c.events(h))
        .filter(|e| e["kind"] == "start" && e["vm"] == vm)
        .filter_map(|e| e["t_unix"].as_f64())
        .filter(|&t| t > since)
        .reduce(f64::min)
}

#[test]
fn gateway_loss_moves_vms_one_at_a_time_and_nothing_bounces_back() {
    let dir = Dir::new();
    let net = Net::new(3).expect("network namespaces (ip netns, veth)");
    let mut c = cluster(dir.path(), &net, 3, 3, "", "");
    wait_for("host 1 healthy", Duration::from_secs(30), || {
        health_score(&c, 1) == Some(3400)
    });

    let t_cut = unix_now();
    net.cut_gateway(1).unwrap();
    wait_for(
        "host 1's score to drop by the gateway penalty",
        Duration::from_secs(30),
        || health_score(&c, 1) == Some(3400 - 1600),
    );
    let st = c.status(1).unwrap();
    let pen = &st["health"]["penalties"];
    assert_eq!(pen.as_array().map(Vec::len), Some(1), "{pen}");
    assert_eq!(pen[0]["kind"], "gateway", "{pen}");
    assert_eq!(pen[0]["points"], 1600, "{pen}");
    assert!(
        pen[0]["reason"].as_str().unwrap().contains(GATEWAY),
        "{pen}"
    );
    // The others read it on the whiteboard, and so does `ha status`.
    wait_for(
        "host 2 to read host 1's gateway penalty",
        Duration::from_secs(30),
        || penalty_on_board(&c, 2, 1, "gateway") == Some(1600),
    );
    let env = [("SANLOCK_RUN_DIR", p(&c.host(2).daemon_dir))];
    let cfg = p(&c.host(2).config).to_string();
    let o = run_env(hactl(), &["ha", "status", "-c", &cfg, "--json"], &env);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let h1 = &st["hosts"][0];
    assert_eq!(h1["host_id"], 1, "{st}");
    assert_eq!(h1["penalties"]["points"]["gateway"], 1600, "{h1}");
    let text = run_env(hactl(), &["ha", "status", "-c", &cfg], &env).text();
    assert!(text.contains("gateway -1600"), "{text}");
    // And host 1's events say why.
    let why = events_with(&c, 1, "health", "gateway -1600");
    assert!(!why.is_empty(), "no health event naming the gateway");
    let moved = wait_for(
        "host 1's VMs to run on healthy hosts",
        Duration::from_secs(120),
        || {
            c.running_on(FRESH)
                .iter()
                .all(|h| h.is_some_and(|h| h != 1))
        },
    );
    eprintln!("gateway loss: VMs moved within {moved:?}");
    // Stop first, one at a time: each move's stop came after the previous
    // moved VM was started elsewhere (its lease taken there).
    let moves = events_with(&c, 1, "stop", "moving it");
    assert_eq!(moves.len(), 3, "{moves:?}");
    for w in moves.windows(2) {
        let prev = started_elsewhere_at(&c, 3, 1, &w[0].1, w[0].0)
            .unwrap_or_else(|| panic!("{} never started elsewhere", w[0].1));
        assert!(
            w[1].0 >= prev,
            "{} stopped at {:.1} before {} ran elsewhere at {prev:.1}",
            w[1].1,
            w[1].0,
            w[0].1
        );
    }
    assert!(
        moves[0].0 - t_cut >= 3.0,
        "hold_down 3 s: {moves:?} cut {t_cut}"
    );
    assert_disks_ok(&c);

    // The gateway comes back: host 1 heals, and nothing moves back even
    // though every VM prefers host 1.
    // Where each VM last wrote (loosely fresh: a demo VM's writes may lag
    // on a loaded machine; a bounce would show another host anyway).
    let last_writer = Duration::from_secs(10);
    let where_now = c.running_on(last_writer);
    assert!(
        where_now.iter().all(|h| h.is_some_and(|h| h != 1)),
        "{where_now:?}"
    );
    net.restore_gateway(1).unwrap();
    wait_for("host 1 healthy again", Duration::from_secs(30), || {
        health_score(&c, 1) == Some(3400)
    });
    let t_back = unix_now();
    std::thread::sleep(Duration::from_secs(12));
    for h in 1..=3 {
        let acts: Vec<_> = c
            .events(h)
            .into_iter()
            .filter(|e| e["kind"] == "start" || e["kind"] == "stop")
            .filter(|e| e["t_unix"].as_f64().unwrap_or(0.0) > t_back)
            .collect();
        assert!(
            acts.is_empty(),
            "host {h} acted after the gateway came back: {acts:?}"
        );
    }
    assert_eq!(c.running_on(last_writer), where_now, "a VM bounced");
    assert_disks_ok(&c);
    c.stop_all();
}

/// Cluster-wide policy `stop`, and one VM whose own policy is `keep`:
/// that one stays on the isolated host, the others run elsewhere.
#[test]
fn isolated_host_with_policy_stop_gives_its_vms_to_the_others() {
    let dir = Dir::new();
    let net = Net::new(2).expect("network namespaces (ip netns, veth)");
    let mut c = cluster(
        dir.path(),
        &net,
        2,
        3,
        "isolation = \"stop\"",
        "isolation = \"keep\"",
    );
    net.isolate(1).unwrap();
    let moved = wait_for(
        "the isolated host's `stop` VMs to run on host 2",
        Duration::from_secs(120),
        || c.running_on(FRESH)[..2].iter().all(|h| *h == Some(2)),
    );
    eprintln!("isolation: VMs on host 2 within {moved:?}");
    let st = c.status(1).unwrap();
    assert_eq!(st["health"]["isolated"], true, "{}", st["health"]);
    assert_eq!(st["health"]["network_lost"], true, "{}", st["health"]);
    assert_eq!(st["score"], 0, "an isolated host takes no VM");
    let stops = events_with(&c, 1, "stop", "isolated");
    assert_eq!(stops.len(), 2, "{stops:?}");
    assert!(stops.iter().all(|(_, vm)| vm != "vm3"), "{stops:?}");
    // vm3's own policy is keep: it still runs on the isolated host.
    assert_eq!(c.running_on(Duration::from_secs(5))[2], Some(1));
    assert!(
        events_with(&c, 1, "stop", "")
            .iter()
            .all(|(_, vm)| vm != "vm3"),
        "vm3 was stopped"
    );
    // Its storage still renews: it is LIVE to the others, not DEAD.
    let st2 = c.status(2).unwrap();
    let h1 = st2["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host_id"] == 1)
        .unwrap();
    assert_eq!(h1["state"], "LIVE", "{h1}");
    assert_disks_ok(&c);
    c.stop_all();
}
