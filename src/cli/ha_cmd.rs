//! `hactl ha <action>`: the HA layer's commands (docs/ha-design.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use crate::client::Sanlock;
use crate::ha::agent::{self, AgentOpts, Event, render_event};
use crate::ha::{Config, Whiteboard, demo_vm};

#[derive(Args, Debug)]
pub struct HaArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Run this host's HA agent: a client of the local daemon
    /// ($SANLOCK_RUN_DIR), restarting orphaned HA VMs per the policy.
    Agent {
        #[arg(short = 'c', long)]
        config: PathBuf,
        #[arg(long = "host-id")]
        host_id: u64,
        /// Where events.jsonl, status.json and the VM logs go.
        #[arg(long = "run-dir", default_value = agent::DEFAULT_RUN_DIR)]
        run_dir: PathBuf,
        /// Join the lockspace first (add_lockspace with this host id).
        #[arg(long)]
        join: bool,
        /// Serve a read-only web view of the cluster at ADDR:PORT (no
        /// authentication: localhost or a management network only).
        #[arg(long, value_name = "ADDR:PORT")]
        web: Option<String>,
    },
    /// The cluster as shared storage and the local daemon show it: hosts,
    /// states, scores, maintenance, each VM's host, lease owner and lver.
    Status {
        #[arg(short = 'c', long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The agent's timeline: every decision with its reason.
    Events {
        #[arg(long = "run-dir", default_value = agent::DEFAULT_RUN_DIR)]
        run_dir: PathBuf,
        #[arg(long)]
        json: bool,
        /// Keep printing new events.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Global maintenance (no VM is started anywhere; running ones keep
    /// running) or this host's local maintenance (its VMs are stopped so
    /// other hosts take them, or live-migrated to them where `[migration]`
    /// names their libvirtd; it starts none).
    Maintenance {
        #[arg(
            long,
            value_enum,
            conflicts_with = "local",
            required_unless_present = "local"
        )]
        global: Option<OnOff>,
        #[arg(long, value_enum)]
        local: Option<OnOff>,
        /// --global: the cluster's config (for the whiteboard's path).
        #[arg(short = 'c', long, required_if_eq_any = [("global", "on"), ("global", "off")])]
        config: Option<PathBuf>,
        /// --global: recorded as who set it.
        #[arg(long = "host-id", default_value_t = 0)]
        host_id: u64,
        /// --local: the agent's run dir.
        #[arg(long = "run-dir", default_value = agent::DEFAULT_RUN_DIR)]
        run_dir: PathBuf,
    },
    /// A stand-in VM: appends a 64-byte record (host id from
    /// HACTL_HA_HOST_ID, run id, counter, clock, checksum) to DISK every
    /// 100 ms until killed.
    DemoVm { disk: PathBuf },
    /// A fence agent for test clusters and `hactl demo` (fence-agents
    /// conventions: `-o off|status|on|reboot|metadata` or key=value lines
    /// on stdin): powers a test host off by SIGKILL of its process group
    /// (`pgid_file=`), and reports status from it (exit 0 on, 2 off).
    #[command(name = "fence-test")]
    FenceTest {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Proves from demo VM disk files that no VM ever ran twice at once:
    /// prints the hosts that ran each file in order; exit 1 on a violation.
    CheckDisks {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print only violations and the summary line.
        #[arg(short, long)]
        quiet: bool,
    },
}

fn daemon_run_dir() -> PathBuf {
    std::env::var_os("SANLOCK_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/sanlock"))
}

pub fn main(a: HaArgs) -> i32 {
    let r = match a.action {
        Action::Agent {
            config,
            host_id,
            run_dir,
            join,
            web,
        } => web_view(web.as_deref(), &config, &run_dir)
            .and_then(|_| {
                agent::run(&AgentOpts {
                    config,
                    host_id,
                    run_dir,
                    daemon_run_dir: daemon_run_dir(),
                    join,
                    cycles: None,
                })
            })
            .map(|_| 0),
        Action::Status { config, json } => status(&config, json),
        Action::Events {
            run_dir,
            json,
            follow,
        } => events(&run_dir, json, follow),
        Action::Maintenance {
            global,
            local,
            config,
            host_id,
            run_dir,
        } => maintenance(global, local, config.as_deref(), host_id, &run_dir),
        Action::DemoVm { disk } => Err(format!("demo-vm: {}", demo_vm::run_demo_vm(&disk))),
        Action::CheckDisks { files, quiet } => Ok(check_disks(&files, quiet)),
        Action::FenceTest { args } => Ok(crate::ha::fence::test_agent_main(&args)),
    };
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hactl ha: {e}");
            1
        }
    }
}

