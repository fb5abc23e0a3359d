//! Disk Paxos resource leases (sanlock's `paxos_lease.c`) as a state
//! machine with no I/O or clock inside: the driver performs each [`Step`]
//! and feeds back an [`Input`]. Single disk.
//!
//! A lease area: the leader (sector 0), the request record (sector 1) and one
//! dblock per host_id from sector 2. To acquire: read the area; if another
//! host owns the lease, wait until its delta lease shows it dead (or gone,
//! or a newer generation); then run a ballot (phase 1: write our dblock with
//! a ballot number higher than any seen, read all, abort if anyone's is
//! higher; phase 2: propose the value of the highest ballot seen, or
//! ourselves; write, read, abort likewise) and commit the winner as the new
//! leader with lver + 1.

use std::time::Duration;

use crate::hosts::HostStatus;
use crate::ondisk::{DecodeError, LeaderRecord, PaxosDblock, dblock::DBLOCK_FL_RELEASED};
use crate::rv;

pub const PAXOS_ACQUIRE_FORCE: u32 = 0x1;
pub const PAXOS_ACQUIRE_OWNER_NOWAIT: u32 = 0x2;
pub const PAXOS_ACQUIRE_QUIET_FAIL: u32 = 0x4;
pub const PAXOS_ACQUIRE_SHARED: u32 = 0x8;
/// Every dblock we write carries our SHARED mode block (SH→EX convert:
/// our shared hold stays visible to others while we ballot).
pub const PAXOS_WRITE_MBLOCK_SH: u32 = 0x10;
/// sanlock 3.8.5's check of a committed ballot: the owner's host_id only,
/// not its generation. Only the simulation sets it
/// (`daemon::core::Knobs::sanlock_commit_check`), to show what it lets by.
pub const PAXOS_COMMIT_HOST_ID_ONLY: u32 = 0x20;
/// A warm acquire ([`PaxosAcquire::warm_start`]) goes straight to phase 2,
/// as if the last owner were a distinguished proposer whose phase 1 is
/// done. Unsafe: only the simulation sets it
/// (`daemon::core::Knobs::warm_skips_phase1`), to show why phase 1 stays.
pub const PAXOS_WARM_SKIPS_PHASE1: u32 = 0x40;

/// Who is acquiring, and how.
#[derive(Clone, Debug)]
pub struct PaxosParams {
    pub host_id: u64,
    pub host_generation: u64,
    pub sector_size: usize,
    pub flags: u32,
    /// Fail with SANLK_ACQUIRE_LVER unless the lease is at this lver (0: any).
    pub acquire_lver: u64,
    /// Written as the new num_hosts if nonzero.
    pub new_num_hosts: u64,
    pub watchdog_fire_timeout: u64,
    /// Our io_timeout, used when the owner's is unknown.
    pub io_timeout: u64,
    /// Seeds the random back-off between aborted ballots.
    pub seed: u64,
    /// The lockspace and resource the leader must name (as sanlock checks).
    pub names: Option<(crate::ondisk::Name, crate::ondisk::Name)>,
}

/// The result of an acquire: the leader we committed and our dblock.
pub type Outcome = Result<(LeaderRecord, PaxosDblock), i32>;

// One Step exists at a time per acquire, so Done's size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read the whole lease area; answer with [`Input::Area`].
    ReadArea,
    /// Read the leader sector; answer with [`Input::Leader`].
    ReadLeader,
    /// What our lockspace knows of this host; answer with [`Input::HostInfo`].
    HostInfo {
        owner_id: u64,
    },
    /// Read that host's delta lease in the lockspace; answer with [`Input::OwnerDelta`].
    ReadOwnerDelta {
        owner_id: u64,
    },
    /// Read one host's dblock sector; answer with [`Input::Dblock`].
    ReadDblock {
        host_id: u64,
    },
    /// Write this sector as our dblock (sector 2 + host_id - 1); answer [`Input::Written`].
    WriteDblock(Vec<u8>),
    /// Write this sector as the leader (sector 0); answer [`Input::Written`].
    WriteLeader(Vec<u8>),
    /// Wait; answer [`Input::Slept`].
    Sleep(Duration),
    Done(Outcome),
}

#[derive(Clone, Debug)]
pub enum Input {
    Start,
    Area(Result<crate::io::IoData, i32>),
    Leader(Result<crate::io::IoData, i32>),
    HostInfo(Option<HostStatus>),
    OwnerDelta(Result<LeaderRecord, i32>),
    Dblock(Result<PaxosDblock, i32>),
    Written(Result<(), i32>),
    Slept,
}

#[derive(Clone, Debug)]
enum Phase {
    Start,
    ReadingArea,
    WarmLeader,
    AskHostInfo,
    ReadingOwnerDelta,
    ReadingOwnerDblock,
    WaitingOwner,
    RereadAfterWait,
    RetryReadLeader,
    Ballot1Written,
    Ballot1Read,
    Ballot2Written,
    Ballot2Read,
    BackOff,
    Committing,
    Done,
}

