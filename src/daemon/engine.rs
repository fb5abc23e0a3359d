//! Executes the core's actions ([`super::core`]) on the I/O engine
//! ([`crate::io::engine`]: io_uring with a linked timeout per I/O; a hung
//! I/O keeps its buffer with the engine until the kernel returns). A
//! resource operation runs on the engine's thread from its first step to
//! its output, each step taken in the completion of the I/O or timer
//! before it; the thread that asked waits once, for the output
//! ([`run_op`]). A lockspace runs there too (see [`super::lockspace`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

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
#[derive(Clone)]
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
    /// [`AreaStorage::open_now`] could not open it.
    lockspace_unopened: bool,
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

    /// The lockspace area at `offset` of its disk, already open (the
    /// lockspace's own), or else of `path` as [`AreaStorage::with_lockspace`].
    pub fn with_lockspace_disk(self, disk: Option<Disk>, path: &Path, offset: u64) -> AreaStorage {
        match disk {
            Some(disk) => AreaStorage {
                lockspace: Some(Place { disk, offset }),
                ..self
            },
            None => self.with_lockspace(path, offset),
        }
    }

    /// Where `target`'s I/O goes, the lockspace's file opened now if it
    /// was not yet.
    fn place(&mut self, target: Target) -> Result<&Place, IoFailure> {
        let place = match target {
            Target::Lease => self.lease.as_ref(),
            Target::Lockspace => {
                self.open_now();
                if self.lockspace.is_none() && self.lockspace_unopened {
                    return Err(IoFailure::code(crate::rv::SANLK_ACQUIRE_IDDISK));
                }
                self.lockspace.as_ref()
            }
        };
        place.ok_or(IoFailure::code(-libc::ENODEV))
    }

    /// Opens the lockspace's file now if it is to be opened at all (not
    /// on the engine thread, where an open that hangs would stop every
    /// lockspace); a failure is kept for the I/O that needs it.
    pub fn open_now(&mut self) {
        if let Some((path, offset)) = self.lockspace_path.take() {
            match Disk::open(&path) {
                Ok(disk) => self.lockspace = Some(Place { disk, offset }),
                Err(_) => self.lockspace_unopened = true,
            }
        }
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
        self.place(io.target)?.perform(io)
    }
}

/// A resource operation on the engine thread, between two of its steps.
struct Running<O: Op, V> {
    op: O,
    storage: AreaStorage,
    ls: V,
    stopped: Box<dyn Fn() -> bool + Send>,
    done: Box<dyn FnOnce(AreaStorage, O::Output) + Send>,
}

/// Starts a resource operation on the engine thread (no thread waits for
/// its I/Os one by one; see the module's text); `done` gets its storage
/// back and its output there. At each of its timers, `stopped()` true
/// gives it up (its lockspace is stopping).
pub fn start_op<O, V>(
    op: O,
    storage: AreaStorage,
    ls: V,
    stopped: impl Fn() -> bool + Send + 'static,
    done: impl FnOnce(AreaStorage, O::Output) + Send + 'static,
) where
    O: Op + Send + 'static,
    O::Output: Send + 'static,
    V: LockspaceView + Send + 'static,
{
    let run = Box::new(Running {
        op,
        storage,
        ls,
        stopped: Box::new(stopped),
        done: Box::new(done),
    });
    crate::io::engine::get().soon(Box::new(move || advance(run, Input::Start)));
}

/// [`start_op`], waiting for the output. Opens the lockspace's file first
/// if it is to be opened (here, not on the engine thread). Not from the
/// engine thread.
pub fn run_op<O, V>(
    op: O,
    storage: &mut AreaStorage,
    ls: V,
    stopped: impl Fn() -> bool + Send + 'static,
) -> O::Output
where
    O: Op + Send + 'static,
    O::Output: Send + 'static,
    V: LockspaceView + Send + 'static,
{
    assert!(
        !crate::io::engine::get().on_engine_thread(),
        "an operation waited for on the engine thread"
    );
    storage.open_now();
    let result = Arc::new((Mutex::new(None), Condvar::new()));
    let r = result.clone();
    start_op(op, std::mem::take(storage), ls, stopped, move |st, out| {
        *r.0.lock() = Some((st, out));
        r.1.notify_one();
    });
    let mut g = result.0.lock();
    loop {
        if let Some((back, out)) = g.take() {
            *storage = back;
            return out;
        }
        result.1.wait(&mut g);
    }
}

/// [`start_op`] for a task: no thread waits for it. The storage must not
/// need opening (a lockspace's file given open, or none).
pub async fn run_op_async<O, V>(
    op: O,
    storage: AreaStorage,
    ls: V,
    stopped: impl Fn() -> bool + Send + 'static,
) -> Result<(AreaStorage, O::Output), CoreError>
where
    O: Op + Send + 'static,
    O::Output: Send + 'static,
    V: LockspaceView + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    start_op(op, storage, ls, stopped, move |st, out| {
        let _ = tx.send((st, out));
    });
    // The engine runs every callback it is given; a dropped one means
    // its thread is gone.
    rx.await
        .map_err(|_| CoreError::new("the I/O engine stopped", crate::rv::SANLK_ERROR))
}

/// Takes the operation's steps until it waits for an I/O or a timer,
/// whose completion takes the next ones; or until its output.
fn advance<O, V>(mut run: Box<Running<O, V>>, mut input: Input)
where
    O: Op + Send + 'static,
    O::Output: Send + 'static,
    V: LockspaceView + Send + 'static,
{
    loop {
        match run.op.step(now(), input, &run.ls) {
            Step::Io(io) => match run.storage.place(io.target) {
                Ok(place) => {
                    let (place, id) = (place.clone(), io.id);
                    place.perform_then(&io, move |result| advance(run, Input::Io { id, result }));
                    return;
                }
                Err(e) => {
                    input = Input::Io {
                        id: io.id,
                        result: Err(e),
                    }
                }
            },
            Step::Timer { id, at_ms } => {
                let at =
                    Instant::now() + Duration::from_millis(at_ms.saturating_sub(monotime_ms()));
                crate::io::engine::get().at(
                    at,
                    Box::new(move || {
                        let input = if (run.stopped)() {
                            Input::Cancelled { id }
                        } else {
                            Input::Timer { id }
                        };
                        advance(run, input)
                    }),
                );
                return;
            }
            Step::Done(out) => {
                let Running { storage, done, .. } = *run;
                return done(storage, out);
            }
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
