//! `decide()`: what this host's agent does about each HA VM this cycle.
//! Pure: the agent, the tests and the simulation build the [`Input`]
//! (host states, whiteboard, leases, local processes, memory); no I/O and
//! no clock here. The rules are docs/ha-design.md's, numbered there.

use std::cmp::Reverse;
use std::fmt::Write as _;

use super::config::Config;
use super::health::{HealthScore, IsolationPolicy};
use super::whiteboard::{
    HEALTH_ISOLATED, HEALTH_NETWORK_LOST, HEALTH_REPORTED, HealthRecord, HostSector, MAX_SCORE,
    VmBitmap,
};
use crate::hosts::HostState;

/// A failed start is remembered (failed bit, score penalty) this long.
pub const FAILED_FORGET_SECS: u64 = 600;
/// Score lost per VM with a recent failed start, and the tie-break
/// penalty of a host that failed this VM.
pub const FAILED_PENALTY: u32 = 50;
/// Score lost by a host running `capacity` VMs.
pub const FULL_PENALTY: u32 = 400;

/// One host as this host sees it: the local daemon's judgement of its
/// delta lease, and its whiteboard sector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostView {
    pub host_id: u64,
    pub state: HostState,
    /// Its current lockspace generation (from its delta lease).
    pub generation: u64,
    /// Seconds since its delta lease last changed, for reasons.
    pub renewal_age: Option<u64>,
    /// Its whiteboard sector as read this cycle (None: never written or damaged).
    pub sector: Option<HostSector>,
    /// The sector's seq changed within 3 × interval by our clock.
    pub fresh: bool,
}

/// A VM lease as read from storage this cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseView {
    /// Free or released.
    Free,
    Held {
        owner: u64,
        generation: u64,
        lver: u64,
    },
    /// The read failed: nothing is decided on it.
    Unreadable,
}

/// The VM's process on this host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Local {
    #[default]
    Idle,
    /// The runner was started (registering, acquiring the lease).
    Starting {
        since: u64,
    },
    Running {
        pid: u32,
        since: u64,
    },
    /// A stop was issued; the process is not gone yet.
    Stopping {
        since: u64,
    },
}

impl Local {
    fn present(&self) -> bool {
        !matches!(self, Local::Idle)
    }
}

/// What happened to a local VM process since the last cycle (the agent
/// reports each once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub vm: usize,
    /// Our monotonic seconds.
    pub at: u64,
    pub kind: OutcomeKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeKind {
    /// The runner exited non-zero before the VM ran (not a lost race).
    FailedStart,
    /// The lease was taken by another host first (-EAGAIN / -243 style).
    LostRace,
    /// The VM ran and exited by itself.
    Exited { status: i32 },
    /// It exited after our Stop.
    Stopped,
}

/// What the agent carries from one cycle to the next, per config VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub vms: Vec<VmMemory>,
    pub health: HealthMemory,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmMemory {
    /// Since when (our clock) the VM has been seen orphaned, continuously.
    pub orphan_since: Option<u64>,
    /// Our last failed start of it (forgotten after [`FAILED_FORGET_SECS`]).
    pub failed_at: Option<u64>,
    /// Our last lost race for it (shown, not counted).
    pub lost_race_at: Option<u64>,
}

/// What decide() remembers of our health between cycles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthMemory {
    /// Since when we have been `move_margin` below the best LIVE host with room.
    pub worse_since: Option<u64>,
    /// The VM we last stopped to move it, and when: the next one moves
    /// only once it runs elsewhere (one at a time).
    pub moving: Option<(usize, u64)>,
    /// Since when every network check has failed.
    pub network_lost_since: Option<u64>,
}

