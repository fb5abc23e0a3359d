//! The I/O engine: every lease read, write and stat of the process, each
//! bounded by a timeout, and the daemon's timers, on one thread.
//!
//! On io_uring each I/O goes to the kernel with a linked timeout (and the
//! engine's own deadline behind it, see [`Loop::expire`]); where
//! io_uring cannot be had (`kernel.io_uring_disabled`, an old kernel, a
//! seccomp filter, or `HACTL_IO_ENGINE=threads`) a fixed pool of
//! [`POOL_THREADS`] threads performs them and the engine thread times
//! them out. Either way the number of threads does not depend on how many
//! lockspaces, connections or hung I/Os there are.
//!
//! An I/O that timed out is reported as such at once, but its buffer stays
//! with the engine until the kernel (or the pool thread) is really done
//! with it. A storage (a file system, or a block device) with
//! [`MAX_ABANDONED_PER_STORAGE`] such I/Os still in the kernel gets no
//! more: its next I/Os wait in the engine until one comes back or their
//! own timeout passes, so a hung storage ties up a bounded number of
//! buffers and of the kernel's workers (io-wq, at most [`IOWQ_WORKERS`] + 1),
//! and it takes [`IOWQ_WORKERS`] hung storages at once before the I/O of
//! healthy storage queues behind theirs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::AlignedBuf;

/// Threads of the fallback pool.
pub const POOL_THREADS: usize = 4;
/// A storage with this many timed-out I/Os still in the kernel gets no more.
pub const MAX_ABANDONED_PER_STORAGE: usize = 1;
/// Kernel io-wq workers the ring may use (for a stat, an I/O io_uring
/// could not start without blocking, and every I/O to storage that is
/// not [`Storage::nowait`]), bounded and unbounded, so at most twice this
/// many; idle ones exit after a few seconds.
pub const IOWQ_WORKERS: u32 = 4;
/// Submission queue entries (an I/O takes two: itself and its timeout);
/// the completion queue has twice as many, room for a thousand
/// lockspaces' renewals in flight at once (more wait in the kernel's
/// overflow list, see [`Loop::reap`]).
const RING_ENTRIES: u32 = 1024;

/// Which engine performs the I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    IoUring,
    Threads,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::IoUring => "io_uring",
            Kind::Threads => "threads",
        }
    }
}

/// The storage an I/O goes to, and how it may be issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Storage {
    /// The device under it: the bound on hung I/O counts by it (see
    /// [`MAX_ABANDONED_PER_STORAGE`]).
    pub dev: u64,
    /// Its reads and writes may be started by io_uring's non-blocking
    /// attempt on the engine thread, no io-wq worker between: a block
    /// device, or a file on a local file system whose O_DIRECT path
    /// returns EAGAIN rather than block there (ext4, xfs). Any other
    /// (FUSE, NFS, ...) always goes to an io-wq worker: a FUSE O_DIRECT
    /// read blocks in that attempt, and this thread serves every lockspace.
    pub nowait: bool,
}

/// What to do with the file.
pub enum Request {
    /// Read `len` bytes (O_DIRECT: aligned, a multiple of the sector).
    Read { len: usize },
    /// Write all of the buffer.
    Write { buf: AlignedBuf },
    /// statx of the open file (None) or of a path; the result comes back
    /// as the first bytes of the buffer ([`statx_of`]).
    Statx { path: Option<CString> },
}

/// How a request ended.
pub enum Outcome {
    /// `n` bytes transferred (for a read, into `buf`; a stat fills `buf`).
    Done {
        n: usize,
        buf: AlignedBuf,
    },
    Failed(std::io::Error),
    /// The timeout passed first. The engine keeps the buffer until the
    /// kernel returns it.
    TimedOut,
}

/// The `statx` a [`Request::Statx`] filled in.
pub fn statx_of(buf: &AlignedBuf) -> libc::statx {
    assert!(buf.len() >= std::mem::size_of::<libc::statx>());
    // SAFETY: the buffer is page aligned and holds a statx written by the kernel.
    unsafe { std::ptr::read(buf.as_ptr() as *const libc::statx) }
}

