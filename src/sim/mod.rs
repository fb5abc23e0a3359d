//! Deterministic simulation of sanlock hosts sharing one disk: the daemon's
//! own delta-lease, Disk Paxos, host-judging and recovery machines, driven
//! by a seeded scheduler over a simulated disk and clocks, with I/O delays,
//! frozen storage, crashes, pauses, clock skew and torn reads injected.
//! See docs/sim.md for the model and its limits.
//!
//! The invariant: never two hosts' processes holding the exclusive lease at
//! the same simulated time, a process holding from its successful acquire
//! until it is really gone (it stopped using the lease, was killed and
//! exited, or its host crashed or was reset by its watchdog).
//!
//! `Sim::run(seed, &cfg)` is a pure function of the seed and the config.

pub mod disk;
pub mod ha;
pub mod rng;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;

use crate::delta::{self, DeltaAcquire, DeltaParams};
use crate::hosts::HostTable;
use crate::ondisk::{LeaderRecord, Name, PaxosDblock};
use crate::paxos::{self, PaxosAcquire, PaxosParams};
use crate::recovery::{Action, Holder, Recovery, RecoveryConfig, Signal};
use crate::rv;
use crate::timeouts::Timeouts;
use disk::{LS_OFF, LS_SECTORS, MAX_HOSTS, RES_OFF, RES_SECTORS, SS, SimDisk};
use rng::Rng;

/// One safety step switched off on purpose: the simulation must then find
/// a violation (the negative checks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Knob {
    /// Everything as sanlock does it.
    #[default]
    None,
    /// Answer "the owner's host_id lease is free" at once: take a held
    /// lease without waiting for its owner to be DEAD.
    TakeoverWithoutDead,
    /// Skip the delta-lease waits (watching a held host_id, and the settle
    /// delay before checking nobody else wrote it).
    SkipDeltaWait,
    /// No watchdog: a host whose daemon is paused, or whose holders cannot
    /// be killed, keeps its holders running past host_dead_seconds.
    NoWatchdog,
    /// On renewal failure drop the lockspace at once (release the host_id,
    /// close the watchdog) without killing the holders first.
    ClearWithoutKill,
    /// Never signal holders (the watchdog alone must then reset the host:
    /// not a violation by itself, shown as such).
    NoKill,
    /// Accept a finished acquire if the lockspace has the same host_id, as
    /// sanlock 3.8.5's `check_new_tokens_space` does, without comparing the
    /// generation: an acquire that outlived its lockspace (failed, cleared,
    /// added again) then hands out a lease in the old generation, which
    /// others may take over at once. A finding, not a step we skip.
    SanlockTokenCheck,
    /// A fault, not a step skipped: a write its issuer gave up on (timed
    /// out) may still land later, after the issuer's newer writes. sanlock
    /// assumes it does not (see docs/sim.md for what this finds).
    LateWrites,
}

impl Knob {
    pub const NEGATIVE: [Knob; 4] = [
        Knob::TakeoverWithoutDead,
        Knob::SkipDeltaWait,
        Knob::NoWatchdog,
        Knob::ClearWithoutKill,
    ];
}

#[derive(Clone, Debug, Default)]
pub struct Config {
    pub knob: Knob,
    /// Record a trace (slower; used to print a violation's replay).
    pub trace: bool,
}

impl Config {
    pub fn with(knob: Knob) -> Self {
        Config { knob, trace: false }
    }

    pub fn with_trace(knob: Knob) -> Self {
        Config { knob, trace: true }
    }
}

/// What happened in one seed (coverage: the faults and paths it went through).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub acquired: u64,
    /// Acquires of a lease whose last owner was another host or instance.
    pub taken_over: u64,
    pub released: u64,
    pub joins: u64,
    pub crashes: u64,
    pub watchdog_resets: u64,
    pub lockspace_failures: u64,
    pub killed: u64,
    pub io_timeouts: u64,
    pub late_writes: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.events += o.events;
        self.acquired += o.acquired;
        self.taken_over += o.taken_over;
        self.released += o.released;
        self.joins += o.joins;
        self.crashes += o.crashes;
        self.watchdog_resets += o.watchdog_resets;
        self.lockspace_failures += o.lockspace_failures;
        self.killed += o.killed;
        self.io_timeouts += o.io_timeouts;
        self.late_writes += o.late_writes;
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub seed: u64,
    /// Simulated milliseconds.
    pub at_ms: u64,
    pub holder: usize,
    pub acquirer: usize,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub violation: Option<Violation>,
    pub stats: Stats,
    pub trace: Vec<String>,
}

/// A process-level step of a host's daemon that waits for I/O or time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Ls,
    Worker,
}

#[derive(Clone, Debug)]
enum IoDone {
    /// `snap`: the sectors as they were when the read was issued.
    Read {
        sector: usize,
        count: usize,
        snap: Result<Vec<u8>, i32>,
    },
    Write(Result<(), i32>),
}

