//! The HA layer in the deterministic simulation: hosts run the daemon's
//! core ([`super::node`]: the lockspace's join, renewal, host judging and
//! kill sequence, one resource acquire per VM lease) and an HA agent that each second
//! reads the whiteboard and the VM leases from the simulated disk, calls
//! [`crate::ha::decide`] on its own view, carries out the actions and
//! writes its whiteboard sector.
//!
//! A VM runs only after its host's Paxos acquire of the VM's lease
//! succeeded, and stops when it is stopped, killed by the kill sequence,
//! exits, or its host crashes or is reset by its watchdog.
//!
//! Invariant: never one VM running on two hosts at the same simulated
//! millisecond (a VM counts as running until its process is dead).
//! Liveness (measured): after a crash of a host running VMs, each of them
//! runs again somewhere within a bound.
//!
//! Kept apart from `sim/mod.rs` (one resource, one client per host) on
//! purpose: its own disk layout, events, hosts and a plainer fault model
//! (no torn writes, no EIO, no clock drift); the daemon is the same.

use super::disk::{SS, SimDisk};
use super::node::{Node, NodeConfig, Req, Who};
use super::rng::Rng;
use super::sched::Sched;
use crate::daemon::core::resource::{AcquireParams, Acquired, Held, LeaseRef};
use crate::daemon::core::{CoreError, Id, Io, IoFailure, IoResult, Knobs, Layout, Now, Storage};
use crate::delta::lease_sector;
use crate::ha::config::{Cluster, Config as HaCfg, RunnerKind, Vm};
use crate::ha::decide::{
    self, HostView, Input, LeaseView, Local, Memory, Outcome as VmOutcome, OutcomeKind,
};
use crate::ha::fence::{FenceAgent, FenceHost, FencingConfig};
use crate::ha::fencing::{FenceAction, FenceInput, FenceMemory, decide_fencing};
use crate::ha::health::{self, HealthScore, IsolationPolicy, Readings};
use crate::ha::whiteboard::{
    FENCE_DECLARED, FENCE_FAILED, FENCE_RUNNING, FenceReport, Freshness, HostSector, VmBitmap,
};
use crate::hosts::HostState;
use crate::ondisk::{self, LeaderRecord, Name};
use crate::paxos::leader_sector;
use crate::recovery::{Holder, Signal};
use crate::timeouts::Timeouts;

const MAX_HOSTS: usize = 4;
const LS_OFF: usize = 0;
const RES_SECTORS: usize = 2 + MAX_HOSTS;
const IO_TIMEOUT: u64 = 1;
const MAX_VMS: usize = 6;
const RES_OFF: usize = MAX_HOSTS;
const WB_OFF: usize = RES_OFF + MAX_VMS * RES_SECTORS;
const DISK_SECTORS: usize = WB_OFF + 1 + MAX_HOSTS;
/// The agent's cycle and the orphan grace, in seconds.
pub const INTERVAL: u64 = 1;
pub const GRACE: u64 = 3;
const MAX_EVENTS: u64 = 3_000_000;

/// One safety step of the HA layer removed on purpose (negative checks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HaKnob {
    #[default]
    None,
    /// decide() is shown FAIL hosts as DEAD: it restarts on FAIL. The VM
    /// lease's Paxos acquire must still refuse (owner not DEAD).
    RestartOnFail,
    /// The runner starts the VM without waiting for its lease: decide()'s
    /// rules alone (grace races included) must then be caught.
    NoLease,
    /// Both: restart on FAIL, and no lease.
    RestartOnFailNoLease,
    /// The VM lease's acquire takes a held lease without waiting for its
    /// owner to be DEAD (sim/mod.rs's TakeoverWithoutDead): decide()'s
    /// rules are then the only guard against taking a running VM.
    LeaseWithoutDeadWait,
    /// That, with decide() restarting on FAIL.
    LeaseWithoutDeadWaitRestartOnFail,
    /// Not a removed step: fencing on (issue 16). FAIL hosts are fenced by
    /// agents that sometimes fail, whose kill sometimes lands after they
    /// said it succeeded, and hosts that hang for about FAIL time (flap).
    Fencing,
    /// Not a removed step: host health (issue 18). Hosts lose their
    /// gateway (a lower score: their VMs move), or every network (with
    /// some VMs' isolation policy `stop`), for a while or flapping.
    Health,
    /// Fencing whose agents lie: they say off (and status off) without
    /// powering anything off. Declaring on that must be caught: the rule
    /// that only a confirmed off allows a declaration is what keeps
    /// fencing safe.
    FencingLiar,
}

impl HaKnob {
    fn restart_on_fail(self) -> bool {
        matches!(
            self,
            HaKnob::RestartOnFail
                | HaKnob::RestartOnFailNoLease
                | HaKnob::LeaseWithoutDeadWaitRestartOnFail
        )
    }
    fn lease_without_dead_wait(self) -> bool {
        matches!(
            self,
            HaKnob::LeaseWithoutDeadWait | HaKnob::LeaseWithoutDeadWaitRestartOnFail
        )
    }
    fn health(self) -> bool {
        self == HaKnob::Health
    }
    fn no_lease(self) -> bool {
        matches!(self, HaKnob::NoLease | HaKnob::RestartOnFailNoLease)
    }
    fn fencing(self) -> bool {
        matches!(self, HaKnob::Fencing | HaKnob::FencingLiar)
    }
}

