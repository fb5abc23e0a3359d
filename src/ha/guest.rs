//! Tiny real guests for the libvirt tests, `hactl demo --libvirt` and the
//! failover bench: Debian's cloud kernel and an initramfs assembled here at
//! run time, whose init runs `hactl ha demo-vm /dev/vda`, so the guest
//! writes the same checksummed records as the stand-in VM (its host id
//! from the kernel command line, `hactl.host_id=N`) to its virtio disk,
//! and `hactl ha check-disks` proves from the disk images alone that no
//! guest ever ran on two hosts at once.
//!
//! Nothing is installed on the machine: the kernel package is fetched with
//! `apt-get download` and unpacked with `dpkg-deb -x` into a cache
//! directory; busybox comes from Debian's `busybox-static`; hactl is this
//! very binary (stripped when `strip` exists) with the shared libraries
//! `ldd` names.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The kernel package's meta name: Debian's cloud flavour boots fastest
/// under emulation (fewer drivers to probe). `HACTL_GUEST_KERNEL_PKG` picks
/// another (e.g. `linux-image-amd64`).
pub const KERNEL_META_PKG: &str = "linux-image-cloud-amd64";
pub const KERNEL_PKG_ENV: &str = "HACTL_GUEST_KERNEL_PKG";
/// `kvm` or `tcg` forces the accelerator; unset: [`choose_accel`] decides.
pub const ACCEL_ENV: &str = "HACTL_GUEST_ACCEL";

/// Guest memory: the kernel, the initramfs (~17 MiB, held twice while the
/// kernel unpacks it: 96 MiB ran out there) and room. Untouched guest
/// memory costs the host nothing.
pub const MEMORY_MIB: u32 = 160;
/// Each guest's disk: at 10 records a second, 4 MiB last about 2 hours.
pub const DISK_BYTES: u64 = 4 << 20;

/// The modules the guest loads, in dependency order (virtio disk, ACPI
/// power button for a graceful shutdown, virtio-rng for its run id).
const MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "drivers/block/virtio_blk",
    "drivers/char/hw_random/virtio-rng",
    "drivers/input/evdev",
    "drivers/acpi/button",
];

/// A kernel unpacked in the cache: `vmlinuz` and the modules the guest needs.
#[derive(Clone, Debug)]
pub struct GuestKernel {
    pub dir: PathBuf,
    pub vmlinuz: PathBuf,
    pub package: String,
}

/// What a guest boots.
#[derive(Clone, Debug)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub accel: Accel,
    /// Why this accelerator (printed by the demo and the bench).
    pub accel_reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The domain type in libvirt's XML.
    pub fn domain_type(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        }
    }
}

