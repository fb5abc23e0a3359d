//! `hactl daemon`: joins lockspaces, renews them, judges the other hosts,
//! and answers sanlock's socket protocol.
//!
//! - [`core`]: where leases are decided: a lockspace's life and a
//!   resource's operations as state machines (events in, actions out; no
//!   thread, file, socket or clock), run alike by the daemon and the simulation
//! - [`engine`]: performs the core's actions on the I/O engine ([`crate::io::engine`])
//! - [`lockspace`]: a joined lockspace: its core, run on the I/O engine's thread
//! - [`main_loop`]: ticks every lockspace's core (the kill sequence), examines requests;
//!   a task beside the connections
//! - [`resource`]: the table of held resources; their disk work is the core's
//! - [`server`]: the socket: connections as tasks on one thread, requests decoded in
//!   `proto::request`, one module per command family, lease I/O on a bounded pool
//! - [`accept`]: the bound on connections, refusals, accept backoff
//! - [`config`]: flags and sanlock.conf
//! - [`log`]: the log_dump ring, log lines, rate limits, the capped log file
//! - [`memory`]: allocator settings that give memory back after a load
//! - [`early_warning`]: publishes the early warnings of lease loss
//! - [`metrics`], [`web`]: the opt-in Prometheus endpoint and web view

pub mod accept;
pub mod access;
pub mod config;
pub mod core;
pub mod early_warning;
pub mod engine;
pub mod helper;
pub mod lockspace;
pub mod log;
pub mod main_loop;
pub mod memory;
pub mod metrics;
pub mod resource;
pub mod resource_ops;
pub mod rindex;
pub mod server;
pub mod web;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use self::config::DaemonConfig;
use self::core::lockspace as lockspace_core;
use self::lockspace::{Space, SpaceList};
use crate::ondisk::Name;

/// A client connection as `client status` lists it.
#[derive(Clone, Debug, Default)]
pub struct ClientSlot {
    pub fd: i32,
    pub pid: i32,
    pub owner_name: String,
    pub cmd_last: u32,
    pub registered: bool,
    /// `SANLK_RESTRICT_*` set by the client on its registered connection.
    pub restricted: u32,
    /// `killpath`: a program run (with its args) instead of signals.
    pub killpath: Option<(String, String)>,
    /// SANLK_KILLPATH_PID: append the pid to the killpath's arguments.
    pub killpath_pid: bool,
}

/// See [`Daemon::lease_ops`]: 64 in flight keep the storage busy (64
/// clients at once in the benchmark) and bound the buffers to 64 areas.
pub const MAX_LEASE_OPS: usize = 64;

/// Where a lease is, for [`Daemon::warm`]: lockspace, resource, path, offset.
pub type WarmKey = (Name, Name, String, u64);

/// Everything the daemon shares between its threads.
///
/// Lock order (parking_lot mutexes: a panicking thread does not poison
/// them for the others): `spaces` before `renew_counters` and before a
/// `Space`'s own locks (see daemon/lockspace.rs); `res`, `clients` and
/// `warm` are taken alone, never while another of these is held. No lock
/// is held across lease I/O, a wait, or a call into wdmd.
pub struct Daemon {
    pub cfg: DaemonConfig,
    pub our_host_name: Name,
    /// Acquires and releases on the engine at once (each holds up to an
    /// area's read buffer, 1-8 MiB): more wait for a permit.
    pub lease_ops: tokio::sync::Semaphore,
    /// The leases this daemon freed last: their next acquire here starts
    /// from the leader sector, not the whole area (see `core::resource::Warm`).
    pub warm: Mutex<core::resource::WarmLeases<WarmKey>>,
    /// Acquires that started warm (`status -D`'s io_warm_acquires).
    pub warm_acquires: AtomicU64,
    /// Every lockspace, each on one of sanlock's three lists (see SpaceState::list).
    pub spaces: Mutex<Vec<Arc<Space>>>,
    /// Slot 0 is the "helper", slot 1 the "listener", as in sanlock.
    pub clients: Mutex<Vec<Option<ClientSlot>>>,
    next_space_id: AtomicU32,
    pub log: Arc<std::sync::Mutex<log::LogRing>>,
    pub shutting_down: AtomicBool,
    /// `shutdown -w 1` requests not answered yet: the daemon exits only
    /// once they are (or after a bound), else the client sees the socket
    /// close instead of its result.
    pub shutdown_waiters: std::sync::atomic::AtomicUsize,
    /// Resource leases held for registered clients.
    pub res: Mutex<resource::ResTable>,
    /// Kills performed (lockspace recovery and forced/graceful requests), for metrics.
    pub kills: KillCounts,
    /// Renewal figures by lockspace name, for metrics (outlive the lockspace).
    pub renew_counters: Mutex<std::collections::BTreeMap<String, Arc<lockspace::RenewCounters>>>,
}

