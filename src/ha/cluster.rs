//! A whole HA cluster on one machine, for the tests and `hactl demo`.
//!
//! Shared storage is a directory of files: the lockspace (`ids`, made as
//! `hactl direct init -s` does), the xleases volume with one lease per VM,
//! and the whiteboard. Each host is an `hactl daemon -w 0` with its own
//! `SANLOCK_RUN_DIR` plus an `hactl ha agent`, and the VMs the agent
//! starts. Every host's processes share one process group, so:
//! - a host **crash** is SIGKILL of the group (daemon, agent and VMs at once);
//! - a host **hang** is SIGSTOP of the group.
//!
//! Safety: the daemons run with `-w 0`, without a watchdog. On a real host
//! the watchdog resets a hung machine before the others may call it DEAD
//! and take its VMs; here nothing does. A hung host must therefore be
//! SIGKILLed ([`Cluster::kill`], what its watchdog would have done) before
//! it is ever resumed: SIGCONT of a hung host whose VMs were restarted
//! elsewhere would run those VMs twice. [`Cluster`] never sends SIGCONT.
//!
//! Hosts are spawned with PR_SET_PDEATHSIG, which fires when the spawning
//! *thread* exits: create and start the cluster from a thread that lives
//! as long as it (the test's or demo's main thread).
//!
//! With [`ClusterOpts::guests`] the VMs are tiny real guests
//! ([`super::guest`]) run by libvirt (runner "libvirt"): each host is also
//! a lab host ([`super::lab`]): its own mount namespace with its own
//! libvirtd, in which its daemon and agent run too; each VM is a domain
//! (one XML per host: the guest learns its host id from the kernel command
//! line) on a raw disk image. A crash then kills every process of the
//! host's namespace, qemu included; a hang stops every one.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::demo_vm::{self, DiskReport};

/// What to build.
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    pub hosts: u64,
    /// Demo VMs, named `vm1`..: each runs `hactl ha demo-vm DISKS/vmN.disk`.
    pub vms: usize,
    pub io_timeout: u32,
    pub interval: u64,
    pub grace: u64,
    pub capacity: u32,
    pub lockspace: String,
    /// The `hactl` binary every process runs.
    pub hactl: PathBuf,
    /// Host id → a directory that shows the shared directory's files (a
    /// FUSE pass-through whose server can be frozen); other hosts use the
    /// shared directory itself. VM disks are never reached through it.
    pub storage_via: BTreeMap<u64, PathBuf>,
    /// Extra TOML keys per VM (index → lines), e.g. `preferred_hosts = [2]`.
    pub vm_extra: BTreeMap<usize, String>,
    /// Extra environment for the agents (and so their VMs).
    pub env: Vec<(String, String)>,
    /// VMs die with their agent (PR_SET_PDEATHSIG), so nothing outlives a
    /// test killed by force; off to restart an agent under running VMs.
    pub vms_die_with_agent: bool,
    /// Host ids the whiteboard has sectors for (at least `hosts`): more
    /// when a process outside the harness joins the lockspace with a
    /// spare host id (the failover bench's sanlock observer), since the
    /// agents read the whiteboard up to the highest host id they see.
    pub whiteboard_hosts: u64,
    /// Real guests under libvirt instead of demo VM processes.
    pub guests: Option<super::guest::GuestImage>,
    /// Real guests: each host reaches each VM disk through a loop device of
    /// its own over the image, as hosts each see a shared LUN as their own
    /// device. qemu's image locks are per device node then, and do not
    /// stand in for the VM lease between hosts: on one machine a hung
    /// host's stopped qemu would otherwise keep the image locked.
    pub disk_device_per_host: bool,
    /// Real guests: the domains are defined in each host's libvirt when it
    /// starts (without a `<lease>`) and the config names them by `domain`
    /// only, so the agent adds the lease to a defined domain; otherwise
    /// the config gives each VM's `domain_xml` for the agent to define.
    pub predefine_domains: bool,
    /// Extra arguments per host id for its daemon and its agent (e.g.
    /// `--metrics-listen ADDR --metrics-web`, `--web ADDR`).
    pub daemon_args: BTreeMap<u64, Vec<String>>,
    pub agent_args: BTreeMap<u64, Vec<String>>,
    /// TOML appended to every host's config (e.g. a `[fencing]` section,
    /// see [`super::fence::test_section`]).
    pub extra_config: String,
    /// The body of every host's `[health]` section (sub-tables such as
    /// `[health.gateway]` may follow). The default weighs none of what
    /// follows the machine's load, which the test hosts share: CPU load and
    /// free memory (one /proc, changing from one read to the next), late
    /// renewals of a host's own delta lease and a slow `virsh version`
    /// (both happen on a loaded 2-core machine at io_timeout 1): one host
    /// catching such noise would move VMs in tests about something else.
    pub health: String,
    /// Host id → network namespace (a path such as `/run/netns/NAME`) its
    /// agent, and so its monitors and VMs, run in.
    pub netns: BTreeMap<u64, PathBuf>,
    /// Real guests: a `[migration]` section naming every host, so VMs move
    /// by live migration ([`super::migrate`]). Each host's libvirtd is
    /// reached at [`Cluster::libvirt_socket`], a link to the socket in the
    /// host's namespace; the memory goes through libvirtd (`tunnelled`):
    /// no port to pick on the machine.
    pub migration: bool,
    /// Host id → the migration URI the config gives instead (a wrong one
    /// makes a migration fail).
    pub migration_uris: BTreeMap<u64, String>,
}

