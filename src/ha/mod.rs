//! The HA layer (docs/ha-design.md): when a host dies, its HA VMs run again
//! on the surviving hosts, never on two at once.

pub mod demo_vm;
pub mod runner;
