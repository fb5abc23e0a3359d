//! One simulated host's daemon: the daemon's own core — a lockspace
//! instance ([`Lockspace`]) and resource operations in flight
//! ([`Acquire`], [`Release`]) — with the simulation as its executor. The
//! node turns the core's actions into requests to the simulated world
//! ([`Req`]: I/O through the fault model, timers, the watchdog, signals to
//! the holder processes) and feeds completions back. It has no lease logic
//! of its own: what it adds is what the daemon's engine adds around the
//! core (answering wdmd, add_lockspace returning after the first
//! renewal, the main loop's tick), and the simulation's shortcut of
//! ticking only when the core says a tick can act.

use crate::daemon::core::lockspace::{Action, Event, Lockspace, LockspaceConfig};
use crate::daemon::core::resource::{
    Acquire, AcquireParams, Acquired, Held, Input, LockspaceView, Op, Release, Released, Step,
    WarmLeases,
};
use crate::daemon::core::{CoreError, Id, Io, IoResult, Layout, Now};
use crate::hosts::HostStatus;
use crate::ondisk::{LeaderRecord, Name};
use crate::recovery::{Holder, Signal};

/// Which machine of the node an I/O or timer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// The lockspace (its thread, in the daemon).
    Ls,
    /// The resource operation in slot n (a client's request).
    Op(usize),
}

/// What the node asks of the simulated world. Times are the host's own
/// CLOCK_MONOTONIC in milliseconds.
#[derive(Debug)]
pub enum Req {
    Io {
        who: Who,
        io: Io,
    },
    Timer {
        who: Who,
        id: Id,
        at_ms: u64,
    },
    /// The main loop's next check that can act, at `at_ms` or at the first
    /// 1 s tick after it if it is in the future (generation `tick`).
    Tick {
        at_ms: u64,
        tick: u32,
    },
    /// wdmd armed: the host is reset at `fire_ms` unless re-armed or closed.
    WatchdogArm {
        fire_ms: u64,
    },
    WatchdogClose,
    Signal {
        pid: u32,
        signal: Signal,
    },
    Stuck {
        pid: u32,
    },
    Joined(Result<LeaderRecord, CoreError>),
    Failed {
        corrupt: bool,
        gap: u64,
    },
    AllClear,
    /// A joined lockspace has stopped (its host_id released if it could be).
    Stopped,
    Acquired {
        slot: usize,
        result: Box<Result<Acquired, CoreError>>,
    },
    Released {
        slot: usize,
        result: Result<Released, CoreError>,
    },
}

enum Running {
    Acquire(Box<Acquire>),
    Release(Box<Release>),
}

/// What a lockspace instance is, apart from its host_id and name.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub space_name: Name,
    pub io_timeout: u64,
    pub watchdog_fire_timeout: u64,
    pub kill_grace_seconds: Option<u64>,
    pub layout: Layout,
    pub knobs: crate::daemon::core::Knobs,
}

pub struct Node {
    pub host_id: u64,
    cfg: NodeConfig,
    ls: Option<Lockspace>,
    next_space_id: u32,
    joined: bool,
    activated: bool,
    ops: Vec<Option<Running>>,
    tick_gen: u32,
    tick_due: Option<u64>,
    /// The leases this daemon freed last, as the daemon keeps them.
    warm: WarmLeases<(Name, Name)>,
}

/// The node's lockspace as its operations see it.
struct View<'a>(Option<&'a Lockspace>);

impl LockspaceView for View<'_> {
    fn host_status(&self, host_id: u64) -> Result<Option<HostStatus>, i32> {
        Ok(self.0.and_then(|l| l.host_status(host_id).cloned()))
    }
    fn instance(&self) -> Option<crate::daemon::core::lockspace::Instance> {
        self.0.and_then(|l| l.instance())
    }
    fn layout(&self) -> Option<Layout> {
        self.0.and_then(|l| l.layout())
    }
    fn space_name(&self) -> Name {
        self.0.map(|l| l.config().space_name).unwrap_or_default()
    }
}

impl Node {
    pub fn new(host_id: u64, cfg: NodeConfig, slots: usize) -> Node {
        Node {
            host_id,
            cfg,
            ls: None,
            next_space_id: 0,
            joined: false,
            activated: false,
            ops: (0..slots).map(|_| None).collect(),
            tick_gen: 0,
            tick_due: None,
            warm: WarmLeases::default(),
        }
    }

