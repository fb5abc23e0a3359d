//! Fencing at the edge: the `[fencing]` config, running fence agents by
//! the fence-agents conventions, and declaring a fenced host dead on
//! storage. The policy (who fences whom, when) is pure, in
//! [`super::fencing`]; the agent runs the sequence of [`run_fence`] in a
//! thread of its own so that its cycle (and its whiteboard progress) goes
//! on while a fence agent works.
//!
//! fence-agents conventions: an agent reads `key=value` lines on stdin
//! when it gets no arguments (`action=off`, `ip=...`, `password=...`);
//! `-o off|on|status|reboot` is the same as `action=`. Exit 0 is success,
//! 1 failure; for `status`, 0 means on and 2 means off. hactl passes
//! everything on stdin, as pacemaker does, so that no secret is ever on a
//! command line that `ps` shows.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::io::{Area, Disk};
use crate::ondisk::{LeaderRecord, Name};

/// The most of an agent's output kept (events, status).
pub const OUTPUT_MAX: usize = 2048;
/// Declarations tried when storage fails them (the host is off: no risk
/// in trying again, each try checks the lease anew).
const DECLARE_TRIES: u32 = 3;
const IO_PREFIX: &str = "storage: ";
/// The largest secrets file read.
const SECRETS_MAX: u64 = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FencingConfig {
    /// Seconds a host must have been FAIL before it is fenced (0: as soon
    /// as the daemon calls it FAIL).
    #[serde(default)]
    pub delay: u64,
    /// Seconds each next LIVE host (by host id) waits for the ones before
    /// it to report on the whiteboard that they fence, before it fences.
    #[serde(default = "default_takeover")]
    pub takeover: u64,
    /// Storm guard: at most `max_fences` fences by this host per `window` s.
    #[serde(default = "default_max_fences")]
    pub max_fences: u32,
    #[serde(default = "default_window")]
    pub window: u64,
    #[serde(default, rename = "host")]
    pub hosts: Vec<FenceHost>,
}

fn default_takeover() -> u64 {
    10
}
fn default_max_fences() -> u32 {
    2
}
fn default_window() -> u64 {
    600
}
fn default_agent_timeout() -> u64 {
    60
}

/// The fence agents of one host, tried in order.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceHost {
    pub host_id: u64,
    #[serde(rename = "agent")]
    pub agents: Vec<FenceAgent>,
}

/// One fence agent (an IPMI BMC, a PDU outlet, ...).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceAgent {
    /// argv: the agent's path, e.g. `["/usr/sbin/fence_ipmilan"]`. Options
    /// go in `options`: fence-agents read stdin only without arguments.
    pub command: Vec<String>,
    /// `key = value` lines on the agent's stdin (`ip`, `username`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, OptValue>,
    /// A file of `key=value` lines (passwords) added to stdin; mode 0600.
    #[serde(default)]
    pub secrets: Option<PathBuf>,
    /// Seconds each run (`off`, `status`) may take before it is killed.
    #[serde(default = "default_agent_timeout")]
    pub timeout: u64,
}

/// An option value as TOML writes it (`ipport = 623`, `lanplus = true`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OptValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl std::fmt::Display for OptValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptValue::Str(s) => f.write_str(s),
            OptValue::Int(i) => write!(f, "{i}"),
            // fence-agents take "1" for a set flag.
            OptValue::Bool(b) => f.write_str(if *b { "1" } else { "0" }),
        }
    }
}

impl FenceAgent {
    /// A short name for events: the command's file name and its arguments.
    pub fn label(&self) -> String {
        let mut words: Vec<String> = self.command.iter().skip(1).cloned().collect();
        if let Some(c) = self.command.first() {
            let base = Path::new(c)
                .file_name()
                .map_or(c.clone(), |f| f.to_string_lossy().into_owned());
            words.insert(0, base);
        }
        words.join(" ")
    }
}

impl FencingConfig {
    pub fn host(&self, host_id: u64) -> Option<&FenceHost> {
        self.hosts.iter().find(|h| h.host_id == host_id)
    }

