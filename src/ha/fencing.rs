//! The fencing decision, beside [`super::decide`]: which FAIL host this
//! host fences now, or why not. Pure: the agent and the simulation build
//! the [`FenceInput`] (the same host views decide() gets, our own renewal
//! age, what our fencer is doing, memory); no I/O, no clock.
//!
//! Rules (docs/ha-design.md, "Fencing"):
//! 1. Only a host the daemon calls FAIL, with fence agents configured, in
//!    the generation judged FAIL; once per generation (a fence that
//!    failed is not retried: the host becomes DEAD in time, as without
//!    fencing).
//! 2. Not in global maintenance, not while we are in local maintenance,
//!    not a host whose last sector says local maintenance.
//! 3. After it has been FAIL for `delay` seconds (by our clock).
//! 4. Exactly one fencer: the LIVE hosts other than the victim, not in
//!    local maintenance, by host id; the one at rank r fences once the
//!    victim has been fenceable for r × `takeover` seconds and no host
//!    reports on the whiteboard that it is fencing (or has fenced) it.
//! 5. Storm guard: never while our own delta lease has not been renewed
//!    recently (our view of storage may be what is wrong); never when
//!    every other host looks FAIL at once in a cluster of three or more
//!    (the odd one out is more likely us: fencing them all would leave
//!    us the last LIVE host); at most `max_fences` per `window` seconds.
//! 6. One fence at a time per fencer.

use std::collections::BTreeMap;

use super::decide::HostView;
use super::fence::FencingConfig;
use super::whiteboard::{FENCE_DECLARED, FENCE_FAILED, FENCE_RUNNING, FenceReport};
use crate::hosts::HostState;

/// What the agent carries from one cycle to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FenceMemory {
    /// Victim host_id → (generation, since when it has been fenceable).
    pub since: BTreeMap<u64, (u64, u64)>,
    /// Victim host_id → the generation whose fence is over (ours or
    /// another host's): never fenced again.
    pub done: BTreeMap<u64, u64>,
    /// When our fences started (the storm guard's window).
    pub started: Vec<u64>,
}

