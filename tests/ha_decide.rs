//! decide(): the situations of issue 7, each from the view of every host,
//! and properties over random views (docs/ha-design.md, "decide()").

use hactl::ha::config::Config;
use hactl::ha::decide::{
    ActionKind, Decision, HostView, Input, LeaseView, Local, Memory, Outcome, OutcomeKind, decide,
};
use hactl::ha::whiteboard::{HostSector, VmBitmap};
use hactl::hosts::HostState;
use proptest::prelude::*;

fn config(vms: usize, capacity: u32) -> Config {
    let mut t = format!(
        "[cluster]\nlockspace='ls'\nids='/i'\nxleases='/x'\nwhiteboard='/w'\n\
         interval=2\ngrace=10\ncapacity={capacity}\n"
    );
    for v in 0..vms {
        t.push_str(&format!("[[vm]]\nname='vm{v:03}'\nstart=['/bin/true']\n"));
    }
    Config::parse(&t).unwrap()
}

/// A cluster view shared by all hosts; `input(me)` is host `me`'s.
struct View {
    cfg: Config,
    hosts: Vec<HostView>,
    leases: Vec<LeaseView>,
    global: bool,
    now: u64,
}

impl View {
    fn new(cfg: Config, nhosts: u64) -> View {
        let digest = cfg.digest();
        let hosts = (1..=nhosts)
            .map(|h| HostView {
                host_id: h,
                state: HostState::Live,
                generation: 1,
                renewal_age: Some(1),
                sector: Some(HostSector {
                    host_id: h,
                    generation: 1,
                    seq: 5,
                    score: 3400,
                    config_digest: digest,
                    ..Default::default()
                }),
                fresh: true,
            })
            .collect();
        let leases = vec![LeaseView::Free; cfg.vms.len()];
        View {
            cfg,
            hosts,
            leases,
            global: false,
            now: 1000,
        }
    }
    fn host(&mut self, h: u64) -> &mut HostView {
        self.hosts.iter_mut().find(|x| x.host_id == h).unwrap()
    }
    fn sector(&mut self, h: u64) -> &mut HostSector {
        self.host(h).sector.as_mut().unwrap()
    }
    /// Host `h` runs VMs `vms` (lease held, bit published).
    fn runs(&mut self, h: u64, vms: &[usize]) {
        for &v in vms {
            self.leases[v] = LeaseView::Held {
                owner: h,
                generation: 1,
                lver: 1,
            };
        }
        let s = self.sector(h);
        s.running = VmBitmap::from_indexes(vms.iter().copied());
    }
    fn input(&self, me: u64, memory: Memory) -> Input<'_> {
        let n = self.cfg.vms.len();
        let mut local = vec![Local::Idle; n];
        if let Some(s) = self
            .hosts
            .iter()
            .find(|x| x.host_id == me)
            .and_then(|x| x.sector)
        {
            for v in s.running.iter() {
                local[v] = Local::Running {
                    pid: 100 + v as u32,
                    since: 0,
                };
            }
        }
        Input {
            now: self.now,
            me,
            config: &self.cfg,
            hosts: self.hosts.clone(),
            global_maintenance: self.global,
            local_maintenance: false,
            leases: self.leases.clone(),
            local,
            outcomes: vec![],
            memory,
            health: None,
        }
    }
    fn decide(&self, me: u64) -> Decision {
        decide(&self.input(me, Memory::default()))
    }
}

fn starts(d: &Decision) -> Vec<usize> {
    d.starts().collect()
}

fn reason(d: &Decision, vm: usize) -> &str {
    &d.actions
        .iter()
        .find(|a| a.vm == vm)
        .expect("an action")
        .reason
}

#[test]
fn host_crash_best_host_starts_others_wait_grace_then_race() {
    let mut w = View::new(config(1, 64), 3);
    w.runs(1, &[0]);
    w.sector(3).score = 3350;
    let h1 = w.host(1);
    h1.state = HostState::Dead;
    h1.renewal_age = Some(68);
    h1.fresh = false;
    let d2 = w.decide(2);
    assert_eq!(starts(&d2), vec![0]);
    assert_eq!(
        reason(&d2, 0),
        "vm000: host 1 DEAD (last renewal 68 s ago); best LIVE host 2 score 3400 [2:3400 3:3350]; starting"
    );
    // Host 3 waits, then races once the orphan is grace seconds old.
    let d3 = w.decide(3);
    assert!(starts(&d3).is_empty());
    assert_eq!(d3.actions[0].kind, ActionKind::Wait);
    assert!(
        reason(&d3, 0).contains("racing after grace 10 s"),
        "{}",
        reason(&d3, 0)
    );
    w.now += 10;
    let d3b = decide(&w.input(3, d3.memory.clone()));
    assert_eq!(starts(&d3b), vec![0], "{:?}", d3b.actions);
    assert!(reason(&d3b, 0).contains("racing"));
}

/// Every host's starts, with no memory (the orphan is new: nobody's grace
/// has run): the assignment "now".
fn starts_now(w: &View) -> Vec<(u64, Vec<usize>)> {
    w.hosts
        .iter()
        .map(|h| (h.host_id, starts(&w.decide(h.host_id))))
        .collect()
}

