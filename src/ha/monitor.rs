//! The agent's health monitors: each check in a thread of its own with its
//! interval and timeout, so that a check that hangs (a gateway that drops
//! packets, a libvirtd that does not answer) never stalls the agent's
//! loop. The loop takes [`Monitors::readings`] each cycle: the last result
//! of each check, or a failure when a check has overrun its timeout.
//!
//! Checks: gateway reachability (ICMP echo on a raw socket, or TCP connect
//! to IP:PORT), link state of interfaces or bridges (SIOCGIFFLAGS: up and
//! running, in the agent's own network namespace, which /sys may not show),
//! free memory (/proc/meminfo MemAvailable), CPU load (/proc/loadavg per
//! online CPU), libvirtd answering (`virsh version`), and whether the
//! config file on disk is still the one the agent runs. The lease check
//! needs the daemon's answer the loop already has (see `agent.rs`).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::{Config, RunnerKind};
use super::health::{Check, HealthConfig, Readings, Target, parse_target};

/// The config file is compared with the running one this often.
const CONFIG_INTERVAL: Duration = Duration::from_secs(10);
/// Grace past a check's timeout before it counts as hung.
const HUNG_SLACK: Duration = Duration::from_secs(2);

/// One check's shared state.
struct Slot<T> {
    last: Check<T>,
    /// When the check now under way started (None: idle).
    running_since: Option<Instant>,
}

type Shared<T> = Arc<Mutex<Slot<T>>>;

fn slot<T>() -> Shared<T> {
    Arc::new(Mutex::new(Slot {
        last: Check::Unknown,
        running_since: None,
    }))
}

/// Runs `check` every `interval` in a thread named `name`, forever (the
/// agent's life).
fn spawn<T: Send + 'static>(
    name: &str,
    interval: Duration,
    s: Shared<T>,
    mut check: impl FnMut() -> Check<T> + Send + 'static,
) {
    let _ = std::thread::Builder::new()
        .name(format!("mon-{name}"))
        .spawn(move || {
            loop {
                s.lock().unwrap().running_since = Some(Instant::now());
                let r = check();
                {
                    let mut g = s.lock().unwrap();
                    g.last = r;
                    g.running_since = None;
                }
                std::thread::sleep(interval);
            }
        });
}

/// The last result, or Failed when the check under way overran `limit`.
fn read<T: Clone>(s: &Shared<T>, limit: Duration) -> Check<T> {
    let g = s.lock().unwrap();
    match g.running_since {
        Some(t) if t.elapsed() > limit + HUNG_SLACK => Check::Failed(format!(
            "check hung for {} s (timeout {} s)",
            t.elapsed().as_secs(),
            limit.as_secs()
        )),
        _ => g.last.clone(),
    }
}

/// The running monitors of one agent.
pub struct Monitors {
    gateways: Vec<(String, Shared<()>)>,
    gateway_timeout: Duration,
    links: Vec<(String, Shared<()>)>,
    memory: Shared<u64>,
    cpu: Shared<f64>,
    libvirt: Option<(Shared<()>, Duration)>,
    config: Shared<()>,
}

impl Monitors {
    /// Starts every configured check.
    pub fn start(cfg: &Config, config_path: &Path) -> Monitors {
        let h: &HealthConfig = &cfg.health;
        let secs = Duration::from_secs;
        let gateway_timeout = secs(h.gateway.timeout);
        let gateways = h
            .gateway
            .addresses
            .iter()
            .map(|a| {
                let s = slot();
                let target = parse_target(a).expect("validated");
                spawn(
                    &format!("gw-{a}"),
                    secs(h.gateway.interval),
                    s.clone(),
                    move || reach(target, gateway_timeout),
                );
                (a.clone(), s)
            })
            .collect();
        let links = h
            .links
            .interfaces
            .iter()
            .map(|i| {
                let s = slot();
                let name = i.clone();
                spawn(
                    &format!("link-{i}"),
                    secs(h.links.interval),
                    s.clone(),
                    move || link_up(&name),
                );
                (i.clone(), s)
            })
            .collect();
        let memory = slot();
        spawn("memory", secs(h.memory.interval), memory.clone(), || {
            free_memory_mb()
        });
        let cpu = slot();
        spawn("cpu", secs(h.cpu.interval), cpu.clone(), cpu_load);
        let libvirt = cfg
            .vms
            .iter()
            .any(|v| v.runner == RunnerKind::Libvirt)
            .then(|| {
                let s = slot();
                let uri = cfg
                    .cluster
                    .libvirt_uri
                    .clone()
                    .unwrap_or_else(|| "qemu:///system".into());
                let timeout = secs(h.libvirt.timeout);
                spawn("libvirt", secs(h.libvirt.interval), s.clone(), move || {
                    libvirt_answers(&uri, timeout)
                });
                (s, timeout)
            });
        let config = slot();
        let (path, digest) = (config_path.to_path_buf(), cfg.clone());
        spawn("config", CONFIG_INTERVAL, config.clone(), move || {
            config_current(&path, &digest)
        });
        Monitors {
            gateways,
            gateway_timeout,
            links,
            memory,
            cpu,
            libvirt,
            config,
        }
    }

