//! A lockspace's life as one state machine (sanlock's `lockspace_thread`
//! and the lockspace half of its main loop): read the geometry, connect
//! the watchdog, acquire our host_id ([`crate::delta::DeltaAcquire`]),
//! renew it every 2 io_timeouts ([`crate::delta::renew`]), judge the other
//! hosts from each renewal's read ([`crate::hosts::HostTable`]), fail and
//! kill the holders when renewals stop ([`crate::recovery::Recovery`]),
//! and release the host_id at the end.
//!
//! Timing is sanlock's: the lockspace thread polls once a second and
//! renews half a second after the first poll that finds 2 io_timeouts
//! gone since the last success (a failed renewal is retried half a second
//! later). The machine computes when that poll comes instead of polling,
//! so an executor wakes it only when something can happen.

use tracing::{error, info, warn};

use super::{CoreError, Id, Ids, Io, IoFailure, IoOp, IoResult, Knobs, Layout, Now, Target, ms};
use crate::delta::{self, DeltaAcquire, DeltaParams};
use crate::geometry::Geometry;
use crate::history::StateChange;
use crate::hosts::{HostEvent, HostState, HostStatus, HostTable};
use crate::ondisk::{self, HOSTID_BITMAP_SIZE, LeaderRecord, Name};
use crate::recovery::{self, Holder, Recovery, RecoveryConfig, Signal};
use crate::rv;
use crate::timeouts::Timeouts;
use crate::wdmd::Keepalive;

/// What a lockspace is, as add_lockspace gave it.
#[derive(Clone, Debug)]
pub struct LockspaceConfig {
    /// This instance of the lockspace (the daemon's `s<N>`): an acquire
    /// is handed out only if the instance it ran in is still joined.
    pub space_id: u32,
    pub space_name: Name,
    pub host_id: u64,
    /// Written into our delta lease (sanlock: a random UUID per daemon).
    pub our_name: Name,
    pub io_timeout: u64,
    pub watchdog_fire_timeout: u64,
    /// sanlock.conf's kill_grace_seconds, None for its default.
    pub kill_grace_seconds: Option<u64>,
    /// How long a request bit stays set in our delta lease.
    pub set_bitmap_seconds: u64,
    /// `-w 1`: the host_id is held only with a watchdog armed behind it.
    pub use_watchdog: bool,
    /// The area's shape when the caller knows it; None: read it from host
    /// 1's delta lease first, as sanlock does (`delta_read_lockspace_sizes`).
    pub layout: Option<Layout>,
    /// Bytes that geometry read asks for (4096, or a larger device sector).
    pub sizes_read_len: usize,
    pub knobs: Knobs,
}

impl LockspaceConfig {
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            io_timeout: self.io_timeout,
            watchdog_fire_timeout: self.watchdog_fire_timeout,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Event {
    /// add_lockspace: read the geometry, connect the watchdog, acquire.
    Start,
    /// The executor could not open the lockspace's disk (-ENODEV).
    OpenFailed(IoFailure),
    Io {
        id: Id,
        result: IoResult,
    },
    Timer {
        id: Id,
    },
    /// The answer to [`Action::WatchdogConnect`] or [`Action::WatchdogActivate`].
    Watchdog {
        id: Id,
        ok: bool,
    },
    /// add_lockspace has returned: other hosts are checked from now on
    /// (`get_hosts` answers -EAGAIN until the first check).
    Activated,
    /// rem_lockspace or a forced shutdown: no new acquires; the holders
    /// are SIGKILLed from the next tick on.
    Remove,
    /// Stop after the I/O in flight: a join still waiting gives up, a
    /// joined lockspace releases its host_id if the last renewal left it
    /// valid, and the watchdog is disarmed at once.
    Stop,
    /// The main loop's check (sanlock's `check_our_lease` and `kill_pids`)
    /// with the processes holding leases in this lockspace.
    Tick {
        holders: Vec<Holder>,
    },
}

/// What a renewal attempt did, for the renewal history and the metrics.
#[derive(Clone, Debug)]
pub struct RenewalReport {
    pub attempt: Now,
    /// The lease written, or why not.
    pub result: Result<LeaderRecord, CoreError>,
    pub read_ms: u64,
    pub write_ms: u64,
    /// The whole attempt, including an I/O that failed or timed out.
    pub total_ms: u64,
}

#[derive(Clone, Debug)]
pub enum Action {
    Io(Io),
    /// Answer with [`Event::Timer`] when the monotonic clock reaches `at_ms`.
    Timer {
        id: Id,
        at_ms: u64,
    },
    /// Connect to wdmd (fail fast if it is not there).
    WatchdogConnect {
        id: Id,
    },
    /// Register with wdmd and arm it for the host_id just acquired.
    WatchdogActivate {
        id: Id,
        renewal: u64,
        expire: u64,
    },
    /// A renewal succeeded in time: wdmd's expiry moves on.
    WatchdogRefresh {
        renewal: u64,
        expire: u64,
    },
    /// test_live(0, 0): the lockspace stops, the watchdog must not fire.
    WatchdogDisarm,
    /// The join finished (add_lockspace's answer).
    Joined(Result<LeaderRecord, CoreError>),
    /// A renewal starts (its read is the next I/O).
    RenewalStarted,
    Renewal(Box<RenewalReport>),
    /// Events other hosts addressed to us (sanlock's `reg_event`).
    HostEvents(Vec<HostEvent>),
    /// Another host asked for one of our resources (its bit for us is
    /// set): read the request records of what we hold here.
    Examine,
    /// The lockspace is lost (or being removed): acquires are refused and
    /// its holders are being killed.
    Failed {
        corrupt: bool,
        gap: u64,
        removing: bool,
    },
    Signal {
        pid: u32,
        signal: Signal,
    },
    /// A holder survived every signal: only the watchdog can end it.
    Stuck {
        pid: u32,
    },
    /// Every holder of a failed lockspace is gone: the lockspace stops
    /// (not sent while it is being removed).
    AllClear,
    /// Nothing more will happen: the host_id was released if it could be.
    Stopped,
}

/// sanlock's `lease_status`: how the last acquire and renewal went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseStatus {
    /// 0 until the acquire finishes; then SANLK_OK (1) or the error.
    pub acquire_last_result: i32,
    pub acquire_last_attempt: u64,
    pub acquire_last_success: u64,
    pub renewal_last_result: i32,
    pub renewal_last_attempt: u64,
    pub renewal_last_success: u64,
    /// A renewal found our lease changed by someone else.
    pub corrupt_result: i32,
}

/// What an acquire running in this lockspace checks at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instance {
    pub space_id: u32,
    pub host_id: u64,
    pub generation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JoinWait {
    Read,
    Write,
    Sleep,
}

#[derive(Debug)]
enum Phase {
    NotStarted,
    Sizes {
        io: Id,
    },
    WdConnect {
        id: Id,
    },
    Joining {
        acq: Box<DeltaAcquire>,
        /// The I/O or timer the acquire waits for.
        wait: Id,
        on: JoinWait,
    },
    WdActivate {
        id: Id,
        leader: Box<LeaderRecord>,
        keepalive: Keepalive,
    },
    /// wdmd refused: the host_id just acquired goes back, then the join fails.
    GiveBack {
        io: Id,
        err: CoreError,
    },
    /// Joined; waiting for the next renewal (or, `poll`, for the poll that
    /// takes in a renewal read made before add_lockspace returned).
    Waiting {
        timer: Id,
        poll: bool,
    },
    RenewRead {
        io: Id,
        attempt: Now,
    },
    RenewWrite {
        io: Id,
        attempt: Now,
        read_done: Now,
        lease: Box<LeaderRecord>,
    },
    /// Writing the released delta lease on the way out.
    Leaving {
        io: Id,
    },
    Stopped,
}

