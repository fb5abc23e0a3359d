//! Lab hosts for the libvirt tests: per host a lease daemon (hactl's or
//! the real sanlock, each in its own run dir), a libvirtd with its own
//! config and state (its own mount namespace, `src/ha/lab.rs`) whose
//! `SANLOCK_RUN_DIR` is that daemon's, and tiny real guests
//! (`src/ha/guest.rs`). Everything a host started is stopped by pid when
//! it is dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hactl::ha::guest::{self, GuestImage};
use hactl::ha::lab::{self, HostNs, LibvirtConf, Libvirtd};

use super::*;

/// Which lease daemon a host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hactl,
    Sanlock,
}

pub enum Daemon {
    Hactl(HactlDaemon),
    Sanlock(SanlockDaemon),
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        match self {
            Daemon::Hactl(d) => d.pid(),
            Daemon::Sanlock(d) => d.pid(),
        }
    }
}

/// The guest image every libvirt test boots: the kernel fetched once into
/// target/tmp/guest-cache, the initramfs around this build's hactl.
pub fn image() -> &'static GuestImage {
    static IMAGE: std::sync::OnceLock<GuestImage> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmp.join("guest-image");
        let img = GuestImage::prepare(&tmp.join("guest-cache"), Path::new(hactl()), &dir)
            .unwrap_or_else(|e| {
                panic!("cannot assemble the test guest (qemu-system-x86, busybox-static, apt-get download of the kernel): {e}")
            });
        lab::make_reachable(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            Path::new("/usr/bin/qemu-system-x86_64").exists(),
            "qemu-system-x86_64 is not installed: these tests run real guests (tools/test.sh installs qemu-system-x86)"
        );
        eprintln!("[guest] {}", img.accel_reason);
        img
    })
}

/// A test directory qemu (user libvirt-qemu) can reach.
pub fn lab_dir() -> tempfile::TempDir {
    let d = workdir();
    lab::make_reachable(d.path()).unwrap_or_else(|e| panic!("{e}"));
    d
}

/// Shared storage: lockspace `LS` (io_timeout as given) in `ids` and an
/// xleases volume with leases `vm1`..`vmN`.
pub struct Storage {
    pub ids: PathBuf,
    pub xleases: PathBuf,
    pub offsets: Vec<u64>,
}

impl Storage {
    pub fn create(dir: &Path, leases: usize, io_timeout: u32) -> Storage {
        let ids = dir.join("ids");
        make_file(&ids, 1 << 20, 0);
        let o = run(
            hactl(),
            &[
                "direct",
                "init",
                "-s",
                &format!("LS:0:{}:0", p(&ids)),
                "-o",
                &io_timeout.to_string(),
            ],
        );
        assert_eq!(o.code, 0, "{}{}", o.text(), o.stderr);
        let xleases = dir.join("xleases");
        std::fs::File::create(&xleases)
            .unwrap()
            .set_len((4 + leases as u64) << 20)
            .unwrap();
        let o = run(
            hactl(),
            &["xleases", "format", "-p", p(&xleases), "-s", "LS"],
        );
        assert_eq!(o.code, 0, "{}", o.stderr);
        let offsets = (1..=leases)
            .map(|i| {
                let o = run(
                    hactl(),
                    &["xleases", "add", "-p", p(&xleases), &format!("vm{i}")],
                );
                assert_eq!(o.code, 0, "{}", o.stderr);
                o.text().trim().rsplit(':').next().unwrap().parse().unwrap()
            })
            .collect();
        Storage {
            ids,
            xleases,
            offsets,
        }
    }

    /// `LS:vmN:XLEASES:OFFSET`.
    pub fn lease(&self, n: usize) -> String {
        format!("LS:vm{n}:{}:{}", p(&self.xleases), self.offsets[n - 1])
    }

    /// The leader of lease `vmN` as the real sanlock reads it: (owner_id,
    /// lver, timestamp).
    pub fn leader(&self, n: usize) -> (u64, u64, u64) {
        let t = run(sanlock(), &["direct", "read_leader", "-r", &self.lease(n)]).text();
        let get = |k: &str| -> u64 {
            t.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {t}"))
                .trim()
                .parse()
                .unwrap()
        };
        (get("owner_id "), get("lver "), get("timestamp "))
    }
}

/// One lab host.
pub struct VirtHost {
    pub id: u64,
    pub kind: Kind,
    pub dir: PathBuf,
    /// The daemon's `SANLOCK_RUN_DIR`.
    pub run_dir: PathBuf,
    pub libvirtd: Libvirtd,
    pub daemon: Daemon,
    /// Last: dropping it kills what is left of the host (its qemus).
    pub ns: HostNs,
}