    /// What serde cannot check. Secrets files are checked when read.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_fences == 0 {
            return Err("fencing.max_fences must be at least 1".into());
        }
        if self.window == 0 {
            return Err("fencing.window must be at least 1 second".into());
        }
        let mut seen = std::collections::HashSet::new();
        for h in &self.hosts {
            let what = format!("fencing.host {}", h.host_id);
            if !(1..=super::config::MAX_HOST_ID).contains(&h.host_id) {
                return Err(format!("{what}: not a host_id (1..=2000)"));
            }
            if !seen.insert(h.host_id) {
                return Err(format!("{what}: configured twice"));
            }
            if h.agents.is_empty() {
                return Err(format!("{what}: no [[fencing.host.agent]]"));
            }
            for (k, a) in h.agents.iter().enumerate() {
                let what = format!("{what} agent #{}", k + 1);
                if a.command.first().is_none_or(String::is_empty) {
                    return Err(format!("{what}: command must be a non-empty argv"));
                }
                if !(1..=600).contains(&a.timeout) {
                    return Err(format!("{what}: timeout must be 1..=600 seconds"));
                }
                for (key, v) in &a.options {
                    check_option(key, &v.to_string()).map_err(|e| format!("{what}: {e}"))?;
                    // A password in the config would be readable by anyone
                    // who reads the config, which is the same on every host.
                    if key.contains("passw") {
                        return Err(format!(
                            "{what}: option {key:?} belongs in a secrets file (mode 0600), not in the config"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_option(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "option name {key:?}: letters, digits, _ and - only"
        ));
    }
    if key == "action" || key == "o" {
        return Err("option \"action\" is hactl's to set (off, then status)".into());
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(format!("option {key}: a value cannot hold a line break"));
    }
    Ok(())
}

/// Reads a secrets file: `key=value` lines, `#` comments. Refused unless
/// it is a regular file that only its owner may read or write (0600).
pub fn read_secrets(path: &Path) -> Result<Vec<(String, String)>, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("secrets {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("secrets {}: not a regular file", path.display()));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "secrets {} has mode {mode:04o}: others may read it; it must be 0600 (chmod 600 {})",
            path.display(),
            path.display()
        ));
    }
    if meta.len() > SECRETS_MAX {
        return Err(format!(
            "secrets {}: {} bytes, at most {SECRETS_MAX}",
            path.display(),
            meta.len()
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("secrets {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "secrets {} line {}: not key=value",
                path.display(),
                n + 1
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        check_option(k, v).map_err(|e| format!("secrets {}: {e}", path.display()))?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// What one run of a fence agent did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRun {
    pub action: &'static str,
    /// None: killed at its timeout.
    pub exit: Option<i32>,
    /// stdout and stderr, trimmed, secrets masked, at most [`OUTPUT_MAX`].
    pub output: String,
    pub millis: u64,
}

impl AgentRun {
    pub fn describe(&self) -> String {
        let how = match self.exit {
            Some(c) => format!("exit {c}"),
            None => "killed at its timeout".into(),
        };
        let out = if self.output.is_empty() {
            String::new()
        } else {
            format!(": {}", self.output.replace('\n', " | "))
        };
        format!("{how} after {:.1} s{out}", self.millis as f64 / 1000.0)
    }
}

/// Runs `agent` with `action` (options on stdin), in its own process
/// group, killed with its group at the agent's timeout.
pub fn run_agent(agent: &FenceAgent, action: &'static str) -> Result<AgentRun, String> {
    use std::os::unix::process::CommandExt;
    let secrets = match &agent.secrets {
        Some(p) => read_secrets(p)?,
        None => Vec::new(),
    };
    let mut input = format!("action={action}\n");
    for (k, v) in &agent.options {
        input.push_str(&format!("{k}={v}\n"));
    }
    for (k, v) in &secrets {
        input.push_str(&format!("{k}={v}\n"));
    }
    let t0 = Instant::now();
    let mut child = Command::new(&agent.command[0])
        .args(&agent.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{}: {e}", agent.command[0]))?;
    let pgid = child.id() as i32;
    // An agent that does not read its stdin must not block us: write from
    // a thread; a closed pipe is its business.
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(input.as_bytes());
        }
    });
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut r).take(64 * 1024).read_to_end(&mut buf);
            // Drain the rest so the agent never blocks on a full pipe.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            buf
        })
    })
    .collect();
    let deadline = t0 + Duration::from_secs(agent.timeout);
    let exit = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st.code().or(Some(128 + st_signal(&st))),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                // SAFETY: kill(2) of the process group we made for the agent.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
        }
    };
    // The agent's children may hold its pipes open: they go with its group.
    // SAFETY: as above; the group is ours and the agent is reaped.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = writer.join();
    let mut text = String::new();
    for r in readers {
        let b = r.join().unwrap_or_default();
        text.push_str(&String::from_utf8_lossy(&b));
    }
    Ok(AgentRun {
        action,
        exit,
        output: tidy_output(&text, &secrets),
        millis: t0.elapsed().as_millis() as u64,
    })
}

fn st_signal(st: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.signal().unwrap_or(0)
}

/// The agent's output for an event: secrets masked, noise lines (Python's
/// deprecation warnings) dropped, bounded.
fn tidy_output(text: &str, secrets: &[(String, String)]) -> String {
    let mut out: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("DeprecationWarning") && !l.starts_with("from "))
        .map(|l| {
            let mut l = l.to_string();
            for (_, v) in secrets.iter().filter(|(_, v)| !v.is_empty()) {
                l = l.replace(v.as_str(), "***");
            }
            l
        })
        .collect();
    out.dedup();
    let mut s = out.join("\n");
    if s.len() > OUTPUT_MAX {
        let mut cut = OUTPUT_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" ...");
    }
    s
}

/// One step of a fence, for the agent's events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// An agent run and what it said.
    Ran { agent: String, run: AgentRun },
    /// A run that could not start (missing binary, bad secrets file).
    CannotRun { agent: String, why: String },
}

