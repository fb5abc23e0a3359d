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
pub mod node;
pub mod rng;
pub mod sched;

use std::fmt::Write as _;

use crate::daemon::core::resource::{AcquireParams, Acquired, Held, LeaseRef};
use crate::daemon::core::{CoreError, Id, Io, IoFailure, IoOp, IoResult, Knobs, Now, Storage};
use crate::ondisk::{LeaderRecord, Name, PaxosDblock};
use crate::recovery::{Holder, Signal};
use crate::rv;
use crate::timeouts::Timeouts;
use disk::{LS_OFF, Landing, RES_OFF, SS, SimDisk};
use node::{Node, NodeConfig, Req, Who};
use rng::Rng;
use sched::Sched;

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
    /// Hand out a lease whose ballot committed our host_id with another
    /// generation, as sanlock 3.8.5's `paxos_lease_acquire` does: a value
    /// of our previous lockspace instance, adopted from another host's
    /// dblock after the lockspace was joined again, commits an owner that
    /// others see replaced by a newer generation, and they take the lease
    /// at once. A finding, like `SanlockTokenCheck`.
    SanlockCommitCheck,
    /// A fault, not a step skipped: a write its issuer gave up on (timed
    /// out) may still land later, after the issuer's newer writes. sanlock
    /// assumes it does not (see docs/sim.md for what this finds).
    LateWrites,
    /// Readers take a sector whose checksum does not match (a torn write)
    /// at its word: leaders, dblocks and delta leases are used as decoded,
    /// where sanlock refuses them (a leader, the owner's delta lease, the
    /// first read of an acquire) or skips them (a ballot's dblocks).
    TrustBadChecksum,
    /// An acquire of a lease this host freed last, finding the leader as
    /// it left it, skips phase 1 and proposes itself at once (the last
    /// owner as Multi-Paxos's distinguished proposer). Another host's
    /// ballot for the same lver, chosen meanwhile with a lower ballot
    /// number, is then overridden: two owners. The warm path keeps both
    /// phases and reads only the leader first.
    WarmSkipsPhase1,
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
    /// I/Os failed with EIO by a flaky storage path.
    pub io_errors: u64,
    /// Interrupted writes (crash or EIO) that left a torn sector.
    pub torn_writes: u64,
    /// Acquires refused because a leader or dblock had a bad checksum.
    pub checksum_refusals: u64,
    /// Acquires whose ballot started warm: the host had freed the lease
    /// last and found its leader unchanged (no first area read).
    pub warm_acquires: u64,
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
        self.io_errors += o.io_errors;
        self.torn_writes += o.torn_writes;
        self.checksum_refusals += o.checksum_refusals;
        self.warm_acquires += o.warm_acquires;
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

#[derive(Clone, Debug)]
enum IoDone {
    /// `snap`: the sectors as they were when the read was issued.
    Read {
        io: Io,
        snap: IoResult,
    },
    Write(IoResult),
}