fn run_ok(cmd: &mut Command) -> Result<String, String> {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// An exclusive lock on `dir/.lock` while it lives: tests in parallel
/// share one cache.
struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    fn take(dir: &Path) -> Result<CacheLock, String> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let f = std::fs::File::create(dir.join(".lock"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "lock {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(CacheLock { _file: f })
    }
}

/// The versioned kernel package the meta package points at
/// (`apt-cache depends`), e.g. `linux-image-6.1.0-57-cloud-amd64`.
fn kernel_package() -> Result<String, String> {
    if let Ok(p) = std::env::var(KERNEL_PKG_ENV)
        && !p.is_empty()
    {
        let out = run_ok(Command::new("apt-cache").args(["depends", &p]))?;
        // A meta package names its versioned one; a versioned one is itself.
        return Ok(out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
            .map_or(p, |v| format!("linux-image-{v}")));
    }
    let out = run_ok(Command::new("apt-cache").args(["depends", KERNEL_META_PKG]))
        .map_err(|e| format!("{e} (is apt-get update done?)"))?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
        .map(|v| format!("linux-image-{v}"))
        .ok_or_else(|| {
            format!(
                "apt-cache knows no kernel package behind {KERNEL_META_PKG} (run apt-get update)"
            )
        })
}

/// Fetches (once) and unpacks Debian's kernel package into `cache`; only
/// `vmlinuz` and the modules the guest loads are kept. A kernel fetched
/// before is used without asking apt again.
pub fn fetch_kernel(cache: &Path) -> Result<GuestKernel, String> {
    let _lock = CacheLock::take(cache)?;
    let ready = |dir: &Path| dir.join("vmlinuz").is_file() && dir.join("modules").is_dir();
    let have: Option<PathBuf> = std::fs::read_dir(cache)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-image-"))
                && ready(p)
        })
        .max();
    let wanted = std::env::var(KERNEL_PKG_ENV).ok().filter(|s| !s.is_empty());
    if let Some(dir) = have.filter(|_| wanted.is_none()) {
        let package = dir.file_name().unwrap().to_string_lossy().into_owned();
        return Ok(GuestKernel {
            vmlinuz: dir.join("vmlinuz"),
            dir,
            package,
        });
    }
    let package = kernel_package()?;
    let dir = cache.join(&package);
    if ready(&dir) {
        return Ok(GuestKernel {
            vmlinuz: dir.join("vmlinuz"),
            dir,
            package,
        });
    }
    let work = cache.join(format!("{package}.tmp"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    run_ok(
        Command::new("apt-get")
            .args(["download", &package])
            .current_dir(&work),
    )
    .map_err(|e| format!("cannot fetch the guest kernel: {e}"))?;
    let deb = std::fs::read_dir(&work)
        .map_err(|e| format!("{}: {e}", work.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download {package} left no .deb"))?;
    let root = work.join("root");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let version = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_string();
    let out = cache.join(format!("{package}.new"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("modules")).map_err(|e| format!("{}: {e}", out.display()))?;
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to)
            .map(drop)
            .map_err(|e| format!("{} in {package}: {e}", from.display()))
    };
    copy(
        &root.join(format!("boot/vmlinuz-{version}")),
        &out.join("vmlinuz"),
    )?;
    for m in MODULES {
        let from = root.join(format!("lib/modules/{version}/kernel/{m}.ko"));
        let name = Path::new(m).file_name().unwrap().to_string_lossy();
        copy(&from, &out.join("modules").join(format!("{name}.ko")))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&out, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(GuestKernel {
        vmlinuz: dir.join("vmlinuz"),
        dir,
        package,
    })
}

/// Whether an ELF file asks for a program interpreter (is dynamic).
fn elf_is_dynamic(bytes: &[u8]) -> bool {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return true;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        // PT_INTERP
        at + 4 <= bytes.len() && u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == 3
    })
}

/// busybox-static's binary.
fn busybox() -> Result<PathBuf, String> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if let Ok(b) = std::fs::read(p) {
            if elf_is_dynamic(&b) {
                return Err(format!(
                    "{p} is linked dynamically: install busybox-static (apt-get install busybox-static)"
                ));
            }
            return Ok(PathBuf::from(p));
        }
    }
    Err("busybox is not installed: apt-get install busybox-static".into())
}