    /// The lockspace instance, if one was added.
    pub fn lockspace(&self) -> Option<&Lockspace> {
        self.ls.as_ref()
    }

    /// Joined and not failed: acquires may start and be handed out.
    pub fn live(&self) -> bool {
        self.ls.as_ref().is_some_and(|l| l.instance().is_some())
    }

    /// Failed (or gone): its holders' leases stay on disk.
    pub fn space_dead(&self) -> bool {
        self.ls.as_ref().is_none_or(|l| l.space_dead())
    }

    pub fn generation(&self) -> u64 {
        self.ls.as_ref().map_or(0, |l| l.host_generation())
    }

    pub fn busy(&self, slot: usize) -> bool {
        self.ops[slot].is_some()
    }

    /// The host crashed or was reset: everything in memory is gone.
    pub fn crash(&mut self) {
        self.ls = None;
        self.joined = false;
        for o in self.ops.iter_mut() {
            *o = None;
        }
        self.tick_due = None;
    }

    /// add_lockspace, unless a lockspace is there and not stopped.
    pub fn join(&mut self, now: Now, our_name: Name) -> Vec<Req> {
        if self.ls.as_ref().is_some_and(|l| !l.is_stopped()) {
            return Vec::new();
        }
        self.next_space_id += 1;
        self.ls = Some(Lockspace::new(LockspaceConfig {
            space_id: self.next_space_id,
            space_name: self.cfg.space_name,
            host_id: self.host_id,
            our_name,
            io_timeout: self.cfg.io_timeout,
            watchdog_fire_timeout: self.cfg.watchdog_fire_timeout,
            kill_grace_seconds: self.cfg.kill_grace_seconds,
            set_bitmap_seconds: 6 * self.cfg.io_timeout,
            use_watchdog: true,
            layout: Some(self.cfg.layout),
            sizes_read_len: 4096,
            knobs: self.cfg.knobs,
        }));
        self.joined = false;
        self.activated = false;
        self.tick_due = None;
        self.ls_step(now, Event::Start)
    }

    pub fn io_done(&mut self, now: Now, who: Who, id: Id, result: IoResult) -> Vec<Req> {
        match who {
            Who::Ls => self.ls_step(now, Event::Io { id, result }),
            Who::Op(slot) => self.op_step(now, slot, Input::Io { id, result }),
        }
    }

    pub fn timer(&mut self, now: Now, who: Who, id: Id) -> Vec<Req> {
        match who {
            Who::Ls => self.ls_step(now, Event::Timer { id }),
            Who::Op(slot) => self.op_step(now, slot, Input::Timer { id }),
        }
    }

    /// The main loop's check; `tick` tells a stale tick from the current one.
    pub fn tick(&mut self, now: Now, tick: u32, holders: Vec<Holder>) -> Vec<Req> {
        if tick != self.tick_gen {
            return Vec::new();
        }
        self.tick_due = None;
        self.ls_step(now, Event::Tick { holders })
    }

    /// A client asks for a lease (slot: its worker).
    pub fn acquire(&mut self, now: Now, slot: usize, mut p: AcquireParams) -> Vec<Req> {
        if let Some(i) = self.ls.as_ref().and_then(|l| l.instance()) {
            let key = (p.lease.space_name, p.lease.resource_name);
            p.warm = self.warm.take(&key, i.host_id, i.generation);
        }
        self.ops[slot] = Some(Running::Acquire(Box::new(Acquire::new(p))));
        self.op_step(now, slot, Input::Start)
    }

    /// A client's lease goes (slot: its worker).
    pub fn release(&mut self, now: Now, slot: usize, held: Held) -> Vec<Req> {
        self.ops[slot] = Some(Running::Release(Box::new(Release::new(held, None))));
        self.op_step(now, slot, Input::Start)
    }