/// One acquisition of a resource lease.
#[derive(Clone, Debug)]
pub struct PaxosAcquire {
    p: PaxosParams,
    phase: Phase,
    cur: LeaderRecord,
    cur_bytes: Vec<u8>,
    max_mbal: u64,
    copy_cur: bool,
    // owner wait
    hs: Option<HostStatus>,
    wait_start: u64,
    last_timestamp: u64,
    // ballot
    next_lver: u64,
    our_mbal: u64,
    dblock: PaxosDblock,
    new_leader: LeaderRecord,
    rng: u64,
    /// Hosts whose mode block said SHARED in a phase-1 read (incl. ours).
    shared_seen: Vec<u64>,
    /// The last leader read (what the lease looked like when we failed).
    seen: LeaderRecord,
    /// The leader we wrote when we last freed this lease, and our ballot
    /// number then: [`PaxosAcquire::warm_start`].
    warm: Option<(LeaderRecord, u64)>,
    /// The first phase-1 read of a warm acquire checks every dblock's
    /// checksum, as the area read it stands in for does.
    check_all_dblocks: bool,
    warm_hit: bool,
}

/// Verifies a resource leader sector for this acquire (magic, version,
/// num_hosts; names are the caller's concern).
fn verify_leader(bytes: &[u8], p: &PaxosParams) -> Result<LeaderRecord, i32> {
    let lr = LeaderRecord::decode(bytes).map_err(|e| e.sanlk_rv())?;
    let (ls, res) = match &p.names {
        Some((l, r)) => (Some(l), Some(r)),
        None => (None, None),
    };
    match lr.verify_paxos(ls, res, p.host_id) {
        Ok(()) | Err(DecodeError::WrongSectorSize { .. }) => Ok(lr),
        Err(e) => Err(e.sanlk_rv()),
    }
}

/// The dblock sectors of an area read of `ss`-byte sectors, host_id 1 to
/// `num_hosts` (fewer if the read is shorter).
fn dblock_sectors(area: &[u8], ss: usize, num_hosts: u64) -> impl Iterator<Item = &[u8]> {
    (0..num_hosts as usize).map_while(move |q| area.get((2 + q) * ss..(3 + q) * ss))
}

/// A dblock sector: the dblock with its checksum, the rest zero (which
/// clears the mode block, as sanlock's plain dblock write does).
pub fn dblock_sector(d: &mut PaxosDblock, sector_size: usize) -> Vec<u8> {
    let mut s = vec![0u8; sector_size];
    let b = d.seal();
    s[..b.len()].copy_from_slice(&b);
    s
}

pub fn leader_sector(lr: &mut LeaderRecord, sector_size: usize) -> Vec<u8> {
    let mut s = vec![0u8; sector_size];
    let b = lr.seal();
    s[..b.len()].copy_from_slice(&b);
    s
}

impl PaxosAcquire {
    pub fn new(p: PaxosParams) -> Self {
        let rng = p.seed | 1;
        PaxosAcquire {
            p,
            phase: Phase::Start,
            cur: LeaderRecord::default(),
            cur_bytes: Vec::new(),
            max_mbal: 0,
            copy_cur: false,
            hs: None,
            wait_start: 0,
            last_timestamp: 0,
            next_lver: 0,
            our_mbal: 0,
            dblock: PaxosDblock::default(),
            new_leader: LeaderRecord::default(),
            rng,
            shared_seen: Vec::new(),
            seen: LeaderRecord::default(),
            warm: None,
            check_all_dblocks: false,
            warm_hit: false,
        }
    }

    /// Starts from what this host knows of a lease it freed itself: the
    /// leader it wrote then (`freed`, lver N, free) and its ballot number
    /// of lver N. The first step then reads the leader sector, not the
    /// whole area: if it is still the very record we wrote, nobody has
    /// committed or written the leader since, and the ballot for N + 1
    /// runs as after an aborted one (sanlock's retry reads only the leader
    /// too). Otherwise the acquire starts again from the area read. Both
    /// phases run in full either way: Disk Paxos is safe whatever the
    /// ballot number, so an older one only costs an abort. Saves a 1 MiB
    /// read per acquire of a lease this host released last.
    ///
    /// Only for a plain exclusive acquire; other flags start as usual.
    pub fn warm_start(&mut self, freed: LeaderRecord, mbal: u64) {
        let plain = PAXOS_ACQUIRE_FORCE | PAXOS_ACQUIRE_SHARED | PAXOS_WRITE_MBLOCK_SH;
        if self.p.flags & plain == 0
            && self.p.acquire_lver == 0
            && self.p.new_num_hosts == 0
            && freed.timestamp == 0
            && freed.lver != 0
        {
            self.warm = Some((freed, mbal));
        }
    }

    /// Whether the acquire started warm and found the leader as we left it.
    pub fn was_warm(&self) -> bool {
        self.warm_hit
    }

    /// Hosts seen holding the lease SHARED during our ballots (sorted; may
    /// include our own host_id). An EX winner must check they are gone.
    pub fn shared_seen(&self) -> &[u64] {
        &self.shared_seen
    }

    /// The leader as last read: on failure, who holds the lease and whether
    /// only briefly for a shared acquire (LFL_SHORT_HOLD).
    pub fn seen_leader(&self) -> &LeaderRecord {
        &self.seen
    }

    /// A ballot dblock sector, with our SHARED mode block when converting.
    fn our_dblock_sector(&self) -> Vec<u8> {
        let mut d = self.dblock;
        let mut s = dblock_sector(&mut d, self.p.sector_size);
        if self.p.flags & PAXOS_WRITE_MBLOCK_SH != 0 {
            let mb = crate::ondisk::dblock::ModeBlock {
                flags: crate::ondisk::dblock::MBLOCK_SHARED,
                generation: self.p.host_generation,
            };
            let at = crate::ondisk::dblock::MBLOCK_OFFSET;
            s[at..at + crate::ondisk::dblock::MODE_BLOCK_SIZE].copy_from_slice(&mb.encode());
        }
        s
    }