#[test]
fn hang_owner_fail_nobody_starts_even_after_grace() {
    let mut w = View::new(config(2, 64), 3);
    w.runs(1, &[0, 1]);
    let h1 = w.host(1);
    h1.state = HostState::Fail;
    h1.renewal_age = Some(30);
    for me in [2, 3] {
        let mut mem = Memory::default();
        for step in 0..20 {
            let d = decide(&w.input(me, mem));
            assert!(
                starts(&d).is_empty(),
                "host {me} step {step}: {:?}",
                d.actions
            );
            assert!(
                reason(&d, 0).contains("host 1 FAIL (last renewal 30 s ago)"),
                "{}",
                reason(&d, 0)
            );
            mem = d.memory;
            w.now += 5;
        }
    }
}

#[test]
fn storage_loss_on_owner_fail_then_dead() {
    let mut w = View::new(config(1, 64), 2);
    w.runs(1, &[0]);
    w.host(1).state = HostState::Fail;
    w.host(1).fresh = false;
    let d = w.decide(2);
    assert!(starts(&d).is_empty());
    let mem = d.memory;
    w.now += 60;
    // Its watchdog fired / its processes were killed: DEAD now.
    w.host(1).state = HostState::Dead;
    w.host(1).renewal_age = Some(80);
    let d = decide(&w.input(2, mem));
    assert_eq!(starts(&d), vec![0], "{:?}", d.actions);
    assert!(reason(&d, 0).starts_with("vm000: host 1 DEAD (last renewal 80 s ago)"));
}

#[test]
fn stale_owner_generation_is_an_orphan() {
    let mut w = View::new(config(1, 64), 2);
    w.runs(1, &[0]);
    // Host 1 rebooted and rejoined: generation 2, not running the VM.
    w.host(1).generation = 2;
    let s = w.sector(1);
    s.generation = 2;
    s.running = VmBitmap::default();
    let now = starts_now(&w);
    assert_eq!(
        now,
        vec![(1, vec![0]), (2, vec![])],
        "the rebooted host is a candidate: tie, lowest id"
    );
    let d = w.decide(1);
    assert!(
        reason(&d, 0).contains("held by host 1 generation 1, gone"),
        "{}",
        reason(&d, 0)
    );
}

#[test]
fn owner_live_nothing_happens_and_our_runs_are_kept() {
    let mut w = View::new(config(2, 64), 2);
    w.runs(1, &[0]);
    w.runs(2, &[1]);
    for h in [1, 2] {
        let d = w.decide(h);
        assert!(d.actions.is_empty(), "host {h}: {:?}", d.actions);
        assert_eq!(d.score, 3400);
    }
}

#[test]
fn our_leftover_lease_is_taken_back_by_us_only_after_grace() {
    let mut w = View::new(config(1, 64), 2);
    w.leases[0] = LeaseView::Held {
        owner: 2,
        generation: 1,
        lver: 4,
    };
    let d = w.decide(2);
    assert!(starts(&d).is_empty(), "its release may be under way");
    assert!(
        reason(&d, 0).contains("held by us (host 2) with no process here"),
        "{}",
        reason(&d, 0)
    );
    let mut i = w.input(2, d.memory.clone());
    i.now += 3;
    assert!(starts(&decide(&i)).is_empty());
    i.now += 7;
    let d2 = decide(&i);
    assert_eq!(starts(&d2), vec![0], "{:?}", d2.actions);
    assert!(reason(&d2, 0).contains("no other host may take it"));
    // Host 1 sees it held by LIVE host 2: never its to take.
    let mut i = w.input(1, Memory::default());
    i.now += 1000;
    assert!(decide(&i).actions.is_empty());
    // Not in global maintenance.
    let mut i = w.input(2, d.memory.clone());
    i.now += 10;
    i.global_maintenance = true;
    assert!(starts(&decide(&i)).is_empty());
    // Even after our own failed start of it: nobody else may take it, and
    // failing again releases it.
    let mut i = w.input(2, d.memory);
    i.now += 10;
    i.outcomes = vec![Outcome {
        vm: 0,
        at: i.now,
        kind: OutcomeKind::FailedStart,
    }];
    let d = decide(&i);
    assert_eq!(starts(&d), vec![0]);
    assert!(reason(&d, 0).contains("we failed to start it recently"));
}

#[test]
fn host_lost_while_another_in_local_maintenance() {
    let mut w = View::new(config(2, 64), 3);
    w.runs(1, &[0]);
    w.runs(3, &[1]);
    w.host(1).state = HostState::Dead;
    let s3 = w.sector(3);
    s3.flags = hactl::ha::whiteboard::LOCAL_MAINTENANCE;
    s3.score = 0;
    // Host 3 (maintenance) stops its VM and never starts host 1's.
    let mut i = w.input(3, Memory::default());
    i.local_maintenance = true;
    i.memory.vms = vec![Default::default(); 2];
    i.memory.vms[0].orphan_since = Some(0);
    let d3 = decide(&i);
    assert_eq!(d3.stops().collect::<Vec<_>>(), vec![1]);
    assert!(starts(&d3).is_empty(), "{:?}", d3.actions);
    assert_eq!(d3.score, 0);
    assert!(
        reason(&d3, 0).contains("local maintenance"),
        "{}",
        reason(&d3, 0)
    );
    // Host 2 takes host 1's VM at once.
    assert_eq!(starts(&w.decide(2)), vec![0]);
    // Host 3's VM stopped: its lease is free; host 2 takes it, host 3 never.
    w.runs(2, &[0]);
    w.leases[1] = LeaseView::Free;
    w.sector(3).running = VmBitmap::default();
    assert_eq!(starts(&w.decide(2)), vec![1]);
    let mut i = w.input(3, d3.memory);
    i.local_maintenance = true;
    i.now += 100;
    assert!(starts(&decide(&i)).is_empty());
}

