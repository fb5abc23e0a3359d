//! Executes the core's actions ([`super::core`]) on the I/O engine
//! ([`crate::io::engine`]: io_uring with a linked timeout per I/O; a hung
//! I/O keeps its buffer with the engine until the kernel returns). A
//! resource operation runs to its end on the thread that asked for it,
//! waiting for each I/O ([`run_op`]); a lockspace runs on the engine's
//! thread without waiting (see [`super::lockspace`]).

use std::path::Path;
use std::time::Duration;

use super::core::lockspace::{self, Lockspace, LockspaceConfig};
use super::core::resource::{Input, LockspaceView, Op, Step};
use super::core::{CoreError, Io, IoFailure, IoOp, IoResult, Now, Storage, Target};
use crate::io::{Area, Disk};
use crate::ondisk::LeaderRecord;
use crate::timeouts::monotime_ms;

/// The clocks now.
pub fn now() -> Now {
    Now {
        ms: monotime_ms(),
        wall: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

/// An open disk and where an area starts on it.
pub(super) struct Place {
    disk: Disk,
    offset: u64,
}

impl Place {
    pub(super) fn new(disk: Disk, offset: u64) -> Place {
        Place { disk, offset }
    }

    fn perform(&self, io: &Io) -> IoResult {
        let timeout = Duration::from_millis(io.timeout_ms);
        let area = Area::new(&self.disk, self.offset, io.area_len, timeout)?;
        match &io.op {
            IoOp::Read { len } => Ok(area.read(io.offset, *len)?.into()),
            IoOp::Write { data } => {
                area.write(io.offset, data)?;
                Ok(Vec::new().into())
            }
        }
    }

    /// [`Place::perform`] without waiting: `done` runs on the engine thread.
    pub(super) fn perform_then(&self, io: &Io, done: impl FnOnce(IoResult) + Send + 'static) {
        let timeout = Duration::from_millis(io.timeout_ms);
        let area = match Area::new(&self.disk, self.offset, io.area_len, timeout) {
            Ok(a) => a,
            Err(e) => {
                return crate::io::engine::get().soon(Box::new(move || done(Err(e.into()))));
            }
        };
        match &io.op {
            IoOp::Read { len } => area.read_then(io.offset, *len, move |r| {
                done(r.map(Into::into).map_err(Into::into))
            }),
            IoOp::Write { data } => area.write_then(io.offset, data, move |r| {
                done(r.map(|()| Vec::new().into()).map_err(Into::into))
            }),
        }
    }
}

/// The lease and lockspace areas an operation's I/O goes to, as
/// O_DIRECT | O_SYNC files or devices.
#[derive(Default)]
pub struct AreaStorage {
    lease: Option<Place>,
    lockspace: Option<Place>,
    /// Opened at its first I/O (an acquire reads an owner's delta lease).
    lockspace_path: Option<(std::path::PathBuf, u64)>,
}

impl AreaStorage {
    /// The lease area at `offset` of `path`, opened now.
    pub fn lease(path: &Path, offset: u64) -> Result<AreaStorage, IoFailure> {
        Ok(AreaStorage {
            lease: Some(Place {
                disk: Disk::open(path)?,
                offset,
            }),
            ..Default::default()
        })
    }

    /// The lease area at `offset` of a disk already open.
    pub fn lease_on(disk: Disk, offset: u64) -> AreaStorage {
        AreaStorage {
            lease: Some(Place { disk, offset }),
            ..Default::default()
        }
    }

    /// The lockspace area at `offset` of `path`, opened at its first I/O;
    /// if it cannot be, that I/O fails with SANLK_ACQUIRE_IDDISK.
    pub fn with_lockspace(mut self, path: &Path, offset: u64) -> AreaStorage {
        self.lockspace_path = Some((path.to_path_buf(), offset));
        self
    }

    /// A lockspace's own area on a disk already open.
    pub fn lockspace(disk: Disk, offset: u64) -> AreaStorage {
        AreaStorage {
            lockspace: Some(Place { disk, offset }),
            ..Default::default()
        }
    }
}

impl Storage for AreaStorage {
    fn perform(&mut self, io: &Io) -> IoResult {
        let place = match io.target {
            Target::Lease => self.lease.as_ref(),
            Target::Lockspace => {
                if self.lockspace.is_none()
                    && let Some((path, offset)) = self.lockspace_path.take()
                {
                    let disk = Disk::open(&path)
                        .map_err(|_| IoFailure::code(crate::rv::SANLK_ACQUIRE_IDDISK))?;
                    self.lockspace = Some(Place { disk, offset });
                }
                self.lockspace.as_ref()
            }
        };
        match place {
            Some(p) => p.perform(io),
            None => Err(IoFailure::code(-libc::ENODEV)),
        }
    }
}

/// Runs a resource operation to its end. `sleep(d)` waits for a timer and
/// returns false to give the operation up (the lockspace is stopping).
pub fn run_op<O: Op>(
    op: &mut O,
    storage: &mut dyn Storage,
    ls: &dyn LockspaceView,
    mut sleep: impl FnMut(Duration) -> bool,
) -> O::Output {
    let mut input = Input::Start;
    loop {
        match op.step(now(), input, ls) {
            Step::Io(io) => {
                let result = storage.perform(&io);
                input = Input::Io { id: io.id, result };
            }
            Step::Timer { id, at_ms } => {
                let d = Duration::from_millis(at_ms.saturating_sub(monotime_ms()));
                input = if sleep(d) {
                    Input::Timer { id }
                } else {
                    Input::Cancelled { id }
                };
            }
            Step::Done(out) => return out,
        }
    }
}

/// Joins a lockspace and stops there, leaving the lease to expire (`hactl
/// direct acquire_id`): the daemon's join, with nothing renewing after it.
pub fn join_only(
    cfg: LockspaceConfig,
    storage: &mut dyn Storage,
) -> Result<LeaderRecord, CoreError> {
    let mut ls = Lockspace::new(cfg);
    let mut events = vec![lockspace::Event::Start];
    loop {
        for ev in events.drain(..) {
            ls.step(now(), ev);
        }
        for a in ls.ready() {
            match a {
                lockspace::Action::Io(io) => {
                    let result = storage.perform(&io);
                    events.push(lockspace::Event::Io { id: io.id, result });
                }
                lockspace::Action::Timer { id, at_ms } => {
                    std::thread::sleep(Duration::from_millis(at_ms.saturating_sub(monotime_ms())));
                    events.push(lockspace::Event::Timer { id });
                }
                lockspace::Action::Joined(r) => return r,
                _ => {}
            }
        }
        if events.is_empty() {
            return Err(CoreError::new("the join stopped", crate::rv::SANLK_ERROR));
        }
    }
}
