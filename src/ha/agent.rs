//! `hactl ha agent`: the loop of docs/ha-design.md. Each cycle it gathers
//! the inputs (host states from the local daemon, the whiteboard, every VM
//! lease's leader from storage, its own VM processes), calls the pure
//! [`decide`], carries out Start/Stop, writes its own whiteboard sector,
//! appends events to `RUN_DIR/events.jsonl` and rewrites
//! `RUN_DIR/status.json`.
//!
//! Storage I/O goes through `crate::io` with a timeout: when storage hangs
//! the cycle carries on with the leases "unreadable" (nothing is decided on
//! them) while the daemon's own failure handling kills the VMs.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::config::{Config, RunnerKind};
use super::decide::{
    self, ActionKind, HostView, Input, LeaseView, Local, Memory, Outcome, OutcomeKind,
};
use super::runner::{self, Launch, ProcState, VmProc};
use super::whiteboard::{
    BoardRead, Freshness, HostSector, LOCAL_MAINTENANCE, VmBitmap, Whiteboard,
};
use crate::client::{Lockspace, Sanlock};
use crate::hosts::HostState;
use crate::io::Disk;
use crate::ondisk::{LeaderRecord, Name};
use crate::timeouts::monotime;
use crate::xleases::{self, LeaseInfo};

/// `RUN_DIR/local-maintenance`: while it exists the agent is in local
/// maintenance (`hactl ha maintenance --local on|off` makes and removes it).
pub const LOCAL_MAINTENANCE_FILE: &str = "local-maintenance";
pub const EVENTS_FILE: &str = "events.jsonl";
pub const STATUS_FILE: &str = "status.json";
pub const DEFAULT_RUN_DIR: &str = "/run/hactl-ha";
/// After a live migration to a host failed, moves towards that host are
/// cold (stop, then start there) for this long.
pub const MIGRATE_RETRY_SECS: u64 = 600;

pub struct AgentOpts {
    pub config: PathBuf,
    pub host_id: u64,
    pub run_dir: PathBuf,
    /// The local daemon's run dir.
    pub daemon_run_dir: PathBuf,
    /// Join the lockspace first (add_lockspace, waiting).
    pub join: bool,
    /// Stop after this many cycles (tests); None: forever.
    pub cycles: Option<u64>,
}

/// One line of events.jsonl.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub t_unix: f64,
    pub host: u64,
    #[serde(default)]
    pub vm: String,
    pub kind: String,
    pub reason: String,
}

/// One event as a line of text (time of day in UTC).
pub fn render_event(e: &Event) -> String {
    let secs = e.t_unix as u64;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    // Reasons name their VM first.
    format!(
        "{h:02}:{m:02}:{s:02} host {} {:<12} {}",
        e.host, e.kind, e.reason
    )
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn host_state(flags: u32) -> HostState {
    use crate::proto::*;
    match flags & 0xf {
        SANLK_HOST_FREE => HostState::Free,
        SANLK_HOST_LIVE => HostState::Live,
        SANLK_HOST_FAIL => HostState::Fail,
        SANLK_HOST_DEAD => HostState::Dead,
        _ => HostState::Unknown,
    }
}

/// A VM lease's leader as read from storage: free (timestamp 0, released)
/// or held by an owner host_id + generation. A record that is not this
/// lease's (bad checksum, other name) is unreadable: nothing is decided on it.
pub fn lease_view(sector: &[u8], lockspace: &str, resource: &str) -> Result<LeaseView, String> {
    let lr = LeaderRecord::decode(sector).map_err(|e| e.to_string())?;
    let ls = Name::new(lockspace).map_err(|e| e.to_string())?;
    let res = Name::new(resource).map_err(|e| e.to_string())?;
    lr.verify_paxos(Some(&ls), Some(&res), 0)
        .map_err(|e| e.to_string())?;
    Ok(if lr.timestamp == 0 {
        LeaseView::Free
    } else {
        LeaseView::Held {
            owner: lr.owner_id,
            generation: lr.owner_generation,
            lver: lr.lver,
        }
    })
}

/// Reads every VM lease's leader (one sector each).
pub fn read_leases(
    disk: &Disk,
    infos: &[Option<LeaseInfo>],
    sector_size: u32,
    timeout: Duration,
) -> Vec<LeaseView> {
    let mut out = Vec::with_capacity(infos.len());
    let mut hung = false;
    for info in infos {
        let v = match info {
            Some(li) if !hung => match disk.read(li.offset, sector_size as usize, timeout) {
                Ok(b) => {
                    lease_view(&b, &li.lockspace, &li.resource).unwrap_or(LeaseView::Unreadable)
                }
                Err(e) => {
                    // One timeout is enough to know the storage hangs this
                    // cycle; more reads would only pile up abandoned I/O.
                    hung = matches!(e, crate::io::IoError::Timeout { .. });
                    LeaseView::Unreadable
                }
            },
            _ => LeaseView::Unreadable,
        };
        out.push(v);
    }
    out
}

/// The local processes holding each exclusive lease of `lockspace`, by
/// resource name, from the daemon's status.
pub fn lease_holders(daemon_dir: &Path, lockspace: &str) -> BTreeMap<String, i32> {
    use crate::proto::client::{Client, StateBin};
    let mut out = BTreeMap::new();
    let Ok(st) = Client::with_run_dir(daemon_dir)
        .timeout(Some(Duration::from_secs(5)))
        .status(0)
    else {
        return out;
    };
    for e in st.entries {
        if e.state.kind != crate::proto::SANLK_STATE_RESOURCE {
            continue;
        }
        if let StateBin::Resource(r) = &e.bin
            && r.flags & crate::proto::SANLK_RES_SHARED == 0
            && r.lockspace_name.to_string_lossy() == lockspace
        {
            out.insert(r.name.to_string_lossy(), e.state.data32 as i32);
        }
    }
    out
}

/// The lockspace's sector size, from its first delta lease.
pub fn lockspace_sector_size(ids: &Path, timeout: Duration) -> Result<u32, String> {
    let disk = Disk::open_readonly(ids).map_err(|e| e.to_string())?;
    let g = crate::direct::read_leader_sizes(&disk, 0, timeout).map_err(|e| e.to_string())?;
    Ok(g.sector_size)
}

/// Looks up every VM's lease in the xleases volume (None: not there yet).
pub fn lookup_leases(cfg: &Config, timeout: Duration) -> (Vec<Option<LeaseInfo>>, Vec<String>) {
    let opts = xleases::Opts {
        timeout,
        ..Default::default()
    };
    let mut errs = Vec::new();
    let vol = match xleases::Volume::open(&cfg.cluster.xleases, &opts) {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(format!("xleases volume: {e}"));
            None
        }
    };
    let infos = cfg
        .vms
        .iter()
        .map(|vm| {
            let vol = vol.as_ref()?;
            match vol.lookup(vm.lease_id()) {
                Ok(li) => Some(li),
                Err(e) => {
                    errs.push(format!(
                        "{}: lease {:?}: {e} (hactl xleases add -p {} {})",
                        vm.name,
                        vm.lease_id(),
                        cfg.cluster.xleases.display(),
                        vm.lease_id()
                    ));
                    None
                }
            }
        })
        .collect();
    (infos, errs)
}

