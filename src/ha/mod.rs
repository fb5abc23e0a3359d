//! The HA layer: restart HA VMs on surviving hosts when their host dies,
//! never on two hosts at once. docs/ha-design.md fixes the pieces:
//! - [`config`]: the TOML config, the same on every host
//! - [`whiteboard`]: one checksummed sector per host on shared storage
//! - [`decide`]: the pure policy, `decide(&Input) -> Decision`
//! - [`health`]: the health score from the monitors' readings (pure);
//!   [`monitor`]: the monitors, each in its own thread
//! - [`fencing`]: the pure fencing decision beside it; [`fence`]: fence
//!   agents, their config, and declaring a fenced host dead on storage
//! - [`agent`]: the loop on every host around `decide`
//! - [`runner`]: starting a VM only under its lease, stopping it
//! - [`libvirt`]: runner "libvirt": a domain with its `<lease>`, through virsh
//! - [`migrate`]: live migration of those domains (`[migration]`, `virsh migrate`)
//! - [`demo_vm`]: the stand-in VM and the split-brain check on its disk
//! - [`cluster`]: a whole cluster on one machine (tests, `hactl demo`)
//! - [`demo`]: `hactl demo`
//! - [`guest`], [`lab`]: tiny real guests and hosts with their own
//!   libvirtd, for the libvirt tests, `hactl demo --libvirt` and the bench
//! - [`netlab`]: network namespaces behind a gateway for the test hosts
//!   (health tests and the gateway-loss bench)
//! - [`web`]: the agent's read-only web view (`--web ADDR`)

pub mod config;
pub mod decide;
pub mod fencing;
pub mod health;
pub mod whiteboard;

pub mod agent;
pub mod cluster;
pub mod demo;
pub mod demo_vm;
pub mod fence;
pub mod guest;
pub mod lab;
pub mod libvirt;
pub mod migrate;
pub mod monitor;
pub mod netlab;
pub mod runner;
pub mod web;

pub use config::Config;
pub use decide::{Action, ActionKind, Decision, Input, decide};
pub use whiteboard::{ClusterSector, HostSector, Whiteboard};

/// Set by the test cluster: the agent makes its VMs die with it, so that
/// nothing outlives a test or demo that was killed.
pub const DIE_WITH_AGENT_ENV: &str = "HACTL_HA_VM_DIE_WITH_AGENT";