#[derive(Clone, Debug)]
enum Ev {
    // The daemon's own events: held back while it is paused.
    Io {
        h: usize,
        boot: u32,
        who: Who,
        id: Id,
        r: Box<IoDone>,
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
    /// A write reaching the disk, whole or (`Some`) as an interrupted one;
    /// only if it is still in flight (a crash lands it earlier).
    Land {
        h: usize,
        id: u64,
        landing: Option<Landing>,
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

/// The client process that holds the lease.
#[derive(Clone, Debug)]
struct Proc {
    pid: u32,
    /// Acquired, and neither finished nor dead.
    holding: bool,
    exiting: bool,
    /// In the kernel (D state): signals do nothing.
    stuck: bool,
    ignores_term: bool,
    lease: Acquired,
}

struct Host {
    /// The daemon: the daemon's own core, executed by this simulation.
    node: Node,
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
    wd_gen: u32,
    wd_armed: bool,
    proc_: Option<Proc>,
    next_pid: u32,
    stuck_prob: u64,
    ignore_term_prob: u64,
    /// Writes issued and not landed yet: (id, first sector, the write).
    inflight: Vec<(u64, usize, Io)>,
    /// The host crashes while its n-th write is in flight (0: never).
    crash_in_write: u64,
    writes: u64,
    /// A window in which its storage path fails a third of the I/Os with
    /// EIO; a failed write may still have landed, whole or torn.
    flaky: Option<(u64, u64)>,
}

pub struct Sim {
    seed: u64,
    cfg: Config,
    rng: Rng,
    now: u64,
    queue: Sched<Ev>,
    disk: SimDisk,
    hosts: Vec<Host>,
    t: Timeouts,
    end: u64,
    holding: [bool; 8],
    /// The last lease acquired was freed on disk by its holder's release.
    freed: bool,
    stats: Stats,
    violation: Option<Violation>,
    trace: Vec<String>,
    /// The torn-write faults' own randomness, apart from `rng`: a seed
    /// without those faults runs as it did before they were modelled.
    rng2: Rng,
    next_write: u64,
}

/// What a failed I/O returns (-EIO).
const EIO: i32 = -5;

const IO_TIMEOUT: u64 = 1;
const MAX_EVENTS: u64 = 2_000_000;
/// The one client of each host asks through worker slot 0.
const WORKER: usize = 0;

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
        let node_cfg = NodeConfig {
            space_name: disk::space_name(),
            io_timeout: IO_TIMEOUT,
            watchdog_fire_timeout: w,
            kill_grace_seconds: grace,
            layout: disk::lockspace_layout(),
            knobs: Knobs {
                skip_delta_wait: cfg.knob == Knob::SkipDeltaWait,
                clear_without_kill: cfg.knob == Knob::ClearWithoutKill,
                ..Knobs::default()
            },
        };
        let dead_ms = t.host_dead_seconds() * 1000;
        let end = 20_000 + rng.below(2 * dead_ms + 40_000);
        // Two hosts configured with the same host_id: what the delta lease's
        // wait exists for.
        let shared_id = n >= 2 && rng.chance(1, 4);
        let mut rng2 = Rng::new(seed ^ 0x7465_6172_5f77_7269);
        let mut hosts = Vec::new();
        for i in 0..n {
            let crash_in_write = if rng2.chance(1, 6) {
                rng2.range(1, 60)
            } else {
                0
            };
            let flaky = rng2.chance(1, 4).then(|| {
                let at = rng2.below(end);
                (at, at + rng2.range(200, 10_000))
            });
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
            hosts.push(Host {
                node: Node::new(host_id, node_cfg.clone(), 1),
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
                wd_gen: 0,
                wd_armed: false,
                proc_: None,
                next_pid: 100,
                stuck_prob: rng.below(300),
                ignore_term_prob: rng.below(600),
                inflight: Vec::new(),
                crash_in_write,
                writes: 0,
                flaky,
            });
        }
        let mut s = Sim {
            seed,
            cfg,
            rng,
            now: 0,
            queue: Sched::default(),
            disk: SimDisk::formatted(IO_TIMEOUT),
            hosts,
            t,
            end,
            holding: [false; 8],
            freed: true,
            stats: Stats::default(),
            violation: None,
            trace: Vec::new(),
            rng2,
            next_write: 0,
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
        self.queue.push(at, ev);
    }

    // ---- clocks: each host's CLOCK_MONOTONIC, offset and drifting ----

    fn local_ms(&self, h: usize) -> u64 {
        let x = &self.hosts[h];
        let drift = self.now as i64 * x.drift_ppm / 1_000_000;
        (x.clock_off_ms as i64 + self.now as i64 + drift) as u64
    }

    fn clock(&self, h: usize) -> Now {
        Now::at_ms(self.local_ms(h))
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

    // ---- the world carrying out what a host's daemon asks ----

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
                // sanlock's 1 s ticks have a phase of their own.
                let local = if at_ms > self.local_ms(h) {
                    at_ms + self.rng.below(1000)
                } else {
                    at_ms
                };
                let at = self.at_local(h, local);
                self.push(at, Ev::Main { h, boot, tick });
            }
            Req::WatchdogArm { fire_ms } => {
                if self.cfg.knob == Knob::NoWatchdog {
                    return;
                }
                let at = self.at_local(h, fire_ms);
                let x = &mut self.hosts[h];
                x.wd_armed = true;
                x.wd_gen += 1;
                let tick = x.wd_gen;
                self.push(at, Ev::Watchdog { h, boot, tick });
            }
            Req::WatchdogClose => self.hosts[h].wd_armed = false,
            Req::Signal { pid, signal } => {
                if self.cfg.knob != Knob::NoKill {
                    self.signal(h, pid, signal)
                }
            }
            Req::Stuck { pid } => self.tr(|| format!("host {h}: pid {pid} stuck")),
            Req::Joined(Ok(lr)) => {
                self.stats.joins += 1;
                self.tr(|| {
                    format!(
                        "host {h}: joined as host_id {} gen {}",
                        lr.owner_id, lr.owner_generation
                    )
                });
                let at = self.now + self.rng.range(0, 5000);
                self.push(at, Ev::ClientWants { h, boot });
            }
            Req::Joined(Err(e)) => {
                self.tr(|| format!("host {h}: join failed {e}"));
                let at = self.now + self.rng.range(1000, 10_000);
                self.push(at, Ev::Rejoin { h, boot });
            }
            Req::Failed { corrupt, gap } => {
                self.stats.lockspace_failures += 1;
                self.tr(|| {
                    format!("host {h}: lockspace failed (corrupt {corrupt}, gap {gap}s), killing holders")
                });
            }
            Req::AllClear => self.tr(|| format!("host {h}: all clear, leaving the lockspace")),
            Req::Stopped => {
                // The daemon lives on and may add the lockspace again later.
                if self.rng.chance(1, 2) {
                    let at = self.now + self.rng.range(1000, 10_000);
                    self.push(at, Ev::Rejoin { h, boot });
                }
            }
            Req::Acquired { result, .. } => self.acquired(h, *result),
            Req::Released { result, .. } => {
                if result.as_ref().is_ok_and(|r| r.freed) {
                    self.freed = true;
                }
                self.retry_client(h, 500, 10_000);
            }
        }
    }

