//! A resource lease's operations as state machines (sanlock's
//! `resource.c` and `paxos_lease.c` around the ballot): acquire
//! exclusive or shared ([`crate::paxos::PaxosAcquire`], the shared-lease
//! rules, the LVB, and the check that the lockspace instance the ballot ran
//! in is still joined), release, convert, the request record (ask a holder
//! to give a lease up; examine ours), and the daemon's own short leases
//! (the rindex lease).
//!
//! Each operation runs one step at a time: [`Op::step`] takes what the
//! last action produced and answers the next [`Step`]: an I/O, a timer, or
//! the result. What the lockspace knows (host states, our generation) is
//! asked of a [`LockspaceView`] at the step that needs it.
//!
//! Shared leases: a host takes the Paxos lease briefly (LFL_SHORT_HOLD),
//! marks its dblock "released" with a SHARED mode block, and frees the
//! leader. An exclusive acquirer that saw SHARED mode blocks during its
//! ballot must find every such holder dead (and erase its mode block)
//! before it keeps the lease.

use tracing::{debug, info, warn};

use super::lockspace::{Instance, Lockspace};
use super::{CoreError, Id, Ids, Io, IoFailure, IoOp, IoResult, Knobs, Layout, Now, Target, ms};
use crate::geometry::{Geometry, LFL_SHORT_HOLD};
use crate::hosts::HostStatus;
use crate::ondisk::dblock::{DBLOCK_FL_RELEASED, MBLOCK_OFFSET, MBLOCK_SHARED, ModeBlock};
use crate::ondisk::{self, DecodeError, LeaderRecord, Name, PaxosDblock, RequestRecord};
use crate::paxos::{self, PaxosAcquire, PaxosParams};
use crate::rv;

/// sanlock's fixed LVB sector number within a lease area.
pub const LVB_SECTOR: u64 = 2002;
/// Retries of a shared acquire that met another host's short hold.
pub const SH_RETRIES: u32 = 8;
/// What the geometry read of a lease asks for: a leader fits in 4K
/// whatever the sector size.
pub const SIZES_READ_LEN: usize = 4096;

/// What an operation asks of the lockspace it runs in.
pub trait LockspaceView {
    /// What the lockspace saw of `host_id` (None: never). Err: there is
    /// no lockspace to judge an owner by (`hactl direct`).
    fn host_status(&self, host_id: u64) -> Result<Option<HostStatus>, i32>;
    /// The joined, live instance, if there is one.
    fn instance(&self) -> Option<Instance>;
    /// The lockspace area's shape (where an owner's delta lease is).
    fn layout(&self) -> Option<Layout>;
    fn space_name(&self) -> Name;
}

impl LockspaceView for Lockspace {
    fn host_status(&self, host_id: u64) -> Result<Option<HostStatus>, i32> {
        Ok(Lockspace::host_status(self, host_id).cloned())
    }
    fn instance(&self) -> Option<Instance> {
        Lockspace::instance(self)
    }
    fn layout(&self) -> Option<Layout> {
        Lockspace::layout(self)
    }
    fn space_name(&self) -> Name {
        self.config().space_name
    }
}

/// `hactl direct` has no joined lockspace: a lease another host owns
/// cannot be judged (SANLK_ACQUIRE_LOCKSPACE, as sanlock).
pub struct NoLockspace;

impl LockspaceView for NoLockspace {
    fn host_status(&self, _: u64) -> Result<Option<HostStatus>, i32> {
        Err(rv::SANLK_ACQUIRE_LOCKSPACE)
    }
    fn instance(&self) -> Option<Instance> {
        None
    }
    fn layout(&self) -> Option<Layout> {
        None
    }
    fn space_name(&self) -> Name {
        Name::default()
    }
}

/// What the last action produced.
#[derive(Clone, Debug)]
pub enum Input {
    Start,
    Io {
        id: Id,
        result: IoResult,
    },
    Timer {
        id: Id,
    },
    /// The executor gave up a wait (the lockspace is stopping): the
    /// operation ends with -1, as an abandoned sanlock acquire.
    Cancelled {
        id: Id,
    },
}

/// What the operation needs next.
#[derive(Clone, Debug)]
pub enum Step<T> {
    Io(Io),
    /// Answer with [`Input::Timer`] when the clock reaches `at_ms`.
    Timer {
        id: Id,
        at_ms: u64,
    },
    Done(T),
}

/// A resource operation: one step per input.
pub trait Op {
    type Output;
    fn step(&mut self, now: Now, input: Input, ls: &dyn LockspaceView) -> Step<Self::Output>;
}

/// The lease an operation works on and who works on it.
#[derive(Clone, Debug)]
pub struct LeaseRef {
    pub space_name: Name,
    pub resource_name: Name,
    /// The area's shape if known (a lease we hold); None: read it from the
    /// leader first (`direct_read_leader_sizes`).
    pub layout: Option<Layout>,
    pub io_timeout: u64,
    pub watchdog_fire_timeout: u64,
}

impl LeaseRef {
    fn timeout_secs(&self) -> u64 {
        self.io_timeout.max(1)
    }
}

/// The I/O side every operation shares: ids, the area, the pending id.
#[derive(Debug)]
struct Ctx {
    ids: Ids,
    layout: Option<Layout>,
    timeout_secs: u64,
    /// The I/O or timer whose completion we wait for.
    pending: Id,
    /// The last failed I/O, kept as the cause of the error it leads to.
    failure: Option<IoFailure>,
}

impl Ctx {
    fn new(lease: &LeaseRef) -> Ctx {
        Ctx {
            ids: Ids::default(),
            layout: lease.layout,
            timeout_secs: lease.timeout_secs(),
            pending: Id(0),
            failure: None,
        }
    }

    fn ss(&self) -> usize {
        self.layout.map_or(0, |l| l.sector_size)
    }

    fn area_len(&self) -> u64 {
        self.layout.map_or(SIZES_READ_LEN as u64, |l| l.align_size)
    }

    fn io<T>(&mut self, target: Target, area_len: u64, offset: u64, op: IoOp) -> Step<T> {
        let id = self.ids.next();
        self.pending = id;
        Step::Io(Io {
            id,
            target,
            area_len,
            offset,
            op,
            timeout_ms: ms(self.timeout_secs),
        })
    }

    fn read<T>(&mut self, offset: u64, len: usize) -> Step<T> {
        let a = self.area_len();
        self.io(Target::Lease, a, offset, IoOp::Read { len })
    }

    fn write<T>(&mut self, offset: u64, data: Vec<u8>) -> Step<T> {
        let a = self.area_len();
        self.io(Target::Lease, a, offset, IoOp::Write { data })
    }

    fn timer<T>(&mut self, at_ms: u64) -> Step<T> {
        let id = self.ids.next();
        self.pending = id;
        Step::Timer { id, at_ms }
    }

    /// Our host block: `dblock` (if any) and a SHARED mode block for
    /// `shared_gen` (if any), the rest of the sector zero.
    fn write_host_block<T>(
        &mut self,
        host_id: u64,
        dblock: Option<PaxosDblock>,
        shared_gen: Option<u64>,
    ) -> Step<T> {
        let ss = self.ss();
        let mut s = match dblock {
            Some(mut d) => paxos::dblock_sector(&mut d, ss),
            None => vec![0u8; ss],
        };
        if let Some(generation) = shared_gen {
            let mb = ModeBlock {
                flags: MBLOCK_SHARED,
                generation,
            };
            s[MBLOCK_OFFSET..MBLOCK_OFFSET + ondisk::dblock::MODE_BLOCK_SIZE]
                .copy_from_slice(&mb.encode());
        }
        self.write((1 + host_id) * ss as u64, s)
    }

    /// The LVB sector, where it lies inside the lease area. sanlock puts
    /// it at sector 2002 for every geometry, which for 4K sectors with
    /// areas under 8 MiB is in the next lease: hactl refuses those.
    fn lvb_offset(&self) -> Option<u64> {
        let l = self.layout?;
        let at = LVB_SECTOR * l.sector_size as u64;
        (at + l.sector_size as u64 <= l.align_size).then_some(at)
    }

    /// Whether `input` completes what we wait for; the result of an I/O.
    fn take(&mut self, input: Input) -> Option<Resumed> {
        match input {
            Input::Io { id, result } if id == self.pending => {
                self.pending = Id(0);
                if let Err(f) = &result {
                    self.failure = Some(f.clone());
                }
                Some(Resumed::Io(result))
            }
            Input::Timer { id } if id == self.pending => {
                self.pending = Id(0);
                Some(Resumed::Timer)
            }
            Input::Cancelled { id } if id == self.pending => {
                self.pending = Id(0);
                Some(Resumed::Cancelled)
            }
            _ => None,
        }
    }

    /// An error, with the I/O failure that led to it if there was one.
    fn err(&mut self, what: &'static str, rv: i32) -> CoreError {
        match self.failure.take() {
            Some(f) => CoreError::io(what, rv, f),
            None => CoreError::new(what, rv),
        }
    }
}

#[derive(Debug)]
enum Resumed {
    Io(IoResult),
    Timer,
    Cancelled,
}

impl Resumed {
    fn io(self) -> IoResult {
        match self {
            Resumed::Io(r) => r,
            _ => Err(IoFailure::code(-1)),
        }
    }
}

/// The geometry a lease's leader names (`direct_read_leader_sizes`).
pub fn lease_sizes(buf: &[u8]) -> Result<Geometry, i32> {
    let lr = LeaderRecord::decode(buf).map_err(|e| e.sanlk_rv())?;
    if lr.magic != ondisk::DELTA_DISK_MAGIC && lr.magic != ondisk::PAXOS_DISK_MAGIC {
        return Err(rv::SANLK_LEADER_MAGIC);
    }
    Geometry::from_leader(lr.sector_size, lr.flags).ok_or(rv::SANLK_LEADER_MAGIC)
}

/// Takes in the geometry read (of [`SIZES_READ_LEN`] bytes at 0).
fn read_sizes(c: &mut Ctx, r: Resumed) -> Result<(), CoreError> {
    let g = r
        .io()
        .map_err(|f| f.rv)
        .and_then(|b| lease_sizes(&b))
        .map_err(|e| c.err("reading the lease's geometry", e))?;
    c.layout = Some(g.into());
    Ok(())
}

// ---- the ballot ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PaxosWait {
    Area,
    Leader,
    OwnerDelta,
    Dblock,
    WrittenDblock,
    WrittenLeader,
    Slept,
}

/// One Disk Paxos acquire, its steps turned into I/O on the lease area
/// and the lockspace area (the owner's delta lease).
#[derive(Debug)]
struct Ballot {
    m: PaxosAcquire,
    wait: PaxosWait,
    host_id: u64,
    takeover_without_dead: bool,
}