#[test]
fn global_maintenance_no_starts_running_vms_kept() {
    let mut w = View::new(config(3, 64), 3);
    w.runs(1, &[0]);
    w.runs(2, &[1]);
    w.host(1).state = HostState::Dead;
    w.global = true;
    for me in [2, 3] {
        let mut mem = Memory::default();
        for _ in 0..10 {
            let d = decide(&w.input(me, mem));
            assert!(
                starts(&d).is_empty() && d.stops().next().is_none(),
                "{:?}",
                d.actions
            );
            assert!(reason(&d, 0).contains("global maintenance"));
            assert!(reason(&d, 2).contains("lease free; global maintenance"));
            mem = d.memory;
            w.now += 10;
        }
    }
    w.global = false;
    assert_eq!(
        starts_now(&w),
        vec![(1, vec![]), (2, vec![2]), (3, vec![0])],
        "maintenance over: host 3 (fewest VMs) takes the first, then a tie: lowest id"
    );
}

#[test]
fn failed_start_then_another_host_takes_it_lost_race_is_no_failure() {
    let mut w = View::new(config(1, 64), 3);
    w.runs(1, &[0]);
    w.host(1).state = HostState::Dead;
    let d2 = w.decide(2);
    assert_eq!(starts(&d2), vec![0]);
    // Host 2's runner exits non-zero before the VM ran.
    let mut i = w.input(2, d2.memory);
    i.outcomes = vec![Outcome {
        vm: 0,
        at: w.now,
        kind: OutcomeKind::FailedStart,
    }];
    i.now += 2;
    let d2 = decide(&i);
    assert!(starts(&d2).is_empty(), "{:?}", d2.actions);
    assert!(d2.failed.get(0));
    assert_eq!(d2.score, 3350);
    // Host 2 publishes it; host 3 is now the one assigned.
    let s = w.sector(2);
    s.failed = d2.failed;
    s.score = d2.score;
    w.now += 2;
    let d3 = w.decide(3);
    assert_eq!(starts(&d3), vec![0]);
    assert!(
        reason(&d3, 0).contains("best LIVE host 3 score 3400 [3:3400]"),
        "{}",
        reason(&d3, 0)
    );
    // Host 2 does not race for it even after grace.
    let mut i = w.input(2, d2.memory.clone());
    i.now += 30;
    let d = decide(&i);
    assert!(starts(&d).is_empty());
    assert!(
        reason(&d, 0).contains("failed to start it recently"),
        "{}",
        reason(&d, 0)
    );
    // Ten minutes later the failure is forgotten.
    let mut i = w.input(2, d2.memory);
    i.now += 700;
    let d = decide(&i);
    assert!(!d.failed.get(0));
    assert_eq!(d.score, 3400);
    // A lost race is not a failure.
    let mut i = w.input(3, Memory::default());
    i.outcomes = vec![Outcome {
        vm: 0,
        at: w.now,
        kind: OutcomeKind::LostRace,
    }];
    let d = decide(&i);
    assert!(!d.failed.get(0));
    assert_eq!(d.score, 3400);
    assert_eq!(d.memory.vms[0].lost_race_at, Some(w.now));
}

#[test]
fn all_hosts_failed_it_the_best_still_gets_it() {
    let mut w = View::new(config(1, 64), 3);
    w.host(1).state = HostState::Dead;
    for h in [2, 3] {
        w.sector(h).failed = VmBitmap::from_indexes([0]);
        w.sector(h).score = 3350;
    }
    w.sector(3).running = VmBitmap::default();
    assert_eq!(starts_now(&w), vec![(1, vec![]), (2, vec![0]), (3, vec![])]);
}

fn spread(cfg: Config, score3: u32) -> (Vec<usize>, Vec<usize>, View) {
    let mut w = View::new(cfg, 3);
    let all: Vec<usize> = (0..100).collect();
    w.runs(1, &all);
    w.host(1).state = HostState::Dead;
    w.sector(3).score = score3;
    let d2 = w.decide(2);
    let d3 = w.decide(3);
    (starts(&d2), starts(&d3), w)
}

#[test]
fn hundred_orphans_spread_over_two_survivors() {
    // Equal scores: fewest VMs first, 50 each, no VM on both.
    let (a, b, _) = spread(config(100, 64), 3400);
    assert_eq!((a.len(), b.len()), (50, 50));
    assert!(a.iter().all(|v| !b.contains(v)));
    // Host 3 scores lower: host 2 first, up to its capacity.
    let (a, b, _) = spread(config(100, 64), 3350);
    assert_eq!((a.len(), b.len()), (64, 36));
    assert!(a.iter().all(|v| !b.contains(v)));
    // Not enough room: 2 × 40 start, 20 wait with the reason.
    let (a, b, w) = spread(config(100, 40), 3400);
    assert_eq!((a.len(), b.len()), (40, 40));
    let d = w.decide(2);
    let waits: Vec<_> = d
        .actions
        .iter()
        .filter(|x| x.kind == ActionKind::Wait)
        .collect();
    assert_eq!(waits.len(), 60, "20 with nobody, 40 assigned to host 3");
    assert_eq!(
        waits
            .iter()
            .filter(|x| x.reason.contains("nobody to start it"))
            .count(),
        20
    );
}