pub type Callback = Box<dyn FnOnce(Outcome) + Send>;
pub type TimerCallback = Box<dyn FnOnce() + Send>;

struct NewOp {
    file: Arc<File>,
    storage: Storage,
    offset: u64,
    req: Request,
    deadline: Instant,
    done: Callback,
}

/// What other threads hand the engine thread.
#[derive(Default)]
struct Inbox {
    ops: Vec<NewOp>,
    timers: Vec<(Instant, TimerCallback)>,
}

/// Figures for `status -D`, the metrics and the tests.
#[derive(Default)]
pub struct Stats {
    /// I/Os submitted.
    pub submitted: AtomicU64,
    /// I/Os reported as timed out.
    pub timed_out: AtomicU64,
    /// Timed-out I/Os the kernel has not returned yet (their buffers are held).
    pub abandoned_now: AtomicU64,
    /// I/Os that timed out waiting in the engine, never issued, because
    /// their file had too many abandoned already.
    pub held_back: AtomicU64,
}

pub struct Engine {
    kind: Kind,
    inbox: Mutex<Inbox>,
    efd: std::os::fd::OwnedFd,
    pub stats: Stats,
    thread: OnceLock<std::thread::ThreadId>,
}

static ENGINE: OnceLock<&'static Engine> = OnceLock::new();

/// The process's engine, started at its first use.
pub fn get() -> &'static Engine {
    ENGINE.get_or_init(|| Engine::start(std::env::var("HACTL_IO_ENGINE").ok().as_deref()))
}

impl Engine {
    fn start(want: Option<&str>) -> &'static Engine {
        // SAFETY: eventfd(2) with flags only.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: a new descriptor we own.
        let efd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let ring = match want {
            Some("threads") => Err("HACTL_IO_ENGINE=threads".to_string()),
            _ => new_ring().map_err(|e| e.to_string()),
        };
        let (kind, backend) = match ring {
            Ok(r) => (Kind::IoUring, Backend::Uring(Box::new(r))),
            Err(why) => {
                tracing::warn!("io_uring unavailable ({why}): lease I/O on {POOL_THREADS} threads");
                (Kind::Threads, Backend::Pool(Pool::start(fd)))
            }
        };
        let engine: &'static Engine = Box::leak(Box::new(Engine {
            kind,
            inbox: Mutex::new(Inbox::default()),
            efd,
            stats: Stats::default(),
            thread: OnceLock::new(),
        }));
        let h = std::thread::Builder::new()
            .name("hactl-engine".into())
            .spawn(move || Loop::new(engine, backend).run())
            .expect("spawn the I/O engine thread");
        let _ = engine.thread.set(h.thread().id());
        if kind == Kind::IoUring {
            tracing::info!(
                "lease I/O on io_uring (linked timeouts, {IOWQ_WORKERS} io-wq workers at most)"
            );
        }
        engine
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes to our eventfd; EAGAIN (counter full) still wakes.
        unsafe { libc::write(self.efd.as_raw_fd(), &one as *const u64 as *const _, 8) };
    }

    /// Starts `req` on `file` at `offset`; `done` runs on the engine thread
    /// when it ends or `timeout` passes, whichever is first.
    pub fn submit(
        &self,
        file: Arc<File>,
        storage: Storage,
        offset: u64,
        req: Request,
        timeout: Duration,
        done: Callback,
    ) {
        let deadline = Instant::now() + timeout;
        self.inbox.lock().ops.push(NewOp {
            file,
            storage,
            offset,
            req,
            deadline,
            done,
        });
        self.wake_unless_here();
    }

    /// Runs `f` on the engine thread at `at` (at once if it has passed).
    pub fn at(&self, at: Instant, f: TimerCallback) {
        self.inbox.lock().timers.push((at, f));
        self.wake_unless_here();
    }

    /// Wakes the engine thread, unless it is the caller: from a callback
    /// it takes its inbox before it sleeps again anyway.
    fn wake_unless_here(&self) {
        if !self.on_engine_thread() {
            self.wake();
        }
    }

    /// Runs `f` on the engine thread as soon as it can (a result known
    /// without I/O is delivered as one that needed it).
    pub fn soon(&self, f: TimerCallback) {
        self.at(Instant::now(), f)
    }

    /// Performs `req` and waits for its end or its timeout. Not from the
    /// engine thread (its callbacks use [`Engine::submit`]).
    pub fn wait(
        &self,
        file: Arc<File>,
        storage: Storage,
        offset: u64,
        req: Request,
        timeout: Duration,
    ) -> Outcome {
        assert!(
            self.thread.get() != Some(&std::thread::current().id()),
            "blocking I/O on the engine thread"
        );
        let slot = Arc::new((Mutex::new(None::<Outcome>), Condvar::new()));
        let s = slot.clone();
        self.submit(
            file,
            storage,
            offset,
            req,
            timeout,
            Box::new(move |o| {
                *s.0.lock() = Some(o);
                s.1.notify_one();
            }),
        );
        let mut g = slot.0.lock();
        loop {
            if let Some(o) = g.take() {
                return o;
            }
            slot.1.wait(&mut g);
        }
    }

    /// Whether the caller is the engine thread.
    pub fn on_engine_thread(&self) -> bool {
        self.thread.get() == Some(&std::thread::current().id())
    }
}