impl ClusterOpts {
    pub fn new(hactl: &Path, hosts: u64, vms: usize) -> ClusterOpts {
        ClusterOpts {
            hosts,
            vms,
            io_timeout: 1,
            interval: 1,
            grace: 5,
            capacity: 64,
            lockspace: "hademo".into(),
            hactl: hactl.to_path_buf(),
            storage_via: BTreeMap::new(),
            vm_extra: BTreeMap::new(),
            env: Vec::new(),
            vms_die_with_agent: true,
            whiteboard_hosts: hosts,
            guests: None,
            disk_device_per_host: true,
            predefine_domains: false,
            daemon_args: BTreeMap::new(),
            agent_args: BTreeMap::new(),
            extra_config: String::new(),
            health: TEST_HEALTH.into(),
            netns: BTreeMap::new(),
            migration: false,
            migration_uris: BTreeMap::new(),
        }
    }
}

/// [`ClusterOpts::health`]'s default.
pub const TEST_HEALTH: &str =
    "cpu_load_penalty = 0\nfree_memory_penalty = 0\nlease_penalty = 0\nlibvirt_penalty = 0\n";

/// How a host is doing, as far as the harness made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostProc {
    Down,
    Up,
    /// SIGSTOPped: must be killed before anything else.
    Hung,
    Killed,
}