/// One lockspace instance.
pub struct Lockspace {
    cfg: LockspaceConfig,
    layout: Option<Layout>,
    phase: Phase,
    ids: Ids,
    out: Vec<Action>,
    status: LeaseStatus,
    host_generation: u64,
    /// The lease as we last wrote it, and whether that write succeeded
    /// (a renewal compares the disk with it; the release needs it).
    leader: LeaderRecord,
    prev_ok: bool,
    /// The last renewal's I/O failure, kept for the join's error.
    last_failure: Option<IoFailure>,
    hosts: HostTable,
    recovery: Recovery,
    /// wdmd's keepalive policy, once activated (`-w 1` only).
    keepalive: Option<Keepalive>,
    renew_fail: bool,
    removing: bool,
    stopping: bool,
    active: bool,
    /// A renewal read made while add_lockspace had not returned yet,
    /// taken in at the first poll after it did (as sanlock's main loop).
    unobserved: Option<(Now, super::IoData)>,
    /// Our event, sent to the hosts whose bit we set (write_id/gen/ts).
    host_event: (u64, u64, u64),
    set_event_time: u64,
    /// How far the first renewal after the join moves (ms): later if it
    /// is due at once (the join's own), else earlier. Lockspaces joined
    /// together would otherwise renew together for ever, all their area
    /// reads in one burst (1,000 × 1 MiB every 20 s).
    first_renewal_early_ms: u64,
}

/// Why a lockspace's geometry could not be read; callers number these as
/// their sanlock counterparts do (add_lockspace and read_lockspace differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizesError {
    Read(i32),
    Magic,
    Version,
    SectorSize,
    Geometry,
}

impl SizesError {
    /// add_lockspace's number for it.
    pub fn add_rv(self) -> i32 {
        match self {
            SizesError::Read(rv) => rv,
            SizesError::Magic => rv::SANLK_LEADER_MAGIC,
            SizesError::Version => rv::SANLK_LEADER_VERSION,
            SizesError::SectorSize => rv::SANLK_LEADER_SECTORSIZE,
            SizesError::Geometry => rv::SANLK_ADDLS_SIZES,
        }
    }
}

/// The geometry host 1's delta lease (the first bytes of the area) names.
pub fn lockspace_sizes(buf: &[u8]) -> Result<Geometry, SizesError> {
    let lr = LeaderRecord::decode(buf).map_err(|e| SizesError::Read(e.sanlk_rv()))?;
    if lr.magic != ondisk::DELTA_DISK_MAGIC {
        return Err(SizesError::Magic);
    }
    if lr.version & 0xFFFF_0000 != ondisk::DELTA_DISK_VERSION_MAJOR {
        return Err(SizesError::Version);
    }
    if lr.sector_size != 512 && lr.sector_size != 4096 {
        return Err(SizesError::SectorSize);
    }
    Geometry::from_leader(lr.sector_size, lr.flags).ok_or(SizesError::Geometry)
}

/// sanlock's `check_other_leases` logs a host whose sector is not a delta
/// lease of this lockspace at its first bad read and every 100th, and
/// when it is corrected; here that is one line for all such hosts of a
/// read (1,999 garbage sectors make one line, not 4,000).
fn bad_lease_report(before: &[u64], hosts: &HostTable, area: &[u8], ss: usize) -> Vec<String> {
    const LIST: usize = 8;
    let list = |ids: &[u64]| {
        let mut t: Vec<String> = ids.iter().take(LIST).map(|h| h.to_string()).collect();
        if ids.len() > LIST {
            t.push("...".into());
        }
        t.join(" ")
    };
    let mut out = Vec::new();
    let due: Vec<u64> = hosts
        .bad_leases()
        .filter(|&(_, n)| n == 1 || n % 100 == 0)
        .map(|(h, _)| h)
        .collect();
    if let Some(&first) = due.first() {
        let at = (first as usize - 1) * ss;
        let lr = LeaderRecord::decode(&area[at..at + ss]).expect("a sector holds a leader");
        out.push(format!(
            "check_other_lease invalid for {} hosts ({}): host {first} leader {:x} owner {} {} ts {} sn {} rn {}",
            due.len(),
            list(&due),
            lr.magic,
            lr.owner_id,
            lr.owner_generation,
            lr.timestamp,
            lr.space_name.to_string_lossy().escape_debug(),
            lr.resource_name.to_string_lossy().escape_debug(),
        ));
    }
    let corrected: Vec<u64> = before
        .iter()
        .copied()
        .filter(|&h| {
            hosts
                .hosts
                .get(h as usize - 1)
                .is_some_and(|hs| hs.lease_bad == 0)
        })
        .collect();
    if !corrected.is_empty() {
        out.push(format!(
            "check_other_lease corrected for {} hosts ({})",
            corrected.len(),
            list(&corrected)
        ));
    }
    out
}

/// Renewal results that mean our lease was changed under us.
pub fn is_corrupt(e: i32) -> bool {
    matches!(
        e,
        rv::SANLK_RENEW_OWNER
            | rv::SANLK_RENEW_DIFF
            | rv::SANLK_LEADER_MAGIC
            | rv::SANLK_LEADER_VERSION
            | rv::SANLK_LEADER_SECTORSIZE
            | rv::SANLK_LEADER_LOCKSPACE
            | rv::SANLK_LEADER_CHECKSUM
    )
}

impl Lockspace {
    pub fn new(cfg: LockspaceConfig) -> Lockspace {
        let rcfg = RecoveryConfig::new(
            cfg.io_timeout,
            cfg.watchdog_fire_timeout,
            cfg.kill_grace_seconds,
        );
        let layout = cfg.layout;
        let host_id = cfg.host_id;
        Lockspace {
            cfg,
            layout,
            phase: Phase::NotStarted,
            ids: Ids::default(),
            out: Vec::new(),
            status: LeaseStatus::default(),
            host_generation: 0,
            leader: LeaderRecord::default(),
            prev_ok: false,
            last_failure: None,
            hosts: HostTable::new(0, host_id),
            recovery: Recovery::new(rcfg),
            keepalive: None,
            renew_fail: false,
            removing: false,
            stopping: false,
            active: false,
            unobserved: None,
            host_event: (0, 0, 0),
            set_event_time: 0,
            first_renewal_early_ms: 0,
        }
    }

    pub fn config(&self) -> &LockspaceConfig {
        &self.cfg
    }

    /// The geometry read asks for at least one device sector (set by the
    /// executor once it opened the disk, before [`Event::Start`]).
    pub fn set_sizes_read_len(&mut self, len: usize) {
        self.cfg.sizes_read_len = len;
    }