/// How many times the daemon signalled a lease holder or ran its killpath.
#[derive(Default)]
pub struct KillCounts {
    pub sigterm: AtomicU64,
    pub sigkill: AtomicU64,
    pub killpath: AtomicU64,
}

impl KillCounts {
    /// Counts a kill(2) with `sig`.
    pub fn signal(&self, sig: i32) {
        let c = if sig == libc::SIGKILL {
            &self.sigkill
        } else {
            &self.sigterm
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ran_killpath(&self) {
        self.killpath.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a joining lockspace stands once its host_id acquire has ended.
enum Joined {
    Wait,
    Active,
    Failed(Rv),
}

/// Why a lockspace request was refused (sanlock's error numbers).
pub type Rv = i32;

impl Daemon {
    pub fn new(cfg: DaemonConfig, log: Arc<std::sync::Mutex<log::LogRing>>) -> Daemon {
        let our_host_name = match &cfg.our_host_name {
            Some(n) => Name::from_bytes(&n.as_bytes()[..n.len().min(48)]).unwrap_or_default(),
            None => crate::delta::default_host_name(),
        };
        let fixed = |name: &str| {
            Some(ClientSlot {
                fd: -1,
                pid: -1,
                owner_name: name.into(),
                cmd_last: 0,
                ..Default::default()
            })
        };
        Daemon {
            cfg,
            our_host_name,
            lease_ops: tokio::sync::Semaphore::new(MAX_LEASE_OPS),
            warm: Mutex::new(Default::default()),
            warm_acquires: AtomicU64::new(0),
            spaces: Mutex::new(Vec::new()),
            clients: Mutex::new(vec![fixed("helper"), fixed("listener")]),
            next_space_id: AtomicU32::new(1),
            log,
            shutting_down: AtomicBool::new(false),
            shutdown_waiters: std::sync::atomic::AtomicUsize::new(0),
            res: Mutex::new(Default::default()),
            kills: KillCounts::default(),
            renew_counters: Mutex::default(),
        }
    }

    pub fn list_of(sp: &Space) -> SpaceList {
        sp.state.lock().list
    }

    /// Spaces on one list, newest first (sanlock adds to the head).
    pub fn spaces_on(&self, list: SpaceList) -> Vec<Arc<Space>> {
        let v = self.spaces.lock();
        v.iter()
            .rev()
            .filter(|s| Self::list_of(s) == list)
            .cloned()
            .collect()
    }

    /// The joined (active) lockspace of this name, as the commands that
    /// need one look it up.
    pub fn find_active(&self, name: &Name) -> Option<Arc<Space>> {
        self.spaces_on(SpaceList::Active)
            .into_iter()
            .find(|s| s.name.same_as(name))
    }

    pub fn find_by_name(&self, name: &Name) -> Option<Arc<Space>> {
        self.spaces
            .lock()
            .iter()
            .find(|s| s.name.same_as(name))
            .cloned()
    }

    /// `add_lockspace_start`: checks for duplicates and starts the thread.
    pub fn add_lockspace_start(
        &self,
        name: Name,
        host_id: u64,
        path: &str,
        offset: u64,
        io_timeout: u64,
    ) -> Result<Arc<Space>, Rv> {
        if name.is_empty() || host_id == 0 || path.is_empty() {
            return Err(-libc::EINVAL);
        }
        let mut spaces = self.spaces.lock();
        // Only a shutdown that is going ahead is set (none is while a
        // lockspace exists, unless forced); sanlock undoes such an add
        // once its host_id is acquired and answers -1.
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(-1);
        }
        for sp in spaces.iter() {
            let exact = sp.name.same_as(&name)
                && sp.path.as_os_str() == path
                && sp.offset == offset
                && sp.host_id == host_id;
            if exact {
                return Err(match Self::list_of(sp) {
                    SpaceList::Active => -libc::EEXIST,
                    SpaceList::Adding => -libc::EINPROGRESS,
                    SpaceList::Removing => -libc::EAGAIN,
                });
            }
            if sp.name.same_as(&name) || (sp.path.as_os_str() == path && sp.offset == offset) {
                return Err(-libc::EINVAL);
            }
        }
        let io = if io_timeout == 0 {
            self.cfg.io_timeout
        } else {
            io_timeout
        };
        let mut space = Space::new(
            self.next_space_id.fetch_add(1, Ordering::Relaxed),
            name,
            host_id,
            PathBuf::from(path),
            offset,
            lockspace::SpaceOptions {
                io_timeout: io,
                our_name: self.our_host_name,
                watchdog_fire_timeout: self.cfg.watchdog_fire_timeout,
                set_bitmap_seconds: if self.cfg.set_bitmap_seconds > 0 {
                    self.cfg.set_bitmap_seconds
                } else {
                    6 * io
                },
                history_size: self.cfg.renewal_history_size,
                kill_grace_seconds: Some(self.cfg.kill_grace_seconds),
                use_watchdog: self.cfg.use_watchdog,
            },
        );
        space.state.get_mut().warn.cfg = self.cfg.warn;
        space.counters = self
            .renew_counters
            .lock()
            .entry(name.to_string_lossy())
            .or_default()
            .clone();
        let sp = Arc::new(space);
        spaces.push(sp.clone());
        drop(spaces);
        info!(
            "s{} lockspace {}:{}:{}:{}",
            sp.space_id, name, host_id, path, offset
        );
        sp.start();
        Ok(sp)
    }

    /// Waits, on the I/O engine's timers (every 100 ms, no thread held),
    /// for the host_id acquire to finish: on success the lockspace becomes
    /// active, on failure it is stopped and forgotten. Then `done` gets
    /// add_lockspace's result (a sync add's reply; nothing for
    /// SANLK_ADD_ASYNC).
    pub fn add_lockspace_later(
        d: &Arc<Daemon>,
        sp: Arc<Space>,
        done: impl FnOnce(Rv) + Send + 'static,
    ) {
        type Done = Box<dyn FnOnce(Rv) + Send>;
        fn check(d: Arc<Daemon>, sp: Arc<Space>, joined: Option<std::time::Instant>, done: Done) {
            let again = |d: Arc<Daemon>, sp: Arc<Space>, joined, done: Done| {
                crate::io::engine::get().at(
                    std::time::Instant::now() + Duration::from_millis(100),
                    Box::new(move || check(d, sp, joined, done)),
                )
            };
            let mut st = sp.state.lock();
            if st.core.status().acquire_last_result == 0 {
                drop(st);
                return again(d, sp, None, done);
            }
            let joined = joined.unwrap_or_else(std::time::Instant::now);
            match Daemon::joined_result(&sp, &mut st, joined) {
                Joined::Wait => {
                    drop(st);
                    again(d, sp, Some(joined), done)
                }
                Joined::Active => {
                    drop(st);
                    done(0)
                }
                Joined::Failed(r) => {
                    drop(st);
                    let me = sp.clone();
                    // Answered once it is gone: a retry must not find it.
                    sp.stop_then(move || {
                        d.spaces.lock().retain(|s| !Arc::ptr_eq(s, &me));
                        done(r)
                    });
                }
            }
        }
        check(d.clone(), sp, None, Box::new(done));
    }

    /// Once the host_id acquire has ended (at `joined`): active, failed,
    /// or wait a little for the first renewal.
    fn joined_result(
        sp: &Space,
        st: &mut lockspace::SpaceState,
        joined: std::time::Instant,
    ) -> Joined {
        let r = st.core.status().acquire_last_result;
        // sanlock polls for the acquire once a second, so by the time the
        // main loop watches the lockspace its first renewal (due at once:
        // the acquire's timestamp predates its wait) has been made. Waking
        // at once instead, give it that second, or the main loop would see
        // the stale timestamp and fail the lockspace.
        if r == crate::rv::SANLK_OK
            && st.core.status().renewal_last_attempt == st.core.status().acquire_last_attempt
            && joined.elapsed() < Duration::from_secs(1)
        {
            return Joined::Wait;
        }
        if r == crate::rv::SANLK_OK && !sp.external_remove.load(Ordering::Relaxed) {
            st.list = SpaceList::Active;
            st.core
                .step(engine::now(), lockspace_core::Event::Activated);
            return Joined::Active;
        }
        Joined::Failed(if r == crate::rv::SANLK_OK { -1 } else { r })
    }

    /// Lockspaces match for inq/rem by name, path and offset (and host_id if given).
    pub fn find_exact(
        &self,
        name: &Name,
        host_id: u64,
        path: &str,
        offset: u64,
    ) -> Option<Arc<Space>> {
        self.spaces
            .lock()
            .iter()
            .find(|s| {
                s.name.same_as(name)
                    && s.path.as_os_str() == path
                    && s.offset == offset
                    && (host_id == 0 || s.host_id == host_id)
            })
            .cloned()
    }

    pub fn inq_lockspace(&self, name: &Name, host_id: u64, path: &str, offset: u64) -> Rv {
        match self.find_exact(name, host_id, path, offset) {
            None => -libc::ENOENT,
            // Once rem_lockspace has been asked, it is on its way out
            // (sanlock moves it to spaces_rem at its next main loop pass).
            Some(sp) => match Self::list_of(&sp) {
                SpaceList::Active if !sp.external_remove.load(Ordering::Relaxed) => 0,
                _ => -libc::EINPROGRESS,
            },
        }
    }

    /// `rem_lockspace`: marks the lockspace for removal; once nothing uses
    /// it (sanlock's `all_pids_dead`, including `set_config -u 1`), it moves
    /// to the removal list and its thread stops and releases the host_id.
    /// The caller waits for it to be gone if it wants to.
    pub fn rem_lockspace(self: &Arc<Self>, sp: &Arc<Space>) -> Rv {
        self.remove_space(sp, false)
    }

    /// Starts removing a lockspace (rem_lockspace, or every lockspace for a
    /// forced shutdown, which an rindex command does not hold off): the
    /// main loop SIGKILLs its holders, and once nothing uses it a remover
    /// thread stops it (releasing the host_id) and drops it. An add in
    /// progress is abandoned instead.
    fn remove_space(self: &Arc<Self>, sp: &Arc<Space>, shutdown: bool) -> Rv {
        let start_remover = {
            let mut st = sp.state.lock();
            match st.list {
                SpaceList::Removing => return -libc::EINPROGRESS,
                SpaceList::Adding => {
                    // The add in progress is abandoned; its waiter removes it.
                    sp.external_remove.store(true, Ordering::Relaxed);
                    sp.stop.store(true, Ordering::Relaxed);
                    drop(st);
                    for a in sp.step(lockspace_core::Event::Stop) {
                        warn!("s{} unexpected {a:?}", sp.space_id);
                    }
                    return 0;
                }
                SpaceList::Active if st.rindex_op != 0 && !shutdown => return -libc::EBUSY,
                SpaceList::Active => {
                    st.core.step(engine::now(), lockspace_core::Event::Remove);
                    !sp.external_remove.swap(true, Ordering::Relaxed)
                }
            }
        };
        if start_remover {
            let d = self.clone();
            let sp = sp.clone();
            std::thread::spawn(move || {
                loop {
                    // Holders are being killed by the main loop (SIGKILL).
                    let held = d.space_has_resources(sp.space_id);
                    let mut st = sp.state.lock();
                    if !st.external_used && !held {
                        st.list = SpaceList::Removing;
                        break;
                    }
                    if st.used_retries.is_multiple_of(50) {
                        warn!("s{} used external blocking lockspace removal", sp.space_id);
                    }
                    st.used_retries += 1;
                    drop(st);
                    std::thread::sleep(Duration::from_millis(200));
                }
                sp.stop_and_join();
                sp.removed.store(true, Ordering::Relaxed);
            });
        }
        0
    }

    /// `shutdown` without force (or SIGTERM): only an idle daemon stops;
    /// with a lockspace present it is ignored and forgotten, as sanlock
    /// resets its `external_shutdown` in the main loop. Returns whether the
    /// daemon is shutting down.
    pub fn shutdown_if_idle(&self) -> bool {
        let spaces = self.spaces.lock();
        if spaces.is_empty() {
            self.shutting_down.store(true, Ordering::Relaxed);
            return true;
        }
        drop(spaces);
        debug!("ignore shutdown, lockspace exists");
        false
    }

    /// `shutdown -f 1` (sanlock's `external_shutdown = 2`): every
    /// lockspace's holders are SIGKILLed, then it is stopped and dropped;
    /// the daemon exits once none is left. No new lockspace is added.
    pub fn shutdown_force(self: &Arc<Self>) {
        let spaces = {
            let spaces = self.spaces.lock();
            self.shutting_down.store(true, Ordering::Relaxed);
            spaces.clone()
        };
        for sp in spaces {
            let _ = self.remove_space(&sp, true);
        }
    }

    pub fn client_add(&self, slot: ClientSlot) -> usize {
        let mut c = self.clients.lock();
        if let Some(i) = c.iter().skip(2).position(|s| s.is_none()) {
            c[i + 2] = Some(slot);
            i + 2
        } else {
            c.push(Some(slot));
            c.len() - 1
        }
    }

    pub fn client_update(&self, ci: usize, f: impl FnOnce(&mut ClientSlot)) {
        if let Some(Some(s)) = self.clients.lock().get_mut(ci) {
            f(s);
        }
    }

    pub fn client_free(&self, ci: usize) {
        if let Some(s) = self.clients.lock().get_mut(ci) {
            *s = None;
        }
    }
}

/// A path from a socket message, as a string (-EINVAL if it has no NUL
/// within its 1024 bytes or is not UTF-8).
pub fn path_string(p: &crate::proto::SanlkPath) -> Result<String, Rv> {
    let b = p.as_bytes().map_err(|_| -libc::EINVAL)?;
    String::from_utf8(b.to_vec()).map_err(|_| -libc::EINVAL)
}

/// Holds the run dir's `sanlock.pid` write lock for the daemon's life, so
/// two daemons never share a run dir.
pub fn lockfile(cfg: &DaemonConfig) -> Result<File, String> {
    let dir = &cfg.run_dir;
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0o002) };
    match std::fs::create_dir(dir) {
        Ok(()) => {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o775));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create run dir {}: {e}", dir.display())),
    }
    let gid = if cfg.privileged { 0 } else { cfg.gid };
    let _ = nix::unistd::chown(dir, Some(cfg.uid.into()), Some(gid.into()));
    let path = dir.join("sanlock.pid");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .map_err(|e| format!("cannot open lockfile {}: {e}", path.display()))?;
    let lock = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: fcntl on our open fd with a valid flock struct.
    let rc = unsafe {
        libc::fcntl(
            std::os::unix::io::AsRawFd::as_raw_fd(&f),
            libc::F_SETLK,
            &lock,
        )
    };
    if rc < 0 {
        return Err(format!(
            "lockfile setlk error {}: another daemon is running with run dir {}",
            path.display(),
            dir.display()
        ));
    }
    f.set_len(0).map_err(|e| e.to_string())?;
    writeln!(f, "{}", std::process::id()).map_err(|e| e.to_string())?;
    Ok(f)
}