fn new_ring() -> std::io::Result<io_uring::IoUring> {
    let ring = io_uring::IoUring::new(RING_ENTRIES)?;
    // Bound the kernel's workers for I/O that must block (no effect on
    // kernels without the call: the default bound is 4 x CPUs). Lease I/O
    // is on files and block devices, io-wq's bounded kind; the unbounded
    // kind (sockets, pipes) is not ours: one worker for it.
    let _ = ring
        .submitter()
        .register_iowq_max_workers(&mut [IOWQ_WORKERS, 1]);
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    use io_uring::opcode::*;
    for (code, name) in [
        (Read::CODE, "read"),
        (Write::CODE, "write"),
        (Statx::CODE, "statx"),
        (LinkTimeout::CODE, "link_timeout"),
    ] {
        if !probe.is_supported(code) {
            return Err(std::io::Error::other(format!("no {name} opcode")));
        }
    }
    Ok(ring)
}

/// A request as the engine keeps it (its buffer in the slot).
enum Op {
    Read { len: usize },
    Write,
    Statx { path: Option<CString> },
}

/// One request the engine is responsible for, from its submission until
/// the kernel (or a pool thread) has returned its buffer.
struct Slot {
    file: Arc<File>,
    /// Which storage it goes to (see [`MAX_ABANDONED_PER_STORAGE`]).
    storage: Storage,
    offset: u64,
    op: Op,
    /// Where a read lands or a stat is written.
    buf: Option<AlignedBuf>,
    deadline: Instant,
    done: Option<Callback>,
    /// Handed to the kernel / a pool thread (else waiting in the engine).
    issued: bool,
    /// Its end was reported (a timeout, possibly before the kernel returned).
    reported: bool,
    /// CQEs still to come: the I/O's and its linked timeout's.
    pending_cqes: u8,
    /// The linked timeout's time (read by the kernel at submission).
    ts: Box<io_uring::types::Timespec>,
}

enum Backend {
    Uring(Box<io_uring::IoUring>),
    Pool(Arc<Pool>),
}

struct Loop {
    engine: &'static Engine,
    backend: Backend,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Waiting to be issued, oldest first.
    waiting: VecDeque<usize>,
    /// Timed-out I/Os still in the kernel, by storage.
    abandoned: HashMap<u64, usize>,
    timers: BTreeMap<(Instant, u64), TimerCallback>,
    timer_seq: u64,
    /// Callbacks to run once the loop's state is consistent.
    ready: Vec<(Callback, Outcome)>,
}