    // ---- I/O: the fault model ----

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

    /// The storage path of h fails this I/O with EIO.
    fn io_fails(&mut self, h: usize) -> bool {
        let fails = self.hosts[h]
            .flaky
            .is_some_and(|(a, b)| (a..b).contains(&self.now))
            && self.rng2.chance(1, 3);
        if fails {
            self.stats.io_errors += 1;
        }
        fails
    }

    /// How an interrupted write of `count` sectors lands: not at all, whole
    /// (only the report was lost), or some sectors and then one torn.
    fn interrupted(&mut self, count: usize) -> Landing {
        match self.rng2.below(3) {
            0 => Landing::NOTHING,
            1 => Landing {
                whole: count,
                torn: None,
            },
            _ => {
                // Mostly inside the records (the first 200 bytes hold every
                // field), else anywhere in the sector.
                let cut = if self.rng2.chance(3, 4) {
                    self.rng2.range(1, 200)
                } else {
                    self.rng2.range(1, SS as u64 - 1)
                } as usize;
                self.stats.torn_writes += 1;
                Landing {
                    whole: self.rng2.below(count as u64) as usize,
                    torn: Some((cut, self.rng2.chance(1, 2))),
                }
            }
        }
    }

    /// One host's view of the disk: its lockspace and its lease area.
    fn areas(&mut self) -> disk::SimAreas<'_> {
        self.disk.areas(LS_OFF, RES_OFF)
    }

    fn submit(&mut self, h: usize, who: Who, io: Io) {
        if self.cfg.trace && io.is_write() {
            let what = describe_write(&io);
            self.tr(|| format!("host {h}: {who:?} writes {what}"));
        }
        let done = self.io_completion(h);
        let boot = self.hosts[h].boot;
        let deadline = self.after_local(h, io.timeout_ms);
        let id = io.id;
        if !io.is_write() {
            let snap = self.areas().perform(&io);
            if snap.is_err() || (done <= deadline && self.io_fails(h)) {
                let r = IoDone::Read {
                    io,
                    snap: Err(IoFailure::code(EIO)),
                };
                self.push(
                    done,
                    Ev::Io {
                        h,
                        boot,
                        who,
                        id,
                        r: Box::new(r),
                    },
                );
                return;
            }
            if done > deadline {
                self.stats.io_timeouts += 1;
                let r = IoDone::Read {
                    io,
                    snap: Err(IoFailure::timeout()),
                };
                self.push(
                    deadline,
                    Ev::Io {
                        h,
                        boot,
                        who,
                        id,
                        r: Box::new(r),
                    },
                );
                return;
            }
            // Each sector as it was at the start or at the end of the read.
            let r = IoDone::Read { io, snap };
            self.push(
                done,
                Ev::Io {
                    h,
                    boot,
                    who,
                    id,
                    r: Box::new(r),
                },
            );
            return;
        }
        let timed_out = done > deadline;
        self.next_write += 1;
        let wid = self.next_write;
        let x = &mut self.hosts[h];
        x.writes += 1;
        if x.writes == x.crash_in_write {
            // The host goes down with this write in flight.
            let at = self.now + self.rng2.below(done - self.now);
            self.push(at, Ev::Crash { h });
        }
        let first = self.areas().sectors(&io).map_or(usize::MAX, |s| s.0);
        if !timed_out && self.io_fails(h) {
            // Failed by the storage, which may have written some of it.
            let landing = Some(self.interrupted(io.len() / SS));
            self.hosts[h].inflight.push((wid, first, io));
            self.push(
                done,
                Ev::Land {
                    h,
                    id: wid,
                    landing,
                },
            );
            let r = IoDone::Write(Err(IoFailure::code(EIO)));
            self.push(
                done,
                Ev::Io {
                    h,
                    boot,
                    who,
                    id,
                    r: Box::new(r),
                },
            );
            return;
        }
        // An abandoned write never lands, except in the LateWrites model.
        let late = self.rng.chance(1, 2) && self.cfg.knob == Knob::LateWrites;
        if !timed_out || late {
            if timed_out {
                self.stats.late_writes += 1;
            }
            self.hosts[h].inflight.push((wid, first, io));
            self.push(
                done,
                Ev::Land {
                    h,
                    id: wid,
                    landing: None,
                },
            );
        }
        let (at, r) = if timed_out {
            self.stats.io_timeouts += 1;
            (deadline, IoDone::Write(Err(IoFailure::timeout())))
        } else {
            (done, IoDone::Write(Ok(Vec::new().into())))
        };
        self.push(
            at,
            Ev::Io {
                h,
                boot,
                who,
                id,
                r: Box::new(r),
            },
        );
    }

    /// A read's result at its completion: each sector as it was when the
    /// read was issued or as it is now (a torn read).
    fn read_result(&mut self, io: &Io, snap: IoResult) -> IoResult {
        let mut out = snap?;
        let Some((sector, count)) = self.areas().sectors(io) else {
            return Err(IoFailure::code(EIO));
        };
        let end = self.areas().perform(io)?;
        for i in 0..count {
            if count == 1 || self.rng.chance(1, 2) {
                out[i * SS..(i + 1) * SS].copy_from_slice(&end[i * SS..(i + 1) * SS]);
            }
        }
        if self.cfg.knob == Knob::TrustBadChecksum {
            for i in 0..count {
                reseal(sector + i, &mut out[i * SS..(i + 1) * SS]);
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
        while let Some((at, ev)) = self.queue.pop() {
            if at > self.end || self.violation.is_some() {
                break;
            }
            self.now = at;
            self.stats.events += 1;
            assert!(
                self.stats.events < MAX_EVENTS,
                "seed {}: runaway simulation",
                self.seed
            );
            if let Some((h, boot)) = ev.daemon_host() {
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
                let result = match *r {
                    IoDone::Read { io, snap } => self.read_result(&io, snap),
                    IoDone::Write(r) => r,
                };
                self.trace_io(h, who, &result);
                let now = self.clock(h);
                let reqs = self.hosts[h].node.io_done(now, who, id, result);
                self.apply(h, reqs);
            }
            Ev::Timer { h, who, id, .. } => {
                let now = self.clock(h);
                let reqs = self.hosts[h].node.timer(now, who, id);
                self.apply(h, reqs);
            }
            Ev::Main { h, tick, .. } => {
                let holders: Vec<Holder> = self.hosts[h]
                    .proc_
                    .iter()
                    .filter(|p| p.holding)
                    .map(|p| Holder::plain(p.pid))
                    .collect();
                let now = self.clock(h);
                let reqs = self.hosts[h].node.tick(now, tick, holders);
                self.apply(h, reqs);
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
            Ev::Land { h, id, landing } => {
                let x = &mut self.hosts[h];
                if let Some(i) = x.inflight.iter().position(|w| w.0 == id) {
                    let (_, sector, io) = x.inflight.swap_remove(i);
                    match landing {
                        None => {
                            let _ = self.areas().perform(&io);
                        }
                        Some(l) => {
                            self.tr(|| {
                                format!("host {h}: failed write to sector {sector} lands: {l:?}")
                            });
                            self.disk.land_partly(sector, written(&io), l)
                        }
                    }
                }
            }
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

    fn trace_io(&mut self, h: usize, who: Who, r: &IoResult) {
        if let (true, Err(f)) = (self.cfg.trace, r) {
            let f = f.to_string();
            self.tr(|| format!("host {h}: {who:?} I/O failed: {f}"));
        }
    }

    /// Crash or watchdog reset: the host holds nothing from now on.
    fn host_down(&mut self, h: usize) {
        self.unhold(h);
        // Its writes in flight stop where they are: some land whole, some
        // not at all, some torn.
        for (_, sector, io) in std::mem::take(&mut self.hosts[h].inflight) {
            let l = self.interrupted(io.len() / SS);
            self.tr(|| format!("host {h}: write to sector {sector} interrupted: {l:?}"));
            self.disk.land_partly(sector, written(&io), l);
        }
        let restart = self.rng.chance(3, 5);
        let delay = self.rng.range(1000, 30_000);
        let x = &mut self.hosts[h];
        x.up = false;
        x.paused = false;
        x.deferred.clear();
        x.boot += 1;
        x.node.crash();
        x.proc_ = None;
        x.wd_armed = false;
        // A reboot may be seen by others as a new clock.
        x.clock_off_ms = x.clock_off_ms.wrapping_add(delay * 7) % 1_000_000_000;
        if restart {
            self.push(self.now + delay, Ev::Restart { h });
        }
    }

    /// add_lockspace (at boot, after a failed join, or again later).
    fn join(&mut self, h: usize) {
        // A new daemon (boot) has a new random host name, as sanlock's.
        let name = Name::new(&format!("h{h}-b{}", self.hosts[h].boot)).unwrap();
        let now = self.clock(h);
        let reqs = self.hosts[h].node.join(now, name);
        self.apply(h, reqs);
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
        let Some(p) = self.hosts[h]
            .proc_
            .clone()
            .filter(|p| p.pid == pid && p.holding)
        else {
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
        self.daemon_release(h, &p.lease);
    }

    fn holder_exit(&mut self, h: usize, pid: u32) {
        let Some(p) = self.hosts[h].proc_.clone().filter(|p| p.pid == pid) else {
            return;
        };
        self.tr(|| format!("host {h}: pid {pid} exited"));
        if p.holding {
            self.unhold(h);
        }
        self.hosts[h].proc_ = None;
        // The daemon sees the connection close; a failed lockspace's leases
        // are left on disk (others wait for this host to be dead).
        if p.holding && !self.hosts[h].node.space_dead() {
            self.daemon_release(h, &p.lease);
        }
    }

    fn lease_ref(&self) -> LeaseRef {
        LeaseRef {
            space_name: disk::space_name(),
            resource_name: disk::resource_name(),
            layout: Some(disk::lease_layout()),
            io_timeout: IO_TIMEOUT,
            watchdog_fire_timeout: self.t.watchdog_fire_timeout,
        }
    }

    fn client_wants(&mut self, h: usize) {
        let x = &self.hosts[h];
        if x.proc_.is_some() || x.node.busy(WORKER) || !x.node.live() {
            return;
        }
        let p = AcquireParams {
            lease: self.lease_ref(),
            shared: false,
            owner_nowait: false,
            lvb: false,
            acquire_lver: 0,
            new_num_hosts: 0,
            seed: self.rng.next_u64(),
            knobs: Knobs {
                takeover_without_dead: self.cfg.knob == Knob::TakeoverWithoutDead,
                sanlock_token_check: self.cfg.knob == Knob::SanlockTokenCheck,
                sanlock_commit_check: self.cfg.knob == Knob::SanlockCommitCheck,
                warm_skips_phase1: self.cfg.knob == Knob::WarmSkipsPhase1,
                ..Knobs::default()
            },
            // The node gives it the record of a lease it freed, as the daemon.
            warm: None,
        };
        let now = self.clock(h);
        let reqs = self.hosts[h].node.acquire(now, WORKER, p);
        self.apply(h, reqs);
    }

    fn retry_client(&mut self, h: usize, lo: u64, hi: u64) {
        let boot = self.hosts[h].boot;
        let at = self.now + self.rng.range(lo, hi);
        self.push(at, Ev::ClientWants { h, boot });
    }

    fn acquired(&mut self, h: usize, r: Result<Acquired, CoreError>) {
        match r {
            Ok(a) => {
                self.stats.acquired += 1;
                self.stats.warm_acquires += a.warm as u64;
                if !self.freed {
                    self.stats.taken_over += 1;
                }
                self.freed = false;
                self.tr(|| {
                    format!(
                        "host {h}: acquired lver {} gen {}",
                        a.leader.lver, a.leader.owner_generation
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
                    lease: a,
                });
                self.hold(h);
                let boot = self.hosts[h].boot;
                let at = self.now + self.rng.range(200, 20_000);
                self.push(at, Ev::HolderDone { h, boot, pid });
            }
            Err(e) => {
                if e.rv == rv::SANLK_DBLOCK_CHECKSUM || e.rv == rv::SANLK_LEADER_CHECKSUM {
                    self.stats.checksum_refusals += 1;
                }
                self.tr(|| format!("host {h}: acquire failed {e}"));
                self.retry_client(h, 500, 5000);
            }
        }
    }

    /// `release`: our dblock marked released, then the leader freed if we
    /// still own it.
    fn daemon_release(&mut self, h: usize, lease: &Acquired) {
        if self.hosts[h].node.busy(WORKER) {
            // one worker: drop it (the lease stays ours on disk, which only
            // makes others wait)
            return;
        }
        let held = Held {
            lease: self.lease_ref(),
            host_id: self.hosts[h].node.host_id,
            generation: lease.leader.owner_generation,
            shared: false,
            leader: lease.leader,
            dblock: lease.dblock,
            dirty_lvb: None,
        };
        let now = self.clock(h);
        let reqs = self.hosts[h].node.release(now, WORKER, held);
        self.apply(h, reqs);
    }
}

/// The bytes a write carries.
fn written(io: &Io) -> &[u8] {
    match &io.op {
        IoOp::Write { data } => data,
        IoOp::Read { .. } => &[],
    }
}

/// A write as a trace line: the record it carries.
fn describe_write(io: &Io) -> String {
    let IoOp::Write { data } = &io.op else {
        return String::new();
    };
    let at = io.offset / SS as u64;
    match (io.target, at) {
        (crate::daemon::core::Target::Lockspace, _) => match LeaderRecord::decode(data) {
            Ok(l) => format!(
                "delta lease host_id {} gen {} ts {}",
                l.owner_id, l.owner_generation, l.timestamp
            ),
            Err(e) => format!("delta lease {e}"),
        },
        (_, 0) => match LeaderRecord::decode(data) {
            Ok(l) => format!(
                "leader lver {} owner {} gen {} ts {}",
                l.lver, l.owner_id, l.owner_generation, l.timestamp
            ),
            Err(e) => format!("leader {e}"),
        },
        (_, s) => match PaxosDblock::decode(data) {
            Ok(d) => format!(
                "dblock of host {} mbal {} bal {} inp {} lver {} flags {:#x}",
                s - 1,
                d.mbal,
                d.bal,
                d.inp,
                d.lver,
                d.flags
            ),
            Err(e) => format!("dblock {e}"),
        },
    }
}

/// For [`Knob::TrustBadChecksum`]: gives a sector whose record's checksum
/// does not match a matching one, as if the reader never checked it.
fn reseal(sector: usize, b: &mut [u8]) {
    let leader = sector < RES_OFF + 1;
    if leader {
        if let Ok(mut lr) = LeaderRecord::decode(b)
            && lr.checksum != lr.computed_checksum()
        {
            let e = lr.seal();
            b[..e.len()].copy_from_slice(&e);
        }
    } else if sector >= RES_OFF + 2
        && let Ok(mut d) = PaxosDblock::decode(b)
        && d.verify().is_err()
    {
        let e = d.seal();
        b[..e.len()].copy_from_slice(&e);
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