fn launch_of(vm: &super::config::Vm, uri: Option<&str>) -> Launch {
    match vm.runner {
        RunnerKind::Command => Launch::Command {
            start: vm.start.clone(),
            stop: vm.stop.clone(),
        },
        RunnerKind::Libvirt => Launch::Libvirt(super::libvirt::Domain {
            name: vm.domain.clone().unwrap_or_else(|| vm.name.clone()),
            xml: vm.domain_xml.clone(),
            uri: uri.unwrap_or(super::libvirt::DEFAULT_URI).to_string(),
        }),
    }
}

/// The daemon's view of every host, with renewal ages on our clock.
#[derive(Default)]
struct RenewalAges {
    seen: BTreeMap<u64, (u64, u64)>,
}

impl RenewalAges {
    fn observe(&mut self, host_id: u64, timestamp: u64, now: u64) -> u64 {
        let e = self.seen.entry(host_id).or_insert((timestamp, now));
        if e.0 != timestamp {
            *e = (timestamp, now);
        }
        now - e.1
    }
}

struct Agent {
    cfg: Config,
    me: u64,
    run_dir: PathBuf,
    daemon_dir: PathBuf,
    sanlock: Sanlock,
    wb: Whiteboard,
    xl: Disk,
    sector_size: u32,
    timeout: Duration,
    infos: Vec<Option<LeaseInfo>>,
    procs: Vec<Option<VmProc>>,
    memory: Memory,
    freshness: Freshness,
    ages: RenewalAges,
    /// Outcomes to hand to the next decide().
    pending: Vec<Outcome>,
    seq: u64,
    last_wait: Vec<Option<String>>,
    /// The last Wait reason, as is (status.json).
    last_reason: Vec<Option<String>>,
    started: std::time::Instant,
    /// A "running" event was logged for the current process.
    announced: Vec<bool>,
    /// Lease-clearing runs (`client command -c true`), see
    /// [`Agent::clear_leftovers`], and since when each leftover was seen.
    clearing: Vec<Option<VmProc>>,
    leftover_since: Vec<Option<u64>>,
    last_states: BTreeMap<u64, HostState>,
    events: File,
    hactl: PathBuf,
    die_with_agent: bool,
    cycle: u64,
    last_problem: Option<String>,
    fencer: super::fence::Fencer,
    monitors: super::monitor::Monitors,
    /// This cycle's health score (status.json), and the last one logged.
    health: Option<super::health::HealthScore>,
    health_logged: Option<String>,
    /// Live migrations that failed, by target host: when (our clock), why.
    migrate_failed: BTreeMap<u64, (u64, String)>,
}

