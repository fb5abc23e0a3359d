//! The HA layer: restart HA VMs on surviving hosts when their host dies,
//! never on two hosts at once. docs/ha-design.md fixes the pieces:
//! - [`config`]: the TOML config, the same on every host
//! - [`whiteboard`]: one checksummed sector per host on shared storage
//! - [`decide`]: the pure policy, `decide(&Input) -> Decision`

pub mod config;
pub mod decide;
pub mod whiteboard;

pub use config::Config;
pub use decide::{Action, ActionKind, Decision, Input, decide};
pub use whiteboard::{ClusterSector, HostSector, Whiteboard};