/// How a fence ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// An agent powered it off and its status confirmed off; the host's
    /// delta lease was released on storage.
    Declared { agent: String, detail: String },
    /// Confirmed off, but the declaration on storage failed or was refused
    /// (the host renewed after all): nothing was released.
    NotDeclared { agent: String, why: String },
    /// No agent both succeeded and confirmed off.
    Failed { why: String },
}

impl Ending {
    /// The metrics label.
    pub fn result(&self) -> &'static str {
        match self {
            Ending::Declared { .. } => "declared",
            Ending::NotDeclared { .. } => "not_declared",
            Ending::Failed { .. } => "failed",
        }
    }
}

/// Where a victim's delta lease lives, and what it was when it was judged.
#[derive(Clone, Debug)]
pub struct Victim {
    pub host_id: u64,
    pub generation: u64,
    /// Its delta lease timestamp as last seen (FAIL: unchanged since).
    pub timestamp: u64,
    pub lockspace: String,
    pub ids: PathBuf,
    pub sector_size: u32,
    pub io_timeout: Duration,
}

/// The whole fence of one host: each agent in order, `off` then `status`;
/// the first that succeeds and confirms off ends it, and only then the
/// host is declared dead on storage. `step` sees every run.
pub fn run_fence(agents: &[FenceAgent], victim: &Victim, mut step: impl FnMut(Step)) -> Ending {
    let mut tried = Vec::new();
    for a in agents {
        let label = a.label();
        let off = match run_agent(a, "off") {
            Ok(r) => r,
            Err(why) => {
                tried.push(format!("{label}: {why}"));
                step(Step::CannotRun { agent: label, why });
                continue;
            }
        };
        let off_ok = off.exit == Some(0);
        let off_desc = off.describe();
        step(Step::Ran {
            agent: label.clone(),
            run: off,
        });
        if !off_ok {
            tried.push(format!("{label} off: {off_desc}"));
            continue;
        }
        // Success of "off" alone is not proof: a BMC may accept the
        // command and keep the power on. Only status "off" (exit 2) is.
        let st = match run_agent(a, "status") {
            Ok(r) => r,
            Err(why) => {
                tried.push(format!("{label} status: {why}"));
                step(Step::CannotRun { agent: label, why });
                continue;
            }
        };
        let confirmed = st.exit == Some(2);
        let st_desc = st.describe();
        step(Step::Ran {
            agent: label.clone(),
            run: st,
        });
        if !confirmed {
            tried.push(format!(
                "{label}: off succeeded but status did not confirm off ({st_desc})"
            ));
            continue;
        }
        // The host is off: a declaration that failed on slow storage may
        // be tried again (it checks the lease anew each time).
        let mut declared = declare_dead(victim);
        for _ in 1..DECLARE_TRIES {
            match &declared {
                Err(e) if e.starts_with(IO_PREFIX) => {
                    std::thread::sleep(Duration::from_secs(1));
                    declared = declare_dead(victim);
                }
                _ => break,
            }
        }
        return match declared {
            Ok(detail) => Ending::Declared {
                agent: label,
                detail,
            },
            Err(why) => Ending::NotDeclared { agent: label, why },
        };
    }
    Ending::Failed {
        why: if tried.is_empty() {
            "no fence agent configured".into()
        } else {
            tried.join("; ")
        },
    }
}

/// Rewrites the victim's delta lease as sanlock's own release of a
/// host_id leaves it (`delta_lease_release`: the last leader with
/// timestamp 0, same owner and generation, sector zeroed past the
/// leader). sanlock 3.8.5's `paxos_acquire` then takes that host's
/// resource leases at once ("owner ... delta free"), as hactl's does.
/// Refused when the lease is not the one judged FAIL: another owner or
/// generation (it rejoined), or a new timestamp (it renewed after all).
pub fn declare_dead(v: &Victim) -> Result<String, String> {
    let io = |e: crate::io::IoError| format!("{IO_PREFIX}{e}");
    let disk = Disk::open(&v.ids).map_err(io)?;
    let ss = v.sector_size as u64;
    // Not a renewal: a slow read here costs only time, so it may take longer.
    let timeout = v.io_timeout.max(Duration::from_secs(2));
    let area = Area::new(&disk, (v.host_id - 1) * ss, ss, timeout).map_err(io)?;
    let b = area.read(0, ss as usize).map_err(io)?;
    let space = Name::new(&v.lockspace).map_err(|e| e.to_string())?;
    match declaration(&b, &space, v.host_id, v.generation, v.timestamp)? {
        Declaration::AlreadyFree => Ok(format!(
            "host {} generation {}: its delta lease was already free",
            v.host_id, v.generation
        )),
        Declaration::Write { sector, timestamp } => {
            area.write(0, &sector).map_err(io)?;
            Ok(format!(
                "host {} generation {}: delta lease released on storage (timestamp {timestamp} -> 0), its leases may be taken now",
                v.host_id, v.generation
            ))
        }
    }
}