pub struct Host {
    pub id: u64,
    /// The daemon's `SANLOCK_RUN_DIR`.
    pub daemon_dir: PathBuf,
    /// The agent's `--run-dir` (events.jsonl, status.json, VM logs).
    pub agent_dir: PathBuf,
    pub config: PathBuf,
    pub state: HostProc,
    /// The process group: the daemon's pid.
    pub pgid: i32,
    daemon: Option<Child>,
    agent: Option<Child>,
    /// Real guests: the host's namespace and libvirtd.
    pub ns: Option<super::lab::HostNs>,
    libvirtd: Option<super::lab::Libvirtd>,
    /// Real guests: the loop devices this host reaches the disks by.
    pub disk_devices: Vec<PathBuf>,
    /// Killed namespaces and libvirtds, reaped by [`Cluster::stop_all`].
    gone: Vec<(super::lab::HostNs, Option<super::lab::Libvirtd>)>,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub shared: PathBuf,
    pub disks: Vec<PathBuf>,
    pub hosts: Vec<Host>,
    pub opts: ClusterOpts,
    pub vm_names: Vec<String>,
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn sized_file(path: &Path, len: u64) -> Result<(), String> {
    let f = File::create(path).map_err(err(&path.display().to_string()))?;
    f.set_len(len).map_err(err(&path.display().to_string()))
}

fn run_ok(cmd: &mut Command) -> Result<(), String> {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// TOML string (basic string with escapes).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn user_and_group() -> (String, String) {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let u = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| "root".to_string(), |u| u.name);
    let g = nix::unistd::Group::from_gid(gid)
        .ok()
        .flatten()
        .map_or_else(|| "root".to_string(), |g| g.name);
    (u, g)
}

impl Cluster {
    /// Makes the shared storage and the per-host config files under `dir`
    /// (which must be on a file system with O_DIRECT: not tmpfs).
    pub fn create(dir: &Path, opts: ClusterOpts) -> Result<Cluster, String> {
        let shared = dir.join("shared");
        let disks_dir = dir.join("disks");
        for d in [&shared, &disks_dir] {
            std::fs::create_dir_all(d).map_err(err(&d.display().to_string()))?;
        }
        let ls = &opts.lockspace;
        let ids = shared.join("ids");
        sized_file(&ids, 1 << 20)?;
        run_ok(Command::new(&opts.hactl).args([
            "direct",
            "init",
            "-s",
            &format!(
                "{ls}:0:{}:0",
                crate::lease_str::escape_path(&ids.display().to_string())
            ),
            "-o",
            &opts.io_timeout.to_string(),
        ]))?;
        let xl = shared.join("xleases");
        // Slots: 0..3 metadata and index, then one 1 MiB lease per VM.
        sized_file(&xl, (4 + opts.vms as u64) << 20)?;
        let xopts = crate::xleases::Opts::default();
        crate::xleases::format(&xl, ls, &xopts).map_err(err("xleases format"))?;
        let mut vol = crate::xleases::Volume::open(&xl, &xopts).map_err(err("xleases open"))?;
        let vm_names: Vec<String> = (1..=opts.vms).map(|i| format!("vm{i}")).collect();
        for n in &vm_names {
            vol.add(n, false).map_err(err("xleases add"))?;
        }
        let wb = shared.join("whiteboard");
        super::whiteboard::Whiteboard::format(
            &wb,
            512,
            opts.hosts.max(opts.whiteboard_hosts).max(1),
        )
        .map_err(err("whiteboard format"))?;
        let ext = if opts.guests.is_some() { "img" } else { "disk" };
        let disks: Vec<PathBuf> = vm_names
            .iter()
            .map(|n| disks_dir.join(format!("{n}.{ext}")))
            .collect();
        if opts.guests.is_some() {
            for d in &disks {
                sized_file(d, super::guest::DISK_BYTES)?;
            }
        }
        let mut hosts = Vec::new();
        for id in 1..=opts.hosts {
            let hd = dir.join(format!("host{id}"));
            let (daemon_dir, agent_dir) = (hd.join("daemon"), hd.join("agent"));
            for d in [&daemon_dir, &agent_dir] {
                std::fs::create_dir_all(d).map_err(err(&d.display().to_string()))?;
            }
            let storage = opts.storage_via.get(&id).unwrap_or(&shared);
            let config = hd.join("ha.toml");
            let mut disk_devices = Vec::new();
            if opts.guests.is_some() && opts.disk_device_per_host {
                for d in &disks {
                    disk_devices.push(attach_loop(d)?);
                }
            }
            let domains = match &opts.guests {
                Some(image) => {
                    let by = if disk_devices.is_empty() {
                        &disks
                    } else {
                        &disk_devices
                    };
                    Some(write_domains(&hd, id, image, &vm_names, by)?)
                }
                None => None,
            };
            let text = config_text(&opts, dir, storage, &vm_names, &disks, domains.as_deref());
            std::fs::write(&config, text).map_err(err(&config.display().to_string()))?;
            hosts.push(Host {
                id,
                daemon_dir,
                agent_dir,
                config,
                state: HostProc::Down,
                pgid: 0,
                daemon: None,
                agent: None,
                ns: None,
                libvirtd: None,
                disk_devices,
                gone: Vec::new(),
            });
        }
        if opts.guests.is_some() {
            // qemu runs as libvirt-qemu: it must reach the images and disks.
            super::lab::make_reachable(dir)?;
        }
        Ok(Cluster {
            dir: dir.to_path_buf(),
            shared,
            disks,
            hosts,
            opts,
            vm_names,
        })
    }