impl VirtHost {
    /// Starts host `id` under `dir/hostN`: its namespace, its daemon of
    /// `kind`, and libvirtd with `conf` (whose sanlock plugin reaches that
    /// daemon).
    pub fn start(dir: &Path, id: u64, kind: Kind, conf: &LibvirtConf) -> VirtHost {
        let hd = dir.join(format!("host{id}"));
        std::fs::create_dir_all(&hd).unwrap();
        lab::make_reachable(&hd).unwrap();
        let ns = HostNs::create(&hd).unwrap_or_else(|e| panic!("{e}"));
        let run_dir = hd.join("run");
        let daemon = match kind {
            Kind::Hactl => Daemon::Hactl(HactlDaemon::start_in(&ns, &run_dir, &[])),
            Kind::Sanlock => Daemon::Sanlock(SanlockDaemon::start_in(&ns, &run_dir, &[])),
        };
        let libvirtd = Libvirtd::start(&ns, conf, &run_dir).unwrap_or_else(|e| panic!("{e}"));
        VirtHost {
            id,
            kind,
            dir: hd,
            run_dir,
            libvirtd,
            daemon,
            ns,
        }
    }

    pub fn env(&self) -> [(&str, &str); 1] {
        [("SANLOCK_RUN_DIR", p(&self.run_dir))]
    }

    /// `sanlock client ARGS` (the real CLI, against either daemon).
    pub fn client(&self, args: &[&str]) -> Out {
        let mut a = vec!["client"];
        a.extend_from_slice(args);
        run_env(sanlock(), &a, &self.env())
    }

    /// Joins lockspace LS as this host (add_lockspace -o io_timeout).
    /// An I/O timeout (-202, a loaded machine) is tried again, as the HA
    /// agent does: the join is set-up here, not what is tested.
    pub fn join(&self, storage: &Storage, io_timeout: u32) {
        let mut tries = 0;
        loop {
            tries += 1;
            let o = self.client(&[
                "add_lockspace",
                "-s",
                &format!("LS:{}:{}:0", self.id, p(&storage.ids)),
                "-o",
                &io_timeout.to_string(),
            ]);
            if tries < 4 && o.text().contains("done -202") {
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
            assert!(o.text().contains("done 0"), "{}{}", o.text(), o.stderr);
            return;
        }
    }

    pub fn virsh(&self, args: &[&str]) -> Out {
        let o = self.ns.virsh(args);
        Out {
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            code: o.status.code().unwrap_or(-1),
        }
    }

    /// Defines domain `name` from `xml` (written to the host's directory).
    pub fn define(&self, name: &str, xml: &str) {
        let f = self.dir.join(format!("{name}.xml"));
        std::fs::write(&f, xml).unwrap();
        let o = self.virsh(&["define", p(&f)]);
        assert_eq!(o.code, 0, "virsh define {name}: {}", o.stderr);
    }

    /// The XML of a tiny guest `name` on this host, its disk `disk`, with
    /// the `<lease>` of `lease` (lockspace, key, path, offset).
    pub fn guest_xml(
        &self,
        name: &str,
        disk: &Path,
        lease: Option<(&str, &str, &Path, u64)>,
    ) -> String {
        if !disk.exists() {
            std::fs::File::create(disk)
                .unwrap()
                .set_len(guest::DISK_BYTES)
                .unwrap();
        }
        let console = self.dir.join(format!("{name}.console"));
        guest::domain_xml(&guest::DomainSpec {
            name,
            image: image(),
            host_id: self.id,
            disk,
            console: &console,
            lease,
            extra_cmdline: "",
        })
    }

    /// The pid `client status` names for domain `name` (its qemu).
    pub fn qemu_pid(&self, name: &str) -> Option<i32> {
        let t = self.client(&["status"]).text();
        t.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == "p" && f[2] == name)
                .then(|| f[1].parse().ok())
                .flatten()
        })
    }

    /// The `r` lines of `client status`.
    pub fn resources(&self) -> Vec<String> {
        self.client(&["status"])
            .text()
            .lines()
            .filter(|l| l.starts_with("r "))
            .map(str::to_string)
            .collect()
    }

    pub fn domstate(&self, name: &str) -> String {
        lab::domstate(&self.ns, name).unwrap_or_else(|e| format!("error: {e}"))
    }

    pub fn console(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.console"))).unwrap_or_default()
    }
}

/// Waits for the guest on `disk` to write records as host `host_id`.
pub fn wait_for_guest(disk: &Path, host_id: u64, limit: Duration, console: impl Fn() -> String) {
    let t0 = Instant::now();
    loop {
        if hactl::ha::demo_vm::last_record(disk).is_some_and(|r| r.host_id == host_id) {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "the guest on {} wrote no record as host {host_id} within {limit:?}; its console:\n{}",
            disk.display(),
            console()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
