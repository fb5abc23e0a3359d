//! A joined lockspace in the daemon: the core's lockspace machine
//! ([`super::core::lockspace`], which acquires, renews, judges, fails and
//! releases), run on the I/O engine ([`crate::io::engine`]: its I/O one at
//! a time, its timers, and its steps on the engine's thread, so that a
//! thousand lockspaces need no thread of their own), and what the daemon
//! keeps beside it for its clients (lists, renewal histories, event fds,
//! wdmd).
//!
//! Lock order: `Daemon::spaces` before `Space::state`; `Space::state` is
//! never held while submitting I/O, talking to wdmd, or taking another
//! Space lock (`watchdog`, `event_fds`, `on_finished` are taken alone).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tracing::{error, info, warn};

pub use super::core::lockspace::SizesError;
use super::core::lockspace::{
    Action, Event, Lockspace, LockspaceConfig, RenewalReport, lockspace_sizes,
};
use super::core::resource::LockspaceView;
use super::core::{Id, IoFailure, Knobs, Layout};
use super::engine::{self, Place};
use crate::geometry::Geometry;
use crate::history::{self, Moment, RenewalAttempt, SpaceEvent};
use crate::hosts::{HostEvent, HostStatus};
use crate::io::{Disk, FileId, FileProblem};
use crate::metrics::Histogram;
use crate::ondisk::Name;
use crate::rv;
use crate::timeouts::{Timeouts, monotime_ms};
use crate::wdmd;

/// Which of sanlock's three lists a lockspace is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceList {
    Adding,
    Active,
    Removing,
}

/// One renewal, for `client renewal`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenewalEntry {
    pub timestamp: u64,
    pub read_ms: u64,
    pub write_ms: u64,
    pub next_timeouts: u32,
    pub next_errors: u32,
}

/// The lockspace's machine and what the daemon keeps beside it, under one lock.
pub struct SpaceState {
    pub list: SpaceList,
    /// The lease state: host_id, generation, renewals, other hosts, failure.
    pub core: Lockspace,
    pub external_used: bool,
    pub used_by_orphans: bool,
    /// Times removal found the lockspace still in use.
    pub used_retries: u32,
    pub history: VecDeque<RenewalEntry>,
    pub history_size: usize,
    /// The rindex command running in this lockspace (sanlock's RX_OP_*),
    /// 0 for none: one at a time, and the lockspace cannot be removed meanwhile.
    pub rindex_op: u32,
    /// Our last renewal attempts, for `host_status --history`.
    pub renewals: VecDeque<RenewalAttempt>,
    /// The core's I/O and timers, to hand the engine in order.
    queue: VecDeque<Action>,
    /// How the core's actions are being carried out.
    run: Runner,
    /// Early warnings of lease loss (see `early_warning.rs`).
    pub warn: crate::early_warning::Watch,
    /// The lockspace's file deleted, replaced or truncated under us.
    pub lease_file: Option<FileProblem>,
    /// What happened to the lockspace itself, for the history.
    pub events: VecDeque<SpaceEvent>,
}

impl SpaceState {
    pub fn sector_size(&self) -> u32 {
        self.core.layout().map_or(0, |l| l.sector_size as u32)
    }

    pub fn align_size(&self) -> u32 {
        self.core.layout().map_or(0, |l| l.align_size as u32)
    }

    pub fn space_dead(&self) -> bool {
        self.core.space_dead()
    }
}

/// Where the lockspace's actions stand on the engine.
#[derive(Default)]
struct Runner {
    /// The lockspace's file, open from the start on.
    disk: Option<Disk>,
    started: bool,
    /// An I/O is with the engine (the core's I/O goes one at a time).
    in_flight: bool,
    /// The file is being checked before a renewal's I/O.
    checking: bool,
    /// The check found the file changed: the renewal's read fails unread.
    stale: bool,
    /// The core stopped and its last I/O is over.
    finished: bool,
}