fn check_disks(files: &[PathBuf], quiet: bool) -> i32 {
    let mut bad = 0;
    let mut runs = 0;
    for f in files {
        match demo_vm::check_file(f) {
            Ok(rep) => {
                runs += rep.runs.len();
                if !rep.violations.is_empty() {
                    bad += 1;
                }
                if !quiet || !rep.violations.is_empty() {
                    print!("{}", demo_vm::render(f, &rep));
                }
            }
            Err(e) => {
                bad += 1;
                println!("{}: VIOLATION: {e}", f.display());
            }
        }
    }
    if bad == 0 {
        println!(
            "check-disks: {} disk(s), {runs} run(s): no disk was ever written by two runs at once",
            files.len()
        );
        0
    } else {
        println!(
            "check-disks: {bad} of {} disk(s) FAILED the check",
            files.len()
        );
        1
    }
}

/// `agent --web ADDR`: the view refreshes once per agent cycle.
fn web_view(addr: Option<&str>, config: &Path, run_dir: &Path) -> Result<(), String> {
    let Some(addr) = addr else { return Ok(()) };
    let cfg = Config::from_file(config).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(run_dir)
        .map_err(|e| format!("cannot create {}: {e}", run_dir.display()))?;
    crate::ha::web::start(
        addr,
        run_dir.to_path_buf(),
        cfg.cluster.interval.clamp(1, 10),
    )
    .map_err(|e| format!("--web {addr}: {e}"))
}

/// `status`: read-only, from storage and the local daemon.
pub fn status_json(config: &Path) -> Result<serde_json::Value, String> {
    let cfg = Config::from_file(config).map_err(|e| e.to_string())?;
    let t = Duration::from_secs(5);
    let ls = &cfg.cluster.lockspace;
    let daemon = Sanlock::connect(daemon_run_dir())
        .map(|s| s.timeout(Some(t)))
        .and_then(|s| s.get_hosts(ls, 0));
    let ss = agent::lockspace_sector_size(&cfg.cluster.ids, t)?;
    let wb = Whiteboard::open_readonly(&cfg.cluster.whiteboard, ss)
        .map_err(|e| e.to_string())?
        .with_timeout(t);
    let max_id = wb.capacity().max(1);
    let board = wb.read_all(max_id).map_err(|e| e.to_string())?;
    let (infos, lease_errs) = agent::lookup_leases(&cfg, t);
    let xl = crate::io::Disk::open_readonly(&cfg.cluster.xleases).map_err(|e| e.to_string())?;
    let leases = agent::read_leases(&xl, &infos, ss, t);
    let names: Vec<&str> = cfg.vms.iter().map(|v| v.name.as_str()).collect();
    let now = agent::unix_now() as u64;
    let mut ids: Vec<u64> = board
        .hosts
        .iter()
        .filter(|(_, s)| !matches!(s, Ok(None)))
        .map(|(h, _)| *h)
        .collect();
    if let Ok(hs) = &daemon {
        ids.extend(hs.iter().map(|h| h.host_id));
    }
    ids.sort();
    ids.dedup();
    let hosts: Vec<_> = ids
        .iter()
        .map(|&id| {
            let d = daemon
                .as_ref()
                .ok()
                .and_then(|hs| hs.iter().find(|h| h.host_id == id));
            let sector = board.hosts.iter().find(|(h, _)| *h == id).map(|(_, s)| s);
            let s = sector.and_then(|s| s.as_ref().ok()).and_then(|s| s.as_ref());
            let generation = d.map(|h| h.generation);
            // Fence reports naming this host, in its current generation
            // (or any, when the daemon does not say which that is).
            let fencing: Vec<String> = board
                .hosts
                .iter()
                .filter_map(|(by, r)| {
                    let r = r.as_ref().ok()?.as_ref()?;
                    (r.fence.victim == id
                        && r.fence.phase != crate::ha::whiteboard::FENCE_NONE
                        && generation.is_none_or(|g| g == r.fence.victim_generation))
                    .then(|| format!("{} by host {by}", r.fence.phase_name()))
                })
                .collect();
            json!({
                "fencing": fencing,
                "fence_agents": cfg.fencing.as_ref().and_then(|f| f.host(id)).map(|h| h.agents.iter().map(|a| a.label()).collect::<Vec<_>>()),
                "host_id": id,
                "state": d.map(|h| h.state_name()),
                "generation": d.map(|h| h.generation),
                "score": s.map(|s| s.score),
                "local_maintenance": s.map(|s| s.local_maintenance()),
                "health": s.map(|s| s.health.summary()),
                "penalties": s.map(|s| agent::health_points_json(&s.health)),
                "running": s.map(|s| s.running.iter().filter_map(|i| names.get(i).copied()).collect::<Vec<_>>()),
                "failed": s.map(|s| s.failed.iter().filter_map(|i| names.get(i).copied()).collect::<Vec<_>>()),
                "seq": s.map(|s| s.seq),
                "written_ago": s.map(|s| now.saturating_sub(s.written_unix)),
                "config_digest_matches": s.map(|s| s.config_digest == cfg.digest()),
                "sector_error": sector.and_then(|s| s.as_ref().err()).map(|e| e.to_string()),
            })
        })
        .collect();
    let vms: Vec<_> = cfg
        .vms
        .iter()
        .enumerate()
        .map(|(i, vm)| {
            // A host the daemon does not call LIVE runs nothing we can
            // vouch for: its sector is only what it last wrote.
            let live = |h: u64| match &daemon {
                Ok(hs) => hs
                    .iter()
                    .any(|x| x.host_id == h && x.state_name() == "LIVE"),
                Err(_) => true,
            };
            let on: Vec<u64> = board
                .hosts
                .iter()
                .filter_map(|(h, s)| {
                    s.as_ref()
                        .ok()
                        .and_then(|s| s.as_ref())
                        .filter(|s| s.running.get(i) && live(*h))
                        .map(|_| *h)
                })
                .collect();
            json!({
                "name": vm.name,
                "lease_id": vm.lease_id(),
                "priority": vm.priority,
                "whiteboard_hosts": on,
                "lease": agent::lease_json(leases[i]),
                "lease_offset": infos[i].as_ref().map(|l| l.offset),
            })
        })
        .collect();
    Ok(json!({
        "lockspace": ls,
        "global_maintenance": board.global_maintenance(),
        "daemon_error": daemon.as_ref().err().map(|e| e.to_string()),
        "lease_errors": lease_errs,
        "hosts": hosts,
        "vms": vms,
    }))
}