    /// Our ballot number above `max_mbal` (one of ours: ≡ host_id modulo
    /// max_hosts), or our host_id if no ballot was seen.
    fn mbal_above(&self, max_mbal: u64) -> u64 {
        let max_hosts = self.cur.max_hosts.max(1);
        if max_mbal == 0 {
            self.p.host_id
        } else {
            max_mbal - max_mbal % max_hosts + max_hosts + self.p.host_id
        }
    }

    /// The ballot number (mbal) of our current ballot, for log lines.
    pub fn ballot(&self) -> u64 {
        self.dblock.mbal
    }

    /// Our host_id and the lease's sector size (for the driver's offsets).
    pub fn host_and_sector(&self) -> (u64, usize) {
        (self.p.host_id, self.p.sector_size)
    }

    fn done(&mut self, r: Outcome) -> Step {
        self.phase = Phase::Done;
        Step::Done(r)
    }

    fn fail(&mut self, e: i32) -> Step {
        self.done(Err(e))
    }

    fn random_backoff(&mut self) -> Duration {
        // xorshift64: a uniform 0..1 s back-off, reproducible from the seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        Duration::from_micros(self.rng % 1_000_000)
    }

    fn restart(&mut self) -> Step {
        self.phase = Phase::ReadingArea;
        Step::ReadArea
    }

    /// After the first read: decide whether the lease is ours to ballot for.
    fn examine_area(&mut self, area: &[u8]) -> Step {
        let ss = self.p.sector_size;
        let cur = match verify_leader(&area[..ss.min(area.len())], &self.p) {
            Ok(l) => l,
            Err(e) => return self.fail(e),
        };
        self.seen = cur;
        let mut max_mbal = 0;
        for s in dblock_sectors(area, ss, cur.num_hosts) {
            let d = PaxosDblock::decode(s).expect("a sector holds a dblock");
            if d.verify().is_err() {
                return self.fail(rv::SANLK_DBLOCK_CHECKSUM);
            }
            max_mbal = max_mbal.max(d.mbal);
        }
        self.cur_bytes = area[..crate::ondisk::leader::LEADER_SIZE].to_vec();
        self.cur = cur;
        self.max_mbal = max_mbal;
        let (h, g) = (self.p.host_id, self.p.host_generation);
        if self.p.flags & PAXOS_ACQUIRE_FORCE != 0 {
            self.copy_cur = true;
            return self.run();
        }
        if self.p.acquire_lver != 0 && cur.lver != self.p.acquire_lver {
            return self.fail(rv::SANLK_ACQUIRE_LVER);
        }
        if cur.timestamp == 0 || (cur.owner_id == h && cur.owner_generation <= g) {
            // free, ours, or ours from an older generation of our host_id
            self.copy_cur = true;
            return self.run();
        }
        self.phase = Phase::AskHostInfo;
        Step::HostInfo {
            owner_id: cur.owner_id,
        }
    }

    /// The ballot for lver + 1, with a ballot number above every one seen.
    fn run(&mut self) -> Step {
        self.next_lver = self.cur.lver + 1;
        self.our_mbal = self.mbal_above(self.max_mbal);
        self.dblock = PaxosDblock::default();
        self.retry_ballot()
    }

    fn retry_ballot(&mut self) -> Step {
        if self.copy_cur {
            self.copy_cur = false;
            let cur = self.cur_bytes.clone();
            return self.check_then_ballot(&cur);
        }
        self.phase = Phase::RetryReadLeader;
        Step::ReadLeader
    }

    /// retry_ballot's checks on a fresh leader, then phase 1.
    fn check_then_ballot(&mut self, leader_bytes: &[u8]) -> Step {
        let tmp = match verify_leader(leader_bytes, &self.p) {
            Ok(l) => l,
            Err(e) => return self.fail(e),
        };
        self.seen = tmp;
        if tmp.lver == self.next_lver {
            // Someone committed this version already, perhaps with us as owner.
            return if tmp.owner_id == self.p.host_id
                && tmp.owner_generation == self.p.host_generation
            {
                self.done(Ok((tmp, self.dblock)))
            } else {
                self.fail(rv::SANLK_ACQUIRE_OWNED)
            };
        }
        if tmp.lver > self.next_lver
            || leader_bytes[..crate::ondisk::leader::LEADER_SIZE] != self.cur_bytes[..]
        {
            return self.restart();
        }
        self.dblock = PaxosDblock {
            mbal: self.our_mbal,
            lver: self.next_lver,
            ..Default::default()
        };
        self.phase = Phase::Ballot1Written;
        Step::WriteDblock(self.our_dblock_sector())
    }