impl Memory {
    /// The failed bitmap to publish: VMs we failed to start recently.
    pub fn failed_bitmap(&self, now: u64) -> VmBitmap {
        VmBitmap::from_indexes(
            self.vms
                .iter()
                .enumerate()
                .filter(|(_, m)| m.failed_at.is_some_and(|t| now < t + FAILED_FORGET_SECS))
                .map(|(i, _)| i),
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input<'a> {
    /// Our monotonic seconds.
    pub now: u64,
    /// Our host_id.
    pub me: u64,
    pub config: &'a Config,
    /// Every host the daemon knows of (ourselves included).
    pub hosts: Vec<HostView>,
    /// Sector 0's flag.
    pub global_maintenance: bool,
    /// Our own local maintenance (the agent's setting).
    pub local_maintenance: bool,
    /// Per config VM.
    pub leases: Vec<LeaseView>,
    /// Per config VM.
    pub local: Vec<Local>,
    pub outcomes: Vec<Outcome>,
    pub memory: Memory,
    /// Our monitors' verdict this cycle; None: no monitors (the base score).
    pub health: Option<HealthScore>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Start,
    Stop,
    /// A decision not to act, with its reason.
    Wait,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    pub kind: ActionKind,
    /// Config VM index.
    pub vm: usize,
    /// For the operator: names hosts, states, scores.
    pub reason: String,
    /// A Stop that moves the VM: live-migrate it to this host first (the
    /// agent stops it when the migration fails); see [`super::migrate`].
    pub migrate_to: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// Our new score, to publish.
    pub score: u32,
    /// Our new failed bitmap, to publish.
    pub failed: VmBitmap,
    /// Our health record, to publish.
    pub health: HealthRecord,
    pub memory: Memory,
}

impl Decision {
    pub fn starts(&self) -> impl Iterator<Item = usize> + '_ {
        self.of(ActionKind::Start)
    }
    pub fn stops(&self) -> impl Iterator<Item = usize> + '_ {
        self.of(ActionKind::Stop)
    }
    fn of(&self, k: ActionKind) -> impl Iterator<Item = usize> + '_ {
        self.actions
            .iter()
            .filter(move |a| a.kind == k)
            .map(|a| a.vm)
    }
}

/// The score a host publishes (hosted-engine's 0..=3400 scale) with no
/// health monitors: from [`MAX_SCORE`].
pub fn score(failed_vms: u32, running: u32, capacity: u32, local_maintenance: bool) -> u32 {
    score_from(MAX_SCORE, failed_vms, running, capacity, local_maintenance)
}

/// The score a host publishes from its health score.
pub fn score_from(
    health: u32,
    failed_vms: u32,
    running: u32,
    capacity: u32,
    local_maintenance: bool,
) -> u32 {
    if local_maintenance {
        return 0;
    }
    let mut s = health
        .min(MAX_SCORE)
        .saturating_sub(FAILED_PENALTY.saturating_mul(failed_vms));
    if running >= capacity {
        s = s.saturating_sub(FULL_PENALTY);
    }
    s
}

/// What the lease says about a VM, judged the same on every host.
enum Judged {
    /// Its lease may be taken.
    Orphan(String),
    /// Held by us, this generation: only we may take it back.
    Ours(String),
    /// Held (or unknown): Some(why) is worth a Wait.
    Held(Option<String>),
}

/// Why a VM is orphaned (its lease may be taken).
fn orphan_why(i: &Input, lease: LeaseView) -> Judged {
    use Judged::{Held as Err, Orphan as Ok};
    let host = |h: u64| i.hosts.iter().find(|v| v.host_id == h);
    match lease {
        LeaseView::Free => Ok("lease free".into()),
        LeaseView::Unreadable => Err(Some("lease unreadable this cycle; deciding nothing".into())),
        LeaseView::Held {
            owner, generation, ..
        } => {
            let Some(h) = host(owner) else {
                return Err(Some(format!(
                    "held by host {owner}, which the daemon does not know yet; waiting"
                )));
            };
            if h.generation > generation {
                return Ok(format!(
                    "held by host {owner} generation {generation}, gone (host {owner} is now generation {})",
                    h.generation
                ));
            }
            let age = h
                .renewal_age
                .map(|a| format!("last renewal {a} s ago"))
                .unwrap_or_else(|| "last renewal unknown".into());
            match h.state {
                HostState::Dead => Ok(format!("host {owner} DEAD ({age})")),
                HostState::Free => Ok(format!("host {owner} left the lockspace (FREE)")),
                HostState::Live if owner == i.me => Judged::Ours(format!(
                    "lease held by us (host {owner}) with no process here"
                )),
                HostState::Live => Err(None),
                HostState::Fail => Err(Some(format!(
                    "host {owner} FAIL ({age}): it may still run it; never restarted before DEAD"
                ))),
                HostState::Unknown => {
                    Err(Some(format!("host {owner} state not judged yet; waiting")))
                }
            }
        }
    }
}