/// A lockspace's renewal figures for the metrics endpoint: latency of
/// successful renewals (read + write) and the attempts that failed (timed
/// out or not). The daemon keeps them per lockspace name beyond the
/// lockspace's life, so that counters never go back when it is rejoined.
#[derive(Default)]
pub struct RenewCounters {
    pub latency: Mutex<Histogram>,
    pub errors: AtomicU64,
    pub io_timeouts: AtomicU64,
    /// Early warnings raised, by reason.
    pub warnings: Mutex<std::collections::BTreeMap<crate::early_warning::Reason, u64>>,
}

/// The wdmd connection of a `-w 1` lockspace. Once disarmed it sends
/// nothing more: a refresh decided before the disarm must not re-arm it.
#[derive(Default)]
pub struct WatchdogConn {
    conn: Option<wdmd::Conn>,
    disarmed: bool,
}

/// A lockspace this daemon has been asked to join.
pub struct Space {
    pub space_id: u32,
    pub name: Name,
    pub host_id: u64,
    pub path: PathBuf,
    pub offset: u64,
    pub io_timeout: u64,
    pub our_name: Name,
    pub watchdog_fire_timeout: u64,
    pub set_bitmap_seconds: u64,
    pub watchdog: Mutex<WatchdogConn>,
    pub state: Mutex<SpaceState>,
    /// Signalled whenever the state changes (waiters, the lockspace thread).
    pub changed: Condvar,
    /// Asked to stop: resource operations waiting in it give up.
    pub stop: AtomicBool,
    /// Another host asked for one of our resources (its bit in our slot),
    /// or a client asked us to examine: the main loop reads the request
    /// records of what we hold here.
    pub examine: AtomicBool,
    /// rem_lockspace asked for it (not a failure).
    pub external_remove: AtomicBool,
    /// Run once the lockspace has finished (its core stopped, its I/O over).
    on_finished: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    /// Ourselves, for the engine's callbacks.
    me: OnceLock<Weak<Space>>,
    /// Stopped and its host_id released: the main loop drops it at its
    /// next pass (sanlock's free_lockspaces), so that `inq_lockspace` says
    /// "in progress" for a while, as sanlock's does.
    pub removed: AtomicBool,
    pub event_fds: Mutex<Vec<std::os::unix::net::UnixStream>>,
    pub counters: Arc<RenewCounters>,
}

/// What add_lockspace asks for, beyond where the lockspace is.
pub struct SpaceOptions {
    pub io_timeout: u64,
    pub our_name: Name,
    pub watchdog_fire_timeout: u64,
    pub set_bitmap_seconds: u64,
    pub history_size: usize,
    pub kill_grace_seconds: Option<u64>,
    /// `-w 1`: a host_id may only be held with a watchdog behind it.
    pub use_watchdog: bool,
}

impl Space {
    pub fn new(
        space_id: u32,
        name: Name,
        host_id: u64,
        path: PathBuf,
        offset: u64,
        o: SpaceOptions,
    ) -> Space {
        let core = Lockspace::new(LockspaceConfig {
            space_id,
            space_name: name,
            host_id,
            our_name: o.our_name,
            io_timeout: o.io_timeout,
            watchdog_fire_timeout: o.watchdog_fire_timeout,
            kill_grace_seconds: o.kill_grace_seconds,
            set_bitmap_seconds: o.set_bitmap_seconds,
            use_watchdog: o.use_watchdog,
            layout: None,
            sizes_read_len: 4096,
            knobs: Knobs::default(),
        });
        Space {
            space_id,
            name,
            host_id,
            path,
            offset,
            io_timeout: o.io_timeout,
            our_name: o.our_name,
            watchdog_fire_timeout: o.watchdog_fire_timeout,
            set_bitmap_seconds: o.set_bitmap_seconds,
            watchdog: Mutex::new(WatchdogConn::default()),
            state: Mutex::new(SpaceState {
                list: SpaceList::Adding,
                core,
                external_used: false,
                used_by_orphans: false,
                used_retries: 0,
                history: VecDeque::new(),
                history_size: o.history_size,
                rindex_op: 0,
                renewals: VecDeque::new(),
                queue: VecDeque::new(),
                run: Runner::default(),
                warn: crate::early_warning::Watch::new(
                    Default::default(),
                    &name.to_string_lossy(),
                    host_id,
                    o.io_timeout,
                    o.watchdog_fire_timeout,
                ),
                lease_file: None,
                events: VecDeque::new(),
            }),
            counters: Arc::default(),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            examine: AtomicBool::new(false),
            external_remove: AtomicBool::new(false),
            on_finished: Mutex::new(Vec::new()),
            me: OnceLock::new(),
            removed: AtomicBool::new(false),
            event_fds: Mutex::new(Vec::new()),
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            io_timeout: self.io_timeout,
            watchdog_fire_timeout: self.watchdog_fire_timeout,
        }
    }