    /// Reads every dblock of a phase; Err is an abort. In phase 1 also
    /// returns the dblock with the highest bal that carries a value, and
    /// (`note_shared`) notes the hosts whose valid dblock's mode block is
    /// shared, every one of them even after an abort is decided.
    ///
    /// One pass, deciding on the lver field first: a dblock with an older
    /// lver (most of them, and every empty one) counts for nothing in the
    /// ballot whether or not its checksum holds, so it is verified only if
    /// its mode block matters. Two passes that decoded and verified all
    /// 2,000 dblocks of each read were a fifth of the daemon's CPU with 64
    /// clients.
    fn scan(&mut self, area: &[u8], note_shared: bool) -> Result<Option<PaxosDblock>, i32> {
        use crate::ondisk::dblock::{MBLOCK_OFFSET, MBLOCK_SHARED};
        let mut verdict: Result<Option<PaxosDblock>, i32> = Ok(None);
        for (q, s) in dblock_sectors(area, self.p.sector_size, self.cur.num_hosts).enumerate() {
            let shared =
                note_shared && crate::ondisk::le::u32_at(s, MBLOCK_OFFSET) & MBLOCK_SHARED != 0;
            let in_ballot = verdict.is_ok() && PaxosDblock::lver_of(s) >= self.dblock.lver;
            if !shared && !in_ballot {
                continue;
            }
            let bk = PaxosDblock::decode(s).expect("a sector holds a dblock");
            if bk.verify().is_err() {
                continue;
            }
            if shared {
                let h = q as u64 + 1;
                if let Err(i) = self.shared_seen.binary_search(&h) {
                    self.shared_seen.insert(i, h);
                }
            }
            let Ok(best) = &mut verdict else {
                continue;
            };
            if !in_ballot {
                continue;
            }
            if bk.lver > self.dblock.lver {
                verdict = Err(rv::SANLK_DBLOCK_LVER);
            } else if bk.mbal > self.dblock.mbal {
                verdict = Err(rv::SANLK_DBLOCK_MBAL);
            } else if bk.inp != 0 && bk.bal != 0 && best.is_none_or(|b| bk.bal > b.bal) {
                *best = Some(bk);
            }
            if verdict.is_err() && !note_shared {
                return verdict;
            }
        }
        verdict
    }

    /// examine_area's check of every dblock's checksum, for a warm
    /// acquire's first phase-1 read (which stands in for that area read).
    fn bad_dblock(&self, area: &[u8]) -> Option<i32> {
        dblock_sectors(area, self.p.sector_size, self.cur.num_hosts)
            .any(|s| {
                PaxosDblock::decode(s)
                    .expect("a sector holds a dblock")
                    .verify()
                    .is_err()
            })
            .then_some(rv::SANLK_DBLOCK_CHECKSUM)
    }

    fn abort_and_retry(&mut self) -> Step {
        self.our_mbal += self.cur.max_hosts.max(1);
        self.phase = Phase::BackOff;
        let d = self.random_backoff();
        Step::Sleep(d)
    }