fn status(config: &Path, as_json: bool) -> Result<i32, String> {
    let v = status_json(config)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
        return Ok(0);
    }
    print!("{}", render_status(&v));
    Ok(0)
}

fn opt(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        serde_json::Value::Array(a) if a.is_empty() => "-".into(),
        serde_json::Value::Array(a) => a.iter().map(opt).collect::<Vec<_>>().join(","),
        v => v.to_string(),
    }
}

/// The text of `status` (also used by `hactl demo`).
pub fn render_status(v: &serde_json::Value) -> String {
    let mut s = format!(
        "lockspace {}, global maintenance {}\n",
        opt(&v["lockspace"]),
        if v["global_maintenance"] == json!(true) {
            "ON"
        } else {
            "off"
        }
    );
    if !v["daemon_error"].is_null() {
        s.push_str(&format!("  (local daemon: {})\n", opt(&v["daemon_error"])));
    }
    for e in v["lease_errors"].as_array().into_iter().flatten() {
        s.push_str(&format!("  (lease: {})\n", opt(e)));
    }
    s.push_str(&format!(
        "{:>4}  {:<7} {:>4} {:>5}  {:<5}  {:<8} {:<20} {:<10} {:<10} {}\n",
        "host",
        "state",
        "gen",
        "score",
        "maint",
        "written",
        "running",
        "failed",
        "fencing",
        "health"
    ));
    for h in v["hosts"].as_array().into_iter().flatten() {
        let maint = match h["local_maintenance"] {
            serde_json::Value::Bool(true) => "LOCAL",
            serde_json::Value::Bool(false) => "-",
            _ => "?",
        };
        let written = h["written_ago"]
            .as_u64()
            .map_or("never".to_string(), |a| format!("{a} s ago"));
        let fencing = match (&h["fencing"], &h["fence_agents"]) {
            (serde_json::Value::Array(a), _) if !a.is_empty() => opt(&h["fencing"]),
            (_, serde_json::Value::Array(a)) if !a.is_empty() => {
                format!("agents {}", opt(&h["fence_agents"]))
            }
            _ => "-".into(),
        };
        s.push_str(&format!(
            "{:>4}  {:<7} {:>4} {:>5}  {:<5}  {:<8} {:<20} {:<10} {:<10} {}{}\n",
            opt(&h["host_id"]),
            opt(&h["state"]),
            opt(&h["generation"]),
            opt(&h["score"]),
            maint,
            written,
            opt(&h["running"]),
            opt(&h["failed"]),
            fencing,
            opt(&h["health"]),
            h["sector_error"]
                .as_str()
                .map(|e| format!("  DAMAGED: {e}"))
                .unwrap_or_default()
        ));
    }
    s.push_str(&format!(
        "{:<12} {:<10} {:<6} {:>6} {:>4} {:>5}\n",
        "vm", "runs on", "lease", "owner", "gen", "lver"
    ));
    for vm in v["vms"].as_array().into_iter().flatten() {
        let l = &vm["lease"];
        s.push_str(&format!(
            "{:<12} {:<10} {:<6} {:>6} {:>4} {:>5}\n",
            opt(&vm["name"]),
            opt(&vm["whiteboard_hosts"]),
            opt(&l["state"]),
            opt(&l["owner"]),
            opt(&l["generation"]),
            opt(&l["lver"]),
        ));
    }
    s
}

