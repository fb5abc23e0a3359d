//! lvmlockd hosts on one machine, for tests that run lvm's shared VGs over
//! hactl or the real sanlock.
//!
//! A host is a mount and network namespace of its own (network: `lvmlockctl
//! --info` receives lvmlockd's answer on a fixed abstract socket name, so two
//! hosts' lvmlockctls would collide in one), with:
//! - a tmpfs on `/run`: lvm commands use lvmlockd only if `/run/lvmlockd.pid`
//!   exists and reach it only at `/run/lvm/lvmlockd.socket`, so two
//!   lvmlockds on one machine need two `/run`s;
//! - a `/dev` of its own (a tmpfs with the few nodes lvm needs): lvmlockd
//!   opens the lvmlock LV as `/dev/mapper/VG-lvmlock`, and this kernel has no
//!   device-mapper, so that name is a node of a loop device over the LV's
//!   extents ([`SharedDisk`]);
//! - its lock daemon (hactl or sanlock) in its own run dir, found by
//!   lvmlockd (libsanlock) through `SANLOCK_RUN_DIR`, and started inside the
//!   namespace so it opens the same `/dev/mapper` path and its killpath
//!   (`lvmlockctl --kill VG`) reaches this host's lvmlockd;
//! - lvmlockd, and an `LVM_SYSTEM_DIR` whose lvm.conf sets `use_lvmlockd = 1`,
//!   `local/host_id` and `activation = 0` (no device-mapper: activation is
//!   skipped, but `lvchange -aey/-asy` still takes the LV lock).
//!
//! Every command runs in the host's namespace through `nsenter`, with a
//! time limit. Everything is stopped by pid on drop.

use super::*;
use std::io::Read;

/// Which lock daemon a host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Hactl,
    Sanlock,
}

impl Manager {
    pub fn name(self) -> &'static str {
        match self {
            Manager::Hactl => "hactl",
            Manager::Sanlock => "sanlock",
        }
    }
}

/// A command's result, with its command line for messages.
#[derive(Debug)]
pub struct Ran {
    pub what: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Panics with the whole output unless the command succeeded.
    pub fn expect_ok(self) -> Ran {
        assert!(self.ok(), "{self}");
        self
    }