/// The shared libraries (and the loader) `bin` needs, from `ldd`.
fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>, String> {
    let out = run_ok(Command::new("ldd").arg(bin))?;
    let mut libs = Vec::new();
    for l in out.lines() {
        let l = l.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match l.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => l.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// A cpio "newc" archive (what the kernel unpacks as its initramfs).
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Cpio {
        Cpio {
            out: Vec::new(),
            ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry_dev(name, mode, data, (0, 0));
    }

    fn entry_dev(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        let name = name.trim_start_matches('/');
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.ino += 1;
        self.out.extend_from_slice(hdr.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// The guest's /init. `hactl.host_id=N` on the kernel command line is the
/// host that runs it (each host's domain definition carries its own);
/// `hactl.probe=1` only says it booted and powers off (the KVM probe).
fn init_script() -> String {
    let mods: Vec<String> = MODULES
        .iter()
        .map(|m| {
            Path::new(m)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {mods}; do
    insmod /lib/modules/$m.ko || echo "hactl guest: cannot load $m"
done
host=0
probe=0
interval=
for a in $(cat /proc/cmdline); do
    case "$a" in
        hactl.host_id=*) host="${{a#*=}}" ;;
        hactl.probe=1) probe=1 ;;
        hactl.interval_ms=*) interval="${{a#*=}}" ;;
    esac
done
if [ "$probe" = 1 ]; then
    echo "hactl guest: probe booted"
    poweroff -f
fi
# The ACPI power button (virsh shutdown) powers the guest off.
acpid -c /etc/acpi -l /dev/null
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
echo "hactl guest: host $host, writing records to /dev/vda"
[ -n "$interval" ] && export HACTL_HA_DEMO_VM_INTERVAL_MS="$interval"
HACTL_HA_HOST_ID="$host" /bin/hactl ha demo-vm /dev/vda
echo "hactl guest: demo-vm stopped ($?); powering off"
poweroff -f
"#,
        mods = mods.join(" ")
    )
}

/// Builds the initramfs at `out` from `kernel`'s modules, busybox-static
/// and the `hactl` binary (stripped into `scratch` when `strip` exists).
pub fn build_initrd(
    kernel: &GuestKernel,
    hactl: &Path,
    scratch: &Path,
    out: &Path,
) -> Result<(), String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut c = Cpio::new();
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc",
        "etc/acpi",
        "etc/acpi/PWRF",
        "lib",
        "lib/modules",
        "lib64",
        "lib/x86_64-linux-gnu",
        "usr",
        "usr/lib",
    ] {
        c.dir(d);
    }
    c.file("init", 0o755, init_script().as_bytes());
    c.file(
        "etc/acpi/PWRF/00000080",
        0o755,
        b"#!/bin/busybox sh\necho 'hactl guest: power button: powering off'\n/bin/busybox poweroff -f\n",
    );
    c.file("bin/busybox", 0o755, &read(&busybox()?)?);
    // The kernel's console must exist before devtmpfs is mounted.
    c.entry_dev("dev/console", 0o020600, &[], (5, 1));
    // A stripped copy: the debug build is ~70 MB, the guest has 160 MiB.
    std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let stripped = scratch.join("hactl.stripped");
    let bin = match Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(hactl)
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => stripped,
        _ => hactl.to_path_buf(),
    };
    c.file("bin/hactl", 0o755, &read(&bin)?);
    for lib in shared_libs(hactl)? {
        let name = lib.to_string_lossy().into_owned();
        // Resolve symlinks (ld-linux is one): the guest gets the file.
        let real = std::fs::canonicalize(&lib).unwrap_or(lib.clone());
        c.file(&name, 0o755, &read(&real)?);
    }
    // Debian's /lib and /lib64 are /usr/lib... on usrmerged hosts: the
    // names ldd printed are what the loader looks up, they are in place.
    let mods = std::fs::read_dir(kernel.dir.join("modules"))
        .map_err(|e| format!("{}: {e}", kernel.dir.display()))?;
    for m in mods.filter_map(Result::ok) {
        let name = m.file_name().to_string_lossy().into_owned();
        c.file(&format!("lib/modules/{name}"), 0o644, &read(&m.path())?);
    }
    c.symlink("sbin", "bin");
    let bytes = c.finish();
    let tmp = out.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(&bytes)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))
}

