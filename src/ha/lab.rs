//! Hosts of a lab on one machine with their own libvirtd, for the libvirt
//! tests, `hactl demo --libvirt` and the failover bench.
//!
//! A root libvirtd keeps its sockets and state in fixed places
//! (`/run/libvirt`, `/etc/libvirt` with `qemu.conf` and
//! `qemu-sanlock.conf`, `/var/lib/libvirt`, ...): its own options only move
//! libvirtd.conf and the sockets, not the qemu driver's config and state, so
//! two root libvirtds on one machine would share them. Each lab host is
//! therefore a **mount namespace** ([`HostNs`]): a holder process made by
//! `unshare --mount --propagation private` mounts a tmpfs on `/run` and
//! binds the host's own directories over `/etc/libvirt`,
//! `/var/lib/libvirt`, `/var/log/libvirt` and `/var/cache/libvirt`, then
//! sleeps; every process of the host (its lease daemon, libvirtd, the HA
//! agent, and so qemu and libvirt's killpath helper) is started inside it
//! with setns(2), so each sees its own libvirtd at `qemu:///system`. The
//! rest of the file system is shared: lease files, disks and guest images
//! are reached by the same paths from every host.
//!
//! A host's processes are found by their mount namespace (no names are
//! involved): a crash is SIGKILL of each, a hang SIGSTOP of each.
//! libvirtd runs as a plain process (no systemd): `SANLOCK_RUN_DIR` in its
//! environment points libvirt's sanlock plugin, in libvirtd and in the qemu
//! it forks, at this host's lease daemon.

use std::io::BufRead;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The libvirt connection inside a host's namespace.
pub const URI: &str = "qemu:///system";

/// Directories bound over the machine's, per host (name, mount point).
const BINDS: &[(&str, &str)] = &[
    ("etc-libvirt", "/etc/libvirt"),
    ("var-lib-libvirt", "/var/lib/libvirt"),
    ("var-log-libvirt", "/var/log/libvirt"),
    ("var-cache-libvirt", "/var/cache/libvirt"),
];

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

/// A host's mount namespace, held by a sleeping process, and watched from
/// outside it: if the lab's process dies without stopping the host (it was
/// killed), the watcher kills every process left in the namespace (qemu is
/// libvirtd's grandchild: nothing else would).
pub struct HostNs {
    /// The host's own directories (and logs).
    pub dir: PathBuf,
    holder: Child,
    watcher: Option<Child>,
    ns: OwnedFd,
    /// `mnt:[inode]`, as /proc/PID/ns/mnt reads for every process inside.
    ns_id: String,
}