impl Loop {
    fn new(engine: &'static Engine, backend: Backend) -> Loop {
        Loop {
            engine,
            backend,
            slots: Vec::new(),
            free: Vec::new(),
            waiting: VecDeque::new(),
            abandoned: HashMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            ready: Vec::new(),
        }
    }

    fn run(mut self) -> ! {
        loop {
            self.take_inbox();
            self.issue_waiting();
            if let Backend::Uring(ring) = &mut self.backend
                && let Err(e) = ring.submit()
                && e.raw_os_error() != Some(libc::EBUSY)
            {
                tracing::error!("io_uring_enter: {e}");
            }
            self.sleep();
            self.drain_eventfd();
            self.reap();
            self.expire(Instant::now());
            for (cb, o) in std::mem::take(&mut self.ready) {
                cb(o);
            }
            let now = Instant::now();
            while let Some(e) = self.timers.first_entry() {
                if e.key().0 > now {
                    break;
                }
                (e.remove())();
            }
        }
    }

    fn take_inbox(&mut self) {
        let inbox = std::mem::take(&mut *self.engine.inbox.lock());
        for (at, f) in inbox.timers {
            self.timer_seq += 1;
            self.timers.insert((at, self.timer_seq), f);
        }
        for op in inbox.ops {
            let (kind, buf) = match op.req {
                Request::Read { len } => (Op::Read { len }, AlignedBuf::for_read(len)),
                Request::Write { buf } => (Op::Write, buf),
                Request::Statx { path } => (
                    Op::Statx { path },
                    AlignedBuf::zeroed(std::mem::size_of::<libc::statx>().next_multiple_of(512)),
                ),
            };
            let slot = Slot {
                file: op.file,
                storage: op.storage,
                offset: op.offset,
                op: kind,
                buf: Some(buf),
                deadline: op.deadline,
                done: Some(op.done),
                issued: false,
                reported: false,
                pending_cqes: 0,
                ts: Box::new(io_uring::types::Timespec::new()),
            };
            let i = match self.free.pop() {
                Some(i) => {
                    self.slots[i] = Some(slot);
                    i
                }
                None => {
                    self.slots.push(Some(slot));
                    self.slots.len() - 1
                }
            };
            self.waiting.push_back(i);
        }
    }

    /// Issues what waits, unless its storage has too many I/Os abandoned in
    /// the kernel (or the ring is full: then at the next turn).
    fn issue_waiting(&mut self) {
        let mut keep = VecDeque::new();
        while let Some(i) = self.waiting.pop_front() {
            let slot = self.slots[i].as_ref().expect("waiting slot");
            if slot.reported {
                // Timed out while waiting: never issued, nothing to return.
                self.release(i);
                continue;
            }
            let key = slot.storage.dev;
            if self.abandoned.get(&key).copied().unwrap_or(0) >= MAX_ABANDONED_PER_STORAGE
                || !self.issue(i)
            {
                keep.push_back(i);
            }
        }
        self.waiting = keep;
    }