    fn op_step(&mut self, now: Now, slot: usize, input: Input) -> Vec<Req> {
        let view = View(self.ls.as_ref());
        let Some(op) = self.ops[slot].as_mut() else {
            return Vec::new();
        };
        let (step, done) = match op {
            Running::Acquire(a) => match a.step(now, input, &view) {
                Step::Done(result) => (
                    None,
                    Some(Req::Acquired {
                        slot,
                        result: Box::new(result),
                    }),
                ),
                s => (Some(s.map_done()), None),
            },
            Running::Release(r) => match r.step(now, input, &view) {
                Step::Done(result) => {
                    if let Ok(r) = &result
                        && let Some(w) = &r.warm
                    {
                        self.warm.put((w.space_name, w.resource_name), r);
                    }
                    (None, Some(Req::Released { slot, result }))
                }
                s => (Some(s.map_done()), None),
            },
        };
        if let Some(d) = done {
            self.ops[slot] = None;
            return vec![d];
        }
        match step {
            Some(Step::Io(io)) => vec![Req::Io {
                who: Who::Op(slot),
                io,
            }],
            Some(Step::Timer { id, at_ms }) => vec![Req::Timer {
                who: Who::Op(slot),
                id,
                at_ms,
            }],
            _ => Vec::new(),
        }
    }

    fn ls_step(&mut self, now: Now, ev: Event) -> Vec<Req> {
        let mut out = Vec::new();
        let mut events = vec![ev];
        while let Some(ev) = events.pop() {
            let Some(ls) = self.ls.as_mut() else {
                return out;
            };
            ls.step(now, ev);
            for a in ls.ready() {
                match a {
                    Action::Io(io) => out.push(Req::Io { who: Who::Ls, io }),
                    Action::Timer { id, at_ms } => out.push(Req::Timer {
                        who: Who::Ls,
                        id,
                        at_ms,
                    }),
                    // wdmd is always there: the hardware watchdog behind it
                    // is the simulation's.
                    Action::WatchdogConnect { id } => {
                        events.insert(0, Event::Watchdog { id, ok: true })
                    }
                    Action::WatchdogActivate { id, expire, .. } => {
                        out.push(self.arm(expire));
                        events.insert(0, Event::Watchdog { id, ok: true });
                    }
                    Action::WatchdogRefresh { expire, .. } => out.push(self.arm(expire)),
                    Action::WatchdogDisarm => out.push(Req::WatchdogClose),
                    Action::Joined(r) => {
                        self.joined = r.is_ok();
                        out.push(Req::Joined(r));
                    }
                    // add_lockspace returns once the first renewal was
                    // made: other hosts are taken in from then on.
                    Action::Renewal(_) if !self.activated => {
                        self.activated = true;
                        events.insert(0, Event::Activated);
                    }
                    Action::RenewalStarted
                    | Action::Renewal(_)
                    | Action::HostEvents(_)
                    | Action::Examine => {}
                    Action::Failed { corrupt, gap, .. } => out.push(Req::Failed { corrupt, gap }),
                    Action::Signal { pid, signal } => out.push(Req::Signal { pid, signal }),
                    Action::Stuck { pid } => out.push(Req::Stuck { pid }),
                    Action::AllClear => out.push(Req::AllClear),
                    Action::Stopped => {
                        if std::mem::take(&mut self.joined) {
                            out.push(Req::Stopped);
                        }
                    }
                }
            }
        }
        if let Some(t) = self.next_tick(now) {
            out.push(t);
        }
        out
    }

    fn arm(&self, expire: u64) -> Req {
        Req::WatchdogArm {
            fire_ms: (expire + self.cfg.watchdog_fire_timeout) * 1000,
        }
    }

    /// Schedules the main loop's next check when it changed: sanlock's
    /// main loop ticks every second (200 ms while killing), but a tick
    /// before the core's next_tick_ms does nothing.
    fn next_tick(&mut self, now: Now) -> Option<Req> {
        let ls = self.ls.as_ref()?;
        if !ls.is_joined() {
            self.tick_due = None;
            return None;
        }
        let want = ls.next_tick_ms(now);
        let due = match self.tick_due {
            None => true,
            Some(t) if want < t => true,
            // The fail time moved on with a renewal.
            Some(t) => want > t && !ls.space_dead(),
        };
        if !due {
            return None;
        }
        self.tick_due = Some(want);
        self.tick_gen += 1;
        Some(Req::Tick {
            at_ms: want,
            tick: self.tick_gen,
        })
    }
}

trait MapDone {
    fn map_done(self) -> Step<()>;
}

impl<T> MapDone for Step<T> {
    fn map_done(self) -> Step<()> {
        match self {
            Step::Io(io) => Step::Io(io),
            Step::Timer { id, at_ms } => Step::Timer { id, at_ms },
            Step::Done(_) => Step::Done(()),
        }
    }
}
