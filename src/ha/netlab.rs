//! Network namespaces for the health tests and the gateway-loss bench: a
//! gateway namespace with a bridge holding the gateway address, and one
//! namespace per test host joined to it by a veth pair (`eth0` inside the
//! host); [`super::cluster::ClusterOpts::netns`] puts a host's agent in
//! its namespace. Every address lives inside the namespaces; names are
//! unique per process and call; Drop deletes the namespaces (and with
//! them their interfaces).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The gateway's address, the same for every test (each has its own namespaces).
pub const GATEWAY: &str = "10.77.0.1";

pub struct Net {
    pub gw: String,
    /// Per host id (1-based): its namespace's name.
    pub hosts: Vec<String>,
}

/// Runs `ip ARGS` (iproute2; tools/test.sh installs it).
pub fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

impl Net {
    /// The gateway namespace and `n` host namespaces, each host at
    /// 10.77.0.(10+id) behind its `eth0`.
    pub fn new(n: u64) -> Result<Net, String> {
        static K: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "hh{}-{}",
            std::process::id(),
            K.fetch_add(1, Ordering::Relaxed)
        );
        let net = Net {
            gw: format!("{tag}-gw"),
            hosts: (1..=n).map(|h| format!("{tag}-h{h}")).collect(),
        };
        ip(&["netns", "add", &net.gw])?;
        for h in &net.hosts {
            ip(&["netns", "add", h])?;
        }
        let g = net.gw.as_str();
        ip(&["-n", g, "link", "set", "lo", "up"])?;
        ip(&["-n", g, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            g,
            "addr",
            "add",
            &format!("{GATEWAY}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", g, "link", "set", "br0", "up"])?;
        for (k, h) in net.hosts.iter().enumerate() {
            let port = format!("vh{}", k + 1);
            ip(&[
                "-n", g, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", h,
            ])?;
            ip(&["-n", g, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", g, "link", "set", &port, "up"])?;
            let addr = format!("10.77.0.{}/24", 11 + k);
            ip(&["-n", h, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", h, "link", "set", "eth0", "up"])?;
            ip(&["-n", h, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The namespace file host `id`'s agent enters.
    pub fn path(&self, id: u64) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.hosts[(id - 1) as usize])
    }

    /// The gateway side drops host `id` from its bridge: the host's link
    /// stays up, its gateway is unreachable.
    pub fn cut_gateway(&self, id: u64) -> Result<(), String> {
        ip(&[
            "-n",
            &self.gw,
            "link",
            "set",
            &format!("vh{id}"),
            "nomaster",
        ])
    }

    pub fn restore_gateway(&self, id: u64) -> Result<(), String> {
        ip(&[
            "-n",
            &self.gw,
            "link",
            "set",
            &format!("vh{id}"),
            "master",
            "br0",
        ])
    }

    /// Every network of host `id` cut: its `eth0` down.
    pub fn isolate(&self, id: u64) -> Result<(), String> {
        ip(&[
            "-n",
            &self.hosts[(id - 1) as usize],
            "link",
            "set",
            "eth0",
            "down",
        ])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in self.hosts.iter().chain([&self.gw]) {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
