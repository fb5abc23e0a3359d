//! The daemon's core: a lockspace's life ([`lockspace`]) and a resource's
//! ([`resource`]) as plain state machines over the pure lease algorithms
//! ([`crate::delta`], [`crate::paxos`], [`crate::hosts`],
//! [`crate::recovery`]). Events go in (an I/O completed, failed or timed
//! out; a timer fired; the main loop's tick; a request), actions come out
//! (read or write part of an area, arm a timer, signal a holder, pet the
//! watchdog, answer). The core owns no thread, file, socket or clock: the
//! daemon's engine ([`super::engine`]) and the simulation ([`crate::sim`])
//! perform the actions and report back, as raft-rs's `step` / `ready`.
//!
//! Every action that completes later carries an [`Id`]; its completion
//! comes back as an event with the same id. An executor owns an I/O's
//! buffer until the I/O is really over, also after its timeout was
//! reported (the core only sees the timeout).

pub mod lockspace;
pub mod resource;
#[cfg(test)]
pub(crate) mod testkit;

use std::fmt;
use std::sync::Arc;

use crate::history::Moment;
use crate::io::IoError;
use crate::rv;

/// The executor's clocks when an event happened: CLOCK_MONOTONIC in
/// milliseconds (timers, I/O latency; its whole seconds are sanlock's
/// `monotime()`, which lease timestamps use) and wall-clock Unix seconds
/// (for people only; 0 where there is none, as in the simulation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    pub ms: u64,
    pub wall: u64,
}

impl Now {
    pub fn at_ms(ms: u64) -> Now {
        Now { ms, wall: 0 }
    }

    /// sanlock's `monotime()`: whole seconds.
    pub fn secs(&self) -> u64 {
        self.ms / 1000
    }

    pub fn moment(&self) -> Moment {
        Moment {
            mono: self.secs(),
            wall: self.wall,
        }
    }
}

/// Names an action whose completion comes back as an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub u64);

/// Hands out the ids of one machine.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ids(u64);

impl Ids {
    pub(crate) fn next(&mut self) -> Id {
        self.0 += 1;
        Id(self.0)
    }
}

/// Which area an I/O addresses. Offsets are relative to the area's start,
/// and no I/O may leave the area (`area_len`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The lockspace's delta lease area.
    Lockspace,
    /// The resource lease area an operation works on.
    Lease,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoOp {
    Read { len: usize },
    Write { data: Vec<u8> },
}

/// One lease I/O (O_DIRECT | O_SYNC in the daemon), bounded by a timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Io {
    pub id: Id,
    pub target: Target,
    /// The length of the whole area; the executor refuses an I/O that
    /// would leave it, and on a block device an area that does not fit.
    pub area_len: u64,
    pub offset: u64,
    pub op: IoOp,
    /// After this long the I/O counts as failed (`SANLK_AIO_TIMEOUT`).
    pub timeout_ms: u64,
}

impl Io {
    pub fn len(&self) -> usize {
        match &self.op {
            IoOp::Read { len } => *len,
            IoOp::Write { data } => data.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_write(&self) -> bool {
        matches!(self.op, IoOp::Write { .. })
    }
}

/// Why an I/O failed: sanlock's number for it, and the error with its
/// path, offset and cause where the executor has one (the simulation's
/// faults have none).
#[derive(Clone, Debug)]
pub struct IoFailure {
    pub rv: i32,
    pub cause: Option<Arc<IoError>>,
}

impl IoFailure {
    pub fn code(rv: i32) -> IoFailure {
        IoFailure { rv, cause: None }
    }

    pub fn timeout() -> IoFailure {
        IoFailure::code(rv::SANLK_AIO_TIMEOUT)
    }
}

impl From<IoError> for IoFailure {
    fn from(e: IoError) -> Self {
        IoFailure {
            rv: e.sanlk_rv(),
            cause: Some(Arc::new(e)),
        }
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(e) => write!(f, "{e}"),
            None => write!(f, "{} ({})", rv::describe(self.rv), self.rv),
        }
    }
}

/// What an I/O produced: the bytes read (empty for a write), or why not.
pub type IoResult = Result<IoData, IoFailure>;

pub use crate::io::IoData;

/// Where a core's I/O goes, one I/O at a time and to its end (or its
/// timeout): O_DIRECT areas in the daemon ([`super::engine::AreaStorage`]),
/// the simulated disk in the simulation ([`crate::sim::disk`]). An
/// implementation refuses an I/O that would leave its area.
pub trait Storage {
    fn perform(&mut self, io: &Io) -> IoResult;
}

/// A lease operation that failed: sanlock's number for the reply, what
/// was being done, and the I/O error behind it if there was one. Logged
/// in full; only [`CoreError::rv`] goes on the wire.
#[derive(Clone, Debug)]
pub struct CoreError {
    pub rv: i32,
    pub what: &'static str,
    pub cause: Option<IoFailure>,
}

impl CoreError {
    pub fn new(what: &'static str, rv: i32) -> CoreError {
        CoreError {
            rv,
            what,
            cause: None,
        }
    }

    pub fn io(what: &'static str, rv: i32, cause: IoFailure) -> CoreError {
        CoreError {
            rv,
            what,
            cause: Some(cause),
        }
    }

    pub fn rv(&self) -> i32 {
        self.rv
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.what, rv::describe(self.rv), self.rv)?;
        if let Some(c) = &self.cause
            && (c.cause.is_some() || c.rv != self.rv)
        {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CoreError {}

/// Safety steps the simulation switches off on purpose, to show the
/// violation each one prevents (docs/sim.md, "Negative checks"). The
/// daemon never sets any: `Knobs::default()` is sanlock's behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Knobs {
    /// The delta acquire's waits (watching a held host_id, the settle
    /// delay before checking nobody else wrote it) take no time.
    pub skip_delta_wait: bool,
    /// A failed lockspace is dropped at once (host_id released, watchdog
    /// closed) without killing its holders.
    pub clear_without_kill: bool,
    /// An acquire reads the owner's delta lease as free: it takes a held
    /// lease without waiting for its owner to be DEAD.
    pub takeover_without_dead: bool,
    /// A finished acquire is handed out if the lockspace has the same
    /// host_id, without comparing the generation (sanlock 3.8.5's
    /// `check_new_tokens_space`).
    pub sanlock_token_check: bool,
    /// A ballot that committed our host_id counts as ours whatever the
    /// generation it committed (sanlock 3.8.5's `paxos_lease_acquire`),
    /// also an older instance's value adopted from another host's dblock.
    pub sanlock_commit_check: bool,
    /// A warm acquire (of a lease this host freed last) skips phase 1 of
    /// its ballot. Unsafe: shows why the warm path keeps both phases.
    pub warm_skips_phase1: bool,
}

/// The shape of a lease area: its sector size, its length, and how many
/// host slots it has (delta leases or dblocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub sector_size: usize,
    pub align_size: u64,
    pub max_hosts: usize,
}

impl From<crate::geometry::Geometry> for Layout {
    fn from(g: crate::geometry::Geometry) -> Self {
        Layout {
            sector_size: g.sector_size as usize,
            align_size: g.align_size as u64,
            max_hosts: g.max_hosts() as usize,
        }
    }
}

/// Seconds to milliseconds, for I/O timeouts and timers.
pub(crate) fn ms(secs: u64) -> u64 {
    secs.saturating_mul(1000)
}