/// Runs the agent until killed (or `opts.cycles` cycles).
pub fn run(opts: &AgentOpts) -> Result<(), String> {
    let cfg = Config::from_file(&opts.config).map_err(|e| e.to_string())?;
    if !(1..=super::config::MAX_HOST_ID).contains(&opts.host_id) {
        return Err(format!("--host-id {} is not in 1..=2000", opts.host_id));
    }
    std::fs::create_dir_all(&opts.run_dir)
        .map_err(|e| format!("cannot create {}: {e}", opts.run_dir.display()))?;
    let sanlock = Sanlock::connect(&opts.daemon_run_dir)
        .map_err(|e| {
            format!(
                "cannot reach the daemon at {}: {e}",
                opts.daemon_run_dir.display()
            )
        })?
        .timeout(Some(Duration::from_secs(10)));
    let mut events = OpenOptions::new()
        .create(true)
        .append(true)
        .open(opts.run_dir.join(EVENTS_FILE))
        .map_err(|e| format!("{}: {e}", opts.run_dir.display()))?;
    let me = opts.host_id;
    let mut log = |kind: &str, reason: String| {
        let e = Event {
            t_unix: unix_now(),
            host: me,
            vm: String::new(),
            kind: kind.into(),
            reason,
        };
        let _ = writeln!(events, "{}", serde_json::to_string(&e).unwrap());
    };
    if opts.join {
        let ls = Lockspace {
            name: cfg.cluster.lockspace.clone(),
            host_id: me,
            path: cfg.cluster.ids.clone(),
            offset: 0,
        };
        log(
            "state",
            format!("joining lockspace {} as host {me}", ls.name),
        );
        // An I/O that timed out (a busy or briefly slow disk) is tried
        // again a few times: the join itself wrote nothing that holds.
        let mut tries = 0;
        loop {
            tries += 1;
            match sanlock.add_lockspace(&ls, 0, true) {
                Ok(()) => log(
                    "state",
                    format!("joined lockspace {} as host {me}", ls.name),
                ),
                // Already joined (by us before, or by an admin).
                Err(e) if e.rv() == -libc::EEXIST => {}
                Err(e) if e.rv() == crate::rv::SANLK_AIO_TIMEOUT && tries < 5 => {
                    log(
                        "state",
                        format!("joining lockspace {} failed ({e}); trying again", ls.name),
                    );
                    std::thread::sleep(Duration::from_secs(2));
                    continue;
                }
                Err(e) => return Err(format!("add_lockspace {}: {e}", ls.name)),
            }
            break;
        }
    }
    let timeout = Duration::from_secs(cfg.cluster.interval.clamp(1, 10));
    let sector_size = lockspace_sector_size(&cfg.cluster.ids, Duration::from_secs(10))?;
    let wb = Whiteboard::open(&cfg.cluster.whiteboard, sector_size)
        .map_err(|e| e.to_string())?
        .with_timeout(timeout);
    let xl = Disk::open_readonly(&cfg.cluster.xleases).map_err(|e| e.to_string())?;
    let (infos, errs) = lookup_leases(&cfg, Duration::from_secs(10));
    for e in errs {
        log("state", e);
    }
    // Continue our own seq: readers judge freshness by seeing it change.
    let seq = wb
        .read_all(me)
        .ok()
        .and_then(|b| b.host(me).map(|s| s.seq))
        .unwrap_or(0);
    let n = cfg.vms.len();
    let hactl = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut a = Agent {
        me,
        run_dir: opts.run_dir.clone(),
        daemon_dir: opts.daemon_run_dir.clone(),
        sanlock,
        wb,
        xl,
        sector_size,
        timeout,
        infos,
        procs: (0..n).map(|_| None).collect(),
        memory: Memory::default(),
        freshness: Freshness::new(),
        ages: RenewalAges::default(),
        pending: Vec::new(),
        seq,
        last_wait: vec![None; n],
        announced: vec![false; n],
        clearing: (0..n).map(|_| None).collect(),
        leftover_since: vec![None; n],
        last_reason: vec![None; n],
        started: std::time::Instant::now(),
        last_states: BTreeMap::new(),
        events,
        hactl,
        die_with_agent: std::env::var_os(super::DIE_WITH_AGENT_ENV).is_some(),
        cycle: 0,
        last_problem: None,
        fencer: Default::default(),
        monitors: super::monitor::Monitors::start(&cfg, &opts.config),
        health: None,
        health_logged: None,
        migrate_failed: BTreeMap::new(),
        cfg,
    };
    let interval = Duration::from_secs(a.cfg.cluster.interval.max(1));
    let mut next = std::time::Instant::now();
    loop {
        a.cycle_once();
        a.cycle += 1;
        if opts.cycles.is_some_and(|c| a.cycle >= c) {
            return Ok(());
        }
        next += interval;
        let now = std::time::Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

impl Agent {
    fn event(&mut self, vm: &str, kind: &str, reason: &str) {
        self.event_at(unix_now(), vm, kind, reason);
    }

    /// An event that happened at `t_unix` (a fence step in its thread).
    fn event_at(&mut self, t_unix: f64, vm: &str, kind: &str, reason: &str) {
        let e = Event {
            t_unix,
            host: self.me,
            vm: vm.to_string(),
            kind: kind.to_string(),
            reason: reason.to_string(),
        };
        let _ = writeln!(self.events, "{}", serde_json::to_string(&e).unwrap());
    }

    /// A problem with our inputs, logged once until it changes.
    fn problem(&mut self, p: Option<String>) {
        if p != self.last_problem {
            match &p {
                Some(s) => self.event("", "state", s),
                None => self.event("", "state", "inputs readable again"),
            }
            self.last_problem = p;
        }
    }

    fn local_maintenance(&self) -> bool {
        self.run_dir.join(LOCAL_MAINTENANCE_FILE).exists()
    }

    /// Polls our VM processes: their states now, and outcomes since last cycle.
    fn poll_local(&mut self, now: u64) -> Vec<Local> {
        let mut local = Vec::with_capacity(self.procs.len());
        let mut holders = None;
        for v in 0..self.procs.len() {
            let name = self.cfg.vms[v].name.clone();
            let Some(p) = self.procs[v].as_mut() else {
                local.push(Local::Idle);
                continue;
            };
            let since = |i: std::time::Instant| now.saturating_sub(i.elapsed().as_secs());
            let st = p.poll();
            // A live migration that failed: the guest runs on here; the
            // cold move follows (stop here, start on another host).
            let migrate_failed = p.take_migrate_failure();
            if migrate_failed.is_some() {
                p.stop();
            }
            // Runner libvirt: a started domain's qemu is the holder of its
            // lease (asked once a cycle, and only while one is unknown).
            if matches!(st, ProcState::Running)
                && p.needs_pid()
                && let Some(info) = &self.infos[v]
            {
                let h = holders.get_or_insert_with(|| {
                    lease_holders(&self.daemon_dir, &self.cfg.cluster.lockspace)
                });
                if let Some(&pid) = h.get(&info.resource) {
                    p.set_pid(pid);
                }
            }
            let l = match &st {
                ProcState::Ended(_) => Local::Idle,
                _ if p.stopping() => Local::Stopping {
                    since: since(p.spawned),
                },
                ProcState::Starting => Local::Starting {
                    since: since(p.spawned),
                },
                ProcState::Running => Local::Running {
                    pid: p.pid as u32,
                    since: since(p.running_since.unwrap_or(p.spawned)),
                },
            };
            if let ProcState::Ended(o) = st {
                let stopped = p.stopping();
                let (kind, ev, reason) = match o {
                    runner::Outcome::LostRace { rv, why } => (
                        OutcomeKind::LostRace,
                        "lost_race",
                        format!("{name}: another host took the lease first ({why}, {rv})"),
                    ),
                    runner::Outcome::FailedStart { why } => (
                        OutcomeKind::FailedStart,
                        "failed_start",
                        format!("{name}: start failed on host {}: {why}", self.me),
                    ),
                    runner::Outcome::Migrated { to, took } => (
                        OutcomeKind::Stopped,
                        "migrated",
                        format!(
                            "{name}: live-migrated to host {to} in {:.1} s (the guest kept running; its lease went with it: host {} released it when the guest paused, host {to} took it when it resumed there)",
                            took.as_secs_f64(),
                            self.me
                        ),
                    ),
                    runner::Outcome::Exited { status, ran_for } if stopped => (
                        OutcomeKind::Stopped,
                        "exited",
                        format!(
                            "{name}: stopped ({status} after {:.0} s)",
                            ran_for.as_secs_f64()
                        ),
                    ),
                    runner::Outcome::Exited { status, ran_for } => (
                        OutcomeKind::Exited {
                            status: status_code(&status),
                        },
                        "exited",
                        format!(
                            "{name}: exited by itself ({status} after {:.0} s); its lease went with it",
                            ran_for.as_secs_f64()
                        ),
                    ),
                };
                self.event(&name, ev, &reason);
                self.pending.push(Outcome {
                    vm: v,
                    at: now,
                    kind,
                });
                self.procs[v] = None;
                self.announced[v] = false;
            } else if let ProcState::Running = st
                && !p.stopping()
                && !self.announced[v]
            {
                let pid = p.pid;
                self.announced[v] = true;
                let why = format!(
                    "{name}: running on host {} (pid {pid}) under its lease",
                    self.me
                );
                self.event(&name, "running", &why);
            }
            if let Some((to, why)) = migrate_failed {
                self.migrate_failed.insert(to, (now, why.clone()));
                let why = format!(
                    "{name}: live migration to host {to} failed: {why}; the guest still runs here: falling back to the cold move, stopping it here so that another host starts it under its lease"
                );
                self.event(&name, "migrate_failed", &why);
            }
            local.push(l);
        }
        local
    }

    fn cycle_once(&mut self) {
        let now = monotime();
        let ls = self.cfg.cluster.lockspace.clone();
        let local_maint = self.local_maintenance();
        let mut local = self.poll_local(now);
        for (kind, reason, t) in self.fencer.poll() {
            self.event_at(t, "", kind, &reason);
        }

        // Host states from the local daemon.
        let hosts = match self.sanlock.get_hosts(&ls, 0) {
            Ok(h) => h,
            Err(e) => {
                self.problem(Some(format!(
                    "cannot get host states from the local daemon ({e}); deciding nothing"
                )));
                self.write_status(now, &[], &[], None, &local, local_maint, None);
                return;
            }
        };
        let mut our_generation = 0;
        for h in &hosts {
            let st = host_state(h.flags);
            if h.host_id == self.me {
                our_generation = h.generation;
            }
            let old = self.last_states.insert(h.host_id, st);
            if old != Some(st) {
                let age = self.ages.observe(h.host_id, h.timestamp, now);
                let from = old.map_or("-".to_string(), |o| o.as_str().to_string());
                self.event(
                    "",
                    "state",
                    &format!(
                        "host {} {from} -> {} (generation {}, no renewal seen for {age} s)",
                        h.host_id,
                        st.as_str(),
                        h.generation
                    ),
                );
            }
        }
        // Retry leases not found at start (added since).
        if self.infos.iter().any(|i| i.is_none()) && self.cycle.is_multiple_of(10) {
            let (infos, _) = lookup_leases(&self.cfg, self.timeout);
            for (k, i) in infos.into_iter().enumerate() {
                if self.infos[k].is_none() && i.is_some() {
                    self.infos[k] = i;
                }
            }
        }

        // The whiteboard.
        let max_id = hosts
            .iter()
            .map(|h| h.host_id)
            .chain([self.me])
            .max()
            .unwrap_or(self.me)
            .min(self.wb.capacity().max(self.me));
        let board = match self.wb.read_all(max_id) {
            Ok(b) => Some(b),
            Err(e) => {
                self.problem(Some(format!("cannot read the whiteboard: {e}")));
                None
            }
        };
        let interval = self.cfg.cluster.interval.max(1);
        let mut views = Vec::new();
        for h in &hosts {
            let sector = board.as_ref().and_then(|b| b.host(h.host_id)).cloned();
            self.freshness.observe(h.host_id, sector.as_ref(), now);
            let renewal_age = Some(self.ages.observe(h.host_id, h.timestamp, now));
            views.push(HostView {
                host_id: h.host_id,
                state: host_state(h.flags),
                generation: h.generation,
                renewal_age,
                fresh: self.freshness.is_fresh(h.host_id, now, 3 * interval),
                sector,
            });
        }
        for e in self.fencer.add_free_hosts(&mut views, &hosts) {
            self.event("", "state", &e);
        }
        let leases = if board.is_some() {
            read_leases(&self.xl, &self.infos, self.sector_size, self.timeout)
        } else {
            vec![LeaseView::Unreadable; self.infos.len()]
        };
        if board.is_some() {
            self.problem(None);
        }
        self.adopt_leftovers(&leases, our_generation, now, &mut local);
        self.clear_leftovers(&leases, our_generation, now, local_maint);

        let health = self.health_now(&hosts, &views);
        let input = Input {
            now,
            me: self.me,
            config: &self.cfg,
            hosts: views.clone(),
            global_maintenance: board.as_ref().is_some_and(BoardRead::global_maintenance),
            local_maintenance: local_maint,
            leases: leases.clone(),
            local: local.clone(),
            outcomes: std::mem::take(&mut self.pending),
            memory: self.memory.clone(),
            health: Some(health),
        };
        let d = decide::decide(&input);
        self.memory = d.memory.clone();
        let warming = self.warming_up(&views);

        for a in &d.actions {
            let name = self.cfg.vms[a.vm].name.clone();
            match a.kind {
                ActionKind::Start if warming.is_some() => {
                    let why = format!(
                        "{} (not starting: {})",
                        a.reason,
                        warming.as_deref().unwrap_or("")
                    );
                    self.wait_event(a.vm, &why);
                }
                ActionKind::Start => {
                    self.event(&name, "start", &a.reason);
                    self.last_wait[a.vm] = None;
                    self.start_vm(a.vm, now);
                }
                ActionKind::Stop => {
                    self.last_wait[a.vm] = None;
                    self.stop_vm(a.vm, a.migrate_to, &a.reason, now);
                }
                ActionKind::Wait => self.wait_event(a.vm, &a.reason),
            }
        }

        // Fencing (docs/ha-design.md): beside decide(), on the same views.
        if warming.is_none() {
            let fence_events = self.fencer.cycle(&super::fence::CycleCtx {
                now,
                me: self.me,
                cfg: &self.cfg,
                views: &views,
                hosts: &hosts,
                global_maintenance: board.as_ref().is_some_and(BoardRead::global_maintenance),
                local_maintenance: local_maint,
                sector_size: self.sector_size,
            });
            for (kind, reason, t) in fence_events {
                self.event_at(t, "", kind, &reason);
            }
        }

        // Our sector: the VMs that run here, under their lease. Not the
        // ones still starting: their lease may still look orphaned to the
        // others, and counting them in our load would change the others'
        // assignment of that same VM to another host. Once a VM runs, its
        // lease (acquired before the exec) shows us as owner to anyone who
        // reads the lease after our sector.
        let local_after = self.local_snapshot(now);
        let running = VmBitmap::from_indexes(
            local_after
                .iter()
                .enumerate()
                .filter(|(_, l)| matches!(l, Local::Running { .. } | Local::Stopping { .. }))
                .map(|(i, _)| i),
        );
        self.seq += 1;
        let sector = HostSector {
            host_id: self.me,
            generation: our_generation,
            seq: self.seq,
            written_unix: unix_now() as u64,
            score: d.score,
            flags: if local_maint { LOCAL_MAINTENANCE } else { 0 },
            config_digest: self.cfg.digest(),
            running,
            failed: d.failed,
            fence: self.fencer.report,
            health: d.health,
        };
        if let Err(e) = self.wb.write_host(&sector) {
            self.problem(Some(format!("cannot write our whiteboard sector: {e}")));
        }
        self.write_status(
            now,
            &views,
            &leases,
            board.as_ref(),
            &local_after,
            local_maint,
            Some(d.score),
        );
    }

    /// VMs whose lease our host holds with no process of ours: started by
    /// an earlier agent (restarted, upgraded) and still running. The
    /// daemon knows their pid (the lease holder); we take charge of them
    /// instead of starting them again.
    fn adopt_leftovers(
        &mut self,
        leases: &[LeaseView],
        our_generation: u64,
        now: u64,
        local: &mut [Local],
    ) {
        let ours: Vec<usize> = (0..self.procs.len())
            .filter(|&v| {
                self.procs[v].is_none()
                    && matches!(leases.get(v), Some(LeaseView::Held { owner, generation, .. })
                        if *owner == self.me && *generation == our_generation)
            })
            .collect();
        if ours.is_empty() {
            return;
        }
        let holders = lease_holders(&self.daemon_dir, &self.cfg.cluster.lockspace);
        for v in ours {
            let Some(info) = &self.infos[v] else { continue };
            let Some(&pid) = holders.get(&info.resource) else {
                continue;
            };
            let vm = &self.cfg.vms[v];
            let name = vm.name.clone();
            // Runner libvirt: what libvirt says of the domain goes into the
            // event (the lease holder is the truth either way: while it
            // holds the lease nobody else may start the VM).
            let mut libvirt_says = String::new();
            self.procs[v] = Some(
                match launch_of(vm, self.cfg.cluster.libvirt_uri.as_deref()) {
                    Launch::Libvirt(dom) => {
                        libvirt_says = match runner::domain_state_reason(&dom) {
                            Ok(st) if st.contains("(migrated)") => format!(
                                "; libvirt: domain {} {st}: it arrived here by live migration",
                                dom.name
                            ),
                            Ok(st) => format!("; libvirt: domain {} {st}", dom.name),
                            Err(e) => format!("; libvirt: {e}"),
                        };
                        runner::adopt_domain(&name, pid, &dom)
                    }
                    Launch::Command { stop, .. } => runner::adopt(&name, pid, stop),
                },
            );
            self.announced[v] = true;
            local[v] = Local::Running {
                pid: pid as u32,
                since: now,
            };
            let why = format!(
                "{name}: already running on host {} (pid {pid} holds its lease, started before this agent{libvirt_says}): adopted",
                self.me
            );
            self.event(&name, "running", &why);
        }
    }

    /// In local maintenance, a lease still held by us with no process
    /// anywhere on this host is released so that another host can take
    /// it: nobody else may (we are LIVE) and we start nothing. This
    /// happens when another host's racing ballot rewrote the leader with
    /// our value while we held it: the daemon's release then leaves it as
    /// it is (sanlock does the same: the leader's writer is not us). The
    /// release goes through the daemon as any holder's: `client command
    /// -r LEASE -c true` acquires it (ours: no wait) and exits, and the
    /// daemon releases it, now written by us. Only after the leftover was
    /// seen for two cycles with no holder in the daemon's status.
    fn clear_leftovers(
        &mut self,
        leases: &[LeaseView],
        our_generation: u64,
        now: u64,
        local_maint: bool,
    ) {
        for v in 0..self.clearing.len() {
            let name = self.cfg.vms[v].name.clone();
            if let Some(p) = self.clearing[v].as_mut()
                && let ProcState::Ended(o) = p.poll()
            {
                let why = match o {
                    runner::Outcome::Exited { .. } => format!(
                        "{name}: our leftover lease released (host {} in local maintenance)",
                        self.me
                    ),
                    runner::Outcome::LostRace { why, .. }
                    | runner::Outcome::FailedStart { why } => {
                        format!("{name}: releasing our leftover lease failed: {why}")
                    }
                    runner::Outcome::Migrated { .. } => {
                        format!("{name}: our leftover lease: unexpected migration")
                    }
                };
                self.event(&name, "stop", &why);
                self.clearing[v] = None;
            }
        }
        let me = self.me;
        let ours = |v: usize| {
            matches!(leases.get(v), Some(LeaseView::Held { owner, generation, .. })
                if *owner == me && *generation == our_generation)
        };
        let mut holders: Option<BTreeMap<String, i32>> = None;
        for v in 0..self.procs.len() {
            if !local_maint || self.procs[v].is_some() || self.clearing[v].is_some() || !ours(v) {
                self.leftover_since[v] = None;
                continue;
            }
            let since = *self.leftover_since[v].get_or_insert(now);
            let Some(lease) = self.infos[v].clone() else {
                continue;
            };
            if now < since + 2 * self.cfg.cluster.interval.max(1) {
                continue;
            }
            let held = holders
                .get_or_insert_with(|| lease_holders(&self.daemon_dir, &self.cfg.cluster.lockspace))
                .contains_key(&lease.resource);
            if held {
                continue;
            }
            let name = self.cfg.vms[v].name.clone();
            let launch = Launch::Command {
                start: vec!["true".into()],
                stop: None,
            };
            let spec = runner::StartSpec {
                vm: &name,
                launch: &launch,
                lease: &lease,
                daemon_run_dir: &self.daemon_dir,
                host_id: self.me,
                log: self.run_dir.join(format!("clear-{name}.log")),
                hactl: &self.hactl,
                die_with_agent: self.die_with_agent,
            };
            let started = runner::start(&spec);
            let why = format!(
                "{name}: lease left held by us (host {}) with no process here; releasing it for another host",
                self.me
            );
            self.event(&name, "stop", &why);
            match started {
                Ok(p) => self.clearing[v] = Some(p),
                Err(e) => self.event(&name, "stop", &format!("{name}: cannot release: {e}")),
            }
        }
    }

    /// Stops VM `v`, or moves it to host `migrate_to` by live migration
    /// when decide() says so and no migration to that host failed within
    /// [`MIGRATE_RETRY_SECS`]; a migration that cannot begin is followed
    /// by the stop at once.
    fn stop_vm(&mut self, v: usize, migrate_to: Option<u64>, reason: &str, now: u64) {
        let name = self.cfg.vms[v].name.clone();
        let Some(to) = migrate_to else {
            self.event(&name, "stop", reason);
            if let Some(p) = self.procs[v].as_mut() {
                p.stop();
            }
            return;
        };
        if let Some((t, why)) = self.migrate_failed.get(&to)
            && now < t + MIGRATE_RETRY_SECS
        {
            let why = format!(
                "{reason}; but live migration to host {to} failed {} s ago ({why}): cold move, stopping it here",
                now - t
            );
            self.event(&name, "stop", &why);
            if let Some(p) = self.procs[v].as_mut() {
                p.stop();
            }
            return;
        }
        let Some(p) = self.procs[v].as_mut() else {
            return;
        };
        // decide() names only hosts of `[migration]`; without one, the stop.
        let started = match self.cfg.migration.as_ref() {
            Some(mcfg) => match mcfg.host(to) {
                Some(target) => {
                    let log = super::migrate::log_path(&self.run_dir, &name);
                    p.migrate(mcfg, target, log).map(|()| target.uri.clone())
                }
                None => Err(format!("host {to} has no [[migration.host]]")),
            },
            None => Err("no [migration] in the config".into()),
        };
        match started {
            Ok(uri) => {
                let why = format!("{reason} (virsh migrate --live --p2p to {uri})");
                self.event(&name, "migrate", &why);
            }
            Err(e) => {
                p.stop();
                self.migrate_failed.insert(to, (now, e.clone()));
                let why = format!(
                    "{reason}; but the live migration cannot begin: {e}; cold move, stopping it here"
                );
                self.event(&name, "migrate_failed", &why);
            }
        }
    }

    /// Whether this agent has not yet seen enough to act: in its first
    /// cycles the other hosts' whiteboard sectors cannot be judged fresh
    /// yet (a seq must be seen to change) and the daemon may not have
    /// judged the other hosts (UNKNOWN), so every host would think itself
    /// the only candidate and start everything. Bounded, so that a host
    /// left UNKNOWN (dead before we started) does not block us for long.
    fn warming_up(&self, views: &[HostView]) -> Option<String> {
        let interval = self.cfg.cluster.interval.max(1);
        if self.cycle < 3 {
            return Some(format!("warming up, cycle {} of 3", self.cycle + 1));
        }
        let unknown: Vec<String> = views
            .iter()
            .filter(|h| h.state == HostState::Unknown)
            .map(|h| h.host_id.to_string())
            .collect();
        if !unknown.is_empty() && self.started.elapsed() < Duration::from_secs(10 * interval) {
            return Some(format!(
                "warming up, host(s) {} not judged yet by our daemon",
                unknown.join(",")
            ));
        }
        None
    }

    /// Our health this cycle: the monitors' readings, and our own delta
    /// lease's renewal as the daemon reports it. Logged when the set of
    /// penalties (not their points) changes.
    fn health_now(
        &mut self,
        hosts: &[crate::proto::SanlkHost],
        views: &[HostView],
    ) -> super::health::HealthScore {
        use super::health::Check;
        let mut r = self.monitors.readings();
        r.lease = match (
            hosts.iter().find(|h| h.host_id == self.me),
            views.iter().find(|v| v.host_id == self.me),
        ) {
            (Some(h), Some(v)) => match v.renewal_age {
                Some(age) => Check::Ok((age, h.io_timeout.max(1) as u64)),
                None => Check::Unknown,
            },
            _ => Check::Failed(format!(
                "host {} is not in lockspace {}",
                self.me, self.cfg.cluster.lockspace
            )),
        };
        let hs = super::health::score(&self.cfg.health, &r);
        let key: Vec<&str> = hs.penalties.iter().map(|p| p.kind.as_str()).collect();
        let key = format!("{key:?} {}", hs.network_lost);
        if self.health_logged.as_deref() != Some(key.as_str()) {
            let why = format!(
                "host {} health score {}: {}{}",
                self.me,
                hs.score,
                hs.summary(),
                if hs.network_lost {
                    "; every network check failed"
                } else {
                    ""
                }
            );
            self.event("", "health", &why);
            self.health_logged = Some(key);
        }
        self.health = Some(hs.clone());
        hs
    }

    /// Logs a Wait only when its reason changes (numbers aside: "last
    /// renewal 12 s ago" is the same reason as "11 s ago").
    fn wait_event(&mut self, v: usize, reason: &str) {
        let key = super::fence::wait_key(reason);
        if self.last_wait[v].as_deref() != Some(key.as_str()) {
            let name = self.cfg.vms[v].name.clone();
            self.event(&name, "wait", reason);
            self.last_wait[v] = Some(key);
        }
        self.last_reason[v] = Some(reason.to_string());
    }

    fn local_snapshot(&mut self, now: u64) -> Vec<Local> {
        self.procs
            .iter()
            .map(|p| match p {
                None => Local::Idle,
                Some(p) if p.stopping() => Local::Stopping { since: now },
                Some(p) => match p.running_since {
                    Some(_) => Local::Running {
                        pid: p.pid as u32,
                        since: now,
                    },
                    None => Local::Starting { since: now },
                },
            })
            .collect()
    }

    fn start_vm(&mut self, v: usize, now: u64) {
        let vm = &self.cfg.vms[v];
        let name = vm.name.clone();
        if self.procs[v].is_some() {
            return;
        }
        let Some(lease) = self.infos[v].clone() else {
            let why = format!(
                "{name}: its lease {:?} is not in the xleases volume",
                vm.lease_id()
            );
            self.event(&name, "failed_start", &why);
            self.pending.push(Outcome {
                vm: v,
                at: now,
                kind: OutcomeKind::FailedStart,
            });
            return;
        };
        let launch = launch_of(vm, self.cfg.cluster.libvirt_uri.as_deref());
        let spec = runner::StartSpec {
            vm: &name,
            launch: &launch,
            lease: &lease,
            daemon_run_dir: &self.daemon_dir,
            host_id: self.me,
            log: self.run_dir.join(format!("vm-{name}.log")),
            hactl: &self.hactl,
            die_with_agent: self.die_with_agent,
        };
        match runner::start(&spec) {
            Ok(p) => self.procs[v] = Some(p),
            Err(e) => {
                self.event(&name, "failed_start", &format!("{name}: {e}"));
                self.pending.push(Outcome {
                    vm: v,
                    at: now,
                    kind: OutcomeKind::FailedStart,
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write_status(
        &self,
        now: u64,
        hosts: &[HostView],
        leases: &[LeaseView],
        board: Option<&BoardRead>,
        local: &[Local],
        local_maint: bool,
        score: Option<u32>,
    ) {
        let names: Vec<&str> = self.cfg.vms.iter().map(|v| v.name.as_str()).collect();
        let hosts_j: Vec<_> = hosts
            .iter()
            .map(|h| {
                let s = h.sector.as_ref();
                json!({
                    "host_id": h.host_id,
                    "state": h.state.as_str(),
                    "generation": h.generation,
                    "renewal_age": h.renewal_age,
                    "fresh": h.fresh,
                    "score": s.map(|s| s.score),
                    "local_maintenance": s.map(HostSector::local_maintenance),
                    "health": s.map(|s| s.health.summary()),
                    "penalties": s.map(|s| health_points_json(&s.health)),
                    "running": s.map(|s| s.running.iter().filter_map(|i| names.get(i).copied()).collect::<Vec<_>>()),
                })
            })
            .collect();
        // Only LIVE hosts' sectors say what runs now.
        let live = |h: u64| {
            hosts
                .iter()
                .any(|v| v.host_id == h && v.state == HostState::Live)
        };
        let vms_j: Vec<_> = self
            .cfg
            .vms
            .iter()
            .enumerate()
            .map(|(i, vm)| {
                let wb_hosts: Vec<u64> = board
                    .map(|b| {
                        b.hosts
                            .iter()
                            .filter_map(|(h, s)| {
                                s.as_ref()
                                    .ok()
                                    .and_then(|s| s.as_ref())
                                    .filter(|s| s.running.get(i) && live(*h))
                                    .map(|_| *h)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "name": vm.name,
                    "local": local_json(local.get(i).copied().unwrap_or_default()),
                    "migrating_to": self.procs.get(i).and_then(|p| p.as_ref()).and_then(VmProc::migrating_to),
                    "lease": lease_json(leases.get(i).copied().unwrap_or(LeaseView::Unreadable)),
                    "whiteboard_hosts": wb_hosts,
                    "last_decision": self.last_reason[i],
                })
            })
            .collect();
        let st = json!({
            "host_id": self.me,
            "t_unix": unix_now(),
            "monotime": now,
            "cycle": self.cycle,
            "score": score,
            "local_maintenance": local_maint,
            "global_maintenance": board.is_some_and(BoardRead::global_maintenance),
            "problem": self.last_problem,
            "fencing": self.fencer.status_json(self.cfg.fencing.is_some()),
            "health": self.health.as_ref().map(|h| json!({
                "score": h.score,
                "summary": h.summary(),
                "network_lost": h.network_lost,
                "isolated": self.memory.health.network_lost_since.is_some_and(|t| now >= t + self.cfg.health.isolation_after),
                "penalties": h.penalties,
                "worse_since": self.memory.health.worse_since,
                "moving": self.memory.health.moving.and_then(|(v, _)| names.get(v).copied()),
            })),
            "hosts": hosts_j,
            "vms": vms_j,
        });
        let tmp = self.run_dir.join(".status.json.tmp");
        if std::fs::write(&tmp, serde_json::to_vec_pretty(&st).unwrap()).is_ok() {
            let _ = std::fs::rename(&tmp, self.run_dir.join(STATUS_FILE));
        }
    }
}

/// A host's penalties from its whiteboard record, by kind.
pub fn health_points_json(h: &super::whiteboard::HealthRecord) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, p) in super::health::PENALTY_KINDS.iter().zip(h.points) {
        m.insert(k.as_str().into(), json!(p));
    }
    json!({
        "reported": h.flags & super::whiteboard::HEALTH_REPORTED != 0,
        "network_lost": h.network_lost(),
        "isolated": h.isolated(),
        "points": m,
    })
}

fn status_code(s: &str) -> i32 {
    s.strip_prefix("exit status ")
        .and_then(|c| c.parse().ok())
        .unwrap_or(-1)
}

pub fn lease_json(l: LeaseView) -> serde_json::Value {
    match l {
        LeaseView::Free => json!({"state": "free"}),
        LeaseView::Held {
            owner,
            generation,
            lver,
        } => json!({"state": "held", "owner": owner, "generation": generation, "lver": lver}),
        LeaseView::Unreadable => json!({"state": "unreadable"}),
    }
}

fn local_json(l: Local) -> serde_json::Value {
    match l {
        Local::Idle => json!({"state": "idle"}),
        Local::Starting { .. } => json!({"state": "starting"}),
        Local::Running { pid, .. } => json!({"state": "running", "pid": pid}),
        Local::Stopping { .. } => json!({"state": "stopping"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_view_reads_owner_or_free() {
        let mut lr = LeaderRecord {
            magic: crate::ondisk::PAXOS_DISK_MAGIC,
            version: crate::ondisk::PAXOS_DISK_VERSION_MAJOR
                | crate::ondisk::PAXOS_DISK_VERSION_MINOR,
            sector_size: 512,
            num_hosts: 2000,
            max_hosts: 2000,
            owner_id: 2,
            owner_generation: 5,
            lver: 7,
            space_name: Name::new("ls").unwrap(),
            resource_name: Name::new("vm1").unwrap(),
            timestamp: 1234,
            ..Default::default()
        };
        let mut b = vec![0u8; 512];
        b[..crate::ondisk::leader::LEADER_SIZE].copy_from_slice(&lr.seal());
        assert_eq!(
            lease_view(&b, "ls", "vm1"),
            Ok(LeaseView::Held {
                owner: 2,
                generation: 5,
                lver: 7
            })
        );
        assert!(
            lease_view(&b, "ls", "vm2").is_err(),
            "another lease's record"
        );
        lr.timestamp = 0;
        b[..crate::ondisk::leader::LEADER_SIZE].copy_from_slice(&lr.seal());
        assert_eq!(lease_view(&b, "ls", "vm1"), Ok(LeaseView::Free));
        b[60] ^= 1;
        assert!(lease_view(&b, "ls", "vm1").is_err(), "bad checksum");
    }

    #[test]
    fn renewal_age_counts_from_the_last_change() {
        let mut r = RenewalAges::default();
        assert_eq!(r.observe(1, 100, 10), 0);
        assert_eq!(r.observe(1, 100, 15), 5);
        assert_eq!(r.observe(1, 102, 16), 0);
        assert_eq!(r.observe(1, 102, 20), 4);
    }
}