/// What to do about a fenced host's delta lease sector, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Declaration {
    /// Write this sector (sanlock's release of the host_id); the lease's
    /// timestamp was `timestamp`.
    Write { sector: Vec<u8>, timestamp: u64 },
    /// Its timestamp is 0 already (released, or declared by another host).
    AlreadyFree,
}

/// The pure part of [`declare_dead`] (the simulation runs it too): from
/// the victim's delta lease sector as read, the sector that releases it,
/// or why not (not a delta lease of `space`; another owner or generation:
/// it rejoined; another timestamp: it renewed after it was judged FAIL).
pub fn declaration(
    sector: &[u8],
    space: &Name,
    host_id: u64,
    generation: u64,
    timestamp: u64,
) -> Result<Declaration, String> {
    let lr: LeaderRecord = crate::delta::verify_sector(sector, space)
        .map_err(|rv| format!("host {host_id}'s delta lease does not verify ({rv})"))?;
    if lr.owner_id != host_id || lr.owner_generation != generation {
        return Err(format!(
            "host {host_id}'s delta lease is now owner {} generation {} (fenced generation {generation}): it rejoined; not releasing",
            lr.owner_id, lr.owner_generation
        ));
    }
    if lr.timestamp == 0 {
        return Ok(Declaration::AlreadyFree);
    }
    if lr.timestamp != timestamp {
        return Err(format!(
            "host {host_id} renewed its delta lease (timestamp {timestamp} -> {}) after it was judged FAIL: not releasing",
            lr.timestamp
        ));
    }
    let (_, sector) = crate::delta::release_sector(&lr, sector.len());
    Ok(Declaration::Write {
        sector,
        timestamp: lr.timestamp,
    })
}

/// A message from the fence thread.
enum Msg {
    Step(Step, f64),
    End(Ending, f64),
}

struct Running {
    victim: u64,
    generation: u64,
    started: Instant,
    rx: std::sync::mpsc::Receiver<Msg>,
}

/// What the agent's cycle tells the fencer.
pub struct CycleCtx<'a> {
    pub now: u64,
    pub me: u64,
    pub cfg: &'a super::Config,
    pub views: &'a [super::decide::HostView],
    /// The daemon's hosts (their delta lease timestamps).
    pub hosts: &'a [crate::proto::SanlkHost],
    pub global_maintenance: bool,
    pub local_maintenance: bool,
    pub sector_size: u32,
}

/// The agent's fencer: the fence under way (in a thread: agents take
/// seconds, the agent's cycle and its whiteboard progress go on), the
/// decision's memory, and what the events, status and metrics show.
#[derive(Default)]
pub struct Fencer {
    pub memory: super::fencing::FenceMemory,
    running: Option<Running>,
    /// Published in our whiteboard sector.
    pub report: super::whiteboard::FenceReport,
    /// Fences by result ("declared", "not_declared", "failed").
    pub counts: BTreeMap<&'static str, u64>,
    /// Per host: its fencing state, for status.json.
    pub states: BTreeMap<u64, String>,
    /// Seconds from the start of each finished fence to its end, last first.
    pub last_millis: Option<u64>,
    last_wait: BTreeMap<u64, String>,
    /// Hosts the daemon listed, with their last generation.
    seen: BTreeMap<u64, u64>,
    /// Of those, the ones it no longer lists (FREE).
    gone: std::collections::BTreeSet<u64>,
}

/// A reason with its numbers masked: a Wait is logged again only when
/// its reason changes in words ("last renewal 12 s ago" is the same
/// reason as "11 s ago"). Used by the fencer and the agent's VM waits.
pub(crate) fn wait_key(s: &str) -> String {
    let mut k = String::with_capacity(s.len());
    let mut in_num = false;
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            if !in_num {
                k.push('#');
            }
            in_num = true;
        } else {
            in_num = false;
            k.push(ch);
        }
    }
    k
}

impl Fencer {
    /// The daemon's get_hosts lists no host whose delta lease is free
    /// (sanlock's does the same): a host it listed before and lists no
    /// more was released, or declared dead by a fence. It is added to the
    /// views as FREE, so that decide() treats its leases as it treats any
    /// FREE owner's. Returns the state events of hosts newly gone.
    pub fn add_free_hosts(
        &mut self,
        views: &mut Vec<super::decide::HostView>,
        hosts: &[crate::proto::SanlkHost],
    ) -> Vec<String> {
        let mut ev = Vec::new();
        for h in hosts {
            self.seen.insert(h.host_id, h.generation);
            self.gone.remove(&h.host_id);
        }
        for (&id, &generation) in &self.seen {
            if hosts.iter().any(|h| h.host_id == id) {
                continue;
            }
            if self.gone.insert(id) {
                ev.push(format!(
                    "host {id} -> FREE (generation {generation}: its delta lease is free, released or declared dead; the daemon lists it no more)"
                ));
            }
            views.push(super::decide::HostView {
                host_id: id,
                state: crate::hosts::HostState::Free,
                generation,
                renewal_age: None,
                sector: None,
                fresh: false,
            });
        }
        ev
    }

