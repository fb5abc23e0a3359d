//! decide(): the situations of issue 7, each from the view of every host,
//! and properties over random views (docs/ha-design.md, "decide()").

use hactl::ha::config::Config;
use hactl::ha::decide::{
    ActionKind, Decision, HostView, Input, LeaseView, Local, Memory, Outcome, OutcomeKind, decide,
};
use hactl::ha::whiteboard::{HostSector, VmBitmap};
use hactl::hosts::HostState;

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