    pub fn step(&mut self, now: u64, input: Input) -> Step {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        match (phase, input) {
            (Phase::Start, Input::Start) if self.warm.is_some() => {
                self.phase = Phase::WarmLeader;
                Step::ReadLeader
            }
            (Phase::Start, Input::Start) => self.restart(),
            (Phase::WarmLeader, Input::Leader(r)) => {
                let (freed, mbal) = self.warm.expect("warm");
                let ok = r.as_ref().ok().filter(|b| {
                    b.len() >= crate::ondisk::leader::LEADER_SIZE
                        && b[..crate::ondisk::leader::LEADER_SIZE] == freed.encode()[..]
                });
                let Some(b) = ok else {
                    // Written since, or unreadable: the usual first read.
                    self.warm = None;
                    return self.restart();
                };
                if let Err(e) = verify_leader(b, &self.p) {
                    return self.fail(e);
                }
                self.seen = freed;
                self.cur = freed;
                self.cur_bytes = b[..crate::ondisk::leader::LEADER_SIZE].to_vec();
                self.max_mbal = mbal;
                self.copy_cur = true;
                self.check_all_dblocks = true;
                self.warm_hit = true;
                if self.p.flags & PAXOS_WARM_SKIPS_PHASE1 != 0 {
                    self.check_all_dblocks = false;
                    self.next_lver = self.cur.lver + 1;
                    self.our_mbal = self.mbal_above(mbal);
                    self.dblock = PaxosDblock {
                        mbal: self.our_mbal,
                        bal: self.our_mbal,
                        lver: self.next_lver,
                        inp: self.p.host_id,
                        inp2: self.p.host_generation,
                        inp3: now,
                        ..Default::default()
                    };
                    self.phase = Phase::Ballot2Written;
                    return Step::WriteDblock(self.our_dblock_sector());
                }
                self.run()
            }
            (Phase::ReadingArea, Input::Area(r)) => match r {
                Ok(a) => self.examine_area(&a),
                Err(e) => self.fail(e),
            },
            (Phase::AskHostInfo, Input::HostInfo(hs)) => {
                let matching = hs.as_ref().is_some_and(|h| {
                    h.last_check != 0
                        && h.last_live != 0
                        && h.owner_id == self.cur.owner_id
                        && h.owner_generation == self.cur.owner_generation
                });
                if matching {
                    let h = hs.as_ref().unwrap();
                    self.wait_start = h.last_live;
                    self.last_timestamp = h.timestamp;
                } else {
                    self.wait_start = now;
                    self.last_timestamp = 0;
                }
                self.hs = hs;
                self.phase = Phase::ReadingOwnerDelta;
                Step::ReadOwnerDelta {
                    owner_id: self.cur.owner_id,
                }
            }
            (Phase::ReadingOwnerDelta, Input::OwnerDelta(r)) => {
                let delta = match r {
                    Ok(d) => d,
                    Err(e) => return self.fail(e),
                };
                if delta.timestamp == 0
                    || delta.owner_id != self.cur.owner_id
                    || delta.owner_generation > self.cur.owner_generation
                {
                    // The owner's host_id is free or was taken by a new
                    // instance: neither can happen before its watchdog fired.
                    return self.run();
                }
                if self.last_timestamp == 0 {
                    self.last_timestamp = delta.timestamp;
                    self.phase = Phase::WaitingOwner;
                    return Step::Sleep(Duration::from_secs(1));
                }
                let hs = self.hs.clone().unwrap_or_default();
                let alive = delta.timestamp != self.last_timestamp
                    || (hs.last_live != 0 && hs.last_check == hs.last_live);
                if alive {
                    if self.cur.write_id != self.cur.owner_id {
                        // Its release may have been clobbered by another ballot's commit.
                        self.phase = Phase::ReadingOwnerDblock;
                        return Step::ReadDblock {
                            host_id: self.cur.owner_id,
                        };
                    }
                    return self.fail(rv::SANLK_ACQUIRE_IDLIVE);
                }
                let dead = hs.dead_seconds(self.p.io_timeout, self.p.watchdog_fire_timeout);
                if now.saturating_sub(self.wait_start) > dead {
                    return self.run();
                }
                if self.p.flags & PAXOS_ACQUIRE_OWNER_NOWAIT != 0 {
                    return self.fail(rv::SANLK_ACQUIRE_OWNED_RETRY);
                }
                self.phase = Phase::WaitingOwner;
                Step::Sleep(Duration::from_secs(1))
            }
            (Phase::ReadingOwnerDblock, Input::Dblock(r)) => match r {
                Ok(d) if d.flags & DBLOCK_FL_RELEASED != 0 => self.run(),
                _ => self.fail(rv::SANLK_ACQUIRE_IDLIVE),
            },
            (Phase::WaitingOwner, Input::Slept) => {
                self.phase = Phase::RereadAfterWait;
                Step::ReadLeader
            }
            (Phase::RereadAfterWait, Input::Leader(r)) => match r {
                Err(e) => self.fail(e),
                Ok(b) => {
                    if let Err(e) = verify_leader(&b, &self.p) {
                        return self.fail(e);
                    }
                    if b[..crate::ondisk::leader::LEADER_SIZE] != self.cur_bytes[..] {
                        return self.restart();
                    }
                    self.phase = Phase::ReadingOwnerDelta;
                    Step::ReadOwnerDelta {
                        owner_id: self.cur.owner_id,
                    }
                }
            },
            (Phase::RetryReadLeader, Input::Leader(r)) => match r {
                Err(e) => self.fail(e),
                Ok(b) => self.check_then_ballot(&b),
            },
            (Phase::Ballot1Written, Input::Written(r)) => match r {
                Err(_) => self.fail(rv::SANLK_DBLOCK_WRITE),
                Ok(()) => {
                    self.phase = Phase::Ballot1Read;
                    Step::ReadArea
                }
            },
            (Phase::Ballot1Read, Input::Area(r)) => {
                let Ok(area) = r else {
                    return self.fail(rv::SANLK_DBLOCK_READ);
                };
                if std::mem::take(&mut self.check_all_dblocks)
                    && let Some(e) = self.bad_dblock(&area)
                {
                    return self.fail(e);
                }
                match self.scan(&area, true) {
                    Err(_) => self.abort_and_retry(),
                    Ok(best) => {
                        match best {
                            Some(b) => {
                                (self.dblock.inp, self.dblock.inp2, self.dblock.inp3) =
                                    (b.inp, b.inp2, b.inp3)
                            }
                            None => {
                                (self.dblock.inp, self.dblock.inp2, self.dblock.inp3) =
                                    (self.p.host_id, self.p.host_generation, now)
                            }
                        }
                        self.dblock.bal = self.dblock.mbal;
                        self.phase = Phase::Ballot2Written;
                        Step::WriteDblock(self.our_dblock_sector())
                    }
                }
            }
            (Phase::Ballot2Written, Input::Written(r)) => match r {
                Err(_) => self.fail(rv::SANLK_DBLOCK_WRITE),
                Ok(()) => {
                    self.phase = Phase::Ballot2Read;
                    Step::ReadArea
                }
            },
            (Phase::Ballot2Read, Input::Area(r)) => {
                let Ok(area) = r else {
                    return self.fail(rv::SANLK_DBLOCK_READ);
                };
                if self.scan(&area, false).is_err() {
                    return self.abort_and_retry();
                }
                // Committed: write the value the ballot chose as the leader.
                let mut nl = self.cur;
                nl.lver = self.dblock.lver;
                nl.owner_id = self.dblock.inp;
                nl.owner_generation = self.dblock.inp2;
                nl.timestamp = self.dblock.inp3;
                nl.write_id = self.p.host_id;
                nl.write_generation = self.p.host_generation;
                nl.write_timestamp = now;
                if self.p.new_num_hosts != 0 {
                    nl.num_hosts = self.p.new_num_hosts;
                }
                if nl.owner_id == self.p.host_id {
                    if self.p.flags & PAXOS_ACQUIRE_SHARED != 0 {
                        nl.flags |= crate::geometry::LFL_SHORT_HOLD;
                    } else {
                        nl.flags &= !crate::geometry::LFL_SHORT_HOLD;
                    }
                }
                let sector = leader_sector(&mut nl, self.p.sector_size);
                self.new_leader = nl;
                self.phase = Phase::Committing;
                Step::WriteLeader(sector)
            }
            (Phase::BackOff, Input::Slept) => self.retry_ballot(),
            (Phase::Committing, Input::Written(r)) => match r {
                Err(e) => self.fail(e),
                // The ballot may adopt our own earlier value: our host_id
                // with the generation of an instance of our lockspace that
                // is gone (its ballot cut off before it committed). That
                // owner is not us: others see its host_id taken by a newer
                // generation and take the lease at once. sanlock compares
                // only the host_id here; the simulation found the case.
                Ok(())
                    if self.new_leader.owner_id != self.p.host_id
                        || (self.new_leader.owner_generation != self.p.host_generation
                            && self.p.flags & PAXOS_COMMIT_HOST_ID_ONLY == 0) =>
                {
                    self.fail(rv::SANLK_ACQUIRE_OTHER)
                }
                Ok(()) => self.done(Ok((self.new_leader, self.dblock))),
            },
            (phase, input) => {
                self.phase = phase;
                panic!(
                    "paxos acquire: input {input:?} does not fit phase {:?}",
                    self.phase
                )
            }
        }
    }
}