#[derive(Clone)]
struct Candidate {
    host_id: u64,
    score: u32,
    load: u32,
    failed: VmBitmap,
}

/// Where VM `v` goes when local maintenance moves it off this host: the
/// host rule 5 would choose (preferred hosts, then score, then load), not
/// this one; its load counts the VM. With its score.
fn maintenance_target(i: &Input, v: usize, cands: &mut [Candidate]) -> Option<(u64, u32)> {
    let capacity = i.config.cluster.capacity;
    let vm = &i.config.vms[v];
    let pref = |h: u64| {
        vm.preferred_hosts
            .iter()
            .position(|&p| p == h)
            .unwrap_or(usize::MAX)
    };
    let c = cands
        .iter_mut()
        .filter(|c| c.host_id != i.me && c.load < capacity)
        .min_by_key(|c| {
            let eff = if c.failed.get(v) {
                c.score.saturating_sub(FAILED_PENALTY)
            } else {
                c.score
            };
            (pref(c.host_id), Reverse(eff), c.load, c.host_id)
        })?;
    c.load += 1;
    Some((c.host_id, c.score))
}

pub fn decide(i: &Input) -> Decision {
    let cfg = i.config;
    let n = cfg.vms.len();
    let now = i.now;
    let capacity = cfg.cluster.capacity;
    let mut mem = i.memory.clone();
    mem.vms.resize(n, VmMemory::default());

    for o in &i.outcomes {
        let Some(m) = mem.vms.get_mut(o.vm) else {
            continue;
        };
        match o.kind {
            OutcomeKind::FailedStart => m.failed_at = Some(o.at),
            OutcomeKind::LostRace => m.lost_race_at = Some(o.at),
            OutcomeKind::Exited { .. } | OutcomeKind::Stopped => {}
        }
    }
    for m in &mut mem.vms {
        if m.failed_at.is_some_and(|t| now >= t + FAILED_FORGET_SECS) {
            m.failed_at = None;
        }
    }
    let failed = mem.failed_bitmap(now);
    let local = |v: usize| i.local.get(v).copied().unwrap_or_default();
    let mut my_load = (0..n).filter(|&v| local(v).present()).count() as u32;

    // Rule 5: candidates, judged on the whiteboard so that every host
    // computes the same assignment. One exception: our own failures count
    // at once (others see them after our next write), so that we do not
    // start again what just failed here.
    let digest = cfg.digest();
    let mut cands: Vec<Candidate> = i
        .hosts
        .iter()
        .filter(|h| h.state == HostState::Live && h.fresh)
        .filter_map(|h| {
            let s = h.sector.as_ref()?;
            (s.generation == h.generation
                && s.config_digest == digest
                && !s.local_maintenance()
                && s.score > 0
                && s.running_count() < capacity)
                .then_some(Candidate {
                    host_id: h.host_id,
                    score: s.score,
                    load: s.running_count(),
                    failed: if h.host_id == i.me {
                        VmBitmap(std::array::from_fn(|k| s.failed.0[k] | failed.0[k]))
                    } else {
                        s.failed
                    },
                })
        })
        .collect();
    cands.sort_by_key(|c| c.host_id);
    cands.dedup_by_key(|c| c.host_id);
    // Local maintenance: each VM's migration target, loads counted as we go.
    let mut maint_cands = cands.clone();
    let mut actions = Vec::new();
    // Orphans judged from the lease, the daemon's host states and the
    // whiteboard only, the same on every host, so the assignment below is
    // too; a VM present here takes its place in it without an action.
    let mut orphans: Vec<(usize, String, bool)> = Vec::new();
    // Leases still ours with no process here: our release is under way,
    // or it failed, or another host's ballot committed our value after we
    // released (Disk Paxos may). Nobody else may take them (we are LIVE),
    // so after `grace` we take them back.
    let mut ours: Vec<(usize, String)> = Vec::new();
    for v in 0..n {
        let name = &cfg.vms[v].name;
        let l = local(v);
        let here = l.present();
        if here {
            mem.vms[v].orphan_since = None;
            if i.local_maintenance && !matches!(l, Local::Stopping { .. }) {
                // Live migration (hosted-engine's local maintenance) when
                // the host another host would choose takes migrations.
                let target = matches!(l, Local::Running { .. })
                    .then(|| maintenance_target(i, v, &mut maint_cands))
                    .flatten()
                    .filter(|&(t, _)| cfg.migration_to(v, t).is_some());
                let reason = match target {
                    Some((t, sc)) => format!(
                        "{name}: host {} in local maintenance; live-migrating it to host {t} (score {sc}); if that fails, stopping it so another host takes it",
                        i.me
                    ),
                    None => format!(
                        "{name}: host {} in local maintenance; stopping it so another host takes it",
                        i.me
                    ),
                };
                actions.push(Action {
                    migrate_to: target.map(|t| t.0),
                    kind: ActionKind::Stop,
                    vm: v,
                    reason,
                });
            }
        }
        let lease = i.leases.get(v).copied().unwrap_or(LeaseView::Unreadable);
        let mut judged = orphan_why(i, lease);
        if let Judged::Orphan(why) = &judged
            && let Some(h) = i.hosts.iter().find(|h| {
                // A host's last word counts until it is DEAD, fresh or not
                // (a hung host goes stale long before it is DEAD).
                !matches!(h.state, HostState::Dead | HostState::Free)
                    && h.sector
                        .is_some_and(|s| s.generation == h.generation && s.running.get(v))
            })
        {
            // A VM that a host not DEAD says it runs is not started
            // elsewhere, whatever its lease says (a runner without the
            // lease, a lease read older than that host's sector, a hung
            // host). Our own sector counts too, so every host judges alike.
            judged = Judged::Held(Some(format!(
                "{why}, but host {} ({}) reports it running; not starting it",
                h.host_id,
                h.state.as_str()
            )));
        }
        match judged {
            Judged::Orphan(why) => {
                if !here {
                    mem.vms[v].orphan_since.get_or_insert(now);
                }
                orphans.push((v, why, here));
            }
            Judged::Ours(why) => {
                if !here {
                    mem.vms[v].orphan_since.get_or_insert(now);
                    ours.push((v, why));
                }
            }
            Judged::Held(why) => {
                if here {
                    continue;
                }
                if lease != LeaseView::Unreadable {
                    mem.vms[v].orphan_since = None;
                }
                if let Some(why) = why {
                    actions.push(Action {
                        migrate_to: None,
                        kind: ActionKind::Wait,
                        vm: v,
                        reason: format!("{name}: {why}"),
                    });
                }
            }
        }
    }

    let running_after = my_load
        - actions
            .iter()
            .filter(|a| a.kind == ActionKind::Stop)
            .count() as u32;
    let hc = &cfg.health;
    let health_score = i.health.as_ref().map_or(hc.base_score, |h| h.score);
    let me_live = i
        .hosts
        .iter()
        .any(|h| h.host_id == i.me && h.state == HostState::Live);
    // Isolation: every network check failed while our storage renews (the
    // daemon judges our own delta lease LIVE), for isolation_after.
    let network_lost = i.health.as_ref().is_some_and(|h| h.network_lost) && me_live;
    if network_lost {
        mem.health.network_lost_since.get_or_insert(now);
    } else {
        mem.health.network_lost_since = None;
    }
    // Set again below when we are still worse (maintenance resets it).
    let prev_worse = mem.health.worse_since.take();
    let isolated = mem
        .health
        .network_lost_since
        .is_some_and(|t| now >= t + hc.isolation_after);
    let mut score = score_from(
        health_score,
        failed.count(),
        running_after,
        capacity,
        i.local_maintenance,
    );
    if isolated {
        // An isolated host takes no VM (its networks are gone).
        score = 0;
    }
    let health = HealthRecord {
        flags: if i.health.is_some() {
            HEALTH_REPORTED
        } else {
            0
        } | if network_lost { HEALTH_NETWORK_LOST } else { 0 }
            | if isolated { HEALTH_ISOLATED } else { 0 },
        points: i
            .health
            .as_ref()
            .map(HealthScore::points)
            .unwrap_or_default(),
    };
    let health_why = i
        .health
        .as_ref()
        .map_or_else(|| "no monitors".to_string(), HealthScore::summary);
    if isolated && !i.global_maintenance {
        // Rule 9 (docs/ha-design.md, "Health"): per VM, keep or stop.
        let lost_for = now - mem.health.network_lost_since.unwrap_or(now);
        for v in 0..n {
            let l = local(v);
            if !matches!(l, Local::Running { .. } | Local::Starting { .. })
                || cfg.isolation(v) != IsolationPolicy::Stop
                || actions
                    .iter()
                    .any(|a| a.vm == v && a.kind == ActionKind::Stop)
            {
                continue;
            }
            actions.push(Action {
                migrate_to: None,
                kind: ActionKind::Stop,
                vm: v,
                reason: format!(
                    "{}: host {} isolated: every network check failed for {lost_for} s >= isolation_after {} s while its storage renews ({health_why}); policy stop: stopping it so that another host restarts it",
                    cfg.vms[v].name,
                    i.me,
                    hc.isolation_after
                ),
            });
        }
    }

    let wait = |v: usize, why: &str, tail: &str| Action {
        migrate_to: None,
        kind: ActionKind::Wait,
        vm: v,
        reason: format!("{}: {why}; {tail}", cfg.vms[v].name),
    };
    if i.global_maintenance {
        let waiting = orphans.into_iter().filter(|o| !o.2).map(|o| (o.0, o.1));
        for (v, why) in waiting.chain(ours) {
            actions.push(wait(v, &why, "global maintenance: not starting"));
        }
        return Decision {
            actions,
            score,
            failed,
            health,
            memory: mem,
        };
    }
    if i.local_maintenance {
        let waiting = orphans.into_iter().filter(|o| !o.2).map(|o| (o.0, o.1));
        for (v, why) in waiting.chain(ours) {
            actions.push(wait(
                v,
                &why,
                &format!("host {} in local maintenance: not starting here", i.me),
            ));
        }
        return Decision {
            actions,
            score,
            failed,
            health,
            memory: mem,
        };
    }

    let me_candidate = cands.iter().any(|c| c.host_id == i.me);
    let margin = hc.move_margin;
    // A host `move_margin` below the best one with room gets no VM (the
    // same judgement on every host: whiteboard scores).
    let best_with_room = |cands: &[Candidate]| {
        cands
            .iter()
            .filter(|c| c.load < capacity)
            .map(|c| c.score)
            .max()
    };
    let below = |c: &Candidate, best: Option<u32>| {
        best.is_some_and(|b| c.score as u64 + margin as u64 <= b as u64)
    };
    let me_below = cands
        .iter()
        .find(|c| c.host_id == i.me)
        .is_some_and(|c| below(c, best_with_room(&cands)));

    // Rule 8 (docs/ha-design.md, "Health"): a LIVE host `move_margin`
    // below the best other LIVE host with room moves its VMs there, one
    // at a time, after `hold_down`; under network loss the isolation
    // policy decides instead.
    let best_other = cands
        .iter()
        .filter(|c| c.host_id != i.me && c.load < capacity)
        .max_by_key(|c| (c.score, Reverse(c.host_id)))
        .map(|c| (c.host_id, c.score));
    // Our published score must say so too: the others assign the VM we
    // stop by it, and must not give it back to us.
    let published = i
        .hosts
        .iter()
        .find(|h| h.host_id == i.me)
        .and_then(|h| h.sector)
        .map(|s| s.score);
    let worse = me_live
        && !network_lost
        && best_other.is_some_and(|(_, b)| {
            let b = b as u64;
            score as u64 + margin as u64 <= b
                && published.is_some_and(|p| p as u64 + margin as u64 <= b)
        });
    if let (true, Some((best_id, best_score))) = (worse, best_other) {
        let since = prev_worse.unwrap_or(now);
        mem.health.worse_since = Some(since);
        if let Some((v, _)) = mem.health.moving {
            let elsewhere = i.hosts.iter().any(|h| {
                h.host_id != i.me
                    && h.state == HostState::Live
                    && h.sector
                        .is_some_and(|s| s.generation == h.generation && s.running.get(v))
            }) || matches!(i.leases.get(v), Some(LeaseView::Held { owner, .. }) if *owner != i.me);
            if !local(v).present() && elsewhere {
                mem.health.moving = None;
            }
        }
        let held = now - since;
        if mem.health.moving.is_none() && held >= hc.hold_down {
            let mut movable: Vec<usize> = (0..n)
                .filter(|&v| matches!(local(v), Local::Running { .. }))
                .filter(|&v| {
                    !actions
                        .iter()
                        .any(|a| a.vm == v && a.kind == ActionKind::Stop)
                })
                .collect();
            movable.sort_by(|&a, &b| {
                let (va, vb) = (&cfg.vms[a], &cfg.vms[b]);
                Reverse(va.priority)
                    .cmp(&Reverse(vb.priority))
                    .then_with(|| va.name.cmp(&vb.name))
            });
            if let Some(&v) = movable.first() {
                mem.health.moving = Some((v, now));
                let live = cfg.migration_to(v, best_id).is_some();
                let how = if live {
                    format!(
                        "moving it by live migration to host {best_id} (if that fails: stopping it here so that host {best_id} starts it under its lease)"
                    )
                } else {
                    format!(
                        "moving it, stopping it here first so that host {best_id} starts it under its lease"
                    )
                };
                actions.push(Action {
                    migrate_to: live.then_some(best_id),
                    kind: ActionKind::Stop,
                    vm: v,
                    reason: format!(
                        "{}: host {} score {score} ({health_why}) is {} below host {best_id} score {best_score} (margin {margin}) for {held} s >= hold_down {} s: {how}",
                        cfg.vms[v].name,
                        i.me,
                        best_score - score,
                        hc.hold_down
                    ),
                });
            }
        }
    } else {
        mem.health.moving = None;
    }

    orphans.sort_by(|a, b| {
        let (va, vb) = (&cfg.vms[a.0], &cfg.vms[b.0]);
        Reverse(va.priority)
            .cmp(&Reverse(vb.priority))
            .then_with(|| va.name.cmp(&vb.name))
    });
    let mut others = Vec::new();
    for (v, why, here) in orphans {
        let vm = &cfg.vms[v];
        let best_now = best_with_room(&cands);
        let eligible: Vec<usize> = (0..cands.len())
            .filter(|&c| cands[c].load < capacity && !below(&cands[c], best_now))
            .collect();
        let unfailed: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|&c| !cands[c].failed.get(v))
            .collect();
        let pool = if unfailed.is_empty() {
            &eligible
        } else {
            &unfailed
        };
        let eff = |c: &Candidate| {
            if c.failed.get(v) {
                c.score.saturating_sub(FAILED_PENALTY)
            } else {
                c.score
            }
        };
        let pref = |h: u64| {
            vm.preferred_hosts
                .iter()
                .position(|&p| p == h)
                .unwrap_or(usize::MAX)
        };
        let best = pool.iter().copied().min_by_key(|&c| {
            let c = &cands[c];
            (pref(c.host_id), Reverse(eff(c)), c.load, c.host_id)
        });
        let mut listing = String::from("[");
        for (k, &c) in pool.iter().enumerate() {
            let sep = if k > 0 { " " } else { "" };
            let _ = write!(listing, "{sep}{}:{}", cands[c].host_id, eff(&cands[c]));
        }
        listing.push(']');
        let Some(best) = best else {
            if here {
                continue;
            }
            // The race's grace counts from the first cycle in which some
            // host was assigned: that host must have had `grace` to act.
            mem.vms[v].orphan_since = Some(now);
            actions.push(wait(v, &why, "no LIVE host with a fresh whiteboard, the same config, score > 0 and room: nobody to start it"));
            continue;
        };
        let b = &cands[best];
        let chosen = format!("best LIVE host {} score {} {listing}", b.host_id, eff(b));
        let best_id = b.host_id;
        cands[best].load += 1;
        if here {
            continue;
        }
        if best_id == i.me {
            if my_load >= capacity {
                // Our sector understated our load (a start not published yet).
                actions.push(wait(
                    v,
                    &why,
                    &format!("{chosen}; but host {} is at capacity {capacity}", i.me),
                ));
                continue;
            }
            my_load += 1;
            actions.push(Action {
                migrate_to: None,
                kind: ActionKind::Start,
                vm: v,
                reason: format!("{}: {why}; {chosen}; starting", vm.name),
            });
            continue;
        }
        others.push((v, why, chosen));
    }
    // Races come after our assigned starts, which must not lose their room.
    let grace = cfg.cluster.grace;
    for (v, why) in ours {
        let waited = now.saturating_sub(mem.vms[v].orphan_since.unwrap_or(now));
        // Our failed bit does not hold this back: nobody else can take the
        // lease, and a start that fails again releases it for them.
        let tail = if my_load >= capacity {
            format!("host {} at capacity {capacity}", i.me)
        } else if waited >= grace {
            my_load += 1;
            actions.push(Action {
                migrate_to: None,
                kind: ActionKind::Start,
                vm: v,
                reason: format!(
                    "{}: {why} for {waited} s >= grace {grace} s; no other host may take it: starting it here{}",
                    cfg.vms[v].name,
                    if failed.get(v) {
                        " (we failed to start it recently; failing again releases it for others)"
                    } else {
                        ""
                    }
                ),
            });
            continue;
        } else {
            format!(
                "{waited} s; its release may be under way; taking it back after grace {grace} s"
            )
        };
        actions.push(wait(v, &why, &tail));
    }
    for (v, why, chosen) in others {
        let since = mem.vms[v].orphan_since.unwrap_or(now);
        let waited = now.saturating_sub(since);
        let tail = if !me_candidate {
            format!("{chosen}; host {} is no candidate here", i.me)
        } else if me_below {
            format!(
                "{chosen}; host {} is {margin} or more below the best host: not racing",
                i.me
            )
        } else if failed.get(v) {
            format!("{chosen}; we failed to start it recently, not racing")
        } else if my_load >= capacity {
            format!("{chosen}; host {} at capacity {capacity}", i.me)
        } else if waited >= grace {
            my_load += 1;
            actions.push(Action {
                migrate_to: None,
                kind: ActionKind::Start,
                vm: v,
                reason: format!(
                    "{}: {why}; {chosen}; orphaned {waited} s >= grace {grace} s: racing for the lease",
                    cfg.vms[v].name
                ),
            });
            continue;
        } else {
            format!("{chosen}; orphaned {waited} s, racing after grace {grace} s")
        };
        actions.push(wait(v, &why, &tail));
    }
    Decision {
        actions,
        score,
        failed,
        health,
        memory: mem,
    }
}
