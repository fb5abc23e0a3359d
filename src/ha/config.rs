//! The HA config (TOML), the same file on every host. Pure: parsing and
//! validation only; [`Config::from_file`] is the one read.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ondisk::sanlock_crc32c;

/// Whiteboard bitmaps hold one bit per VM.
pub const MAX_VMS: usize = 1024;
/// sanlock's host_id range.
pub const MAX_HOST_ID: u64 = 2000;
/// sanlock's lockspace and resource names are 48 bytes.
pub const NAME_MAX: usize = 48;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read HA config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("HA config{}: {message}", origin(.path))]
    Parse {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("HA config{}: {message}", origin(.path))]
    Invalid {
        path: Option<PathBuf>,
        message: String,
    },
}

fn origin(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cluster: Cluster,
    #[serde(default, rename = "vm")]
    pub vms: Vec<Vm>,
    /// Fence agents per host (docs/ha-design.md, "Fencing"); None: no fencing.
    #[serde(default)]
    pub fencing: Option<super::fence::FencingConfig>,
    /// Host health: monitors, penalties, moves, isolation (docs/ha-design.md, "Health").
    #[serde(default)]
    pub health: super::health::HealthConfig,
    /// Live migration of runner "libvirt" VMs (docs/ha-design.md, "Live
    /// migration"); None: VMs move by stop-then-start only.
    #[serde(default)]
    pub migration: Option<super::migrate::MigrationConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub lockspace: String,
    pub ids: PathBuf,
    pub xleases: PathBuf,
    pub whiteboard: PathBuf,
    /// Agent cycle, seconds.
    #[serde(default = "default_interval")]
    pub interval: u64,
    /// Seconds a non-chosen host waits before racing for an orphan.
    #[serde(default = "default_grace")]
    pub grace: u64,
    /// HA VMs one host runs at most.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// The local libvirt (runner "libvirt"); default `qemu:///system`.
    #[serde(default)]
    pub libvirt_uri: Option<String>,
}

fn default_interval() -> u64 {
    2
}
fn default_grace() -> u64 {
    10
}
fn default_capacity() -> u32 {
    64
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    #[default]
    Command,
    Libvirt,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    pub name: String,
    /// The xleases lease id; [`Vm::lease_id`] gives the default (the name).
    #[serde(default, rename = "lease_id")]
    pub lease_id_opt: Option<String>,
    /// Higher first.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub preferred_hosts: Vec<u64>,
    #[serde(default)]
    pub runner: RunnerKind,
    /// argv of the VM process (runner "command").
    #[serde(default)]
    pub start: Vec<String>,
    /// argv run to stop it; None: SIGTERM, then SIGKILL after 10 s.
    #[serde(default)]
    pub stop: Option<Vec<String>>,
    /// The libvirt domain (runner "libvirt").
    #[serde(default)]
    pub domain: Option<String>,
    /// Runner "libvirt": the agent defines the domain from this XML, with
    /// the VM's `<lease>` written, before each start; without it the
    /// domain must be defined and the agent adds or checks its `<lease>`.
    #[serde(default)]
    pub domain_xml: Option<PathBuf>,
    /// What an isolated host does with this VM; None: `health.isolation`.
    #[serde(default)]
    pub isolation: Option<super::health::IsolationPolicy>,
}

impl Vm {
    pub fn lease_id(&self) -> &str {
        self.lease_id_opt.as_deref().unwrap_or(&self.name)
    }
}

impl Config {
    /// Host `to`'s migration entry when VM `vm` can live-migrate there:
    /// runner "libvirt" and a `[[migration.host]]` for it.
    pub fn migration_to(&self, vm: usize, to: u64) -> Option<&super::migrate::MigrationHost> {
        let v = self.vms.get(vm)?;
        if v.runner != RunnerKind::Libvirt {
            return None;
        }
        self.migration.as_ref()?.host(to)
    }