/// A daemon inside this process, for the socket fuzz target: the socket,
/// the main loop and every thread of `hactl daemon`, without the
/// re-exec, privilege changes, memory locking or log file. Its log goes
/// to the ring only (a process has one log: the first caller's). Returns
/// once the socket listens; the daemon serves on a thread until it is
/// shut down.
pub fn spawn_in_process(cfg: DaemonConfig) -> Result<Arc<Daemon>, String> {
    let ring = Arc::new(std::sync::Mutex::new(log::LogRing::default()));
    log::install(Arc::new(log::Logger::new(
        ring.clone(),
        false,
        false,
        None,
        -1,
    )));
    let lock = lockfile(&cfg)?;
    let daemon = Arc::new(Daemon::new(cfg, ring));
    let listener = server::listen(&daemon.cfg)?;
    let d = daemon.clone();
    std::thread::Builder::new()
        .name("serve".into())
        .spawn(move || {
            let _lock = lock;
            server::serve(d.clone(), listener);
            for sp in d.spaces.lock().clone() {
                sp.stop_and_join();
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(daemon)
}

/// Entry point of `hactl daemon [options]`. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    // First, while this is the only thread (see memory.rs).
    memory::reexec_without_stack_cache();
    memory::tune_allocator();
    accept::raise_nofile();
    let mut cfg = DaemonConfig::from_env();
    let conf_path =
        std::env::var("HACTL_SANLOCK_CONF").unwrap_or_else(|_| config::SANLK_CONF_PATH.into());
    let conf_notes = cfg.load_conf(std::path::Path::new(&conf_path));
    if let Err(e) = cfg.apply_args(args) {
        println!("{e}");
        return 1;
    }
    let ring = Arc::new(std::sync::Mutex::new(log::LogRing::default()));
    let logfile = if cfg.run_dir.as_os_str() == config::DEFAULT_RUN_DIR {
        PathBuf::from("/var/log/hactl.log")
    } else {
        cfg.run_dir.join("hactl.log")
    };
    let file = (cfg.logfile_priority >= 0)
        .then(|| log::LogFile::open(logfile, cfg.logfile_max_kb * 1024).ok())
        .flatten();
    log::install(Arc::new(log::Logger::new(
        ring.clone(),
        cfg.debug,
        cfg.logfile_use_utc,
        file,
        cfg.logfile_priority,
    )));
    for n in conf_notes {
        warn!("{n}");
    }
    // As sanlock: groups first (may be slow), then limits, then the
    // lockfile as root, then -U/-G, then memory locking and priority.
    access::setup_groups(&cfg);
    if let Err(e) = access::setup_limits(&cfg) {
        error!("{e}");
        if !cfg.debug {
            // (with -D the log line is on stderr already)
            eprintln!("hactl daemon: {e}");
        }
        return 1;
    }

    let _lock = match lockfile(&cfg) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hactl daemon: {e}");
            return 1;
        }
    };
    if cfg.run_dir.as_os_str() != config::DEFAULT_RUN_DIR {
        warn!(
            "Using non-standard run directory '{}'",
            cfg.run_dir.display()
        );
    }
    if !cfg.privileged {
        warn!("Running in unprivileged mode");
    }
    // Before any lease file is open, and as root (as sanlock's helper):
    // killpath programs inherit nothing of the daemon's.
    helper::start();
    access::setup_uid_gid(&cfg);
    let daemon = Arc::new(Daemon::new(cfg, ring));
    warn!(
        "hactl daemon started {} (sanlock 3.8.5 protocol) host {}",
        env!("CARGO_PKG_VERSION"),
        daemon.our_host_name
    );
    access::setup_priority(&daemon.cfg);
    // Started now so that the log says at once which engine runs the
    // lease I/O (io_uring, or the threads where it is unavailable).
    crate::io::engine::get();
    let listener = match server::listen(&daemon.cfg) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hactl daemon: {e}");
            return 1;
        }
    };
    if let Some(addr) = daemon.cfg.metrics_listen.clone() {
        // Opt-in; a bad address is the operator's error to see at start.
        if let Err(e) = metrics::start(daemon.clone(), &addr) {
            eprintln!("hactl daemon: metrics_listen {addr}: {e}");
            return 1;
        }
    }
    server::serve(daemon.clone(), listener);
    for sp in daemon.spaces.lock().clone() {
        sp.stop_and_join();
    }
    let _ = std::fs::remove_file(daemon.cfg.run_dir.join("sanlock.sock"));
    0
}