    pub fn host(&self, id: u64) -> &Host {
        &self.hosts[(id - 1) as usize]
    }

    fn host_mut(&mut self, id: u64) -> &mut Host {
        &mut self.hosts[(id - 1) as usize]
    }

    /// Starts every host's daemon, then every agent (which joins the
    /// lockspace itself, all hosts at once).
    pub fn start_all(&mut self) -> Result<(), String> {
        for id in 1..=self.opts.hosts {
            self.start_daemon(id)?;
        }
        for id in 1..=self.opts.hosts {
            self.start_agent(id)?;
        }
        Ok(())
    }

    /// Starts host `id`: its daemon, then its agent.
    pub fn start_host(&mut self, id: u64) -> Result<(), String> {
        self.start_daemon(id)?;
        self.start_agent(id)
    }

    /// Whether `observer`'s agent sees every host of `hosts` LIVE with a
    /// fresh whiteboard sector (a candidate for VMs), per its status.json.
    pub fn sees_candidates(&self, observer: u64, hosts: &[u64]) -> bool {
        self.status(observer).is_some_and(|s| {
            s["hosts"].as_array().is_some_and(|a| {
                hosts.iter().all(|&h| {
                    a.iter()
                        .any(|x| x["host_id"] == h && x["state"] == "LIVE" && x["fresh"] == true)
                })
            })
        })
    }

