//! Host health: the `[health]` config section (hosted-engine's penalty
//! table as defaults), the monitors' results, and the pure score computed
//! from them with one reason per penalty. The monitors themselves run in
//! [`super::monitor`]; what the score makes the cluster do (moves,
//! isolation) is decided in [`super::decide`].

use std::fmt::Write as _;

use serde::Deserialize;

use super::whiteboard::MAX_SCORE;

/// What an isolated host does with its VMs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationPolicy {
    /// Keep running them (hosted-engine's and the default): an isolated
    /// host may still serve its VMs' users on networks we do not check.
    #[default]
    Keep,
    /// Stop them so that the other hosts restart them.
    Stop,
}

impl IsolationPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationPolicy::Keep => "keep",
            IsolationPolicy::Stop => "stop",
        }
    }
}

/// `[health]`: weights, thresholds, monitors. Every field is in the
/// config digest: hosts that weigh health differently would each think
/// another host better and bounce VMs between them (hosted-engine's
/// agent.conf: "must be the same for all hosts").
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// The score of a healthy host (at most 3400, the whiteboard's scale).
    pub base_score: u32,
    /// All gateways unreachable (a share of it per unreachable one).
    pub gateway_penalty: u32,
    /// The config file on disk differs from the one this agent runs.
    pub config_penalty: u32,
    /// A configured interface or bridge is down.
    pub bridge_penalty: u32,
    /// Less than `free_memory_min_mb` available.
    pub free_memory_penalty: u32,
    pub free_memory_min_mb: u64,
    /// Load per CPU between `cpu_load_min` and `cpu_load_max` costs up to
    /// this much, in proportion.
    pub cpu_load_penalty: u32,
    pub cpu_load_min: f64,
    pub cpu_load_max: f64,
    /// Our own delta lease not renewed for more than 4 × io_timeout
    /// (renewals are due every 2 × io_timeout).
    pub lease_penalty: u32,
    /// Runner "libvirt" VMs configured and libvirtd not answering.
    pub libvirt_penalty: u32,
    /// A LIVE host this much below the best LIVE host with room gives up
    /// its VMs (hosted-engine: 800).
    pub move_margin: u32,
    /// Seconds a host must stay that much worse before its first VM
    /// moves, and between two moves: scores that flap move nothing.
    pub hold_down: u64,
    /// Cluster-wide isolation policy; a VM's `isolation` overrides it.
    pub isolation: IsolationPolicy,
    /// Seconds every network check must keep failing (while our storage
    /// renews) before the isolation policy applies.
    pub isolation_after: u64,
    pub gateway: GatewayMonitor,
    pub links: LinkMonitor,
    pub memory: SimpleMonitor,
    pub cpu: SimpleMonitor,
    pub libvirt: TimedMonitor,
}

/// Gateway reachability: each address `IP` (ICMP echo) or `IP:PORT` (TCP
/// connect; a refused connection is an answer, so reachable).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayMonitor {
    pub addresses: Vec<String>,
    pub interval: u64,
    pub timeout: u64,
}

/// Link state of interfaces or bridges (up and carrier).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkMonitor {
    pub interfaces: Vec<String>,
    pub interval: u64,
}

/// Memory and CPU: a read of /proc every `interval` seconds.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimpleMonitor {
    pub interval: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimedMonitor {
    pub interval: u64,
    pub timeout: u64,
}

impl Default for GatewayMonitor {
    fn default() -> Self {
        GatewayMonitor {
            addresses: Vec::new(),
            interval: 5,
            timeout: 2,
        }
    }
}

impl Default for LinkMonitor {
    fn default() -> Self {
        LinkMonitor {
            interfaces: Vec::new(),
            interval: 5,
        }
    }
}

impl Default for SimpleMonitor {
    fn default() -> Self {
        SimpleMonitor { interval: 10 }
    }
}