    /// The actions produced since the last call, in order.
    pub fn ready(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    pub fn status(&self) -> &LeaseStatus {
        &self.status
    }

    pub fn layout(&self) -> Option<Layout> {
        self.layout
    }

    pub fn host_generation(&self) -> u64 {
        self.host_generation
    }

    pub fn hosts(&self) -> &HostTable {
        &self.hosts
    }

    /// What this lockspace saw of a host (by host_id).
    pub fn host_status(&self, host_id: u64) -> Option<&HostStatus> {
        self.hosts.hosts.get((host_id as usize).wrapping_sub(1))
    }

    /// A host's state now, as `get_hosts` reports it.
    pub fn host_state(&self, host_id: u64, now_secs: u64) -> Option<HostState> {
        self.host_status(host_id).map(|hs| {
            hs.judge(now_secs, self.cfg.host_id, self.cfg.watchdog_fire_timeout)
                .state
        })
    }

    /// Judges every host now and records the changes in the history;
    /// returns them for the log.
    pub fn judge_hosts(&mut self, now: Now) -> Vec<(u64, StateChange)> {
        self.hosts
            .judge_all(now.moment(), self.cfg.watchdog_fire_timeout)
    }

    /// The lockspace failed or is being removed: no new acquires, and an
    /// acquire that finishes now is not handed out.
    pub fn space_dead(&self) -> bool {
        self.recovery.space_dead() || self.removing
    }

    /// Our renewals failed (not a removal).
    pub fn renew_fail(&self) -> bool {
        self.renew_fail
    }

    pub fn is_joined(&self) -> bool {
        matches!(
            self.phase,
            Phase::Waiting { .. } | Phase::RenewRead { .. } | Phase::RenewWrite { .. }
        ) && !self.stopping
    }

    pub fn is_stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped)
    }

    /// The instance an acquire may be handed out in: joined and not failed.
    pub fn instance(&self) -> Option<Instance> {
        (self.is_joined() && !self.space_dead()).then_some(Instance {
            space_id: self.cfg.space_id,
            host_id: self.cfg.host_id,
            generation: self.host_generation,
        })
    }

    /// When the next main-loop tick can act (a simulation skips the
    /// ticks before it): the fail time while renewing, else the kill
    /// sequence's next check.
    pub fn next_tick_ms(&self, now: Now) -> u64 {
        if self.space_dead() || self.status.corrupt_result != 0 {
            now.ms + self.recovery.next_check_ms()
        } else {
            ms(self.recovery.fail_time(self.status.renewal_last_success)).max(now.ms)
        }
    }

    /// The request bit for `host_id` goes into our next renewals
    /// (`request` with a lease owner: it examines its request records).
    pub fn set_request_bit(&mut self, host_id: u64, now_secs: u64) {
        if let Some(hs) = self.hosts.hosts.get_mut((host_id as usize).wrapping_sub(1)) {
            hs.set_bit_time = now_secs.max(1);
        }
    }

    /// `set_event` (sanlock's `lockspace_set_event`): our next renewals
    /// carry the event, with the bit of the host(s) it is for.
    pub fn set_event(
        &mut self,
        now_secs: u64,
        he: crate::proto::SanlkHostEvent,
        flags: u32,
    ) -> Result<(), i32> {
        use crate::proto;
        let hid = he.host_id as usize;
        if hid == 0 || hid > self.hosts.hosts.len() {
            return Err(-libc::EINVAL);
        }
        let mut he = he;
        if flags & proto::SANLK_SETEV_CUR_GENERATION != 0 && he.generation == 0 {
            he.generation = self.hosts.hosts[hid - 1].owner_generation;
        }
        if flags & proto::SANLK_SETEV_CLEAR_EVENT != 0 {
            self.host_event = (0, 0, 0);
            self.set_event_time = now_secs;
            return Ok(());
        }
        if flags & proto::SANLK_SETEV_CLEAR_HOSTID != 0 {
            self.hosts.hosts[hid - 1].set_bit_time = 0;
            return Ok(());
        }
        if flags & proto::SANLK_SETEV_REPLACE_EVENT == 0 {
            let (_, old_event, _) = self.host_event;
            if now_secs.saturating_sub(self.set_event_time) < self.cfg.set_bitmap_seconds
                && old_event != 0
                && he.event != 0
                && old_event != he.event
            {
                return Err(-libc::EBUSY);
            }
        }
        self.set_event_time = now_secs;
        self.host_event = (he.generation, he.event, he.data);
        if flags & proto::SANLK_SETEV_ALL_HOSTS != 0 {
            for hs in self.hosts.hosts.iter_mut() {
                hs.set_bit_time = now_secs;
            }
        } else {
            self.hosts.hosts[hid - 1].set_bit_time = now_secs;
        }
        Ok(())
    }

    fn slot(&self) -> u64 {
        let ss = self.layout.map_or(0, |l| l.sector_size) as u64;
        (self.cfg.host_id - 1) * ss
    }

    fn area_len(&self) -> u64 {
        self.layout.map_or(0, |l| l.align_size)
    }

    fn io(&mut self, offset: u64, op: IoOp, timeout_secs: u64) -> Id {
        let id = self.ids.next();
        let area_len = match self.layout {
            Some(l) => l.align_size,
            // The geometry read: before the area's length is known.
            None => self.cfg.sizes_read_len as u64,
        };
        self.out.push(Action::Io(Io {
            id,
            target: Target::Lockspace,
            area_len,
            offset,
            op,
            timeout_ms: ms(timeout_secs),
        }));
        id
    }

    fn timer(&mut self, at_ms: u64) -> Id {
        let id = self.ids.next();
        self.out.push(Action::Timer { id, at_ms });
        id
    }

    fn delta_params(&self) -> DeltaParams {
        DeltaParams {
            space_name: self.cfg.space_name,
            host_id: self.cfg.host_id,
            our_name: self.cfg.our_name,
            io_timeout: self.cfg.io_timeout,
            sector_size: self.layout.map_or(0, |l| l.sector_size),
            watchdog_fire_timeout: self.cfg.watchdog_fire_timeout,
        }
    }

    /// Advances the machine by one event.
    pub fn step(&mut self, now: Now, ev: Event) {
        match ev {
            Event::Start => self.start(now),
            Event::OpenFailed(f) => {
                if matches!(self.phase, Phase::NotStarted) {
                    self.status.acquire_last_attempt = now.secs();
                    self.join_failed(CoreError::io(
                        "opening the lockspace disk",
                        -libc::ENODEV,
                        f,
                    ));
                }
            }
            Event::Io { id, result } => self.io_done(now, id, result),
            Event::Timer { id } => self.timer_fired(now, id),
            Event::Watchdog { id, ok } => self.watchdog_answer(now, id, ok),
            Event::Activated => self.active = true,
            Event::Remove => self.removing = true,
            Event::Stop => self.stop(now),
            Event::Tick { holders } => self.tick(now, &holders),
        }
    }

    // ---- joining ----

    fn start(&mut self, now: Now) {
        if !matches!(self.phase, Phase::NotStarted) {
            return;
        }
        self.status.acquire_last_attempt = now.secs();
        if self.layout.is_some() {
            self.joined_sizes(now);
        } else {
            let io = self.io(
                0,
                IoOp::Read {
                    len: self.cfg.sizes_read_len,
                },
                self.cfg.io_timeout,
            );
            self.phase = Phase::Sizes { io };
        }
    }

    fn joined_sizes(&mut self, now: Now) {
        let layout = self.layout.expect("known");
        if self.cfg.host_id == 0 || self.cfg.host_id > layout.max_hosts as u64 {
            return self.join_failed(CoreError::new(
                "host_id is larger than the lockspace allows",
                rv::SANLK_ADDLS_INVALID_HOSTID,
            ));
        }
        self.hosts = HostTable::new(layout.max_hosts, self.cfg.host_id);
        if self.cfg.use_watchdog {
            // As sanlock: reach wdmd before acquiring, to fail fast.
            let id = self.ids.next();
            self.out.push(Action::WatchdogConnect { id });
            self.phase = Phase::WdConnect { id };
        } else {
            self.begin_acquire(now);
        }
    }

    fn begin_acquire(&mut self, now: Now) {
        let mut acq = DeltaAcquire::new(self.delta_params(), now.secs());
        let step = acq.step(now.secs(), delta::Input::Start);
        self.phase = Phase::Joining {
            acq: Box::new(acq),
            wait: Id(0),
            on: JoinWait::Read,
        };
        self.delta_step(now, step);
    }

    fn delta_step(&mut self, now: Now, step: delta::Step) {
        let slot = self.slot();
        let ss = self.layout.map_or(0, |l| l.sector_size);
        let io_timeout = self.cfg.io_timeout;
        let (wait, kind) = match step {
            delta::Step::Read => (
                self.io(slot, IoOp::Read { len: ss }, io_timeout),
                JoinWait::Read,
            ),
            delta::Step::Write(data) => (
                self.io(slot, IoOp::Write { data }, io_timeout),
                JoinWait::Write,
            ),
            delta::Step::Sleep(secs) => {
                if self.stopping {
                    return self.join_failed(CoreError::new(
                        "host_id acquire abandoned: the lockspace is being removed",
                        rv::SANLK_ERROR,
                    ));
                }
                let secs = if self.cfg.knobs.skip_delta_wait {
                    0
                } else {
                    secs
                };
                info!(space = %self.cfg.space_name, "delta acquire waits {secs}s");
                (self.timer(now.ms + ms(secs)), JoinWait::Sleep)
            }
            delta::Step::Done(Ok(leader)) => return self.acquired(now, leader),
            delta::Step::Done(Err(e)) => {
                let err = match self.last_failure.take() {
                    Some(f) if f.rv == e => CoreError::io("host_id acquire", e, f),
                    _ => CoreError::new("host_id acquire", e),
                };
                warn!(space = %self.cfg.space_name, "host_id {} acquire failed: {err}", self.cfg.host_id);
                return self.join_failed(err);
            }
        };
        if let Phase::Joining { wait: w, on, .. } = &mut self.phase {
            (*w, *on) = (wait, kind);
        }
    }

    fn acquired(&mut self, now: Now, leader: LeaderRecord) {
        info!(space = %self.cfg.space_name, "host_id {} generation {} acquired", self.cfg.host_id, leader.owner_generation);
        if self.cfg.use_watchdog {
            // Armed before anyone may use the lockspace (sanlock's
            // activate_watchdog).
            let mut keepalive = Keepalive::new(self.cfg.io_timeout);
            let (renewal, expire) = keepalive.arm(leader.timestamp);
            let id = self.ids.next();
            self.out.push(Action::WatchdogActivate {
                id,
                renewal,
                expire,
            });
            self.phase = Phase::WdActivate {
                id,
                leader: Box::new(leader),
                keepalive,
            };
            return;
        }
        self.joined(now, leader);
    }

    fn joined(&mut self, now: Now, leader: LeaderRecord) {
        let st = &mut self.status;
        st.acquire_last_result = rv::SANLK_OK;
        st.acquire_last_success = leader.timestamp;
        st.renewal_last_result = rv::SANLK_OK;
        st.renewal_last_attempt = st.acquire_last_attempt;
        st.renewal_last_success = leader.timestamp;
        self.host_generation = leader.owner_generation;
        self.leader = leader;
        self.prev_ok = true;
        // Spread over the first half of the interval by space_id, which
        // lockspaces added together have in sequence: the join's own
        // renewal, due at once, comes that much later (bounded in
        // loop_top); a first renewal not due yet, that much earlier (always
        // safe: the lease is only fresher). Short intervals (io_timeout
        // below 5) keep sanlock's schedule exactly.
        let half_ms = ms(self.cfg.timeouts().id_renewal_seconds()) / 2;
        self.first_renewal_early_ms = if half_ms >= 5000 {
            (self.cfg.space_id as u64).wrapping_mul(7919) % half_ms
        } else {
            0
        };
        self.out.push(Action::Joined(Ok(leader)));
        self.loop_top(now);
    }

    fn join_failed(&mut self, err: CoreError) {
        if self.status.acquire_last_result == 0 {
            self.status.acquire_last_result = err.rv;
        }
        self.out.push(Action::Joined(Err(err)));
        self.phase = Phase::Stopped;
        self.out.push(Action::Stopped);
    }

    fn watchdog_answer(&mut self, now: Now, id: Id, ok: bool) {
        match std::mem::replace(&mut self.phase, Phase::Stopped) {
            Phase::WdConnect { id: w } if w == id => {
                if ok {
                    self.begin_acquire(now);
                } else {
                    self.join_failed(CoreError::new("connect_watchdog", rv::SANLK_WD_ERROR));
                }
            }
            Phase::WdActivate {
                id: w,
                leader,
                keepalive,
            } if w == id => {
                if ok {
                    // Disarmed from now on when the lockspace stops.
                    self.keepalive = Some(keepalive);
                    self.joined(now, *leader);
                } else {
                    // wdmd will not take it: give the host_id back.
                    let (_, sector) =
                        delta::release_sector(&leader, self.delta_params().sector_size);
                    let slot = self.slot();
                    let io = self.io(slot, IoOp::Write { data: sector }, self.cfg.io_timeout);
                    self.phase = Phase::GiveBack {
                        io,
                        err: CoreError::new("activate_watchdog", rv::SANLK_WD_ERROR),
                    };
                }
            }
            other => self.phase = other,
        }
    }

    // ---- renewing ----

    /// The top of sanlock's lockspace thread loop, after a join, a renewal
    /// or a poll: leave if stopping, else wait for the next renewal.
    fn loop_top(&mut self, now: Now) {
        if self.stopping {
            return self.leave();
        }
        let every = self.cfg.timeouts().id_renewal_seconds();
        let last = self.status.renewal_last_success;
        let spread = std::mem::take(&mut self.first_renewal_early_ms);
        let (at, poll) = if now.secs().saturating_sub(last) >= every {
            // Due (or failing): renew after half a second. The join's own
            // renewal is due at once (the acquire waited 2 io_timeouts):
            // it comes later by the spread, scaled to keep the lease no
            // older than 1.5 renewal intervals then (37.5% of
            // id_renewal_fail_seconds, below the 50% late warning).
            let half_ms = ms(every) / 2;
            let room = (ms(every) + half_ms)
                .saturating_sub(now.ms.saturating_sub(ms(last)))
                .min(half_ms);
            let delay = (spread * room).checked_div(half_ms).unwrap_or(0);
            (now.ms + 500 + delay, false)
        } else if self.unobserved.is_some() {
            (now.ms + 500, true)
        } else {
            // The first 1 s poll at which 2 io_timeouts have gone by,
            // then half a second (a first renewal not due at once comes
            // earlier by the spread).
            let due_ms = ms(last + every).saturating_sub(spread);
            let polls = due_ms.saturating_sub(now.ms).div_ceil(1000);
            (now.ms + polls * 1000 + 500, false)
        };
        let timer = self.timer(at);
        self.phase = Phase::Waiting { timer, poll };
    }

    fn timer_fired(&mut self, now: Now, id: Id) {
        match std::mem::replace(&mut self.phase, Phase::Stopped) {
            Phase::Joining {
                mut acq,
                wait,
                on: JoinWait::Sleep,
            } if wait == id => {
                let step = acq.step(now.secs(), delta::Input::Slept);
                self.phase = Phase::Joining {
                    acq,
                    wait,
                    on: JoinWait::Sleep,
                };
                self.delta_step(now, step);
            }
            Phase::Waiting { timer, poll } if timer == id => {
                if poll {
                    if self.active
                        && let Some((seen, buf)) = self.unobserved.take()
                    {
                        self.observe(seen, &buf);
                    }
                    self.loop_top(now);
                } else {
                    self.renew(now);
                }
            }
            other => self.phase = other,
        }
    }

    fn renew(&mut self, now: Now) {
        self.out.push(Action::RenewalStarted);
        let len = self.area_len() as usize;
        let io = self.io(0, IoOp::Read { len }, self.cfg.io_timeout);
        self.phase = Phase::RenewRead { io, attempt: now };
    }

    /// The bits we set for other hosts, and our event (`create_bitmap_and_extra`).
    fn bitmap_and_extra(&mut self, now_secs: u64) -> ([u8; HOSTID_BITMAP_SIZE], (u64, u64, u64)) {
        let mut bm = [0u8; HOSTID_BITMAP_SIZE];
        let our = self.cfg.host_id as usize;
        let secs = self.cfg.set_bitmap_seconds;
        for (i, hs) in self.hosts.hosts.iter_mut().enumerate() {
            if i + 1 == our || hs.set_bit_time == 0 {
                continue;
            }
            if now_secs.saturating_sub(hs.set_bit_time) > secs {
                hs.set_bit_time = 0;
            } else if i / 8 < HOSTID_BITMAP_SIZE {
                bm[i / 8] |= 1 << (i % 8);
            }
        }
        (bm, self.host_event)
    }

    /// Takes in what a renewal read saw of every host, and the requests
    /// and events addressed to us there.
    fn observe(&mut self, seen: Now, area: &[u8]) {
        let ss = self.layout.map_or(0, |l| l.sector_size);
        let before: Vec<u64> = self.hosts.bad_leases().map(|(h, _)| h).collect();
        let events = self
            .hosts
            .observe_at(seen.moment(), area, ss, &self.cfg.space_name);
        for line in bad_lease_report(&before, &self.hosts, area, ss) {
            error!(space = %self.cfg.space_name, "{line}");
        }
        if events.is_empty() {
            return;
        }
        // A host whose bit for us is set may want one of our resources:
        // examine them, at most once per set_bitmap_seconds per host.
        let mut new = false;
        for ev in &events {
            if let Some(hs) = self
                .hosts
                .hosts
                .get_mut((ev.from_host_id as usize).wrapping_sub(1))
                && (hs.last_req == 0
                    || seen.secs().saturating_sub(hs.last_req) >= self.cfg.set_bitmap_seconds)
            {
                hs.last_req = seen.secs();
                new = true;
            }
        }
        if new {
            self.out.push(Action::Examine);
        }
        let events: Vec<HostEvent> = events.into_iter().filter(|e| e.event != 0).collect();
        if !events.is_empty() {
            self.out.push(Action::HostEvents(events));
        }
    }

    fn io_done(&mut self, now: Now, id: Id, result: IoResult) {
        match std::mem::replace(&mut self.phase, Phase::Stopped) {
            Phase::Sizes { io } if io == id => {
                let sizes = match result {
                    Ok(buf) => lockspace_sizes(&buf),
                    Err(f) => Err(SizesError::Read(f.rv)).inspect_err(|_| {
                        self.last_failure = Some(f);
                    }),
                };
                match sizes {
                    Ok(g) => {
                        self.layout = Some(g.into());
                        self.joined_sizes(now);
                    }
                    Err(e) => {
                        let err = match self.last_failure.take() {
                            Some(f) => {
                                CoreError::io("reading the lockspace geometry", e.add_rv(), f)
                            }
                            None => CoreError::new("reading the lockspace geometry", e.add_rv()),
                        };
                        warn!(space = %self.cfg.space_name, "{err}");
                        self.join_failed(err);
                    }
                }
            }
            Phase::Joining { mut acq, wait, on } if wait == id && on != JoinWait::Sleep => {
                let result = result.map_err(|f| {
                    let rv = f.rv;
                    self.last_failure = Some(f);
                    rv
                });
                let input = match on {
                    JoinWait::Write => delta::Input::WriteDone(result.map(|_| ())),
                    _ => delta::Input::ReadDone(result.map(|d| d.to_vec())),
                };
                let step = acq.step(now.secs(), input);
                self.phase = Phase::Joining { acq, wait, on };
                self.delta_step(now, step);
            }
            Phase::GiveBack { io, err } if io == id => {
                if let Err(f) = result {
                    warn!(space = %self.cfg.space_name, "release of host_id {} failed: {f}", self.cfg.host_id);
                }
                self.join_failed(err);
            }
            Phase::RenewRead { io, attempt } if io == id => {
                self.renew_read_done(now, attempt, result)
            }
            Phase::RenewWrite {
                io,
                attempt,
                read_done,
                lease,
            } if io == id => {
                let read_ms = read_done.ms.saturating_sub(attempt.ms);
                let write_ms = now.ms.saturating_sub(read_done.ms);
                let result = match result {
                    Ok(_) => Ok(*lease),
                    Err(f) => Err(CoreError::io("renewal write", f.rv, f)),
                };
                self.renewal_done(now, attempt, result, read_ms, write_ms);
            }
            Phase::Leaving { io } if io == id => {
                if let Err(f) = result {
                    warn!(space = %self.cfg.space_name, "release of host_id {} failed: {f}", self.cfg.host_id);
                }
                self.phase = Phase::Stopped;
                self.out.push(Action::Stopped);
            }
            other => self.phase = other,
        }
    }

    fn renew_read_done(&mut self, now: Now, attempt: Now, result: IoResult) {
        let read_ms = now.ms.saturating_sub(attempt.ms);
        let area = match result {
            Ok(a) => a,
            Err(f) => {
                let e = CoreError::io("renewal read", f.rv, f);
                return self.renewal_done(now, attempt, Err(e), read_ms, 0);
            }
        };
        if self.active {
            self.observe(now, &area);
        }
        let (bitmap, extra) = self.bitmap_and_extra(attempt.secs());
        let renewed = delta::renew(
            &self.delta_params(),
            &self.leader,
            self.prev_ok,
            &area,
            now.secs(),
            extra,
            &bitmap,
        );
        if !self.active {
            self.unobserved = Some((now, area));
        }
        match renewed {
            Err(e) => {
                let e = CoreError::new("renewal", e);
                self.renewal_done(now, attempt, Err(e), read_ms, 0);
            }
            Ok((lease, sector)) => {
                // The write may take as long as the host could stay alive.
                let dead = self.cfg.timeouts().host_dead_seconds();
                let slot = self.slot();
                let io = self.io(slot, IoOp::Write { data: sector }, dead);
                self.phase = Phase::RenewWrite {
                    io,
                    attempt,
                    read_done: now,
                    lease: Box::new(lease),
                };
            }
        }
    }

    fn renewal_done(
        &mut self,
        now: Now,
        attempt: Now,
        result: Result<LeaderRecord, CoreError>,
        read_ms: u64,
        write_ms: u64,
    ) {
        let failed = self.renew_fail || self.status.corrupt_result != 0;
        let renewed = result.as_ref().ok().map(|lr| lr.timestamp);
        match &result {
            Ok(lr) => {
                self.leader = *lr;
                self.prev_ok = true;
                self.status.renewal_last_result = rv::SANLK_OK;
                self.status.renewal_last_success = lr.timestamp;
            }
            Err(e) => {
                self.prev_ok = false;
                warn!(space = %self.cfg.space_name, "renewal error {}: {e}", e.rv);
                self.status.renewal_last_result = e.rv;
                if is_corrupt(e.rv) && self.status.corrupt_result == 0 {
                    self.status.corrupt_result = e.rv;
                }
            }
        }
        self.status.renewal_last_attempt = attempt.secs();
        if let Some(ka) = self.keepalive.as_mut() {
            let was_failed = ka.failed();
            if let Some((renewal, expire)) =
                ka.after_renewal(now.secs(), renewed, failed, self.stopping)
            {
                self.out.push(Action::WatchdogRefresh { renewal, expire });
            } else if ka.failed() && !was_failed {
                error!(space = %self.cfg.space_name, "lockspace lost: wdmd is no longer refreshed; it fires unless every holder is gone");
            }
        }
        self.out.push(Action::Renewal(Box::new(RenewalReport {
            attempt,
            result,
            read_ms,
            write_ms,
            total_ms: now.ms.saturating_sub(attempt.ms),
        })));
        self.check_our_lease(now);
        self.loop_top(now);
    }

    /// After each renewal attempt: a lease not renewed for 8 io_timeouts
    /// (or changed under us) is lost at once (`check_our_lease`).
    fn check_our_lease(&mut self, now: Now) {
        let last = self.status.renewal_last_success;
        let corrupt = self.status.corrupt_result != 0;
        if let Some(recovery::Action::LockspaceFailed { corrupt, gap }) =
            self.recovery.fail_now(now.secs(), last, corrupt)
        {
            self.failed(corrupt, gap);
        } else {
            let gap = now.secs().saturating_sub(last);
            if !self.space_dead() && gap >= self.cfg.timeouts().id_renewal_warn_seconds() {
                warn!(space = %self.cfg.space_name, "renewal is {gap}s late");
            }
        }
    }

    fn failed(&mut self, corrupt: bool, gap: u64) {
        if self.removing {
            info!(space = %self.cfg.space_name, "lockspace removed: killing its lease holders");
        } else {
            error!(space = %self.cfg.space_name, "lockspace failed (renewal gap {gap}s, corrupt_result {}): killing its lease holders", self.status.corrupt_result);
            self.renew_fail = true;
        }
        self.out.push(Action::Failed {
            corrupt,
            gap,
            removing: self.removing,
        });
        if self.cfg.knobs.clear_without_kill && !self.removing {
            self.all_clear();
        }
    }

    // ---- the main loop's part ----

    fn tick(&mut self, now: Now, holders: &[Holder]) {
        if !matches!(
            self.phase,
            Phase::Waiting { .. } | Phase::RenewRead { .. } | Phase::RenewWrite { .. }
        ) || self.stopping
        {
            return;
        }
        let last = self.status.renewal_last_success;
        let corrupt = self.status.corrupt_result != 0;
        let removing = self.removing;
        for a in self
            .recovery
            .check(now.secs(), last, corrupt, removing, holders)
        {
            match a {
                recovery::Action::LockspaceFailed { corrupt, gap } => {
                    self.failed(corrupt, gap);
                    if self.stopping {
                        return;
                    }
                }
                recovery::Action::Signal { pid, signal } => {
                    self.out.push(Action::Signal { pid, signal })
                }
                recovery::Action::Stuck { pid } => {
                    error!(space = %self.cfg.space_name, "pid {pid} survives every kill: only the watchdog can stop it");
                    self.out.push(Action::Stuck { pid });
                }
                recovery::Action::AllClear => {
                    // A removal's own remover stops the lockspace.
                    if !removing {
                        self.all_clear();
                    }
                }
            }
        }
    }

    /// Every holder is gone: close the watchdog, stop, release.
    fn all_clear(&mut self) {
        warn!(space = %self.cfg.space_name, "all lease holders gone: lockspace stopped");
        self.out.push(Action::AllClear);
        self.stop_now();
    }

    // ---- stopping ----

    fn stop(&mut self, now: Now) {
        let _ = now;
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        // Disarmed at once, not after the I/O in flight, which may hang.
        self.disarm();
        match std::mem::replace(&mut self.phase, Phase::Stopped) {
            Phase::NotStarted => self.join_failed(CoreError::new(
                "host_id acquire abandoned: the lockspace is being removed",
                rv::SANLK_ERROR,
            )),
            Phase::Joining {
                on: JoinWait::Sleep,
                ..
            } => self.join_failed(CoreError::new(
                "host_id acquire abandoned: the lockspace is being removed",
                rv::SANLK_ERROR,
            )),
            Phase::Waiting { .. } => self.leave(),
            // The I/O or answer in flight comes back first.
            other => self.phase = other,
        }
    }

    fn disarm(&mut self) {
        if let Some(ka) = self.keepalive.as_mut()
            && ka.disarm()
        {
            self.out.push(Action::WatchdogDisarm);
        }
    }

    /// Out of the renewal loop: release our host_id if our last renewal
    /// left it valid.
    fn leave(&mut self) {
        self.disarm();
        if self.prev_ok {
            let ss = self.delta_params().sector_size;
            let (_, sector) = delta::release_sector(&self.leader, ss);
            let slot = self.slot();
            let io = self.io(slot, IoOp::Write { data: sector }, self.cfg.io_timeout);
            self.phase = Phase::Leaving { io };
        } else {
            self.phase = Phase::Stopped;
            self.out.push(Action::Stopped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn joined(d: &LsDriver) -> LeaderRecord {
        let j = d.actions(|a| matches!(a, Action::Joined(_)));
        match &j[..] {
            [(_, Action::Joined(Ok(lr)))] => *lr,
            other => panic!("not joined: {other:?}"),
        }
    }

    fn renewals(d: &LsDriver) -> Vec<(u64, RenewalReport)> {
        d.log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Renewal(r) => Some((*t, (**r).clone())),
                _ => None,
            })
            .collect()
    }

    fn on_disk(disks: &Disks, host_id: u64) -> LeaderRecord {
        let at = (host_id as usize - 1) * SS;
        LeaderRecord::decode(&disks.ls[at..at + SS]).unwrap()
    }

    #[test]
    fn reads_the_geometry_joins_and_renews_on_sanlocks_schedule() {
        let mut disks = Disks::new(lockspace_area("LS", 2048, 1 << 20, 1), vec![]);
        let mut cfg = ls_config("LS", 3, "host-c");
        cfg.layout = None;
        let mut d = LsDriver::new(cfg, 100_000);
        d.step(&mut disks, Event::Start);
        d.step(&mut disks, Event::Activated);
        d.run_until(&mut disks, 130_000, |_| vec![]);
        let lr = joined(&d);
        assert_eq!(
            (lr.owner_id, lr.owner_generation, lr.timestamp),
            (3, 1, 100)
        );
        assert_eq!(d.ls.layout().unwrap().max_hosts, 2000);
        // Joined after the 2 s settle; first renewal half a second later,
        // then every 2 io_timeouts + the poll + half a second.
        let r = renewals(&d);
        assert!(r.len() >= 9, "{} renewals in 28 s", r.len());
        assert_eq!(r[0].1.attempt.ms, 102_500);
        for w in r.windows(2) {
            let gap = w[1].1.attempt.ms - w[0].1.attempt.ms;
            assert!((2500..=3500).contains(&gap), "renewals {gap} ms apart");
            assert!(w[1].1.result.is_ok());
        }
        let last = on_disk(&disks, 3);
        assert_eq!(
            last.timestamp,
            r.last().unwrap().1.result.as_ref().unwrap().timestamp
        );
        assert!(d.ls.instance().is_some());
        // Hosts were checked: our own slot is LIVE, unused ones FREE.
        assert_eq!(d.ls.host_state(3, 130), Some(HostState::Live));
        assert_eq!(d.ls.host_state(1, 130), Some(HostState::Free));
    }

    /// Lockspaces joined together (space_ids in sequence) at the default
    /// io_timeout do not renew together for ever: the renewal after the
    /// join's comes early by an amount that differs per space_id, and the
    /// ones after it every 20 s again.
    #[test]
    fn lockspaces_joined_together_spread_their_renewals() {
        let mut phases = Vec::new();
        for space_id in 1..=4 {
            let mut disks = Disks::new(lockspace_area("LS", 8, 0, 10), vec![]);
            let mut cfg = ls_config("LS", 1, "host-a");
            cfg.io_timeout = 10;
            cfg.space_id = space_id;
            let mut d = LsDriver::new(cfg, 100_000);
            d.step(&mut disks, Event::Start);
            d.step(&mut disks, Event::Activated);
            d.run_until(&mut disks, 230_000, |_| vec![]);
            let t0_ms = joined(&d).timestamp * 1000;
            let r: Vec<u64> = renewals(&d).iter().map(|(_, r)| r.attempt.ms).collect();
            assert!(r.len() >= 5, "{r:?}");
            // The join's own renewal: later by the spread, the lease never
            // older than 1.5 renewal intervals (30 s) by then.
            assert!(r[0] - t0_ms <= 31_000, "space {space_id}: {r:?} t0 {t0_ms}");
            let gaps: Vec<u64> = r.windows(2).map(|w| w[1] - w[0]).collect();
            for g in &gaps {
                assert!((20_000..=21_500).contains(g), "space {space_id}: {gaps:?}");
            }
            assert!(renewals(&d).iter().all(|(_, r)| r.result.is_ok()));
            phases.push(r[0] % 20_000);
        }
        phases.sort();
        phases.dedup();
        assert!(phases.len() >= 3, "renewal phases {phases:?}");
        let spread = phases.last().unwrap() - phases.first().unwrap();
        assert!(spread >= 3_000, "renewal phases {phases:?}");
    }

    #[test]
    fn a_host_id_held_by_another_name_is_taken_after_host_dead_seconds() {
        let mut disks = Disks::new(lockspace_area("LS", 8, 0, 1), vec![]);
        let mut a = LsDriver::new(ls_config("LS", 1, "host-a"), 10_000);
        a.step(&mut disks, Event::Start);
        a.run_until(&mut disks, 13_000, |_| vec![]);
        assert_eq!(joined(&a).owner_generation, 1);
        // host-a crashes (nothing renews); host-b wants host_id 1.
        let mut b = LsDriver::new(ls_config("LS", 1, "host-b"), 13_000);
        b.step(&mut disks, Event::Start);
        b.run_until(&mut disks, 100_000, |_| vec![]);
        let lr = joined(&b);
        assert_eq!(lr.owner_generation, 2);
        // Watched 8 io_timeouts + watchdog (18 s), then the 2 s settle.
        assert_eq!(lr.timestamp, 13 + 18);
    }

    #[test]
    fn lost_storage_fails_the_lockspace_and_kills_its_holders() {
        let mut disks = Disks::new(lockspace_area("LS", 8, 0, 1), vec![]);
        let mut cfg = ls_config("LS", 2, "host-b");
        cfg.kill_grace_seconds = Some(5);
        let mut d = LsDriver::new(cfg, 50_000);
        d.step(&mut disks, Event::Start);
        d.step(&mut disks, Event::Activated);
        d.run_until(&mut disks, 60_000, |_| vec![]);
        let last_ok = on_disk(&disks, 2).timestamp;
        disks.fail_from_ms = Some(60_000);
        d.run_until(&mut disks, 80_000, |_| vec![Holder::plain(42)]);
        let failed = d.actions(|a| matches!(a, Action::Failed { .. }));
        let (
            t,
            Action::Failed {
                corrupt,
                gap,
                removing,
            },
        ) = failed[0].clone()
        else {
            unreachable!()
        };
        assert!(!corrupt && !removing);
        assert_eq!(gap, 8);
        assert_eq!(t / 1000, last_ok + 8, "failed at the fail time");
        assert!(d.ls.space_dead() && d.ls.instance().is_none());
        // SIGTERM once a second during the 5 s grace, then SIGKILL.
        let sigs: Vec<(u64, Signal)> = d
            .actions(|a| matches!(a, Action::Signal { pid: 42, .. }))
            .into_iter()
            .map(|(t, a)| match a {
                Action::Signal { signal, .. } => (t, signal),
                _ => unreachable!(),
            })
            .collect();
        let grace_end = (last_ok + 8 + 5) * 1000;
        for (t, sig) in &sigs {
            let want = if *t < grace_end {
                Signal::Term
            } else {
                Signal::Kill
            };
            assert_eq!(*sig, want, "at {t} ms");
        }
        assert!(
            sigs.iter().any(|s| s.1 == Signal::Term) && sigs.iter().any(|s| s.1 == Signal::Kill)
        );
        for w in sigs.windows(2) {
            assert!(w[1].0 - w[0].0 >= 1000);
        }
        // The holder never went: no AllClear, the lockspace is not stopped.
        assert!(d.actions(|a| matches!(a, Action::AllClear)).is_empty());
        assert!(!d.ls.is_stopped());
    }

    #[test]
    fn all_clear_stops_without_releasing_a_lease_it_could_not_renew() {
        let mut disks = Disks::new(lockspace_area("LS", 8, 0, 1), vec![]);
        let mut d = LsDriver::new(ls_config("LS", 2, "host-b"), 50_000);
        d.step(&mut disks, Event::Start);
        d.run_until(&mut disks, 60_000, |_| vec![]);
        let before = on_disk(&disks, 2);
        disks.fail_from_ms = Some(60_000);
        d.run_until(&mut disks, 80_000, |_| vec![]);
        assert_eq!(d.actions(|a| matches!(a, Action::AllClear)).len(), 1);
        assert!(d.ls.is_stopped());
        assert_eq!(d.actions(|a| matches!(a, Action::Stopped)).len(), 1);
        assert_eq!(
            on_disk(&disks, 2),
            before,
            "nothing written after the failure"
        );
    }

    #[test]
    fn stop_releases_the_host_id() {
        let mut disks = Disks::new(lockspace_area("LS", 8, 0, 1), vec![]);
        let mut d = LsDriver::new(ls_config("LS", 4, "host-d"), 7_000);
        d.step(&mut disks, Event::Start);
        d.run_until(&mut disks, 15_000, |_| vec![]);
        assert!(on_disk(&disks, 4).timestamp > 0);
        d.step(&mut disks, Event::Stop);
        let lr = on_disk(&disks, 4);
        assert_eq!((lr.timestamp, lr.owner_generation), (0, 1));
        assert!(d.ls.is_stopped());
        // Stopping again does nothing.
        d.step(&mut disks, Event::Stop);
        assert_eq!(d.actions(|a| matches!(a, Action::Stopped)).len(), 1);
    }

    #[test]
    fn stop_during_the_acquire_wait_fails_the_join() {
        let mut disks = Disks::new(lockspace_area("LS", 8, 0, 1), vec![]);
        let mut d = LsDriver::new(ls_config("LS", 1, "host-a"), 7_000);
        d.step(&mut disks, Event::Start);
        d.step(&mut disks, Event::Stop);
        let j = d.actions(|a| matches!(a, Action::Joined(_)));
        assert!(matches!(&j[..], [(_, Action::Joined(Err(e)))] if e.rv == rv::SANLK_ERROR));
        assert_eq!(d.ls.status().acquire_last_result, rv::SANLK_ERROR);
    }

    #[test]
    fn watchdog_is_connected_armed_refreshed_and_disarmed() {
        let mut disks = Disks::new(lockspace_area("LS", 8, 0, 1), vec![]);
        let mut cfg = ls_config("LS", 1, "host-a");
        cfg.use_watchdog = true;
        let mut d = LsDriver::new(cfg.clone(), 7_000);
        d.step(&mut disks, Event::Start);
        d.run_until(&mut disks, 20_000, |_| vec![]);
        let lr = joined(&d);
        let act = d.actions(|a| matches!(a, Action::WatchdogActivate { .. }));
        assert!(
            matches!(act[0].1, Action::WatchdogActivate { renewal, expire, .. } if renewal == lr.timestamp && expire == lr.timestamp + 8)
        );
        let refreshes = d.actions(|a| matches!(a, Action::WatchdogRefresh { .. }));
        assert!(refreshes.len() >= 3);
        d.step(&mut disks, Event::Stop);
        assert_eq!(d.actions(|a| matches!(a, Action::WatchdogDisarm)).len(), 1);

        // wdmd absent: the join fails before touching the lease.
        let mut disks = Disks::new(lockspace_area("LS", 8, 0, 1), vec![]);
        let mut d = LsDriver::new(cfg.clone(), 7_000);
        d.wdmd_ok = false;
        d.step(&mut disks, Event::Start);
        let j = d.actions(|a| matches!(a, Action::Joined(_)));
        assert!(matches!(&j[..], [(_, Action::Joined(Err(e)))] if e.rv == rv::SANLK_WD_ERROR));
        assert_eq!(on_disk(&disks, 1).timestamp, 0);
        assert_eq!(disks.ios, 0);
    }

    #[test]
    fn a_failed_lockspace_no_longer_refreshes_the_watchdog() {
        let mut disks = Disks::new(lockspace_area("LS", 8, 0, 1), vec![]);
        let mut cfg = ls_config("LS", 1, "host-a");
        cfg.use_watchdog = true;
        let mut d = LsDriver::new(cfg, 7_000);
        d.step(&mut disks, Event::Start);
        d.run_until(&mut disks, 20_000, |_| vec![]);
        disks.fail_from_ms = Some(20_000);
        d.run_until(&mut disks, 40_000, |_| vec![Holder::plain(7)]);
        disks.fail_from_ms = None;
        d.run_until(&mut disks, 50_000, |_| vec![Holder::plain(7)]);
        let last_refresh = d.actions(|a| matches!(a, Action::WatchdogRefresh { .. }));
        assert!(
            last_refresh.last().unwrap().0 < 21_000,
            "refreshed after the failure"
        );
        // Renewals came back, yet the lockspace stays failed.
        assert!(renewals(&d).last().unwrap().1.result.is_ok());
        assert!(d.ls.space_dead());
    }

    #[test]
    fn removal_sigkills_and_leaves_the_stop_to_the_remover() {
        let mut disks = Disks::new(lockspace_area("LS", 8, 0, 1), vec![]);
        let mut d = LsDriver::new(ls_config("LS", 1, "host-a"), 7_000);
        d.step(&mut disks, Event::Start);
        d.run_until(&mut disks, 12_000, |_| vec![]);
        d.step(&mut disks, Event::Remove);
        assert!(d.ls.space_dead());
        let mut holders = vec![Holder::plain(9)];
        d.run_until(&mut disks, 13_000, |_| std::mem::take(&mut holders));
        let sigs = d.actions(|a| matches!(a, Action::Signal { .. }));
        assert!(matches!(
            sigs[0].1,
            Action::Signal {
                pid: 9,
                signal: Signal::Kill
            }
        ));
        d.run_until(&mut disks, 15_000, |_| vec![]);
        assert!(d.actions(|a| matches!(a, Action::AllClear)).is_empty());
        assert!(!d.ls.is_stopped());
        d.step(&mut disks, Event::Stop);
        assert!(d.ls.is_stopped());
        assert_eq!(on_disk(&disks, 1).timestamp, 0, "released");
    }

    #[test]
    fn hosts_are_checked_only_after_add_lockspace_returned() {
        let mut disks = Disks::new(lockspace_area("LS", 8, 0, 1), vec![]);
        let mut other = LsDriver::new(ls_config("LS", 2, "host-b"), 1_000);
        other.step(&mut disks, Event::Start);
        other.run_until(&mut disks, 4_000, |_| vec![]);
        let mut d = LsDriver::new(ls_config("LS", 1, "host-a"), 4_000);
        d.step(&mut disks, Event::Start);
        d.run_until(&mut disks, 6_600, |_| vec![]);
        assert_eq!(renewals(&d).len(), 1, "first renewal made while adding");
        assert!(!d.ls.hosts().checked());
        d.step(&mut disks, Event::Activated);
        d.run_until(&mut disks, 7_200, |_| vec![]);
        assert!(
            d.ls.hosts().checked(),
            "the renewal read is taken in at the next poll"
        );
        assert_eq!(d.ls.host_status(2).unwrap().owner_id, 2);
    }

    #[test]
    fn next_tick_is_the_fail_time_while_renewing() {
        let mut disks = Disks::new(lockspace_area("LS", 8, 0, 1), vec![]);
        let mut d = LsDriver::new(ls_config("LS", 1, "host-a"), 7_000);
        d.step(&mut disks, Event::Start);
        d.run_until(&mut disks, 9_500, |_| vec![]);
        let last = d.ls.status().renewal_last_success;
        assert_eq!(d.ls.next_tick_ms(d.now()), (last + 8) * 1000);
    }
}