#[test]
fn priority_and_preferred_hosts_order_the_assignment() {
    let mut t = String::from(
        "[cluster]\nlockspace='ls'\nids='/i'\nxleases='/x'\nwhiteboard='/w'\ncapacity=1\n",
    );
    t.push_str("[[vm]]\nname='low'\nstart=['/bin/true']\n");
    t.push_str("[[vm]]\nname='high'\npriority=5\npreferred_hosts=[3]\nstart=['/bin/true']\n");
    let mut w = View::new(Config::parse(&t).unwrap(), 3);
    w.host(1).state = HostState::Dead;
    // Capacity 1 on each of 2 hosts: high goes to its preferred host 3,
    // low to host 2.
    assert_eq!(
        starts_now(&w),
        vec![(1, vec![]), (2, vec![0]), (3, vec![1])]
    );
}

#[test]
fn config_digest_mismatch_host_is_excluded() {
    let mut w = View::new(config(1, 64), 3);
    w.runs(1, &[0]);
    w.host(1).state = HostState::Dead;
    w.sector(2).config_digest ^= 1;
    assert_eq!(starts_now(&w), vec![(1, vec![]), (2, vec![]), (3, vec![0])]);
}

#[test]
fn stale_whiteboard_host_is_excluded_and_does_not_race() {
    let mut w = View::new(config(1, 64), 3);
    w.runs(1, &[0]);
    w.host(1).state = HostState::Dead;
    w.host(2).fresh = false;
    assert_eq!(starts_now(&w), vec![(1, vec![]), (2, vec![]), (3, vec![0])]);
    let mut i = w.input(2, Memory::default());
    i.memory.vms = vec![Default::default()];
    i.memory.vms[0].orphan_since = Some(0);
    let d = decide(&i);
    assert!(starts(&d).is_empty());
    assert!(reason(&d, 0).contains("no candidate"), "{}", reason(&d, 0));
}

// ---- properties over random views ----

/// state, generation, fresh, same digest, local maintenance, score, running
/// and failed bit seeds.
type RandomHost = (u8, u64, bool, bool, bool, u32, u8, u8);

#[derive(Clone, Debug)]
struct RandomView {
    nvms: usize,
    hosts: Vec<RandomHost>,
    leases: Vec<(u8, u64, u64)>,
    global: bool,
    capacity: u32,
}

fn random_view() -> impl Strategy<Value = RandomView> {
    (1usize..12, 1usize..6, any::<bool>(), 1u32..6).prop_flat_map(
        |(nvms, nhosts, global, capacity)| {
            (
                proptest::collection::vec(
                    (
                        0u8..5,        // state
                        1u64..3,       // generation
                        any::<bool>(), // fresh
                        any::<bool>(), // same digest (mostly)
                        any::<bool>(), // local maintenance
                        0u32..=3400,   // score
                        any::<u8>(),   // running bits seed
                        any::<u8>(),   // failed bits seed
                    ),
                    nhosts,
                ),
                proptest::collection::vec((0u8..8, 1u64..3, 1u64..3), nvms),
            )
                .prop_map(move |(hosts, leases)| RandomView {
                    nvms,
                    hosts,
                    leases,
                    global,
                    capacity,
                })
        },
    )
}

fn build(r: &RandomView) -> View {
    let mut w = View::new(config(r.nvms, r.capacity), r.hosts.len() as u64);
    let digest = w.cfg.digest();
    for (k, &(st, generation, fresh, same, maint, score, run, fail)) in r.hosts.iter().enumerate() {
        let h = w.host(k as u64 + 1);
        h.state = [
            HostState::Live,
            HostState::Live,
            HostState::Fail,
            HostState::Dead,
            HostState::Free,
        ][st as usize];
        h.generation = generation;
        h.fresh = fresh;
        let s = h.sector.as_mut().unwrap();
        s.generation = generation;
        s.config_digest = if same || score % 4 != 0 {
            digest
        } else {
            digest ^ 1
        };
        s.flags = maint as u32 * (score % 3 == 0) as u32;
        s.score = score;
        s.running =
            VmBitmap::from_indexes((0..r.nvms).filter(|v| run >> (v % 8) & 1 == 1 && v % 3 == 0));
        s.failed =
            VmBitmap::from_indexes((0..r.nvms).filter(|v| fail >> (v % 8) & 1 == 1 && v % 2 == 0));
    }
    let nhosts = r.hosts.len() as u64;
    w.leases = r
        .leases
        .iter()
        .map(|&(k, owner, generation)| match k {
            0 | 1 => LeaseView::Free,
            7 => LeaseView::Unreadable,
            _ => LeaseView::Held {
                owner: (owner + k as u64) % (nhosts + 1) + 1, // sometimes unknown to the daemon
                generation,
                lver: 1,
            },
        })
        .collect();
    w.global = r.global;
    w
}

