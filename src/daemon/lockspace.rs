//! A joined lockspace: the thread that acquires our host_id, renews it every
//! 2 * io_timeout, reads everyone's delta lease at each renewal to judge
//! them, and releases the host_id when the lockspace is removed. The lease
//! logic is in [`crate::delta`] and [`crate::hosts`]; this is the driver.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing::{error, info, warn};

use crate::delta::{self, DeltaParams};
use crate::geometry::Geometry;
use crate::history::{self, Moment, RenewalAttempt, SpaceEvent};
use crate::hosts::{HostEvent, HostTable};
use crate::io::{Area, Disk, FileProblem};
use crate::metrics::Histogram;
use crate::ondisk::{self, HOSTID_BITMAP_SIZE, LeaderRecord, Name};
use crate::rv;
use crate::timeouts::Timeouts;
use crate::wdmd;

use crate::timeouts::monotime;

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

/// What the lockspace thread reports, under one lock.
#[derive(Debug)]
pub struct SpaceState {
    pub list: SpaceList,
    pub sector_size: u32,
    pub align_size: u32,
    pub host_generation: u64,
    /// 0 until the acquire finishes; then SANLK_OK (1) or an error.
    pub acquire_last_result: i32,
    pub acquire_last_attempt: u64,
    pub acquire_last_success: u64,
    pub renewal_last_result: i32,
    pub renewal_last_attempt: u64,
    pub renewal_last_success: u64,
    pub corrupt_result: i32,
    pub renew_fail: bool,
    pub space_dead: bool,
    pub external_used: bool,
    pub used_by_orphans: bool,
    /// Times removal found the lockspace still in use.
    pub used_retries: u32,
    pub hosts: HostTable,
    pub history: VecDeque<RenewalEntry>,
    pub history_size: usize,
    /// Our event, sent to hosts whose bit we set (write_id/gen/timestamp).
    pub host_event: (u64, u64, u64),
    pub set_event_time: u64,
    /// The rindex command running in this lockspace (sanlock's RX_OP_*),
    /// 0 for none: one at a time, and the lockspace cannot be removed meanwhile.
    pub rindex_op: u32,
    /// Our last renewal attempts, for `host_status --history`.
    pub renewals: VecDeque<RenewalAttempt>,
    /// A renewal read made while the lockspace was still being added,
    /// observed once it is active: as in sanlock, other hosts are first
    /// checked after add_lockspace has returned, and get_hosts answers
    /// -EAGAIN until then.
    pub unobserved: Option<(Moment, Vec<u8>)>,
    /// Early warnings of lease loss (see `early_warning.rs`).
    pub warn: crate::early_warning::Watch,
    /// The lockspace's file deleted, replaced or truncated under us.
    pub lease_file: Option<FileProblem>,
    /// What happened to the lockspace itself, for the history.
    pub events: VecDeque<SpaceEvent>,
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
    /// `-w 1`: a host_id may only be held with a watchdog behind it.
    pub use_watchdog: bool,
    /// `-w 1`: this lockspace's wdmd connection once the host_id is held,
    /// and what to send it. One lock, so a disarm cannot cross a refresh.
    pub watchdog: Mutex<Option<(wdmd::Conn, wdmd::Keepalive)>>,
    pub state: Mutex<SpaceState>,
    /// Signalled whenever state changes that waiters care about.
    pub changed: Condvar,
    pub stop: AtomicBool,
    /// Another host asked for one of our resources (its bit in our slot),
    /// or a client asked us to examine: the resource thread reads the
    /// request records of what we hold here.
    pub examine: AtomicBool,
    /// rem_lockspace asked for it (not a failure).
    pub external_remove: AtomicBool,
    pub thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub event_fds: Mutex<Vec<std::os::unix::net::UnixStream>>,
    pub counters: Arc<RenewCounters>,
}