/// Our dblock marked released (written before the leader is freed): tells
/// others we are gone even if our leader write is lost.
pub fn released_dblock_sector(last: &PaxosDblock, sector_size: usize) -> Vec<u8> {
    let mut d = *last;
    d.flags = DBLOCK_FL_RELEASED;
    dblock_sector(&mut d, sector_size)
}

/// `paxos_lease_release`'s decision on the leader read now: `Ok(None)` if
/// another host wrote it (nothing to write), `Ok(Some(sector))` to write.
pub fn release_leader(
    now_leader: &LeaderRecord,
    last: &LeaderRecord,
    host_id: u64,
    host_generation: u64,
    now: u64,
    sector_size: usize,
) -> Result<Option<(LeaderRecord, Vec<u8>)>, i32> {
    if now_leader.write_id != host_id {
        return Ok(None);
    }
    if now_leader.lver != last.lver {
        return Err(rv::SANLK_RELEASE_LVER);
    }
    if now_leader.timestamp == 0
        || now_leader.owner_id != host_id
        || now_leader.owner_generation != host_generation
        || now_leader.encode() != last.encode()
    {
        return Err(rv::SANLK_RELEASE_OWNER);
    }
    let mut lr = *now_leader;
    lr.timestamp = 0;
    lr.write_id = host_id;
    lr.write_generation = host_generation;
    lr.write_timestamp = now;
    lr.flags &= !crate::geometry::LFL_SHORT_HOLD;
    let s = leader_sector(&mut lr, sector_size);
    Ok(Some((lr, s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ondisk::{self, Name};

    const SS: usize = 512;

    fn fresh_area(num_hosts: u64) -> Vec<u8> {
        let mut area = vec![0u8; (2 + num_hosts as usize) * SS];
        let mut lr = LeaderRecord {
            magic: ondisk::PAXOS_DISK_MAGIC,
            version: ondisk::PAXOS_DISK_VERSION_MAJOR | ondisk::PAXOS_DISK_VERSION_MINOR,
            flags: 0x10,
            sector_size: SS as u32,
            num_hosts,
            max_hosts: 2000,
            space_name: Name::new("LS").unwrap(),
            resource_name: Name::new("R").unwrap(),
            ..Default::default()
        };
        area[..SS].copy_from_slice(&leader_sector(&mut lr, SS));
        area
    }

    fn params(host_id: u64, seed: u64) -> PaxosParams {
        PaxosParams {
            host_id,
            host_generation: 1,
            sector_size: SS,
            flags: 0,
            acquire_lver: 0,
            new_num_hosts: 0,
            watchdog_fire_timeout: 60,
            io_timeout: 1,
            seed,
            names: None,
        }
    }

    /// A warm start reads the leader sector first and writes nothing
    /// before it has seen the leader it freed: a leader written since
    /// sends it to the area read, a matching one to phase 1 at lver + 1.
    #[test]
    fn a_warm_start_reads_the_leader_and_writes_only_if_it_is_unchanged() {
        let area = fresh_area(4);
        let mut freed = LeaderRecord::decode(&area[..SS]).unwrap();
        (freed.lver, freed.owner_id, freed.write_id) = (7, 2, 2);
        let sector = leader_sector(&mut freed, SS);
        let start = |leader: &[u8]| {
            let mut m = PaxosAcquire::new(params(2, 1));
            m.warm_start(freed, 4002);
            assert_eq!(m.step(10, Input::Start), Step::ReadLeader);
            let next = m.step(10, Input::Leader(Ok(leader.to_vec().into())));
            (m, next)
        };
        let (m, next) = start(&sector);
        let Step::WriteDblock(s) = next else {
            panic!("{next:?}")
        };
        let d = PaxosDblock::decode(&s).unwrap();
        assert_eq!(
            (d.lver, d.mbal, d.bal),
            (8, 6002, 0),
            "phase 1, above our last"
        );
        assert!(m.was_warm());
        // Another write of the leader (here: lver 8 by host 3).
        let mut other = freed;
        (other.lver, other.write_id) = (8, 3);
        let (m, next) = start(&leader_sector(&mut other, SS));
        assert_eq!(next, Step::ReadArea);
        assert!(!m.was_warm());
        // A failed read, likewise.
        let mut m = PaxosAcquire::new(params(2, 1));
        m.warm_start(freed, 4002);
        m.step(10, Input::Start);
        assert_eq!(m.step(10, Input::Leader(Err(-5))), Step::ReadArea);
        // Not for a shared or forced acquire, nor one asking for an lver.
        for f in [PAXOS_ACQUIRE_SHARED, PAXOS_ACQUIRE_FORCE] {
            let mut m = PaxosAcquire::new(PaxosParams {
                flags: f,
                ..params(2, 1)
            });
            m.warm_start(freed, 4002);
            assert_eq!(m.step(10, Input::Start), Step::ReadArea);
        }
        let mut m = PaxosAcquire::new(PaxosParams {
            acquire_lver: 7,
            ..params(2, 1)
        });
        m.warm_start(freed, 4002);
        assert_eq!(m.step(10, Input::Start), Step::ReadArea);
    }

    /// Runs one host's step against the shared disk, atomically.
    fn perform(
        area: &mut [u8],
        host_id: u64,
        step: &Step,
        owner_delta: &LeaderRecord,
        hs: &Option<HostStatus>,
        now: u64,
    ) -> Option<Input> {
        Some(match step {
            Step::ReadArea => Input::Area(Ok(area.to_vec().into())),
            Step::ReadLeader => Input::Leader(Ok(area[..SS].to_vec().into())),
            Step::HostInfo { .. } => Input::HostInfo(hs.clone()),
            // A zero owner_id in the template means "every owner is alive":
            // its delta lease names it and its timestamp moves at each read.
            Step::ReadOwnerDelta { owner_id } if owner_delta.owner_id == 0 => {
                Input::OwnerDelta(Ok(LeaderRecord {
                    owner_id: *owner_id,
                    owner_generation: 1,
                    timestamp: now,
                    ..Default::default()
                }))
            }
            Step::ReadOwnerDelta { .. } => Input::OwnerDelta(Ok(*owner_delta)),
            Step::ReadDblock { host_id: h } => {
                let at = (1 + *h as usize) * SS;
                Input::Dblock(Ok(PaxosDblock::decode(&area[at..at + SS]).unwrap()))
            }
            Step::WriteDblock(s) => {
                let at = (1 + host_id as usize) * SS;
                area[at..at + SS].copy_from_slice(s);
                Input::Written(Ok(()))
            }
            Step::WriteLeader(s) => {
                area[..SS].copy_from_slice(s);
                Input::Written(Ok(()))
            }
            Step::Sleep(_) => Input::Slept,
            Step::Done(_) => return None,
        })
    }

    /// Hosts race for a free lease, interleaved at random step by step.
    fn race(seed: u64, hosts: u64) -> (Vec<Outcome>, LeaderRecord) {
        let mut area = fresh_area(hosts + 1);
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut machines: Vec<_> = (1..=hosts)
            .map(|h| PaxosAcquire::new(params(h, seed ^ h)))
            .collect();
        let mut steps: Vec<Step> = machines
            .iter_mut()
            .map(|m| m.step(100, Input::Start))
            .collect();
        let mut results: Vec<Option<Outcome>> = vec![None; hosts as usize];
        let none = LeaderRecord::default();
        for tick in 0..100_000u64 {
            if results.iter().all(|r| r.is_some()) {
                break;
            }
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng % hosts) as usize;
            if results[i].is_some() {
                continue;
            }
            let now = 100 + tick / 50;
            match perform(&mut area, i as u64 + 1, &steps[i], &none, &None, now) {
                None => {
                    if let Step::Done(r) = &steps[i] {
                        results[i] = Some(*r);
                    }
                }
                Some(input) => steps[i] = machines[i].step(now, input),
            }
        }
        let leader = LeaderRecord::decode(&area[..SS]).unwrap();
        (
            results
                .into_iter()
                .map(|r| r.expect("a host never finished"))
                .collect(),
            leader,
        )
    }

    #[test]
    fn racing_hosts_never_both_win() {
        for seed in 1..3000u64 {
            let hosts = 2 + seed % 3;
            let (results, leader) = race(seed, hosts);
            let winners: Vec<u64> = results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|(l, _)| l.owner_id)
                .collect();
            assert!(
                winners.len() <= 1,
                "seed {seed}: several winners {winners:?}"
            );
            for r in &results {
                if let Err(e) = r {
                    assert!(
                        [
                            rv::SANLK_ACQUIRE_OWNED,
                            rv::SANLK_ACQUIRE_OTHER,
                            rv::SANLK_ACQUIRE_IDLIVE
                        ]
                        .contains(e),
                        "seed {seed}: unexpected error {e}"
                    );
                }
            }
            // The disk names the winner (or a host whose value won) at lver 1.
            assert_eq!(leader.lver, 1, "seed {seed}");
            if let Some(w) = winners.first() {
                assert_eq!(
                    leader.owner_id, *w,
                    "seed {seed}: disk disagrees with the winner"
                );
            }
        }
    }

    fn owned_by(owner: u64, last_live: u64) -> (Vec<u8>, Option<HostStatus>, LeaderRecord) {
        let mut area = fresh_area(4);
        let mut lr = LeaderRecord::decode(&area[..SS]).unwrap();
        (
            lr.owner_id,
            lr.owner_generation,
            lr.timestamp,
            lr.lver,
            lr.write_id,
        ) = (owner, 1, 50, 7, owner);
        area[..SS].copy_from_slice(&leader_sector(&mut lr, SS));
        let hs = HostStatus {
            first_check: 90,
            last_check: last_live + 2,
            last_live,
            owner_id: owner,
            owner_generation: 1,
            timestamp: 60,
            io_timeout: 1,
            ..Default::default()
        };
        let delta = LeaderRecord {
            owner_id: owner,
            owner_generation: 1,
            timestamp: 60,
            ..Default::default()
        };
        (area, Some(hs), delta)
    }

    fn drive_one(
        area: &mut [u8],
        hs: Option<HostStatus>,
        mut delta: LeaderRecord,
        start: u64,
        renew_every: Option<u64>,
    ) -> (Outcome, u64) {
        let mut m = PaxosAcquire::new(params(1, 5));
        let mut now = start;
        let mut step = m.step(now, Input::Start);
        loop {
            if let Step::Sleep(d) = &step {
                now += d.as_secs().max(1);
                if let Some(every) = renew_every.filter(|e| now.is_multiple_of(*e)) {
                    delta.timestamp += every;
                }
            }
            match perform(area, 1, &step, &delta, &hs, now) {
                None => {
                    let Step::Done(r) = step else { unreachable!() };
                    return (r, now);
                }
                Some(input) => step = m.step(now, input),
            }
        }
    }

    #[test]
    fn dead_owner_is_taken_over_only_after_host_dead_seconds_with_lver_plus_one() {
        let (mut area, hs, delta) = owned_by(3, 100);
        let (r, now) = drive_one(&mut area, hs, delta, 101, None);
        let (lr, _) = r.unwrap();
        assert_eq!((lr.owner_id, lr.lver), (1, 8));
        assert!(
            now - 100 > 68,
            "took over {}s after the owner's last renewal",
            now - 100
        );
    }

    #[test]
    fn live_owner_keeps_its_lease() {
        let (mut area, hs, delta) = owned_by(3, 100);
        let (r, _) = drive_one(&mut area, hs, delta, 101, Some(2));
        assert_eq!(r.unwrap_err(), rv::SANLK_ACQUIRE_IDLIVE);
        assert_eq!(
            LeaderRecord::decode(&area[..SS]).unwrap().owner_id,
            3,
            "the live owner's leader was overwritten"
        );
    }

    #[test]
    fn wrong_lver_and_nowait() {
        let (mut area, hs, delta) = owned_by(3, 100);
        let mut m = PaxosAcquire::new(PaxosParams {
            acquire_lver: 6,
            ..params(1, 1)
        });
        let s = m.step(100, Input::Start);
        let s = m.step(100, perform(&mut area, 1, &s, &delta, &hs, 100).unwrap());
        assert_eq!(s, Step::Done(Err(rv::SANLK_ACQUIRE_LVER)));
        let mut m = PaxosAcquire::new(PaxosParams {
            flags: PAXOS_ACQUIRE_OWNER_NOWAIT,
            ..params(1, 1)
        });
        let mut s = m.step(101, Input::Start);
        while !matches!(s, Step::Done(_)) {
            s = m.step(101, perform(&mut area, 1, &s, &delta, &hs, 101).unwrap());
        }
        assert_eq!(s, Step::Done(Err(rv::SANLK_ACQUIRE_OWNED_RETRY)));
    }

    #[test]
    fn a_value_of_our_own_older_generation_is_not_ours() {
        // Our previous instance (generation 1) proposed itself for lver 1;
        // host 2's ballot adopted that value in its phase 2 and was cut
        // off. Now, in generation 2, our ballot adopts it from host 2's
        // dblock. Committing it is committing another owner.
        let mut area = fresh_area(4);
        let mut old = PaxosDblock {
            mbal: 2,
            bal: 2,
            inp: 1,
            inp2: 1,
            inp3: 77,
            lver: 1,
            ..Default::default()
        };
        area[3 * SS..4 * SS].copy_from_slice(&dblock_sector(&mut old, SS));
        let mut m = PaxosAcquire::new(PaxosParams {
            host_generation: 2,
            ..params(1, 9)
        });
        let none = LeaderRecord::default();
        let mut s = m.step(100, Input::Start);
        while !matches!(s, Step::Done(_)) {
            s = m.step(100, perform(&mut area, 1, &s, &none, &None, 100).unwrap());
        }
        assert_eq!(s, Step::Done(Err(rv::SANLK_ACQUIRE_OTHER)));
        let l = LeaderRecord::decode(&area[..SS]).unwrap();
        assert_eq!((l.lver, l.owner_id, l.owner_generation), (1, 1, 1));
        // The next try finds the lease ours from an older generation and
        // takes it for this one.
        let mut m = PaxosAcquire::new(PaxosParams {
            host_generation: 2,
            ..params(1, 10)
        });
        let mut s = m.step(101, Input::Start);
        while !matches!(s, Step::Done(_)) {
            s = m.step(101, perform(&mut area, 1, &s, &none, &None, 101).unwrap());
        }
        let Step::Done(Ok((l, _))) = s else {
            panic!("{s:?}")
        };
        assert_eq!((l.lver, l.owner_id, l.owner_generation), (2, 1, 2));
    }

    #[test]
    fn release_frees_only_our_own_leader() {
        let (area, _, _) = owned_by(1, 100);
        let lr = LeaderRecord::decode(&area[..SS]).unwrap();
        let (freed, _) = release_leader(&lr, &lr, 1, 1, 200, SS).unwrap().unwrap();
        assert_eq!((freed.timestamp, freed.lver, freed.owner_id), (0, 7, 1));
        assert_eq!(
            release_leader(&lr, &lr, 1, 2, 200, SS).unwrap_err(),
            rv::SANLK_RELEASE_OWNER
        );
        let mut other = lr;
        other.write_id = 2;
        assert_eq!(release_leader(&other, &lr, 1, 1, 200, SS).unwrap(), None);
    }
}