    /// Hands slot `i` to the kernel or the pool; false if there is no room.
    fn issue(&mut self, i: usize) -> bool {
        let engine = self.engine;
        let slot = self.slots[i].as_mut().expect("slot");
        match &mut self.backend {
            Backend::Uring(ring) => {
                use io_uring::{opcode, squeue, types};
                let fd = types::Fd(slot.file.as_raw_fd());
                let buf = slot.buf.as_mut().expect("buffer");
                let entry = match &slot.op {
                    Op::Read { len } => opcode::Read::new(fd, buf.as_mut_ptr(), *len as u32)
                        .offset(slot.offset)
                        .build(),
                    Op::Write => opcode::Write::new(fd, buf.as_ptr(), buf.len() as u32)
                        .offset(slot.offset)
                        .build(),
                    Op::Statx { path } => {
                        let out = buf.as_mut_ptr() as *mut types::statx;
                        match path {
                            Some(p) => {
                                opcode::Statx::new(types::Fd(libc::AT_FDCWD), p.as_ptr(), out)
                                    .mask(libc::STATX_BASIC_STATS)
                                    .build()
                            }
                            None => opcode::Statx::new(fd, c"".as_ptr(), out)
                                .flags(libc::AT_EMPTY_PATH)
                                .mask(libc::STATX_BASIC_STATS)
                                .build(),
                        }
                    }
                };
                let left = slot.deadline.saturating_duration_since(Instant::now());
                *slot.ts = types::Timespec::from(left.max(Duration::from_millis(1)));
                // ASYNC: not attempted on this thread (see Storage::nowait);
                // a stat always blocks.
                let inline = slot.storage.nowait && !matches!(slot.op, Op::Statx { .. });
                let flags = if inline {
                    squeue::Flags::IO_LINK
                } else {
                    squeue::Flags::IO_LINK | squeue::Flags::ASYNC
                };
                let entries = [
                    entry.flags(flags).user_data((i as u64) << 1),
                    opcode::LinkTimeout::new(&*slot.ts)
                        .build()
                        .user_data(((i as u64) << 1) | 1),
                ];
                let mut sq = ring.submission();
                if sq.capacity() - sq.len() < 2 {
                    drop(sq);
                    let _ = ring.submit();
                    sq = ring.submission();
                    if sq.capacity() - sq.len() < 2 {
                        return false;
                    }
                }
                // SAFETY: the buffers, the path and the timespec live in the
                // slot, which is kept until both CQEs have come back.
                unsafe { sq.push_multiple(&entries) }.expect("room checked");
                slot.pending_cqes = 2;
            }
            Backend::Pool(pool) => {
                let job = Job {
                    slot: i,
                    fd: slot.file.as_raw_fd(),
                    offset: slot.offset,
                    op: {
                        let buf = slot.buf.as_mut().expect("buffer");
                        match &slot.op {
                            Op::Read { len } => JobOp::Read(buf.as_mut_ptr(), *len),
                            Op::Write => JobOp::Write(buf.as_ptr(), buf.len()),
                            Op::Statx { path } => {
                                JobOp::Statx(path.as_ref().map(|p| p.as_ptr()), buf.as_mut_ptr())
                            }
                        }
                    },
                };
                pool.queue.lock().push_back(job);
                pool.work.notify_one();
                slot.pending_cqes = 1;
            }
        }
        slot.issued = true;
        engine.stats.submitted.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Waits for a completion, a wakeup or the next deadline.
    fn sleep(&mut self) {
        let now = Instant::now();
        let mut next = self.timers.first_key_value().map(|(k, _)| k.0);
        for &i in &self.waiting {
            let d = self.slots[i].as_ref().expect("slot").deadline;
            next = Some(next.map_or(d, |n| n.min(d)));
        }
        for s in self.slots.iter().flatten() {
            if s.issued && !s.reported {
                next = Some(next.map_or(s.deadline, |n| n.min(s.deadline)));
            }
        }
        let timeout_ms = match next {
            // Round up: waking before the deadline only spins.
            Some(d) => d
                .saturating_duration_since(now)
                .as_micros()
                .div_ceil(1000)
                .min(60_000) as i32,
            None => 60_000,
        };
        let mut fds = vec![libc::pollfd {
            fd: self.engine.efd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Backend::Uring(ring) = &mut self.backend {
            if !ring.completion().is_empty() {
                return;
            }
            fds.push(libc::pollfd {
                fd: ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: poll(2) on descriptors we own.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, timeout_ms) };
    }

    fn drain_eventfd(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes from our non-blocking eventfd.
        unsafe { libc::read(self.engine.efd.as_raw_fd(), &mut v as *mut u64 as *mut _, 8) };
    }

    /// Takes what the kernel or the pool completed.
    fn reap(&mut self) {
        let mut done: Vec<(u64, i32)> = Vec::new();
        match &mut self.backend {
            Backend::Uring(ring) => {
                loop {
                    done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
                    // Completions that found the queue full wait in the
                    // kernel; entering it with room moves them over.
                    if !ring.submission().cq_overflow() {
                        break;
                    }
                    if let Err(e) = ring.submit_and_wait(1) {
                        tracing::error!("io_uring_enter: {e}");
                        break;
                    }
                }
            }
            Backend::Pool(pool) => {
                done.extend(
                    pool.done
                        .lock()
                        .drain(..)
                        .map(|(i, r)| ((i as u64) << 1, r)),
                );
            }
        }
        for (ud, res) in done {
            let i = (ud >> 1) as usize;
            if ud & 1 == 1 {
                // The linked timeout: -ETIME when it fired, -ECANCELED when
                // the I/O ended first.
                if res == -libc::ETIME {
                    self.time_out(i);
                }
            } else {
                let slot = self.slots[i].as_mut().expect("completed slot");
                if slot.reported {
                    if let Some(n) = self.abandoned.get_mut(&slot.storage.dev) {
                        *n -= 1;
                    }
                    self.engine
                        .stats
                        .abandoned_now
                        .fetch_sub(1, Ordering::Relaxed);
                } else if res == -libc::ECANCELED {
                    // Cancelled by its timeout, whose CQE may come later.
                    self.time_out(i);
                    let slot = self.slots[i].as_mut().expect("slot");
                    if let Some(n) = self.abandoned.get_mut(&slot.storage.dev) {
                        *n -= 1;
                    }
                    self.engine
                        .stats
                        .abandoned_now
                        .fetch_sub(1, Ordering::Relaxed);
                } else {
                    let outcome = if res < 0 {
                        Outcome::Failed(std::io::Error::from_raw_os_error(-res))
                    } else {
                        let buf = slot.buf.take().expect("buffer");
                        Outcome::Done {
                            n: res as usize,
                            buf,
                        }
                    };
                    slot.reported = true;
                    let cb = slot.done.take().expect("callback");
                    self.ready.push((cb, outcome));
                }
            }
            let slot = self.slots[i].as_mut().expect("slot");
            slot.pending_cqes -= 1;
            if slot.pending_cqes == 0 {
                self.release(i);
            }
        }
    }

    /// Reports slot `i` as timed out, if it was not reported yet; an issued
    /// one is then abandoned until the kernel returns it.
    fn time_out(&mut self, i: usize) {
        let slot = self.slots[i].as_mut().expect("slot");
        if slot.reported {
            return;
        }
        slot.reported = true;
        let cb = slot.done.take().expect("callback");
        self.engine.stats.timed_out.fetch_add(1, Ordering::Relaxed);
        if slot.issued {
            *self.abandoned.entry(slot.storage.dev).or_default() += 1;
            self.engine
                .stats
                .abandoned_now
                .fetch_add(1, Ordering::Relaxed);
        } else {
            self.engine.stats.held_back.fetch_add(1, Ordering::Relaxed);
        }
        self.ready.push((cb, Outcome::TimedOut));
    }

    /// Times out what waits or runs past its deadline. On io_uring the
    /// linked timeout usually comes first, but not always: an I/O the
    /// kernel hands to an io-wq worker that then blocks (a statx or read on
    /// a frozen FUSE or NFS mount) may never see its linked timeout fire.
    fn expire(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                (!s.reported && s.deadline <= now).then_some(i)
            })
            .collect();
        for i in due {
            self.time_out(i);
        }
        if let Backend::Pool(pool) = &self.backend {
            // Timed out before a pool thread took them: never issued.
            let mut q = pool.queue.lock();
            let slots = &self.slots;
            let mut dropped = Vec::new();
            q.retain(|j| {
                let gone = slots[j.slot].as_ref().is_some_and(|s| s.reported);
                if gone {
                    dropped.push(j.slot);
                }
                !gone
            });
            drop(q);
            for i in dropped {
                let key = self.slots[i].as_ref().expect("slot").storage.dev;
                if let Some(n) = self.abandoned.get_mut(&key) {
                    *n -= 1;
                }
                self.engine
                    .stats
                    .abandoned_now
                    .fetch_sub(1, Ordering::Relaxed);
                self.release(i);
            }
        }
    }

    fn release(&mut self, i: usize) {
        if let Some(s) = self.slots[i].take()
            && self.abandoned.get(&s.storage.dev) == Some(&0)
        {
            self.abandoned.remove(&s.storage.dev);
        }
        self.free.push(i);
    }
}

enum JobOp {
    Read(*mut u8, usize),
    Write(*const u8, usize),
    Statx(Option<*const libc::c_char>, *mut u8),
}

/// Blocking work for a pool thread; the pointers are into a slot the
/// engine keeps until the thread reports back.
struct Job {
    slot: usize,
    fd: i32,
    offset: u64,
    op: JobOp,
}

// SAFETY: the pointers stay valid until the job's completion is reaped.
unsafe impl Send for Job {}

struct Pool {
    queue: Mutex<VecDeque<Job>>,
    work: Condvar,
    done: Mutex<Vec<(usize, i32)>>,
    /// The engine's eventfd (the engine lives as long as the process).
    efd: i32,
}

impl Pool {
    fn start(efd: i32) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            queue: Mutex::new(VecDeque::new()),
            work: Condvar::new(),
            done: Mutex::new(Vec::new()),
            efd,
        });
        for n in 0..POOL_THREADS {
            let p = pool.clone();
            std::thread::Builder::new()
                .name(format!("hactl-io{n}"))
                .stack_size(256 * 1024)
                .spawn(move || p.work())
                .expect("spawn an I/O thread");
        }
        pool
    }

    fn work(&self) {
        loop {
            let job = {
                let mut q = self.queue.lock();
                loop {
                    if let Some(j) = q.pop_front() {
                        break j;
                    }
                    self.work.wait(&mut q);
                }
            };
            let res = run_job(&job);
            self.done.lock().push((job.slot, res));
            let one: u64 = 1;
            // SAFETY: writes 8 bytes to the engine's eventfd.
            unsafe { libc::write(self.efd, &one as *const u64 as *const _, 8) };
        }
    }
}