    /// The lockspace's file as it keeps it open (None before its start).
    pub fn disk(&self) -> Option<Disk> {
        self.state.lock().run.disk.clone()
    }

    /// Opens the lockspace's file and starts joining, on the engine.
    pub fn start(self: &Arc<Self>) {
        let _ = self.me.set(Arc::downgrade(self));
        self.state.lock().run.started = true;
        match Disk::open(&self.path) {
            Ok(disk) => {
                let mut st = self.state.lock();
                // The geometry read asks for at least one device sector.
                st.core
                    .set_sizes_read_len(4096.max(disk.device_sector as usize));
                st.run.disk = Some(disk);
            }
            Err(e) => {
                error!(space = %self.name, "open {}: {e}", self.path.display());
                self.reply(Event::OpenFailed(e.into()));
                return;
            }
        }
        for a in self.step(Event::Start) {
            warn!(space = %self.name, "unexpected action {a:?}");
        }
    }

    /// Steps the core with `ev` and performs what can be done at once:
    /// I/O and timers go to the engine, the rest is done here. Returns the
    /// actions that need the daemon (the kill sequence).
    pub fn step(&self, ev: Event) -> Vec<Action> {
        let out: Vec<Action> = {
            let mut st = self.state.lock();
            st.core.step(engine::now(), ev);
            let mut out = Vec::new();
            for a in st.core.ready() {
                match a {
                    Action::Io(_) | Action::Timer { .. } => st.queue.push_back(a),
                    // The renewal's I/O waits for the file check.
                    Action::RenewalStarted => {
                        st.run.checking = true;
                        out.push(a);
                    }
                    other => out.push(other),
                }
            }
            self.changed.notify_all();
            out
        };
        let rest = out.into_iter().filter_map(|a| self.perform(a)).collect();
        self.pump();
        rest
    }

    /// Hands the engine the core's next timers and its next I/O (one at a
    /// time); marks the lockspace finished once the core has stopped and
    /// nothing is left.
    fn pump(&self) {
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        let io_engine = crate::io::engine::get();
        loop {
            let mut st = self.state.lock();
            if st.run.in_flight || st.run.checking || st.run.finished {
                return;
            }
            match st.queue.pop_front() {
                Some(Action::Timer { id, at_ms }) => {
                    drop(st);
                    let at =
                        Instant::now() + Duration::from_millis(at_ms.saturating_sub(monotime_ms()));
                    let sp = me.clone();
                    io_engine.at(at, Box::new(move || sp.on_timer(id)));
                }
                Some(Action::Io(io)) => {
                    st.run.in_flight = true;
                    let stale = std::mem::take(&mut st.run.stale);
                    let disk = st.run.disk.clone();
                    drop(st);
                    let sp = me.clone();
                    let id = io.id;
                    let done = move |result| sp.on_io(id, result);
                    match disk {
                        // The file changed under us: the renewal fails unread.
                        _ if stale => io_engine
                            .soon(Box::new(move || done(Err(IoFailure::code(-libc::ESTALE))))),
                        Some(disk) => Place::new(disk, self.offset).perform_then(&io, done),
                        None => io_engine
                            .soon(Box::new(move || done(Err(IoFailure::code(-libc::ENODEV))))),
                    }
                    return;
                }
                Some(_) => {}
                None => {
                    if !st.core.is_stopped() {
                        return;
                    }
                    st.run.finished = true;
                    self.changed.notify_all();
                    drop(st);
                    // The lockspace is over: close the wdmd connection.
                    self.watchdog.lock().conn.take();
                    let finished = std::mem::take(&mut *self.on_finished.lock());
                    for f in finished {
                        f();
                    }
                    return;
                }
            }
        }
    }