enum BallotNext {
    Act(Step<()>),
    Done(paxos::Outcome),
}

impl Ballot {
    fn new(mut p: PaxosParams, knobs: Knobs) -> Ballot {
        if knobs.sanlock_commit_check {
            p.flags |= paxos::PAXOS_COMMIT_HOST_ID_ONLY;
        }
        let host_id = p.host_id;
        Ballot {
            m: PaxosAcquire::new(p),
            wait: PaxosWait::Area,
            host_id,
            takeover_without_dead: knobs.takeover_without_dead,
        }
    }

    fn start(&mut self, c: &mut Ctx, now: Now, ls: &dyn LockspaceView) -> BallotNext {
        let s = self.m.step(now.secs(), paxos::Input::Start);
        self.drive(c, now, s, ls)
    }

    fn resume(&mut self, c: &mut Ctx, now: Now, r: Resumed, ls: &dyn LockspaceView) -> BallotNext {
        let input = match (self.wait, r) {
            (_, Resumed::Cancelled) => return BallotNext::Done(Err(-1)),
            (PaxosWait::Slept, _) => paxos::Input::Slept,
            (w, r) => {
                let r = r.io().map_err(|f| {
                    // The machine turns a failed write into SANLK_DBLOCK_WRITE
                    // (-211) or the like; the errno is said here (-28 on a
                    // full file system), as sanlock logs it.
                    let what = match w {
                        PaxosWait::WrittenDblock => Some("dblock"),
                        PaxosWait::WrittenLeader => Some("leader"),
                        _ => None,
                    };
                    if let Some(what) = what {
                        warn!(
                            "ballot {} {what} write error {}: {f}",
                            self.m.ballot(),
                            f.rv
                        );
                    }
                    f.rv
                });
                match w {
                    PaxosWait::Area => paxos::Input::Area(r),
                    PaxosWait::Leader => paxos::Input::Leader(r),
                    PaxosWait::OwnerDelta => paxos::Input::OwnerDelta(
                        r.and_then(|b| crate::delta::verify_sector(&b, &ls.space_name())),
                    ),
                    PaxosWait::Dblock => paxos::Input::Dblock(
                        r.map(|b| PaxosDblock::decode(&b).expect("a sector holds a dblock")),
                    ),
                    _ => paxos::Input::Written(r.map(|_| ())),
                }
            }
        };
        let s = self.m.step(now.secs(), input);
        self.drive(c, now, s, ls)
    }

    fn drive(
        &mut self,
        c: &mut Ctx,
        now: Now,
        mut s: paxos::Step,
        ls: &dyn LockspaceView,
    ) -> BallotNext {
        let ss = c.ss();
        loop {
            let (wait, step) = match s {
                paxos::Step::ReadArea => {
                    let len = c.area_len() as usize;
                    (PaxosWait::Area, c.read(0, len))
                }
                paxos::Step::ReadLeader => (PaxosWait::Leader, c.read(0, ss)),
                paxos::Step::HostInfo { owner_id } => {
                    s = match ls.host_status(owner_id) {
                        Ok(hs) => self.m.step(now.secs(), paxos::Input::HostInfo(hs)),
                        Err(e) => return BallotNext::Done(Err(e)),
                    };
                    continue;
                }
                paxos::Step::ReadOwnerDelta { owner_id } => {
                    if self.takeover_without_dead {
                        let free = LeaderRecord::default();
                        s = self.m.step(now.secs(), paxos::Input::OwnerDelta(Ok(free)));
                        continue;
                    }
                    let at = ls.layout().and_then(|l| {
                        let at = owner_id.checked_sub(1)? * l.sector_size as u64;
                        (at + l.sector_size as u64 <= l.align_size).then_some((l, at))
                    });
                    let Some((l, at)) = at else {
                        // A leader naming an owner the lockspace cannot have.
                        s = self
                            .m
                            .step(now.secs(), paxos::Input::OwnerDelta(Err(-libc::EINVAL)));
                        continue;
                    };
                    let read = IoOp::Read { len: l.sector_size };
                    (
                        PaxosWait::OwnerDelta,
                        c.io(Target::Lockspace, l.align_size, at, read),
                    )
                }
                paxos::Step::ReadDblock { host_id } => {
                    (PaxosWait::Dblock, c.read((1 + host_id) * ss as u64, ss))
                }
                paxos::Step::WriteDblock(data) => (
                    PaxosWait::WrittenDblock,
                    c.write((1 + self.host_id) * ss as u64, data),
                ),
                paxos::Step::WriteLeader(data) => (PaxosWait::WrittenLeader, c.write(0, data)),
                paxos::Step::Sleep(d) => (PaxosWait::Slept, c.timer(now.ms + d.as_millis() as u64)),
                paxos::Step::Done(r) => return BallotNext::Done(r),
            };
            self.wait = wait;
            return BallotNext::Act(step);
        }
    }
}

// ---- freeing the leader ----

/// `paxos_lease_release`: reread the leader (checked, as sanlock) and free
/// it if it is still the one we wrote.
#[derive(Clone, Debug)]
struct FreeLeader {
    last: LeaderRecord,
    host_id: u64,
    generation: u64,
    rename: Option<Name>,
    names: (Name, Name),
    /// The leader we wrote free (its write is under way or done).
    freed: Option<LeaderRecord>,
}

enum Freed {
    Act(Step<()>),
    /// Ok(true): we freed it; Ok(false): another host wrote it meanwhile.
    Done(Result<bool, CoreError>),
}

impl FreeLeader {
    fn start(&mut self, c: &mut Ctx) -> Freed {
        let ss = c.ss();
        Freed::Act(c.read(0, ss))
    }

    fn resume(&mut self, c: &mut Ctx, now: Now, r: Resumed) -> Freed {
        if self.freed.is_some() {
            return Freed::Done(match r.io() {
                Ok(_) => Ok(true),
                Err(f) => Err(CoreError::io("releasing the leader", f.rv, f)),
            });
        }
        let b = match r.io() {
            Ok(b) => b,
            Err(f) => return Freed::Done(Err(CoreError::io("reading the leader", f.rv, f))),
        };
        let now_leader = LeaderRecord::decode(&b).expect("a sector holds a leader");
        let (ls, res) = (&self.names.0, &self.names.1);
        match now_leader.verify_paxos(Some(ls), Some(res), self.host_id) {
            Ok(()) | Err(DecodeError::WrongSectorSize { .. }) => {}
            Err(e) => return Freed::Done(Err(CoreError::new("reading the leader", e.sanlk_rv()))),
        }
        let ss = c.ss();
        match paxos::release_leader(
            &now_leader,
            &self.last,
            self.host_id,
            self.generation,
            now.secs(),
            ss,
        ) {
            Err(e) => Freed::Done(Err(CoreError::new("releasing the leader", e))),
            Ok(None) => Freed::Done(Ok(false)),
            Ok(Some((mut lr, mut sector))) => {
                if let Some(n) = self.rename {
                    lr.resource_name = n;
                    sector = paxos::leader_sector(&mut lr, ss);
                }
                self.freed = Some(lr);
                Freed::Act(c.write(0, sector))
            }
        }
    }
}

fn cast<T>(s: Step<()>) -> Step<T> {
    match s {
        Step::Io(io) => Step::Io(io),
        Step::Timer { id, at_ms } => Step::Timer { id, at_ms },
        Step::Done(()) => unreachable!("sub-steps never finish an operation"),
    }
}

// ---- shared holders ----

/// `clear_dead_shared`: reads the mode block of each host a ballot saw
/// holding the lease SHARED; a holder that is dead (`shared_holder_live`)
/// has its block erased. The result is how many are alive.
#[derive(Debug)]
struct ClearShared {
    others: Vec<u64>,
    i: usize,
    erasing: bool,
    live: usize,
}

enum Cleared {
    Act(Step<()>),
    Done(Result<usize, CoreError>),
}

impl ClearShared {
    fn new(others: Vec<u64>) -> ClearShared {
        ClearShared {
            others,
            i: 0,
            erasing: false,
            live: 0,
        }
    }

    /// Reads the next holder's block, or ends.
    fn next(&mut self, c: &mut Ctx) -> Cleared {
        let Some(&h) = self.others.get(self.i) else {
            return Cleared::Done(Ok(self.live));
        };
        let ss = c.ss();
        self.erasing = false;
        Cleared::Act(c.read((1 + h) * ss as u64, ss))
    }