fn read_events(path: &Path, from: u64) -> (Vec<Event>, u64) {
    use std::io::{Read, Seek};
    let Ok(mut f) = std::fs::File::open(path) else {
        return (Vec::new(), from);
    };
    let _ = f.seek(std::io::SeekFrom::Start(from));
    let mut buf = String::new();
    let _ = f.read_to_string(&mut buf);
    // Only whole lines: the agent may be writing the next one.
    let whole = buf.rfind('\n').map_or(0, |i| i + 1);
    let evs = buf[..whole]
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (evs, from + whole as u64)
}

fn events(run_dir: &Path, as_json: bool, follow: bool) -> Result<i32, String> {
    let path = run_dir.join(agent::EVENTS_FILE);
    if !follow && !path.exists() {
        return Err(format!(
            "{} does not exist (no agent ran with --run-dir {})",
            path.display(),
            run_dir.display()
        ));
    }
    let mut pos = 0;
    loop {
        let (evs, next) = read_events(&path, pos);
        pos = next;
        for e in evs {
            if as_json {
                println!("{}", serde_json::to_string(&e).unwrap());
            } else {
                println!("{}", render_event(&e));
            }
        }
        if !follow {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn maintenance(
    global: Option<OnOff>,
    local: Option<OnOff>,
    config: Option<&Path>,
    host_id: u64,
    run_dir: &Path,
) -> Result<i32, String> {
    if let Some(g) = global {
        let config = config.ok_or("--global needs -c CONFIG")?;
        let cfg = Config::from_file(config).map_err(|e| e.to_string())?;
        let ss = agent::lockspace_sector_size(&cfg.cluster.ids, Duration::from_secs(10))?;
        let wb = Whiteboard::open(&cfg.cluster.whiteboard, ss).map_err(|e| e.to_string())?;
        let c = wb
            .set_global_maintenance(matches!(g, OnOff::On), host_id)
            .map_err(|e| e.to_string())?;
        println!(
            "global maintenance {}",
            if c.global_maintenance() { "on" } else { "off" }
        );
    }
    if let Some(l) = local {
        let f = run_dir.join(agent::LOCAL_MAINTENANCE_FILE);
        match l {
            OnOff::On => {
                if !run_dir.is_dir() {
                    return Err(format!(
                        "{} is not a directory (the agent's --run-dir)",
                        run_dir.display()
                    ));
                }
                std::fs::write(&f, b"").map_err(|e| format!("{}: {e}", f.display()))?;
            }
            OnOff::Off => match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", f.display())),
            },
        }
        println!(
            "local maintenance {} (the agent with --run-dir {} acts on it at its next cycle)",
            if matches!(l, OnOff::On) { "on" } else { "off" },
            run_dir.display()
        );
    }
    Ok(0)
}