#[derive(Clone, Debug)]
enum Ev {
    // The daemon's own events: held back while it is paused.
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
    ClientWants {
        h: usize,
        boot: u32,
    },
    Rejoin {
        h: usize,
        boot: u32,
    },
    // The lease holder process (not stopped with the daemon).
    HolderDone {
        h: usize,
        boot: u32,
        pid: u32,
    },
    HolderExit {
        h: usize,
        boot: u32,
        pid: u32,
    },
    // Hardware and the world.
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
}

impl Ev {
    fn daemon_host(&self) -> Option<(usize, u32)> {
        match *self {
            Ev::Io { h, boot, .. }
            | Ev::Timer { h, boot, .. }
            | Ev::Main { h, boot, .. }
            | Ev::ClientWants { h, boot }
            | Ev::Rejoin { h, boot } => Some((h, boot)),
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

/// The lockspace thread of a daemon.
#[derive(Clone, Debug)]
enum Ls {
    Down,
    Joining(Box<DeltaAcquire>),
    /// Joined, waiting for the next renewal.
    Idle,
    RenewRead,
    RenewWrite {
        lr: Box<LeaderRecord>,
        area: Vec<u8>,
    },
    /// Writing the released lease on the way out.
    Leaving,
    Stopped,
}

/// The worker thread serving the host's one client.
#[derive(Clone, Debug)]
enum Work {
    Idle,
    Acquiring(Box<PaxosAcquire>),
    /// Reading the owner's delta lease for the acquire.
    OwnerDelta(Box<PaxosAcquire>),
    OwnerDblock(Box<PaxosAcquire>),
    Release(Rel),
}

#[derive(Clone, Copy, Debug)]
enum Rel {
    DblockWrite(LeaderRecord),
    LeaderRead(LeaderRecord),
    LeaderWrite,
}

/// The client process that holds the lease.
#[derive(Clone, Copy, Debug)]
struct Proc {
    pid: u32,
    /// Acquired, and neither finished nor dead.
    holding: bool,
    exiting: bool,
    /// In the kernel (D state): signals do nothing.
    stuck: bool,
    ignores_term: bool,
    lease: (LeaderRecord, PaxosDblock),
}

struct Host {
    host_id: u64,
    boot: u32,
    up: bool,
    clock_off_ms: u64,
    drift_ppm: i64,
    lat_lo: u64,
    lat_hi: u64,
    spike_permille: u64,
    freezes: Vec<(u64, u64)>,
    paused: bool,
    deferred: Vec<Ev>,
    ls: Ls,
    params: DeltaParams,
    leader: LeaderRecord,
    prev_ok: bool,
    last_success: u64,
    corrupt: bool,
    table: HostTable,
    recovery: Recovery,
    main_gen: u32,
    wd_gen: u32,
    wd_armed: bool,
    work: Work,
    proc_: Option<Proc>,
    next_pid: u32,
    stuck_prob: u64,
    ignore_term_prob: u64,
    /// The lockspace is gone for good in this boot (cleared): no rejoin.
    cleared: bool,
}

pub struct Sim {
    seed: u64,
    cfg: Config,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    disk: SimDisk,
    hosts: Vec<Host>,
    t: Timeouts,
    rcfg: RecoveryConfig,
    end: u64,
    holding: [bool; 8],
    /// The last lease acquired was freed on disk by its holder's release.
    freed: bool,
    stats: Stats,
    violation: Option<Violation>,
    trace: Vec<String>,
}

const IO_TIMEOUT: u64 = 1;
const MAX_EVENTS: u64 = 2_000_000;

impl Sim {
    /// Runs one seed to the end (or to the first violation).
    pub fn run(seed: u64, cfg: &Config) -> Outcome {
        let mut s = Sim::new(seed, cfg.clone());
        s.go();
        Outcome {
            seed,
            violation: s.violation,
            stats: s.stats,
            trace: s.trace,
        }
    }

    fn new(seed: u64, cfg: Config) -> Self {
        let mut rng = Rng::new(seed);
        let n = if rng.chance(1, 8) {
            4
        } else {
            2 + rng.below(2) as usize
        };
        // Short watchdogs keep scenarios short; 60 s (sanlock's default) too.
        let w = [3, 5, 10, 20, 60][rng.below(5) as usize];
        let t = Timeouts {
            io_timeout: IO_TIMEOUT,
            watchdog_fire_timeout: w,
        };
        let grace = if rng.chance(1, 2) {
            None
        } else {
            Some(rng.range(0, w + 10))
        };
        let rcfg = RecoveryConfig::new(IO_TIMEOUT, w, grace);
        let dead_ms = t.host_dead_seconds() * 1000;
        let end = 20_000 + rng.below(2 * dead_ms + 40_000);
        // Two hosts configured with the same host_id: what the delta lease's
        // wait exists for.
        let shared_id = n >= 2 && rng.chance(1, 4);
        let mut hosts = Vec::new();
        for i in 0..n {
            let host_id = if shared_id && i == 1 { 1 } else { i as u64 + 1 };
            let lat_lo = rng.range(1, 5);
            let lat_hi = lat_lo + rng.below(60);
            let mut freezes = Vec::new();
            if rng.chance(2, 5) {
                let at = rng.below(end);
                let len = if rng.chance(1, 2) {
                    rng.range(100, 3000)
                } else {
                    rng.range(3000, 2 * dead_ms)
                };
                freezes.push((at, at + len));
            }
            let params = DeltaParams {
                space_name: disk::space_name(),
                host_id,
                our_name: Name::default(),
                io_timeout: IO_TIMEOUT,
                sector_size: SS,
                watchdog_fire_timeout: w,
            };
            hosts.push(Host {
                host_id,
                boot: 0,
                up: true,
                clock_off_ms: rng.below(1_000_000_000),
                drift_ppm: rng.range(0, 20) as i64 - 10,
                lat_lo,
                lat_hi,
                spike_permille: rng.below(30),
                freezes,
                paused: false,
                deferred: Vec::new(),
                ls: Ls::Down,
                params,
                leader: LeaderRecord::default(),
                prev_ok: false,
                last_success: 0,
                corrupt: false,
                table: HostTable::new(MAX_HOSTS, host_id),
                recovery: Recovery::new(rcfg),
                main_gen: 0,
                wd_gen: 0,
                wd_armed: false,
                work: Work::Idle,
                proc_: None,
                next_pid: 100,
                stuck_prob: rng.below(300),
                ignore_term_prob: rng.below(600),
                cleared: false,
            });
        }
        let mut s = Sim {
            seed,
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            disk: SimDisk::formatted(IO_TIMEOUT),
            hosts,
            t,
            rcfg,
            end,
            holding: [false; 8],
            freed: true,
            stats: Stats::default(),
            violation: None,
            trace: Vec::new(),
        };
        for h in 0..n {
            let at = s.rng.below(5000);
            s.push(at, Ev::Rejoin { h, boot: 0 });
            if s.rng.chance(1, 5) {
                let at = s.rng.below(end);
                let len = if s.rng.chance(1, 2) {
                    s.rng.range(100, 5000)
                } else {
                    s.rng.range(5000, 2 * dead_ms)
                };
                s.push(at, Ev::PauseStart { h });
                s.push(at + len, Ev::PauseEnd { h });
            }
            if s.rng.chance(1, 6) {
                let at = s.rng.below(end);
                s.push(at, Ev::Crash { h });
            }
        }
        s
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

    // ---- clocks: each host's CLOCK_MONOTONIC, offset and drifting ----

    fn local_ms(&self, h: usize) -> u64 {
        let x = &self.hosts[h];
        let drift = self.now as i64 * x.drift_ppm / 1_000_000;
        (x.clock_off_ms as i64 + self.now as i64 + drift) as u64
    }

    fn monotime(&self, h: usize) -> u64 {
        self.local_ms(h) / 1000
    }

    /// Real time after `ms` of host h's clock.
    fn after_local(&self, h: usize, ms: u64) -> u64 {
        let rate = 1_000_000 + self.hosts[h].drift_ppm;
        self.now + (ms * 1_000_000).div_ceil(rate as u64)
    }

    /// Real time at which host h's clock reads `local` ms (now if passed).
    fn at_local(&self, h: usize, local: u64) -> u64 {
        self.after_local(h, local.saturating_sub(self.local_ms(h)))
    }

    fn timer(&mut self, h: usize, who: Who, ms: u64) {
        let at = self.after_local(h, ms);
        let boot = self.hosts[h].boot;
        self.push(at, Ev::Timer { h, boot, who });
    }

    // ---- I/O ----

    /// When an I/O issued now by h completes, and whether its storage path
    /// is frozen (never completing until the freeze ends).
    fn io_completion(&mut self, h: usize) -> u64 {
        let x = &self.hosts[h];
        let (lo, hi, spike) = (x.lat_lo, x.lat_hi, x.spike_permille);
        let mut lat = self.rng.range(lo, hi);
        if self.rng.below(1000) < spike {
            lat += self.rng.range(500, 3000);
        }
        let mut at = self.now + lat;
        for &(fs, fe) in &self.hosts[h].freezes {
            if self.now < fe && at > fs {
                at = at.max(fe + lat);
            }
        }
        at
    }

    fn read(&mut self, h: usize, who: Who, sector: usize, count: usize, timeout_s: u64) {
        let done = self.io_completion(h);
        let boot = self.hosts[h].boot;
        let deadline = self.after_local(h, timeout_s * 1000);
        if done > deadline {
            self.stats.io_timeouts += 1;
            let r = IoDone::Read {
                sector,
                count,
                snap: Err(rv::SANLK_AIO_TIMEOUT),
            };
            self.push(deadline, Ev::Io { h, boot, who, r });
            return;
        }
        // Each sector as it was at the start or at the end of the read.
        let snap = Ok(self.disk.read(sector, count));
        let r = IoDone::Read {
            sector,
            count,
            snap,
        };
        self.push(done, Ev::Io { h, boot, who, r });
    }

    fn write(&mut self, h: usize, who: Who, sector: usize, data: Vec<u8>, timeout_s: u64) {
        let done = self.io_completion(h);
        let boot = self.hosts[h].boot;
        let deadline = self.after_local(h, timeout_s * 1000);
        let timed_out = done > deadline;
        // An abandoned write never lands, except in the LateWrites model.
        let late = self.rng.chance(1, 2) && self.cfg.knob == Knob::LateWrites;
        if !timed_out || late {
            if timed_out {
                self.stats.late_writes += 1;
            }
            self.push(done, Ev::Land { sector, data });
        }
        let (at, r) = if timed_out {
            self.stats.io_timeouts += 1;
            (deadline, IoDone::Write(Err(rv::SANLK_AIO_TIMEOUT)))
        } else {
            (done, IoDone::Write(Ok(())))
        };
        self.push(at, Ev::Io { h, boot, who, r });
    }

    fn read_result(&mut self, sector: usize, snap: Result<Vec<u8>, i32>) -> Result<Vec<u8>, i32> {
        let mut out = snap?;
        let count = out.len() / SS;
        for i in 0..count {
            if count == 1 || self.rng.chance(1, 2) {
                let s = sector + i;
                out[i * SS..(i + 1) * SS].copy_from_slice(&self.disk.bytes[s * SS..(s + 1) * SS]);
            }
        }
        Ok(out)
    }

    // ---- the invariant ----

    fn hold(&mut self, h: usize) {
        if let Some(other) = (0..self.hosts.len()).find(|&o| o != h && self.holding[o])
            && self.violation.is_none()
        {
            self.violation = Some(Violation {
                seed: self.seed,
                at_ms: self.now,
                holder: other,
                acquirer: h,
            });
            self.tr(|| format!("VIOLATION: host {h} acquired while host {other} holds"));
        }
        self.holding[h] = true;
    }

    fn unhold(&mut self, h: usize) {
        self.holding[h] = false;
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
                "seed {}: runaway simulation",
                self.seed
            );
            if let Some((h, boot)) = q.ev.daemon_host() {
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
                Who::Worker => self.work_io(h, r),
            },
            Ev::Timer { h, who, .. } => match who {
                Who::Ls => self.ls_timer(h),
                Who::Worker => self.work_timer(h),
            },
            Ev::Main { h, tick, .. } => {
                if tick == self.hosts[h].main_gen {
                    self.main_check(h)
                }
            }
            Ev::ClientWants { h, .. } => self.client_wants(h),
            Ev::Rejoin { h, .. } => self.join(h),
            Ev::HolderDone { h, boot, pid } => {
                if boot == self.hosts[h].boot && self.hosts[h].up {
                    self.holder_done(h, pid)
                }
            }
            Ev::HolderExit { h, boot, pid } => {
                if boot == self.hosts[h].boot && self.hosts[h].up {
                    self.holder_exit(h, pid)
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
            Ev::Land { sector, data } => self.disk.write_sector(sector, &data),
            Ev::Crash { h } => {
                if self.hosts[h].up {
                    self.stats.crashes += 1;
                    self.tr(|| format!("host {h}: crash"));
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
                    self.tr(|| format!("host {h}: daemon paused"));
                    self.hosts[h].paused = true;
                }
            }
            Ev::PauseEnd { h } => {
                if self.hosts[h].paused {
                    self.tr(|| format!("host {h}: daemon resumed"));
                    self.hosts[h].paused = false;
                    let evs = std::mem::take(&mut self.hosts[h].deferred);
                    for ev in evs {
                        self.push(self.now, ev);
                    }
                }
            }
        }
    }

    /// Crash or watchdog reset: the host holds nothing from now on.
    fn host_down(&mut self, h: usize) {
        self.unhold(h);
        let restart = self.rng.chance(3, 5);
        let delay = self.rng.range(1000, 30_000);
        let x = &mut self.hosts[h];
        x.up = false;
        x.paused = false;
        x.deferred.clear();
        x.boot += 1;
        x.ls = Ls::Down;
        x.work = Work::Idle;
        x.proc_ = None;
        x.wd_armed = false;
        x.cleared = false;
        x.recovery = Recovery::new(self.rcfg);
        x.table = HostTable::new(MAX_HOSTS, x.host_id);
        // A reboot may be seen by others as a new clock.
        x.clock_off_ms = x.clock_off_ms.wrapping_add(delay * 7) % 1_000_000_000;
        if restart {
            self.push(self.now + delay, Ev::Restart { h });
        }
    }

    // ---- the lockspace thread ----

    fn join(&mut self, h: usize) {
        let x = &mut self.hosts[h];
        if !matches!(x.ls, Ls::Down | Ls::Stopped) {
            return;
        }
        // A new daemon (boot) has a new random host name, as sanlock's.
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

    fn delta_step(&mut self, h: usize, step: delta::Step) {
        let slot = LS_OFF + self.hosts[h].host_id as usize - 1;
        match step {
            delta::Step::Read => self.read(h, Who::Ls, slot, 1, IO_TIMEOUT),
            delta::Step::Write(s) => self.write(h, Who::Ls, slot, s, IO_TIMEOUT),
            delta::Step::Sleep(secs) => {
                let secs = if self.cfg.knob == Knob::SkipDeltaWait {
                    0
                } else {
                    secs
                };
                self.timer(h, Who::Ls, secs * 1000)
            }
            delta::Step::Done(Ok(lr)) => {
                self.stats.joins += 1;
                let x = &mut self.hosts[h];
                x.leader = lr;
                x.prev_ok = true;
                x.last_success = lr.timestamp;
                x.ls = Ls::Idle;
                self.tr(|| {
                    format!(
                        "host {h}: joined as host_id {} gen {}",
                        lr.owner_id, lr.owner_generation
                    )
                });
                self.arm_watchdog(h);
                self.schedule_renewal(h);
                self.schedule_main(h);
                let boot = self.hosts[h].boot;
                let at = self.now + self.rng.range(0, 5000);
                self.push(at, Ev::ClientWants { h, boot });
            }
            delta::Step::Done(Err(e)) => {
                self.tr(|| format!("host {h}: join failed {e}"));
                self.hosts[h].ls = Ls::Down;
                let boot = self.hosts[h].boot;
                let at = self.now + self.rng.range(1000, 10_000);
                self.push(at, Ev::Rejoin { h, boot });
            }
        }
    }

    fn arm_watchdog(&mut self, h: usize) {
        if self.cfg.knob == Knob::NoWatchdog {
            return;
        }
        let fire = self.rcfg.watchdog_fire(self.hosts[h].last_success);
        let at = self.at_local(h, fire * 1000);
        let x = &mut self.hosts[h];
        x.wd_armed = true;
        x.wd_gen += 1;
        let (boot, tick) = (x.boot, x.wd_gen);
        self.push(at, Ev::Watchdog { h, boot, tick });
    }

    fn schedule_renewal(&mut self, h: usize) {
        // sanlock polls each second and renews 500 ms after 2T have passed.
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
                self.read(h, Who::Ls, LS_OFF, LS_SECTORS, IO_TIMEOUT);
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
                    IoDone::Read { sector, snap, .. } => {
                        delta::Input::ReadDone(self.read_result(sector, snap))
                    }
                    IoDone::Write(r) => delta::Input::WriteDone(r),
                };
                let step = acq.step(now, input);
                self.hosts[h].ls = Ls::Joining(acq);
                self.delta_step(h, step);
            }
            Ls::RenewRead => match r {
                IoDone::Read {
                    sector,
                    snap: snap @ Ok(_),
                    ..
                } => {
                    let area = self.read_result(sector, snap).expect("read ok");
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
                            self.hosts[h].ls = Ls::RenewWrite {
                                lr: Box::new(lr),
                                area,
                            };
                            let dead = self.t.host_dead_seconds();
                            let slot = LS_OFF + self.hosts[h].host_id as usize - 1;
                            self.write(h, Who::Ls, slot, sector, dead);
                        }
                        Err(e) => {
                            self.tr(|| format!("host {h}: renewal refused {e}"));
                            self.observe(h, &area);
                            self.renewal_failed(h, e != rv::SANLK_AIO_TIMEOUT);
                        }
                    }
                }
                _ => self.renewal_failed(h, false),
            },
            Ls::RenewWrite { lr, area } => {
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
        let name = disk::space_name();
        self.hosts[h].table.observe(now, area, SS, &name);
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
        // Only the first time: rescheduling at each failed retry would keep
        // pushing the main loop's check away.
        if newly_corrupt {
            self.schedule_main(h);
        }
        // sanlock retries 500 ms later (it is past its renewal time).
        let ms = 500 + self.rng.below(500);
        self.timer(h, Who::Ls, ms);
    }

    /// The main loop's next check, at the first tick that can matter.
    fn schedule_main(&mut self, h: usize) {
        let local_now = self.local_ms(h);
        let x = &mut self.hosts[h];
        x.main_gen += 1;
        let (boot, tick) = (x.boot, x.main_gen);
        let local = if x.recovery.space_dead() || x.corrupt {
            local_now + x.recovery.next_check_ms()
        } else {
            // Nothing happens before the fail time; sanlock's 1 s ticks
            // have a phase of their own.
            let fail = x.recovery.fail_time(x.last_success) * 1000;
            fail.max(local_now) + self.rng.below(1000)
        };
        let at = self.at_local(h, local);
        self.push(at, Ev::Main { h, boot, tick });
    }

    fn main_check(&mut self, h: usize) {
        if !matches!(
            self.hosts[h].ls,
            Ls::Idle | Ls::RenewRead | Ls::RenewWrite { .. }
        ) {
            return;
        }
        let now = self.monotime(h);
        let holders: Vec<Holder> = self.hosts[h]
            .proc_
            .iter()
            .filter(|p| p.holding)
            .map(|p| Holder::plain(p.pid))
            .collect();
        let x = &mut self.hosts[h];
        let actions = x
            .recovery
            .check(now, x.last_success, x.corrupt, false, &holders);
        for a in actions {
            match a {
                Action::LockspaceFailed { corrupt, gap } => {
                    self.stats.lockspace_failures += 1;
                    self.tr(|| format!("host {h}: lockspace failed (corrupt {corrupt}, gap {gap}s), killing holders"));
                    if self.cfg.knob == Knob::ClearWithoutKill {
                        self.clear_lockspace(h);
                        return;
                    }
                }
                Action::Signal { pid, signal } => {
                    if self.cfg.knob != Knob::NoKill {
                        self.signal(h, pid, signal)
                    }
                }
                Action::Stuck { pid } => self.tr(|| format!("host {h}: pid {pid} stuck")),
                Action::AllClear => {
                    self.clear_lockspace(h);
                    return;
                }
            }
        }
        if self.hosts[h].recovery.space_dead() {
            let ms = self.hosts[h].recovery.next_check_ms();
            let x = &mut self.hosts[h];
            x.main_gen += 1;
            let (boot, tick) = (x.boot, x.main_gen);
            let at = self.after_local(h, ms);
            self.push(at, Ev::Main { h, boot, tick });
        } else {
            self.schedule_main(h);
        }
    }

    /// All holders gone: close the watchdog and stop the lockspace thread,
    /// which releases the host_id if its last renewal succeeded.
    fn clear_lockspace(&mut self, h: usize) {
        self.tr(|| format!("host {h}: all clear, leaving the lockspace"));
        let x = &mut self.hosts[h];
        x.wd_armed = false;
        x.cleared = true;
        x.main_gen += 1;
        self.stop_lockspace_if_cleared(h);
    }

    fn stop_lockspace_if_cleared(&mut self, h: usize) {
        let x = &mut self.hosts[h];
        if !x.cleared || !matches!(x.ls, Ls::Idle) {
            // an I/O in flight: its completion comes back here
            return;
        }
        if x.prev_ok {
            let (_, sector) = delta::release_sector(&x.leader, SS);
            x.ls = Ls::Leaving;
            let slot = LS_OFF + x.host_id as usize - 1;
            self.write(h, Who::Ls, slot, sector, IO_TIMEOUT);
        } else {
            x.ls = Ls::Stopped;
            self.after_stop(h);
        }
    }

    fn after_stop(&mut self, h: usize) {
        // The daemon lives on and may add the lockspace again later.
        if self.rng.chance(1, 2) {
            let boot = self.hosts[h].boot;
            let at = self.now + self.rng.range(1000, 10_000);
            self.push(at, Ev::Rejoin { h, boot });
        }
    }

    // ---- the holder process ----

    fn signal(&mut self, h: usize, pid: u32, sig: Signal) {
        let Some(p) = self.hosts[h].proc_.as_mut().filter(|p| p.pid == pid) else {
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
        self.tr(|| format!("host {h}: {sig:?} to pid {pid}"));
        self.push(self.now + ms, Ev::HolderExit { h, boot, pid });
    }

    fn holder_done(&mut self, h: usize, pid: u32) {
        let Some(p) = self.hosts[h].proc_.filter(|p| p.pid == pid && p.holding) else {
            return;
        };
        if p.exiting {
            return;
        }
        // The process stops using the resource, then asks for the release.
        self.tr(|| format!("host {h}: pid {pid} done with the lease"));
        self.unhold(h);
        self.hosts[h].proc_ = None;
        self.stats.released += 1;
        self.daemon_release(h, p.lease);
    }

    fn holder_exit(&mut self, h: usize, pid: u32) {
        let Some(p) = self.hosts[h].proc_.filter(|p| p.pid == pid) else {
            return;
        };
        self.tr(|| format!("host {h}: pid {pid} exited"));
        if p.holding {
            self.unhold(h);
        }
        self.hosts[h].proc_ = None;
        // The daemon sees the connection close; a failed lockspace's leases
        // are left on disk (others wait for this host to be dead).
        if p.holding && !self.hosts[h].recovery.space_dead() {
            self.daemon_release(h, p.lease);
        }
    }

    fn client_wants(&mut self, h: usize) {
        let x = &self.hosts[h];
        if x.proc_.is_some()
            || !matches!(x.work, Work::Idle)
            || !matches!(x.ls, Ls::Idle | Ls::RenewRead | Ls::RenewWrite { .. })
            || x.recovery.space_dead()
        {
            return;
        }
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
            names: Some((disk::space_name(), disk::resource_name())),
        };
        let mut m = PaxosAcquire::new(p);
        let now = self.monotime(h);
        let step = m.step(now, paxos::Input::Start);
        self.paxos_step(h, m, step);
    }

    fn retry_client(&mut self, h: usize, lo: u64, hi: u64) {
        let boot = self.hosts[h].boot;
        let at = self.now + self.rng.range(lo, hi);
        self.push(at, Ev::ClientWants { h, boot });
    }

    // ---- the worker: acquire and release ----

    fn paxos_step(&mut self, h: usize, mut m: PaxosAcquire, mut step: paxos::Step) {
        loop {
            let hid = self.hosts[h].host_id as usize;
            match step {
                paxos::Step::ReadArea => {
                    self.read(h, Who::Worker, RES_OFF, RES_SECTORS, IO_TIMEOUT);
                }
                paxos::Step::ReadLeader => self.read(h, Who::Worker, RES_OFF, 1, IO_TIMEOUT),
                paxos::Step::HostInfo { owner_id } => {
                    let hs = self.hosts[h]
                        .table
                        .hosts
                        .get((owner_id as usize).wrapping_sub(1))
                        .cloned();
                    let now = self.monotime(h);
                    self.tr(|| {
                        format!("host {h}: owner {owner_id} as we saw it: {hs:?} (now {now})")
                    });
                    step = m.step(now, paxos::Input::HostInfo(hs));
                    continue;
                }
                paxos::Step::ReadOwnerDelta { owner_id } => {
                    if self.cfg.knob == Knob::TakeoverWithoutDead {
                        let now = self.monotime(h);
                        let free = LeaderRecord::default();
                        step = m.step(now, paxos::Input::OwnerDelta(Ok(free)));
                        continue;
                    }
                    let slot = LS_OFF + owner_id as usize - 1;
                    self.hosts[h].work = Work::OwnerDelta(Box::new(m));
                    self.read(h, Who::Worker, slot, 1, IO_TIMEOUT);
                    return;
                }
                paxos::Step::ReadDblock { host_id } => {
                    self.hosts[h].work = Work::OwnerDblock(Box::new(m));
                    self.read(
                        h,
                        Who::Worker,
                        RES_OFF + 1 + host_id as usize,
                        1,
                        IO_TIMEOUT,
                    );
                    return;
                }
                paxos::Step::WriteDblock(s) => {
                    self.write(h, Who::Worker, RES_OFF + 1 + hid, s, IO_TIMEOUT)
                }
                paxos::Step::WriteLeader(s) => self.write(h, Who::Worker, RES_OFF, s, IO_TIMEOUT),
                paxos::Step::Sleep(d) => {
                    let ms = d.as_millis() as u64;
                    self.timer(h, Who::Worker, ms)
                }
                paxos::Step::Done(r) => {
                    self.hosts[h].work = Work::Idle;
                    self.acquired(h, r);
                    return;
                }
            }
            self.hosts[h].work = Work::Acquiring(Box::new(m));
            return;
        }
    }

    fn acquired(&mut self, h: usize, r: paxos::Outcome) {
        match r {
            Ok((lr, d)) => {
                let x = &self.hosts[h];
                let same_instance = lr.owner_generation == x.leader.owner_generation
                    || self.cfg.knob == Knob::SanlockTokenCheck;
                if x.recovery.space_dead()
                    || !same_instance
                    || !matches!(x.ls, Ls::Idle | Ls::RenewRead | Ls::RenewWrite { .. })
                {
                    // A lease acquired for a lockspace that failed meanwhile
                    // (or was left and joined again: a new generation) is not
                    // handed out; it stays ours on disk until we are DEAD.
                    self.tr(|| format!("host {h}: acquired lver {} but lockspace failed", lr.lver));
                    return;
                }
                self.stats.acquired += 1;
                if !self.freed {
                    self.stats.taken_over += 1;
                }
                self.freed = false;
                self.tr(|| {
                    format!(
                        "host {h}: acquired lver {} gen {}",
                        lr.lver, lr.owner_generation
                    )
                });
                let x = &mut self.hosts[h];
                let pid = x.next_pid;
                x.next_pid += 1;
                let stuck = self.rng.below(1000) < x.stuck_prob;
                let ignores_term = self.rng.below(1000) < x.ignore_term_prob;
                self.hosts[h].proc_ = Some(Proc {
                    pid,
                    holding: true,
                    exiting: false,
                    stuck,
                    ignores_term,
                    lease: (lr, d),
                });
                self.hold(h);
                let boot = self.hosts[h].boot;
                let at = self.now + self.rng.range(200, 20_000);
                self.push(at, Ev::HolderDone { h, boot, pid });
            }
            Err(e) => {
                self.tr(|| format!("host {h}: acquire failed {e}"));
                self.retry_client(h, 500, 5000);
            }
        }
    }

    /// `release`: our dblock marked released, then the leader freed if we
    /// still own it.
    fn daemon_release(&mut self, h: usize, lease: (LeaderRecord, PaxosDblock)) {
        if !matches!(self.hosts[h].work, Work::Idle) {
            // one worker: drop it (the lease stays ours on disk, which only
            // makes others wait)
            return;
        }
        let hid = self.hosts[h].host_id as usize;
        let sector = paxos::released_dblock_sector(&lease.1, SS);
        self.hosts[h].work = Work::Release(Rel::DblockWrite(lease.0));
        self.write(h, Who::Worker, RES_OFF + 1 + hid, sector, IO_TIMEOUT);
    }

    fn work_timer(&mut self, h: usize) {
        let w = std::mem::replace(&mut self.hosts[h].work, Work::Idle);
        if let Work::Acquiring(mut m) = w {
            let now = self.monotime(h);
            let step = m.step(now, paxos::Input::Slept);
            self.paxos_step(h, *m, step);
        } else {
            self.hosts[h].work = w;
        }
    }

    fn work_io(&mut self, h: usize, r: IoDone) {
        let w = std::mem::replace(&mut self.hosts[h].work, Work::Idle);
        let now = self.monotime(h);
        let (data, count) = match r {
            IoDone::Read {
                sector,
                count,
                snap,
            } => (self.read_result(sector, snap).map(Some), count),
            IoDone::Write(r) => (r.map(|()| None), 0),
        };
        match w {
            Work::Acquiring(mut m) => {
                let input = match data {
                    Ok(None) | Err(_) if count == 0 => paxos::Input::Written(data.map(|_| ())),
                    r if count > 1 => paxos::Input::Area(r.map(Option::unwrap_or_default)),
                    r => paxos::Input::Leader(r.map(Option::unwrap_or_default)),
                };
                let step = m.step(now, input);
                self.paxos_step(h, *m, step);
            }
            Work::OwnerDelta(mut m) => {
                let r = data.and_then(|b| {
                    delta::verify_sector(&b.unwrap_or_default(), &disk::space_name())
                });
                self.tr(|| match &r {
                    Ok(d) => format!(
                        "host {h}: owner's delta: host_id {} gen {} ts {}",
                        d.owner_id, d.owner_generation, d.timestamp
                    ),
                    Err(e) => format!("host {h}: owner's delta: {e}"),
                });
                let step = m.step(now, paxos::Input::OwnerDelta(r));
                self.paxos_step(h, *m, step);
            }
            Work::OwnerDblock(mut m) => {
                let r = data.map(|b| {
                    PaxosDblock::decode(&b.unwrap_or_default()).expect("a sector holds a dblock")
                });
                self.tr(|| format!("host {h}: owner's dblock: {r:?}"));
                let step = m.step(now, paxos::Input::Dblock(r));
                self.paxos_step(h, *m, step);
            }
            Work::Release(rel) => self.release_io(h, rel, data),
            Work::Idle => {}
        }
    }

    fn release_io(&mut self, h: usize, rel: Rel, data: Result<Option<Vec<u8>>, i32>) {
        match rel {
            Rel::DblockWrite(last) => {
                // sanlock goes on to the leader even if this write failed.
                self.hosts[h].work = Work::Release(Rel::LeaderRead(last));
                self.read(h, Who::Worker, RES_OFF, 1, IO_TIMEOUT);
            }
            Rel::LeaderRead(last) => {
                let Ok(Some(b)) = data else {
                    return self.release_done(h);
                };
                let Ok(now_leader) = LeaderRecord::decode(&b) else {
                    return self.release_done(h);
                };
                let x = &self.hosts[h];
                let now = self.monotime(h);
                match paxos::release_leader(
                    &now_leader,
                    &last,
                    x.host_id,
                    x.leader.owner_generation,
                    now,
                    SS,
                ) {
                    Ok(Some((_, sector))) => {
                        self.freed = true;
                        self.hosts[h].work = Work::Release(Rel::LeaderWrite);
                        self.write(h, Who::Worker, RES_OFF, sector, IO_TIMEOUT);
                    }
                    _ => self.release_done(h),
                }
            }
            Rel::LeaderWrite => self.release_done(h),
        }
    }

    fn release_done(&mut self, h: usize) {
        self.hosts[h].work = Work::Idle;
        self.retry_client(h, 500, 10_000);
    }
}

/// Formats an outcome's violation for a test failure or the tool.
pub fn report(o: &Outcome, knob: Knob) -> String {
    let mut s = String::new();
    if let Some(v) = &o.violation {
        let _ = writeln!(
            s,
            "violation with knob {knob:?}: seed {} at {} ms: host {} acquired the lease while host {} held it",
            v.seed, v.at_ms, v.acquirer, v.holder
        );
        let _ = writeln!(
            s,
            "replay: Sim::run({}, &Config {{ knob: Knob::{knob:?}, trace: true }})",
            v.seed
        );
        let tr = Sim::run(o.seed, &Config { knob, trace: true });
        let from = tr.trace.len().saturating_sub(40);
        for l in &tr.trace[from..] {
            let _ = writeln!(s, "  {l}");
        }
    }
    s
}

/// The result of many seeds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    pub stats: Stats,
    /// The first violations found (at most 10), lowest seed first.
    pub violations: Vec<Outcome>,
    pub violation_count: u64,
    pub elapsed: std::time::Duration,
}

impl Summary {
    pub fn seeds_per_second(&self) -> f64 {
        self.seeds as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs seeds `first..first + count` on `threads` threads. With
/// `stop_at_first`, each thread stops after a violation (for the negative
/// checks: how many seeds it takes).
pub fn run_many(
    first: u64,
    count: u64,
    knob: Knob,
    threads: usize,
    stop_at_first: bool,
) -> Summary {
    let start = std::time::Instant::now();
    let threads = threads.max(1) as u64;
    let cfg = Config { knob, trace: false };
    let next = std::sync::atomic::AtomicU64::new(first);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let end = first + count;
    let parts: Vec<Summary> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let (cfg, next, stop) = (&cfg, &next, &stop);
                sc.spawn(move || {
                    use std::sync::atomic::Ordering::Relaxed;
                    let mut sum = Summary::default();
                    // Seeds are handed out in chunks so that threads share
                    // the work evenly whatever each seed costs.
                    while !stop.load(Relaxed) {
                        let from = next.fetch_add(256, Relaxed);
                        if from >= end {
                            break;
                        }
                        for seed in from..(from + 256).min(end) {
                            let o = Sim::run(seed, cfg);
                            sum.seeds += 1;
                            sum.stats.add(&o.stats);
                            if o.violation.is_some() {
                                sum.violation_count += 1;
                                if sum.violations.len() < 10 {
                                    sum.violations.push(o);
                                }
                                if stop_at_first {
                                    stop.store(true, Relaxed);
                                    break;
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
    let mut total = Summary::default();
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