#[derive(Clone, Debug, Default)]
pub struct HaConfig {
    pub knob: HaKnob,
    pub trace: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HaStats {
    pub events: u64,
    pub starts: u64,
    /// VM lease acquires that succeeded (VM ran).
    pub vm_runs: u64,
    /// Of those, taken from a host that did not release it.
    pub taken_over: u64,
    pub lost_races: u64,
    pub failed_starts: u64,
    pub stops: u64,
    pub self_exits: u64,
    pub killed: u64,
    pub crashes: u64,
    pub watchdog_resets: u64,
    pub lockspace_failures: u64,
    pub io_timeouts: u64,
    /// Crashes of a host running VMs, per VM, whose bound fell inside the run.
    pub crash_cases: u64,
    /// Of those, the VM ran again somewhere within the bound.
    pub recovered: u64,
    /// The slowest recovery seen (ms).
    pub max_recovery_ms: u64,
    pub sum_recovery_ms: u64,
    /// decide() Starts while the lease owner was FAIL (RestartOnFail).
    pub starts_on_fail: u64,
    /// Fences started, hosts declared dead after a confirmed off, fences
    /// that ended without a declaration (agent failed, status still on,
    /// lease changed), and fences whose kill landed after the agent's
    /// success (the host ran on meanwhile).
    pub fences: u64,
    pub declared: u64,
    pub fence_failed: u64,
    pub late_kills: u64,
    /// Crashed VMs that ran again before their host could have been DEAD
    /// (host_dead_seconds after the crash, less one renewal period).
    pub before_dead: u64,
    /// Health: decide() Stops to move a VM off a worse host, Stops of an
    /// isolated host's `stop` VMs, and moved VMs that ran again elsewhere.
    pub moves: u64,
    pub isolation_stops: u64,
    pub moved_ran_elsewhere: u64,
}

impl HaStats {
    pub fn add(&mut self, o: &HaStats) {
        self.events += o.events;
        self.starts += o.starts;
        self.vm_runs += o.vm_runs;
        self.taken_over += o.taken_over;
        self.lost_races += o.lost_races;
        self.failed_starts += o.failed_starts;
        self.stops += o.stops;
        self.self_exits += o.self_exits;
        self.killed += o.killed;
        self.crashes += o.crashes;
        self.watchdog_resets += o.watchdog_resets;
        self.lockspace_failures += o.lockspace_failures;
        self.io_timeouts += o.io_timeouts;
        self.crash_cases += o.crash_cases;
        self.recovered += o.recovered;
        self.max_recovery_ms = self.max_recovery_ms.max(o.max_recovery_ms);
        self.sum_recovery_ms += o.sum_recovery_ms;
        self.starts_on_fail += o.starts_on_fail;
        self.fences += o.fences;
        self.declared += o.declared;
        self.fence_failed += o.fence_failed;
        self.late_kills += o.late_kills;
        self.before_dead += o.before_dead;
        self.moves += o.moves;
        self.isolation_stops += o.isolation_stops;
        self.moved_ran_elsewhere += o.moved_ran_elsewhere;
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaViolation {
    pub seed: u64,
    pub at_ms: u64,
    pub vm: usize,
    pub running_on: usize,
    pub started_on: usize,
}

#[derive(Clone, Debug)]
pub struct HaOutcome {
    pub seed: u64,
    pub violation: Option<HaViolation>,
    pub stats: HaStats,
    pub trace: Vec<String>,
}

/// What an I/O of the HA agent produced (its own reads and writes of the
/// whiteboard and the VM leaders, not the daemon's).
#[derive(Clone, Debug)]
enum AgentIo {
    Read(Result<Vec<u8>, i32>),
    Write,
}

/// What an I/O of an agent's fence thread produced (the declaration).
#[derive(Clone, Debug)]
enum FenceIo {
    Read(Result<Vec<u8>, i32>),
    /// Err: timed out, so it may or may not land: not declared.
    Write(Result<(), i32>),
}

#[derive(Clone, Debug)]
enum Ev {
    /// The daemon's I/O completed (or failed, or timed out).
    Io {
        h: usize,
        boot: u32,
        who: Who,
        id: Id,
        r: IoResult,
    },
    AgentIo {
        h: usize,
        boot: u32,
        r: AgentIo,
    },
    FenceIo {
        h: usize,
        boot: u32,
        r: FenceIo,
    },
    Timer {
        h: usize,
        boot: u32,
        who: Who,
        id: Id,
    },
    Main {
        h: usize,
        boot: u32,
        tick: u32,
    },
    Rejoin {
        h: usize,
        boot: u32,
    },
    Agent {
        h: usize,
        boot: u32,
    },
    /// A VM process ends (signalled, stopped, or by itself).
    VmExit {
        h: usize,
        boot: u32,
        pid: u32,
        by_itself: bool,
    },
    Watchdog {
        h: usize,
        boot: u32,
        tick: u32,
    },
    Land {
        sector: usize,
        data: Vec<u8>,
    },
    Crash {
        h: usize,
    },
    Restart {
        h: usize,
    },
    PauseStart {
        h: usize,
    },
    PauseEnd {
        h: usize,
    },
    Maintenance {
        h: usize,
        on: bool,
    },
    /// Host h's fence agent ran `off` against `victim`.
    FenceOff {
        h: usize,
        boot: u32,
        f: SimFence,
    },
    /// Host h's fence agent ran `status`.
    FenceStatus {
        h: usize,
        boot: u32,
        f: SimFence,
    },
    /// A fence agent's power-off reaches the victim (its boot then).
    PowerOff {
        victim: usize,
        boot: u32,
    },
    /// Host h's monitors now read this (None: healthy again).
    Health {
        h: usize,
        lost: Option<Sick>,
    },
}

/// What a host's monitors find in the health seeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sick {
    /// Its gateway unreachable: the gateway penalty.
    Gateway,
    /// Every network check failed: gateway and bridge penalties, isolated.
    Isolated,
}

/// A fence under way: the victim (index) in the generation and with the
/// delta lease timestamp judged FAIL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SimFence {
    victim: usize,
    generation: u64,
    timestamp: u64,
}

impl Ev {
    /// Events of the host's software (held back while it hangs).
    fn host_sw(&self) -> Option<(usize, u32)> {
        match *self {
            Ev::Io { h, boot, .. }
            | Ev::AgentIo { h, boot, .. }
            | Ev::Timer { h, boot, .. }
            | Ev::Main { h, boot, .. }
            | Ev::Rejoin { h, boot }
            | Ev::Agent { h, boot }
            | Ev::FenceIo { h, boot, .. }
            | Ev::FenceOff { h, boot, .. }
            | Ev::FenceStatus { h, boot, .. } => Some((h, boot)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Proc {
    vm: usize,
    pid: u32,
    exiting: bool,
    stopping: bool,
    stuck: bool,
    ignores_term: bool,
    /// None under the NoLease knob.
    lease: Option<Acquired>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AgentPhase {
    Idle,
    Reading,
    Writing,
}

struct Host {
    /// The daemon: the daemon's own core, executed by this simulation.
    node: Node,
    boot: u32,
    up: bool,
    clock_off_ms: u64,
    lat_lo: u64,
    lat_hi: u64,
    freezes: Vec<(u64, u64)>,
    paused: bool,
    deferred: Vec<Ev>,
    wd_gen: u32,
    wd_armed: bool,
    procs: Vec<Proc>,
    next_pid: u32,
    stuck_prob: u64,
    ignore_term_prob: u64,
    // the agent
    agent: AgentPhase,
    memory: Memory,
    fresh: Freshness,
    seq: u64,
    outcomes: Vec<VmOutcome>,
    maintenance: bool,
    /// VMs whose start (acquire) is under way.
    starting: Vec<bool>,
    /// Agent cycles that reached decide() since this boot, and when the
    /// first did (ms): the warm-up of src/ha/agent.rs.
    cycles: u32,
    agent_started: u64,
    // the agent's fencer (src/ha/fence.rs)
    fence_mem: FenceMemory,
    fence_busy: Option<SimFence>,
    fence_report: FenceReport,
    /// Health seeds: what its monitors read now.
    sick: Option<Sick>,
}

pub struct HaSim {
    seed: u64,
    cfg: HaConfig,
    rng: Rng,
    now: u64,
    queue: Sched<Ev>,
    disk: SimDisk,
    hosts: Vec<Host>,
    t: Timeouts,
    end: u64,
    ha: HaCfg,
    nvms: usize,
    /// running[vm][host]: its process holds (or, NoLease, runs).
    running: Vec<[bool; MAX_HOSTS]>,
    /// The VM's lease was last freed by a release (not taken over).
    freed: Vec<bool>,
    /// (vm, since ms) for VMs that were running on a host when it crashed.
    down: Vec<(usize, u64)>,
    /// Health seeds: VMs stopped to move them, and the host they left.
    moved: Vec<Option<usize>>,
    bound_ms: u64,
    /// Per host, when its faults (freeze, hang, maintenance, crash) may
    /// keep it from taking VMs: liveness is judged only where another
    /// host is steady.
    disturbed: Vec<Vec<(u64, u64)>>,
    stats: HaStats,
    violation: Option<HaViolation>,
    trace: Vec<String>,
}

fn space_name() -> Name {
    Name::new("LS").unwrap()
}

fn vm_name(k: usize) -> Name {
    Name::new(&format!("vm{k}")).unwrap()
}

fn res_off(vm: usize) -> usize {
    RES_OFF + vm * RES_SECTORS
}

fn formatted_disk() -> Vec<u8> {
    let mut bytes = vec![0u8; DISK_SECTORS * SS];
    for i in 0..MAX_HOSTS {
        let mut lr = LeaderRecord {
            magic: ondisk::DELTA_DISK_MAGIC,
            version: ondisk::DELTA_DISK_VERSION_MAJOR | ondisk::DELTA_DISK_VERSION_MINOR,
            flags: 0x10,
            sector_size: SS as u32,
            max_hosts: 1,
            io_timeout: IO_TIMEOUT as u16,
            space_name: space_name(),
            ..Default::default()
        };
        let s = lease_sector(&mut lr, SS, None);
        bytes[(LS_OFF + i) * SS..(LS_OFF + i + 1) * SS].copy_from_slice(&s);
    }
    for k in 0..MAX_VMS {
        let mut lr = LeaderRecord {
            magic: ondisk::PAXOS_DISK_MAGIC,
            version: ondisk::PAXOS_DISK_VERSION_MAJOR | ondisk::PAXOS_DISK_VERSION_MINOR,
            flags: 0x10,
            sector_size: SS as u32,
            num_hosts: MAX_HOSTS as u64,
            max_hosts: 2000,
            space_name: space_name(),
            resource_name: vm_name(k),
            ..Default::default()
        };
        let s = leader_sector(&mut lr, SS);
        let o = res_off(k) * SS;
        bytes[o..o + SS].copy_from_slice(&s);
    }
    bytes
}

fn ha_config(nvms: usize, capacity: u32, fencing: bool, health: bool) -> HaCfg {
    let mut cfg = HaCfg {
        cluster: Cluster {
            lockspace: "LS".into(),
            ids: "/sim/ids".into(),
            xleases: "/sim/xleases".into(),
            whiteboard: "/sim/wb".into(),
            interval: INTERVAL,
            grace: GRACE,
            capacity,
            libvirt_uri: None,
        },
        vms: (0..nvms)
            .map(|k| Vm {
                name: format!("vm{k}"),
                lease_id_opt: None,
                priority: (k % 3) as i32,
                preferred_hosts: vec![],
                runner: RunnerKind::Command,
                start: vec!["/bin/true".into()],
                stop: None,
                domain: None,
                domain_xml: None,
                // Health seeds: every other VM stops when its host is isolated.
                isolation: (health && k % 2 == 0).then_some(IsolationPolicy::Stop),
            })
            .collect(),
        // Runner "command" VMs only: no live migration.
        migration: None,
        // Every host has one agent; the simulation plays its outcomes.
        fencing: fencing.then(|| FencingConfig {
            delay: 0,
            takeover: 3,
            max_fences: 2,
            window: 600,
            hosts: (1..=MAX_HOSTS as u64)
                .map(|host_id| FenceHost {
                    host_id,
                    agents: vec![FenceAgent {
                        command: vec!["/sim/fence_agent".into()],
                        options: Default::default(),
                        secrets: None,
                        timeout: 5,
                    }],
                })
                .collect(),
        }),
        health: Default::default(),
    };
    if health {
        cfg.health.hold_down = 3;
        cfg.health.isolation_after = 3;
        cfg.health.gateway.addresses = vec!["192.0.2.1".into()];
        cfg.health.links.interfaces = vec!["br0".into()];
    }
    cfg
}

/// What the monitors of a host in the health seeds read.
fn sim_health(cfg: &HaCfg, sick: Option<Sick>) -> HealthScore {
    let (gw, link) = match sick {
        None => (true, true),
        Some(Sick::Gateway) => (false, true),
        Some(Sick::Isolated) => (false, false),
    };
    health::score(
        &cfg.health,
        &Readings::networks(&[("192.0.2.1", gw)], &[("br0", link)]),
    )
}

impl HaSim {
    pub fn run(seed: u64, cfg: &HaConfig) -> HaOutcome {
        let mut s = HaSim::new(seed, cfg.clone());
        s.go();
        s.finish_liveness();
        HaOutcome {
            seed,
            violation: s.violation,
            stats: s.stats,
            trace: s.trace,
        }
    }

    fn new(seed: u64, cfg: HaConfig) -> Self {
        // Another stream than sim/mod.rs's for the same seed.
        let mut rng = Rng::new(seed ^ 0x4841_5f53_494d_0001);
        let n = 2 + rng.below(3) as usize;
        // With fencing, watchdogs as slow as sanlock's default (60 s): a
        // fence is worth something only well before DEAD.
        let w = if cfg.knob.fencing() {
            [10, 30, 60]
        } else {
            [3, 5, 10]
        }[rng.below(3) as usize];
        let t = Timeouts {
            io_timeout: IO_TIMEOUT,
            watchdog_fire_timeout: w,
        };
        let kill_grace = if rng.chance(1, 2) {
            None
        } else {
            Some(rng.range(0, w + 5))
        };
        let node_cfg = NodeConfig {
            space_name: space_name(),
            io_timeout: IO_TIMEOUT,
            watchdog_fire_timeout: w,
            kill_grace_seconds: kill_grace,
            layout: Layout {
                sector_size: SS,
                align_size: (MAX_HOSTS * SS) as u64,
                max_hosts: MAX_HOSTS,
            },
            knobs: Knobs::default(),
        };
        let dead_ms = t.host_dead_seconds() * 1000;
        let nvms = 1 + rng.below(MAX_VMS as u64) as usize;
        let capacity = if rng.chance(1, 4) {
            1 + rng.below(nvms as u64) as u32
        } else {
            nvms as u32
        };
        // Joined by ~5 s and VMs started by ~10 s; the planned crash comes
        // after, and the run lasts past its recovery bound.
        let bound_ms = dead_ms + (GRACE + 4 * INTERVAL) * 1000 + 8000;
        let crash_at = 12_000 + rng.below(20_000);
        let end = crash_at + bound_ms + rng.below(20_000);
        let mut hosts = Vec::new();
        for i in 0..n {
            let lat_lo = rng.range(1, 5);
            let lat_hi = lat_lo + rng.below(40);
            let mut freezes = Vec::new();
            if rng.chance(1, 4) {
                let at = rng.below(end);
                let len = if rng.chance(1, 2) {
                    rng.range(100, 3000)
                } else {
                    rng.range(3000, 2 * dead_ms)
                };
                freezes.push((at, at + len));
            }
            let host_id = i as u64 + 1;
            hosts.push(Host {
                node: Node::new(host_id, node_cfg.clone(), nvms),
                boot: 0,
                up: true,
                clock_off_ms: rng.below(1_000_000_000),
                lat_lo,
                lat_hi,
                freezes,
                paused: false,
                deferred: Vec::new(),
                wd_gen: 0,
                wd_armed: false,
                procs: Vec::new(),
                next_pid: 100,
                stuck_prob: rng.below(100),
                ignore_term_prob: rng.below(300),
                agent: AgentPhase::Idle,
                memory: Memory::default(),
                fresh: Freshness::new(),
                seq: 0,
                outcomes: Vec::new(),
                maintenance: false,
                starting: vec![false; nvms],
                cycles: 0,
                agent_started: 0,
                fence_mem: FenceMemory::default(),
                fence_busy: None,
                fence_report: FenceReport::default(),
                sick: None,
            });
        }
        let fencing = cfg.knob.fencing();
        let cfg_health = cfg.knob.health();
        let mut s = HaSim {
            seed,
            cfg,
            rng,
            now: 0,
            queue: Sched::default(),
            disk: SimDisk {
                bytes: formatted_disk(),
            },
            hosts,
            t,
            end,
            ha: ha_config(nvms, capacity, fencing, cfg_health),
            nvms,
            running: vec![[false; MAX_HOSTS]; nvms],
            freed: vec![true; nvms],
            down: Vec::new(),
            moved: vec![None; nvms],
            bound_ms,
            disturbed: vec![Vec::new(); n],
            stats: HaStats::default(),
            violation: None,
            trace: Vec::new(),
        };
        for h in 0..n {
            // A freeze may fail the lockspace; rejoining takes a while.
            let fz: Vec<_> = s.hosts[h]
                .freezes
                .iter()
                .map(|&(a, b)| (a, b + 20_000))
                .collect();
            s.disturbed[h].extend(fz);
            let at = s.rng.below(3000);
            s.push(at, Ev::Rejoin { h, boot: 0 });
            if s.rng.chance(1, 6) {
                // A hang: the host's software stops (others see it FAIL
                // while its VMs run on), until its watchdog resets it.
                let at = s.rng.below(end);
                let len = if s.rng.chance(1, 2) {
                    s.rng.range(100, 5000)
                } else {
                    s.rng.range(5000, 2 * dead_ms)
                };
                s.push(at, Ev::PauseStart { h });
                s.push(at + len, Ev::PauseEnd { h });
                s.disturbed[h].push((at, u64::MAX));
            }
            if s.rng.chance(1, 8) {
                let at = s.rng.range(5000, end);
                let len = s.rng.range(2000, 20_000);
                s.push(at, Ev::Maintenance { h, on: true });
                s.push(at + len, Ev::Maintenance { h, on: false });
                s.disturbed[h].push((at, at + len));
            }
            if s.rng.chance(1, 10) {
                let at = s.rng.below(end);
                s.push(at, Ev::Crash { h });
                s.disturbed[h].push((at, u64::MAX));
            }
            // Fencing seeds: a host that flaps, hanging again and again
            // for about the time others call it FAIL (8 s at io_timeout 1):
            // some only slow, some fenced.
            if s.cfg.knob.fencing() && s.rng.chance(1, 3) {
                let mut at = s.rng.below(end);
                for _ in 0..s.rng.range(2, 5) {
                    let len = s.rng.range(6000, 12_000);
                    s.push(at, Ev::PauseStart { h });
                    s.push(at + len, Ev::PauseEnd { h });
                    s.disturbed[h].push((at, u64::MAX));
                    at += len + s.rng.range(1000, 15_000);
                }
            }
        }
        // The crash whose recovery is measured.
        let victim = s.rng.below(n as u64) as usize;
        s.push(crash_at, Ev::Crash { h: victim });
        s.disturbed[victim].push((crash_at, u64::MAX));
        if s.cfg.knob.health() {
            // Health seeds: most hosts fall sick once or flap; a host sick
            // may take no VM, so liveness is judged only beside a healthy one.
            for h in 0..n {
                if !s.rng.chance(2, 3) {
                    continue;
                }
                let mut at = s.rng.range(5000, end);
                for _ in 0..s.rng.range(1, 4) {
                    let sick = if s.rng.chance(1, 2) {
                        Sick::Gateway
                    } else {
                        Sick::Isolated
                    };
                    let len = if s.rng.chance(1, 3) {
                        s.rng.range(500, 4000)
                    } else {
                        s.rng.range(4000, 30_000)
                    };
                    s.push(
                        at,
                        Ev::Health {
                            h,
                            lost: Some(sick),
                        },
                    );
                    s.push(at + len, Ev::Health { h, lost: None });
                    s.disturbed[h].push((at, at + len + 10_000));
                    at += len + s.rng.range(500, 15_000);
                }
            }
        }
        s
    }

    /// Another host than `h` with no fault from 10 s before now to the
    /// end of the recovery bound.
    fn steady_other(&self, h: usize) -> bool {
        let (from, to) = (self.now.saturating_sub(10_000), self.now + self.bound_ms);
        (0..self.hosts.len()).any(|o| {
            o != h && self.joined(o) && self.disturbed[o].iter().all(|&(a, b)| b < from || a > to)
        })
    }

    fn tr(&mut self, f: impl FnOnce() -> String) {
        if self.cfg.trace {
            let line = format!("{:>8}ms {}", self.now, f());
            self.trace.push(line);
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.queue.push(at, ev);
    }

    fn local_ms(&self, h: usize) -> u64 {
        self.hosts[h].clock_off_ms + self.now
    }

    fn clock(&self, h: usize) -> Now {
        Now::at_ms(self.local_ms(h))
    }

    fn monotime(&self, h: usize) -> u64 {
        self.local_ms(h) / 1000
    }

    fn at_local(&self, h: usize, local: u64) -> u64 {
        self.now + local.saturating_sub(self.local_ms(h))
    }

    // ---- I/O: the fault model (latency, freezes; an abandoned write never lands) ----

    fn io_completion(&mut self, h: usize) -> u64 {
        let x = &self.hosts[h];
        let (lo, hi) = (x.lat_lo, x.lat_hi);
        let lat = self.rng.range(lo, hi);
        let mut at = self.now + lat;
        for &(fs, fe) in &self.hosts[h].freezes {
            if self.now < fe && at > fs {
                at = at.max(fe + lat);
            }
        }
        at
    }

    /// The daemon's I/O: read as the disk is when issued, a write lands
    /// when it completes in time.
    fn submit(&mut self, h: usize, who: Who, io: Io) {
        let done = self.io_completion(h);
        let boot = self.hosts[h].boot;
        let deadline = self.now + io.timeout_ms;
        let id = io.id;
        let lease = match who {
            Who::Op(vm) => res_off(vm),
            Who::Ls => RES_OFF,
        };
        if done > deadline {
            // Abandoned: a write never lands (as sim/mod.rs's default model).
            self.stats.io_timeouts += 1;
            let r = Err(IoFailure::timeout());
            self.push(
                deadline,
                Ev::Io {
                    h,
                    boot,
                    who,
                    id,
                    r,
                },
            );
            return;
        }
        if io.is_write() {
            match self.disk.areas(LS_OFF, lease).sectors(&io) {
                Some((sector, _)) => {
                    let data = match io.op {
                        crate::daemon::core::IoOp::Write { data } => data,
                        _ => unreachable!(),
                    };
                    self.push(done, Ev::Land { sector, data });
                    let r = Ok(Vec::new().into());
                    self.push(
                        done,
                        Ev::Io {
                            h,
                            boot,
                            who,
                            id,
                            r,
                        },
                    );
                }
                None => {
                    let r = Err(IoFailure::code(-libc::EIO));
                    self.push(
                        done,
                        Ev::Io {
                            h,
                            boot,
                            who,
                            id,
                            r,
                        },
                    );
                }
            }
            return;
        }
        let r = self.disk.areas(LS_OFF, lease).perform(&io);
        self.push(
            done,
            Ev::Io {
                h,
                boot,
                who,
                id,
                r,
            },
        );
    }

    /// The agent's gathered read of sectors `list` (each as it is when issued).
    fn agent_read(&mut self, h: usize, list: &[(usize, usize)]) {
        let done = self.io_completion(h);
        let boot = self.hosts[h].boot;
        let deadline = self.now + IO_TIMEOUT * 1000;
        if done > deadline {
            self.stats.io_timeouts += 1;
            let r = AgentIo::Read(Err(crate::rv::SANLK_AIO_TIMEOUT));
            self.push(deadline, Ev::AgentIo { h, boot, r });
            return;
        }
        let mut data = Vec::new();
        for &(sector, count) in list {
            data.extend_from_slice(&self.disk.read(sector, count));
        }
        let r = AgentIo::Read(Ok(data));
        self.push(done, Ev::AgentIo { h, boot, r });
    }

    /// The agent's write of its whiteboard sector.
    fn agent_write(&mut self, h: usize, sector: usize, data: Vec<u8>) {
        let done = self.io_completion(h);
        let boot = self.hosts[h].boot;
        let deadline = self.now + IO_TIMEOUT * 1000;
        if done > deadline {
            self.stats.io_timeouts += 1;
        } else {
            self.push(done, Ev::Land { sector, data });
        }
        self.push(
            done.min(deadline),
            Ev::AgentIo {
                h,
                boot,
                r: AgentIo::Write,
            },
        );
    }

    /// A fence thread's read of one sector.
    fn fence_read(&mut self, h: usize, sector: usize) {
        let done = self.io_completion(h);
        let boot = self.hosts[h].boot;
        let deadline = self.now + IO_TIMEOUT * 1000;
        let (at, r) = if done > deadline {
            self.stats.io_timeouts += 1;
            (deadline, FenceIo::Read(Err(crate::rv::SANLK_AIO_TIMEOUT)))
        } else {
            (done, FenceIo::Read(Ok(self.disk.read(sector, 1).to_vec())))
        };
        self.push(at, Ev::FenceIo { h, boot, r });
    }

    /// A fence thread's write of one sector (abandoned at its timeout).
    fn fence_write(&mut self, h: usize, sector: usize, data: Vec<u8>) {
        let done = self.io_completion(h);
        let boot = self.hosts[h].boot;
        let deadline = self.now + IO_TIMEOUT * 1000;
        let r = if done > deadline {
            self.stats.io_timeouts += 1;
            FenceIo::Write(Err(crate::rv::SANLK_AIO_TIMEOUT))
        } else {
            self.push(done, Ev::Land { sector, data });
            FenceIo::Write(Ok(()))
        };
        self.push(done.min(deadline), Ev::FenceIo { h, boot, r });
    }

    // ---- the invariant and liveness ----

    fn run_vm(&mut self, h: usize, vm: usize) {
        if let Some(o) = (0..self.hosts.len()).find(|&o| o != h && self.running[vm][o])
            && self.violation.is_none()
        {
            self.violation = Some(HaViolation {
                seed: self.seed,
                at_ms: self.now,
                vm,
                running_on: o,
                started_on: h,
            });
            self.tr(|| format!("VIOLATION: vm{vm} starts on host {h} while running on host {o}"));
        }
        self.running[vm][h] = true;
        // Recovered?
        let now = self.now;
        let mut rec = Vec::new();
        self.down.retain(|&(v, since)| {
            if v == vm {
                rec.push(now - since);
                false
            } else {
                true
            }
        });
        let dead_ms = self.t.host_dead_seconds() * 1000;
        for d in rec {
            if d + 2000 < dead_ms {
                self.stats.before_dead += 1;
            }
            if d <= self.bound_ms {
                self.stats.crash_cases += 1;
                self.stats.recovered += 1;
                self.stats.max_recovery_ms = self.stats.max_recovery_ms.max(d);
                self.stats.sum_recovery_ms += d;
            } else {
                self.stats.crash_cases += 1;
            }
        }
    }

    fn stop_vm(&mut self, h: usize, vm: usize) {
        self.running[vm][h] = false;
    }

    fn finish_liveness(&mut self) {
        for &(_, since) in &self.down {
            if self.end - since > self.bound_ms {
                self.stats.crash_cases += 1;
            }
        }
    }

    // ---- the main loop ----

    fn go(&mut self) {
        while let Some((at, ev)) = self.queue.pop() {
            if at > self.end || self.violation.is_some() {
                break;
            }
            self.now = at;
            self.stats.events += 1;
            assert!(
                self.stats.events < MAX_EVENTS,
                "seed {}: runaway HA simulation",
                self.seed
            );
            if let Some((h, boot)) = ev.host_sw() {
                if boot != self.hosts[h].boot || !self.hosts[h].up {
                    continue;
                }
                if self.hosts[h].paused {
                    self.hosts[h].deferred.push(ev);
                    continue;
                }
            }
            self.handle(ev);
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Io { h, who, id, r, .. } => {
                let now = self.clock(h);
                let reqs = self.hosts[h].node.io_done(now, who, id, r);
                self.apply(h, reqs);
            }
            Ev::AgentIo { h, r, .. } => self.agent_io(h, r),
            Ev::Timer { h, who, id, .. } => {
                let now = self.clock(h);
                let reqs = self.hosts[h].node.timer(now, who, id);
                self.apply(h, reqs);
            }
            Ev::FenceIo { h, r, .. } => self.fence_io(h, r),
            Ev::Main { h, tick, .. } => {
                let holders: Vec<Holder> = self.hosts[h]
                    .procs
                    .iter()
                    .map(|p| Holder::plain(p.pid))
                    .collect();
                let now = self.clock(h);
                let reqs = self.hosts[h].node.tick(now, tick, holders);
                self.apply(h, reqs);
            }
            Ev::Rejoin { h, .. } => self.join(h),
            Ev::Agent { h, .. } => self.agent_cycle(h),
            Ev::VmExit {
                h,
                boot,
                pid,
                by_itself,
            } => {
                if boot == self.hosts[h].boot && self.hosts[h].up {
                    self.vm_exit(h, pid, by_itself)
                }
            }
            Ev::Watchdog { h, boot, tick } => {
                let x = &self.hosts[h];
                if boot == x.boot && x.up && x.wd_armed && tick == x.wd_gen {
                    self.stats.watchdog_resets += 1;
                    self.tr(|| format!("host {h}: watchdog fires, host reset"));
                    self.host_down(h);
                }
            }
            Ev::Land { sector, data } => {
                let n = data.len() / SS;
                self.disk.bytes[sector * SS..(sector + n) * SS].copy_from_slice(&data);
            }
            Ev::Crash { h } => {
                if self.hosts[h].up {
                    self.stats.crashes += 1;
                    self.tr(|| format!("host {h}: crash"));
                    let now = self.now;
                    // Liveness is measured where capacity cannot be what
                    // keeps a VM down (every host may run every VM) and
                    // another host stays steady meanwhile.
                    if self.ha.cluster.capacity as usize >= self.nvms && self.steady_other(h) {
                        for vm in 0..self.nvms {
                            if self.running[vm][h] {
                                self.down.push((vm, now));
                            }
                        }
                    }
                    self.host_down(h);
                }
            }
            Ev::Restart { h } => {
                let x = &mut self.hosts[h];
                if !x.up {
                    x.up = true;
                    let boot = x.boot;
                    self.tr(|| format!("host {h}: boots"));
                    self.push(self.now, Ev::Rejoin { h, boot });
                }
            }
            Ev::PauseStart { h } => {
                if self.hosts[h].up {
                    self.tr(|| format!("host {h}: hangs"));
                    self.hosts[h].paused = true;
                }
            }
            Ev::PauseEnd { h } => {
                if self.hosts[h].paused {
                    self.tr(|| format!("host {h}: resumes"));
                    self.hosts[h].paused = false;
                    let evs = std::mem::take(&mut self.hosts[h].deferred);
                    for ev in evs {
                        self.push(self.now, ev);
                    }
                }
            }
            Ev::Maintenance { h, on } => {
                self.tr(|| format!("host {h}: local maintenance {on}"));
                self.hosts[h].maintenance = on;
            }
            Ev::FenceOff { h, f, .. } => self.fence_off(h, f),
            Ev::FenceStatus { h, f, .. } => self.fence_status(h, f),
            Ev::Health { h, lost } => {
                self.tr(|| format!("host {h}: monitors read {lost:?}"));
                self.hosts[h].sick = lost;
            }
            Ev::PowerOff { victim, boot } => {
                if self.hosts[victim].up && self.hosts[victim].boot == boot {
                    self.tr(|| format!("host {victim}: powered off by a fence agent"));
                    self.host_down(victim);
                }
            }
        }
    }

    fn host_down(&mut self, h: usize) {
        for vm in 0..self.nvms {
            self.stop_vm(h, vm);
        }
        let restart = self.rng.chance(3, 5);
        let delay = self.rng.range(1000, 20_000);
        let nvms = self.nvms;
        let x = &mut self.hosts[h];
        x.up = false;
        x.paused = false;
        x.deferred.clear();
        x.boot += 1;
        x.node.crash();
        x.procs.clear();
        x.wd_armed = false;
        x.agent = AgentPhase::Idle;
        x.memory = Memory::default();
        x.fresh = Freshness::new();
        x.outcomes.clear();
        x.starting = vec![false; nvms];
        x.cycles = 0;
        x.fence_mem = FenceMemory::default();
        x.fence_busy = None;
        x.fence_report = FenceReport::default();
        x.clock_off_ms = x.clock_off_ms.wrapping_add(delay * 7) % 1_000_000_000;
        if restart {
            self.push(self.now + delay, Ev::Restart { h });
        }
    }

    // ---- the world carrying out what a host's daemon asks ----

    /// add_lockspace (the agent's --join).
    fn join(&mut self, h: usize) {
        let name = Name::new(&format!("h{h}-b{}", self.hosts[h].boot)).unwrap();
        let now = self.clock(h);
        let reqs = self.hosts[h].node.join(now, name);
        self.apply(h, reqs);
    }

    fn apply(&mut self, h: usize, reqs: Vec<Req>) {
        for r in reqs {
            self.apply_one(h, r);
        }
    }

    fn apply_one(&mut self, h: usize, r: Req) {
        let boot = self.hosts[h].boot;
        match r {
            Req::Io { who, io } => self.submit(h, who, io),
            Req::Timer { who, id, at_ms } => {
                let at = self.at_local(h, at_ms);
                self.push(at, Ev::Timer { h, boot, who, id });
            }
            Req::Tick { at_ms, tick } => {
                let local = if at_ms > self.local_ms(h) {
                    at_ms + self.rng.below(1000)
                } else {
                    at_ms
                };
                let at = self.at_local(h, local);
                self.push(at, Ev::Main { h, boot, tick });
            }
            Req::WatchdogArm { fire_ms } => {
                let at = self.at_local(h, fire_ms);
                let x = &mut self.hosts[h];
                x.wd_armed = true;
                x.wd_gen += 1;
                let tick = x.wd_gen;
                self.push(at, Ev::Watchdog { h, boot, tick });
            }
            Req::WatchdogClose => self.hosts[h].wd_armed = false,
            Req::Signal { pid, signal } => self.signal(h, pid, signal),
            Req::Stuck { .. } => {}
            Req::Joined(Ok(lr)) => {
                self.tr(|| format!("host {h}: joined gen {}", lr.owner_generation));
                if self.hosts[h].agent == AgentPhase::Idle {
                    let at = self.now + self.rng.below(1000);
                    self.push(at, Ev::Agent { h, boot });
                }
            }
            Req::Joined(Err(e)) => {
                self.tr(|| format!("host {h}: join failed {e}"));
                let at = self.now + self.rng.range(1000, 5000);
                self.push(at, Ev::Rejoin { h, boot });
            }
            Req::Failed { .. } => {
                self.stats.lockspace_failures += 1;
                self.tr(|| format!("host {h}: lockspace failed, killing VMs"));
            }
            Req::AllClear => self.tr(|| format!("host {h}: all clear, leaving the lockspace")),
            Req::Stopped => {
                // The agent asks the daemon to join again (--join).
                let at = self.now + self.rng.range(1000, 5000);
                self.push(at, Ev::Rejoin { h, boot });
            }
            Req::Acquired { slot, result } => {
                self.hosts[h].starting[slot] = false;
                self.acquired(h, slot, *result);
            }
            Req::Released { slot, result } => match result {
                Ok(r) => {
                    if r.freed {
                        self.freed[slot] = true;
                    }
                }
                Err(e) => self.tr(|| format!("host {h}: vm{slot} release: {e}")),
            },
        }
    }

    fn joined(&self, h: usize) -> bool {
        self.hosts[h].node.live()
    }

    // ---- VM processes ----

    fn signal(&mut self, h: usize, pid: u32, sig: Signal) {
        let Some(p) = self.hosts[h].procs.iter_mut().find(|p| p.pid == pid) else {
            return;
        };
        if p.exiting || p.stuck || (sig != Signal::Kill && p.ignores_term) {
            return;
        }
        p.exiting = true;
        self.stats.killed += 1;
        let ms = if sig == Signal::Kill {
            self.rng.below(100)
        } else {
            self.rng.below(3000)
        };
        let boot = self.hosts[h].boot;
        self.push(
            self.now + ms,
            Ev::VmExit {
                h,
                boot,
                pid,
                by_itself: false,
            },
        );
    }

    fn vm_exit(&mut self, h: usize, pid: u32, by_itself: bool) {
        let Some(i) = self.hosts[h].procs.iter().position(|p| p.pid == pid) else {
            return;
        };
        let p = self.hosts[h].procs.remove(i);
        self.stop_vm(h, p.vm);
        let at = self.monotime(h);
        let kind = if p.stopping {
            OutcomeKind::Stopped
        } else if by_itself {
            self.stats.self_exits += 1;
            OutcomeKind::Exited { status: 0 }
        } else {
            OutcomeKind::Exited { status: -9 }
        };
        self.tr(|| format!("host {h}: vm{} (pid {pid}) exited: {kind:?}", p.vm));
        self.hosts[h]
            .outcomes
            .push(VmOutcome { vm: p.vm, at, kind });
        if let Some(lease) = p.lease
            && !self.hosts[h].node.space_dead()
        {
            self.daemon_release(h, p.vm, &lease);
        }
    }

    // ---- the worker of one VM lease: acquire and release ----

    fn start_vm(&mut self, h: usize, vm: usize) {
        self.stats.starts += 1;
        if self.cfg.knob.no_lease() {
            self.spawn_vm(h, vm, None);
            return;
        }
        if self.hosts[h].node.busy(vm) || !self.joined(h) {
            return;
        }
        let p = AcquireParams {
            lease: self.lease_ref(vm),
            shared: false,
            owner_nowait: false,
            lvb: false,
            acquire_lver: 0,
            new_num_hosts: 0,
            seed: self.rng.next_u64(),
            knobs: Knobs {
                takeover_without_dead: self.cfg.knob.lease_without_dead_wait(),
                ..Knobs::default()
            },
            warm: None,
        };
        self.hosts[h].starting[vm] = true;
        let now = self.clock(h);
        let reqs = self.hosts[h].node.acquire(now, vm, p);
        self.apply(h, reqs);
    }

    fn lease_ref(&self, vm: usize) -> LeaseRef {
        LeaseRef {
            space_name: space_name(),
            resource_name: vm_name(vm),
            layout: Some(Layout {
                sector_size: SS,
                align_size: (RES_SECTORS * SS) as u64,
                max_hosts: MAX_HOSTS,
            }),
            io_timeout: IO_TIMEOUT,
            watchdog_fire_timeout: self.t.watchdog_fire_timeout,
        }
    }

    fn spawn_vm(&mut self, h: usize, vm: usize, lease: Option<Acquired>) {
        let x = &mut self.hosts[h];
        let pid = x.next_pid;
        x.next_pid += 1;
        let stuck = self.rng.below(1000) < x.stuck_prob;
        let ignores_term = self.rng.below(1000) < x.ignore_term_prob;
        self.hosts[h].procs.push(Proc {
            vm,
            pid,
            exiting: false,
            stopping: false,
            stuck,
            ignores_term,
            lease,
        });
        self.stats.vm_runs += 1;
        if let Some(from) = self.moved[vm].take()
            && from != h
        {
            self.stats.moved_ran_elsewhere += 1;
        }
        self.tr(|| format!("host {h}: vm{vm} runs (pid {pid})"));
        self.run_vm(h, vm);
        if self.rng.chance(1, 10) {
            let boot = self.hosts[h].boot;
            let at = self.now + self.rng.range(2000, 30_000);
            self.push(
                at,
                Ev::VmExit {
                    h,
                    boot,
                    pid,
                    by_itself: true,
                },
            );
        }
    }

    fn acquired(&mut self, h: usize, vm: usize, r: Result<Acquired, CoreError>) {
        let at = self.monotime(h);
        match r {
            // Won for a lockspace instance that failed meanwhile: not
            // handed out; it stays ours on disk until we are DEAD.
            Err(e) if e.rv == -libc::ENOSPC => {
                self.tr(|| format!("host {h}: vm{vm} acquired, but lockspace failed: {e}"));
            }
            Ok(a) => {
                if !self.freed[vm] {
                    self.stats.taken_over += 1;
                }
                self.freed[vm] = false;
                if self.rng.chance(1, 25) {
                    // The VM command fails at once: it never ran; the
                    // lease goes with the runner.
                    self.stats.failed_starts += 1;
                    self.tr(|| format!("host {h}: vm{vm} start failed"));
                    self.hosts[h].outcomes.push(VmOutcome {
                        vm,
                        at,
                        kind: OutcomeKind::FailedStart,
                    });
                    self.daemon_release(h, vm, &a);
                    return;
                }
                self.spawn_vm(h, vm, Some(a));
            }
            Err(e) => {
                self.stats.lost_races += 1;
                self.tr(|| format!("host {h}: vm{vm} acquire failed {e}: lost race"));
                self.hosts[h].outcomes.push(VmOutcome {
                    vm,
                    at,
                    kind: OutcomeKind::LostRace,
                });
            }
        }
    }

    fn daemon_release(&mut self, h: usize, vm: usize, lease: &Acquired) {
        if self.hosts[h].node.busy(vm) {
            return;
        }
        let held = Held {
            lease: self.lease_ref(vm),
            host_id: self.hosts[h].node.host_id,
            generation: lease.leader.owner_generation,
            shared: false,
            leader: lease.leader,
            dblock: lease.dblock,
            dirty_lvb: None,
        };
        let now = self.clock(h);
        let reqs = self.hosts[h].node.release(now, vm, held);
        self.apply(h, reqs);
    }

    // ---- the HA agent ----

    fn agent_cycle(&mut self, h: usize) {
        let boot = self.hosts[h].boot;
        let at = self.now + INTERVAL * 1000;
        self.push(at, Ev::Agent { h, boot });
        if self.hosts[h].agent != AgentPhase::Idle || !self.joined(h) {
            return;
        }
        self.hosts[h].agent = AgentPhase::Reading;
        // The whiteboard and every VM's leader, in one gathered read.
        let mut list = vec![(WB_OFF, 1 + MAX_HOSTS)];
        list.extend((0..self.nvms).map(|k| (res_off(k), 1)));
        self.agent_read(h, &list);
    }

    fn agent_io(&mut self, h: usize, r: AgentIo) {
        match (self.hosts[h].agent, r) {
            (AgentPhase::Reading, AgentIo::Read(Ok(b))) => self.agent_decide(h, &b),
            (AgentPhase::Reading, AgentIo::Read(Err(_))) | (AgentPhase::Writing, _) => {
                self.hosts[h].agent = AgentPhase::Idle
            }
            _ => {}
        }
    }

    fn agent_decide(&mut self, h: usize, b: &[u8]) {
        self.hosts[h].agent = AgentPhase::Idle;
        if !self.joined(h) {
            return;
        }
        let now = self.monotime(h);
        let me = self.hosts[h].node.host_id;
        let wb = &b[..(1 + MAX_HOSTS) * SS];
        let mut hosts = Vec::new();
        for i in 0..MAX_HOSTS {
            let id = i as u64 + 1;
            let sector = HostSector::decode(id, &wb[(i + 1) * SS..(i + 2) * SS])
                .expect("only agents write their sectors");
            self.hosts[h].fresh.observe(id, sector.as_ref(), now);
            // What its daemon's get_hosts says of each host.
            let ls = self.hosts[h].node.lockspace().expect("joined");
            let hs = ls.host_status(id).expect("a host slot").clone();
            if hs.timestamp == 0 && hs.owner_id == 0 {
                continue;
            }
            let mut state = ls.host_state(id, now).expect("a host slot");
            if self.cfg.knob.restart_on_fail() && state == HostState::Fail {
                state = HostState::Dead;
            }
            hosts.push(HostView {
                host_id: id,
                state,
                generation: hs.owner_generation,
                renewal_age: Some(now.saturating_sub(if hs.last_live != 0 {
                    hs.last_live
                } else {
                    hs.first_check
                })),
                sector,
                fresh: self.hosts[h].fresh.is_fresh(id, now, 3 * INTERVAL),
            });
        }
        let leases: Vec<LeaseView> = (0..self.nvms)
            .map(|k| {
                let o = (1 + MAX_HOSTS + k) * SS;
                match LeaderRecord::decode(&b[o..o + SS]) {
                    Ok(lr) if lr.timestamp == 0 => LeaseView::Free,
                    Ok(lr) => LeaseView::Held {
                        owner: lr.owner_id,
                        generation: lr.owner_generation,
                        lver: lr.lver,
                    },
                    Err(_) => LeaseView::Unreadable,
                }
            })
            .collect();
        let x = &self.hosts[h];
        let local: Vec<Local> = (0..self.nvms)
            .map(|k| {
                if let Some(p) = x.procs.iter().find(|p| p.vm == k) {
                    if p.exiting || p.stopping {
                        Local::Stopping { since: now }
                    } else {
                        Local::Running {
                            pid: p.pid,
                            since: now,
                        }
                    }
                } else if x.starting[k] || x.node.busy(k) {
                    Local::Starting { since: now }
                } else {
                    Local::Idle
                }
            })
            .collect();
        let real_fail: Vec<bool> = leases
            .iter()
            .map(|l| match *l {
                // FAIL and holding it in its current generation (an older
                // one is a gone instance: an orphan).
                LeaseView::Held {
                    owner, generation, ..
                } => {
                    let ls = x.node.lockspace().expect("joined");
                    owner != me
                        && ls.host_state(owner, now) == Some(HostState::Fail)
                        && ls
                            .host_status(owner)
                            .is_some_and(|hs| hs.owner_generation <= generation)
                }
                _ => false,
            })
            .collect();
        let views = hosts.clone();
        let health = self.cfg.knob.health().then(|| sim_health(&self.ha, x.sick));
        let input = Input {
            now,
            me,
            config: &self.ha,
            hosts,
            global_maintenance: false,
            local_maintenance: x.maintenance,
            leases,
            local: local.clone(),
            outcomes: std::mem::take(&mut self.hosts[h].outcomes),
            memory: std::mem::take(&mut self.hosts[h].memory),
            health,
        };
        let unknown = input.hosts.iter().any(|v| v.state == HostState::Unknown);
        let d = decide::decide(&input);
        // The agent's warm-up (src/ha/agent.rs): no starts in the first 3
        // cycles (no sector can be fresh yet) nor, for 10 intervals, while
        // the daemon has hosts it has not judged.
        let x = &mut self.hosts[h];
        if x.cycles == 0 {
            x.agent_started = self.now;
        }
        x.cycles += 1;
        let warming =
            x.cycles <= 3 || (unknown && self.now - x.agent_started < 10 * INTERVAL * 1000);
        for a in &d.actions {
            match a.kind {
                decide::ActionKind::Start if warming => {
                    self.tr(|| format!("host {h}: warming up, not yet: {}", a.reason));
                }
                decide::ActionKind::Start => {
                    if real_fail[a.vm] {
                        self.stats.starts_on_fail += 1;
                    }
                    self.tr(|| format!("host {h}: START {}", a.reason));
                    self.start_vm(h, a.vm);
                }
                decide::ActionKind::Stop => {
                    self.stats.stops += 1;
                    if a.reason.contains("moving it") {
                        self.stats.moves += 1;
                        self.moved[a.vm] = Some(h);
                    } else if a.reason.contains("isolated") {
                        self.stats.isolation_stops += 1;
                    }
                    self.tr(|| format!("host {h}: STOP {}", a.reason));
                    let pid = self.hosts[h]
                        .procs
                        .iter_mut()
                        .find(|p| p.vm == a.vm)
                        .map(|p| {
                            p.stopping = true;
                            p.pid
                        });
                    if let Some(pid) = pid {
                        self.signal(h, pid, Signal::Term);
                        // A stop that TERM does not end: KILL after a while.
                        if let Some(p) = self.hosts[h].procs.iter_mut().find(|p| p.pid == pid)
                            && !p.exiting
                            && !p.stuck
                        {
                            p.exiting = true;
                            let boot = self.hosts[h].boot;
                            let at = self.now + 10_000;
                            self.push(
                                at,
                                Ev::VmExit {
                                    h,
                                    boot,
                                    pid,
                                    by_itself: false,
                                },
                            );
                        }
                    }
                }
                decide::ActionKind::Wait => self.tr(|| format!("host {h}: wait {}", a.reason)),
            }
        }
        if !warming {
            self.fence_decide(h, &views);
        }
        let x = &mut self.hosts[h];
        x.memory = d.memory;
        x.seq += 1;
        // As src/ha/agent.rs: VMs that run (under their lease), not those
        // still starting, so that every host's assignment agrees.
        let running =
            VmBitmap::from_indexes((0..self.nvms).filter(|&k| x.procs.iter().any(|p| p.vm == k)));
        let sector = HostSector {
            host_id: me,
            generation: x.node.generation(),
            seq: x.seq,
            written_unix: 0,
            score: d.score,
            flags: if x.maintenance {
                crate::ha::whiteboard::LOCAL_MAINTENANCE
            } else {
                0
            },
            config_digest: self.ha.digest(),
            running,
            failed: d.failed,
            fence: x.fence_report,
            health: d.health,
        };
        x.agent = AgentPhase::Writing;
        let data = sector.encode(SS as u32);
        self.agent_write(h, WB_OFF + me as usize, data);
    }
}

impl HaSim {
    // ---- fencing (src/ha/fencing.rs decides, src/ha/fence.rs acts) ----

    /// The fencing decision on the agent's views; a fence started.
    fn fence_decide(&mut self, h: usize, views: &[HostView]) {
        let Some(fcfg) = self.ha.fencing.clone() else {
            return;
        };
        let me = self.hosts[h].node.host_id;
        let now = self.monotime(h);
        let x = &mut self.hosts[h];
        let input = FenceInput {
            now,
            me,
            fencing: &fcfg,
            hosts: views,
            global_maintenance: false,
            local_maintenance: x.maintenance,
            own_renewal_age: views
                .iter()
                .find(|v| v.host_id == me)
                .and_then(|v| v.renewal_age),
            io_timeout: IO_TIMEOUT,
            busy: x.fence_busy.map(|f| f.victim as u64 + 1),
            memory: std::mem::take(&mut x.fence_mem),
        };
        let d = decide_fencing(&input);
        self.hosts[h].fence_mem = d.memory.clone();
        for a in &d.actions {
            if let FenceAction::Wait { reason, .. } = a {
                self.tr(|| format!("host {h}: fence wait {reason}"));
            }
        }
        let Some((victim_id, generation)) = d.fence() else {
            return;
        };
        let victim = victim_id as usize - 1;
        let f = SimFence {
            victim,
            generation,
            timestamp: self.hosts[h]
                .node
                .lockspace()
                .and_then(|ls| ls.host_status(victim_id))
                .map_or(0, |hs| hs.timestamp),
        };
        self.stats.fences += 1;
        self.tr(|| format!("host {h}: FENCE host {victim} ({f:?})"));
        let x = &mut self.hosts[h];
        x.fence_busy = Some(f);
        x.fence_report = FenceReport {
            victim: victim_id,
            victim_generation: generation,
            phase: FENCE_RUNNING,
        };
        let boot = x.boot;
        let at = self.now + self.rng.range(200, 3000);
        self.push(at, Ev::FenceOff { h, boot, f });
    }

    /// The agent's `off`: fails sometimes; else the victim's power goes,
    /// at once or a little later than the agent says (the host runs on
    /// until then), unless the agent lies. Then `status`.
    fn fence_off(&mut self, h: usize, f: SimFence) {
        if self.hosts[h].fence_busy != Some(f) {
            return;
        }
        if self.rng.chance(1, 8) {
            self.tr(|| format!("host {h}: fence agent off failed"));
            return self.fence_end(h, f, false);
        }
        if self.cfg.knob != HaKnob::FencingLiar && self.hosts[h].fence_busy.is_some() {
            let late = if self.rng.chance(1, 3) {
                self.stats.late_kills += 1;
                self.rng.range(100, 3000)
            } else {
                0
            };
            let boot = self.hosts[f.victim].boot;
            self.push(
                self.now + late,
                Ev::PowerOff {
                    victim: f.victim,
                    boot,
                },
            );
        }
        let boot = self.hosts[h].boot;
        let at = self.now + self.rng.range(50, 1500);
        self.push(at, Ev::FenceStatus { h, boot, f });
    }

    /// The agent's `status`: off confirmed only if the victim is down (or
    /// the agent lies); then the declaration: read the victim's delta
    /// lease, checked, then released as sanlock releases a host_id.
    fn fence_status(&mut self, h: usize, f: SimFence) {
        if self.hosts[h].fence_busy != Some(f) {
            return;
        }
        let off = self.cfg.knob == HaKnob::FencingLiar || !self.hosts[f.victim].up;
        if !off {
            self.tr(|| format!("host {h}: fence status says host {} on", f.victim));
            return self.fence_end(h, f, false);
        }
        self.fence_read(h, LS_OFF + f.victim);
    }

    fn fence_io(&mut self, h: usize, r: FenceIo) {
        let Some(f) = self.hosts[h].fence_busy else {
            return;
        };
        match r {
            FenceIo::Read(Ok(b)) => {
                let id = f.victim as u64 + 1;
                // The agent's own check and release (src/ha/fence.rs).
                match crate::ha::fence::declaration(
                    &b[..SS],
                    &space_name(),
                    id,
                    f.generation,
                    f.timestamp,
                ) {
                    Ok(crate::ha::fence::Declaration::Write { sector, .. }) => {
                        self.fence_write(h, LS_OFF + f.victim, sector);
                    }
                    Ok(crate::ha::fence::Declaration::AlreadyFree) => self.fence_end(h, f, true),
                    Err(why) => {
                        self.tr(|| format!("host {h}: not declaring host {}: {why}", f.victim));
                        self.fence_end(h, f, false)
                    }
                }
            }
            FenceIo::Write(Ok(())) => {
                self.tr(|| format!("host {h}: DECLARED host {} dead", f.victim));
                self.fence_end(h, f, true)
            }
            FenceIo::Read(Err(_)) | FenceIo::Write(Err(_)) => self.fence_end(h, f, false),
        }
    }

    fn fence_end(&mut self, h: usize, f: SimFence, declared: bool) {
        if declared {
            self.stats.declared += 1;
        } else {
            self.stats.fence_failed += 1;
        }
        let x = &mut self.hosts[h];
        x.fence_busy = None;
        x.fence_mem.done.insert(f.victim as u64 + 1, f.generation);
        x.fence_report = FenceReport {
            victim: f.victim as u64 + 1,
            victim_generation: f.generation,
            phase: if declared {
                FENCE_DECLARED
            } else {
                FENCE_FAILED
            },
        };
    }
}

/// Formats a violation with its replay and the end of its trace.
pub fn report(o: &HaOutcome, knob: HaKnob) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if let Some(v) = &o.violation {
        let _ = writeln!(
            s,
            "HA violation with knob {knob:?}: seed {} at {} ms: vm{} started on host {} while running on host {}",
            v.seed, v.at_ms, v.vm, v.started_on, v.running_on
        );
        let _ = writeln!(
            s,
            "replay: HaSim::run({}, &HaConfig {{ knob: HaKnob::{knob:?}, trace: true }})",
            v.seed
        );
        let tr = HaSim::run(o.seed, &HaConfig { knob, trace: true });
        let from = tr.trace.len().saturating_sub(40);
        for l in &tr.trace[from..] {
            let _ = writeln!(s, "  {l}");
        }
    }
    s
}

#[derive(Clone, Debug, Default)]
pub struct HaSummary {
    pub seeds: u64,
    pub stats: HaStats,
    pub violations: Vec<HaOutcome>,
    pub violation_count: u64,
    pub elapsed: std::time::Duration,
}

/// Seeds `first..first + count` on `threads` threads.
pub fn run_many(first: u64, count: u64, knob: HaKnob, threads: usize) -> HaSummary {
    let start = std::time::Instant::now();
    let cfg = HaConfig { knob, trace: false };
    let next = std::sync::atomic::AtomicU64::new(first);
    let end = first + count;
    let parts: Vec<HaSummary> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let (cfg, next) = (&cfg, &next);
                sc.spawn(move || {
                    use std::sync::atomic::Ordering::Relaxed;
                    let mut sum = HaSummary::default();
                    loop {
                        let from = next.fetch_add(64, Relaxed);
                        if from >= end {
                            break;
                        }
                        for seed in from..(from + 64).min(end) {
                            let o = HaSim::run(seed, cfg);
                            sum.seeds += 1;
                            sum.stats.add(&o.stats);
                            if o.violation.is_some() {
                                sum.violation_count += 1;
                                if sum.violations.len() < 10 {
                                    sum.violations.push(o);
                                }
                            }
                        }
                    }
                    sum
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total = HaSummary::default();
    for p in parts {
        total.seeds += p.seeds;
        total.stats.add(&p.stats);
        total.violation_count += p.violation_count;
        total.violations.extend(p.violations);
    }
    total.violations.sort_by_key(|o| o.seed);
    total.violations.truncate(10);
    total.elapsed = start.elapsed();
    total
}
