//! hactl: a sanlock-compatible shared-storage lease manager.
//!
//! Where things are:
//! - [`ondisk`]: sanlock's record layouts, byte for byte (where bytes are decided)
//! - [`io`]: O_DIRECT, timeouts, areas that cannot be written outside (where bytes hit the disk)
//! - [`geometry`]: sector/align sizes and what they imply
//! - [`lease_str`]: LOCKSPACE / RESOURCE / RINDEX strings
//! - [`daemon`]: `hactl daemon`; [`daemon::core`] is where a lease is decided
//!   (the lease machines of [`delta`], [`paxos`], [`hosts`], [`recovery`] driven
//!   as one lockspace and its resources), run by the daemon and by [`sim`]
//! - [`sim`]: the deterministic simulation of many hosts running that core
//! - [`direct`]: `hactl direct` operations on storage
//! - [`xleases`]: vdsm's xleases volume (VM leases) over [`io`]
//! - [`cli`]: sanlock's command syntax and output text
//! - [`client`]: a typed Rust API to a sanlock daemon, instead of libsanlock
//! - [`wdmd`]: the watchdog daemon's client protocol and when to pet it
//! - [`ha`]: the HA layer (config, whiteboard, decide)

pub mod cli;
pub mod client;
pub mod daemon;
pub mod delta;
pub mod direct;
pub mod early_warning;
pub mod geometry;
pub mod ha;
pub mod history;
pub mod hosts;
pub mod io;
pub mod lease_str;
pub mod metrics;
pub mod ondisk;
pub mod paxos;
pub mod proto;
pub mod recovery;
pub mod rv;
pub mod sim;
pub mod timeouts;
pub mod wdmd;
pub mod web;
pub mod xleases;