impl Default for TimedMonitor {
    fn default() -> Self {
        TimedMonitor {
            interval: 10,
            timeout: 5,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            base_score: MAX_SCORE,
            gateway_penalty: 1600,
            config_penalty: 1000,
            bridge_penalty: 600,
            free_memory_penalty: 400,
            free_memory_min_mb: 4096,
            cpu_load_penalty: 1000,
            cpu_load_min: 0.4,
            cpu_load_max: 0.9,
            lease_penalty: 1000,
            libvirt_penalty: 1000,
            move_margin: 800,
            hold_down: 60,
            isolation: IsolationPolicy::Keep,
            isolation_after: 30,
            gateway: GatewayMonitor::default(),
            links: LinkMonitor::default(),
            memory: SimpleMonitor::default(),
            cpu: SimpleMonitor::default(),
            libvirt: TimedMonitor::default(),
        }
    }
}

// validate() refuses NaN, so equality is total.
impl Eq for HealthConfig {}

/// Bounds of every interval and timeout, seconds.
const MAX_SECS: u64 = 3600;

impl HealthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.base_score > MAX_SCORE {
            return Err(format!(
                "health.base_score {} is above {MAX_SCORE} (the whiteboard's scale)",
                self.base_score
            ));
        }
        for (k, v) in [
            ("gateway_penalty", self.gateway_penalty),
            ("config_penalty", self.config_penalty),
            ("bridge_penalty", self.bridge_penalty),
            ("free_memory_penalty", self.free_memory_penalty),
            ("cpu_load_penalty", self.cpu_load_penalty),
            ("lease_penalty", self.lease_penalty),
            ("libvirt_penalty", self.libvirt_penalty),
            ("move_margin", self.move_margin),
        ] {
            if v > MAX_SCORE {
                return Err(format!("health.{k} {v} is above {MAX_SCORE}"));
            }
        }
        if self.move_margin == 0 {
            return Err(
                "health.move_margin must be at least 1 (0 would bounce VMs between equal hosts)"
                    .into(),
            );
        }
        let (lo, hi) = (self.cpu_load_min, self.cpu_load_max);
        if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi && hi <= 1000.0) {
            return Err(format!(
                "health.cpu_load_min {lo} and cpu_load_max {hi}: need 0 <= min <= max <= 1000"
            ));
        }
        for (k, v) in [
            ("hold_down", self.hold_down),
            ("isolation_after", self.isolation_after),
        ] {
            if v > MAX_SECS {
                return Err(format!("health.{k} {v} s is above {MAX_SECS} s"));
            }
        }
        for (k, v, min) in [
            ("gateway.interval", self.gateway.interval, 1),
            ("gateway.timeout", self.gateway.timeout, 1),
            ("links.interval", self.links.interval, 1),
            ("memory.interval", self.memory.interval, 1),
            ("cpu.interval", self.cpu.interval, 1),
            ("libvirt.interval", self.libvirt.interval, 1),
            ("libvirt.timeout", self.libvirt.timeout, 1),
        ] {
            if !(min..=MAX_SECS).contains(&v) {
                return Err(format!(
                    "health.{k} {v} must be in {min}..={MAX_SECS} seconds"
                ));
            }
        }
        if self.gateway.addresses.len() > 16 || self.links.interfaces.len() > 16 {
            return Err("health: at most 16 gateway addresses and 16 interfaces".into());
        }
        for a in &self.gateway.addresses {
            parse_target(a).map_err(|e| format!("health.gateway.addresses: {e}"))?;
        }
        for i in &self.links.interfaces {
            // IFNAMSIZ is 16 with its NUL.
            if i.is_empty() || i.len() > 15 || i.contains('/') || i.chars().any(char::is_control) {
                return Err(format!(
                    "health.links.interfaces: {i:?} is not an interface name (1..=15 bytes, no '/')"
                ));
            }
        }
        Ok(())
    }

    /// The canonical text of every setting, for the config digest.
    pub fn digest_text(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "health base={} gw={} cfg={} br={} mem={}/{} cpu={}/{}/{} lease={} libvirt={} margin={} hold={} iso={}/{}",
            self.base_score,
            self.gateway_penalty,
            self.config_penalty,
            self.bridge_penalty,
            self.free_memory_penalty,
            self.free_memory_min_mb,
            self.cpu_load_penalty,
            self.cpu_load_min,
            self.cpu_load_max,
            self.lease_penalty,
            self.libvirt_penalty,
            self.move_margin,
            self.hold_down,
            self.isolation.as_str(),
            self.isolation_after,
        );
        let _ = write!(
            s,
            " gw=[{}]/{}/{} links=[{}]/{} memi={} cpui={} lv={}/{}",
            self.gateway.addresses.join(","),
            self.gateway.interval,
            self.gateway.timeout,
            self.links.interfaces.join(","),
            self.links.interval,
            self.memory.interval,
            self.cpu.interval,
            self.libvirt.interval,
            self.libvirt.timeout,
        );
        s
    }

    /// Whether any network check is configured (isolation needs one).
    pub fn has_network_checks(&self) -> bool {
        !self.gateway.addresses.is_empty() || !self.links.interfaces.is_empty()
    }
}