#[derive(Clone, Debug)]
pub struct FenceInput<'a> {
    pub now: u64,
    pub me: u64,
    pub fencing: &'a FencingConfig,
    /// As decide() gets them.
    pub hosts: &'a [HostView],
    pub global_maintenance: bool,
    pub local_maintenance: bool,
    /// Seconds since our own delta lease last changed (None: unknown).
    pub own_renewal_age: Option<u64>,
    /// The lockspace's io_timeout (our renewal is due every 2 ×).
    pub io_timeout: u64,
    /// The victim our fencer works on now.
    pub busy: Option<u64>,
    pub memory: FenceMemory,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceAction {
    /// Fence this host now.
    Fence {
        victim: u64,
        generation: u64,
        reason: String,
    },
    /// A FAIL host not fenced (yet), and why.
    Wait { victim: u64, reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceDecision {
    pub actions: Vec<FenceAction>,
    pub memory: FenceMemory,
}

impl FenceDecision {
    pub fn fence(&self) -> Option<(u64, u64)> {
        self.actions.iter().find_map(|a| match a {
            FenceAction::Fence {
                victim, generation, ..
            } => Some((*victim, *generation)),
            FenceAction::Wait { .. } => None,
        })
    }
}

/// How long our own renewal may be overdue before we stop fencing: two
/// renewal periods (2 × io_timeout each), then the agent's cycle.
pub fn own_renewal_limit(io_timeout: u64) -> u64 {
    4 * io_timeout.max(1) + 2
}

/// Another host's fence report about `victim` in `generation`, if it has one.
fn report_on(h: &HostView, victim: u64, generation: u64) -> Option<FenceReport> {
    let s = h.sector.as_ref()?;
    (s.generation == h.generation
        && s.fence.victim == victim
        && s.fence.victim_generation == generation)
        .then_some(s.fence)
}

pub fn decide_fencing(i: &FenceInput) -> FenceDecision {
    let cfg = i.fencing;
    let now = i.now;
    let mut mem = i.memory.clone();
    let mut actions = Vec::new();
    mem.started.retain(|&t| now < t + cfg.window);
    let fail: Vec<&HostView> = i
        .hosts
        .iter()
        .filter(|h| h.state == HostState::Fail && h.host_id != i.me)
        .collect();
    // Forget hosts that are no longer FAIL (or are in another generation).
    mem.since
        .retain(|id, (g, _)| fail.iter().any(|h| h.host_id == *id && h.generation == *g));
    let live: Vec<&HostView> = i
        .hosts
        .iter()
        .filter(|h| h.state == HostState::Live)
        .collect();
    let mut chosen: Option<(u64, u64, String)> = None;
    for v in &fail {
        let (id, g) = (v.host_id, v.generation);
        let wait = |reason: String| FenceAction::Wait {
            victim: id,
            reason: format!("host {id} FAIL: {reason}"),
        };
        let Some(fh) = cfg.host(id) else {
            actions.push(wait(
                "no fence agent configured for it; waiting for DEAD".into(),
            ));
            continue;
        };
        if mem.done.get(&id) == Some(&g) {
            continue;
        }
        // Another host's report that it is over counts as ours.
        if let Some((h, r)) = i
            .hosts
            .iter()
            .filter(|h| h.host_id != i.me && h.host_id != id)
            .find_map(|h| {
                report_on(h, id, g)
                    .filter(|r| matches!(r.phase, FENCE_DECLARED | FENCE_FAILED))
                    .map(|r| (h.host_id, r))
            })
        {
            mem.done.insert(id, g);
            let what = if r.phase == FENCE_DECLARED {
                "fenced and declared dead"
            } else {
                "fence failed; waiting for DEAD"
            };
            actions.push(wait(format!("host {h} reports it {what}")));
            continue;
        }
        let since = mem.since.entry(id).or_insert((g, now)).1;
        if i.busy == Some(id) {
            continue;
        }
        if i.global_maintenance {
            actions.push(wait("global maintenance: not fencing".into()));
            continue;
        }
        if i.local_maintenance {
            actions.push(wait(format!(
                "host {} in local maintenance: not fencing",
                i.me
            )));
            continue;
        }
        if v.sector
            .is_some_and(|s| s.generation == g && s.local_maintenance())
        {
            actions.push(wait(
                "it is in local maintenance (an admin works on it): not fencing".into(),
            ));
            continue;
        }
        if let Some(h) = i.hosts.iter().find(|h| {
            h.host_id != i.me
                && h.fresh
                && report_on(h, id, g).is_some_and(|r| r.phase == FENCE_RUNNING)
        }) {
            actions.push(wait(format!("host {} is fencing it", h.host_id)));
            continue;
        }
        let failed_for = now.saturating_sub(since);
        if failed_for < cfg.delay {
            actions.push(wait(format!(
                "FAIL for {failed_for} s; fencing after delay {} s",
                cfg.delay
            )));
            continue;
        }
        let mut fencers: Vec<u64> = live
            .iter()
            .filter(|h| h.host_id != id)
            .filter(|h| {
                !h.sector
                    .is_some_and(|s| s.generation == h.generation && s.local_maintenance())
            })
            .map(|h| h.host_id)
            .collect();
        fencers.sort();
        fencers.dedup();
        let Some(rank) = fencers.iter().position(|&h| h == i.me) else {
            actions.push(wait(format!("host {} is not LIVE: not fencing", i.me)));
            continue;
        };
        let eligible_for = failed_for - cfg.delay;
        let turn = rank as u64 * cfg.takeover;
        if eligible_for < turn {
            actions.push(wait(format!(
                "host {} (lowest LIVE host id) fences it; host {} takes over after {turn} s without its report ({eligible_for} s so far)",
                fencers[0], i.me
            )));
            continue;
        }
        let limit = own_renewal_limit(i.io_timeout);
        match i.own_renewal_age {
            Some(a) if a <= limit => {}
            a => {
                actions.push(wait(format!(
                    "our own delta lease has not been renewed for {} (limit {limit} s): our view of storage may be stale; not fencing",
                    a.map_or("an unknown time".into(), |a| format!("{a} s"))
                )));
                continue;
            }
        }
        let others = i.hosts.iter().filter(|h| h.host_id != i.me);
        let (n_others, n_fail) = others.fold((0, 0), |(n, f), h| {
            (
                n + u32::from(!matches!(h.state, HostState::Free | HostState::Dead)),
                f + u32::from(h.state == HostState::Fail),
            )
        });
        if n_others >= 2 && n_fail == n_others {
            actions.push(wait(format!(
                "all {n_others} other hosts look FAIL at once: more likely our view than theirs; never fencing down to the last LIVE host"
            )));
            continue;
        }
        if mem.started.len() as u32 >= cfg.max_fences {
            actions.push(wait(format!(
                "storm guard: {} fences by host {} in the last {} s (max_fences {})",
                mem.started.len(),
                i.me,
                cfg.window,
                cfg.max_fences
            )));
            continue;
        }
        if i.busy.is_some() || chosen.is_some() {
            actions.push(wait(format!(
                "host {} fences one host at a time; next",
                i.me
            )));
            continue;
        }
        let agents: Vec<String> = fh.agents.iter().map(|a| a.label()).collect();
        chosen = Some((
            id,
            g,
            format!(
                "host {id} FAIL for {failed_for} s (generation {g}, {}); host {} {}: fencing it with {}",
                v.renewal_age
                    .map_or("last renewal unknown".into(), |a| format!(
                        "last renewal {a} s ago"
                    )),
                i.me,
                if rank == 0 {
                    "is the lowest LIVE host id".to_string()
                } else {
                    format!(
                        "takes over from host(s) {:?} after {turn} s without their report",
                        &fencers[..rank]
                    )
                },
                agents.join(", then ")
            ),
        ));
    }
    if let Some((victim, generation, reason)) = chosen {
        mem.started.push(now);
        actions.insert(
            0,
            FenceAction::Fence {
                victim,
                generation,
                reason,
            },
        );
    }
    FenceDecision {
        actions,
        memory: mem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::fence::{FenceAgent, FenceHost};
    use crate::ha::whiteboard::{HostSector, LOCAL_MAINTENANCE};

    fn cfg(hosts: &[u64]) -> FencingConfig {
        FencingConfig {
            delay: 0,
            takeover: 10,
            max_fences: 2,
            window: 600,
            hosts: hosts
                .iter()
                .map(|&h| FenceHost {
                    host_id: h,
                    agents: vec![FenceAgent {
                        command: vec!["/usr/sbin/fence_ipmilan".into()],
                        options: Default::default(),
                        secrets: None,
                        timeout: 20,
                    }],
                })
                .collect(),
        }
    }

    fn host(id: u64, state: HostState) -> HostView {
        HostView {
            host_id: id,
            state,
            generation: 1,
            renewal_age: Some(if state == HostState::Live { 0 } else { 9 }),
            sector: Some(HostSector {
                host_id: id,
                generation: 1,
                seq: 5,
                score: 3400,
                ..Default::default()
            }),
            fresh: state == HostState::Live,
        }
    }

    fn input<'a>(c: &'a FencingConfig, hosts: &'a [HostView], me: u64) -> FenceInput<'a> {
        FenceInput {
            now: 100,
            me,
            fencing: c,
            hosts,
            global_maintenance: false,
            local_maintenance: false,
            own_renewal_age: Some(1),
            io_timeout: 1,
            busy: None,
            memory: FenceMemory::default(),
        }
    }

    use HostState::{Dead, Fail, Live};

    #[test]
    fn the_lowest_live_host_fences_at_once_the_others_wait() {
        let c = cfg(&[1, 2, 3]);
        let hosts = [host(1, Fail), host(2, Live), host(3, Live)];
        let d = decide_fencing(&input(&c, &hosts, 2));
        assert_eq!(d.fence(), Some((1, 1)), "{d:?}");
        assert_eq!(d.memory.started, vec![100]);
        let d3 = decide_fencing(&input(&c, &hosts, 3));
        assert_eq!(d3.fence(), None);
        assert!(
            format!("{:?}", d3.actions).contains("host 2 (lowest LIVE host id) fences it"),
            "{d3:?}"
        );
    }

    #[test]
    fn the_next_takes_over_without_a_report_and_not_with_one() {
        let c = cfg(&[1]);
        let mut hosts = vec![host(1, Fail), host(2, Live), host(3, Live)];
        let mut i = input(&c, &hosts, 3);
        let d = decide_fencing(&i);
        assert_eq!(d.fence(), None);
        i.memory = d.memory;
        i.now = 109;
        assert_eq!(decide_fencing(&i).fence(), None);
        i.now = 110;
        assert_eq!(
            decide_fencing(&i).fence(),
            Some((1, 1)),
            "takeover after 10 s"
        );
        let mem = i.memory.clone();
        // Host 2 reports it is fencing: host 3 leaves it to it.
        hosts[1].sector.as_mut().unwrap().fence = FenceReport {
            victim: 1,
            victim_generation: 1,
            phase: FENCE_RUNNING,
        };
        let mut i2 = input(&c, &hosts, 3);
        i2.memory = mem;
        i2.now = 200;
        let d = decide_fencing(&i2);
        assert_eq!(d.fence(), None);
        assert!(format!("{d:?}").contains("host 2 is fencing it"), "{d:?}");
        // ... and once it reports the end, nobody fences that generation again.
        hosts[1].sector.as_mut().unwrap().fence.phase = FENCE_FAILED;
        let mut i3 = input(&c, &hosts, 3);
        i3.now = 300;
        let d = decide_fencing(&i3);
        assert_eq!(d.fence(), None);
        assert_eq!(d.memory.done.get(&1), Some(&1));
        assert!(format!("{d:?}").contains("fence failed; waiting for DEAD"));
    }

    #[test]
    fn delay_maintenance_and_configuration_hold_it_back() {
        let mut c = cfg(&[1]);
        c.delay = 5;
        let hosts = [host(1, Fail), host(2, Live)];
        let mut i = input(&c, &hosts, 2);
        let d = decide_fencing(&i);
        assert_eq!(d.fence(), None);
        i.memory = d.memory;
        i.now = 105;
        assert_eq!(decide_fencing(&i).fence(), Some((1, 1)));
        let mut g = i.clone();
        g.global_maintenance = true;
        assert!(format!("{:?}", decide_fencing(&g)).contains("global maintenance"));
        let mut l = i.clone();
        l.local_maintenance = true;
        assert_eq!(decide_fencing(&l).fence(), None);
        let mut hosts_m = hosts.clone();
        hosts_m[0].sector.as_mut().unwrap().flags = LOCAL_MAINTENANCE;
        let mut m = i.clone();
        m.hosts = &hosts_m;
        assert!(format!("{:?}", decide_fencing(&m)).contains("local maintenance (an admin"));
        let c2 = cfg(&[3]);
        let d = decide_fencing(&input(&c2, &hosts, 2));
        assert!(format!("{d:?}").contains("no fence agent configured"));
    }

    #[test]
    fn storm_guard() {
        let c = cfg(&[1, 3, 4]);
        // Our own renewal is overdue: never.
        let hosts = [host(1, Fail), host(2, Live), host(3, Live)];
        let mut i = input(&c, &hosts, 2);
        i.own_renewal_age = Some(7);
        assert!(format!("{:?}", decide_fencing(&i)).contains("our own delta lease"));
        i.own_renewal_age = None;
        assert_eq!(decide_fencing(&i).fence(), None);
        // Everyone else FAIL at once in a cluster of 3+: never.
        let all = [host(1, Fail), host(2, Live), host(3, Fail)];
        let d = decide_fencing(&input(&c, &all, 2));
        assert_eq!(d.fence(), None);
        assert!(format!("{d:?}").contains("last LIVE host"));
        // ... but in a cluster of two, the other one is fenced.
        let two = [host(1, Fail), host(2, Live)];
        assert_eq!(decide_fencing(&input(&c, &two, 2)).fence(), Some((1, 1)));
        // At most max_fences per window.
        let mut i = input(&c, &hosts, 2);
        i.memory.started = vec![10, 50];
        assert!(format!("{:?}", decide_fencing(&i)).contains("storm guard"));
        i.now = 611;
        assert_eq!(
            decide_fencing(&i).fence(),
            Some((1, 1)),
            "10 left the window"
        );
        // One at a time, and a DEAD host is not fenced.
        let three = [host(1, Fail), host(2, Live), host(3, Live), host(4, Fail)];
        let d = decide_fencing(&input(&c, &three, 2));
        assert_eq!(d.fence(), Some((1, 1)));
        assert!(format!("{d:?}").contains("one host at a time"));
        let dead = [host(1, Dead), host(2, Live)];
        assert!(decide_fencing(&input(&c, &dead, 2)).actions.is_empty());
    }

    #[test]
    fn a_generation_is_fenced_once() {
        let c = cfg(&[1]);
        let mut hosts = vec![host(1, Fail), host(2, Live)];
        let mut i = input(&c, &hosts, 2);
        i.memory.done.insert(1, 1);
        assert!(decide_fencing(&i).actions.is_empty());
        hosts[0].generation = 2;
        let mut i = input(&c, &hosts, 2);
        i.memory.done.insert(1, 1);
        assert_eq!(decide_fencing(&i).fence(), Some((1, 2)), "a new generation");
    }
}