    /// Starts host `id`'s daemon as the leader of a new process group.
    pub fn start_daemon(&mut self, id: u64) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let (user, group) = user_and_group();
        let hactl = self.opts.hactl.clone();
        let io = self.opts.io_timeout.to_string();
        let guests = self.opts.guests.is_some();
        let extra = self.opts.daemon_args.get(&id).cloned().unwrap_or_default();
        let link = libvirt_socket(&self.dir, id);
        let h = self.host_mut(id);
        if guests && h.ns.is_none() {
            let hd = h.daemon_dir.parent().unwrap_or(&h.daemon_dir).to_path_buf();
            h.ns = Some(super::lab::HostNs::create(&hd)?);
        }
        let log = File::create(h.daemon_dir.join("daemon.log")).map_err(err("daemon log"))?;
        let log2 = log.try_clone().map_err(err("daemon log"))?;
        let mut cmd = Command::new(&hactl);
        if let Some(ns) = &h.ns {
            ns.enter(&mut cmd);
        }
        cmd.args([
            "daemon", "-D", "-w", "0", "-l", "0", "-h", "0", "-o", &io, "-U", &user, "-G", &group,
        ])
        .args(extra)
        .env("SANLOCK_RUN_DIR", &h.daemon_dir)
        .env("SANLOCK_PRIVILEGED", "0")
        .env("HACTL_SANLOCK_CONF", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(err("start daemon"))?;
        h.pgid = child.id() as i32;
        // The test fence agent's "power": this host's process group.
        let pgid_file = h.daemon_dir.parent().unwrap_or(&h.daemon_dir).join("pgid");
        std::fs::write(&pgid_file, h.pgid.to_string()).map_err(err("pgid file"))?;
        h.daemon = Some(child);
        h.state = HostProc::Up;
        let sock = h.daemon_dir.join("sanlock.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if Instant::now() > deadline {
                return Err(format!(
                    "host {id}: the daemon did not create {}",
                    sock.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(ns) = &h.ns {
            // The host's libvirtd socket for the other hosts' libvirtds
            // (live migration): a link into its namespace's /run.
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(
                format!("/proc/{}/root/run/libvirt/libvirt-sock", ns.holder_pid()),
                &link,
            )
            .map_err(err(&link.display().to_string()))?;
            // The domains need no auto disk leases (their VM lease is in
            // the xleases volume) and must never run without a lease.
            let conf = super::lab::LibvirtConf::new(id);
            h.libvirtd = Some(super::lab::Libvirtd::start(ns, &conf, &h.daemon_dir)?);
            if self.opts.predefine_domains {
                let h = self.host(id);
                let ns = h.ns.as_ref().expect("a namespace");
                for n in &self.vm_names {
                    let xml = h.config.with_file_name("domains").join(format!("{n}.xml"));
                    let o = ns.virsh(&["define", &xml.display().to_string()]);
                    if !o.status.success() {
                        return Err(format!(
                            "host {id}: virsh define {}: {}",
                            xml.display(),
                            String::from_utf8_lossy(&o.stderr).trim()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts host `id`'s agent in its daemon's process group; it joins
    /// the lockspace (`--join`).
    pub fn start_agent(&mut self, id: u64) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let hactl = self.opts.hactl.clone();
        let env = self.opts.env.clone();
        let die = self.opts.vms_die_with_agent;
        let extra = self.opts.agent_args.get(&id).cloned().unwrap_or_default();
        let netns = match self.opts.netns.get(&id) {
            Some(p) => Some(File::open(p).map_err(err(&p.display().to_string()))?),
            None => None,
        };
        let h = self.host_mut(id);
        if h.state != HostProc::Up {
            return Err(format!("host {id}: the daemon is not up"));
        }
        let log = File::create(h.agent_dir.join("agent.log")).map_err(err("agent log"))?;
        let log2 = log.try_clone().map_err(err("agent log"))?;
        let mut cmd = Command::new(&hactl);
        if let Some(ns) = &h.ns {
            ns.enter(&mut cmd);
        }
        cmd.args(["ha", "agent", "--join", "--host-id", &id.to_string(), "-c"])
            .arg(&h.config)
            .arg("--run-dir")
            .arg(&h.agent_dir)
            .args(extra)
            .env("SANLOCK_RUN_DIR", &h.daemon_dir)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(h.pgid);
        if die {
            cmd.env(super::DIE_WITH_AGENT_ENV, "1");
        }
        if let Some(ns) = &netns {
            use std::os::fd::AsRawFd;
            let fd = ns.as_raw_fd();
            // SAFETY: setns(2) in the child before exec, on a namespace fd
            // the parent holds open until spawn returns.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        die_with_parent(&mut cmd);
        h.agent = Some(cmd.spawn().map_err(err("start agent"))?);
        Ok(())
    }

    /// SIGKILL of host `id`'s agent alone, then a new agent: its VMs and
    /// daemon keep running (with [`ClusterOpts::vms_die_with_agent`] off).
    pub fn restart_agent(&mut self, id: u64) -> Result<(), String> {
        let h = self.host_mut(id);
        if let Some(mut a) = h.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        self.start_agent(id)
    }

    fn signal_group(&mut self, id: u64, sig: i32) {
        let h = self.host_mut(id);
        if h.pgid > 0 {
            // SAFETY: kill(2) of the process group we created for this host.
            unsafe { libc::kill(-h.pgid, sig) };
        }
    }

    /// A host crash: SIGKILL of its daemon, agent and VMs at once.
    pub fn crash(&mut self, id: u64) {
        self.kill(id);
    }

    /// A host hang: SIGSTOP of all its processes (with real guests, every
    /// process of its namespace: qemu too). It stays stopped until
    /// [`Cluster::kill`]: see the module's safety note.
    pub fn hang(&mut self, id: u64) {
        self.signal_group(id, libc::SIGSTOP);
        if let Some(ns) = &self.host(id).ns {
            ns.signal_all(libc::SIGSTOP);
        }
        self.host_mut(id).state = HostProc::Hung;
    }

    /// SIGKILL of the host's process group (what its watchdog does to a
    /// hung host) and reaping of the processes the harness started. A
    /// process blocked on storage that does not answer (a frozen FUSE
    /// server) cannot finish dying until that storage answers: it is
    /// waited for 5 s, then left to [`Cluster::stop_all`] / drop.
    pub fn kill(&mut self, id: u64) {
        self.signal_group(id, libc::SIGKILL);
        let h = self.host_mut(id);
        // With real guests every process of the host goes, qemu included;
        // the host comes back (if ever) with a new namespace, as a reboot
        // brings an empty /run.
        if let Some(ns) = h.ns.take() {
            ns.kill_all(Duration::from_secs(5));
            // Reaped at stop_all: a process blocked on frozen storage
            // dies only once the storage answers.
            h.gone.push((ns, h.libvirtd.take()));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for slot in [&mut h.daemon, &mut h.agent] {
            while let Some(c) = slot.as_mut() {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => *slot = None,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => break,
                }
            }
        }
        h.state = HostProc::Killed;
    }

    /// Stops every host by its process group (also hung ones: SIGKILL
    /// works on stopped processes, no SIGCONT needed), and reaps them.
    pub fn stop_all(&mut self) {
        for id in 1..=self.opts.hosts {
            if self.host(id).state != HostProc::Down {
                self.kill(id);
            }
        }
        for h in &mut self.hosts {
            for c in [h.daemon.take(), h.agent.take()].into_iter().flatten() {
                let mut c = c;
                let _ = c.wait();
            }
            for (ns, libvirtd) in h.gone.drain(..) {
                drop(libvirtd);
                ns.kill_all(Duration::from_secs(10));
                drop(ns);
            }
        }
    }

    /// Whether the agent process of host `id` is still there.
    pub fn agent_alive(&mut self, id: u64) -> bool {
        let h = self.host_mut(id);
        h.agent
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The agent's status.json, parsed (None before its first cycle).
    pub fn status(&self, id: u64) -> Option<serde_json::Value> {
        let t = std::fs::read_to_string(self.host(id).agent_dir.join("status.json")).ok()?;
        serde_json::from_str(&t).ok()
    }

    /// The agent's events, parsed.
    pub fn events(&self, id: u64) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.host(id).agent_dir.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The split-brain check over every VM disk.
    pub fn check_disks(&self) -> Vec<(PathBuf, DiskReport)> {
        self.disks
            .iter()
            .map(|d| {
                let rep = demo_vm::check_file(d).unwrap_or_else(|e| DiskReport {
                    runs: vec![],
                    violations: vec![demo_vm::Violation::Damaged {
                        index: 0,
                        reason: e,
                    }],
                });
                (d.clone(), rep)
            })
            .collect()
    }

    /// The host whose run wrote each disk last, if that run wrote within
    /// `fresh` (i.e. the VM is running there now). A guest's clock is set
    /// from the emulated RTC at boot (whole seconds): allow a second more.
    pub fn running_on(&self, fresh: Duration) -> Vec<Option<u64>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.disks
            .iter()
            .map(|d| {
                let last = demo_vm::last_record(d)?;
                (now.saturating_sub(last.t_ns) < fresh.as_nanos() as u64).then_some(last.host_id)
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        for h in &mut self.hosts {
            for dev in h.disk_devices.drain(..) {
                let _ = Command::new("losetup")
                    .arg("-d")
                    .arg(&dev)
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Where host `id`'s libvirtd socket is reached from outside its
/// namespace (a link into it, made when the host starts).
pub fn libvirt_socket(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("host{id}")).join("libvirt-sock")
}

/// A loop device over `image` (direct I/O: every host's writes reach the
/// image file at once, as on shared storage).
fn attach_loop(image: &Path) -> Result<PathBuf, String> {
    let o = Command::new("losetup")
        .args(["-f", "--show", "--direct-io=on"])
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("losetup: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "losetup {} failed (needs root and loop devices): {}",
            image.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; it only affects the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// One host's config: the shared files as this host reaches them.
fn config_text(
    opts: &ClusterOpts,
    dir: &Path,
    storage: &Path,
    names: &[String],
    disks: &[PathBuf],
    domains: Option<&[PathBuf]>,
) -> String {
    let path = |f: &str| q(&storage.join(f).display().to_string());
    let mut s = format!(
        "[cluster]\nlockspace = {}\nids = {}\nxleases = {}\nwhiteboard = {}\ninterval = {}\ngrace = {}\ncapacity = {}\n",
        q(&opts.lockspace),
        path("ids"),
        path("xleases"),
        path("whiteboard"),
        opts.interval,
        opts.grace,
        opts.capacity
    );
    s.push_str(&opts.extra_config);
    s.push_str("\n[health]\n");
    s.push_str(&opts.health);
    s.push('\n');
    if opts.migration {
        s.push_str("\n[migration]\ntunnelled = true\ntimeout = 60\n");
        for id in 1..=opts.hosts {
            let uri = opts.migration_uris.get(&id).cloned().unwrap_or_else(|| {
                format!(
                    "qemu+unix:///system?socket={}",
                    libvirt_socket(dir, id).display()
                )
            });
            s.push_str(&format!(
                "\n[[migration.host]]\nhost_id = {id}\nuri = {}\n",
                q(&uri)
            ));
        }
    }
    let hactl = q(&opts.hactl.display().to_string());
    for (i, (n, d)) in names.iter().zip(disks).enumerate() {
        match domains {
            Some(_) if opts.predefine_domains => s.push_str(&format!(
                "\n[[vm]]\nname = {}\nrunner = \"libvirt\"\ndomain = {}\n",
                q(n),
                q(n)
            )),
            Some(xml) => s.push_str(&format!(
                "\n[[vm]]\nname = {}\nrunner = \"libvirt\"\ndomain = {}\ndomain_xml = {}\n",
                q(n),
                q(n),
                q(&xml[i].display().to_string())
            )),
            None => s.push_str(&format!(
                "\n[[vm]]\nname = {}\nstart = [{hactl}, \"ha\", \"demo-vm\", {}]\n",
                q(n),
                q(&d.display().to_string())
            )),
        }
        if let Some(extra) = opts.vm_extra.get(&i) {
            s.push_str(extra);
            s.push('\n');
        }
    }
    s
}

/// Host `id`'s domain XML for every VM (its host id on the guest's kernel
/// command line, the consoles in the host's directory); the agent adds
/// the `<lease>`.
fn write_domains(
    host_dir: &Path,
    id: u64,
    image: &super::guest::GuestImage,
    names: &[String],
    disks: &[PathBuf],
) -> Result<Vec<PathBuf>, String> {
    let dom_dir = host_dir.join("domains");
    std::fs::create_dir_all(&dom_dir).map_err(err(&dom_dir.display().to_string()))?;
    let mut out = Vec::new();
    for (n, d) in names.iter().zip(disks) {
        let console = dom_dir.join(format!("{n}.console"));
        let xml = super::guest::domain_xml(&super::guest::DomainSpec {
            name: n,
            image,
            host_id: id,
            disk: d,
            console: &console,
            lease: None,
            extra_cmdline: "",
        });
        let f = dom_dir.join(format!("{n}.xml"));
        std::fs::write(&f, xml).map_err(err(&f.display().to_string()))?;
        out.push(f);
    }
    Ok(out)
}