/// A gateway address: ICMP echo to an IP, or TCP connect to IP:PORT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Icmp(std::net::Ipv4Addr),
    Tcp(std::net::SocketAddr),
}

pub fn parse_target(s: &str) -> Result<Target, String> {
    if let Ok(ip) = s.parse::<std::net::Ipv4Addr>() {
        return Ok(Target::Icmp(ip));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("{s:?}: port 0"));
        }
        return Ok(Target::Tcp(sa));
    }
    Err(format!(
        "{s:?} is neither an IPv4 address (ICMP echo) nor IP:PORT (TCP connect)"
    ))
}

/// One check's last result.
#[derive(Clone, Debug, PartialEq)]
pub enum Check<T> {
    /// Not run yet (no penalty: nothing is known).
    Unknown,
    Ok(T),
    /// Failed, timed out or hung, with the reason.
    Failed(String),
}

/// What the monitors found, as of this cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct Readings {
    /// Per gateway address: reachable or why not.
    pub gateways: Vec<(String, Check<()>)>,
    /// Per interface: up or why not.
    pub links: Vec<(String, Check<()>)>,
    /// MemAvailable, MiB.
    pub free_memory_mb: Check<u64>,
    /// 1-minute load average per CPU.
    pub cpu_load: Check<f64>,
    /// Our own delta lease: seconds since its last renewal, and io_timeout.
    pub lease: Check<(u64, u64)>,
    /// libvirtd answering (only with runner "libvirt" VMs).
    pub libvirt: Option<Check<()>>,
    /// The config file on disk is the one we run (Failed: why not).
    pub config: Check<()>,
}

impl Default for Readings {
    fn default() -> Self {
        Readings {
            gateways: Vec::new(),
            links: Vec::new(),
            free_memory_mb: Check::Unknown,
            cpu_load: Check::Unknown,
            lease: Check::Unknown,
            libvirt: None,
            config: Check::Unknown,
        }
    }
}

impl Readings {
    /// Network checks only, each up or "unreachable" (the simulation's and
    /// the decide() tests' monitors).
    pub fn networks(gateways: &[(&str, bool)], links: &[(&str, bool)]) -> Readings {
        let check = |&(name, ok): &(&str, bool)| {
            let c = if ok {
                Check::Ok(())
            } else {
                Check::Failed("unreachable".into())
            };
            (name.to_string(), c)
        };
        Readings {
            gateways: gateways.iter().map(check).collect(),
            links: links.iter().map(check).collect(),
            ..Default::default()
        }
    }
}

/// The kinds of penalty, in the order they are shown; each has a bit in
/// the whiteboard's health record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyKind {
    Gateway,
    Config,
    Bridge,
    FreeMemory,
    CpuLoad,
    Lease,
    Libvirt,
}

pub const PENALTY_KINDS: [PenaltyKind; 7] = [
    PenaltyKind::Gateway,
    PenaltyKind::Config,
    PenaltyKind::Bridge,
    PenaltyKind::FreeMemory,
    PenaltyKind::CpuLoad,
    PenaltyKind::Lease,
    PenaltyKind::Libvirt,
];

