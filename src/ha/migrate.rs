//! Live migration of runner "libvirt" VMs (docs/ha-design.md, "Live
//! migration"): the `[migration]` config section, and the `virsh migrate`
//! command the agent runs when [`super::decide`] moves a VM off this host
//! (local maintenance, or rule 8's health move) towards a host whose
//! libvirtd this host's libvirtd can reach.
//!
//! The migration is peer to peer (`--p2p`): this host's libvirtd opens the
//! destination libvirtd itself at the URI the config gives for that host
//! (`qemu+tcp://ADDR/system`, `qemu+tls://...`, or a unix socket:
//! `qemu+unix:///system?socket=PATH`), so the agent needs no credentials
//! for the other host. The guest's memory goes either over qemu's own
//! connection (`data_uri`, e.g. `tcp://ADDR`; libvirt's default is the
//! destination's host name) or through the libvirtd connection
//! (`tunnelled = true`: no port to open besides libvirtd's).
//!
//! The lease follows the VM by libvirt's sanlock lock driver: the source
//! releases it when the guest pauses at the end of the migration (keeping
//! its lease version in the migration cookie), the destination acquires it
//! at that version when the guest resumes there; the source agent keeps
//! the VM in its whiteboard sector until `virsh migrate` returned, so no
//! host takes the lease in between. The destination agent adopts the
//! domain as the holder of a lease its host holds (as after an agent
//! restart). A migration that fails leaves the guest running here
//! (libvirt resumes it) and the agent falls back to the cold move: stop
//! here, start on the other host.

use std::path::Path;

use serde::Deserialize;

/// `[migration]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationConfig {
    /// Memory through the libvirtd connection (`virsh migrate --tunnelled`).
    #[serde(default)]
    pub tunnelled: bool,
    /// Seconds a migration may take before it is aborted (then the cold move).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// The hosts whose libvirtd accepts migrations, each with its URI.
    #[serde(default, rename = "host")]
    pub hosts: Vec<MigrationHost>,
}

fn default_timeout() -> u64 {
    120
}

/// `[[migration.host]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationHost {
    /// The host's lockspace host_id.
    #[serde(rename = "host_id")]
    pub id: u64,
    /// Its libvirtd as the other hosts' libvirtds reach it.
    pub uri: String,
    /// Where qemu sends the guest's memory (`--migrateuri`); None: libvirt's default.
    #[serde(default)]
    pub data_uri: Option<String>,
}

impl MigrationConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout == 0 {
            return Err("migration.timeout must be at least 1 second".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in &self.hosts {
            if !(1..=super::config::MAX_HOST_ID).contains(&h.id) {
                return Err(format!(
                    "migration.host host_id {} is not a host_id (1..={})",
                    h.id,
                    super::config::MAX_HOST_ID
                ));
            }
            if !seen.insert(h.id) {
                return Err(format!("migration.host host_id {} given twice", h.id));
            }
            if h.uri.trim().is_empty() {
                return Err(format!("migration.host host_id {}: uri is empty", h.id));
            }
            if self.tunnelled && h.data_uri.is_some() {
                return Err(format!(
                    "migration.host host_id {}: data_uri with tunnelled = true (the memory goes through libvirtd)",
                    h.id
                ));
            }
        }
        Ok(())
    }

    /// The migration entry of host `id`.
    pub fn host(&self, id: u64) -> Option<&MigrationHost> {
        self.hosts.iter().find(|h| h.id == id)
    }
}

/// The arguments of `virsh` that live-migrate `domain` from the local
/// libvirt `local_uri` to `to`.
pub fn virsh_args(
    cfg: &MigrationConfig,
    local_uri: &str,
    domain: &str,
    to: &MigrationHost,
) -> Vec<String> {
    let mut a: Vec<String> = ["-q", "-c", local_uri, "migrate", "--live", "--p2p"]
        .map(String::from)
        .to_vec();
    if cfg.tunnelled {
        a.push("--tunnelled".into());
    }
    if let Some(d) = &to.data_uri {
        a.push("--migrateuri".into());
        a.push(d.clone());
    }
    a.push(domain.into());
    a.push(to.uri.clone());
    a
}

/// The log `virsh migrate` writes to, in the agent's run dir.
pub fn log_path(run_dir: &Path, vm: &str) -> std::path::PathBuf {
    run_dir.join(format!("migrate-{vm}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(t: &str) -> Result<MigrationConfig, String> {
        let c: MigrationConfig = toml::from_str(t).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn parses_hosts_and_builds_the_command() {
        let c = cfg(
            "[[host]]\nhost_id = 2\nuri = \"qemu+tcp://10.0.0.2/system\"\ndata_uri = \"tcp://10.0.0.2\"\n",
        )
        .unwrap();
        assert_eq!(c.timeout, 120);
        let h = c.host(2).unwrap();
        assert_eq!(
            virsh_args(&c, "qemu:///system", "web1", h).join(" "),
            "-q -c qemu:///system migrate --live --p2p --migrateuri tcp://10.0.0.2 web1 qemu+tcp://10.0.0.2/system"
        );
        assert!(c.host(1).is_none());
        let t = cfg(
            "tunnelled = true\n[[host]]\nhost_id = 1\nuri = \"qemu+unix:///system?socket=/x\"\n",
        )
        .unwrap();
        assert_eq!(
            virsh_args(&t, "qemu:///system", "db", t.host(1).unwrap()).join(" "),
            "-q -c qemu:///system migrate --live --p2p --tunnelled db qemu+unix:///system?socket=/x"
        );
    }

    #[test]
    fn rejects_bad_entries() {
        assert!(cfg("[[host]]\nhost_id = 0\nuri = \"x\"\n").is_err());
        assert!(
            cfg("[[host]]\nhost_id = 1\nuri = \"x\"\n[[host]]\nhost_id = 1\nuri = \"y\"\n")
                .is_err()
        );
        assert!(cfg("[[host]]\nhost_id = 1\nuri = \" \"\n").is_err());
        assert!(cfg("timeout = 0\n").is_err());
        assert!(
            cfg("tunnelled = true\n[[host]]\nhost_id = 1\nuri = \"x\"\ndata_uri = \"tcp://a\"\n")
                .is_err()
        );
        assert!(cfg("[[host]]\nhost_id = 1\nurl = \"x\"\n").is_err());
    }
}