    /// Panics unless the command failed and said `msg` on stderr.
    pub fn expect_refused(self, msg: &str) -> Ran {
        assert!(
            !self.ok() && self.stderr.contains(msg),
            "expected a refusal saying {msg:?}, got: {self}"
        );
        self
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout\n{}--- stderr\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd`, killing it (by pid) if it has not exited after `limit`: a
/// hung lvm command fails the test instead of hanging it.
pub fn run_limited(cmd: &mut Command, what: String, limit: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        what,
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Polls `cond` every 200 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A private mount namespace with its own `/run` and `/dev`, and a network
/// namespace of its own (see the module doc), kept alive by a holder
/// process that is killed by pid on drop.
pub struct MountNs {
    holder: Child,
}

impl MountNs {
    pub fn new() -> MountNs {
        // The holder mounts, says "ready", and sleeps: the namespace lives as
        // long as it (or anything started in it) does.
        let script = "set -e
            mount -t tmpfs -o mode=755 tmpfs /run
            mkdir -p /run/lvm /run/lock/lvm /run/dev/mapper
            cp -a /dev/null /dev/zero /dev/full /dev/random /dev/urandom /run/dev/
            ln -s /proc/self/fd /run/dev/fd
            mount --bind /run/dev /dev
            echo ready
            exec sleep infinity";
        let mut cmd = Command::new("unshare");
        let mut holder = die_with_parent(&mut cmd)
            .args(["--mount", "--net", "--propagation", "private"])
            .args(["sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) is needed for lvmlockd hosts");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        if line.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            panic!("could not set up a namespace with its own /run and /dev (needs root)");
        }
        MountNs { holder }
    }

    pub fn pid(&self) -> i32 {
        self.holder.id() as i32
    }

    /// `nsenter` arguments that exec a command inside these namespaces.
    pub fn via(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--mount=/proc/{}/ns/mnt", self.pid()),
            format!("--net=/proc/{}/ns/net", self.pid()),
            "--".into(),
        ]
    }

    /// `path` as seen inside the namespace, reached from outside.
    pub fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid()))
    }

    /// Makes `/dev/<name>` inside the namespace the block device `dev`
    /// (same major:minor).
    pub fn add_dev(&self, name: &str, dev: &str) {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(dev)
            .unwrap_or_else(|e| panic!("{dev}: {e}"))
            .rdev();
        let at = self.path(&format!("/dev/{name}"));
        nix::sys::stat::mknod(
            &at,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            rdev,
        )
        .unwrap_or_else(|e| panic!("mknod {}: {e}", at.display()));
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Shared storage for one VG: a PV (a loop device over an image file) and
/// a second loop device over the byte range where lvm puts the VG's
/// lvmlock LV (what `/dev/mapper/VG-lvmlock` would be), both with the same
/// logical sector size.
pub struct SharedDisk {
    pub sector_size: u32,
    pub pv: LoopDev,
    pub lvmlock: LoopDev,
    /// The lvmlock LV's offset in the PV and its size.
    pub lvmlock_at: (u64, u64),
}

const MIB: u64 = 1 << 20;

impl SharedDisk {
    /// The lvmlock LV is the VG's first LV, so it starts at the PV's first
    /// extent (pe_start, 1 MiB by default and asked for explicitly by
    /// [`LvmHost::vgcreate`]); lvm makes it 256 MiB on 512-byte sectors and
    /// 1 GiB on 4K ones (a lease per MiB, or per 8 MiB). `vgcreate` checks
    /// both against lvm's own report.
    pub fn new(dir: &Path, name: &str, sector_size: u32) -> SharedDisk {
        let (lock_size, pv_size) = match sector_size {
            512 => (256 * MIB, 320 * MIB),
            4096 => (1024 * MIB, 1100 * MIB),
            _ => panic!("sector size {sector_size}"),
        };
        std::fs::create_dir_all(dir).unwrap();
        let image = dir.join(format!("{name}.img"));
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(pv_size).unwrap();
        let pv = LoopDev::new(&image, sector_size);
        let lvmlock = LoopDev::range(&image, sector_size, MIB, lock_size);
        SharedDisk {
            sector_size,
            pv,
            lvmlock,
            lvmlock_at: (MIB, lock_size),
        }
    }
}

/// One lvmlockd host: its namespace, lock daemon, lvmlockd and lvm.conf.
pub struct LvmHost {
    pub label: String,
    pub host_id: u32,
    pub manager: Manager,
    dir: PathBuf,
    // Dropped in this order: lvmlockd, the lock daemon, the namespace.
    lvmlockd: Child,
    hactl: Option<HactlDaemon>,
    sanlock: Option<SanlockDaemon>,
    pub ns: MountNs,
}

/// How long one lvm command may take: starting a lockspace takes about
/// 2 × io_timeout (20 s at lvmlockd's default), and up to a few minutes
/// if the host_id was not released cleanly.
const LVM_LIMIT: Duration = Duration::from_secs(240);

impl LvmHost {
    /// Starts host `host_id` in `dir`, able to see `disks`. `io_timeout`:
    /// lvmlockd's `--sanlock-timeout` (None: its default, the daemon's 10 s).
    pub fn start(
        dir: &Path,
        label: &str,
        host_id: u32,
        manager: Manager,
        disks: &[&SharedDisk],
        io_timeout: Option<u32>,
    ) -> LvmHost {
        std::fs::create_dir_all(dir.join("lvm")).unwrap();
        let ns = MountNs::new();
        let mut accept = String::new();
        for d in disks {
            let name = d.pv.dev.trim_start_matches("/dev/");
            ns.add_dev(name, &d.pv.dev);
            accept.push_str(&format!("\"a|^{}$|\", ", d.pv.dev));
        }
        let filter = format!("[ {accept}\"r|.*|\" ]");
        // Only this host's PVs, no udev, no hints or devices file kept in
        // /etc or a /run shared with the machine.
        let conf = format!(
            "devices {{
    scan = [ \"/dev\" ]
    filter = {filter}
    global_filter = {filter}
    obtain_device_list_from_udev = 0
    external_device_info_source = \"none\"
    use_devicesfile = 0
    hints = \"none\"
}}
global {{
    use_lvmlockd = 1
    activation = 0
    event_activation = 0
    use_lvmpolld = 0
    notify_dbus = 0
}}
activation {{
    udev_sync = 0
    udev_rules = 0
    monitoring = 0
}}
local {{
    host_id = {host_id}
}}
"
        );
        std::fs::write(dir.join("lvm/lvm.conf"), conf).unwrap();

        let run_dir = dir.join("run");
        let via = ns.via();
        let (hactl, sanlock) = match manager {
            Manager::Hactl => (Some(HactlDaemon::start_via(&via, &run_dir, &[], &[])), None),
            Manager::Sanlock => (
                None,
                Some(SanlockDaemon::start_via(&via, &run_dir, &[], &[])),
            ),
        };

        let log = std::fs::File::create(dir.join("lvmlockd.log")).unwrap();
        let mut cmd = Command::new("nsenter");
        die_with_parent(&mut cmd)
            .args(&via[1..])
            .args(["lvmlockd", "--daemon-debug"])
            .env("SANLOCK_RUN_DIR", &run_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(t) = io_timeout {
            cmd.args(["--sanlock-timeout", &t.to_string()]);
        }
        let lvmlockd = cmd
            .spawn()
            .expect("lvmlockd (Debian package lvm2-lockd) is needed");
        let host = LvmHost {
            label: format!("{label} host {host_id} ({})", manager.name()),
            host_id,
            manager,
            dir: dir.to_path_buf(),
            lvmlockd,
            hactl,
            sanlock,
            ns,
        };
        let sock = host.ns.path("/run/lvm/lvmlockd.socket");
        assert!(
            wait_for(Duration::from_secs(10), || sock.exists()),
            "{}: lvmlockd did not create its socket",
            host.label
        );
        host
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The lock daemon's pid.
    pub fn daemon_pid(&self) -> i32 {
        match (&self.hactl, &self.sanlock) {
            (Some(h), _) => h.pid(),
            (_, Some(s)) => s.pid(),
            _ => unreachable!(),
        }
    }

    /// Runs an lvm command (`vgcreate`, `lvchange`, ...) on this host.
    pub fn lvm(&self, args: &[&str]) -> Ran {
        let mut cmd = Command::new("nsenter");
        cmd.args(&self.ns.via()[1..])
            .args(args)
            .env("LVM_SYSTEM_DIR", self.dir.join("lvm"))
            .env("LVM_SUPPRESS_FD_WARNINGS", "1");
        run_limited(
            &mut cmd,
            format!("{}: {}", self.label, args.join(" ")),
            LVM_LIMIT,
        )
    }

    /// `sanlock client ARGS` (the real client, against either daemon).
    pub fn client(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(sanlock());
        cmd.arg("client")
            .args(args)
            .env("SANLOCK_RUN_DIR", self.run_dir());
        run_limited(
            &mut cmd,
            format!("{}: sanlock client {}", self.label, args.join(" ")),
            Duration::from_secs(60),
        )
        .expect_ok()
        .stdout
    }

    /// The lines of `lvmlockctl --info` about `vg` (`VG`, `LS`, `LK ...`).
    pub fn lock_info(&self, vg: &str) -> Vec<String> {
        let info = self.lvm(&["lvmlockctl", "--info"]).expect_ok().stdout;
        let mut out = Vec::new();
        let mut in_vg = false;
        for l in info.lines() {
            if l.starts_with("VG ") {
                in_vg = l.split_whitespace().nth(1) == Some(vg);
            }
            if in_vg && !l.is_empty() {
                out.push(l.to_string());
            }
        }
        out
    }

    /// Makes `/dev/mapper/VG-lvmlock` in this host's namespace.
    pub fn add_lvmlock(&self, vg: &str, disk: &SharedDisk) {
        assert!(!vg.contains('-'), "device-mapper would mangle {vg}");
        self.ns
            .add_dev(&format!("mapper/{vg}-lvmlock"), &disk.lvmlock.dev);
    }

    /// `vgcreate --shared VG PV` on `disk`, then checks that lvm put the
    /// lvmlock LV where `disk.lvmlock` looks (the first extents of the PV).
    pub fn vgcreate(&self, vg: &str, disk: &SharedDisk) -> Ran {
        let ran = self
            .lvm(&[
                "vgcreate",
                "--shared",
                "--dataalignment",
                "1m",
                vg,
                &disk.pv.dev,
            ])
            .expect_ok();
        let pe_start = self
            .lvm(&[
                "pvs",
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "pe_start",
                &disk.pv.dev,
            ])
            .expect_ok();
        let lv = self
            .lvm(&[
                "lvs",
                "-a",
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "lv_size,devices",
                &format!("{vg}/lvmlock"),
            ])
            .expect_ok();
        let (at, size) = disk.lvmlock_at;
        assert_eq!(pe_start.stdout.trim(), at.to_string(), "{pe_start}");
        let f: Vec<&str> = lv.stdout.split_whitespace().collect();
        assert_eq!(
            f,
            [size.to_string(), format!("{}(0)", disk.pv.dev)],
            "the lvmlock LV is not where the test's loop device looks: {lv}"
        );
        ran
    }

    /// Kills the lock daemon with SIGKILL, as a crash.
    pub fn kill_daemon(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.daemon_pid());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    }

    /// The last lines of this host's logs, for a failing test's output.
    fn log_tails(&self) -> String {
        let tail = |p: PathBuf| {
            let s = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = s.lines().collect();
            format!(
                "--- {} (last 60 lines)\n{}\n",
                p.display(),
                lines[lines.len().saturating_sub(60)..].join("\n")
            )
        };
        let daemon_log = match self.manager {
            Manager::Hactl => "daemon.stderr",
            Manager::Sanlock => "daemon.log",
        };
        tail(self.dir.join("lvmlockd.log")) + &tail(self.run_dir().join(daemon_log))
    }
}

impl Drop for LvmHost {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("=== {}\n{}", self.label, self.log_tails());
        }
        let _ = self.lvmlockd.kill();
        let _ = self.lvmlockd.wait();
    }
}