    /// The victim being fenced now.
    pub fn busy(&self) -> Option<u64> {
        self.running.as_ref().map(|r| r.victim)
    }

    /// One agent cycle: collects what the fence thread did, decides, and
    /// starts a fence. Returns the events to log (kind, reason).
    pub fn cycle(&mut self, c: &CycleCtx) -> Vec<(&'static str, String, f64)> {
        let mut ev = self.poll();
        let now = super::agent::unix_now();
        ev.extend(
            self.decide_and_start(c)
                .into_iter()
                .map(|(k, r)| (k, r, now)),
        );
        ev
    }

    /// What the fence thread did since the last call: its steps, and its
    /// end. The agent calls it first thing in its cycle, so that a
    /// declaration is logged before the starts it allows.
    /// Each with the time it happened (unix seconds).
    pub fn poll(&mut self) -> Vec<(&'static str, String, f64)> {
        use super::whiteboard::{FENCE_DECLARED, FENCE_FAILED, FenceReport};
        let mut ev = Vec::new();
        if let Some(r) = &self.running {
            let (victim, generation) = (r.victim, r.generation);
            let mut ended = None;
            loop {
                let m = match r.rx.try_recv() {
                    Ok(m) => m,
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        if ended.is_none() {
                            ended = Some((
                                Ending::Failed {
                                    why: "the fence thread ended without a result".into(),
                                },
                                super::agent::unix_now(),
                            ));
                        }
                        break;
                    }
                };
                match m {
                    Msg::Step(Step::Ran { agent, run }, t) => ev.push((
                        "fence",
                        format!(
                            "host {victim}: {agent} -o {}: {}",
                            run.action,
                            run.describe()
                        ),
                        t,
                    )),
                    Msg::Step(Step::CannotRun { agent, why }, t) => ev.push((
                        "fence",
                        format!("host {victim}: {agent} could not run: {why}"),
                        t,
                    )),
                    Msg::End(e, t) => ended = Some((e, t)),
                }
            }
            if let Some((e, t)) = ended {
                let took = r.started.elapsed().as_millis() as u64;
                self.last_millis = Some(took);
                *self.counts.entry(e.result()).or_default() += 1;
                self.memory.done.insert(victim, generation);
                let secs = took as f64 / 1000.0;
                let (phase, text) = match &e {
                    Ending::Declared { agent, detail } => (
                        FENCE_DECLARED,
                        format!(
                            "host {victim}: fenced in {secs:.1} s, off confirmed by {agent} status; declared dead: {detail}"
                        ),
                    ),
                    Ending::NotDeclared { agent, why } => (
                        FENCE_FAILED,
                        format!(
                            "host {victim}: off confirmed by {agent} after {secs:.1} s, but not declared dead: {why}; waiting for DEAD"
                        ),
                    ),
                    Ending::Failed { why } => (
                        FENCE_FAILED,
                        format!(
                            "host {victim}: fence failed after {secs:.1} s ({why}); never declared without a confirmed off: waiting for DEAD (host_dead_seconds after its last renewal)"
                        ),
                    ),
                };
                self.report = FenceReport {
                    victim,
                    victim_generation: generation,
                    phase,
                };
                self.states.insert(victim, text.clone());
                ev.push(("fence", text, t));
                self.running = None;
            }
        }
        ev
    }

    /// The fencing decision on this cycle's views, and a fence started.
    fn decide_and_start(&mut self, c: &CycleCtx) -> Vec<(&'static str, String)> {
        use super::whiteboard::{FENCE_RUNNING, FenceReport};
        let mut ev = Vec::new();
        let Some(fcfg) = &c.cfg.fencing else {
            return ev;
        };
        let me_host = c.hosts.iter().find(|h| h.host_id == c.me);
        let io_timeout = me_host.map_or(10, |h| u64::from(h.io_timeout).max(1));
        let own_age = c
            .views
            .iter()
            .find(|h| h.host_id == c.me)
            .and_then(|h| h.renewal_age);
        let input = super::fencing::FenceInput {
            now: c.now,
            me: c.me,
            fencing: fcfg,
            hosts: c.views,
            global_maintenance: c.global_maintenance,
            local_maintenance: c.local_maintenance,
            own_renewal_age: own_age,
            io_timeout,
            busy: self.busy(),
            memory: self.memory.clone(),
        };
        let d = super::fencing::decide_fencing(&input);
        self.memory = d.memory;
        // Hosts that are no longer FAIL lose their state (LIVE again, or DEAD/FREE).
        let fail: Vec<u64> = c
            .views
            .iter()
            .filter(|h| h.state == crate::hosts::HostState::Fail)
            .map(|h| h.host_id)
            .collect();
        self.last_wait.retain(|h, _| fail.contains(h));
        for a in d.actions {
            match a {
                super::fencing::FenceAction::Wait { victim, reason } => {
                    let key = wait_key(&reason);
                    if self.last_wait.get(&victim) != Some(&key) {
                        self.last_wait.insert(victim, key);
                        ev.push(("fence_wait", reason.clone()));
                    }
                    self.states.insert(victim, reason);
                }
                super::fencing::FenceAction::Fence {
                    victim,
                    generation,
                    reason,
                } => {
                    let Some(fh) = fcfg.host(victim) else {
                        continue;
                    };
                    let timestamp = c
                        .hosts
                        .iter()
                        .find(|h| h.host_id == victim)
                        .map_or(0, |h| h.timestamp);
                    let v = Victim {
                        host_id: victim,
                        generation,
                        timestamp,
                        lockspace: c.cfg.cluster.lockspace.clone(),
                        ids: c.cfg.cluster.ids.clone(),
                        sector_size: c.sector_size,
                        io_timeout: Duration::from_secs(io_timeout),
                    };
                    let agents = fh.agents.clone();
                    let (tx, rx) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        let end = run_fence(&agents, &v, |s| {
                            let _ = tx.send(Msg::Step(s, super::agent::unix_now()));
                        });
                        let _ = tx.send(Msg::End(end, super::agent::unix_now()));
                    });
                    self.running = Some(Running {
                        victim,
                        generation,
                        started: Instant::now(),
                        rx,
                    });
                    self.report = FenceReport {
                        victim,
                        victim_generation: generation,
                        phase: FENCE_RUNNING,
                    };
                    self.last_wait.remove(&victim);
                    self.states
                        .insert(victim, format!("being fenced by host {}", c.me));
                    ev.push(("fence", reason));
                }
            }
        }
        ev
    }

    /// For status.json.
    pub fn status_json(&self, enabled: bool) -> serde_json::Value {
        serde_json::json!({
            "enabled": enabled,
            "busy": self.busy(),
            "report": {
                "victim": self.report.victim,
                "victim_generation": self.report.victim_generation,
                "phase": self.report.phase_name(),
            },
            "fences": self.counts,
            "last_fence_seconds": self.last_millis.map(|m| m as f64 / 1000.0),
            "hosts": self.states.iter().map(|(h, s)| (h.to_string(), s.clone())).collect::<BTreeMap<_, _>>(),
        })
    }
}