/// The kernel command line every guest boots with: the serial console,
/// no waiting for things a tiny guest does not have, and the ACPI PM timer
/// as the clock: under emulation the TSC's rate is calibrated at boot and
/// comes out wrong on a busy machine (the guest clock drifts by seconds),
/// while the emulated PM timer follows the host's clock (the records'
/// times compare across guests and with the host's within ~0.1 s).
pub fn cmdline(host_id: u64) -> String {
    format!(
        "console=ttyS0 quiet panic=-1 mitigations=off nokaslr no_timer_check clocksource=acpi_pm hactl.host_id={host_id}"
    )
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// How long the KVM probe may take: a Linux guest boots in ~1 s under KVM
/// on real hardware; nested virtualisation without hardware paging takes
/// minutes (measured on this project's test machines).
pub const KVM_PROBE_LIMIT: Duration = Duration::from_secs(30);

/// KVM where it boots the guest quickly, else TCG (emulation). The probe
/// boots the guest once under KVM with `hactl.probe=1`; its answer is kept
/// in `cache` for this boot of the machine. `HACTL_GUEST_ACCEL` forces one.
pub fn choose_accel(cache: &Path, kernel: &Path, initrd: &Path) -> (Accel, String) {
    match std::env::var(ACCEL_ENV).as_deref() {
        Ok("kvm") => return (Accel::Kvm, format!("{ACCEL_ENV}=kvm")),
        Ok("tcg") => return (Accel::Tcg, format!("{ACCEL_ENV}=tcg")),
        _ => {}
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return (Accel::Tcg, "no usable /dev/kvm: TCG (emulation)".into());
    }
    let _lock = CacheLock::take(cache).ok();
    let memo = cache.join(format!("accel-{}", boot_id()));
    if let Ok(t) = std::fs::read_to_string(&memo)
        && let Some((a, why)) = t.split_once('\n')
    {
        let accel = if a == "kvm" { Accel::Kvm } else { Accel::Tcg };
        return (accel, why.trim().to_string());
    }
    let (accel, why) = probe_kvm(cache, kernel, initrd);
    let _ = std::fs::write(
        &memo,
        format!(
            "{}\n{why}\n",
            if accel == Accel::Kvm { "kvm" } else { "tcg" }
        ),
    );
    (accel, why)
}

fn probe_kvm(cache: &Path, kernel: &Path, initrd: &Path) -> (Accel, String) {
    let log = cache.join("kvm-probe.log");
    let _ = std::fs::remove_file(&log);
    let t0 = Instant::now();
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-m", &MEMORY_MIB.to_string()])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &format!("{} hactl.probe=1", cmdline(0))])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (Accel::Tcg, format!("cannot run qemu-system-x86_64: {e}")),
    };
    loop {
        let booted = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("probe booted");
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return if booted {
                    (
                        Accel::Kvm,
                        format!(
                            "KVM: the guest boots in {:.1} s",
                            t0.elapsed().as_secs_f64()
                        ),
                    )
                } else {
                    (
                        Accel::Tcg,
                        format!(
                            "KVM does not boot the guest here ({}): TCG (emulation)",
                            err.lines().last().unwrap_or("qemu exited").trim()
                        ),
                    )
                };
            }
            Ok(None) => {}
        }
        if t0.elapsed() > KVM_PROBE_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return (
                Accel::Tcg,
                format!(
                    "KVM did not boot the guest within {} s (nested virtualisation without hardware paging?): TCG (emulation)",
                    KVM_PROBE_LIMIT.as_secs()
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl GuestImage {
    /// The kernel from `cache` (fetched if needed), an initramfs in `dir`
    /// around `hactl` (rebuilt when `hactl` is newer than it), and the
    /// accelerator to run them with.
    pub fn prepare(cache: &Path, hactl: &Path, dir: &Path) -> Result<GuestImage, String> {
        let k = fetch_kernel(cache)?;
        let _lock = CacheLock::take(dir)?;
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd.img");
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let stale = match (
            mtime(&initrd),
            mtime(hactl),
            mtime(&k.vmlinuz),
            mtime(&kernel),
        ) {
            (Some(i), Some(h), Some(kv), Some(kd)) => i < h || kd < kv,
            _ => true,
        };
        if stale {
            std::fs::copy(&k.vmlinuz, &kernel).map_err(|e| format!("{}: {e}", kernel.display()))?;
            let scratch = dir.join("build");
            build_initrd(&k, hactl, &scratch, &initrd)?;
            let _ = std::fs::remove_dir_all(&scratch);
        }
        let (accel, accel_reason) = choose_accel(cache, &kernel, &initrd);
        Ok(GuestImage {
            kernel,
            initrd,
            accel,
            accel_reason,
        })
    }
}

/// A domain's stable UUID from its name (libvirt refuses to redefine a
/// domain under a new UUID, and every host defines the same VM).
pub fn domain_uuid(name: &str) -> String {
    let mut b = [0u8; 16];
    for (k, chunk) in b.chunks_mut(4).enumerate() {
        let v = crate::ondisk::sanlock_crc32c(format!("hactl-domain-{k}-{name}").as_bytes());
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// One guest as a libvirt domain.
pub struct DomainSpec<'a> {
    pub name: &'a str,
    pub image: &'a GuestImage,
    pub host_id: u64,
    /// A disk image file, or a block device (`/dev/...`) over one.
    pub disk: &'a Path,
    /// The serial console goes to this file.
    pub console: &'a Path,
    /// `(lockspace, key, path, offset)` of its `<lease>`; None: none (the
    /// HA agent writes it from the xleases volume).
    pub lease: Option<(&'a str, &'a str, &'a Path, u64)>,
    /// Extra kernel command line words.
    pub extra_cmdline: &'a str,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// The domain XML: `<features><acpi/>` because qemu 10 rejects the
/// `-no-acpi` libvirt 9 passes without it; `on_lockfailure poweroff`, so
/// libvirt registers its killpath helper with the lease manager and a
/// lost lease destroys the domain; every ending destroys (no reboot on
/// another host's lease).
pub fn domain_xml(d: &DomainSpec) -> String {
    let e = |p: &Path| xml_escape(&p.display().to_string());
    let lease = d.lease.map_or(String::new(), |(ls, key, path, off)| {
        format!(
            "    <lease>\n      <lockspace>{}</lockspace>\n      <key>{}</key>\n      <target path='{}' offset='{off}'/>\n    </lease>\n",
            xml_escape(ls),
            xml_escape(key),
            e(path)
        )
    });
    let cmd = format!("{} {}", cmdline(d.host_id), d.extra_cmdline);
    let (disk_type, disk_attr) = if d.disk.starts_with("/dev/") {
        ("block", "dev")
    } else {
        ("file", "file")
    };
    format!(
        "<domain type='{ty}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmd}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <on_lockfailure>poweroff</on_lockfailure>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='{disk_type}' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source {disk_attr}='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
{lease}    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='none'/>
  </devices>
</domain>
",
        ty = d.image.accel.domain_type(),
        name = xml_escape(d.name),
        uuid = domain_uuid(d.name),
        mem = MEMORY_MIB,
        kernel = e(&d.image.kernel),
        initrd = e(&d.image.initrd),
        cmd = xml_escape(cmd.trim()),
        disk = e(d.disk),
        console = e(d.console),
        disk_type = disk_type,
        disk_attr = disk_attr,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut c = Cpio::new();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let b = c.finish();
        assert!(b.starts_with(b"070701"));
        assert!(b.len().is_multiple_of(4));
        let text = String::from_utf8_lossy(&b);
        assert!(text.contains("init\0"), "{text}");
        assert!(text.contains("TRAILER!!!\0"));
        // mode of "init": regular file 0755.
        let at = text.find("init\0").unwrap();
        let hdr = &text[at - 110..at];
        assert_eq!(&hdr[14..22], "000081ed", "{hdr}");
    }

    #[test]
    fn domain_uuid_is_stable_and_well_formed() {
        let a = domain_uuid("vm1");
        assert_eq!(a, domain_uuid("vm1"));
        assert_ne!(a, domain_uuid("vm2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn elf_interp_is_found() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(elf_is_dynamic(&me));
    }
}