/// The lease's owner may still run the VM (`me` runs nothing: a lease of
/// ours is a leftover only we may take back).
fn owner_may_run(w: &View, lease: LeaseView, me: u64) -> bool {
    match lease {
        LeaseView::Free => false,
        LeaseView::Unreadable => true,
        LeaseView::Held { owner, .. } if owner == me => false,
        LeaseView::Held {
            owner, generation, ..
        } => match w.hosts.iter().find(|h| h.host_id == owner) {
            None => true,
            Some(h) => {
                h.generation <= generation
                    && matches!(
                        h.state,
                        HostState::Live | HostState::Fail | HostState::Unknown
                    )
            }
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn each_orphan_assigned_to_at_most_one_host_now(r in random_view()) {
        let mut w = build(&r);
        w.global = false;
        let mut by_vm = vec![Vec::new(); r.nvms];
        for h in &w.hosts {
            for v in starts(&w.decide(h.host_id)) {
                by_vm[v].push(h.host_id);
            }
        }
        for (v, hs) in by_vm.iter().enumerate() {
            prop_assert!(hs.len() <= 1, "vm {} started now by hosts {:?}", v, hs);
        }
    }

    #[test]
    fn never_start_while_owner_live_or_fail_nor_in_global_maintenance(
        r in random_view(), waited in 0u64..30, me_k in 0usize..6
    ) {
        let w = build(&r);
        let me = (me_k % r.hosts.len()) as u64 + 1;
        let mut i = w.input(me, Memory::default());
        i.memory.vms = vec![Default::default(); r.nvms];
        for m in &mut i.memory.vms {
            m.orphan_since = Some(w.now - waited);
        }
        let d = decide(&i);
        for v in starts(&d) {
            prop_assert!(!w.global, "start {} in global maintenance", v);
            prop_assert!(!owner_may_run(&w, w.leases[v], me), "start {} while {:?}", v, w.leases[v]);
        }
        let running_here = i.local.iter().filter(|l| **l != Local::Idle).count();
        prop_assert!(running_here + starts(&d).len() <= r.capacity as usize || starts(&d).is_empty(),
            "over capacity");
    }
}

#[test]
fn grace_counts_from_the_first_cycle_with_an_assigned_host() {
    let mut w = View::new(config(1, 64), 3);
    w.runs(1, &[0]);
    w.host(1).state = HostState::Dead;
    // Nobody fresh yet (a cluster starting): no candidate for 20 s.
    for h in [2, 3] {
        w.host(h).fresh = false;
    }
    let mut mem = Memory::default();
    for _ in 0..10 {
        let d = decide(&w.input(3, mem));
        assert!(starts(&d).is_empty());
        mem = d.memory;
        w.now += 2;
    }
    // Candidates now: host 2 is assigned; host 3 must give it the grace.
    for h in [2, 3] {
        w.host(h).fresh = true;
    }
    let d = decide(&w.input(3, mem));
    assert!(starts(&d).is_empty(), "{:?}", d.actions);
    assert!(
        reason(&d, 0).contains("racing after grace"),
        "{}",
        reason(&d, 0)
    );
    w.now += 10;
    assert_eq!(starts(&decide(&w.input(3, d.memory))), vec![0]);
}

#[test]
fn a_vm_a_live_host_reports_running_is_not_started_whatever_its_lease() {
    let mut w = View::new(config(1, 64), 3);
    // Host 2 runs it, but the lease reads free (a runner without the lease).
    w.sector(2).running = VmBitmap::from_indexes([0]);
    let d = w.decide(3);
    assert!(starts(&d).is_empty());
    assert!(
        reason(&d, 0).contains("host 2 (LIVE) reports it running"),
        "{}",
        reason(&d, 0)
    );
    // A hung host's last sector counts, stale or FAIL, until it is DEAD.
    w.host(2).fresh = false;
    assert!(starts(&w.decide(1)).is_empty());
    w.host(2).state = HostState::Fail;
    let d = w.decide(1);
    assert!(starts(&d).is_empty());
    assert!(
        reason(&d, 0).contains("host 2 (FAIL) reports it running"),
        "{}",
        reason(&d, 0)
    );
    // DEAD: its VMs are gone; host 1 (the best candidate left) starts it.
    w.host(2).state = HostState::Dead;
    assert_eq!(starts(&w.decide(1)), vec![0]);
    // A sector of an older generation of the host says nothing either.
    w.host(2).state = HostState::Live;
    w.host(2).generation = 2;
    assert_eq!(starts(&w.decide(1)), vec![0]);
}

// ---- host health (issue 18): moves and isolation ----

use hactl::ha::health::{self, HealthScore, Readings};

/// Two VMs and a `[health]` section with a gateway and a bridge checked.
fn health_config(extra: &str) -> Config {
    let t = format!(
        "[cluster]\nlockspace='ls'\nids='/i'\nxleases='/x'\nwhiteboard='/w'\n\
         interval=2\ngrace=10\ncapacity=64\n\
         [[vm]]\nname='db'\npriority=5\nstart=['/bin/true']\nisolation='stop'\n\
         [[vm]]\nname='web'\nstart=['/bin/true']\n\
         [health]\nhold_down=10\nisolation_after=6\n{extra}\n\
         [health.gateway]\naddresses=['10.9.0.1']\n\
         [health.links]\ninterfaces=['br0']\n"
    );
    Config::parse(&t).unwrap()
}

/// What host monitors read: gateway and bridge up or not.
fn readings(cfg: &Config, gateway: bool, bridge: bool) -> HealthScore {
    health::score(
        &cfg.health,
        &Readings::networks(&[("10.9.0.1", gateway)], &[("br0", bridge)]),
    )
}

/// Host 1 runs both VMs; hosts 1 and 2 published `s1` and `s2`.
fn two_hosts(s1: u32, s2: u32) -> View {
    let mut w = View::new(health_config(""), 2);
    w.runs(1, &[0, 1]);
    w.sector(1).score = s1;
    w.sector(2).score = s2;
    w
}

fn decide_with(w: &View, me: u64, mem: Memory, h: HealthScore) -> Decision {
    let mut i = w.input(me, mem);
    i.health = Some(h);
    decide(&i)
}

#[test]
fn gateway_loss_scores_the_penalty_and_moves_one_vm_after_hold_down() {
    let mut w = two_hosts(3400, 3400);
    let sick = readings(&w.cfg, false, true);
    assert_eq!(sick.score, 3400 - 1600);
    let d = decide_with(&w, 1, Memory::default(), sick.clone());
    assert_eq!(
        d.score, 1800,
        "published score: base less the gateway penalty"
    );
    assert_eq!(d.health.points[0], 1600);
    assert!(
        d.stops().next().is_none(),
        "hold_down first: {:?}",
        d.actions
    );
    // The hold-down counts once our published score says it (others
    // assign by it): not yet.
    assert_eq!(d.memory.health.worse_since, None);
    // Others see our 1800 on the whiteboard from the next cycle on.
    w.sector(1).score = 1800;
    w.now += 1;
    let d = decide_with(&w, 1, d.memory, sick.clone());
    assert!(d.stops().next().is_none());
    assert_eq!(d.memory.health.worse_since, Some(w.now));
    // 9 s later: still holding down.
    let mut mem = d.memory;
    w.now += 9;
    let d = decide_with(&w, 1, mem.clone(), sick.clone());
    assert!(d.stops().next().is_none());
    mem = d.memory;
    w.now += 1;
    let d = decide_with(&w, 1, mem, sick.clone());
    let stops: Vec<usize> = d.stops().collect();
    assert_eq!(stops, vec![0], "one VM, the higher priority first");
    let r = reason(&d, 0);
    assert!(
        r.contains("moving it") && r.contains("gateway -1600"),
        "{r}"
    );
    assert!(r.contains("below host 2 score 3400 (margin 800)"), "{r}");
    // Next cycle: db is stopping; web does not move yet (one at a time).
    w.now += 2;
    let mut i = w.input(1, d.memory.clone());
    i.local[0] = Local::Stopping { since: w.now };
    i.health = Some(sick.clone());
    let d = decide(&i);
    assert!(d.stops().next().is_none(), "{:?}", d.actions);
    // db stopped here and its lease is free: host 2 starts it, host 1 does
    // not, not even after grace (it is 800 below: no race).
    w.leases[0] = LeaseView::Free;
    w.sector(1).running = VmBitmap::from_indexes([1]);
    let d2 = w.decide(2);
    assert_eq!(starts(&d2), vec![0]);
    let mut m1 = d.memory.clone();
    m1.vms = vec![Default::default(); 2];
    m1.vms[0].orphan_since = Some(w.now - 60);
    let d1 = decide_with(&w, 1, m1, sick.clone());
    assert!(starts(&d1).is_empty(), "{:?}", d1.actions);
    assert!(reason(&d1, 0).contains("not racing"), "{}", reason(&d1, 0));
    // db runs on host 2: now web moves.
    w.leases[0] = LeaseView::Held {
        owner: 2,
        generation: 1,
        lver: 2,
    };
    w.sector(2).running = VmBitmap::from_indexes([0]);
    let d = decide_with(&w, 1, d.memory, sick);
    assert_eq!(d.stops().collect::<Vec<_>>(), vec![1], "{:?}", d.actions);
}

#[test]
fn flapping_scores_move_nothing_and_a_recovered_host_takes_nothing_back() {
    let mut w = two_hosts(3400, 3400);
    let (sick, well) = (readings(&w.cfg, false, true), readings(&w.cfg, true, true));
    let mut mem = Memory::default();
    // Sick 9 s, well 2 s, again and again (publishing each cycle's score,
    // as the agent does): never 10 s worse in a row.
    let mut worse_cycles = 0;
    for round in 0..10 {
        for (h, secs) in [(&sick, 9), (&well, 2)] {
            for _ in 0..secs {
                let d = decide_with(&w, 1, mem, h.clone());
                assert!(d.stops().next().is_none(), "round {round}: {:?}", d.actions);
                worse_cycles += d.memory.health.worse_since.is_some() as u32;
                mem = d.memory;
                w.sector(1).score = d.score;
                w.now += 1;
            }
        }
    }
    assert!(
        worse_cycles >= 70,
        "the flaps were judged worse: {worse_cycles}"
    );
    // Sick for 12 s in a row (the first cycle publishes it, then 10 s of
    // hold-down): a move.
    for _ in 0..12 {
        let d = decide_with(&w, 1, mem, sick.clone());
        mem = d.memory;
        w.sector(1).score = d.score;
        w.now += 1;
    }
    assert!(mem.health.moving.is_some(), "{mem:?}");
    // After a move, both healthy: host 2 runs both, host 1 is empty.
    // Nothing bounces back, nor with host 2 a little loaded (under margin).
    let mut w = View::new(health_config(""), 2);
    w.runs(2, &[0, 1]);
    w.sector(2).score = 3400 - 700;
    for me in [1, 2] {
        let mut h = readings(&w.cfg, true, true);
        if me == 2 {
            h.score = 2700;
        }
        let mut mem = Memory::default();
        for _ in 0..30 {
            let d = decide_with(&w, me, mem, h.clone());
            assert!(
                d.stops().next().is_none() && starts(&d).is_empty(),
                "host {me}: {:?}",
                d.actions
            );
            mem = d.memory;
            w.now += 1;
        }
    }
}

#[test]
fn isolated_host_stops_its_stop_policy_vms_after_isolation_after_and_takes_none() {
    let mut w = two_hosts(3400, 3400);
    let lost = readings(&w.cfg, false, false);
    assert!(lost.network_lost);
    let d = decide_with(&w, 1, Memory::default(), lost.clone());
    assert!(d.stops().next().is_none(), "not before isolation_after");
    assert!(d.health.network_lost() && !d.health.isolated());
    w.now += 6;
    let d = decide_with(&w, 1, d.memory, lost.clone());
    // db's policy is stop, web's is the cluster's (keep); no move either.
    assert_eq!(d.stops().collect::<Vec<_>>(), vec![0], "{:?}", d.actions);
    assert!(reason(&d, 0).contains("isolated"), "{}", reason(&d, 0));
    assert_eq!(d.score, 0, "an isolated host takes no VM");
    assert!(d.health.isolated());
    // Our own delta lease not LIVE (storage lost too): not isolation, the
    // daemon's own failure handling is in charge.
    w.host(1).state = HostState::Fail;
    let d = decide_with(&w, 1, Memory::default(), lost.clone());
    w.now += 20;
    let d = decide_with(&w, 1, d.memory, lost.clone());
    assert!(d.stops().next().is_none(), "{:?}", d.actions);
    w.host(1).state = HostState::Live;
    // Cluster-wide stop: both go.
    let mut w2 = two_hosts(3400, 3400);
    w2.cfg = health_config("isolation='stop'");
    let digest = w2.cfg.digest();
    for h in [1, 2] {
        w2.sector(h).config_digest = digest;
    }
    let d = decide_with(&w2, 1, Memory::default(), lost.clone());
    w2.now += 6;
    let d = decide_with(&w2, 1, d.memory, lost);
    assert_eq!(d.stops().collect::<Vec<_>>(), vec![0, 1]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// A move stops at most one VM per cycle, only one that runs here,
    /// and only when another LIVE, fresh host with room, the same config
    /// and no maintenance scores at least move_margin more; never while
    /// every network is lost.
    #[test]
    fn a_move_needs_a_host_margin_better(
        r in random_view(), me_k in 0usize..6, gw in any::<bool>(), br in any::<bool>(),
        worse_for in 0u64..30,
    ) {
        let mut w = build(&r);
        w.cfg.health.hold_down = 10;
        let digest = w.cfg.digest();
        for h in w.hosts.iter_mut() {
            if let Some(s) = h.sector.as_mut() && s.config_digest != digest ^ 1 {
                s.config_digest = digest;
            }
        }
        w.global = false;
        let me = (me_k % r.hosts.len()) as u64 + 1;
        let mut i = w.input(me, Memory::default());
        let h = readings(&w.cfg, gw, br);
        let lost = h.network_lost;
        i.health = Some(h);
        i.memory.health.worse_since = Some(w.now - worse_for);
        let d = decide(&i);
        let moves: Vec<_> = d.actions.iter()
            .filter(|a| a.kind == ActionKind::Stop && a.reason.contains("moving it"))
            .collect();
        prop_assert!(moves.len() <= 1, "{:?}", moves);
        if let Some(m) = moves.first() {
            prop_assert!(!lost);
            prop_assert!(worse_for >= 10);
            let running_here = matches!(i.local[m.vm], Local::Running { .. });
            prop_assert!(running_here);
            let better = w.hosts.iter().any(|h| {
                h.host_id != me && h.state == HostState::Live && h.fresh
                    && h.sector.is_some_and(|s| s.config_digest == digest
                        && !s.local_maintenance()
                        && s.running_count() < r.capacity
                        && s.score >= d.score + 800)
            });
            prop_assert!(better, "{}", m.reason);
        }
    }
}

/// A sick host at capacity (no candidate for more VMs) still gives its
/// VMs up; and not before its published score shows how sick it is (the
/// others assign the VM it stops by that score).
#[test]
fn a_full_sick_host_moves_too_once_its_published_score_says_so() {
    let mut cfg = health_config("");
    cfg.cluster.capacity = 2;
    let mut w = View::new(cfg, 2);
    w.runs(1, &[0, 1]);
    let sick = readings(&w.cfg, false, true);
    let mut mem = Memory::default();
    mem.health.worse_since = Some(w.now - 100);
    // Published 3400 still (our sector from before the penalty): no move.
    let d = decide_with(&w, 1, mem.clone(), sick.clone());
    assert!(d.stops().next().is_none(), "{:?}", d.actions);
    assert_eq!(d.score, 3400 - 1600 - 400, "gateway and full penalties");
    w.sector(1).score = d.score;
    let d = decide_with(&w, 1, mem, sick);
    assert_eq!(d.stops().collect::<Vec<_>>(), vec![0], "{:?}", d.actions);
}

// ---- live migration (issue 18, last piece) ----

/// Three VMs: `db` and `web` of runner libvirt, `cmd` of runner command;
/// `[migration]` names the hosts in `migratable`.
fn migration_config(migratable: &[u64], health: &str) -> Config {
    let mut t = String::from(
        "[cluster]\nlockspace='ls'\nids='/i'\nxleases='/x'\nwhiteboard='/w'\n\
         interval=2\ngrace=10\ncapacity=64\n\
         [[vm]]\nname='db'\npriority=5\nrunner='libvirt'\ndomain='db'\n\
         [[vm]]\nname='web'\nrunner='libvirt'\ndomain='web'\n\
         [[vm]]\nname='cmd'\nstart=['/bin/true']\n",
    );
    t.push_str(health);
    if !migratable.is_empty() {
        t.push_str("[migration]\ntunnelled=true\n");
        for h in migratable {
            t.push_str(&format!(
                "[[migration.host]]\nhost_id={h}\nuri='qemu+tcp://10.9.0.{h}/system'\n"
            ));
        }
    }
    Config::parse(&t).unwrap()
}

fn migrate_to(d: &Decision, vm: usize) -> Option<u64> {
    d.actions
        .iter()
        .find(|a| a.vm == vm && a.kind == ActionKind::Stop)
        .expect("a stop")
        .migrate_to
}

#[test]
fn local_maintenance_live_migrates_libvirt_vms_to_the_host_that_would_start_them() {
    // Host 1 in maintenance runs all three; host 2 scores 3400, host 3
    // 3000 (both take migrations); web prefers host 3.
    let mut cfg = migration_config(&[2, 3], "");
    cfg.vms[1].preferred_hosts = vec![3];
    let mut w = View::new(cfg, 3);
    w.runs(1, &[0, 1, 2]);
    w.sector(3).score = 3000;
    let mut i = w.input(1, Memory::default());
    i.local_maintenance = true;
    let d = decide(&i);
    assert_eq!(d.stops().collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(migrate_to(&d, 0), Some(2), "{:?}", d.actions);
    assert_eq!(migrate_to(&d, 1), Some(3), "its preferred host");
    assert_eq!(migrate_to(&d, 2), None, "runner command: a cold move");
    assert!(
        reason(&d, 0).contains("live-migrating it to host 2 (score 3400)"),
        "{}",
        reason(&d, 0)
    );
    assert!(reason(&d, 2).contains("stopping it so another host takes it"));
    assert!(starts(&d).is_empty());
    // Migrating (Local::Stopping): nothing more is asked of them.
    let mut i = w.input(1, d.memory.clone());
    i.local_maintenance = true;
    i.local = vec![Local::Stopping { since: w.now }; 3];
    assert!(decide(&i).stops().next().is_none());
    // While a VM migrates the source still reports it running and its
    // lease may be free between the pause here and the resume there:
    // nobody starts it.
    w.leases[0] = LeaseView::Free;
    for h in [2, 3] {
        let mut m = Memory {
            vms: vec![Default::default(); 3],
            ..Default::default()
        };
        m.vms[0].orphan_since = Some(0);
        let d = decide(&w.input(h, m));
        assert!(!starts(&d).contains(&0), "host {h}: {:?}", d.actions);
    }
}

#[test]
fn local_maintenance_moves_cold_towards_a_host_without_a_migration_uri() {
    // Only host 3 takes migrations; host 2 (the better one) does not.
    let mut w = View::new(migration_config(&[3], ""), 3);
    w.runs(1, &[0]);
    w.sector(3).score = 3000;
    let mut i = w.input(1, Memory::default());
    i.local_maintenance = true;
    let d = decide(&i);
    assert_eq!(migrate_to(&d, 0), None, "{:?}", d.actions);
    // No `[migration]` at all: the cold move as before.
    let mut w = View::new(migration_config(&[], ""), 2);
    w.runs(1, &[0, 1]);
    let mut i = w.input(1, Memory::default());
    i.local_maintenance = true;
    let d = decide(&i);
    assert!(d.actions.iter().all(|a| a.migrate_to.is_none()));
    // Nobody to go to (host 2 full, or in maintenance too): a plain stop.
    let mut w = View::new(migration_config(&[2], ""), 2);
    w.runs(1, &[0]);
    w.sector(2).flags = hactl::ha::whiteboard::LOCAL_MAINTENANCE;
    let mut i = w.input(1, Memory::default());
    i.local_maintenance = true;
    assert_eq!(migrate_to(&decide(&i), 0), None);
}

#[test]
fn a_health_move_live_migrates_to_the_better_host() {
    let health = "[health]\nhold_down=0\n[health.gateway]\naddresses=['10.9.0.1']\n\
                  [health.links]\ninterfaces=['br0']\n";
    let cfg = migration_config(&[1, 2], health);
    let sick = health::score(
        &cfg.health,
        &Readings::networks(&[("10.9.0.1", false)], &[("br0", true)]),
    );
    let mut w = View::new(cfg, 2);
    w.runs(1, &[0, 1, 2]);
    w.sector(1).score = sick.score;
    let d = decide_with(&w, 1, Memory::default(), sick.clone());
    assert_eq!(d.stops().collect::<Vec<_>>(), vec![0], "{:?}", d.actions);
    assert_eq!(migrate_to(&d, 0), Some(2));
    let r = reason(&d, 0);
    assert!(
        r.contains("moving it by live migration to host 2") && r.contains("if that fails"),
        "{r}"
    );
    // db arrived on host 2 (its lease and sector say so): cmd next (by
    // name), cold: runner command.
    w.leases[0] = LeaseView::Held {
        owner: 2,
        generation: 1,
        lver: 2,
    };
    w.sector(2).running = VmBitmap::from_indexes([0]);
    w.sector(1).running = VmBitmap::from_indexes([1, 2]);
    let d = decide_with(&w, 1, d.memory, sick.clone());
    assert_eq!(d.stops().collect::<Vec<_>>(), vec![2], "{:?}", d.actions);
    assert_eq!(migrate_to(&d, 2), None);
    assert!(reason(&d, 2).contains("stopping it here first"));
    // cmd runs on host 2: web last, live.
    w.leases[2] = LeaseView::Held {
        owner: 2,
        generation: 1,
        lver: 2,
    };
    w.sector(2).running = VmBitmap::from_indexes([0, 2]);
    w.sector(1).running = VmBitmap::from_indexes([1]);
    let d = decide_with(&w, 1, d.memory, sick);
    assert_eq!(d.stops().collect::<Vec<_>>(), vec![1], "{:?}", d.actions);
    assert_eq!(migrate_to(&d, 1), Some(2));
}