    fn resume(
        &mut self,
        c: &mut Ctx,
        now: Now,
        r: Resumed,
        ls: &dyn LockspaceView,
        lease: &LeaseRef,
    ) -> Cleared {
        let h = self.others[self.i];
        if self.erasing {
            if let Err(f) = r.io() {
                let e = CoreError::io("erasing a dead host's shared mode block", f.rv, f);
                return Cleared::Done(Err(e));
            }
            self.i += 1;
            return self.next(c);
        }
        let b = match r.io() {
            Ok(b) => b,
            Err(f) => {
                let e = CoreError::io("reading a shared holder's mode block", f.rv, f);
                return Cleared::Done(Err(e));
            }
        };
        let mb = ModeBlock::decode(&b[MBLOCK_OFFSET..MBLOCK_OFFSET + 16])
            .expect("a sector holds a mode block");
        if !mb.is_shared() || mb.generation == 0 {
            self.i += 1;
            return self.next(c);
        }
        let hs = ls.host_status(h).ok().flatten();
        if crate::hosts::shared_holder_live(
            hs.as_ref(),
            mb.generation,
            now.secs(),
            lease.io_timeout,
            lease.watchdog_fire_timeout,
        ) {
            self.live += 1;
            self.i += 1;
            return self.next(c);
        }
        info!(
            "cleared shared lease for dead host_id {h} gen {}",
            mb.generation
        );
        self.erasing = true;
        Cleared::Act(c.write_host_block(h, None, None))
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

// ---- warm leases ----

/// What this host knows of a lease it freed itself, for its next acquire
/// of it ([`PaxosAcquire::warm_start`]): the leader it wrote free, its
/// ballot number then, the area's shape, and the lockspace instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Warm {
    pub space_name: Name,
    pub resource_name: Name,
    pub freed: LeaderRecord,
    pub mbal: u64,
    pub layout: Layout,
    pub host_id: u64,
    pub generation: u64,
}

/// The [`Warm`] records of a host's freed leases, by where the lease is.
/// An acquire takes its lease's record out (it is good for one ballot);
/// a release that freed the lease puts the new one in. Bounded: past
/// [`WARM_MAX`] leases one record is dropped (its lease's next acquire
/// reads the whole area, as without any).
#[derive(Debug)]
pub struct WarmLeases<K> {
    map: std::collections::HashMap<K, Warm>,
}

/// At most this many [`Warm`] records (~250 bytes each).
pub const WARM_MAX: usize = 4096;

impl<K> Default for WarmLeases<K> {
    fn default() -> Self {
        WarmLeases {
            map: std::collections::HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> WarmLeases<K> {
    /// The record for an acquire of the lease at `key` by this instance
    /// (host_id, generation) of the lockspace; None if there is none or it
    /// is another instance's.
    pub fn take(&mut self, key: &K, host_id: u64, generation: u64) -> Option<Warm> {
        self.map
            .remove(key)
            .filter(|w| w.host_id == host_id && w.generation == generation)
    }

    /// After a release: keeps its record, if it left one.
    pub fn put(&mut self, key: K, released: &Released) {
        let Some(w) = released.warm else {
            return;
        };
        if self.map.len() >= WARM_MAX
            && !self.map.contains_key(&key)
            && let Some(k) = self.map.keys().next().cloned()
        {
            self.map.remove(&k);
        }
        self.map.insert(key, w);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

// ---- acquire ----

/// What an acquire asks for.
#[derive(Clone, Debug)]
pub struct AcquireParams {
    pub lease: LeaseRef,
    pub shared: bool,
    /// `SANLK_ACQUIRE_OWNER_NOWAIT`: fail at once if another host owns it.
    pub owner_nowait: bool,
    /// Read the LVB sector into the result.
    pub lvb: bool,
    /// Fail with SANLK_ACQUIRE_LVER unless the lease is at this lver (0: any).
    pub acquire_lver: u64,
    /// Write this num_hosts into the leader (0: leave it).
    pub new_num_hosts: u64,
    /// Seeds the random back-offs (ballots, shared retries).
    pub seed: u64,
    pub knobs: Knobs,
    /// This host freed the lease last ([`WarmLeases::take`]): the ballot
    /// starts from a leader-sector read, not the whole area.
    pub warm: Option<Warm>,
}

/// A lease acquired on disk: what a held resource starts from.
#[derive(Clone, Debug)]
pub struct Acquired {
    pub leader: LeaderRecord,
    pub dblock: PaxosDblock,
    pub layout: Layout,
    pub lvb: Option<Vec<u8>>,
    /// The ballot started warm and found the leader as this host left it.
    pub warm: bool,
}

#[derive(Debug)]
enum AcqPhase {
    Sizes,
    Ballot(Box<Ballot>),
    /// Before another shared try.
    Backoff,
    /// Shared: our released dblock with the SHARED mode block.
    ModeWritten,
    /// Shared: the Paxos lease goes back.
    FreeShort(Box<FreeLeader>),
    /// Shared, the release failed: our mode block goes too.
    UndoMode(CoreError),
    /// A failed step: the leader goes back, then the error.
    UndoLeader(Box<FreeLeader>, CoreError),
    /// Exclusive after SHARED holders were seen: are they all dead?
    Clear(Box<ClearShared>),
    /// Shared holders are alive: our dblock released, then the leader.
    ClearFailed(CoreError),
    Lvb,
    Done,
}

/// `acquire_token` on disk, exclusive or shared.
#[derive(Debug)]
pub struct Acquire {
    p: AcquireParams,
    c: Ctx,
    phase: AcqPhase,
    instance: Option<Instance>,
    tries: u32,
    rng: u64,
    won: Option<(LeaderRecord, PaxosDblock)>,
    lvb: Option<Vec<u8>>,
    /// The layout is the lockspace's, taken as a hint (sanlock's "starting
    /// hint, may be changed"): the ballot's first area read checks it.
    layout_hint: bool,
    warm_hit: bool,
}

impl Acquire {
    pub fn new(p: AcquireParams) -> Acquire {
        let c = Ctx::new(&p.lease);
        let rng = p.seed | 1;
        Acquire {
            p,
            c,
            phase: AcqPhase::Sizes,
            instance: None,
            tries: 0,
            rng,
            won: None,
            lvb: None,
            layout_hint: false,
            warm_hit: false,
        }
    }

    fn host(&self) -> (u64, u64) {
        self.instance.map_or((0, 0), |i| (i.host_id, i.generation))
    }

    fn fail(&mut self, e: CoreError) -> Step<Result<Acquired, CoreError>> {
        self.phase = AcqPhase::Done;
        Step::Done(Err(e))
    }

    fn free_leader(&self) -> FreeLeader {
        let (host_id, generation) = self.host();
        FreeLeader {
            last: self.won.map(|w| w.0).unwrap_or_default(),
            host_id,
            generation,
            rename: None,
            names: (self.p.lease.space_name, self.p.lease.resource_name),
            freed: None,
        }
    }

    fn released_dblock(&self) -> PaxosDblock {
        let mut d = self.won.map(|w| w.1).unwrap_or_default();
        d.flags = DBLOCK_FL_RELEASED;
        d
    }

    fn ballot(&mut self, now: Now, ls: &dyn LockspaceView) -> Step<Result<Acquired, CoreError>> {
        let (host_id, host_generation) = self.host();
        let mut flags = 0;
        if self.p.owner_nowait {
            flags |= paxos::PAXOS_ACQUIRE_OWNER_NOWAIT;
        }
        if self.p.shared {
            flags |= paxos::PAXOS_ACQUIRE_SHARED;
        }
        let seed = xorshift(&mut self.rng);
        if self.p.knobs.warm_skips_phase1 {
            flags |= paxos::PAXOS_WARM_SKIPS_PHASE1;
        }
        let mut b = Box::new(Ballot::new(
            PaxosParams {
                host_id,
                host_generation,
                sector_size: self.c.ss(),
                flags,
                acquire_lver: self.p.acquire_lver,
                new_num_hosts: self.p.new_num_hosts,
                watchdog_fire_timeout: self.p.lease.watchdog_fire_timeout,
                io_timeout: self.p.lease.io_timeout,
                seed,
                names: Some((self.p.lease.space_name, self.p.lease.resource_name)),
            },
            self.p.knobs,
        ));
        if let Some(w) = self.p.warm.take() {
            b.m.warm_start(w.freed, w.mbal);
        }
        let next = b.start(&mut self.c, now, ls);
        self.phase = AcqPhase::Ballot(b);
        self.ballot_next(now, next, ls)
    }

    fn ballot_next(
        &mut self,
        now: Now,
        next: BallotNext,
        ls: &dyn LockspaceView,
    ) -> Step<Result<Acquired, CoreError>> {
        let outcome = match next {
            BallotNext::Act(s) => return cast(s),
            BallotNext::Done(o) => o,
        };
        let AcqPhase::Ballot(b) = std::mem::replace(&mut self.phase, AcqPhase::Done) else {
            unreachable!("a ballot finishes in the ballot phase")
        };
        self.warm_hit = b.m.was_warm();
        match outcome {
            Err(e)
                if self.p.shared
                    && matches!(
                        e,
                        rv::SANLK_ACQUIRE_IDLIVE
                            | rv::SANLK_ACQUIRE_OWNED
                            | rv::SANLK_ACQUIRE_OTHER
                    )
                    && b.m.seen_leader().flags & LFL_SHORT_HOLD != 0 =>
            {
                // Another host holds the Paxos lease only to take it shared.
                self.tries += 1;
                if self.tries > SH_RETRIES {
                    return self.fail(CoreError::new("shared acquire", rv::SANLK_ACQUIRE_SHRETRY));
                }
                self.phase = AcqPhase::Backoff;
                let d = xorshift(&mut self.rng) % 1_000_000;
                self.c.timer(now.ms + d / 1000)
            }
            Err(e) => {
                let e = self.c.err("paxos acquire", e);
                self.fail(e)
            }
            Ok((leader, dblock)) => {
                let (host_id, generation) = self.host();
                self.won = Some((leader, dblock));
                let others: Vec<u64> =
                    b.m.shared_seen()
                        .iter()
                        .copied()
                        .filter(|&h| h != host_id)
                        .collect();
                if self.p.shared {
                    // Our hold becomes the mode block; the Paxos lease goes back.
                    self.phase = AcqPhase::ModeWritten;
                    let d = self.released_dblock();
                    return self.c.write_host_block(host_id, Some(d), Some(generation));
                }
                if !others.is_empty() {
                    let mut cs = Box::new(ClearShared::new(others));
                    let next = cs.next(&mut self.c);
                    return self.cleared(now, cs, next, ls);
                }
                self.after_disk(now, ls)
            }
        }
    }

    /// Goes on with `clear_dead_shared`, or after it.
    fn cleared(
        &mut self,
        now: Now,
        cs: Box<ClearShared>,
        next: Cleared,
        ls: &dyn LockspaceView,
    ) -> Step<Result<Acquired, CoreError>> {
        match next {
            Cleared::Act(s) => {
                self.phase = AcqPhase::Clear(cs);
                cast(s)
            }
            Cleared::Done(Ok(0)) => self.after_disk(now, ls),
            Cleared::Done(Ok(_)) => {
                self.clear_failed(CoreError::new("shared holders are alive", -libc::EAGAIN))
            }
            Cleared::Done(Err(e)) => self.clear_failed(e),
        }
    }

    fn clear_failed(&mut self, e: CoreError) -> Step<Result<Acquired, CoreError>> {
        let (host_id, _) = self.host();
        let d = self.released_dblock();
        self.phase = AcqPhase::ClearFailed(e);
        self.c.write_host_block(host_id, Some(d), None)
    }

    fn acquired_so_far(&self) -> Acquired {
        let (leader, dblock) = self.won.expect("won");
        Acquired {
            leader,
            dblock,
            layout: self.c.layout.expect("known"),
            lvb: self.lvb.clone(),
            warm: self.warm_hit,
        }
    }

    /// The disk work is done: the LVB, then the instance check.
    fn after_disk(
        &mut self,
        now: Now,
        ls: &dyn LockspaceView,
    ) -> Step<Result<Acquired, CoreError>> {
        if self.p.lvb && self.lvb.is_none() {
            let at = self.c.lvb_offset().expect("checked at the start");
            let ss = self.c.ss();
            self.phase = AcqPhase::Lvb;
            return self.c.read(at, ss);
        }
        self.finish(now, ls)
    }

    /// The lockspace may have failed, or been rejoined with a new
    /// generation, while we balloted: a lease won for the old instance is
    /// not ours to hand out (others may take it at once). It stays ours on
    /// disk until this host is DEAD to the others. sanlock compares only
    /// the host_id here; the simulation showed why the generation matters.
    fn finish(&mut self, now: Now, ls: &dyn LockspaceView) -> Step<Result<Acquired, CoreError>> {
        let _ = now;
        let still = match (self.instance, ls.instance()) {
            (Some(a), Some(b)) if self.p.knobs.sanlock_token_check => a.host_id == b.host_id,
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        if !still {
            warn!(
                "r {}:{} acquired for a lockspace instance that is gone: dropped",
                self.p.lease.space_name, self.p.lease.resource_name
            );
            return self.fail(CoreError::new(
                "the lockspace failed during the acquire",
                -libc::ENOSPC,
            ));
        }
        self.phase = AcqPhase::Done;
        Step::Done(Ok(self.acquired_so_far()))
    }
}

impl Op for Acquire {
    type Output = Result<Acquired, CoreError>;

    fn step(&mut self, now: Now, input: Input, ls: &dyn LockspaceView) -> Step<Self::Output> {
        if let Input::Start = input {
            self.instance = ls.instance();
            if self.instance.is_none() {
                return self.fail(CoreError::new("no live lockspace", -libc::ENOSPC));
            }
            let (host_id, generation) = self.host();
            self.p.warm = self.p.warm.filter(|w| {
                !self.p.shared
                    && w.host_id == host_id
                    && w.generation == generation
                    && w.space_name == self.p.lease.space_name
                    && w.resource_name == self.p.lease.resource_name
            });
            if let Some(w) = self.p.warm {
                // The shape the lease had when we freed it. A leader as
                // we wrote it has it still; if the acquire falls back to
                // the area read, that read checks it as it checks the
                // lockspace's (the area may have been initialised again),
                // unless the caller gave the shape.
                self.layout_hint = self.c.layout.is_none();
                self.c.layout = Some(w.layout);
                return self.sized(now, ls);
            }
            if self.c.layout.is_some() {
                return self.sized(now, ls);
            }
            // Most leases have their lockspace's geometry: the ballot's area
            // read then needs no geometry read before it (9 I/Os, not 10).
            // The LVB's place depends on the geometry: read it first there.
            if !self.p.lvb
                && let Some(l) = ls.layout()
            {
                self.c.layout = Some(l);
                self.layout_hint = true;
                return self.sized(now, ls);
            }
            self.phase = AcqPhase::Sizes;
            return self.c.read(0, SIZES_READ_LEN);
        }
        let Some(r) = self.c.take(input) else {
            // Not what we wait for (a stale completion).
            return Step::Done(Err(CoreError::new(
                "unexpected completion",
                rv::SANLK_ERROR,
            )));
        };
        let (host_id, _) = self.host();
        match std::mem::replace(&mut self.phase, AcqPhase::Done) {
            AcqPhase::Sizes => match read_sizes(&mut self.c, r) {
                Ok(()) => self.sized(now, ls),
                Err(e) => self.fail(e),
            },
            AcqPhase::Ballot(b)
                if self.layout_hint && b.wait == PaxosWait::Area && !b.m.was_warm() =>
            {
                self.layout_hint = false;
                self.hinted_area(now, b, r, ls)
            }
            AcqPhase::Ballot(mut b) => {
                let next = b.resume(&mut self.c, now, r, ls);
                self.phase = AcqPhase::Ballot(b);
                self.ballot_next(now, next, ls)
            }
            AcqPhase::Backoff => match r {
                Resumed::Cancelled => self.fail(CoreError::new("shared acquire abandoned", -1)),
                _ => self.ballot(now, ls),
            },
            AcqPhase::ModeWritten => match r.io() {
                Err(f) => {
                    let e = CoreError::io("writing our shared mode block", f.rv, f);
                    let mut fl = self.free_leader();
                    let s = fl.start(&mut self.c);
                    self.phase = AcqPhase::UndoLeader(Box::new(fl), e);
                    match s {
                        Freed::Act(s) => cast(s),
                        Freed::Done(_) => unreachable!("a release starts with a read"),
                    }
                }
                Ok(_) => {
                    let mut fl = self.free_leader();
                    match fl.start(&mut self.c) {
                        Freed::Act(s) => {
                            self.phase = AcqPhase::FreeShort(Box::new(fl));
                            cast(s)
                        }
                        Freed::Done(_) => unreachable!("a release starts with a read"),
                    }
                }
            },
            AcqPhase::FreeShort(mut fl) => match fl.resume(&mut self.c, now, r) {
                Freed::Act(s) => {
                    self.phase = AcqPhase::FreeShort(fl);
                    cast(s)
                }
                Freed::Done(Ok(_)) => self.after_disk(now, ls),
                Freed::Done(Err(e)) => {
                    // Our mode block goes with the failed hold.
                    let d = self.released_dblock();
                    self.phase = AcqPhase::UndoMode(e);
                    self.c.write_host_block(host_id, Some(d), None)
                }
            },
            AcqPhase::UndoMode(e) => self.fail(e),
            AcqPhase::UndoLeader(mut fl, e) => match fl.resume(&mut self.c, now, r) {
                Freed::Act(s) => {
                    self.phase = AcqPhase::UndoLeader(fl, e);
                    cast(s)
                }
                Freed::Done(_) => self.fail(e),
            },
            AcqPhase::Clear(mut cs) => {
                let next = cs.resume(&mut self.c, now, r, ls, &self.p.lease);
                self.cleared(now, cs, next, ls)
            }
            AcqPhase::ClearFailed(e) => {
                let mut fl = self.free_leader();
                match fl.start(&mut self.c) {
                    Freed::Act(s) => {
                        self.phase = AcqPhase::UndoLeader(Box::new(fl), e);
                        cast(s)
                    }
                    Freed::Done(_) => unreachable!("a release starts with a read"),
                }
            }
            AcqPhase::Lvb => {
                let ss = self.c.ss();
                self.lvb = Some(match r.io() {
                    Ok(b) => b.to_vec(),
                    Err(f) => {
                        warn!(
                            "{}:{}: lvb read failed: {f}",
                            self.p.lease.space_name, self.p.lease.resource_name
                        );
                        vec![0u8; ss]
                    }
                });
                self.finish(now, ls)
            }
            AcqPhase::Done => {
                Step::Done(Err(CoreError::new("acquire already done", rv::SANLK_ERROR)))
            }
        }
    }
}

impl Acquire {
    /// The first area read made with the lockspace's geometry: the
    /// leader says the lease's own. A different one starts the ballot
    /// again with it (nothing was written yet); an area past the end of
    /// its file or device falls back to the geometry read.
    fn hinted_area(
        &mut self,
        now: Now,
        mut b: Box<Ballot>,
        r: Resumed,
        ls: &dyn LockspaceView,
    ) -> Step<Result<Acquired, CoreError>> {
        let r = match r {
            Resumed::Io(Ok(buf)) => buf,
            Resumed::Io(Err(f)) if f.rv == -libc::EMSGSIZE || f.rv == -libc::ENOSPC => {
                self.c.layout = None;
                self.c.failure = None;
                self.phase = AcqPhase::Sizes;
                return self.c.read(0, SIZES_READ_LEN);
            }
            other => {
                let next = b.resume(&mut self.c, now, other, ls);
                self.phase = AcqPhase::Ballot(b);
                return self.ballot_next(now, next, ls);
            }
        };
        let g: Layout = match lease_sizes(&r) {
            Ok(g) => g.into(),
            Err(e) => {
                let e = self.c.err("reading the lease's geometry", e);
                return self.fail(e);
            }
        };
        let hint = self.c.layout.expect("a hint");
        if (g.sector_size, g.align_size) != (hint.sector_size, hint.align_size) {
            debug!(
                "{}:{}: lease geometry {}/{} differs from the lockspace's {}/{}: read again",
                self.p.lease.space_name,
                self.p.lease.resource_name,
                g.sector_size,
                g.align_size,
                hint.sector_size,
                hint.align_size
            );
            self.c.layout = Some(g);
            return self.ballot(now, ls);
        }
        self.c.layout = Some(g);
        let next = b.resume(&mut self.c, now, Resumed::Io(Ok(r)), ls);
        self.phase = AcqPhase::Ballot(b);
        self.ballot_next(now, next, ls)
    }

    fn sized(&mut self, now: Now, ls: &dyn LockspaceView) -> Step<Result<Acquired, CoreError>> {
        if self.p.lvb && self.c.lvb_offset().is_none() {
            let l = self.c.layout.expect("known");
            warn!(
                "{}:{}: no LVB for {}-byte sectors in {}-byte areas (sanlock would use the next lease)",
                self.p.lease.space_name, self.p.lease.resource_name, l.sector_size, l.align_size
            );
            return self.fail(CoreError::new("no LVB in this geometry", -libc::EINVAL));
        }
        self.ballot(now, ls)
    }
}

// ---- release and convert ----

/// A lease this host holds, as its release or convert needs it.
#[derive(Clone, Debug)]
pub struct Held {
    pub lease: LeaseRef,
    pub host_id: u64,
    pub generation: u64,
    pub shared: bool,
    /// The last leader we wrote (lver 0: nothing acquired on disk yet).
    pub leader: LeaderRecord,
    /// Our last ballot dblock.
    pub dblock: PaxosDblock,
    /// An LVB a client set since it was read, written before the lease goes.
    pub dirty_lvb: Option<Vec<u8>>,
}

impl Held {
    fn released_dblock(&self) -> PaxosDblock {
        let mut d = self.dblock;
        d.flags = DBLOCK_FL_RELEASED;
        d
    }

    fn free_leader(&self, rename: Option<Name>) -> FreeLeader {
        FreeLeader {
            last: self.leader,
            host_id: self.host_id,
            generation: self.generation,
            rename,
            names: (self.lease.space_name, self.lease.resource_name),
            freed: None,
        }
    }

    /// The LVB sector with the client's bytes.
    fn lvb_write<T>(&self, c: &mut Ctx) -> Option<Step<T>> {
        let lvb = self.dirty_lvb.as_ref()?;
        let at = c.lvb_offset()?;
        let mut s = vec![0u8; c.ss()];
        let n = lvb.len().min(s.len());
        s[..n].copy_from_slice(&lvb[..n]);
        Some(c.write(at, s))
    }
}

#[derive(Debug)]
enum RelPhase {
    Start,
    Lvb,
    Dblock,
    Leader(Box<FreeLeader>),
    Done,
}

/// What a [`Release`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    /// We freed the leader (another host may have written it meanwhile).
    pub freed: bool,
    /// For this host's next acquire of the lease ([`WarmLeases::put`]):
    /// an exclusive lease we freed under its own name.
    pub warm: Option<Warm>,
}

impl Released {
    const NOTHING: Released = Released {
        freed: false,
        warm: None,
    };
}

/// `release_token` on disk: a shared hold's block cleared, or an
/// exclusive lease's LVB written, its dblock marked released and its
/// leader freed. The result says whether the leader was freed by us.
#[derive(Debug)]
pub struct Release {
    held: Held,
    rename: Option<Name>,
    c: Ctx,
    phase: RelPhase,
}

impl Release {
    /// `rename`: SANLK_REL_RENAME's new resource name for the leader.
    pub fn new(held: Held, rename: Option<Name>) -> Release {
        let c = Ctx::new(&held.lease);
        Release {
            held,
            rename,
            c,
            phase: RelPhase::Start,
        }
    }

    fn leader(&mut self, now: Now) -> Step<Result<Released, CoreError>> {
        let _ = now;
        let mut fl = self.held.free_leader(self.rename);
        match fl.start(&mut self.c) {
            Freed::Act(s) => {
                self.phase = RelPhase::Leader(Box::new(fl));
                cast(s)
            }
            Freed::Done(r) => self.freed(r, None),
        }
    }

    /// The end of the leader's release: `freed` is what we wrote.
    fn freed(
        &self,
        r: Result<bool, CoreError>,
        freed: Option<LeaderRecord>,
    ) -> Step<Result<Released, CoreError>> {
        Step::Done(r.map(|f| {
            let h = &self.held;
            let warm = match (f, freed, self.c.layout) {
                (true, Some(freed), Some(layout)) if !h.shared && self.rename.is_none() => {
                    Some(Warm {
                        space_name: h.lease.space_name,
                        resource_name: h.lease.resource_name,
                        freed,
                        mbal: h.dblock.mbal,
                        layout,
                        host_id: h.host_id,
                        generation: h.generation,
                    })
                }
                _ => None,
            };
            Released { freed: f, warm }
        }))
    }

    fn dblock(&mut self) -> Step<Result<Released, CoreError>> {
        self.phase = RelPhase::Dblock;
        let d = self.held.released_dblock();
        self.c.write_host_block(self.held.host_id, Some(d), None)
    }
}

impl Op for Release {
    type Output = Result<Released, CoreError>;

    fn step(&mut self, now: Now, input: Input, _ls: &dyn LockspaceView) -> Step<Self::Output> {
        if let Input::Start = input {
            if self.held.leader.lver == 0 && !self.held.shared {
                return Step::Done(Ok(Released::NOTHING));
            }
            if !self.held.shared
                && let Some(s) = self.held.lvb_write(&mut self.c)
            {
                self.phase = RelPhase::Lvb;
                return s;
            }
            return self.dblock();
        }
        let Some(r) = self.c.take(input) else {
            return Step::Done(Err(CoreError::new(
                "unexpected completion",
                rv::SANLK_ERROR,
            )));
        };
        match std::mem::replace(&mut self.phase, RelPhase::Done) {
            RelPhase::Lvb => {
                if let Err(f) = r.io() {
                    // Only logged, as sanlock.
                    warn!(
                        "{}:{}: lvb write failed: {f}",
                        self.held.lease.space_name, self.held.lease.resource_name
                    );
                }
                self.dblock()
            }
            RelPhase::Dblock if self.held.shared => Step::Done(
                r.io()
                    .map(|_| Released::NOTHING)
                    .map_err(|f| CoreError::io("releasing our shared hold", f.rv, f)),
            ),
            // sanlock goes on to the leader even if this write failed.
            RelPhase::Dblock => self.leader(now),
            RelPhase::Leader(mut fl) => match fl.resume(&mut self.c, now, r) {
                Freed::Act(s) => {
                    self.phase = RelPhase::Leader(fl);
                    cast(s)
                }
                Freed::Done(r) => self.freed(r, fl.freed),
            },
            RelPhase::Start | RelPhase::Done => {
                Step::Done(Err(CoreError::new("release already done", rv::SANLK_ERROR)))
            }
        }
    }
}

/// EX → SH (`convert_ex2sh_token`): the LVB written if dirty, our block
/// becomes "released + SHARED", then the leader is freed.
#[derive(Debug)]
pub struct ConvertToShared {
    held: Held,
    c: Ctx,
    phase: RelPhase,
}

impl ConvertToShared {
    pub fn new(held: Held) -> ConvertToShared {
        let c = Ctx::new(&held.lease);
        ConvertToShared {
            held,
            c,
            phase: RelPhase::Start,
        }
    }

    fn dblock(&mut self) -> Step<Result<(), CoreError>> {
        self.phase = RelPhase::Dblock;
        let d = self.held.released_dblock();
        let g = self.held.generation;
        self.c.write_host_block(self.held.host_id, Some(d), Some(g))
    }
}

impl Op for ConvertToShared {
    type Output = Result<(), CoreError>;

    fn step(&mut self, now: Now, input: Input, _ls: &dyn LockspaceView) -> Step<Self::Output> {
        if let Input::Start = input {
            if let Some(s) = self.held.lvb_write(&mut self.c) {
                self.phase = RelPhase::Lvb;
                return s;
            }
            return self.dblock();
        }
        let Some(r) = self.c.take(input) else {
            return Step::Done(Err(CoreError::new(
                "unexpected completion",
                rv::SANLK_ERROR,
            )));
        };
        match std::mem::replace(&mut self.phase, RelPhase::Done) {
            RelPhase::Lvb => {
                if let Err(f) = r.io() {
                    warn!(
                        "{}:{}: lvb write failed: {f}",
                        self.held.lease.space_name, self.held.lease.resource_name
                    );
                }
                self.dblock()
            }
            RelPhase::Dblock => {
                if let Err(f) = r.io() {
                    return Step::Done(Err(CoreError::io(
                        "writing our shared mode block",
                        f.rv,
                        f,
                    )));
                }
                let mut fl = self.held.free_leader(None);
                match fl.start(&mut self.c) {
                    Freed::Act(s) => {
                        self.phase = RelPhase::Leader(Box::new(fl));
                        cast(s)
                    }
                    Freed::Done(r) => Step::Done(r.map(|_| ())),
                }
            }
            RelPhase::Leader(mut fl) => match fl.resume(&mut self.c, now, r) {
                Freed::Act(s) => {
                    self.phase = RelPhase::Leader(fl);
                    cast(s)
                }
                Freed::Done(r) => Step::Done(r.map(|_| ())),
            },
            RelPhase::Start | RelPhase::Done => {
                Step::Done(Err(CoreError::new("convert already done", rv::SANLK_ERROR)))
            }
        }
    }
}

#[derive(Debug)]
enum ExPhase {
    Ballot(Box<Ballot>),
    Clear(Box<ClearShared>),
    /// Shared holders are alive (or could not be checked): the leader goes back.
    Undo(Box<FreeLeader>, CoreError),
    /// Our block without the SHARED mode block.
    Dblock,
    Done,
}

/// SH → EX (`convert_sh2ex_token`): a ballot whose dblock writes keep our
/// SHARED mode block (our shared hold stays visible meanwhile), then every
/// other shared holder must be dead, then our block loses the mode block.
#[derive(Debug)]
pub struct ConvertToExclusive {
    held: Held,
    owner_nowait: bool,
    seed: u64,
    knobs: Knobs,
    c: Ctx,
    phase: ExPhase,
    won: Option<(LeaderRecord, PaxosDblock)>,
}

impl ConvertToExclusive {
    pub fn new(held: Held, owner_nowait: bool, seed: u64, knobs: Knobs) -> ConvertToExclusive {
        let c = Ctx::new(&held.lease);
        ConvertToExclusive {
            held,
            owner_nowait,
            seed,
            knobs,
            c,
            phase: ExPhase::Done,
            won: None,
        }
    }

    fn ballot_next(
        &mut self,
        next: BallotNext,
    ) -> Step<Result<(LeaderRecord, PaxosDblock), CoreError>> {
        let outcome = match next {
            BallotNext::Act(s) => return cast(s),
            BallotNext::Done(o) => o,
        };
        let ExPhase::Ballot(b) = std::mem::replace(&mut self.phase, ExPhase::Done) else {
            unreachable!("a ballot finishes in the ballot phase")
        };
        match outcome {
            Err(e) => Step::Done(Err(self.c.err("paxos acquire (convert to exclusive)", e))),
            Ok(won) => {
                self.won = Some(won);
                let me = self.held.host_id;
                let others =
                    b.m.shared_seen()
                        .iter()
                        .copied()
                        .filter(|&h| h != me)
                        .collect();
                let mut cs = Box::new(ClearShared::new(others));
                let next = cs.next(&mut self.c);
                self.cleared(cs, next)
            }
        }
    }

    fn cleared(
        &mut self,
        cs: Box<ClearShared>,
        next: Cleared,
    ) -> Step<Result<(LeaderRecord, PaxosDblock), CoreError>> {
        match next {
            Cleared::Act(s) => {
                self.phase = ExPhase::Clear(cs);
                cast(s)
            }
            Cleared::Done(Ok(0)) => {
                let (_, d) = self.won.expect("won");
                self.phase = ExPhase::Dblock;
                self.c.write_host_block(self.held.host_id, Some(d), None)
            }
            Cleared::Done(Ok(_)) => {
                self.undo(CoreError::new("shared holders are alive", -libc::EAGAIN))
            }
            Cleared::Done(Err(e)) => self.undo(e),
        }
    }

    fn undo(&mut self, e: CoreError) -> Step<Result<(LeaderRecord, PaxosDblock), CoreError>> {
        // Still shared: the leader goes back; our mode block stayed.
        let mut held = self.held.clone();
        held.leader = self.won.expect("won").0;
        let mut fl = held.free_leader(None);
        match fl.start(&mut self.c) {
            Freed::Act(s) => {
                self.phase = ExPhase::Undo(Box::new(fl), e);
                cast(s)
            }
            Freed::Done(_) => Step::Done(Err(e)),
        }
    }
}

impl Op for ConvertToExclusive {
    type Output = Result<(LeaderRecord, PaxosDblock), CoreError>;

    fn step(&mut self, now: Now, input: Input, ls: &dyn LockspaceView) -> Step<Self::Output> {
        if let Input::Start = input {
            let mut flags = paxos::PAXOS_WRITE_MBLOCK_SH;
            if self.owner_nowait {
                flags |= paxos::PAXOS_ACQUIRE_OWNER_NOWAIT;
            }
            let mut b = Box::new(Ballot::new(
                PaxosParams {
                    host_id: self.held.host_id,
                    host_generation: self.held.generation,
                    sector_size: self.c.ss(),
                    flags,
                    acquire_lver: 0,
                    new_num_hosts: 0,
                    watchdog_fire_timeout: self.held.lease.watchdog_fire_timeout,
                    io_timeout: self.held.lease.io_timeout,
                    seed: self.seed,
                    names: Some((self.held.lease.space_name, self.held.lease.resource_name)),
                },
                self.knobs,
            ));
            let next = b.start(&mut self.c, now, ls);
            self.phase = ExPhase::Ballot(b);
            return self.ballot_next(next);
        }
        let Some(r) = self.c.take(input) else {
            return Step::Done(Err(CoreError::new(
                "unexpected completion",
                rv::SANLK_ERROR,
            )));
        };
        match std::mem::replace(&mut self.phase, ExPhase::Done) {
            ExPhase::Ballot(mut b) => {
                let next = b.resume(&mut self.c, now, r, ls);
                self.phase = ExPhase::Ballot(b);
                self.ballot_next(next)
            }
            ExPhase::Clear(mut cs) => {
                let next = cs.resume(&mut self.c, now, r, ls, &self.held.lease);
                self.cleared(cs, next)
            }
            ExPhase::Undo(mut fl, e) => match fl.resume(&mut self.c, now, r) {
                Freed::Act(s) => {
                    self.phase = ExPhase::Undo(fl, e);
                    cast(s)
                }
                Freed::Done(_) => Step::Done(Err(e)),
            },
            // A failure here is left as it is, as by sanlock.
            ExPhase::Dblock => Step::Done(Ok(self.won.expect("won"))),
            ExPhase::Done => {
                Step::Done(Err(CoreError::new("convert already done", rv::SANLK_ERROR)))
            }
        }
    }
}

// ---- the daemon's own short leases, and direct mode ----

/// A bare Disk Paxos acquire of a lease whose geometry is known or read
/// first: the daemon's rindex lease (OWNER_NOWAIT, no waiting for a live
/// owner) and `hactl direct acquire` (no lockspace to judge an owner by).
#[derive(Debug)]
pub struct PaxosOnly {
    lease: LeaseRef,
    params: PaxosParams,
    knobs: Knobs,
    c: Ctx,
    ballot: Option<Box<Ballot>>,
    sizing: bool,
}

impl PaxosOnly {
    /// `params.sector_size` is taken from the lease's geometry.
    pub fn new(lease: LeaseRef, params: PaxosParams, knobs: Knobs) -> PaxosOnly {
        let c = Ctx::new(&lease);
        PaxosOnly {
            lease,
            params,
            knobs,
            c,
            ballot: None,
            sizing: false,
        }
    }

    fn begin(&mut self, now: Now, ls: &dyn LockspaceView) -> Step<paxos::Outcome> {
        let mut p = self.params.clone();
        p.sector_size = self.c.ss();
        let mut b = Box::new(Ballot::new(p, self.knobs));
        let next = b.start(&mut self.c, now, ls);
        self.ballot = Some(b);
        self.next(next)
    }

    fn next(&mut self, next: BallotNext) -> Step<paxos::Outcome> {
        match next {
            BallotNext::Act(s) => cast(s),
            BallotNext::Done(r) => Step::Done(r),
        }
    }

    /// The geometry used (after the first step).
    pub fn layout(&self) -> Option<Layout> {
        self.c.layout
    }
}

impl Op for PaxosOnly {
    type Output = paxos::Outcome;

    fn step(&mut self, now: Now, input: Input, ls: &dyn LockspaceView) -> Step<Self::Output> {
        if let Input::Start = input {
            let _ = &self.lease;
            if self.c.layout.is_none() {
                self.sizing = true;
                return self.c.read(0, SIZES_READ_LEN);
            }
            return self.begin(now, ls);
        }
        let Some(r) = self.c.take(input) else {
            return Step::Done(Err(rv::SANLK_ERROR));
        };
        if std::mem::take(&mut self.sizing) {
            return match read_sizes(&mut self.c, r) {
                Ok(()) => self.begin(now, ls),
                Err(e) => Step::Done(Err(e.rv)),
            };
        }
        let Some(mut b) = self.ballot.take() else {
            return Step::Done(Err(rv::SANLK_ERROR));
        };
        let next = b.resume(&mut self.c, now, r, ls);
        self.ballot = Some(b);
        self.next(next)
    }
}

/// Frees a leader we wrote, and nothing else: the rindex lease's release
/// (sanlock's `paxos_lease_release` leaves that lease's dblock as the
/// ballot wrote it).
#[derive(Debug)]
pub struct FreeLeaderOp {
    c: Ctx,
    fl: FreeLeader,
}

impl FreeLeaderOp {
    pub fn new(lease: LeaseRef, last: LeaderRecord, host_id: u64, generation: u64) -> FreeLeaderOp {
        let c = Ctx::new(&lease);
        FreeLeaderOp {
            fl: FreeLeader {
                last,
                host_id,
                generation,
                rename: None,
                names: (lease.space_name, lease.resource_name),
                freed: None,
            },
            c,
        }
    }
}

impl Op for FreeLeaderOp {
    type Output = Result<bool, CoreError>;

    fn step(&mut self, now: Now, input: Input, _ls: &dyn LockspaceView) -> Step<Self::Output> {
        let next = if let Input::Start = input {
            self.fl.start(&mut self.c)
        } else {
            let Some(r) = self.c.take(input) else {
                return Step::Done(Err(CoreError::new(
                    "unexpected completion",
                    rv::SANLK_ERROR,
                )));
            };
            self.fl.resume(&mut self.c, now, r)
        };
        match next {
            Freed::Act(s) => cast(s),
            Freed::Done(r) => Step::Done(r),
        }
    }
}

// ---- the request record ----

/// Whether another host asked for a lease we hold exclusively at `lver`
/// (the resource thread's `examine`): the request record's force mode if
/// it asks for a newer lver, None otherwise (also when it cannot be read).
#[derive(Debug)]
pub struct ExamineRequest {
    lver: u64,
    c: Ctx,
}

impl ExamineRequest {
    pub fn new(lease: LeaseRef, lver: u64) -> ExamineRequest {
        ExamineRequest {
            lver,
            c: Ctx::new(&lease),
        }
    }
}

impl Op for ExamineRequest {
    type Output = Option<u32>;

    fn step(&mut self, _now: Now, input: Input, _ls: &dyn LockspaceView) -> Step<Self::Output> {
        if let Input::Start = input {
            let ss = self.c.ss();
            return self.c.read(ss as u64, ss);
        }
        let Some(Ok(b)) = self.c.take(input).map(Resumed::io) else {
            return Step::Done(None);
        };
        let Ok(req) = RequestRecord::decode(&b) else {
            return Step::Done(None);
        };
        if req.magic != ondisk::REQ_DISK_MAGIC
            || req.version & 0xffff_0000 != ondisk::REQ_DISK_VERSION_MAJOR
        {
            return Step::Done(None);
        }
        let asks = req.force_mode != 0 && req.lver != 0 && req.lver > self.lver;
        Step::Done(asks.then_some(req.force_mode))
    }
}

#[derive(Debug)]
enum ReqPhase {
    Sizes,
    Leader,
    Request,
    Write,
    Done,
}

/// `request` (sanlock's `request_token`): asks the holder of a lease to
/// give it up by writing the request record (the lver wanted, the force
/// mode). The result is the owner's host_id (0 if the lease is free or
/// nothing was asked), whose bit our next renewals then carry.
#[derive(Debug)]
pub struct WriteRequest {
    lver: u64,
    force_mode: u32,
    next_lver: bool,
    names: (Name, Name),
    c: Ctx,
    phase: ReqPhase,
    owner: u64,
}

impl WriteRequest {
    pub fn new(lease: LeaseRef, lver: u64, force_mode: u32, next_lver: bool) -> WriteRequest {
        let names = (lease.space_name, lease.resource_name);
        WriteRequest {
            lver,
            force_mode,
            next_lver,
            names,
            c: Ctx::new(&lease),
            phase: ReqPhase::Sizes,
            owner: 0,
        }
    }

    fn asking(&self) -> bool {
        !(self.lver == 0 && self.force_mode == 0)
    }

    fn sized(&mut self) -> Step<Result<u64, CoreError>> {
        let ss = self.c.ss();
        if self.asking() {
            self.phase = ReqPhase::Leader;
            return self.c.read(0, ss);
        }
        self.phase = ReqPhase::Request;
        self.c.read(ss as u64, ss)
    }
}

impl Op for WriteRequest {
    type Output = Result<u64, CoreError>;

    fn step(&mut self, _now: Now, input: Input, _ls: &dyn LockspaceView) -> Step<Self::Output> {
        if let Input::Start = input {
            if self.c.layout.is_some() {
                return self.sized();
            }
            self.phase = ReqPhase::Sizes;
            return self.c.read(0, SIZES_READ_LEN);
        }
        let Some(r) = self.c.take(input) else {
            return Step::Done(Err(CoreError::new(
                "unexpected completion",
                rv::SANLK_ERROR,
            )));
        };
        let ss = self.c.ss();
        let refuse = |what, e| Step::Done(Err(CoreError::new(what, e)));
        match std::mem::replace(&mut self.phase, ReqPhase::Done) {
            ReqPhase::Sizes => match read_sizes(&mut self.c, r) {
                Ok(()) => self.sized(),
                Err(e) => Step::Done(Err(e)),
            },
            ReqPhase::Leader => {
                let b = match r.io() {
                    Ok(b) => b,
                    Err(f) => return Step::Done(Err(CoreError::io("reading the leader", f.rv, f))),
                };
                let lr = LeaderRecord::decode(&b).expect("a sector holds a leader");
                if let Err(e) = lr.verify_paxos(Some(&self.names.0), Some(&self.names.1), 0) {
                    return refuse("reading the leader", e.sanlk_rv());
                }
                if lr.timestamp == 0 {
                    return Step::Done(Ok(0));
                }
                self.owner = lr.owner_id;
                if self.lver == 0 && self.next_lver {
                    self.lver = lr.lver + 1;
                }
                if lr.lver >= self.lver {
                    return refuse("request", rv::SANLK_REQUEST_OLD);
                }
                self.phase = ReqPhase::Request;
                self.c.read(ss as u64, ss)
            }
            ReqPhase::Request => {
                let b = match r.io() {
                    Ok(b) => b,
                    Err(f) => {
                        return Step::Done(Err(CoreError::io(
                            "reading the request record",
                            f.rv,
                            f,
                        )));
                    }
                };
                let req = RequestRecord::decode(&b).expect("a sector holds a request");
                if req.magic != ondisk::REQ_DISK_MAGIC {
                    return refuse("request", rv::SANLK_REQUEST_MAGIC);
                }
                if req.version & 0xffff_0000 != ondisk::REQ_DISK_VERSION_MAJOR {
                    return refuse("request", rv::SANLK_REQUEST_VERSION);
                }
                if self.asking() && req.lver > self.lver {
                    return refuse("request", rv::SANLK_REQUEST_LVER);
                }
                let new = RequestRecord {
                    magic: req.magic,
                    version: ondisk::REQ_DISK_VERSION_MAJOR | ondisk::REQ_DISK_VERSION_MINOR,
                    lver: self.lver,
                    force_mode: self.force_mode,
                };
                let mut s = vec![0u8; ss];
                let e = new.encode();
                s[..e.len()].copy_from_slice(&e);
                self.phase = ReqPhase::Write;
                self.c.write(ss as u64, s)
            }
            ReqPhase::Write => Step::Done(
                r.io()
                    .map(|_| self.owner)
                    .map_err(|f| CoreError::io("writing the request record", f.rv, f)),
            ),
            ReqPhase::Done => refuse("request already done", rv::SANLK_ERROR),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use std::cell::Cell;

    /// A lockspace as an operation sees it, changed by the test at will.
    struct View {
        hosts: Vec<HostStatus>,
        instance: Cell<Option<Instance>>,
        /// Fail the instance after this many host_status questions.
        fail_after_asks: Cell<Option<u32>>,
        layout: Option<Layout>,
    }

    impl View {
        fn joined(host_id: u64, generation: u64) -> View {
            View {
                hosts: vec![HostStatus::default(); 8],
                instance: Cell::new(Some(Instance {
                    space_id: 1,
                    host_id,
                    generation,
                })),
                fail_after_asks: Cell::new(None),
                layout: Some(small_layout()),
            }
        }
    }

    impl LockspaceView for View {
        fn host_status(&self, host_id: u64) -> Result<Option<HostStatus>, i32> {
            if let Some(n) = self.fail_after_asks.get() {
                if n == 0 {
                    self.instance.set(None);
                }
                self.fail_after_asks.set(Some(n.saturating_sub(1)));
            }
            Ok(self.hosts.get(host_id as usize - 1).cloned())
        }
        fn instance(&self) -> Option<Instance> {
            self.instance.get()
        }
        fn layout(&self) -> Option<Layout> {
            self.layout
        }
        fn space_name(&self) -> Name {
            Name::new("LS").unwrap()
        }
    }

    fn lease() -> LeaseRef {
        LeaseRef {
            space_name: Name::new("LS").unwrap(),
            resource_name: Name::new("R").unwrap(),
            layout: None,
            io_timeout: 1,
            watchdog_fire_timeout: 10,
        }
    }

    fn params(shared: bool) -> AcquireParams {
        AcquireParams {
            lease: lease(),
            shared,
            owner_nowait: false,
            lvb: false,
            acquire_lver: 0,
            new_num_hosts: 0,
            seed: 7,
            knobs: Knobs::default(),
            warm: None,
        }
    }

    fn disks() -> Disks {
        Disks::new(
            lockspace_area("LS", 8, 0, 1),
            lease_area("LS", "R", 8, 1 << 20),
        )
    }

    fn leader(d: &Disks) -> LeaderRecord {
        LeaderRecord::decode(&d.lease[..SS]).unwrap()
    }

    fn host_block(d: &Disks, h: u64) -> (PaxosDblock, ModeBlock) {
        let at = (1 + h as usize) * SS;
        let s = &d.lease[at..at + SS];
        (
            PaxosDblock::decode(s).unwrap(),
            ModeBlock::decode(&s[MBLOCK_OFFSET..MBLOCK_OFFSET + 16]).unwrap(),
        )
    }

    fn held(a: &Acquired, host_id: u64, generation: u64, shared: bool) -> Held {
        Held {
            lease: LeaseRef {
                layout: Some(a.layout),
                ..lease()
            },
            host_id,
            generation,
            shared,
            leader: a.leader,
            dblock: a.dblock,
            dirty_lvb: None,
        }
    }

    #[test]
    fn exclusive_acquire_and_release() {
        let mut d = disks();
        let v = View::joined(2, 3);
        let mut now = 5_000;
        let a = run_op(&mut Acquire::new(params(false)), &mut d, &v, &mut now).unwrap();
        assert_eq!(
            (a.leader.owner_id, a.leader.owner_generation, a.leader.lver),
            (2, 3, 1)
        );
        assert_eq!(leader(&d), a.leader);
        assert_eq!(a.layout.align_size, 1 << 20);
        let freed = run_op(
            &mut Release::new(held(&a, 2, 3, false), None),
            &mut d,
            &v,
            &mut now,
        );
        assert!(freed.unwrap().freed);
        let l = leader(&d);
        assert_eq!((l.timestamp, l.lver, l.owner_id), (0, 1, 2));
        assert_eq!(host_block(&d, 2).0.flags, DBLOCK_FL_RELEASED);
    }

    /// Acquire, release, and acquire again with what the release left
    /// (the daemon's [`WarmLeases`]): (the second acquire's outcome, its
    /// I/Os and bytes read, the first's).
    fn acquire_again(
        d: &mut Disks,
        v: &View,
        between: impl FnOnce(&mut Disks),
    ) -> (Result<Acquired, CoreError>, usize, usize, usize) {
        let mut now = 5_000;
        let (ios0, read0) = (d.ios, d.read_bytes);
        let a = run_op(&mut Acquire::new(params(false)), d, v, &mut now).unwrap();
        let cold = d.read_bytes - read0;
        assert!(!a.warm);
        let r = run_op(
            &mut Release::new(held(&a, 2, 3, false), None),
            d,
            v,
            &mut now,
        )
        .unwrap();
        let mut cache = WarmLeases::default();
        cache.put("R", &r);
        assert_eq!(cache.len(), 1);
        between(d);
        let mut p = params(false);
        p.warm = cache.take(&"R", 2, 3);
        assert!(p.warm.is_some() && cache.is_empty());
        let (ios1, read1) = (d.ios, d.read_bytes);
        let _ = ios0;
        let b = run_op(&mut Acquire::new(p), d, v, &mut now);
        (b, d.ios - ios1, d.read_bytes - read1, cold)
    }

    #[test]
    fn a_lease_this_host_freed_is_acquired_again_without_the_first_area_read() {
        let mut d = disks();
        let v = View::joined(2, 3);
        let (b, ios, read, cold) = acquire_again(&mut d, &v, |_| {});
        let b = b.unwrap();
        assert!(b.warm);
        assert_eq!((b.leader.owner_id, b.leader.lver), (2, 2));
        assert_eq!(leader(&d), b.leader);
        // The leader sector, then the two ballot reads of the area; as
        // many I/Os as a cold acquire with its geometry known.
        let area = 1 << 20;
        assert_eq!(read, SS + 2 * area);
        assert!(cold >= 3 * area, "{cold}");
        assert_eq!(ios, 6);
    }

    #[test]
    fn a_warm_acquire_whose_leader_was_written_since_reads_the_area_as_usual() {
        // Another host took the lease meanwhile (lver 2, owner 1), and holds
        // it (the cold path waits for it to be DEAD, then takes over) or
        // freed it: either way the warm record (lver 1) is stale, the
        // acquire reads the area after the leader, and takes lver 3.
        for timestamp in [10, 0] {
            let mut d = disks();
            let v = View::joined(2, 3);
            let (b, _, read, _) = acquire_again(&mut d, &v, |d| {
                let mut l = leader(d);
                (l.owner_id, l.owner_generation, l.timestamp, l.lver) = (1, 1, timestamp, 2);
                l.write_id = 1;
                d.lease[..SS].copy_from_slice(&paxos::leader_sector(&mut l, SS));
            });
            let b = b.unwrap();
            assert!(!b.warm);
            assert_eq!((b.leader.owner_id, b.leader.lver), (2, 3));
            assert!(
                read >= SS + 3 * (1 << 20),
                "the leader, then the area as usual"
            );
        }
    }

    #[test]
    fn a_warm_acquire_of_an_area_initialised_again_with_4k_sectors_uses_them() {
        // The leader is not ours any more, and the area's geometry is not
        // the one we kept: the fallback's area read checks it, as it
        // checks the lockspace's, and the ballot runs in 4K sectors.
        let mut d = disks();
        let v = View::joined(2, 3);
        let (b, _, _, _) = acquire_again(&mut d, &v, |d| {
            let mut area = vec![0u8; 8 << 20];
            let mut lr = leader(d);
            lr.sector_size = 4096;
            lr.flags = crate::geometry::leader_flag_from_align(8 << 20);
            (lr.lver, lr.owner_id, lr.write_id, lr.timestamp) = (0, 0, 0, 0);
            area[..4096].copy_from_slice(&paxos::leader_sector(&mut lr, 4096));
            d.lease = area;
        });
        let b = b.unwrap();
        assert!(!b.warm);
        assert_eq!((b.layout.sector_size, b.layout.align_size), (4096, 8 << 20));
        assert_eq!(b.leader.lver, 1);
        // Our dblock at its 4K place; nothing at the 512-byte one.
        let at = 3 * 4096;
        assert_eq!(PaxosDblock::decode(&d.lease[at..at + 64]).unwrap().inp, 2);
        assert!(d.lease[3 * 512..4 * 512].iter().all(|&x| x == 0));
    }

    #[test]
    fn a_warm_acquire_still_refuses_a_dblock_with_a_bad_checksum() {
        // The cold path's first read refuses the lease; the warm one
        // checks every dblock in its first phase-1 read instead.
        let mut d = disks();
        let v = View::joined(2, 3);
        let (b, _, _, _) = acquire_again(&mut d, &v, |d| {
            let at = 2 * SS + 5 * SS; // host 6's dblock
            d.lease[at] ^= 0xff;
            d.lease[at + 40] = 9; // a non-empty dblock
        });
        assert_eq!(b.unwrap_err().rv, rv::SANLK_DBLOCK_CHECKSUM);
    }

    #[test]
    fn a_warm_record_is_for_one_lockspace_instance() {
        let mut cache = WarmLeases::default();
        let mut d = disks();
        let v = View::joined(2, 3);
        let mut now = 5_000;
        let a = run_op(&mut Acquire::new(params(false)), &mut d, &v, &mut now).unwrap();
        let r = run_op(
            &mut Release::new(held(&a, 2, 3, false), None),
            &mut d,
            &v,
            &mut now,
        );
        cache.put(1u8, &r.unwrap());
        assert!(cache.take(&1, 2, 4).is_none(), "another generation");
        assert!(cache.is_empty(), "taken either way");
        // A release that renames the lease leaves none.
        let a = run_op(&mut Acquire::new(params(false)), &mut d, &v, &mut now).unwrap();
        let rename = Some(Name::new("R2").unwrap());
        let r = run_op(
            &mut Release::new(held(&a, 2, 3, false), rename),
            &mut d,
            &v,
            &mut now,
        );
        let r = r.unwrap();
        assert!(r.freed && r.warm.is_none(), "{r:?}");
    }

    /// The lockspace's geometry is taken as the lease's until its leader
    /// says otherwise (sanlock's "starting hint"): the same lease, the
    /// same outcome, one read fewer when they agree, none more when not.
    #[test]
    fn the_lockspace_geometry_saves_the_lease_geometry_read() {
        let lease_geometry = Layout {
            sector_size: SS,
            align_size: 1 << 20,
            max_hosts: 2000,
        };
        let mut ios = Vec::new();
        for layout in [Some(lease_geometry), None, Some(small_layout())] {
            let mut d = disks();
            let v = View {
                layout,
                ..View::joined(2, 3)
            };
            let mut now = 5_000;
            let a = run_op(&mut Acquire::new(params(false)), &mut d, &v, &mut now).unwrap();
            assert_eq!((a.leader.owner_id, a.leader.lver), (2, 1), "{layout:?}");
            assert_eq!(a.layout, lease_geometry, "{layout:?}");
            assert_eq!(leader(&d), a.leader);
            ios.push(d.ios);
        }
        assert_eq!(ios[0] + 1, ios[1], "hint right: no geometry read");
        assert_eq!(ios[2], ios[1], "hint wrong: the area read again instead");
    }

    #[test]
    fn a_lease_won_for_a_lockspace_instance_that_failed_meanwhile_is_not_handed_out() {
        // Owned by host 1, whose delta lease never moves: host 2 waits for
        // it to be DEAD, and its own lockspace fails while it waits.
        let mut d = disks();
        let mut l = leader(&d);
        (l.owner_id, l.owner_generation, l.timestamp, l.lver) = (1, 1, 10, 4);
        d.lease[..SS].copy_from_slice(&paxos::leader_sector(&mut l, SS));
        let mut delta = LeaderRecord::decode(&d.ls[..SS]).unwrap();
        (delta.owner_id, delta.owner_generation, delta.timestamp) = (1, 1, 10);
        d.ls[..SS].copy_from_slice(&crate::delta::lease_sector(&mut delta, SS, None));
        let mut v = View::joined(2, 1);
        v.hosts[0] = HostStatus {
            first_check: 4,
            last_check: 6,
            last_live: 5,
            owner_id: 1,
            owner_generation: 1,
            timestamp: 10,
            io_timeout: 1,
            ..Default::default()
        };
        v.fail_after_asks.set(Some(0));
        let mut now = 6_000;
        let e = run_op(&mut Acquire::new(params(false)), &mut d, &v, &mut now).unwrap_err();
        assert_eq!(e.rv, -libc::ENOSPC);
        // It took the lease on disk (the owner was DEAD by then) and leaves
        // it there: this host is DEAD to the others before anyone takes it.
        assert!(now >= 5_000 + 18_000);
        let l = leader(&d);
        assert_eq!((l.owner_id, l.lver), (2, 5));
        assert_ne!(l.timestamp, 0);

        // With sanlock's check (host_id only) it would have been handed out.
        let mut d2 = disks();
        let v2 = View::joined(2, 1);
        let mut p = params(false);
        p.knobs.sanlock_token_check = true;
        let op = &mut Acquire::new(p);
        let mut now = 1_000;
        let first = op.step(Now::at_ms(now), Input::Start, &v2);
        // Rejoined with a new generation in the middle of the acquire.
        v2.instance.set(Some(Instance {
            space_id: 1,
            host_id: 2,
            generation: 2,
        }));
        let mut input = match first {
            Step::Io(io) => Input::Io {
                id: io.id,
                result: d2.perform(now, &io),
            },
            _ => unreachable!(),
        };
        let r = loop {
            match op.step(Now::at_ms(now), input, &v2) {
                Step::Io(io) => {
                    input = Input::Io {
                        id: io.id,
                        result: d2.perform(now, &io),
                    }
                }
                Step::Timer { id, at_ms } => {
                    now = at_ms;
                    input = Input::Timer { id }
                }
                Step::Done(r) => break r,
            }
        };
        assert!(r.is_ok(), "the knob hands out the old generation's lease");
    }

    #[test]
    fn shared_holders_keep_an_exclusive_acquirer_out_until_they_are_dead() {
        let mut d = disks();
        let mut now = 10_000;
        let v1 = View::joined(1, 1);
        let a = run_op(&mut Acquire::new(params(true)), &mut d, &v1, &mut now).unwrap();
        // The Paxos lease went back; our hold is the mode block.
        assert_eq!(leader(&d).timestamp, 0);
        let (db, mb) = host_block(&d, 1);
        assert_eq!(db.flags, DBLOCK_FL_RELEASED);
        assert!(mb.is_shared() && mb.generation == 1);
        let v3 = View::joined(3, 1);
        let _b = run_op(&mut Acquire::new(params(true)), &mut d, &v3, &mut now).unwrap();

        // Host 2 wants it exclusive: hosts 1 and 3 are alive.
        let mut v2 = View::joined(2, 1);
        for h in [0, 2] {
            v2.hosts[h] = HostStatus {
                first_check: 9,
                last_check: 10,
                last_live: 10,
                owner_id: h as u64 + 1,
                owner_generation: 1,
                timestamp: 100,
                io_timeout: 1,
                ..Default::default()
            };
        }
        let e = run_op(&mut Acquire::new(params(false)), &mut d, &v2, &mut now).unwrap_err();
        assert_eq!(e.rv, -libc::EAGAIN);
        assert_eq!(leader(&d).timestamp, 0, "the leader went back");
        assert_eq!(host_block(&d, 2).0.flags, DBLOCK_FL_RELEASED);

        // Host 1 released; host 3's lease was taken over by a new generation.
        run_op(
            &mut Release::new(held(&a, 1, 1, true), None),
            &mut d,
            &v1,
            &mut now,
        )
        .unwrap();
        v2.hosts[2].owner_generation = 2;
        let x = run_op(&mut Acquire::new(params(false)), &mut d, &v2, &mut now).unwrap();
        assert_eq!(x.leader.owner_id, 2);
        assert!(
            !host_block(&d, 3).1.is_shared(),
            "the dead holder's block is erased"
        );
    }

    #[test]
    fn convert_exclusive_to_shared_and_back() {
        let mut d = disks();
        let v = View::joined(4, 2);
        let mut now = 1_000;
        let a = run_op(&mut Acquire::new(params(false)), &mut d, &v, &mut now).unwrap();
        run_op(
            &mut ConvertToShared::new(held(&a, 4, 2, false)),
            &mut d,
            &v,
            &mut now,
        )
        .unwrap();
        assert_eq!(leader(&d).timestamp, 0);
        assert!(host_block(&d, 4).1.is_shared());
        let (l, db) = run_op(
            &mut ConvertToExclusive::new(held(&a, 4, 2, true), false, 3, Knobs::default()),
            &mut d,
            &v,
            &mut now,
        )
        .unwrap();
        assert_eq!((l.owner_id, l.lver), (4, 2));
        assert_eq!(leader(&d), l);
        let (on_disk, mb) = host_block(&d, 4);
        assert_eq!(
            (on_disk.mbal, on_disk.inp, on_disk.lver),
            (db.mbal, db.inp, db.lver)
        );
        assert!(!mb.is_shared());
    }

    #[test]
    fn lvb_is_read_at_acquire_and_written_at_release() {
        let mut d = disks();
        let v = View::joined(1, 1);
        let mut now = 1_000;
        let mut p = params(false);
        p.lvb = true;
        let a = run_op(&mut Acquire::new(p.clone()), &mut d, &v, &mut now).unwrap();
        assert_eq!(a.lvb.as_deref(), Some(&[0u8; SS][..]));
        let mut h = held(&a, 1, 1, false);
        h.dirty_lvb = Some(b"hello".to_vec());
        run_op(&mut Release::new(h, None), &mut d, &v, &mut now).unwrap();
        let a = run_op(&mut Acquire::new(p), &mut d, &v, &mut now).unwrap();
        assert_eq!(&a.lvb.unwrap()[..5], b"hello");
    }

    #[test]
    fn a_request_is_written_and_examined_by_the_holder() {
        let mut d = disks();
        let v = View::joined(1, 1);
        let mut now = 1_000;
        let a = run_op(&mut Acquire::new(params(false)), &mut d, &v, &mut now).unwrap();
        let lease_known = LeaseRef {
            layout: Some(a.layout),
            ..lease()
        };
        let mut ex = ExamineRequest::new(lease_known.clone(), a.leader.lver);
        assert_eq!(run_op(&mut ex, &mut d, &v, &mut now), None);
        // Old lvers are refused.
        let e = run_op(
            &mut WriteRequest::new(lease(), 1, 1, false),
            &mut d,
            &NoLockspace,
            &mut now,
        )
        .unwrap_err();
        assert_eq!(e.rv, rv::SANLK_REQUEST_OLD);
        let owner = run_op(
            &mut WriteRequest::new(lease(), 0, 1, true),
            &mut d,
            &NoLockspace,
            &mut now,
        )
        .unwrap();
        assert_eq!(owner, 1);
        let mut ex = ExamineRequest::new(lease_known, a.leader.lver);
        assert_eq!(run_op(&mut ex, &mut d, &v, &mut now), Some(1));
    }

    #[test]
    fn direct_mode_cannot_judge_an_owned_lease() {
        let mut d = disks();
        let v = View::joined(1, 1);
        let mut now = 1_000;
        run_op(&mut Acquire::new(params(false)), &mut d, &v, &mut now).unwrap();
        let p = PaxosParams {
            host_id: 2,
            host_generation: 1,
            sector_size: 0,
            flags: 0,
            acquire_lver: 0,
            new_num_hosts: 0,
            watchdog_fire_timeout: 10,
            io_timeout: 1,
            seed: 1,
            names: Some((Name::new("LS").unwrap(), Name::new("R").unwrap())),
        };
        let r = run_op(
            &mut PaxosOnly::new(lease(), p, Knobs::default()),
            &mut d,
            &NoLockspace,
            &mut now,
        );
        assert_eq!(r.unwrap_err(), rv::SANLK_ACQUIRE_LOCKSPACE);
    }

    #[test]
    fn a_torn_leader_fails_the_release_and_nothing_is_written() {
        let mut d = disks();
        let v = View::joined(1, 1);
        let mut now = 1_000;
        let a = run_op(&mut Acquire::new(params(false)), &mut d, &v, &mut now).unwrap();
        d.lease[20] ^= 0xff;
        let before = d.lease[..SS].to_vec();
        let e = run_op(
            &mut Release::new(held(&a, 1, 1, false), None),
            &mut d,
            &v,
            &mut now,
        )
        .unwrap_err();
        assert_eq!(e.rv, rv::SANLK_LEADER_CHECKSUM);
        assert_eq!(d.lease[..SS], before[..]);
    }
}