fn ns_id_of(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

impl HostNs {
    /// Makes the namespace with `dir`'s subdirectories bound over
    /// libvirt's. The mount points are made on the machine when missing
    /// (as libvirt-daemon-system would); nothing is mounted outside.
    pub fn create(dir: &Path) -> Result<HostNs, String> {
        let mut script = String::from("set -e\nmount -t tmpfs -o mode=0755 hactl-lab-run /run\n");
        for (sub, at) in BINDS {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            std::fs::create_dir_all(at).map_err(|e| format!("mount point {at}: {e}"))?;
            script.push_str(&format!(
                "mount --bind '{}' {at}\n",
                d.display().to_string().replace('\'', "'\\''")
            ));
        }
        script.push_str("echo ready\nexec sleep infinity\n");
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: a signal to the lab's group (Ctrl-C, a
        // timeout) must leave it to clean up.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut holder = cmd
            .spawn()
            .map_err(|e| format!("unshare (util-linux): {e}"))?;
        let mut line = String::new();
        let _ = std::io::BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = holder.kill();
            let mut err = String::new();
            if let Some(mut e) = holder.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let _ = holder.wait();
            return Err(format!(
                "cannot make a mount namespace for a lab host (needs root): {}",
                err.trim()
            ));
        }
        let pid = holder.id() as i32;
        let ns: OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
            .map_err(|e| format!("/proc/{pid}/ns/mnt: {e}"))?
            .into();
        let ns_id = ns_id_of(pid).ok_or("the namespace holder is gone")?;
        let watcher = spawn_watcher(&ns_id, pid);
        Ok(HostNs {
            dir: dir.to_path_buf(),
            holder,
            watcher,
            ns,
            ns_id,
        })
    }

    /// Makes `cmd` start inside this namespace.
    pub fn enter(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let fd = self.ns.as_raw_fd();
        // SAFETY: setns on a descriptor that stays open in the parent until
        // spawn returns; the child is single-threaded after fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// A command run inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        self.enter(&mut c);
        c
    }

    /// `virsh -c qemu:///system ARGS` inside this namespace.
    pub fn virsh(&self, args: &[&str]) -> Output {
        let mut c = self.command("virsh");
        c.args(["-q", "-c", URI])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| Output {
                status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
                stdout: Vec::new(),
                stderr: format!("cannot run virsh (libvirt-clients): {e}").into_bytes(),
            })
    }

    /// The holder's pid (its /proc/PID/root shows the host's /run).
    pub fn holder_pid(&self) -> i32 {
        self.holder.id() as i32
    }

    /// Every process of this host but the holder, by pid, from each
    /// process's /proc/PID/ns/mnt (a zombie has none left). Reading /proc of
    /// a process that is dying while one of its threads waits on storage
    /// that does not answer (a frozen FUSE server) blocks until the storage
    /// answers: the scan runs on its own thread and what it found within a
    /// second is the answer (a blocked scan finishes when the storage does).
    pub fn pids(&self) -> Vec<i32> {
        self.scan().0
    }

    /// [`HostNs::pids`], and whether the scan of /proc finished within its
    /// second (if not, processes past the one it waits on were not seen).
    fn scan(&self) -> (Vec<i32>, bool) {
        use std::sync::{Arc, Mutex};
        let (holder, ns_id) = (self.holder_pid(), self.ns_id.clone());
        // Listing /proc does not block; looking at one process can (one
        // blocked on frozen storage). The pid being looked at is known, so
        // a scan cut short marks it stuck and later scans go past it.
        let pids: Vec<i32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&p| p != holder && !STUCK.lock().unwrap().contains(&p))
            .collect();
        let current: Arc<Mutex<Option<i32>>> = Arc::new(Mutex::new(None));
        let cur = current.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = std::thread::Builder::new()
            .name("lab-ns-scan".into())
            .spawn(move || {
                for pid in pids {
                    *cur.lock().unwrap() = Some(pid);
                    let ours = ns_id_of(pid).as_deref() == Some(&ns_id);
                    *cur.lock().unwrap() = None;
                    STUCK.lock().unwrap().remove(&pid);
                    if ours {
                        let _ = tx.send(Some(pid));
                    }
                }
                let _ = tx.send(None);
            });
        let end = Instant::now() + Duration::from_secs(1);
        let mut out = Vec::new();
        loop {
            match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(Some(pid)) => out.push(pid),
                Ok(None) => return (out, true),
                Err(_) => {
                    if let Some(p) = *current.lock().unwrap() {
                        STUCK.lock().unwrap().insert(p);
                    }
                    return (out, false);
                }
            }
        }
    }

    /// Sends `sig` to every process of the host (not the holder).
    pub fn signal_all(&self, sig: i32) -> usize {
        let pids = self.pids();
        for &pid in &pids {
            // SAFETY: kill(2) of a process found in this host's namespace.
            unsafe { libc::kill(pid, sig) };
        }
        pids.len()
    }

    /// SIGKILL of every process of the host, then waits (at most `limit`)
    /// until each has exited, watching them by pidfd: a process blocked on
    /// frozen storage cannot finish dying before the storage answers.
    /// Returns the pids that had not exited.
    pub fn kill_all(&self, limit: Duration) -> Vec<i32> {
        let end = Instant::now() + limit;
        let mut watched: Vec<(i32, Option<OwnedFd>)> = Vec::new();
        // Looked again until a whole scan finds nothing new: that catches
        // what was forked meanwhile, and what a scan cut short at its
        // second missed (on a loaded machine qemu guests were left running).
        loop {
            let (pids, complete) = self.scan();
            let mut new = 0;
            for pid in pids {
                if watched.iter().any(|(p, _)| *p == pid) {
                    continue;
                }
                new += 1;
                watched.push((pid, pidfd(pid)));
                // SAFETY: kill(2) of a process found in this host's namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            watched.retain(|(_, fd)| fd.as_ref().is_some_and(|fd| !exited_fd(fd)));
            let settled = complete && new == 0;
            if (settled && watched.is_empty()) || Instant::now() >= end {
                return watched.into_iter().map(|(p, _)| p).collect();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Processes whose namespace could not be read within a scan's second
/// (blocked on storage that does not answer): skipped until that read
/// returns, so one of them cannot hide the processes listed after it.
static STUCK: std::sync::Mutex<std::collections::BTreeSet<i32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A pidfd of `pid` (None: it is gone already).
fn pidfd(pid: i32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open returns a new descriptor we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the process behind a pidfd has exited (it polls readable then).
fn exited_fd(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll of one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// The watcher: outside the namespace (its own `sleep`s are not members),
/// in its own process group and deaf to the signals a terminal or a
/// timeout sends the lab's group.
fn spawn_watcher(ns_id: &str, holder: i32) -> Option<Child> {
    let script = format!(
        "trap '' HUP INT TERM\n\
         while kill -0 {parent} 2>/dev/null && kill -0 {holder} 2>/dev/null; do sleep 1; done\n\
         kill -0 {parent} 2>/dev/null && exit 0\n\
         for p in /proc/[0-9]*; do \
         [ \"$(readlink $p/ns/mnt 2>/dev/null)\" = '{ns_id}' ] && kill -9 ${{p#/proc/}}; done\n",
        parent = std::process::id()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn().ok()
}

impl Drop for HostNs {
    fn drop(&mut self) {
        self.kill_all(Duration::from_secs(10));
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        // It sees the holder gone (and the lab alive) and exits.
        if let Some(w) = &mut self.watcher {
            let _ = w.wait();
        }
    }
}

/// What a host's libvirt is configured with (`qemu.conf`,
/// `qemu-sanlock.conf`).
#[derive(Clone, Debug)]
pub struct LibvirtConf {
    /// qemu-sanlock.conf `host_id`: this host's id in the
    /// `__LIBVIRT__DISKS__` lockspace (auto disk leases).
    pub host_id: u64,
    pub auto_disk_leases: bool,
    pub require_lease_for_disks: bool,
    /// The io_timeout libvirt adds its disk lockspace with.
    pub io_timeout: u32,
    /// Where auto disk leases live (shared by the hosts that share disks).
    pub disk_lease_dir: Option<PathBuf>,
}

impl LibvirtConf {
    pub fn new(host_id: u64) -> LibvirtConf {
        LibvirtConf {
            host_id,
            auto_disk_leases: false,
            require_lease_for_disks: true,
            io_timeout: 10,
            disk_lease_dir: None,
        }
    }

    /// `qemu-sanlock.conf` as dist/libvirt/qemu-sanlock.conf documents it.
    pub fn sanlock_conf(&self) -> String {
        let mut s = format!(
            "host_id = {}\nauto_disk_leases = {}\nrequire_lease_for_disks = {}\nio_timeout = {}\n",
            self.host_id,
            u8::from(self.auto_disk_leases),
            u8::from(self.require_lease_for_disks),
            self.io_timeout
        );
        if let Some(d) = &self.disk_lease_dir {
            s.push_str(&format!("disk_lease_dir = \"{}\"\n", d.display()));
        }
        s
    }
}

/// The lab's `qemu.conf`: the sanlock lock manager, plus what running many
/// libvirtds without systemd on one machine needs.
pub const LAB_QEMU_CONF: &str = r#"# Leases through libvirt's sanlock plugin (dist/libvirt/qemu.conf).
lock_manager = "sanlock"
# qemu's output to a file: no virtlogd runs here.
stdio_handler = "file"
# No cgroups: the lab's hosts share the machine's hierarchy, and a crash
# kills a host's processes by their mount namespace instead.
cgroup_controllers = [ ]
# qemu stays in its host's mount namespace, where a crash finds it.
namespaces = [ ]
# Several libvirtds chown the same kernel and initrd: no ownership xattrs
# that one would trip over for another's guest.
remember_owner = 0
"#;

/// A lab host's libvirt host UUID (libvirtd.conf `host_uuid`), from its id.
pub fn host_uuid(host_id: u64) -> String {
    format!("6861636c-6162-4000-8000-{host_id:012x}")
}

/// A libvirtd running in a host's namespace, stopped by pid on drop.
pub struct Libvirtd {
    child: Child,
}

impl Libvirtd {
    /// Writes the host's libvirt config and starts libvirtd with
    /// `SANLOCK_RUN_DIR` = `sanlock_run_dir`; returns once `virsh` reaches it.
    pub fn start(
        ns: &HostNs,
        conf: &LibvirtConf,
        sanlock_run_dir: &Path,
    ) -> Result<Libvirtd, String> {
        ensure_libvirt_users()?;
        let etc = ns.dir.join("etc-libvirt");
        let write = |name: &str, text: &str| {
            let p = etc.join(name);
            std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
        };
        write("qemu.conf", LAB_QEMU_CONF)?;
        write("qemu-sanlock.conf", &conf.sanlock_conf())?;
        // The lock manager's debug lines show what libvirt asked of the
        // lease daemon.
        // A host UUID of its own: libvirt refuses to migrate a guest
        // between two libvirtds of one host UUID (the machine's).
        write(
            "libvirtd.conf",
            &format!(
                "host_uuid = \"{}\"\nlog_outputs = \"1:file:/var/log/libvirt/libvirtd.log\"\nlog_filters = \"1:locking 1:qemu.qemu_process 1:qemu.qemu_migration 3:*\"\n",
                host_uuid(conf.host_id)
            ),
        )?;
        if let Some(d) = &conf.disk_lease_dir {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let out = std::fs::File::create(ns.dir.join("libvirtd.out"))
            .map_err(|e| format!("{}: {e}", ns.dir.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = ns.command("/usr/sbin/libvirtd");
        cmd.env("SANLOCK_RUN_DIR", sanlock_run_dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start libvirtd (libvirt-daemon): {e}"))?;
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                let log = std::fs::read_to_string(ns.dir.join("libvirtd.out")).unwrap_or_default();
                return Err(format!("libvirtd exited ({st}): {}", log.trim()));
            }
            let o = ns.virsh(&["version"]);
            if o.status.success() {
                return Ok(Libvirtd { child });
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "libvirtd did not answer within 60 s: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // Bounded: a libvirtd blocked on storage that does not answer (a
        // frozen FUSE server) cannot die until it answers.
        let end = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The `libvirt-qemu` user and the `kvm`, `libvirt` and `libvirt-qemu`
/// groups, made as Debian's libvirt-daemon-system makes them (which would
/// also pull systemd): libvirtd runs qemu as that user.
pub fn ensure_libvirt_users() -> Result<(), String> {
    use nix::unistd::{Group, User};
    let run = |args: &[&str]| -> Result<(), String> {
        let o = Command::new(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e} (install passwd)", args[0]))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed (needs root): {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    };
    let group = |g: &str| Group::from_name(g).ok().flatten().is_some();
    for g in ["kvm", "libvirt"] {
        if !group(g) {
            run(&["groupadd", "--system", g])?;
        }
    }
    if User::from_name("libvirt-qemu").ok().flatten().is_none() {
        run(&[
            "useradd",
            "--system",
            "--gid",
            "kvm",
            "--home-dir",
            "/var/lib/libvirt",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "Libvirt Qemu",
            "libvirt-qemu",
        ])?;
    }
    if !group("libvirt-qemu") {
        run(&["groupadd", "--system", "libvirt-qemu"])?;
        run(&["usermod", "-a", "-G", "libvirt-qemu", "libvirt-qemu"])?;
    }
    Ok(())
}

/// qemu runs as `libvirt-qemu`: every directory above a guest's files must
/// let others search it. Those at and below `own` are made so (the lab's
/// own directories); an ancestor above it that does not is an error.
pub fn make_reachable(own: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let own = std::fs::canonicalize(own).map_err(|e| format!("{}: {e}", own.display()))?;
    for a in own.ancestors().skip(1) {
        let m = std::fs::metadata(a).map_err(|e| format!("{}: {e}", a.display()))?;
        if m.permissions().mode() & 0o001 == 0 {
            return Err(format!(
                "qemu (user libvirt-qemu) cannot reach {}: {} is not searchable by others",
                own.display(),
                a.display()
            ));
        }
    }
    let mut stack = vec![own];
    while let Some(d) = stack.pop() {
        let m = std::fs::metadata(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        let mode = m.permissions().mode();
        if mode & 0o011 != 0o011 {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode | 0o011))
                .map_err(|e| format!("{}: {e}", d.display()))?;
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    Ok(())
}

/// The state of a domain as `virsh domstate` says it (`running`, `paused`,
/// `shut off`, ...), or the error.
pub fn domstate(ns: &HostNs, name: &str) -> Result<String, String> {
    let o = ns.virsh(&["domstate", name]);
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    }
}