/// Performs a job with blocking calls: bytes done or -errno.
fn run_job(job: &Job) -> i32 {
    let ret = |r: isize| {
        if r < 0 {
            -std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
        } else {
            r as i32
        }
    };
    loop {
        // SAFETY: the engine keeps the buffers and path until we report.
        let r = unsafe {
            match job.op {
                JobOp::Read(p, len) => libc::pread(job.fd, p as *mut _, len, job.offset as i64),
                JobOp::Write(p, len) => libc::pwrite(job.fd, p as *const _, len, job.offset as i64),
                JobOp::Statx(path, out) => match path {
                    Some(p) => libc::statx(
                        libc::AT_FDCWD,
                        p,
                        0,
                        libc::STATX_BASIC_STATS,
                        out as *mut libc::statx,
                    ) as isize,
                    None => libc::statx(
                        job.fd,
                        c"".as_ptr(),
                        libc::AT_EMPTY_PATH,
                        libc::STATX_BASIC_STATS,
                        out as *mut libc::statx,
                    ) as isize,
                },
            }
        };
        let r = ret(r);
        if r != -libc::EINTR {
            return r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    /// A lease-like file opened as the daemon opens one (not on tmpfs,
    /// which has no O_DIRECT).
    fn direct_file(dir: &tempfile::TempDir) -> Arc<File> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT | libc::O_SYNC)
            .open(dir.path().join("leases"))
            .expect("O_DIRECT file in /var/tmp");
        Arc::new(f)
    }

    /// Both ways of issuing: from the engine's thread and through io-wq.
    fn round_trip(e: &'static Engine) {
        for nowait in [false, true] {
            round_trip_as(e, Storage { dev: 1, nowait });
        }
    }

    fn round_trip_as(e: &'static Engine, st: Storage) {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let f = direct_file(&dir);
        let t = Duration::from_secs(10);
        let mut buf = AlignedBuf::zeroed(4096);
        buf[0] = 0x5a;
        buf[4095] = 0xa5;
        match e.wait(f.clone(), st, 8192, Request::Write { buf }, t) {
            Outcome::Done { n, .. } => assert_eq!(n, 4096),
            _ => panic!("{}: the write failed", e.kind().as_str()),
        }
        match e.wait(f.clone(), st, 8192, Request::Read { len: 4096 }, t) {
            Outcome::Done { n, buf } => {
                assert_eq!((n, buf[0], buf[4095]), (4096, 0x5a, 0xa5));
            }
            _ => panic!("{}: the read failed", e.kind().as_str()),
        }
        // Past the end of the file: nothing read (the caller says short).
        match e.wait(f.clone(), st, 1 << 20, Request::Read { len: 4096 }, t) {
            Outcome::Done { n, .. } => assert_eq!(n, 0),
            _ => panic!("{}: the read past the end failed", e.kind().as_str()),
        }
        match e.wait(f.clone(), st, 0, Request::Statx { path: None }, t) {
            Outcome::Done { buf, .. } => assert_eq!(statx_of(&buf).stx_size, 12288),
            _ => panic!("{}: statx failed", e.kind().as_str()),
        }
        let gone = CString::new(dir.path().join("gone").to_str().unwrap()).unwrap();
        match e.wait(f.clone(), st, 0, Request::Statx { path: Some(gone) }, t) {
            Outcome::Failed(err) => assert_eq!(err.raw_os_error(), Some(libc::ENOENT)),
            _ => panic!("{}: statx of no file did not fail", e.kind().as_str()),
        }
        // More at once than the completion queue holds, all answered.
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..3000 {
            let tx = tx.clone();
            e.submit(
                f.clone(),
                st,
                8192,
                Request::Read { len: 4096 },
                t,
                Box::new(move |o| tx.send(matches!(o, Outcome::Done { n: 4096, .. })).unwrap()),
            );
        }
        assert_eq!((0..3000).filter(|_| rx.recv().unwrap()).count(), 3000);
        // A timer fires, not before its time.
        let (tx, rx) = std::sync::mpsc::channel();
        let t0 = Instant::now();
        e.at(
            t0 + Duration::from_millis(100),
            Box::new(move || tx.send(t0.elapsed()).unwrap()),
        );
        assert!(rx.recv().unwrap() >= Duration::from_millis(100));
    }

    #[test]
    fn io_uring_reads_writes_stats_and_times() {
        let e = Engine::start(None);
        assert_eq!(
            e.kind(),
            Kind::IoUring,
            "io_uring is unavailable here (kernel.io_uring_disabled? seccomp?)"
        );
        round_trip(e);
    }

    #[test]
    fn the_thread_pool_reads_writes_stats_and_times() {
        let e = Engine::start(Some("threads"));
        assert_eq!(e.kind(), Kind::Threads);
        round_trip(e);
    }

    /// A read that never ends (a pipe nobody writes to) is reported timed
    /// out at its timeout, and the engine goes on serving others.
    #[test]
    fn a_read_that_never_ends_times_out_on_io_uring() {
        let e = Engine::start(None);
        let (r, _w) = nix::unistd::pipe().unwrap();
        let pipe = Arc::new(File::from(r));
        let t0 = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..3 {
            let tx = tx.clone();
            e.submit(
                pipe.clone(),
                Storage {
                    dev: 2,
                    nowait: false,
                },
                0,
                Request::Read { len: 4096 },
                Duration::from_millis(300),
                Box::new(move |o| {
                    tx.send((matches!(o, Outcome::TimedOut), t0.elapsed()))
                        .unwrap()
                }),
            );
        }
        for _ in 0..3 {
            let (timed_out, after) = rx.recv().unwrap();
            assert!(timed_out);
            assert!(after >= Duration::from_millis(300), "{after:?}");
            assert!(after < Duration::from_secs(5), "{after:?}");
        }
        assert_eq!(e.stats.timed_out.load(Ordering::Relaxed), 3);
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let f = direct_file(&dir);
        assert!(matches!(
            e.wait(
                f,
                Storage {
                    dev: 1,
                    nowait: false,
                },
                0,
                Request::Statx { path: None },
                Duration::from_secs(10)
            ),
            Outcome::Done { .. }
        ));
    }
}