/// `hactl ha fence-test`: a fence agent for test clusters and the demo,
/// by the fence-agents conventions (`-o ACTION` / `--action`, or
/// `key=value` lines on stdin when it has no arguments). The "power" of a
/// test host is its process group (`pgid_file`: a file holding its id,
/// written by the cluster harness): `off` SIGKILLs the group and waits
/// until no process of it runs, `status` says 0 (on) while one runs and 2
/// (off) when none does, `on` fails (the harness starts test hosts).
/// Knobs for tests: `lie=1` says off without killing (the agent that lies
/// about off), `fail=1` fails every action, `delay=SECS` sleeps first.
pub fn test_agent_main(args: &[String]) -> i32 {
    let mut opts: BTreeMap<String, String> = BTreeMap::new();
    if args.is_empty() {
        let mut text = String::new();
        let _ = std::io::stdin().take(SECRETS_MAX).read_to_string(&mut text);
        for line in text.lines() {
            if let Some((k, v)) = line.trim().split_once('=') {
                opts.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    } else {
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let key = match a.as_str() {
                "-o" | "--action" => "action".to_string(),
                s if s.starts_with("--") => s[2..].replace('-', "_"),
                s => {
                    eprintln!("fence-test: unexpected argument {s:?}");
                    return 1;
                }
            };
            let (key, val) = match key.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (key, it.next().cloned().unwrap_or_default()),
            };
            opts.insert(key, val);
        }
    }
    let action = opts
        .get("action")
        .cloned()
        .unwrap_or_else(|| "reboot".into());
    if action == "metadata" {
        println!(
            "<?xml version=\"1.0\" ?>\n<resource-agent name=\"fence-test\" shortdesc=\"hactl's test fence agent: powers a test host's process group\">\n<parameters>\n<parameter name=\"action\"><content type=\"string\" default=\"reboot\"/></parameter>\n<parameter name=\"pgid_file\" required=\"1\"><content type=\"string\"/></parameter>\n</parameters>\n<actions><action name=\"on\"/><action name=\"off\"/><action name=\"reboot\"/><action name=\"status\"/><action name=\"monitor\"/><action name=\"metadata\"/></actions>\n</resource-agent>"
        );
        return 0;
    }
    if let Some(d) = opts.get("delay").and_then(|d| d.parse::<f64>().ok()) {
        std::thread::sleep(Duration::from_secs_f64(d.clamp(0.0, 3600.0)));
    }
    if opts.get("fail").is_some_and(|v| v == "1") {
        eprintln!("Failed: fence-test told to fail (fail=1)");
        return 1;
    }
    let lie = opts.get("lie").is_some_and(|v| v == "1");
    let Some(file) = opts.get("pgid_file") else {
        eprintln!("Failed: pgid_file= is required");
        return 1;
    };
    let pgid: i32 = match std::fs::read_to_string(file)
        .map_err(|e| e.to_string())
        .and_then(|s| s.trim().parse().map_err(|e| format!("{e}")))
    {
        Ok(p) if p > 1 => p,
        Ok(p) => {
            eprintln!("Failed: {file}: process group {p} is not a test host's");
            return 1;
        }
        Err(e) => {
            eprintln!("Failed: {file}: {e}");
            return 1;
        }
    };
    match action.as_str() {
        "status" | "monitor" => {
            if lie || !group_runs(pgid) {
                println!("Status: OFF");
                2
            } else {
                println!("Status: ON");
                0
            }
        }
        "off" | "reboot" => {
            if lie {
                println!("Success: Powered OFF");
                return 0;
            }
            if !group_runs(pgid) {
                println!("Success: Already OFF");
                return 0;
            }
            println!("Powering OFF process group {pgid}");
            // SAFETY: kill(2) of the test host's process group named by the
            // harness's pgid file (never 0, 1 or our own: checked above).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            // A process in uninterruptible I/O dies when its I/O ends, as a
            // real host's power takes a moment to drop.
            let deadline = Instant::now() + Duration::from_secs(30);
            while group_runs(pgid) {
                if Instant::now() > deadline {
                    eprintln!("Failed: Timed out waiting to power OFF");
                    return 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            println!("Success: Powered OFF");
            0
        }
        "on" => {
            eprintln!("Failed: a test host is started by its cluster harness, not by power on");
            1
        }
        a => {
            eprintln!("Failed: unknown action {a:?}");
            1
        }
    }
}

/// The `[fencing]` section of a test cluster (src/ha/cluster.rs) made
/// under `cluster_dir`: every host fenced by `hactl ha fence-test`
/// through its process group (`hostN/pgid`, written by the harness).
/// `knobs`: more options for a host's agent, as TOML inline-table
/// entries (`lie = "1"`, `fail = "1"`, `delay = "30"`).
pub fn test_section(
    hactl: &Path,
    cluster_dir: &Path,
    hosts: u64,
    timeout: u64,
    knobs: &BTreeMap<u64, String>,
) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut s = String::from("[fencing]\n");
    for id in 1..=hosts {
        let pgid = cluster_dir.join(format!("host{id}")).join("pgid");
        let extra = knobs.get(&id).map(|k| format!(", {k}")).unwrap_or_default();
        s.push_str(&format!(
            "[[fencing.host]]\nhost_id = {id}\n[[fencing.host.agent]]\ncommand = [{}, \"ha\", \"fence-test\"]\ntimeout = {timeout}\noptions = {{ pgid_file = {}{extra} }}\n",
            q(&hactl.display().to_string()),
            q(&pgid.display().to_string()),
        ));
    }
    s
}

/// Whether a process of group `pgid` still runs (zombies do not: they are
/// only waiting for their parent to reap them).
pub fn group_runs(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command (which may hold spaces) in parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[2].parse::<i32>().ok() == Some(pgid) && f[0] != "Z" && f[0] != "X" {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<FencingConfig, String> {
        let c: FencingConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn parses_hosts_and_agents_in_order() {
        let c = cfg(r#"
delay = 5
[[host]]
host_id = 1
[[host.agent]]
command = ["/usr/sbin/fence_ipmilan"]
options = { ip = "10.0.0.1", ipport = 623, lanplus = true, username = "admin" }
secrets = "/etc/hactl/fence/host1"
timeout = 20
[[host.agent]]
command = ["/usr/sbin/fence_apc_snmp"]
options = { ip = "10.0.0.9", plug = "4" }
"#)
        .unwrap();
        assert_eq!(
            (c.delay, c.takeover, c.max_fences, c.window),
            (5, 10, 2, 600)
        );
        let h = c.host(1).unwrap();
        assert_eq!(h.agents.len(), 2);
        assert_eq!(h.agents[0].label(), "fence_ipmilan");
        assert_eq!(h.agents[0].options["ipport"].to_string(), "623");
        assert_eq!(h.agents[0].options["lanplus"].to_string(), "1");
        assert_eq!(h.agents[1].timeout, 60);
        assert!(c.host(2).is_none());
    }

    /// The declaration releases the lease judged FAIL, as sanlock's
    /// delta_lease_release leaves it, and refuses anything else.
    #[test]
    fn declaration_releases_only_the_lease_judged_fail() {
        let space = Name::new("ls").unwrap();
        let mut lr = LeaderRecord {
            magic: crate::ondisk::DELTA_DISK_MAGIC,
            version: crate::ondisk::DELTA_DISK_VERSION_MAJOR
                | crate::ondisk::DELTA_DISK_VERSION_MINOR,
            sector_size: 512,
            max_hosts: 1,
            owner_id: 2,
            owner_generation: 5,
            timestamp: 1234,
            io_timeout: 10,
            space_name: space,
            ..Default::default()
        };
        let sector = crate::delta::lease_sector(&mut lr, 512, None);
        let Ok(Declaration::Write {
            sector: w,
            timestamp,
        }) = declaration(&sector, &space, 2, 5, 1234)
        else {
            panic!("not released");
        };
        assert_eq!(timestamp, 1234);
        let back = crate::delta::verify_sector(&w, &space).unwrap();
        assert_eq!(
            (back.owner_id, back.owner_generation, back.timestamp),
            (2, 5, 0)
        );
        assert_eq!(w, crate::delta::release_sector(&lr, 512).1);
        let e = declaration(&sector, &space, 2, 5, 1200).unwrap_err();
        assert!(e.contains("renewed"), "{e}");
        let e = declaration(&sector, &space, 2, 4, 1234).unwrap_err();
        assert!(e.contains("rejoined"), "{e}");
        assert_eq!(
            declaration(&w, &space, 2, 5, 1234),
            Ok(Declaration::AlreadyFree)
        );
        let other = Name::new("other").unwrap();
        assert!(declaration(&sector, &other, 2, 5, 1234).is_err());
    }

    /// The example shipped under dist/ is a valid config.
    #[test]
    fn the_dist_example_parses() {
        let text = include_str!("../../dist/ha/ha.toml");
        let c = crate::ha::Config::parse(text).unwrap();
        let f = c.fencing.as_ref().unwrap();
        assert_eq!(f.hosts.len(), 2);
        assert_eq!(f.host(2).unwrap().agents[1].label(), "fence_apc_snmp");
        assert_eq!(c.health.links.interfaces, vec!["ovirtmgmt".to_string()]);
        assert_eq!(
            c.migration_to(c.vm_index("web1").unwrap(), 2).unwrap().id,
            2
        );
        assert!(c.migration_to(c.vm_index("batch1").unwrap(), 2).is_none());
        assert_eq!(
            c.isolation(c.vm_index("batch1").unwrap()),
            crate::ha::health::IsolationPolicy::Stop
        );
    }

    #[test]
    fn refuses_passwords_in_the_config_and_bad_options() {
        let base = "[[host]]\nhost_id = 1\n[[host.agent]]\ncommand = [\"/bin/true\"]\n";
        let e = cfg(&format!("{base}options = {{ password = \"x\" }}\n")).unwrap_err();
        assert!(e.contains("secrets file"), "{e}");
        let e = cfg(&format!("{base}options = {{ action = \"on\" }}\n")).unwrap_err();
        assert!(e.contains("hactl's to set"), "{e}");
        let e = cfg(&format!("{base}options = {{ ip = \"a\\nb\" }}\n")).unwrap_err();
        assert!(e.contains("line break"), "{e}");
        let e = cfg(&format!("{base}timeout = 0\n")).unwrap_err();
        assert!(e.contains("timeout"), "{e}");
        let e = cfg("[[host]]\nhost_id = 1\nagent = []\n").unwrap_err();
        assert!(e.contains("no [[fencing.host.agent]]"), "{e}");
        let e = cfg(&format!("{base}{base}")).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = cfg(&format!("{base}comand = 1\n")).unwrap_err();
        assert!(e.contains("comand"), "{e}");
    }

    #[test]
    fn secrets_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "# ipmi\npassword = hunter2\n\nlogin=admin\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secrets(&p).unwrap_err();
        assert!(e.contains("0644") && e.contains("0600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_secrets(&p).unwrap(),
            vec![
                ("password".to_string(), "hunter2".to_string()),
                ("login".to_string(), "admin".to_string())
            ]
        );
        std::fs::write(&p, "just a line\n").unwrap();
        assert!(read_secrets(&p).unwrap_err().contains("key=value"));
    }

    /// A shell agent that prints what it got on stdin: options, then the
    /// secrets, masked in what we keep of its output.
    #[test]
    fn runs_an_agent_with_options_on_stdin_and_masks_secrets() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("s");
        std::fs::write(&s, "password=hunter2\n").unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o600)).unwrap();
        let a = FenceAgent {
            command: vec!["/bin/sh".into(), "-c".into(), "cat; exit 2".into()],
            options: [("ip".to_string(), OptValue::Str("10.1.1.1".into()))].into(),
            secrets: Some(s),
            timeout: 5,
        };
        let r = run_agent(&a, "status").unwrap();
        assert_eq!(r.exit, Some(2));
        assert_eq!(r.output, "action=status\nip=10.1.1.1\npassword=***");
        let slow = FenceAgent {
            command: vec!["/bin/sh".into(), "-c".into(), "sleep 30".into()],
            options: BTreeMap::new(),
            secrets: None,
            timeout: 1,
        };
        let r = run_agent(&slow, "off").unwrap();
        assert_eq!(r.exit, None, "killed at its timeout");
        assert!(r.millis < 5000, "{r:?}");
        assert!(r.describe().contains("killed at its timeout"));
    }
}