impl Space {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        space_id: u32,
        name: Name,
        host_id: u64,
        path: PathBuf,
        offset: u64,
        io_timeout: u64,
        our_name: Name,
        watchdog_fire_timeout: u64,
        set_bitmap_seconds: u64,
        history_size: usize,
    ) -> Space {
        Space {
            space_id,
            name,
            host_id,
            path,
            offset,
            io_timeout,
            our_name,
            watchdog_fire_timeout,
            set_bitmap_seconds,
            use_watchdog: false,
            watchdog: Mutex::new(None),
            state: Mutex::new(SpaceState {
                list: SpaceList::Adding,
                sector_size: 0,
                align_size: 0,
                host_generation: 0,
                acquire_last_result: 0,
                acquire_last_attempt: 0,
                acquire_last_success: 0,
                renewal_last_result: 0,
                renewal_last_attempt: 0,
                renewal_last_success: 0,
                corrupt_result: 0,
                renew_fail: false,
                space_dead: false,
                external_used: false,
                used_by_orphans: false,
                used_retries: 0,
                hosts: HostTable::new(0, host_id),
                history: VecDeque::new(),
                history_size,
                host_event: (0, 0, 0),
                set_event_time: 0,
                rindex_op: 0,
                renewals: VecDeque::new(),
                unobserved: None,
                warn: crate::early_warning::Watch::new(
                    Default::default(),
                    &name.to_string_lossy(),
                    host_id,
                    io_timeout,
                    watchdog_fire_timeout,
                ),
                lease_file: None,
                events: VecDeque::new(),
            }),
            counters: Arc::default(),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            examine: AtomicBool::new(false),
            external_remove: AtomicBool::new(false),
            thread: Mutex::new(None),
            event_fds: Mutex::new(Vec::new()),
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            io_timeout: self.io_timeout,
            watchdog_fire_timeout: self.watchdog_fire_timeout,
        }
    }

    fn set(&self, f: impl FnOnce(&mut SpaceState)) {
        let mut st = self.state.lock().unwrap();
        f(&mut st);
        self.changed.notify_all();
    }

    /// Sleeps `secs` unless asked to stop meanwhile (stop_and_join wakes
    /// the condvar), so an idle lockspace thread wakes once per wait, not
    /// on a polling tick. Returns false if stopped.
    fn sleep_unless_stopped(&self, secs: f64) -> bool {
        let end = std::time::Instant::now() + Duration::from_secs_f64(secs);
        let mut st = self.state.lock().unwrap();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            let now = std::time::Instant::now();
            if now >= end {
                return true;
            }
            st = self.changed.wait_timeout(st, end - now).unwrap().0;
        }
    }

    pub fn start(self: &Arc<Self>) {
        let sp = self.clone();
        let h = std::thread::Builder::new()
            .name(format!("ls-{}", self.space_id))
            .spawn(move || sp.run())
            .expect("spawn lockspace thread");
        *self.thread.lock().unwrap() = Some(h);
    }

    /// Finds the geometry from host 1's leader, as sanlock does before it
    /// acquires (`delta_read_lockspace_sizes`).
    fn read_sizes(&self, disk: &Disk) -> Result<Geometry, i32> {
        read_lockspace_sizes(disk, self.offset, Duration::from_secs(self.io_timeout)).map_err(|e| {
            match e {
                SizesError::Read(rv) => rv,
                SizesError::Magic => rv::SANLK_LEADER_MAGIC,
                SizesError::Version => rv::SANLK_LEADER_VERSION,
                SizesError::SectorSize => rv::SANLK_LEADER_SECTORSIZE,
                SizesError::Geometry => rv::SANLK_ADDLS_SIZES,
            }
        })
    }

    fn run(self: Arc<Self>) {
        let result = self.join_and_renew();
        if let Err(e) = result {
            self.set(|st| {
                if st.acquire_last_result == 0 {
                    st.acquire_last_result = e;
                }
            });
        }
    }

    fn join_and_renew(&self) -> Result<(), i32> {
        let begin = monotime();
        self.set(|st| st.acquire_last_attempt = begin);
        let disk = Disk::open(&self.path).map_err(|e| {
            error!(space = %self.name, "open {}: {e}", self.path.display());
            -libc::ENODEV
        })?;
        let g = self.read_sizes(&disk)?;
        if self.host_id > g.max_hosts() as u64 {
            return Err(rv::SANLK_ADDLS_INVALID_HOSTID);
        }
        // -w 1: holding a host_id is only safe if a watchdog resets this
        // host before others may call it DEAD. As sanlock, reach wdmd
        // before acquiring, to fail fast.
        let wd = if self.use_watchdog {
            Some(self.connect_watchdog()?)
        } else {
            None
        };
        let ss = g.sector_size as usize;
        let io = Duration::from_secs(self.io_timeout);
        let area =
            Area::new(&disk, self.offset, g.align_size as u64, io).map_err(|e| e.sanlk_rv())?;
        self.set(|st| {
            st.sector_size = g.sector_size;
            st.align_size = g.align_size;
            st.hosts = HostTable::new(g.max_hosts() as usize, self.host_id);
        });
        let p = DeltaParams {
            space_name: self.name,
            host_id: self.host_id,
            our_name: self.our_name,
            io_timeout: self.io_timeout,
            sector_size: ss,
            watchdog_fire_timeout: self.watchdog_fire_timeout,
        };
        let slot = (self.host_id - 1) * ss as u64;

        // Acquire our host_id.
        let leader = crate::direct::drive_delta_acquire(&area, p.clone(), |secs| {
            info!(space = %self.name, "delta acquire waits {secs}s");
            self.sleep_unless_stopped(secs as f64)
        })
        .inspect_err(
            |e| warn!(space = %self.name, "host_id {} acquire failed {e}", self.host_id),
        )?;
        info!(space = %self.name, "host_id {} generation {} acquired", self.host_id, leader.owner_generation);
        if let Some(conn) = wd {
            // Armed before anyone may use the lockspace; if wdmd will not
            // take it, give the host_id back (sanlock's activate_watchdog).
            if let Err(e) = self.activate_watchdog(conn, leader.timestamp) {
                let (_, sector) = delta::release_sector(&leader, ss);
                let _ = area.write(slot, &sector);
                return Err(e);
            }
        }
        self.set(|st| {
            st.acquire_last_result = rv::SANLK_OK;
            st.acquire_last_success = leader.timestamp;
            st.renewal_last_result = rv::SANLK_OK;
            st.renewal_last_attempt = begin;
            st.renewal_last_success = leader.timestamp;
            st.host_generation = leader.owner_generation;
            push_history(
                st,
                RenewalEntry {
                    timestamp: leader.timestamp,
                    ..Default::default()
                },
            );
        });

        // Renew until asked to stop.
        let mut last = leader;
        let mut prev_ok = true;
        let renew_every = self.timeouts().id_renewal_seconds();
        // Renewal writes may take as long as the host could stay alive.
        let write_timeout = Duration::from_secs(self.timeouts().host_dead_seconds());
        let renew_area = Area::new(&disk, self.offset, g.align_size as u64, write_timeout)
            .map_err(|e| e.sanlk_rv())?;
        let need = self.offset + g.align_size as u64;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            self.judge_hosts();
            let (last_success, waiting) = {
                let st = self.state.lock().unwrap();
                (st.renewal_last_success, st.unobserved.is_some())
            };
            if monotime().saturating_sub(last_success) < renew_every {
                // Half a second while the first read waits for the add to
                // finish, so hosts are known within a second of it; taken
                // in only after a sleep, as sanlock's main loop does at its
                // next tick, not at the moment the add returns.
                self.sleep_unless_stopped(if waiting { 0.5 } else { 1.0 });
                let pending = {
                    let mut st = self.state.lock().unwrap();
                    if st.list == SpaceList::Active {
                        st.unobserved.take()
                    } else {
                        None
                    }
                };
                if let Some((seen_at, buf)) = pending {
                    self.observe(seen_at, &buf, ss);
                }
                continue;
            }
            if !self.sleep_unless_stopped(0.5) {
                break;
            }
            let attempt = monotime();
            let (bitmap, extra) = self.bitmap_and_extra(attempt);
            self.warn_renewal_started();
            let t0 = std::time::Instant::now();
            // A file that is not the lockspace any more is not renewed.
            let read = match self.check_file(&disk, need) {
                Some(_) => Err(None),
                None => area.read(0, g.align_size as usize).map_err(Some),
            };
            let read_ms = t0.elapsed().as_millis() as u64;
            let result = match read {
                Err(None) => Err(-libc::ESTALE),
                Err(Some(e)) => Err(e.sanlk_rv()),
                Ok(buf) => {
                    let seen_at = Moment::now();
                    let now = seen_at.mono;
                    let active = self.state.lock().unwrap().list == SpaceList::Active;
                    if active {
                        self.observe(seen_at, &buf, ss);
                    } else {
                        self.state.lock().unwrap().unobserved = Some((seen_at, buf.to_vec()));
                    }
                    match delta::renew(&p, &last, prev_ok, &buf, now, extra, &bitmap) {
                        Err(e) => Err(e),
                        Ok((lr, sector)) => {
                            let t1 = std::time::Instant::now();
                            match renew_area.write(slot, &sector) {
                                Ok(()) => Ok((lr, read_ms, t1.elapsed().as_millis() as u64)),
                                Err(e) => Err(e.sanlk_rv()),
                            }
                        }
                    }
                }
            };
            let total_ms = t0.elapsed().as_millis() as u64;
            let outcome = result.as_ref().map(|r| r.0.timestamp).map_err(|e| *e);
            let attempt_at = Moment {
                mono: attempt,
                wall: Moment::now().wall,
            };
            match result {
                Ok((lr, rd, wr)) => {
                    last = lr;
                    prev_ok = true;
                    self.pet_watchdog(Some(lr.timestamp));
                    let secs = (rd + wr) as f64 / 1000.0;
                    self.counters.latency.lock().unwrap().observe(secs);
                    self.set(|st| {
                        history::push_renewal(
                            &mut st.renewals,
                            RenewalAttempt {
                                at: attempt_at,
                                timestamp: lr.timestamp,
                                read_ms: rd,
                                write_ms: wr,
                                total_ms,
                                result: 0,
                            },
                        );
                        st.renewal_last_result = rv::SANLK_OK;
                        st.renewal_last_attempt = attempt;
                        st.renewal_last_success = lr.timestamp;
                        push_history(
                            st,
                            RenewalEntry {
                                timestamp: lr.timestamp,
                                read_ms: rd,
                                write_ms: wr,
                                ..Default::default()
                            },
                        );
                    });
                }
                Err(e) => {
                    prev_ok = false;
                    warn!(space = %self.name, "renewal error {e}");
                    self.pet_watchdog(None);
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    if e == rv::SANLK_AIO_TIMEOUT {
                        self.counters.io_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    self.set(|st| {
                        history::push_renewal(
                            &mut st.renewals,
                            RenewalAttempt {
                                at: attempt_at,
                                timestamp: 0,
                                read_ms,
                                write_ms: 0,
                                total_ms,
                                result: e,
                            },
                        );
                        st.renewal_last_result = e;
                        st.renewal_last_attempt = attempt;
                        if is_corrupt(e) && st.corrupt_result == 0 {
                            st.corrupt_result = e;
                        }
                        if let Some(h) = st.history.back_mut() {
                            if e == rv::SANLK_AIO_TIMEOUT {
                                h.next_timeouts += 1;
                            } else {
                                h.next_errors += 1;
                            }
                        }
                    });
                }
            }
            self.warn_renewal_done(total_ms, outcome);
            self.check_our_lease();
            self.judge_hosts();
        }

        // Usually disarmed already by stop_and_join; this catches a stop
        // that came while wdmd was being armed. Then close the connection.
        self.disarm_watchdog();
        self.watchdog.lock().unwrap().take();

        // Release our host_id if our last renewal left it valid.
        if prev_ok {
            let (_, sector) = delta::release_sector(&last, ss);
            if let Err(e) = area.write(slot, &sector) {
                warn!(space = %self.name, "release of host_id {} failed: {e}", self.host_id);
            }
        }
        Ok(())
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
    fn check_file(&self, disk: &Disk, need: u64) -> Option<FileProblem> {
        let (open, named) = disk.identity(Duration::from_secs(self.io_timeout))?;
        let now = FileProblem::of(disk.kind, &open, named.as_ref(), need);
        let mut st = self.state.lock().unwrap();
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
    /// rule (the history keeps them). Called after each renewal and each
    /// idle wake, and by readers of the history or metrics, so that the
    /// moments recorded are at most a second late.
    /// Takes in what a renewal read of the whole area saw of every host,
    /// and acts on the requests and events found there.
    fn observe(&self, seen_at: Moment, area: &[u8], sector_size: usize) {
        let (events, bad) = {
            let mut st = self.state.lock().unwrap();
            let before: Vec<u64> = st.hosts.bad_leases().map(|(h, _)| h).collect();
            let events = st.hosts.observe_at(seen_at, area, sector_size, &self.name);
            (
                events,
                bad_lease_report(&before, &st.hosts, area, sector_size),
            )
        };
        for line in bad {
            error!(space = %self.name, "{line}");
        }
        if !events.is_empty() {
            self.note_requests(seen_at.mono, &events);
            self.deliver_events(&events);
        }
    }

    pub fn judge_hosts(&self) {
        let changes = {
            let mut st = self.state.lock().unwrap();
            st.hosts
                .judge_all(Moment::now(), self.watchdog_fire_timeout)
        };
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
        let st = self.state.lock().unwrap();
        let hosts = st
            .hosts
            .history
            .iter()
            .filter_map(|(&host_id, h)| {
                let hs = st.hosts.hosts.get(host_id as usize - 1)?;
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

    /// wdmd_connect: SANLK_WD_ERROR if wdmd is not there. (sanlock 3.8.5
    /// sends nothing more before the acquire; open_watchdog came later.)
    fn connect_watchdog(&self) -> Result<wdmd::Conn, i32> {
        let path = wdmd::socket_path();
        wdmd::Conn::connect().map_err(|e| {
            error!(space = %self.name, "connect_watchdog {}: {e}", path.display());
            rv::SANLK_WD_ERROR
        })
    }

    /// Registers this lockspace with wdmd and arms it for the lease just
    /// acquired at `timestamp`.
    fn activate_watchdog(&self, mut conn: wdmd::Conn, timestamp: u64) -> Result<(), i32> {
        let mut ka = wdmd::Keepalive::new(self.io_timeout);
        let (renewal, expire) = ka.arm(timestamp);
        let name = wdmd::client_name(&self.name.to_string_lossy(), self.host_id);
        conn.activate(&name, self.watchdog_fire_timeout as u32, renewal, expire)
            .map_err(|e| {
                error!(space = %self.name, "activate_watchdog {name} failed: {e}");
                rv::SANLK_WD_ERROR
            })?;
        info!(space = %self.name, "wdmd {name} armed: renewal {renewal} expire {expire}");
        *self.watchdog.lock().unwrap() = Some((conn, ka));
        Ok(())
    }

    /// After each renewal attempt: refresh wdmd's expiry if the lease is
    /// still good (see [`wdmd::Keepalive`] for when it is not).
    fn pet_watchdog(&self, renewed: Option<u64>) {
        let failed = {
            let st = self.state.lock().unwrap();
            st.renew_fail || st.corrupt_result != 0
        };
        let mut wd = self.watchdog.lock().unwrap();
        let Some((conn, ka)) = wd.as_mut() else {
            return;
        };
        let was_failed = ka.failed();
        let stopping = self.stop.load(Ordering::Relaxed);
        if let Some((renewal, expire)) = ka.after_renewal(monotime(), renewed, failed, stopping) {
            if let Err(e) = conn.test_live(renewal, expire) {
                error!(space = %self.name, "wdmd_test_live {renewal} failed: {e}");
            }
        } else if ka.failed() && !was_failed {
            error!(space = %self.name, "lockspace lost: wdmd is no longer refreshed; it fires unless every holder is gone");
        }
    }

    /// sanlock's deactivate_watchdog: test_live(0, 0), once; from whichever
    /// thread stops the lockspace first, without waiting for its I/O.
    pub fn disarm_watchdog(&self) {
        let mut wd = self.watchdog.lock().unwrap();
        if let Some((conn, ka)) = wd.as_mut()
            && ka.disarm()
        {
            info!(space = %self.name, "wdmd_test_live 0 0 to disable");
            if let Err(e) = conn.deactivate() {
                error!(space = %self.name, "wdmd_test_live 0 0 failed: {e}");
            }
        }
    }

    /// A lockspace whose renewals have failed for 8 * io_timeout is dead
    /// here: its holders must go (sanlock's `check_our_lease`).
    fn check_our_lease(&self) {
        let now = monotime();
        let fail = self.timeouts().id_renewal_fail_seconds();
        let mut st = self.state.lock().unwrap();
        let gap = now.saturating_sub(st.renewal_last_success);
        if (gap >= fail || st.corrupt_result != 0) && !st.space_dead {
            error!(space = %self.name, "renewal failed for {gap}s: lockspace lost (corrupt_result {})", st.corrupt_result);
            st.renew_fail = true;
            st.space_dead = true;
            self.changed.notify_all();
        } else if gap >= self.timeouts().id_renewal_warn_seconds() {
            warn!(space = %self.name, "renewal is {gap}s late");
        }
    }

    /// The bits we set for other hosts, and our event (`create_bitmap_and_extra`).
    fn bitmap_and_extra(&self, now: u64) -> ([u8; HOSTID_BITMAP_SIZE], (u64, u64, u64)) {
        let mut st = self.state.lock().unwrap();
        let mut bm = [0u8; HOSTID_BITMAP_SIZE];
        let our = self.host_id as usize;
        let secs = self.set_bitmap_seconds;
        for (i, hs) in st.hosts.hosts.iter_mut().enumerate() {
            if i + 1 == our || hs.set_bit_time == 0 {
                continue;
            }
            if now.saturating_sub(hs.set_bit_time) > secs {
                hs.set_bit_time = 0;
            } else if i / 8 < HOSTID_BITMAP_SIZE {
                bm[i / 8] |= 1 << (i % 8);
            }
        }
        (bm, st.host_event)
    }

    /// A host whose bit for us is set may want one of our resources:
    /// examine them, at most once per set_bitmap_seconds per host.
    fn note_requests(&self, now: u64, events: &[HostEvent]) {
        let mut st = self.state.lock().unwrap();
        let mut new = false;
        for ev in events {
            if let Some(hs) = st
                .hosts
                .hosts
                .get_mut((ev.from_host_id as usize).wrapping_sub(1))
                && (hs.last_req == 0 || now.saturating_sub(hs.last_req) >= self.set_bitmap_seconds)
            {
                hs.last_req = now;
                new = true;
            }
        }
        if new {
            self.examine.store(true, Ordering::Relaxed);
        }
    }

    /// Sends events other hosts addressed to us to every `reg_event` fd; a
    /// fd that cannot take it is dropped. Event 0 is only a request.
    fn deliver_events(&self, events: &[HostEvent]) {
        use crate::proto::{
            EventCb, Header, SM_CB_GET_EVENT, SM_CB_PROTO, SM_MAGIC, SanlkHostEvent, WireStruct,
        };
        use std::io::Write;
        let mut fds = self.event_fds.lock().unwrap();
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
        let mut fds = self.event_fds.lock().unwrap();
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

    /// Asks the thread to stop (and release), and waits for it. Callers
    /// stop a lockspace nothing holds any more (a forced shutdown releases
    /// the host_id regardless), so wdmd is disarmed at once, not after the
    /// thread's I/O, which may be stuck for long.
    pub fn stop_and_join(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.disarm_watchdog();
        {
            let _st = self.state.lock().unwrap();
            self.changed.notify_all();
        }
        if let Some(h) = self.thread.lock().unwrap().take() {
            let _ = h.join();
        }
    }
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

/// The geometry of the lockspace at `offset`, from host 1's delta lease.
pub fn read_lockspace_sizes(
    disk: &Disk,
    offset: u64,
    timeout: Duration,
) -> Result<Geometry, SizesError> {
    let buf = disk
        .read(offset, 4096.max(disk.device_sector as usize), timeout)
        .map_err(|e| SizesError::Read(e.sanlk_rv()))?;
    let lr = LeaderRecord::decode(&buf).expect("4096 bytes hold a leader");
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

fn push_history(st: &mut SpaceState, e: RenewalEntry) {
    if st.history_size == 0 {
        return;
    }
    if st.history.len() == st.history_size {
        st.history.pop_front();
    }
    st.history.push_back(e);
}

fn is_corrupt(e: i32) -> bool {
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