impl PenaltyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PenaltyKind::Gateway => "gateway",
            PenaltyKind::Config => "config",
            PenaltyKind::Bridge => "bridge",
            PenaltyKind::FreeMemory => "free_memory",
            PenaltyKind::CpuLoad => "cpu_load",
            PenaltyKind::Lease => "lease",
            PenaltyKind::Libvirt => "libvirt",
        }
    }
    pub fn index(self) -> usize {
        PENALTY_KINDS.iter().position(|&k| k == self).unwrap_or(0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Penalty {
    pub kind: PenaltyKind,
    pub points: u32,
    pub reason: String,
}

/// The health score and its penalties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthScore {
    pub score: u32,
    pub penalties: Vec<Penalty>,
    /// Every configured network check failed (gateways and links).
    pub network_lost: bool,
}

impl HealthScore {
    /// A perfect host (no monitors, nothing known): the base score.
    pub fn base(cfg: &HealthConfig) -> Self {
        HealthScore {
            score: cfg.base_score,
            ..Default::default()
        }
    }

    /// Points per kind, as the whiteboard stores them.
    pub fn points(&self) -> [u16; PENALTY_KINDS.len()] {
        let mut p = [0u16; PENALTY_KINDS.len()];
        for x in &self.penalties {
            p[x.kind.index()] = x.points.min(u16::MAX as u32) as u16;
        }
        p
    }

    /// "gateway -1600 (...); cpu_load -200 (...)", or "healthy".
    pub fn summary(&self) -> String {
        if self.penalties.is_empty() {
            return "healthy".into();
        }
        self.penalties
            .iter()
            .map(|p| format!("{} -{} ({})", p.kind.as_str(), p.points, p.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn failed<T>(checks: &[(String, Check<T>)]) -> Vec<(&str, &str)> {
    checks
        .iter()
        .filter_map(|(n, c)| match c {
            Check::Failed(why) => Some((n.as_str(), why.as_str())),
            _ => None,
        })
        .collect()
}

/// The host's health score: `base_score` less each penalty (hosted-engine's
/// rules: the gateway's in proportion to the addresses lost, the CPU's in
/// proportion between `cpu_load_min` and `cpu_load_max`).
pub fn score(cfg: &HealthConfig, r: &Readings) -> HealthScore {
    let mut pen = Vec::new();
    let mut add = |kind, points: u32, reason: String| {
        if points > 0 {
            pen.push(Penalty {
                kind,
                points,
                reason,
            });
        }
    };
    let gw_failed = failed(&r.gateways);
    if !r.gateways.is_empty() && !gw_failed.is_empty() {
        let points =
            (cfg.gateway_penalty as u64 * gw_failed.len() as u64 / r.gateways.len() as u64) as u32;
        let list: Vec<String> = gw_failed.iter().map(|(n, w)| format!("{n}: {w}")).collect();
        add(
            PenaltyKind::Gateway,
            points,
            format!(
                "{} of {} gateway(s) unreachable: {}",
                gw_failed.len(),
                r.gateways.len(),
                list.join(", ")
            ),
        );
    }
    if let Check::Failed(why) = &r.config {
        add(PenaltyKind::Config, cfg.config_penalty, why.clone());
    }
    let links_failed = failed(&r.links);
    if !links_failed.is_empty() {
        let list: Vec<String> = links_failed
            .iter()
            .map(|(n, w)| format!("{n} {w}"))
            .collect();
        add(PenaltyKind::Bridge, cfg.bridge_penalty, list.join(", "));
    }
    if let Check::Ok(mb) = r.free_memory_mb
        && mb < cfg.free_memory_min_mb
    {
        add(
            PenaltyKind::FreeMemory,
            cfg.free_memory_penalty,
            format!("{mb} MiB available < {} MiB", cfg.free_memory_min_mb),
        );
    }
    if let Check::Ok(load) = r.cpu_load {
        let (lo, hi) = (cfg.cpu_load_min, cfg.cpu_load_max);
        let full = cfg.cpu_load_penalty as f64;
        let points = if hi <= lo {
            if load < lo { 0.0 } else { full }
        } else {
            ((load - lo) / (hi - lo) * full).clamp(0.0, full)
        };
        add(
            PenaltyKind::CpuLoad,
            points as u32,
            format!("load {load:.2} per CPU (penalty from {lo} to {hi})"),
        );
    }
    match &r.lease {
        Check::Ok((age, io_timeout)) if *age > 4 * io_timeout => add(
            PenaltyKind::Lease,
            cfg.lease_penalty,
            format!(
                "our delta lease last renewed {age} s ago (due every {} s, io_timeout {io_timeout})",
                2 * io_timeout
            ),
        ),
        Check::Failed(why) => add(PenaltyKind::Lease, cfg.lease_penalty, why.clone()),
        _ => {}
    }
    if let Some(Check::Failed(why)) = &r.libvirt {
        add(PenaltyKind::Libvirt, cfg.libvirt_penalty, why.clone());
    }
    let total: u32 = pen.iter().map(|p| p.points).sum();
    let checks = r.gateways.len() + r.links.len();
    HealthScore {
        score: cfg.base_score.saturating_sub(total),
        penalties: pen,
        network_lost: checks > 0 && gw_failed.len() + links_failed.len() == checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(cfg: &HealthConfig) -> Readings {
        Readings {
            gateways: cfg
                .gateway
                .addresses
                .iter()
                .map(|a| (a.clone(), Check::Ok(())))
                .collect(),
            links: vec![("br0".into(), Check::Ok(()))],
            free_memory_mb: Check::Ok(8192),
            cpu_load: Check::Ok(0.1),
            lease: Check::Ok((3, 10)),
            libvirt: Some(Check::Ok(())),
            config: Check::Ok(()),
        }
    }

    #[test]
    fn hosted_engine_table() {
        let mut cfg = HealthConfig::default();
        cfg.gateway.addresses = vec!["10.0.0.1".into(), "10.0.0.2:22".into()];
        let r = healthy(&cfg);
        assert_eq!(score(&cfg, &r).score, 3400);
        let mut g = r.clone();
        g.gateways[0].1 = Check::Failed("timeout".into());
        let s = score(&cfg, &g);
        assert_eq!(s.score, 3400 - 800, "{s:?}");
        assert!(!s.network_lost);
        g.gateways[1].1 = Check::Failed("no route".into());
        assert_eq!(score(&cfg, &g).score, 3400 - 1600);
        g.links[0].1 = Check::Failed("down".into());
        let s = score(&cfg, &g);
        assert_eq!(s.score, 3400 - 1600 - 600);
        assert!(s.network_lost);
        assert!(s.summary().contains("gateway -1600"), "{}", s.summary());
        let mut c = r.clone();
        c.cpu_load = Check::Ok(0.8);
        assert_eq!(score(&cfg, &c).score, 3400 - 800);
        c.cpu_load = Check::Ok(5.0);
        c.free_memory_mb = Check::Ok(100);
        c.config = Check::Failed("changed".into());
        assert_eq!(score(&cfg, &c).score, 3400 - 1000 - 400 - 1000);
        let mut l = r.clone();
        l.lease = Check::Ok((41, 10));
        l.libvirt = Some(Check::Failed("no answer".into()));
        assert_eq!(score(&cfg, &l).score, 3400 - 2000);
        // Nothing known yet: no penalty.
        assert_eq!(score(&cfg, &Readings::default()).score, 3400);
    }

    #[test]
    fn bad_values_are_refused() {
        let ok = HealthConfig::default();
        ok.validate().unwrap();
        let mut c = ok.clone();
        c.base_score = 4000;
        assert!(c.validate().unwrap_err().contains("base_score"));
        let mut c = ok.clone();
        c.cpu_load_min = 0.95;
        assert!(c.validate().unwrap_err().contains("cpu_load_min"));
        let mut c = ok.clone();
        c.gateway.addresses = vec!["gateway".into()];
        assert!(c.validate().unwrap_err().contains("neither"));
        let mut c = ok.clone();
        c.links.interfaces = vec!["a/b".into()];
        assert!(c.validate().unwrap_err().contains("interface"));
        let mut c = ok.clone();
        c.gateway.timeout = 0;
        assert!(c.validate().unwrap_err().contains("gateway.timeout"));
        let mut c = ok;
        c.move_margin = 0;
        assert!(c.validate().unwrap_err().contains("move_margin"));
    }
}