    /// The VM's isolation policy (its own, else the cluster's).
    pub fn isolation(&self, vm: usize) -> super::health::IsolationPolicy {
        self.vms
            .get(vm)
            .and_then(|v| v.isolation)
            .unwrap_or(self.health.isolation)
    }
}

impl Config {
    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::parse_from(text, None)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_from(&text, Some(path))
    }

    fn parse_from(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.map(Path::to_path_buf),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: path.map(Path::to_path_buf),
            message,
        })?;
        Ok(cfg)
    }

    /// Everything serde cannot check: names, ranges, runner arguments.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(f) = &self.fencing {
            f.validate()?;
        }
        self.health.validate()?;
        if let Some(m) = &self.migration {
            m.validate()?;
        }
        let c = &self.cluster;
        check_name("cluster.lockspace", &c.lockspace)?;
        if c.interval == 0 {
            return Err("cluster.interval must be at least 1 second".into());
        }
        if c.capacity == 0 {
            return Err("cluster.capacity must be at least 1".into());
        }
        if self.vms.len() > MAX_VMS {
            return Err(format!(
                "{} VMs configured; the whiteboard holds at most {MAX_VMS}",
                self.vms.len()
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut leases = std::collections::HashSet::new();
        for (i, vm) in self.vms.iter().enumerate() {
            let what = format!("vm #{} ({:?})", i + 1, vm.name);
            check_name(&format!("{what} name"), &vm.name)?;
            check_name(&format!("{what} lease_id"), vm.lease_id())?;
            if !names.insert(vm.name.as_str()) {
                return Err(format!("{what}: VM name used twice"));
            }
            // Two VMs under one lease would exclude each other forever.
            if !leases.insert(vm.lease_id()) {
                return Err(format!("{what}: lease_id {:?} used twice", vm.lease_id()));
            }
            for &h in &vm.preferred_hosts {
                if !(1..=MAX_HOST_ID).contains(&h) {
                    return Err(format!(
                        "{what}: preferred host {h} is not a host_id (1..={MAX_HOST_ID})"
                    ));
                }
            }
            match vm.runner {
                RunnerKind::Command => {
                    if vm.start.is_empty() || vm.start[0].is_empty() {
                        return Err(format!("{what}: runner \"command\" needs start = [argv]"));
                    }
                    if vm.domain.is_some() || vm.domain_xml.is_some() {
                        return Err(format!(
                            "{what}: domain and domain_xml are for runner \"libvirt\""
                        ));
                    }
                }
                RunnerKind::Libvirt => {
                    if vm.domain.as_deref().is_none_or(str::is_empty) {
                        return Err(format!("{what}: runner \"libvirt\" needs domain = \"...\""));
                    }
                    if !vm.start.is_empty() || vm.stop.is_some() {
                        return Err(format!(
                            "{what}: start and stop are for runner \"command\" (libvirt shuts the domain down, then destroys it)"
                        ));
                    }
                    if vm
                        .domain_xml
                        .as_ref()
                        .is_some_and(|p| p.as_os_str().is_empty())
                    {
                        return Err(format!("{what}: domain_xml is empty"));
                    }
                }
            }
            if let Some(stop) = &vm.stop
                && stop.first().is_none_or(String::is_empty)
            {
                return Err(format!("{what}: stop must be a non-empty argv"));
            }
        }
        Ok(())
    }

    /// The number hosts compare to trust each other with VMs: sanlock's
    /// crc32c of, per VM in config order, `name` TAB `lease_id`, joined by
    /// `\n`, then `\n` and the lockspace name. The lease ids are in it
    /// because two hosts disagreeing on a VM's lease would both run it.
    /// The `[health]` section and each VM's isolation policy follow (when
    /// not all defaults): hosts weighing health differently would each
    /// see the other as better and bounce VMs.
    pub fn digest(&self) -> u32 {
        let mut s = String::new();
        for vm in &self.vms {
            s.push_str(&vm.name);
            s.push('\t');
            s.push_str(vm.lease_id());
            s.push('\n');
        }
        s.push_str(&self.cluster.lockspace);
        // Configs without health settings keep their digest, so a rolling
        // upgrade does not split the cluster.
        let iso: Vec<String> = self
            .vms
            .iter()
            .map(|v| v.isolation.map_or("-", |p| p.as_str()).to_string())
            .collect();
        if self.health != super::health::HealthConfig::default() || iso.iter().any(|p| p != "-") {
            s.push('\n');
            s.push_str(&self.health.digest_text());
            s.push_str(" vm_isolation=");
            s.push_str(&iso.join(","));
        }
        sanlock_crc32c(s.as_bytes())
    }

    /// The VM's index: its bit in the whiteboard bitmaps.
    pub fn vm_index(&self, name: &str) -> Option<usize> {
        self.vms.iter().position(|v| v.name == name)
    }
}

fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.len() > NAME_MAX {
        return Err(format!(
            "{what} {s:?} is {} bytes; sanlock names are at most {NAME_MAX}",
            s.len()
        ));
    }
    // ':' separates sanlock's lease strings; control characters would
    // make the digest and the logs ambiguous.
    if s.chars().any(|c| c.is_control() || c == ':') {
        return Err(format!("{what} {s:?} contains ':' or a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[cluster]
lockspace = "demo"
ids = "/srv/ha/ids"
xleases = "/srv/ha/xleases"
whiteboard = "/srv/ha/whiteboard"
interval = 2
grace = 10
capacity = 64

[[vm]]
name = "web1"
lease_id = "web1"
priority = 10
preferred_hosts = [1, 2]
runner = "command"
start = ["/usr/bin/hactl", "ha", "demo-vm", "/srv/ha/web1.disk"]
stop = ["/bin/true"]

[[vm]]
name = "db1"
runner = "libvirt"
domain = "db1"
domain_xml = "/etc/hactl/db1.xml"
"#;

    #[test]
    fn parses_the_documented_example() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.cluster.lockspace, "demo");
        assert_eq!(c.cluster.grace, 10);
        assert_eq!(c.vms.len(), 2);
        assert_eq!(c.vms[0].preferred_hosts, vec![1, 2]);
        assert_eq!(c.vms[1].lease_id(), "db1");
        assert_eq!(c.vms[1].runner, RunnerKind::Libvirt);
        assert_eq!(
            c.vms[1].domain_xml.as_deref(),
            Some(Path::new("/etc/hactl/db1.xml"))
        );
        assert_eq!(c.cluster.libvirt_uri, None);
        assert_eq!(c.vm_index("db1"), Some(1));
        assert_eq!(c.vm_index("nope"), None);
    }

    #[test]
    fn defaults_apply() {
        let c = Config::parse(
            "[cluster]\nlockspace='a'\nids='/i'\nxleases='/x'\nwhiteboard='/w'\n\
             [[vm]]\nname='v'\nstart=['/bin/sleep','100']\n",
        )
        .unwrap();
        assert_eq!(
            (c.cluster.interval, c.cluster.grace, c.cluster.capacity),
            (2, 10, 64)
        );
        assert_eq!(c.vms[0].priority, 0);
        assert_eq!(c.vms[0].runner, RunnerKind::Command);
    }

    #[test]
    fn a_typo_is_an_error_naming_the_key() {
        let bad = EXAMPLE.replace("preferred_hosts", "prefered_hosts");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("prefered_hosts"), "{e}");
        let bad = EXAMPLE.replace("grace = 10", "grace = 10\ngrase = 3");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("grase"), "{e}");
    }

    #[test]
    fn invalid_configs_are_refused_with_the_reason() {
        let cases = [
            (
                EXAMPLE.replace("name = \"db1\"", "name = \"web1\""),
                "used twice",
            ),
            (EXAMPLE.replace("domain = \"db1\"", ""), "needs domain"),
            (
                EXAMPLE.replace(
                    "domain = \"db1\"",
                    "domain = \"db1\"\nstop = [\"/bin/true\"]",
                ),
                "start and stop are for runner",
            ),
            (EXAMPLE.replace("[1, 2]", "[0]"), "not a host_id"),
            (EXAMPLE.replace("interval = 2", "interval = 0"), "interval"),
            (EXAMPLE.replace("capacity = 64", "capacity = 0"), "capacity"),
            (
                EXAMPLE.replace("lease_id = \"web1\"", "lease_id = \"db1\""),
                "lease_id",
            ),
            (EXAMPLE.replace("\"demo\"", "\"de:mo\""), "':'"),
        ];
        for (text, want) in cases {
            let e = Config::parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in {e}");
        }
        let mut many =
            String::from("[cluster]\nlockspace='a'\nids='/i'\nxleases='/x'\nwhiteboard='/w'\n");
        for i in 0..=MAX_VMS {
            many.push_str(&format!("[[vm]]\nname='v{i}'\nstart=['/bin/true']\n"));
        }
        let e = Config::parse(&many).unwrap_err().to_string();
        assert!(e.contains("at most 1024"), "{e}");
    }

    #[test]
    fn digest_depends_on_names_order_and_leases() {
        let a = Config::parse(EXAMPLE).unwrap();
        let mut b = a.clone();
        b.vms[0].priority = 99; // not in the digest: hosts may differ there
        assert_eq!(a.digest(), b.digest());
        b.vms.swap(0, 1);
        assert_ne!(a.digest(), b.digest());
        let mut c = a.clone();
        c.vms[0].lease_id_opt = Some("other".into());
        assert_ne!(a.digest(), c.digest());
        let mut d = a.clone();
        d.vms.pop();
        assert_ne!(a.digest(), d.digest());
        let mut e = a.clone();
        e.health.gateway_penalty = 1500;
        assert_ne!(a.digest(), e.digest());
        let mut f = a.clone();
        f.vms[1].isolation = Some(super::super::health::IsolationPolicy::Stop);
        assert_ne!(a.digest(), f.digest());
    }

    #[test]
    fn health_section_parses_with_defaults_and_refuses_typos() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.health.base_score, 3400);
        assert_eq!(c.health.gateway_penalty, 1600);
        assert_eq!(c.health.move_margin, 800);
        let text = format!(
            "{EXAMPLE}\n[health]\nhold_down = 5\nisolation = \"stop\"\n[health.gateway]\naddresses = [\"10.0.0.1\", \"10.0.0.2:22\"]\n[health.links]\ninterfaces = [\"br0\"]\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.health.hold_down, 5);
        assert_eq!(c.health.gateway.interval, 5);
        assert_eq!(c.health.links.interfaces, vec!["br0".to_string()]);
        assert_eq!(c.isolation(0), super::super::health::IsolationPolicy::Stop);
        let c2 = Config::parse(&text.replace(
            "runner = \"libvirt\"",
            "runner = \"libvirt\"\nisolation = \"keep\"",
        ))
        .unwrap();
        assert_eq!(c2.isolation(1), super::super::health::IsolationPolicy::Keep);
        for (bad, want) in [
            ("hold_down = 5", "hold_dwn = 5", "hold_dwn"),
            ("isolation = \"stop\"", "isolation = \"reboot\"", "reboot"),
            ("hold_down = 5", "base_score = 9000", "base_score"),
            ("\"10.0.0.1\"", "\"gw.example\"", "neither"),
            ("interfaces", "interfaces = [\"br0\"]\nifaces", "ifaces"),
        ]
        .map(|(a, b, w)| (text.replacen(a, b, 1), w))
        {
            let e = Config::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn from_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ha.toml");
        std::fs::write(&p, "[cluster]\nlockspace = 1\n").unwrap();
        let e = Config::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("ha.toml"), "{e}");
        let e = Config::from_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
