//! The HA layer in the deterministic simulation: hosts run the daemon's
//! machines (delta lease join/renewal, host judging, the kill sequence,
//! one Disk Paxos acquire per VM lease) and an HA agent that each second
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
//! purpose: its own disk layout, events and hosts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::rng::Rng;
use crate::delta::{self, DeltaAcquire, DeltaParams, lease_sector};
use crate::ha::config::{Cluster, Config as HaCfg, RunnerKind, Vm};
use crate::ha::decide::{
    self, HostView, Input, LeaseView, Local, Memory, Outcome as VmOutcome, OutcomeKind,
};
use crate::ha::fence::{FenceAgent, FenceHost, FencingConfig};
use crate::ha::fencing::{FenceAction, FenceInput, FenceMemory, decide_fencing};
use crate::ha::whiteboard::{
    FENCE_DECLARED, FENCE_FAILED, FENCE_RUNNING, FenceReport, Freshness, HostSector, VmBitmap,
};
use crate::hosts::{HostState, HostTable};
use crate::ondisk::{self, LeaderRecord, Name, PaxosDblock};
use crate::paxos::{self, PaxosAcquire, PaxosParams, leader_sector};
use crate::recovery::{Action, Holder, Recovery, RecoveryConfig, Signal};
use crate::rv;
use crate::timeouts::Timeouts;

const SS: usize = 512;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Ls,
    /// The worker serving VM k's lease (acquire, release).
    Vm(usize),
    Agent,
    /// The agent's fence thread (the declaration's read and write).
    Fence,
}

#[derive(Clone, Debug)]
enum IoDone {
    /// The data, and how many sectors were asked for.
    Read(Result<Vec<u8>, i32>, usize),
    Write(Result<(), i32>),
}

#[derive(Clone, Debug)]
enum Ev {
    Io {
        h: usize,
        boot: u32,
        who: Who,
        r: IoDone,
    },
    Timer {
        h: usize,
        boot: u32,
        who: Who,
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
            | Ev::Timer { h, boot, .. }
            | Ev::Main { h, boot, .. }
            | Ev::Rejoin { h, boot }
            | Ev::Agent { h, boot }
            | Ev::FenceOff { h, boot, .. }
            | Ev::FenceStatus { h, boot, .. } => Some((h, boot)),
            _ => None,
        }
    }
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Clone, Debug)]
enum Ls {
    Down,
    Joining(Box<DeltaAcquire>),
    Idle,
    RenewRead,
    RenewWrite(Box<LeaderRecord>, Vec<u8>),
    Leaving,
    Stopped,
}

#[derive(Clone, Debug)]
enum Work {
    Idle,
    Acquiring(Box<PaxosAcquire>),
    OwnerDelta(Box<PaxosAcquire>),
    OwnerDblock(Box<PaxosAcquire>),
    RelDblock(LeaderRecord),
    RelLeaderRead(LeaderRecord),
    RelLeaderWrite,
}