    fn on_io(&self, id: Id, result: super::core::IoResult) {
        self.state.lock().run.in_flight = false;
        for a in self.step(Event::Io { id, result }) {
            warn!(space = %self.name, "unexpected action {a:?}");
        }
    }

    fn on_timer(&self, id: Id) {
        if self.state.lock().run.finished {
            return;
        }
        for a in self.step(Event::Timer { id }) {
            warn!(space = %self.name, "unexpected action {a:?}");
        }
    }

    /// Before each renewal: checks the file (see [`Space::judge_file`]),
    /// then lets the renewal's I/O go.
    fn check_file(&self) {
        let (disk, need) = {
            let st = self.state.lock();
            (st.run.disk.clone(), self.offset + st.align_size() as u64)
        };
        let Some(disk) = disk else {
            self.state.lock().run.checking = false;
            return self.pump();
        };
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        let d = disk.clone();
        disk.identity_then(Duration::from_secs(self.io_timeout), move |ident| {
            let stale = me.judge_file(&d, need, ident).is_some();
            {
                let mut st = me.state.lock();
                st.run.checking = false;
                st.run.stale = stale;
            }
            me.pump();
        });
    }

    /// Performs an action that needs only this lockspace; hands back the
    /// others.
    fn perform(&self, a: Action) -> Option<Action> {
        match a {
            Action::WatchdogConnect { id } => {
                let ok = self.connect_watchdog();
                self.reply(Event::Watchdog { id, ok });
            }
            Action::WatchdogActivate {
                id,
                renewal,
                expire,
            } => {
                let ok = self.activate_watchdog(renewal, expire);
                self.reply(Event::Watchdog { id, ok });
            }
            Action::WatchdogRefresh { renewal, expire } => {
                let mut wd = self.watchdog.lock();
                let disarmed = wd.disarmed;
                if let (Some(conn), false) = (wd.conn.as_mut(), disarmed)
                    && let Err(e) = conn.test_live(renewal, expire)
                {
                    error!(space = %self.name, "wdmd_test_live {renewal} failed: {e}");
                }
            }
            Action::WatchdogDisarm => self.disarm_watchdog(),
            Action::Joined(Ok(lr)) => {
                let mut st = self.state.lock();
                push_history(
                    &mut st,
                    RenewalEntry {
                        timestamp: lr.timestamp,
                        ..Default::default()
                    },
                );
            }
            Action::RenewalStarted => {
                self.warn_renewal_started();
                self.check_file();
            }
            Action::Renewal(r) => {
                let outcome = r.result.as_ref().map(|lr| lr.timestamp).map_err(|e| e.rv);
                let total_ms = r.total_ms;
                self.record_renewal(*r);
                self.warn_renewal_done(total_ms, outcome);
            }
            Action::HostEvents(events) => self.deliver_events(&events),
            Action::Examine => self.examine.store(true, Ordering::Relaxed),
            // Logged by the core; the kill sequence goes on at the ticks.
            Action::Joined(Err(_))
            | Action::Stopped
            | Action::Failed { .. }
            | Action::Stuck { .. } => {}
            Action::Io(_) | Action::Timer { .. } => unreachable!("queued for the engine"),
            other => return Some(other),
        }
        None
    }

    /// Feeds an answer back; nothing the daemon must act on can follow one.
    fn reply(&self, ev: Event) {
        for a in self.step(ev) {
            warn!(space = %self.name, "unexpected action {a:?}");
        }
    }