    /// What the monitors say now (the lease check is the caller's).
    pub fn readings(&self) -> Readings {
        let quick = Duration::from_secs(5);
        Readings {
            gateways: self
                .gateways
                .iter()
                .map(|(a, s)| (a.clone(), read(s, self.gateway_timeout)))
                .collect(),
            links: self
                .links
                .iter()
                .map(|(i, s)| (i.clone(), read(s, quick)))
                .collect(),
            free_memory_mb: read(&self.memory, quick),
            cpu_load: read(&self.cpu, quick),
            lease: Check::Unknown,
            libvirt: self.libvirt.as_ref().map(|(s, t)| read(s, *t)),
            config: read(&self.config, quick),
        }
    }
}

/// Gateway reachability within `timeout`.
pub fn reach(t: Target, timeout: Duration) -> Check<()> {
    match t {
        Target::Tcp(addr) => tcp_reach(addr, timeout),
        Target::Icmp(ip) => match icmp_echo(ip, timeout) {
            Ok(()) => Check::Ok(()),
            Err(e) => Check::Failed(e),
        },
    }
}

fn tcp_reach(addr: SocketAddr, timeout: Duration) -> Check<()> {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => Check::Ok(()),
        // A refusal is the gateway's own answer: it is reachable.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Check::Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Check::Failed(format!(
            "TCP connect to {addr}: no answer within {} s",
            timeout.as_secs()
        )),
        Err(e) => Check::Failed(format!("TCP connect to {addr}: {e}")),
    }
}

fn inet_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One ICMP echo request to `ip` and its reply within `timeout`, on a raw
/// socket (the agent runs as root, as sanlock's daemon does).
pub fn icmp_echo(ip: Ipv4Addr, timeout: Duration) -> Result<(), String> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static SEQ: AtomicU16 = AtomicU16::new(1);
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(format!(
            "cannot open an ICMP socket ({}): give an IP:PORT for a TCP check instead",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a new socket that nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let id = (std::process::id() as u16) ^ 0x4841;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut pkt = [0u8; 24];
    pkt[0] = 8; // echo request
    pkt[4..6].copy_from_slice(&id.to_be_bytes());
    pkt[6..8].copy_from_slice(&seq.to_be_bytes());
    pkt[8..24].copy_from_slice(b"hactl-ha-monitor");
    let ck = inet_checksum(&pkt);
    pkt[2..4].copy_from_slice(&ck.to_be_bytes());
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: pkt and sa are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            raw,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(format!(
            "ICMP echo to {ip}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "ICMP echo to {ip}: no reply within {} s",
                timeout.as_secs()
            ));
        }
        let mut pfd = libc::pollfd {
            fd: raw,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("ICMP echo to {ip}: poll: {e}"));
        }
        if r == 0 {
            continue;
        }
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        let b = &buf[..n as usize];
        // A raw socket gets every ICMP packet with its IP header: ours is
        // an echo reply from `ip` with our id and seq.
        let ihl = ((b[0] & 0x0f) as usize) * 4;
        if b.len() < ihl + 8 || b[12..16] != ip.octets() {
            continue;
        }
        let icmp = &b[ihl..];
        if icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes() {
            return Ok(());
        }
    }
}

