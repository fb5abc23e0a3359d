//! Starting and stopping VMs, only ever under their lease.
//!
//! Runner "command": the agent starts `hactl client command -r
//! LS:LEASE_ID:XLEASES:OFFSET -c ARGV...` with the local daemon's
//! `SANLOCK_RUN_DIR`. That process registers with the daemon, acquires the
//! lease on its registered connection and then execs ARGV, so the VM process
//! itself holds the lease: the lease goes when the VM exits, and the daemon
//! kills the VM if the lockspace fails. A lease not acquired means the
//! command exits before ARGV ever ran; its output says why, which tells a
//! lost race (another host holds the lease) from a failed start.
//!
//! Runner "libvirt" ([`super::libvirt`]): the domain is defined with its
//! `<lease>` and started with `virsh start`; libvirt's sanlock plugin makes
//! qemu the lease holder. The start runs as a child process (`virsh start`
//! waits for qemu and the lease); once it succeeded the VM is the domain's
//! qemu, known by the pid that holds the lease, and watched by that pid.
//! A refusal because another host holds the lease is a lost race, told
//! apart from any other failure by libvirt's own error text.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::xleases::LeaseInfo;

/// How long a stop waits after SIGTERM (or the stop command) before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// A VM that exits non-zero this soon after its exec did not really start:
/// it counts as a failed start, not as a VM that ran and exited.
pub const EARLY_EXIT: Duration = Duration::from_secs(3);

/// How a VM is run (from the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    Command {
        start: Vec<String>,
        stop: Option<Vec<String>>,
    },
    Libvirt(super::libvirt::Domain),
}

/// Everything one start needs.
pub struct StartSpec<'a> {
    pub vm: &'a str,
    pub launch: &'a Launch,
    pub lease: &'a LeaseInfo,
    /// The local daemon's run dir (`SANLOCK_RUN_DIR`).
    pub daemon_run_dir: &'a Path,
    pub host_id: u64,
    /// The runner's stdout and stderr go here (rewritten at each start).
    pub log: PathBuf,
    /// The `hactl` binary that runs `client command`.
    pub hactl: &'a Path,
    /// Makes the VM die with the agent (test clusters only: a real agent
    /// that restarts must leave its VMs running).
    pub die_with_agent: bool,
}

/// Why a start ended without a running VM, or how a VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The lease is held by another host (or another host won the ballot):
    /// not this host's fault.
    LostRace { rv: i32, why: String },
    /// The start failed on this host (no daemon, lease error, no such
    /// program, the VM died at once).
    FailedStart { why: String },
    /// The VM ran and exited (by itself or by a stop).
    Exited { status: String, ran_for: Duration },
    /// Runner libvirt: live-migrated to host `to` (`virsh migrate` returned
    /// success: the guest runs there, under the lease its host took).
    Migrated { to: u64, took: Duration },
}

/// Where a VM process stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcState {
    /// Registering and acquiring the lease (may wait for a dead owner).
    Starting,
    /// The VM runs under its lease.
    Running,
    Ended(Outcome),
}

/// A VM process this agent started.
pub struct VmProc {
    pub vm: String,
    pub pid: i32,
    /// None: adopted, a VM started by an earlier agent (not our child).
    child: Option<Child>,
    /// Since when the process exists (start) and since when the VM runs.
    pub spawned: Instant,
    pub running_since: Option<Instant>,
    log: PathBuf,
    stop: Option<StopState>,
    ended: Option<Outcome>,
    stop_argv: Option<Vec<String>>,
    /// Runner libvirt: the domain. Its `child` is `virsh start` while the
    /// start runs; `pid` is its qemu's once known (0 before).
    domain: Option<super::libvirt::Domain>,
    /// Runner libvirt: a `virsh migrate` under way.
    migrating: Option<Migrating>,
    /// A migration that failed (target host, why), for the agent to take.
    migrate_failed: Option<(u64, String)>,
}

struct Migrating {
    child: Child,
    to: u64,
    since: Instant,
    timeout: Duration,
    log: PathBuf,
    /// `virsh domjobabort` was sent (the timeout passed).
    aborted: bool,
    /// `virsh migrate` was killed, [`MIGRATE_KILL_GRACE`] after the abort.
    killed: bool,
}

/// How long `virsh migrate` may take to end after its job was aborted
/// before it is killed: virsh itself can hang (2 of 12 `virsh migrate
/// --p2p` run side by side against libvirt's test driver never ended,
/// polling for a job result that never came), and a VM whose migration
/// never ends is neither here nor there for the agent.
pub const MIGRATE_KILL_GRACE: Duration = Duration::from_secs(10);