    fn record_renewal(&self, r: RenewalReport) {
        let at = Moment {
            mono: r.attempt.secs(),
            wall: engine::now().wall,
        };
        let mut st = self.state.lock();
        match &r.result {
            Ok(lr) => {
                let secs = (r.read_ms + r.write_ms) as f64 / 1000.0;
                self.counters.latency.lock().observe(secs);
                history::push_renewal(
                    &mut st.renewals,
                    RenewalAttempt {
                        at,
                        timestamp: lr.timestamp,
                        read_ms: r.read_ms,
                        write_ms: r.write_ms,
                        total_ms: r.total_ms,
                        result: 0,
                    },
                );
                push_history(
                    &mut st,
                    RenewalEntry {
                        timestamp: lr.timestamp,
                        read_ms: r.read_ms,
                        write_ms: r.write_ms,
                        ..Default::default()
                    },
                );
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                if e.rv == rv::SANLK_AIO_TIMEOUT {
                    self.counters.io_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                history::push_renewal(
                    &mut st.renewals,
                    RenewalAttempt {
                        at,
                        timestamp: 0,
                        read_ms: r.read_ms,
                        write_ms: 0,
                        total_ms: r.total_ms,
                        result: e.rv,
                    },
                );
                if let Some(h) = st.history.back_mut() {
                    if e.rv == rv::SANLK_AIO_TIMEOUT {
                        h.next_timeouts += 1;
                    } else {
                        h.next_errors += 1;
                    }
                }
            }
        }
    }

    /// Before each renewal: is the file we opened still the lockspace at
    /// its path (not deleted, replaced or truncated)? sanlock renews a
    /// deleted file's inode on, unseen by the hosts that open the path
    /// anew; here a changed file makes the renewal fail (-ESTALE), so the
    /// lockspace is lost by sanlock's rule for failed renewals (its
    /// holders killed after id_renewal_fail_seconds) unless the file comes
    /// back first. Said in the log, `status -D`, the metrics and the
    /// history. None: no problem, or stat did not answer in time (the
    /// renewal's own I/O then says what it can).
    fn judge_file(
        &self,
        disk: &Disk,
        need: u64,
        ident: Option<(FileId, Option<FileId>)>,
    ) -> Option<FileProblem> {
        let (open, named) = ident?;
        let now = FileProblem::of(disk.kind, &open, named.as_ref(), need);
        let mut st = self.state.lock();
        if now == st.lease_file {
            return now;
        }
        let path = self.path.display();
        let what = match now {
            Some(p) => {
                let detail = match p {
                    FileProblem::Deleted if named.is_none() => "no such file".to_string(),
                    FileProblem::Deleted => format!("link count {}", open.nlink),
                    FileProblem::Replaced => match named {
                        Some(n) if disk.kind == crate::io::DiskKind::Block => {
                            format!("device {:#x} was {:#x}", n.rdev, open.rdev)
                        }
                        Some(n) => format!("inode {} was {}", n.ino, open.ino),
                        None => String::new(),
                    },
                    FileProblem::Truncated => {
                        format!("{} bytes, the lockspace needs {need}", open.size)
                    }
                };
                format!(
                    "lockspace file {}: {path} ({detail}); renewals do not count until it is back, \
                     the lockspace is lost {}s after the last one",
                    p.as_str(),
                    self.timeouts().id_renewal_fail_seconds()
                )
            }
            None => format!("lockspace file back: {path} is the file joined"),
        };
        st.lease_file = now;
        history::push_event(
            &mut st.events,
            SpaceEvent {
                at: Moment::now(),
                what: what.clone(),
            },
        );
        drop(st);
        if now.is_some() {
            error!(space = %self.name, "{what}");
        } else {
            warn!(space = %self.name, "{what}");
        }
        now
    }

    /// `status -D`: the state of the lockspace's file, when it is wrong
    /// (sanlock has no such field; it is added only then).
    pub fn lease_file_field_of(&self, st: &SpaceState) -> String {
        match st.lease_file {
            Some(p) => format!(" lease_file={}", p.as_str()),
            None => String::new(),
        }
    }

    /// Judges every host now and logs those whose state changed, with the
    /// rule (the history keeps them). Called at each main-loop tick and by
    /// readers of the history or metrics, so that the moments recorded
    /// are at most a second late.
    pub fn judge_hosts(&self) {
        let changes = self.state.lock().core.judge_hosts(engine::now());
        for (host_id, c) in changes {
            let from = c.from.map(|f| f.as_str()).unwrap_or("-");
            if matches!(
                c.to,
                crate::hosts::HostState::Fail | crate::hosts::HostState::Dead
            ) {
                warn!(space = %self.name, "host {host_id} {from} -> {}: {}", c.to, c.rule);
            } else {
                info!(space = %self.name, "host {host_id} {from} -> {}: {}", c.to, c.rule);
            }
        }
    }

    /// What `host_status --history` shows: judged now, then the rings.
    pub fn history(&self) -> history::LockspaceHistory {
        self.judge_hosts();
        let now = Moment::now();
        let st = self.state.lock();
        let table = st.core.hosts();
        let hosts = table
            .history
            .iter()
            .filter_map(|(&host_id, h)| {
                let hs = table.hosts.get(host_id as usize - 1)?;
                let v = hs.judge(now.mono, self.host_id, self.watchdog_fire_timeout);
                Some(history::HostReport {
                    host_id,
                    state: v.state,
                    rule: v.rule,
                    generation: hs.owner_generation,
                    timestamp: hs.timestamp,
                    io_timeout: hs.io_timeout,
                    owner_name: hs.owner_name.to_string_lossy(),
                    seen: h.seen.iter().cloned().collect(),
                    changes: h.changes.iter().cloned().collect(),
                })
            })
            .collect();
        history::LockspaceHistory {
            lockspace: self.name.to_string_lossy(),
            host_id: self.host_id,
            io_timeout: self.io_timeout,
            watchdog_fire_timeout: self.watchdog_fire_timeout,
            now,
            renewals: st.renewals.iter().cloned().collect(),
            hosts,
            warnings: st.warn.records.iter().cloned().collect(),
            events: st.events.iter().cloned().collect(),
        }
    }

    /// wdmd_connect: false if wdmd is not there. (sanlock 3.8.5 sends
    /// nothing more before the acquire; open_watchdog came later.)
    fn connect_watchdog(&self) -> bool {
        match wdmd::Conn::connect() {
            Ok(c) => {
                self.watchdog.lock().conn = Some(c);
                true
            }
            Err(e) => {
                error!(space = %self.name, "connect_watchdog {}: {e}", wdmd::socket_path().display());
                false
            }
        }
    }

    /// Registers this lockspace with wdmd and arms it.
    fn activate_watchdog(&self, renewal: u64, expire: u64) -> bool {
        let name = wdmd::client_name(&self.name.to_string_lossy(), self.host_id);
        let mut wd = self.watchdog.lock();
        let Some(conn) = wd.conn.as_mut() else {
            return false;
        };
        match conn.activate(&name, self.watchdog_fire_timeout as u32, renewal, expire) {
            Ok(()) => {
                info!(space = %self.name, "wdmd {name} armed: renewal {renewal} expire {expire}");
                true
            }
            Err(e) => {
                error!(space = %self.name, "activate_watchdog {name} failed: {e}");
                wd.conn = None;
                false
            }
        }
    }

    /// sanlock's deactivate_watchdog: test_live(0, 0), once; from whichever
    /// thread stops the lockspace first, without waiting for its I/O.
    fn disarm_watchdog(&self) {
        let mut wd = self.watchdog.lock();
        if wd.disarmed {
            return;
        }
        wd.disarmed = true;
        if let Some(conn) = wd.conn.as_mut() {
            info!(space = %self.name, "wdmd_test_live 0 0 to disable");
            if let Err(e) = conn.deactivate() {
                error!(space = %self.name, "wdmd_test_live 0 0 failed: {e}");
            }
        }
    }

    /// Sends events addressed to us to every `reg_event` fd; a fd that
    /// cannot take it is dropped, as by sanlock's send_event_callbacks.
    /// Event 0 is only a request.
    pub fn deliver_events(&self, events: &[HostEvent]) {
        use crate::proto::{
            EventCb, Header, SM_CB_GET_EVENT, SM_CB_PROTO, SM_MAGIC, SanlkHostEvent, WireStruct,
        };
        use std::io::Write;
        let mut fds = self.event_fds.lock();
        for ev in events.iter().filter(|e| e.event != 0) {
            let cb = EventCb {
                h: Header {
                    magic: SM_MAGIC,
                    version: SM_CB_PROTO,
                    cmd: SM_CB_GET_EVENT,
                    length: EventCb::SIZE as u32,
                    ..Default::default()
                },
                he: SanlkHostEvent {
                    host_id: ev.host_id,
                    generation: ev.generation,
                    event: ev.event,
                    data: ev.data,
                },
                from_host_id: ev.from_host_id,
                from_generation: ev.from_generation,
            };
            let bytes = cb.encode();
            fds.retain_mut(|s| s.set_nonblocking(true).is_ok() && s.write_all(&bytes).is_ok());
        }
    }

    /// Drops event fds whose client ended them (wrote 1 or closed).
    pub fn prune_event_fds(&self) {
        let mut fds = self.event_fds.lock();
        fds.retain(|s| {
            let mut b = [0u8; 4];
            let _ = s.set_nonblocking(true);
            match nix::sys::socket::recv(
                std::os::unix::io::AsRawFd::as_raw_fd(s),
                &mut b,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            ) {
                Err(nix::errno::Errno::EAGAIN) => true,
                Ok(4) => u32::from_le_bytes(b) != 1,
                _ => false,
            }
        });
    }

    /// Asks the lockspace to stop (and release), and waits until it has
    /// finished (its last I/O over, or timed out). Callers stop a
    /// lockspace nothing holds any more (a forced shutdown releases the
    /// host_id regardless), so wdmd is disarmed at once, not after the
    /// last I/O, which may be stuck for long.
    pub fn stop_and_join(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.reply(Event::Stop);
        let mut st = self.state.lock();
        while st.run.started && !st.run.finished {
            self.changed.wait(&mut st);
        }
    }

    /// Asks the lockspace to stop, and runs `then` once it has finished
    /// (on the engine's thread, or here if it already has).
    pub fn stop_then(&self, then: impl FnOnce() + Send + 'static) {
        self.stop.store(true, Ordering::Relaxed);
        self.on_finished.lock().push(Box::new(then));
        self.reply(Event::Stop);
        let st = self.state.lock();
        if st.run.finished || !st.run.started {
            drop(st);
            let finished = std::mem::take(&mut *self.on_finished.lock());
            for f in finished {
                f();
            }
        }
    }
}

/// A lockspace as a resource operation sees it: asked under its lock at
/// each question. An acquire is handed out only while the lockspace is on
/// the active list and has not failed.
pub struct SpaceView(pub Arc<Space>);

impl LockspaceView for SpaceView {
    fn host_status(&self, host_id: u64) -> Result<Option<HostStatus>, i32> {
        Ok(self.0.state.lock().core.host_status(host_id).cloned())
    }
    fn instance(&self) -> Option<super::core::lockspace::Instance> {
        let st = self.0.state.lock();
        if st.list == SpaceList::Active {
            st.core.instance()
        } else {
            None
        }
    }
    fn layout(&self) -> Option<Layout> {
        self.0.state.lock().core.layout()
    }
    fn space_name(&self) -> Name {
        self.0.name
    }
}

/// The geometry of the lockspace at `offset`, from host 1's delta lease.
pub fn read_lockspace_sizes(
    disk: &Disk,
    offset: u64,
    timeout: Duration,
) -> Result<Geometry, SizesError> {
    let buf = disk
        .read(offset, 4096.max(disk.device_sector as usize), timeout)
        .map_err(|e| SizesError::Read(e.sanlk_rv()))?;
    lockspace_sizes(&buf)
}

fn push_history(st: &mut SpaceState, e: RenewalEntry) {
    if st.history_size == 0 {
        return;
    }
    if st.history.len() == st.history_size {
        st.history.pop_front();
    }
    st.history.push_back(e);
}