#[derive(Clone, Copy, Debug)]
struct Proc {
    vm: usize,
    pid: u32,
    exiting: bool,
    stopping: bool,
    stuck: bool,
    ignores_term: bool,
    /// None under the NoLease knob.
    lease: Option<(LeaderRecord, PaxosDblock)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AgentPhase {
    Idle,
    Reading,
    Writing,
}

struct Host {
    host_id: u64,
    boot: u32,
    up: bool,
    clock_off_ms: u64,
    lat_lo: u64,
    lat_hi: u64,
    freezes: Vec<(u64, u64)>,
    paused: bool,
    deferred: Vec<Ev>,
    ls: Ls,
    params: DeltaParams,
    leader: LeaderRecord,
    prev_ok: bool,
    last_success: u64,
    corrupt: bool,
    cleared: bool,
    table: HostTable,
    recovery: Recovery,
    main_gen: u32,
    wd_gen: u32,
    wd_armed: bool,
    work: Vec<Work>,
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
}

pub struct HaSim {
    seed: u64,
    cfg: HaConfig,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    disk: Vec<u8>,
    hosts: Vec<Host>,
    t: Timeouts,
    rcfg: RecoveryConfig,
    end: u64,
    ha: HaCfg,
    nvms: usize,
    /// running[vm][host]: its process holds (or, NoLease, runs).
    running: Vec<[bool; MAX_HOSTS]>,
    /// The VM's lease was last freed by a release (not taken over).
    freed: Vec<bool>,
    /// (vm, since ms) for VMs that were running on a host when it crashed.
    down: Vec<(usize, u64)>,
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

fn ha_config(nvms: usize, capacity: u32, fencing: bool) -> HaCfg {
    HaCfg {
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
            })
            .collect(),
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
    }
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
        let rcfg = RecoveryConfig::new(IO_TIMEOUT, w, kill_grace);
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
                host_id,
                boot: 0,
                up: true,
                clock_off_ms: rng.below(1_000_000_000),
                lat_lo,
                lat_hi,
                freezes,
                paused: false,
                deferred: Vec::new(),
                ls: Ls::Down,
                params: DeltaParams {
                    space_name: space_name(),
                    host_id,
                    our_name: Name::default(),
                    io_timeout: IO_TIMEOUT,
                    sector_size: SS,
                    watchdog_fire_timeout: w,
                },
                leader: LeaderRecord::default(),
                prev_ok: false,
                last_success: 0,
                corrupt: false,
                cleared: false,
                table: HostTable::new(MAX_HOSTS, host_id),
                recovery: Recovery::new(rcfg),
                main_gen: 0,
                wd_gen: 0,
                wd_armed: false,
                work: vec![Work::Idle; nvms],
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
            });
        }
        let fencing = cfg.knob.fencing();
        let mut s = HaSim {
            seed,
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            disk: formatted_disk(),
            hosts,
            t,
            rcfg,
            end,
            ha: ha_config(nvms, capacity, fencing),
            nvms,
            running: vec![[false; MAX_HOSTS]; nvms],
            freed: vec![true; nvms],
            down: Vec::new(),
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
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn local_ms(&self, h: usize) -> u64 {
        self.hosts[h].clock_off_ms + self.now
    }

    fn monotime(&self, h: usize) -> u64 {
        self.local_ms(h) / 1000
    }

    fn at_local(&self, h: usize, local: u64) -> u64 {
        self.now + local.saturating_sub(self.local_ms(h))
    }

    fn timer(&mut self, h: usize, who: Who, ms: u64) {
        let boot = self.hosts[h].boot;
        self.push(self.now + ms, Ev::Timer { h, boot, who });
    }

    // ---- I/O ----

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

    /// Reads sectors `list` (gathered; each as it is when issued).
    fn read(&mut self, h: usize, who: Who, list: &[(usize, usize)], timeout_s: u64) {
        let done = self.io_completion(h);
        let boot = self.hosts[h].boot;
        let deadline = self.now + timeout_s * 1000;
        let count = list.iter().map(|l| l.1).sum();
        if done > deadline {
            self.stats.io_timeouts += 1;
            let r = IoDone::Read(Err(rv::SANLK_AIO_TIMEOUT), count);
            self.push(deadline, Ev::Io { h, boot, who, r });
            return;
        }
        let mut data = Vec::new();
        for &(sector, count) in list {
            data.extend_from_slice(&self.disk[sector * SS..(sector + count) * SS]);
        }
        self.push(
            done,
            Ev::Io {
                h,
                boot,
                who,
                r: IoDone::Read(Ok(data), count),
            },
        );
    }

    fn write(&mut self, h: usize, who: Who, sector: usize, data: Vec<u8>, timeout_s: u64) {
        let done = self.io_completion(h);
        let boot = self.hosts[h].boot;
        let deadline = self.now + timeout_s * 1000;
        if done > deadline {
            // Abandoned: never lands (as sim/mod.rs's default model).
            self.stats.io_timeouts += 1;
            let r = IoDone::Write(Err(rv::SANLK_AIO_TIMEOUT));
            self.push(deadline, Ev::Io { h, boot, who, r });
            return;
        }
        self.push(done, Ev::Land { sector, data });
        self.push(
            done,
            Ev::Io {
                h,
                boot,
                who,
                r: IoDone::Write(Ok(())),
            },
        );
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
        while let Some(Reverse(q)) = self.queue.pop() {
            if q.at > self.end || self.violation.is_some() {
                break;
            }
            self.now = q.at;
            self.stats.events += 1;
            assert!(
                self.stats.events < MAX_EVENTS,
                "seed {}: runaway HA simulation",
                self.seed
            );
            if let Some((h, boot)) = q.ev.host_sw() {
                if boot != self.hosts[h].boot || !self.hosts[h].up {
                    continue;
                }
                if self.hosts[h].paused {
                    self.hosts[h].deferred.push(q.ev);
                    continue;
                }
            }
            self.handle(q.ev);
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Io { h, who, r, .. } => match who {
                Who::Ls => self.ls_io(h, r),
                Who::Vm(k) => self.work_io(h, k, r),
                Who::Agent => self.agent_io(h, r),
                Who::Fence => self.fence_io(h, r),
            },
            Ev::Timer { h, who, .. } => match who {
                Who::Ls => self.ls_timer(h),
                Who::Vm(k) => self.work_timer(h, k),
                Who::Agent | Who::Fence => {}
            },
            Ev::Main { h, tick, .. } => {
                if tick == self.hosts[h].main_gen {
                    self.main_check(h)
                }
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
                self.disk[sector * SS..(sector + 1) * SS].copy_from_slice(&data[..SS])
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
        x.ls = Ls::Down;
        x.work = vec![Work::Idle; nvms];
        x.procs.clear();
        x.wd_armed = false;
        x.cleared = false;
        x.recovery = Recovery::new(self.rcfg);
        x.table = HostTable::new(MAX_HOSTS, x.host_id);
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

    // ---- the lockspace thread (as sim/mod.rs) ----

    fn join(&mut self, h: usize) {
        let x = &mut self.hosts[h];
        if !matches!(x.ls, Ls::Down | Ls::Stopped) {
            return;
        }
        x.params.our_name = Name::new(&format!("h{h}-b{}", x.boot)).unwrap();
        x.recovery = Recovery::new(self.rcfg);
        x.corrupt = false;
        x.cleared = false;
        x.table = HostTable::new(MAX_HOSTS, x.host_id);
        let now = self.monotime(h);
        let mut acq = DeltaAcquire::new(self.hosts[h].params.clone(), now);
        let step = acq.step(now, delta::Input::Start);
        self.hosts[h].ls = Ls::Joining(Box::new(acq));
        self.delta_step(h, step);
    }

    fn ls_slot(&self, h: usize) -> usize {
        LS_OFF + self.hosts[h].host_id as usize - 1
    }

    fn delta_step(&mut self, h: usize, step: delta::Step) {
        let slot = self.ls_slot(h);
        match step {
            delta::Step::Read => self.read(h, Who::Ls, &[(slot, 1)], IO_TIMEOUT),
            delta::Step::Write(s) => self.write(h, Who::Ls, slot, s, IO_TIMEOUT),
            delta::Step::Sleep(secs) => self.timer(h, Who::Ls, secs * 1000),
            delta::Step::Done(Ok(lr)) => {
                let x = &mut self.hosts[h];
                x.leader = lr;
                x.prev_ok = true;
                x.last_success = lr.timestamp;
                x.ls = Ls::Idle;
                self.tr(|| format!("host {h}: joined gen {}", lr.owner_generation));
                self.arm_watchdog(h);
                self.schedule_renewal(h);
                self.schedule_main(h);
                if self.hosts[h].agent == AgentPhase::Idle {
                    let boot = self.hosts[h].boot;
                    let at = self.now + self.rng.below(1000);
                    self.push(at, Ev::Agent { h, boot });
                }
            }
            delta::Step::Done(Err(e)) => {
                self.tr(|| format!("host {h}: join failed {e}"));
                self.hosts[h].ls = Ls::Down;
                let boot = self.hosts[h].boot;
                let at = self.now + self.rng.range(1000, 5000);
                self.push(at, Ev::Rejoin { h, boot });
            }
        }
    }

    fn arm_watchdog(&mut self, h: usize) {
        let fire = self.rcfg.watchdog_fire(self.hosts[h].last_success);
        let at = self.at_local(h, fire * 1000);
        let x = &mut self.hosts[h];
        x.wd_armed = true;
        x.wd_gen += 1;
        let (boot, tick) = (x.boot, x.wd_gen);
        self.push(at, Ev::Watchdog { h, boot, tick });
    }

    fn schedule_renewal(&mut self, h: usize) {
        let due = (self.hosts[h].last_success + self.t.id_renewal_seconds()) * 1000;
        let jitter = 500 + self.rng.below(1000);
        let at = self.at_local(h, due + jitter);
        let boot = self.hosts[h].boot;
        self.push(
            at,
            Ev::Timer {
                h,
                boot,
                who: Who::Ls,
            },
        );
    }

    fn ls_timer(&mut self, h: usize) {
        let now = self.monotime(h);
        match &mut self.hosts[h].ls {
            Ls::Joining(acq) => {
                let step = acq.step(now, delta::Input::Slept);
                self.delta_step(h, step);
            }
            Ls::Idle => {
                self.hosts[h].ls = Ls::RenewRead;
                self.read(h, Who::Ls, &[(LS_OFF, MAX_HOSTS)], IO_TIMEOUT);
            }
            _ => {}
        }
    }

    fn ls_io(&mut self, h: usize, r: IoDone) {
        let ls = std::mem::replace(&mut self.hosts[h].ls, Ls::Down);
        match ls {
            Ls::Joining(mut acq) => {
                let now = self.monotime(h);
                let input = match r {
                    IoDone::Read(r, _) => delta::Input::ReadDone(r),
                    IoDone::Write(r) => delta::Input::WriteDone(r),
                };
                let step = acq.step(now, input);
                self.hosts[h].ls = Ls::Joining(acq);
                self.delta_step(h, step);
            }
            Ls::RenewRead => match r {
                IoDone::Read(Ok(area), _) => {
                    let now = self.monotime(h);
                    let x = &self.hosts[h];
                    match delta::renew(
                        &x.params,
                        &x.leader,
                        x.prev_ok,
                        &area,
                        now,
                        (0, 0, 0),
                        &[0; 256],
                    ) {
                        Ok((lr, sector)) => {
                            self.hosts[h].ls = Ls::RenewWrite(Box::new(lr), area);
                            let dead = self.t.host_dead_seconds();
                            let slot = self.ls_slot(h);
                            self.write(h, Who::Ls, slot, sector, dead);
                        }
                        Err(e) => {
                            self.observe(h, &area);
                            self.renewal_failed(h, e != rv::SANLK_AIO_TIMEOUT);
                        }
                    }
                }
                _ => self.renewal_failed(h, false),
            },
            Ls::RenewWrite(lr, area) => {
                self.observe(h, &area);
                match r {
                    IoDone::Write(Ok(())) => {
                        let x = &mut self.hosts[h];
                        x.leader = *lr;
                        x.prev_ok = true;
                        x.last_success = lr.timestamp;
                        x.ls = Ls::Idle;
                        self.arm_watchdog(h);
                        if self.hosts[h].recovery.space_dead() {
                            self.stop_lockspace_if_cleared(h);
                        } else {
                            self.schedule_renewal(h);
                            self.schedule_main(h);
                        }
                    }
                    _ => self.renewal_failed(h, false),
                }
            }
            Ls::Leaving => {
                self.hosts[h].ls = Ls::Stopped;
                self.after_stop(h);
            }
            other => self.hosts[h].ls = other,
        }
    }

    fn observe(&mut self, h: usize, area: &[u8]) {
        let now = self.monotime(h);
        self.hosts[h].table.observe(now, area, SS, &space_name());
    }

    fn renewal_failed(&mut self, h: usize, corrupt: bool) {
        let x = &mut self.hosts[h];
        x.prev_ok = false;
        x.ls = Ls::Idle;
        let newly_corrupt = corrupt && !x.corrupt;
        x.corrupt |= corrupt;
        if x.recovery.space_dead() {
            self.stop_lockspace_if_cleared(h);
            return;
        }
        if newly_corrupt {
            self.schedule_main(h);
        }
        let ms = 500 + self.rng.below(500);
        self.timer(h, Who::Ls, ms);
    }

    fn schedule_main(&mut self, h: usize) {
        let local_now = self.local_ms(h);
        let x = &mut self.hosts[h];
        x.main_gen += 1;
        let (boot, tick) = (x.boot, x.main_gen);
        let local = if x.recovery.space_dead() || x.corrupt {
            local_now + x.recovery.next_check_ms()
        } else {
            let fail = x.recovery.fail_time(x.last_success) * 1000;
            fail.max(local_now) + self.rng.below(1000)
        };
        let at = self.at_local(h, local);
        self.push(at, Ev::Main { h, boot, tick });
    }

    fn main_check(&mut self, h: usize) {
        if !matches!(
            self.hosts[h].ls,
            Ls::Idle | Ls::RenewRead | Ls::RenewWrite(..)
        ) {
            return;
        }
        let now = self.monotime(h);
        let holders: Vec<Holder> = self.hosts[h]
            .procs
            .iter()
            .map(|p| Holder::plain(p.pid))
            .collect();
        let x = &mut self.hosts[h];
        let actions = x
            .recovery
            .check(now, x.last_success, x.corrupt, false, &holders);
        for a in actions {
            match a {
                Action::LockspaceFailed { .. } => {
                    self.stats.lockspace_failures += 1;
                    self.tr(|| format!("host {h}: lockspace failed, killing VMs"));
                }
                Action::Signal { pid, signal } => self.signal(h, pid, signal),
                Action::Stuck { .. } => {}
                Action::AllClear => {
                    self.tr(|| format!("host {h}: all clear, leaving the lockspace"));
                    let x = &mut self.hosts[h];
                    x.wd_armed = false;
                    x.cleared = true;
                    x.main_gen += 1;
                    self.stop_lockspace_if_cleared(h);
                    return;
                }
            }
        }
        if self.hosts[h].recovery.space_dead() {
            let ms = self.hosts[h].recovery.next_check_ms();
            let x = &mut self.hosts[h];
            x.main_gen += 1;
            let (boot, tick) = (x.boot, x.main_gen);
            self.push(self.now + ms, Ev::Main { h, boot, tick });
        } else {
            self.schedule_main(h);
        }
    }

    fn stop_lockspace_if_cleared(&mut self, h: usize) {
        let x = &mut self.hosts[h];
        if !x.cleared || !matches!(x.ls, Ls::Idle) {
            return;
        }
        if x.prev_ok {
            let (_, sector) = delta::release_sector(&x.leader, SS);
            x.ls = Ls::Leaving;
            let slot = self.ls_slot(h);
            self.write(h, Who::Ls, slot, sector, IO_TIMEOUT);
        } else {
            x.ls = Ls::Stopped;
            self.after_stop(h);
        }
    }

    fn after_stop(&mut self, h: usize) {
        // The agent asks the daemon to join again (--join).
        let boot = self.hosts[h].boot;
        let at = self.now + self.rng.range(1000, 5000);
        self.push(at, Ev::Rejoin { h, boot });
    }

    fn joined(&self, h: usize) -> bool {
        let x = &self.hosts[h];
        matches!(x.ls, Ls::Idle | Ls::RenewRead | Ls::RenewWrite(..)) && !x.recovery.space_dead()
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
            && !self.hosts[h].recovery.space_dead()
        {
            self.daemon_release(h, p.vm, lease);
        }
    }

    // ---- the worker of one VM lease: acquire and release ----

    fn start_vm(&mut self, h: usize, vm: usize) {
        self.stats.starts += 1;
        if self.cfg.knob.no_lease() {
            self.spawn_vm(h, vm, None);
            return;
        }
        if !matches!(self.hosts[h].work[vm], Work::Idle) || !self.joined(h) {
            return;
        }
        let x = &self.hosts[h];
        let p = PaxosParams {
            host_id: x.host_id,
            host_generation: x.leader.owner_generation,
            sector_size: SS,
            flags: 0,
            acquire_lver: 0,
            new_num_hosts: 0,
            watchdog_fire_timeout: self.t.watchdog_fire_timeout,
            io_timeout: IO_TIMEOUT,
            seed: self.rng.next_u64(),
            names: Some((space_name(), vm_name(vm))),
        };
        self.hosts[h].starting[vm] = true;
        let mut m = PaxosAcquire::new(p);
        let now = self.monotime(h);
        let step = m.step(now, paxos::Input::Start);
        self.paxos_step(h, vm, m, step);
    }

    fn spawn_vm(&mut self, h: usize, vm: usize, lease: Option<(LeaderRecord, PaxosDblock)>) {
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

    fn paxos_step(&mut self, h: usize, vm: usize, mut m: PaxosAcquire, mut step: paxos::Step) {
        let who = Who::Vm(vm);
        let ro = res_off(vm);
        loop {
            let hid = self.hosts[h].host_id as usize;
            match step {
                paxos::Step::ReadArea => self.read(h, who, &[(ro, RES_SECTORS)], IO_TIMEOUT),
                paxos::Step::ReadLeader => self.read(h, who, &[(ro, 1)], IO_TIMEOUT),
                paxos::Step::HostInfo { owner_id } => {
                    let hs = self.hosts[h]
                        .table
                        .hosts
                        .get((owner_id as usize).wrapping_sub(1))
                        .cloned();
                    let now = self.monotime(h);
                    step = m.step(now, paxos::Input::HostInfo(hs));
                    continue;
                }
                paxos::Step::ReadOwnerDelta { owner_id } => {
                    if self.cfg.knob.lease_without_dead_wait() {
                        let now = self.monotime(h);
                        let free = LeaderRecord::default();
                        step = m.step(now, paxos::Input::OwnerDelta(Ok(free)));
                        continue;
                    }
                    let slot = LS_OFF + owner_id as usize - 1;
                    self.hosts[h].work[vm] = Work::OwnerDelta(Box::new(m));
                    self.read(h, who, &[(slot, 1)], IO_TIMEOUT);
                    return;
                }
                paxos::Step::ReadDblock { host_id } => {
                    self.hosts[h].work[vm] = Work::OwnerDblock(Box::new(m));
                    self.read(h, who, &[(ro + 1 + host_id as usize, 1)], IO_TIMEOUT);
                    return;
                }
                paxos::Step::WriteDblock(s) => self.write(h, who, ro + 1 + hid, s, IO_TIMEOUT),
                paxos::Step::WriteLeader(s) => self.write(h, who, ro, s, IO_TIMEOUT),
                paxos::Step::Sleep(d) => self.timer(h, who, d.as_millis() as u64),
                paxos::Step::Done(r) => {
                    self.hosts[h].work[vm] = Work::Idle;
                    self.hosts[h].starting[vm] = false;
                    self.acquired(h, vm, r);
                    return;
                }
            }
            self.hosts[h].work[vm] = Work::Acquiring(Box::new(m));
            return;
        }
    }

    fn acquired(&mut self, h: usize, vm: usize, r: paxos::Outcome) {
        let at = self.monotime(h);
        match r {
            Ok((lr, d)) => {
                let x = &self.hosts[h];
                if !self.joined(h) || lr.owner_generation != x.leader.owner_generation {
                    // Not handed out; stays ours on disk until we are DEAD.
                    self.tr(|| format!("host {h}: vm{vm} acquired, but lockspace failed"));
                    return;
                }
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
                    self.daemon_release(h, vm, (lr, d));
                    return;
                }
                self.spawn_vm(h, vm, Some((lr, d)));
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

    fn daemon_release(&mut self, h: usize, vm: usize, lease: (LeaderRecord, PaxosDblock)) {
        if !matches!(self.hosts[h].work[vm], Work::Idle) {
            return;
        }
        let hid = self.hosts[h].host_id as usize;
        let sector = paxos::released_dblock_sector(&lease.1, SS);
        self.hosts[h].work[vm] = Work::RelDblock(lease.0);
        self.write(h, Who::Vm(vm), res_off(vm) + 1 + hid, sector, IO_TIMEOUT);
    }

    fn work_timer(&mut self, h: usize, vm: usize) {
        let w = std::mem::replace(&mut self.hosts[h].work[vm], Work::Idle);
        if let Work::Acquiring(mut m) = w {
            let now = self.monotime(h);
            let step = m.step(now, paxos::Input::Slept);
            self.paxos_step(h, vm, *m, step);
        } else {
            self.hosts[h].work[vm] = w;
        }
    }

    fn work_io(&mut self, h: usize, vm: usize, r: IoDone) {
        let w = std::mem::replace(&mut self.hosts[h].work[vm], Work::Idle);
        let now = self.monotime(h);
        match w {
            Work::Acquiring(mut m) => {
                let input = match r {
                    IoDone::Write(r) => paxos::Input::Written(r),
                    IoDone::Read(r, count) if count > 1 => paxos::Input::Area(r),
                    IoDone::Read(r, _) => paxos::Input::Leader(r),
                };
                let step = m.step(now, input);
                self.paxos_step(h, vm, *m, step);
            }
            Work::OwnerDelta(mut m) => {
                let r = match r {
                    IoDone::Read(r, _) => r.and_then(|b| delta::verify_sector(&b, &space_name())),
                    IoDone::Write(_) => Err(rv::SANLK_AIO_TIMEOUT),
                };
                let step = m.step(now, paxos::Input::OwnerDelta(r));
                self.paxos_step(h, vm, *m, step);
            }
            Work::OwnerDblock(mut m) => {
                let r = match r {
                    IoDone::Read(r, _) => {
                        r.map(|b| PaxosDblock::decode(&b).expect("a sector holds a dblock"))
                    }
                    IoDone::Write(_) => Err(rv::SANLK_AIO_TIMEOUT),
                };
                let step = m.step(now, paxos::Input::Dblock(r));
                self.paxos_step(h, vm, *m, step);
            }
            Work::RelDblock(last) => {
                self.tr(|| format!("host {h}: vm{vm} release: dblock written {r:?}"));
                self.hosts[h].work[vm] = Work::RelLeaderRead(last);
                self.read(h, Who::Vm(vm), &[(res_off(vm), 1)], IO_TIMEOUT);
            }
            Work::RelLeaderRead(last) => {
                let IoDone::Read(Ok(b), _) = r else {
                    self.tr(|| format!("host {h}: vm{vm} release: leader read failed {r:?}"));
                    return;
                };
                let Ok(now_leader) = LeaderRecord::decode(&b) else {
                    return;
                };
                let x = &self.hosts[h];
                match paxos::release_leader(
                    &now_leader,
                    &last,
                    x.host_id,
                    x.leader.owner_generation,
                    now,
                    SS,
                ) {
                    Ok(Some((_, sector))) => {
                        self.freed[vm] = true;
                        self.hosts[h].work[vm] = Work::RelLeaderWrite;
                        self.write(h, Who::Vm(vm), res_off(vm), sector, IO_TIMEOUT);
                    }
                    r => self.tr(|| format!("host {h}: vm{vm} release: leader not freed: {r:?}")),
                }
            }
            Work::RelLeaderWrite => {
                if let IoDone::Write(Err(e)) = r {
                    self.tr(|| format!("host {h}: vm{vm} release: leader write failed {e}"));
                }
            }
            Work::Idle => {}
        }
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
        self.read(h, Who::Agent, &list, IO_TIMEOUT);
    }

    fn agent_io(&mut self, h: usize, r: IoDone) {
        match (self.hosts[h].agent, r) {
            (AgentPhase::Reading, IoDone::Read(Ok(b), _)) => self.agent_decide(h, &b),
            (AgentPhase::Reading, IoDone::Read(Err(_), _)) | (AgentPhase::Writing, _) => {
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
        let w = self.t.watchdog_fire_timeout;
        let me = self.hosts[h].host_id;
        let wb = &b[..(1 + MAX_HOSTS) * SS];
        let mut hosts = Vec::new();
        for i in 0..MAX_HOSTS {
            let id = i as u64 + 1;
            let sector = HostSector::decode(id, &wb[(i + 1) * SS..(i + 2) * SS])
                .expect("only agents write their sectors");
            self.hosts[h].fresh.observe(id, sector.as_ref(), now);
            let hs = &self.hosts[h].table.hosts[i];
            if hs.timestamp == 0 && hs.owner_id == 0 {
                continue;
            }
            let mut state = hs.judge(now, me, w).state;
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
                } else if x.starting[k] || !matches!(x.work[k], Work::Idle) {
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
                    let i = owner as usize - 1;
                    i < MAX_HOSTS
                        && owner != me
                        && x.table.hosts[i].judge(now, me, w).state == HostState::Fail
                        && x.table.hosts[i].owner_generation <= generation
                }
                _ => false,
            })
            .collect();
        let views = hosts.clone();
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
            generation: x.leader.owner_generation,
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
        };
        x.agent = AgentPhase::Writing;
        let data = sector.encode(SS as u32);
        self.write(h, Who::Agent, WB_OFF + me as usize, data, IO_TIMEOUT);
    }
}

impl HaSim {
    // ---- fencing (src/ha/fencing.rs decides, src/ha/fence.rs acts) ----

    /// The fencing decision on the agent's views; a fence started.
    fn fence_decide(&mut self, h: usize, views: &[HostView]) {
        let Some(fcfg) = self.ha.fencing.clone() else {
            return;
        };
        let me = self.hosts[h].host_id;
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
            timestamp: self.hosts[h].table.hosts[victim].timestamp,
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
        self.read(h, Who::Fence, &[(LS_OFF + f.victim, 1)], IO_TIMEOUT);
    }

    fn fence_io(&mut self, h: usize, r: IoDone) {
        let Some(f) = self.hosts[h].fence_busy else {
            return;
        };
        match r {
            IoDone::Read(Ok(b), _) => {
                let id = f.victim as u64 + 1;
                match crate::delta::verify_sector(&b[..SS], &space_name()) {
                    Ok(lr)
                        if lr.owner_id == id
                            && lr.owner_generation == f.generation
                            && lr.timestamp == f.timestamp =>
                    {
                        let (_, sector) = crate::delta::release_sector(&lr, SS);
                        self.write(h, Who::Fence, LS_OFF + f.victim, sector, IO_TIMEOUT);
                    }
                    Ok(lr) => {
                        self.tr(|| {
                            format!(
                                "host {h}: not declaring host {}: lease now {lr:?}",
                                f.victim
                            )
                        });
                        self.fence_end(h, f, false)
                    }
                    Err(_) => self.fence_end(h, f, false),
                }
            }
            IoDone::Write(Ok(())) => {
                self.tr(|| format!("host {h}: DECLARED host {} dead", f.victim));
                self.fence_end(h, f, true)
            }
            IoDone::Read(Err(_), _) | IoDone::Write(Err(_)) => self.fence_end(h, f, false),
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