struct StopState {
    since: Instant,
    killed: bool,
    helper: Option<Child>,
}

/// The result numbers that mean "someone else has the lease".
pub fn is_lost_race(rv: i32) -> bool {
    use crate::rv::*;
    matches!(
        rv,
        SANLK_ACQUIRE_IDLIVE
            | SANLK_ACQUIRE_OWNED
            | SANLK_ACQUIRE_OTHER
            | SANLK_ACQUIRE_OWNED_RETRY
            | SANLK_ACQUIRE_LVER
            | SANLK_DBLOCK_LVER
            | SANLK_DBLOCK_MBAL
    ) || rv == -libc::EAGAIN
        || rv == -libc::EBUSY
}

/// Finds `prog` on PATH (execv in `client command` does not search it).
fn resolve(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// Starts a VM under its lease. Errors here are failed starts that never
/// got as far as a process.
pub fn start(spec: &StartSpec) -> Result<VmProc, String> {
    use std::os::unix::process::CommandExt;
    let (start, stop) = match spec.launch {
        Launch::Command { start, stop } => (start, stop.clone()),
        Launch::Libvirt(dom) => return start_domain(spec, dom),
    };
    let Some(prog) = start.first() else {
        return Err("the VM's start command is empty".into());
    };
    let Some(prog) = resolve(prog) else {
        return Err(format!("{prog:?} is not on PATH"));
    };
    let log = File::create(&spec.log)
        .map_err(|e| format!("cannot create {}: {e}", spec.log.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", spec.log.display()))?;
    let mut cmd = Command::new(spec.hactl);
    cmd.args([
        "client",
        "command",
        "-r",
        &spec.lease.sanlock_string(),
        "-c",
    ])
    .arg(&prog)
    .args(&start[1..])
    .env("SANLOCK_RUN_DIR", spec.daemon_run_dir)
    .env("HACTL_HA_HOST_ID", spec.host_id.to_string())
    .env("HACTL_HA_VM", spec.vm)
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(log2);
    if spec.die_with_agent {
        // SAFETY: prctl is async-signal-safe; it only affects the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", spec.hactl.display()))?;
    Ok(VmProc {
        vm: spec.vm.to_string(),
        pid: child.id() as i32,
        child: Some(child),
        spawned: Instant::now(),
        running_since: None,
        log: spec.log.clone(),
        stop: None,
        ended: None,
        stop_argv: stop,
        domain: None,
        migrating: None,
        migrate_failed: None,
    })
}

/// Runner libvirt: the definition made sure of ([`super::libvirt::prepare`]),
/// then `virsh start` as a child.
fn start_domain(spec: &StartSpec, dom: &super::libvirt::Domain) -> Result<VmProc, String> {
    let dir = spec.log.parent().unwrap_or(Path::new("."));
    super::libvirt::prepare(dom, spec.lease, dir)?;
    let log = File::create(&spec.log)
        .map_err(|e| format!("cannot create {}: {e}", spec.log.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", spec.log.display()))?;
    let child = Command::new("virsh")
        .args(["-q", "-c", &dom.uri, "start", &dom.name])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot run virsh (install libvirt-clients): {e}"))?;
    Ok(VmProc {
        vm: spec.vm.to_string(),
        pid: 0,
        child: Some(child),
        spawned: Instant::now(),
        running_since: None,
        log: spec.log.clone(),
        stop: None,
        ended: None,
        stop_argv: None,
        domain: Some(dom.clone()),
        migrating: None,
        migrate_failed: None,
    })
}

/// Takes charge of a domain an earlier agent started, its qemu `pid`
/// holding the VM's lease.
pub fn adopt_domain(vm: &str, pid: i32, dom: &super::libvirt::Domain) -> VmProc {
    let mut p = adopt(vm, pid, None);
    p.domain = Some(dom.clone());
    p
}

/// Whether an adopted VM (not our child: we cannot wait for it) is gone:
/// no such process, or a zombie its parent has not reaped yet.
fn adopted_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the ")" that ends the command name.
        Ok(st) => st
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Takes charge of a VM an earlier agent started (found as the holder of
/// its lease in the daemon's status): it runs; it can be stopped by
/// signal; its exit status is not known (it is not our child).
pub fn adopt(vm: &str, pid: i32, stop: Option<Vec<String>>) -> VmProc {
    VmProc {
        vm: vm.to_string(),
        pid,
        child: None,
        spawned: Instant::now(),
        running_since: Some(Instant::now()),
        log: PathBuf::new(),
        stop: None,
        ended: None,
        stop_argv: stop,
        domain: None,
        migrating: None,
        migrate_failed: None,
    }
}

/// Whether `pid` is still the `client command` runner (not yet exec'd).
fn still_runner(pid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(c) => c
            .split(|&b| b == 0)
            .skip(1)
            .take(2)
            .eq([&b"client"[..], &b"command"[..]]),
        Err(_) => false,
    }
}

/// Reads what `client command` printed: `register done RV`, `acquire done
/// RV`, `execv failed: ...` (only printed when no exec happened).
fn judge_log(text: &str) -> Option<Outcome> {
    let rv_of = |key: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix(key))
            .filter_map(|v| v.trim().parse::<i32>().ok())
            .next_back()
    };
    let why = |t: &str| {
        t.lines()
            .rfind(|l| l.starts_with("hactl:") || l.contains("failed"))
            .unwrap_or("")
            .to_string()
    };
    if let Some(rv) = rv_of("register done ").filter(|&rv| rv < 0) {
        return Some(Outcome::FailedStart {
            why: format!(
                "cannot register with the local daemon: {} ({rv}) {}",
                crate::rv::describe(rv),
                why(text)
            ),
        });
    }
    match rv_of("acquire done ") {
        Some(rv) if rv < 0 && is_lost_race(rv) => Some(Outcome::LostRace {
            rv,
            why: crate::rv::describe(rv),
        }),
        Some(rv) if rv < 0 => Some(Outcome::FailedStart {
            why: format!(
                "acquiring the lease failed: {} ({rv})",
                crate::rv::describe(rv)
            ),
        }),
        Some(_) => Some(Outcome::FailedStart {
            why: format!(
                "the lease was acquired but the VM did not start: {}",
                why(text)
            ),
        }),
        None => None,
    }
}

fn describe_status(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!(
            "killed by {}",
            nix::sys::signal::Signal::try_from(s)
                .map_or_else(|_| format!("signal {s}"), |s| s.to_string())
        ),
        _ => "ended".into(),
    }
}

impl VmProc {
    /// Checks the process; call once per cycle. Reaps it when it ended and
    /// carries a stop forward (SIGKILL after [`STOP_GRACE`]).
    pub fn poll(&mut self) -> ProcState {
        if let Some(o) = &self.ended {
            return ProcState::Ended(o.clone());
        }
        self.drive_migration();
        if let Some(o) = &self.ended {
            return ProcState::Ended(o.clone());
        }
        if self.migrating.is_some() {
            // The source qemu exits before `virsh migrate` returns: its
            // result, not the gone qemu, says how the VM left.
            return ProcState::Running;
        }
        self.drive_stop();
        if self.domain.is_some() {
            return self.poll_domain();
        }
        let ended = match &mut self.child {
            Some(c) => c.try_wait(),
            None => Ok(adopted_gone(self.pid).then(ExitStatus::default)),
        };
        match ended {
            Ok(Some(st)) => {
                let o = self.outcome(st);
                self.ended = Some(o.clone());
                if let Some(s) = &mut self.stop
                    && let Some(h) = &mut s.helper
                {
                    let _ = h.try_wait();
                }
                ProcState::Ended(o)
            }
            Ok(None) | Err(_) => {
                if self.running_since.is_none() && !still_runner(self.pid) {
                    self.running_since = Some(Instant::now());
                }
                if self.running_since.is_some() {
                    ProcState::Running
                } else {
                    ProcState::Starting
                }
            }
        }
    }

    /// Runner libvirt: `virsh start` still running, its result, or the
    /// domain's qemu still there.
    fn poll_domain(&mut self) -> ProcState {
        let dom = self.domain.clone().expect("a domain");
        if let Some(c) = &mut self.child {
            match c.try_wait() {
                Ok(None) => return ProcState::Starting,
                Ok(Some(st)) if st.success() => {
                    self.child = None;
                    self.running_since = Some(Instant::now());
                }
                Ok(Some(st)) => {
                    let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                    let err = super::libvirt::error_text(text.as_bytes());
                    let o = match super::libvirt::judge_start_error(&err) {
                        Ok(rv) => Outcome::LostRace { rv, why: err },
                        Err(why) if why.is_empty() => Outcome::FailedStart {
                            why: format!("virsh start {}: {}", dom.name, describe_status(st)),
                        },
                        Err(why) => Outcome::FailedStart { why },
                    };
                    self.child = None;
                    self.ended = Some(o.clone());
                    return ProcState::Ended(o);
                }
                Err(e) => {
                    let o = Outcome::FailedStart {
                        why: format!("virsh start {}: {e}", dom.name),
                    };
                    self.child = None;
                    self.ended = Some(o.clone());
                    return ProcState::Ended(o);
                }
            }
        }
        let gone = if self.pid > 0 {
            adopted_gone(self.pid)
        } else {
            // qemu not known yet: ask libvirt.
            !matches!(
                domain_state(&dom).as_deref(),
                Ok("running" | "paused" | "in shutdown")
            )
        };
        if !gone {
            return ProcState::Running;
        }
        let status = domain_state_reason(&dom).unwrap_or_else(|e| format!("gone ({e})"));
        let since = self.running_since.unwrap_or(self.spawned);
        let o = Outcome::Exited {
            status: format!("domain {status}"),
            ran_for: since.elapsed(),
        };
        self.ended = Some(o.clone());
        ProcState::Ended(o)
    }

    /// Runner libvirt: the domain's qemu, once known (the lease holder).
    pub fn set_pid(&mut self, pid: i32) {
        if self.pid == 0 {
            self.pid = pid;
        }
    }

    /// Runner libvirt and the qemu pid is not known yet.
    pub fn needs_pid(&self) -> bool {
        self.domain.is_some() && self.pid == 0 && self.running_since.is_some()
    }

    fn outcome(&self, st: std::process::ExitStatus) -> Outcome {
        if self.child.is_none() {
            return Outcome::Exited {
                status: "ended (adopted: exit status unknown)".into(),
                ran_for: self.spawned.elapsed(),
            };
        }
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if self.running_since.is_none()
            && let Some(o) = judge_log(&text)
        {
            return o;
        }
        let since = self.running_since.unwrap_or(self.spawned);
        let ran_for = since.elapsed();
        let status = describe_status(st);
        if self.stop.is_none() && !st.success() && ran_for < EARLY_EXIT {
            let last = text.lines().last().unwrap_or("").trim();
            return Outcome::FailedStart {
                why: format!(
                    "the VM exited at once ({status} after {:.1} s){}",
                    ran_for.as_secs_f64(),
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(": {last}")
                    }
                ),
            };
        }
        Outcome::Exited { status, ran_for }
    }

    /// Runner libvirt: begins a live migration to host `to` (see
    /// [`super::migrate`]); [`VmProc::poll`] ends the VM here as
    /// [`Outcome::Migrated`] once `virsh migrate` succeeded, or leaves it
    /// running with a failure for [`VmProc::take_migrate_failure`].
    pub fn migrate(
        &mut self,
        cfg: &super::migrate::MigrationConfig,
        to: &super::migrate::MigrationHost,
        log: PathBuf,
    ) -> Result<(), String> {
        let Some(dom) = &self.domain else {
            return Err("only runner \"libvirt\" VMs migrate".into());
        };
        if self.child.is_some() || self.running_since.is_none() {
            return Err("its start has not finished".into());
        }
        if self.stop.is_some() || self.ended.is_some() || self.migrating.is_some() {
            return Err("it is already stopping or migrating".into());
        }
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new("virsh")
            .args(super::migrate::virsh_args(cfg, &dom.uri, &dom.name, to))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run virsh (install libvirt-clients): {e}"))?;
        self.migrating = Some(Migrating {
            child,
            to: to.id,
            since: Instant::now(),
            timeout: Duration::from_secs(cfg.timeout),
            log,
            aborted: false,
            killed: false,
        });
        Ok(())
    }

    /// The host a live migration under way goes to.
    pub fn migrating_to(&self) -> Option<u64> {
        self.migrating.as_ref().map(|m| m.to)
    }

    /// The migration that failed since the last call: (target host, why).
    /// The VM still runs here.
    pub fn take_migrate_failure(&mut self) -> Option<(u64, String)> {
        self.migrate_failed.take()
    }

    fn drive_migration(&mut self) {
        let Some(m) = &mut self.migrating else {
            return;
        };
        match m.child.try_wait() {
            Ok(None) => {
                if !m.aborted
                    && m.since.elapsed() >= m.timeout
                    && let Some(dom) = &self.domain
                {
                    m.aborted = true;
                    if let Some(mut c) = virsh_child(dom, "domjobabort") {
                        let _ = c.wait();
                    }
                } else if m.aborted
                    && !m.killed
                    && m.since.elapsed() >= m.timeout + MIGRATE_KILL_GRACE
                {
                    // Reaped at the next poll, and reported as failed.
                    m.killed = m.child.kill().is_ok();
                }
            }
            Ok(Some(st)) => {
                let (to, took) = (m.to, m.since.elapsed());
                if st.success() {
                    self.ended = Some(Outcome::Migrated { to, took });
                } else {
                    let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                    let mut why = super::libvirt::error_text(text.as_bytes());
                    if why.is_empty() {
                        why = format!("virsh migrate: {}", describe_status(st));
                    }
                    if m.killed {
                        why = format!(
                            "virsh migrate did not end {} s after the job was aborted (at the {} s \
                             timeout) and was killed: {why}",
                            MIGRATE_KILL_GRACE.as_secs(),
                            m.timeout.as_secs()
                        );
                    } else if m.aborted {
                        why = format!("aborted after the {} s timeout: {why}", m.timeout.as_secs());
                    }
                    self.migrate_failed = Some((to, why));
                }
                self.migrating = None;
            }
            Err(e) => {
                self.migrate_failed = Some((m.to, format!("virsh migrate: {e}")));
                self.migrating = None;
            }
        }
    }

    /// Begins stopping: the stop command if configured, else SIGTERM;
    /// [`VmProc::poll`] sends SIGKILL after [`STOP_GRACE`]. Not while a
    /// migration runs (its failure is followed by a stop).
    pub fn stop(&mut self) {
        if self.stop.is_some() || self.ended.is_some() || self.migrating.is_some() {
            return;
        }
        if let Some(dom) = &self.domain {
            // A start still running is let finish: its qemu is then shut
            // down like any (virsh start holds libvirt's job lock).
            let helper = virsh_child(dom, "shutdown");
            self.stop = Some(StopState {
                since: Instant::now(),
                killed: false,
                helper,
            });
            return;
        }
        let helper = match &self.stop_argv {
            Some(argv) if !argv.is_empty() => Command::new(&argv[0])
                .args(&argv[1..])
                .env("HACTL_HA_VM", &self.vm)
                .env("HACTL_HA_VM_PID", self.pid.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok(),
            _ => None,
        };
        if helper.is_none() {
            self.signal(libc::SIGTERM);
        }
        self.stop = Some(StopState {
            since: Instant::now(),
            killed: false,
            helper,
        });
    }

    /// Stopping, or moving away by a live migration.
    pub fn stopping(&self) -> bool {
        self.stop.is_some() || self.migrating.is_some()
    }

    fn drive_stop(&mut self) {
        let pid = self.pid;
        if let Some(s) = &mut self.stop {
            if let Some(h) = &mut s.helper
                && let Ok(Some(_)) = h.try_wait()
            {
                s.helper = None;
            }
            if !s.killed && s.since.elapsed() >= STOP_GRACE {
                s.killed = true;
                match &self.domain {
                    // The guest did not power off: libvirt kills qemu.
                    Some(dom) => s.helper = virsh_child(dom, "destroy"),
                    // SAFETY: kill(2) on our own child, not yet reaped.
                    None => unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    },
                }
            }
        }
    }

    fn signal(&self, sig: i32) {
        if self.ended.is_none() && self.pid > 0 {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// SIGKILL now and reap (agent shutdown in tests).
    pub fn kill_now(&mut self) {
        if let Some(m) = &mut self.migrating {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
        if let Some(dom) = &self.domain {
            let _ = super::libvirt::virsh(&dom.uri, &["destroy", &dom.name]);
        } else {
            self.signal(libc::SIGKILL);
        }
        if let Some(c) = &mut self.child {
            let _ = c.wait();
        }
    }
}

/// `virsh ACTION DOMAIN` in the background.
fn virsh_child(dom: &super::libvirt::Domain, action: &str) -> Option<Child> {
    Command::new("virsh")
        .args(["-q", "-c", &dom.uri, action, &dom.name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// `virsh domstate`: `running`, `paused`, `shut off`, ...
pub fn domain_state(dom: &super::libvirt::Domain) -> Result<String, String> {
    let o = super::libvirt::virsh(&dom.uri, &["domstate", &dom.name])?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(super::libvirt::error_text(&o.stderr))
    }
}

/// `shut off (destroyed)`, `crashed (panicked)`, `running (migrated)`, ...
pub fn domain_state_reason(dom: &super::libvirt::Domain) -> Result<String, String> {
    let o = super::libvirt::virsh(&dom.uri, &["domstate", "--reason", &dom.name])?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(super::libvirt::error_text(&o.stderr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_client_command_output() {
        assert!(matches!(
            judge_log("register\nregister done 5\nacquire fd 5\nacquire done -243\n"),
            Some(Outcome::LostRace { rv: -243, .. })
        ));
        assert!(matches!(
            judge_log("register done 5\nacquire done -11\n"),
            Some(Outcome::LostRace { rv: -11, .. })
        ));
        let Some(Outcome::FailedStart { why }) = judge_log("register done -111\n") else {
            panic!()
        };
        assert!(why.contains("register"), "{why}");
        let Some(Outcome::FailedStart { why }) = judge_log("register done 5\nacquire done -2\n")
        else {
            panic!()
        };
        assert!(why.contains("No such file"), "{why}");
        // Lines printed at exit after an exec that failed.
        assert!(matches!(
            judge_log("execv failed: No such file or directory\nregister done 5\nacquire done 0\n"),
            Some(Outcome::FailedStart { .. })
        ));
        // Nothing from the runner: the exec happened, the VM ran.
        assert_eq!(judge_log(""), None);
    }

    /// A `virsh migrate` that fails leaves the VM running here, stopping
    /// only once the agent stops it, with libvirt's words for the event.
    #[test]
    fn a_failed_migration_is_reported_and_the_vm_runs_on() {
        let dir = tempfile::tempdir().unwrap();
        let dom = super::super::libvirt::Domain {
            name: "test".into(),
            xml: None,
            uri: "test:///default".into(),
        };
        // Our own pid as the domain's qemu: it runs as long as the test.
        let mut p = adopt_domain("vm1", std::process::id() as i32, &dom);
        let cfg = crate::ha::migrate::MigrationConfig {
            tunnelled: true,
            timeout: 2,
            hosts: vec![crate::ha::migrate::MigrationHost {
                id: 2,
                uri: "qemu+unix:///system?socket=/nonexistent/sock".into(),
                data_uri: None,
            }],
        };
        p.migrate(&cfg, &cfg.hosts[0], dir.path().join("migrate-vm1.log"))
            .unwrap();
        assert_eq!(p.migrating_to(), Some(2));
        assert!(p.stopping(), "a migrating VM counts as stopping");
        assert!(
            p.migrate(&cfg, &cfg.hosts[0], dir.path().join("x"))
                .is_err()
        );
        // virsh ends at once with libvirt's error; or (2 runs in 12 side
        // by side) hangs, and is killed MIGRATE_KILL_GRACE after the 2 s
        // timeout's abort.
        let end = Instant::now() + Duration::from_secs(2) + MIGRATE_KILL_GRACE * 2;
        let failure = loop {
            assert_eq!(p.poll(), ProcState::Running);
            if let Some(f) = p.take_migrate_failure() {
                break f;
            }
            assert!(Instant::now() < end, "virsh migrate did not end");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(failure.0, 2);
        // The test driver has no peer-to-peer migration: libvirt says so
        // (after "aborted after the 2 s timeout: " if virsh was slow).
        assert!(
            (failure.1.contains("error: ") && failure.1.contains("migration"))
                || failure.1.contains("was killed"),
            "{failure:?}"
        );
        assert_eq!(p.migrating_to(), None);
        assert!(!p.stopping());
        assert!(p.take_migrate_failure().is_none(), "reported once");
    }

    #[test]
    fn libvirt_start_of_an_unknown_domain_is_a_failed_start() {
        let dir = tempfile::tempdir().unwrap();
        let lease = LeaseInfo {
            lockspace: "ls".into(),
            resource: "vm".into(),
            path: "/nonexistent".into(),
            offset: 3 << 20,
        };
        let launch = Launch::Libvirt(super::super::libvirt::Domain {
            name: "web1".into(),
            xml: Some(dir.path().join("missing.xml")),
            uri: "test:///default".into(),
        });
        let spec = StartSpec {
            vm: "web1",
            launch: &launch,
            lease: &lease,
            daemon_run_dir: Path::new("/nonexistent"),
            host_id: 1,
            log: dir.path().join("vm-web1.log"),
            hactl: Path::new("/nonexistent/hactl"),
            die_with_agent: false,
        };
        let e = start(&spec).err().unwrap();
        assert!(e.contains("cannot read domain XML"), "{e}");
    }
}