/// Whether interface `name` is up with a carrier, in our network namespace.
pub fn link_up(name: &str) -> Check<()> {
    // SAFETY: socket(2) with constant arguments; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Check::Failed(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a new socket that nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills ifr_ifru.ifru_flags of a valid ifreq.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIOCGIFFLAGS,
            &mut ifr,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Check::Failed(if e.raw_os_error() == Some(libc::ENODEV) {
            "no such interface".into()
        } else {
            format!("SIOCGIFFLAGS: {e}")
        });
    }
    // SAFETY: the ioctl filled the flags member.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags } as libc::c_int;
    match (flags & libc::IFF_UP != 0, flags & libc::IFF_RUNNING != 0) {
        (true, true) => Check::Ok(()),
        (false, _) => Check::Failed("down".into()),
        (true, false) => Check::Failed("up, no carrier".into()),
    }
}

fn free_memory_mb() -> Check<u64> {
    let text = match std::fs::read_to_string("/proc/meminfo") {
        Ok(t) => t,
        Err(e) => return Check::Failed(format!("/proc/meminfo: {e}")),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || Check::Failed("/proc/meminfo: no MemAvailable".into()),
            |kb| Check::Ok(kb / 1024),
        )
}

fn cpu_load() -> Check<f64> {
    let text = match std::fs::read_to_string("/proc/loadavg") {
        Ok(t) => t,
        Err(e) => return Check::Failed(format!("/proc/loadavg: {e}")),
    };
    // SAFETY: sysconf has no memory effects.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as f64;
    match text
        .split_whitespace()
        .next()
        .and_then(|x| x.parse::<f64>().ok())
    {
        Some(l) => Check::Ok(l / cpus),
        None => Check::Failed(format!("/proc/loadavg: cannot parse {text:?}")),
    }
}

/// `virsh -c URI version` within `timeout` (killed past it).
fn libvirt_answers(uri: &str, timeout: Duration) -> Check<()> {
    let child = std::process::Command::new("virsh")
        .args(["-c", uri, "version"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Check::Failed(format!("cannot run virsh: {e}")),
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Check::Ok(()),
            Ok(Some(st)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Check::Failed(format!(
                    "libvirtd at {uri} does not answer ({st}: {})",
                    err.trim()
                ));
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Check::Failed(format!(
                    "libvirtd at {uri}: no answer within {} s",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Check::Failed(format!("virsh: {e}")),
        }
    }
}

/// Whether the config file still says what the agent runs (hosted-engine's
/// "config not up to date": the agent must be restarted to take it).
fn config_current(path: &Path, running: &Config) -> Check<()> {
    match Config::from_file(path) {
        Ok(c) if c == *running => Check::Ok(()),
        Ok(_) => Check::Failed(format!(
            "{} changed since the agent started: restart the agent to use it",
            path.display()
        )),
        Err(e) => Check::Failed(format!("{e} (the agent runs the config it started with)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_up_and_a_missing_interface_is_not() {
        assert_eq!(link_up("lo"), Check::Ok(()));
        assert_eq!(
            link_up("hactl-nonexist"),
            Check::Failed("no such interface".into())
        );
    }

    #[test]
    fn tcp_refused_is_reachable_and_icmp_reaches_loopback() {
        // A port nobody listens on: the kernel answers with a reset.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert_eq!(
            tcp_reach(addr, Duration::from_secs(2)),
            Check::Ok(()),
            "refused means the host answered"
        );
        icmp_echo(Ipv4Addr::LOCALHOST, Duration::from_secs(2)).expect("ICMP echo to 127.0.0.1");
    }

    #[test]
    fn proc_readings_parse() {
        assert!(matches!(free_memory_mb(), Check::Ok(mb) if mb > 0));
        assert!(matches!(cpu_load(), Check::Ok(l) if l >= 0.0));
    }

    #[test]
    fn a_libvirtd_that_is_not_there_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!(
            "qemu:///system?socket={}",
            dir.path().join("no-libvirt-sock").display()
        );
        let r = libvirt_answers(&uri, Duration::from_secs(20));
        assert!(
            matches!(&r, Check::Failed(w) if w.contains("does not answer")),
            "{r:?}"
        );
    }

    #[test]
    fn a_hung_check_reads_as_failed() {
        let s: Shared<()> = slot();
        s.lock().unwrap().running_since = Some(Instant::now() - Duration::from_secs(10));
        let r = read(&s, Duration::from_secs(2));
        assert!(
            matches!(&r, Check::Failed(w) if w.contains("hung")),
            "{r:?}"
        );
    }
}
