//! Resource leases held for registered client processes (sanlock's
//! `resource.c`): exclusive and shared leases over Disk Paxos
//! ([`crate::paxos`]), convert, the LVB, persistent leases left as orphans,
//! and the table `client status` lists.
//!
//! A resource (lockspace + name) is one entry in [`ResTable`], on one of
//! sanlock's lists (add, held, rem, orphan), with one token per client that
//! holds it (several only for a shared lease). Disk I/O runs without the
//! table's lock; an entry on the add or rem list keeps others off it
//! meanwhile (-EBUSY / -EAGAIN, as sanlock).
//!
//! Shared leases: a host takes the Paxos lease briefly (LFL_SHORT_HOLD),
//! marks its host block "released + SHARED mode block", and frees the
//! leader. An exclusive acquirer that saw SHARED mode blocks during its
//! ballot must find every such holder dead before it keeps the lease.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::Daemon;
use super::lockspace::Space;
use crate::geometry::Geometry;
use crate::io::{Area, Disk};
use crate::ondisk::dblock::{DBLOCK_FL_RELEASED, MBLOCK_OFFSET, MBLOCK_SHARED, ModeBlock};
use crate::ondisk::{LeaderRecord, Name, PaxosDblock};
use crate::paxos::{self, PaxosAcquire, PaxosParams};
use crate::proto::{self, SanlkResource};
use crate::rv;
use crate::timeouts::monotime;

/// sanlock's fixed LVB sector number within a lease area.
pub const LVB_SECTOR: u64 = 2002;
/// Retries of a shared acquire that met another host's short hold.
const SH_RETRIES: u32 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResList {
    Add,
    Held,
    Rem,
    Orphan,
}

impl ResList {
    pub fn name(self) -> &'static str {
        match self {
            ResList::Add => "add",
            ResList::Held => "held",
            ResList::Rem => "rem",
            ResList::Orphan => "orphan",
        }
    }
}

/// One client's hold on a resource.
#[derive(Clone, Debug)]
pub struct Token {
    pub token_id: u32,
    /// The client slot (registered connection) holding it.
    pub ci: usize,
    pub pid: i32,
    /// As the client named it: disks, SHARED flag, and (EX) the lver held.
    pub res: SanlkResource,
    /// The acquire's own resource flags (PERSISTENT matters at exit).
    pub acquire_flags: u32,
}

/// A resource this host holds or is acquiring/releasing.
#[derive(Clone, Debug)]
pub struct Resource {
    pub res_id: u32,
    pub list: ResList,
    pub ls: Name,
    pub name: Name,
    pub path: String,
    pub offset: u64,
    pub disks: Vec<proto::SanlkDisk>,
    pub shared: bool,
    pub tokens: Vec<Token>,
    /// The last leader we wrote (lver 0: nothing acquired on disk yet).
    pub leader: LeaderRecord,
    /// Our last ballot dblock.
    pub dblock: PaxosDblock,
    pub geometry: Geometry,
    pub space_id: u32,
    pub host_id: u64,
    pub host_generation: u64,
    pub io_timeout: u64,
    /// EX holder's pid (0 for shared), killed on a forced request.
    pub pid: i32,
    pub lvb: Option<Vec<u8>>,
    pub lvb_dirty: bool,
    /// A convert is running on it.
    pub busy: bool,
    /// When it last changed list: sanlock puts a resource at the head of
    /// the list it moves to, and `client status` lists newest first.
    pub moved: u64,
}

/// Orders list moves (see [`Resource::moved`]).
static MOVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Resource {
    fn is(&self, ls: &Name, name: &Name) -> bool {
        self.ls.same_as(ls) && self.name.same_as(name)
    }

    /// Puts it on `list`, as the newest there.
    fn move_to(&mut self, list: ResList) {
        self.list = list;
        self.moved = MOVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Every resource of this daemon, with sanlock's id counters.
#[derive(Default)]
pub struct ResTable {
    pub list: Vec<Resource>,
    next_token_id: u32,
    next_res_id: u32,
}

impl ResTable {
    fn token_id(&mut self) -> u32 {
        self.next_token_id += 1;
        self.next_token_id
    }

    fn res_id(&mut self) -> u32 {
        // sanlock starts resource ids at 2.
        if self.next_res_id < 2 {
            self.next_res_id = 1;
        }
        self.next_res_id += 1;
        self.next_res_id
    }

    fn find(&self, ls: &Name, name: &Name) -> Option<usize> {
        self.list.iter().position(|r| r.is(ls, name))
    }
}

pub(super) fn disk_path(res: &SanlkResource) -> Result<(String, u64), i32> {
    let d = res.disks.first().ok_or(-libc::ERANGE)?;
    Ok((super::path_string(&d.path)?, d.offset))
}

/// An open lease area and its geometry (from its own leader).
pub struct LeaseIo {
    disk: Disk,
    offset: u64,
    pub g: Geometry,
    timeout: Duration,
}

impl LeaseIo {
    /// Opens the lease at `path`/`offset`, reading its geometry from its
    /// leader unless `known` (a lease we hold) says it already.
    pub fn open(
        path: &str,
        offset: u64,
        io_timeout: u64,
        known: Option<Geometry>,
    ) -> Result<LeaseIo, i32> {
        let disk = Disk::open(path.as_ref()).map_err(|e| e.sanlk_rv())?;
        let timeout = Duration::from_secs(io_timeout.max(1));
        let g = match known {
            Some(g) => g,
            None => {
                crate::direct::read_leader_sizes(&disk, offset, timeout).map_err(|e| match e {
                    crate::direct::DirectError::NoSizes { .. } => rv::SANLK_LEADER_MAGIC,
                    other => other.sanlk_rv(),
                })?
            }
        };
        Ok(LeaseIo {
            disk,
            offset,
            g,
            timeout,
        })
    }

    pub fn area(&self) -> Result<Area<'_>, i32> {
        Area::new(
            &self.disk,
            self.offset,
            self.g.align_size as u64,
            self.timeout,
        )
        .map_err(|e| e.sanlk_rv())
    }

    fn ss(&self) -> usize {
        self.g.sector_size as usize
    }

    fn read_leader(&self) -> Result<LeaderRecord, i32> {
        let b = self.area()?.read(0, self.ss()).map_err(|e| e.sanlk_rv())?;
        Ok(LeaderRecord::decode(&b).expect("a sector holds a leader"))
    }

    /// Writes host `host_id`'s block: `dblock` (if any) and a SHARED mode
    /// block for `shared_gen` (if any); the rest of the sector zero.
    fn write_host_block(
        &self,
        host_id: u64,
        dblock: Option<PaxosDblock>,
        shared_gen: Option<u64>,
    ) -> Result<(), i32> {
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
            s[MBLOCK_OFFSET..MBLOCK_OFFSET + 16].copy_from_slice(&mb.encode());
        }
        self.area()?
            .write((1 + host_id) * ss as u64, &s)
            .map_err(|e| e.sanlk_rv())
    }

    fn read_mode_block(&self, host_id: u64) -> Result<ModeBlock, i32> {
        let ss = self.ss();
        let b = self
            .area()?
            .read((1 + host_id) * ss as u64, ss)
            .map_err(|e| e.sanlk_rv())?;
        Ok(ModeBlock::decode(&b[MBLOCK_OFFSET..MBLOCK_OFFSET + 16]).expect("mode block"))
    }

    /// Frees the leader if it is still the one we wrote (`release_disk`).
    fn release_leader(
        &self,
        last: &LeaderRecord,
        host_id: u64,
        generation: u64,
        rename: Option<Name>,
    ) -> Result<(), i32> {
        let now_leader = self.read_leader()?;
        if let Some((mut lr, mut sector)) = paxos::release_leader(
            &now_leader,
            last,
            host_id,
            generation,
            monotime(),
            self.ss(),
        )? {
            if let Some(n) = rename {
                lr.resource_name = n;
                sector = paxos::leader_sector(&mut lr, self.ss());
            }
            self.area()?.write(0, &sector).map_err(|e| e.sanlk_rv())?;
        }
        Ok(())
    }

    /// The LVB sector, where it lies inside the lease area. sanlock puts
    /// it at sector 2002 for every geometry, which for 4K sectors with
    /// areas under 8 MiB is in the next lease: hactl refuses those.
    fn lvb_offset(&self) -> Option<u64> {
        let at = LVB_SECTOR * self.g.sector_size as u64;
        (at + self.g.sector_size as u64 <= self.g.align_size as u64).then_some(at)
    }

    fn read_lvb(&self) -> Result<Vec<u8>, i32> {
        let at = self.lvb_offset().ok_or(-libc::EINVAL)?;
        Ok(self
            .area()?
            .read(at, self.ss())
            .map_err(|e| e.sanlk_rv())?
            .to_vec())
    }

    /// Writes a resource's LVB if a client set it since it was read (at
    /// an EX release or EX→SH convert); a failure is only logged, as sanlock.
    fn write_dirty_lvb(&self, r: &Resource) {
        if let (true, Some(lvb)) = (r.lvb_dirty, &r.lvb)
            && let Err(e) = self.write_lvb(lvb)
        {
            warn!("{}:{}: lvb write failed: {e}", r.ls, r.name);
        }
    }

    fn write_lvb(&self, lvb: &[u8]) -> Result<(), i32> {
        let at = self.lvb_offset().ok_or(-libc::EINVAL)?;
        let mut s = vec![0u8; self.ss()];
        let n = lvb.len().min(s.len());
        s[..n].copy_from_slice(&lvb[..n]);
        self.area()?.write(at, &s).map_err(|e| e.sanlk_rv())
    }
}

/// The owner of a lease as our lockspace sees it, and its delta lease.
struct SpaceOwners<'a> {
    sp: &'a Arc<Space>,
    ls_disk: Disk,
    ls_ss: usize,
    timeout: Duration,
}

impl crate::direct::OwnerView for SpaceOwners<'_> {
    fn host_info(&self, owner_id: u64) -> Result<Option<crate::hosts::HostStatus>, i32> {
        let st = self.sp.state.lock().unwrap();
        Ok(st
            .hosts
            .hosts
            .get((owner_id as usize).wrapping_sub(1))
            .cloned())
    }

    fn owner_delta(&self, owner_id: u64) -> Result<LeaderRecord, i32> {
        let at = self.sp.offset + (owner_id - 1) * self.ls_ss as u64;
        let b = self
            .ls_disk
            .read(at, self.ls_ss, self.timeout)
            .map_err(|e| e.sanlk_rv())?;
        crate::delta::verify_sector(&b, &self.sp.name)
    }
}

/// What one Paxos acquire produced.
struct Won {
    leader: LeaderRecord,
    dblock: PaxosDblock,
    /// Other hosts seen with SHARED mode blocks.
    shared: Vec<u64>,
}

/// Runs the Paxos acquire for `sp`'s host; on failure also the leader as
/// last seen (for the shared-lease retry rule).
fn paxos_acquire(
    sp: &Arc<Space>,
    io: &LeaseIo,
    res: &SanlkResource,
    flags: u32,
) -> Result<Won, (i32, Box<LeaderRecord>)> {
    let t = Duration::from_secs(sp.io_timeout);
    let (host_id, host_generation, ls_ss) = {
        let st = sp.state.lock().unwrap();
        (sp.host_id, st.host_generation, st.sector_size as usize)
    };
    let ls_disk =
        Disk::open(&sp.path).map_err(|_| (rv::SANLK_ACQUIRE_IDDISK, Default::default()))?;
    let mut m = PaxosAcquire::new(PaxosParams {
        host_id,
        host_generation,
        sector_size: io.ss(),
        flags,
        acquire_lver: if res.flags & proto::SANLK_RES_LVER != 0 {
            res.lver
        } else {
            0
        },
        new_num_hosts: if res.flags & proto::SANLK_RES_NUM_HOSTS != 0 {
            res.data32 as u64
        } else {
            0
        },
        watchdog_fire_timeout: sp.watchdog_fire_timeout,
        io_timeout: sp.io_timeout,
        seed: monotime() ^ (host_id << 40) ^ std::process::id() as u64 ^ rand_u64(),
        names: Some((res.lockspace_name, res.name)),
    });
    let owners = SpaceOwners {
        sp,
        ls_disk,
        ls_ss,
        timeout: t,
    };
    let area = io.area().map_err(|e| (e, Box::default()))?;
    let r =
        crate::direct::drive_paxos_acquire(&area, &mut m, io.g.align_size as usize, &owners, |d| {
            std::thread::sleep(d);
            !sp.stop.load(std::sync::atomic::Ordering::Relaxed)
        });
    match r {
        Ok((leader, dblock)) => Ok(Won {
            leader,
            dblock,
            shared: m
                .shared_seen()
                .iter()
                .copied()
                .filter(|&h| h != host_id)
                .collect(),
        }),
        Err(e) => Err((e, Box::new(*m.seen_leader()))),
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into b.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    u64::from_ne_bytes(b)
}

/// Erases the SHARED holds of dead hosts among `shared`; how many are
/// still alive (`clear_dead_shared`).
fn clear_dead_shared(sp: &Arc<Space>, io: &LeaseIo, shared: &[u64]) -> Result<usize, i32> {
    let mut live = 0;
    for &h in shared {
        let mb = io.read_mode_block(h)?;
        if !mb.is_shared() || mb.generation == 0 {
            continue;
        }
        let alive = {
            let st = sp.state.lock().unwrap();
            crate::hosts::shared_holder_live(
                st.hosts.hosts.get((h as usize).wrapping_sub(1)),
                mb.generation,
                monotime(),
                sp.io_timeout,
                sp.watchdog_fire_timeout,
            )
        };
        if alive {
            live += 1;
        } else {
            io.write_host_block(h, None, None)?;
            info!(
                "cleared shared lease for dead host_id {h} gen {}",
                mb.generation
            );
        }
    }
    Ok(live)
}

/// The disk side of an acquire: what a new held resource starts from.
struct Acquired {
    leader: LeaderRecord,
    dblock: PaxosDblock,
    geometry: Geometry,
    lvb: Option<Vec<u8>>,
}

/// Acquires `res` on disk for `sp`'s host, exclusive or shared.
fn acquire_disk(sp: &Arc<Space>, res: &SanlkResource, cmd_flags: u32) -> Result<Acquired, i32> {
    let (path, offset) = disk_path(res)?;
    let io = LeaseIo::open(&path, offset, sp.io_timeout, None)?;
    let (host_id, generation) = (sp.host_id, sp.state.lock().unwrap().host_generation);
    let shared = res.flags & proto::SANLK_RES_SHARED != 0;
    let mut flags = 0;
    if cmd_flags & proto::SANLK_ACQUIRE_OWNER_NOWAIT != 0 {
        flags |= paxos::PAXOS_ACQUIRE_OWNER_NOWAIT;
    }
    if shared {
        flags |= paxos::PAXOS_ACQUIRE_SHARED;
    }
    if cmd_flags & proto::SANLK_ACQUIRE_LVB != 0 && io.lvb_offset().is_none() {
        warn!(
            "{}:{}: no LVB for {}-byte sectors in {}-byte areas (sanlock would use the next lease)",
            res.lockspace_name, res.name, io.g.sector_size, io.g.align_size
        );
        return Err(-libc::EINVAL);
    }
    let mut tries = 0;
    let won = loop {
        match paxos_acquire(sp, &io, res, flags) {
            Ok(w) => break w,
            Err((e, seen))
                if shared
                    && matches!(
                        e,
                        rv::SANLK_ACQUIRE_IDLIVE
                            | rv::SANLK_ACQUIRE_OWNED
                            | rv::SANLK_ACQUIRE_OTHER
                    )
                    && seen.flags & crate::geometry::LFL_SHORT_HOLD != 0 =>
            {
                // Another host holds the Paxos lease only to take it shared.
                tries += 1;
                if tries > SH_RETRIES {
                    return Err(rv::SANLK_ACQUIRE_SHRETRY);
                }
                std::thread::sleep(Duration::from_micros(rand_u64() % 1_000_000));
            }
            Err((e, _)) => return Err(e),
        }
    };
    let Won {
        leader,
        dblock,
        shared: others,
    } = won;
    let mut released = dblock;
    released.flags = DBLOCK_FL_RELEASED;
    if shared {
        // Our hold becomes the mode block; the Paxos lease goes back.
        if let Err(e) = io.write_host_block(host_id, Some(released), Some(generation)) {
            let _ = io.release_leader(&leader, host_id, generation, None);
            return Err(e);
        }
        if let Err(e) = io.release_leader(&leader, host_id, generation, None) {
            let _ = io.write_host_block(host_id, Some(released), None);
            return Err(e);
        }
    } else if !others.is_empty() {
        let live = clear_dead_shared(sp, &io, &others);
        if live != Ok(0) {
            let _ = io.write_host_block(host_id, Some(released), None);
            let _ = io.release_leader(&leader, host_id, generation, None);
            return Err(match live {
                Err(e) => e,
                Ok(_) => -libc::EAGAIN,
            });
        }
    }
    let lvb = if cmd_flags & proto::SANLK_ACQUIRE_LVB != 0 {
        match io.read_lvb() {
            Ok(b) => Some(b),
            Err(e) => {
                warn!("{}:{}: lvb read failed: {e}", res.lockspace_name, res.name);
                Some(vec![0u8; io.ss()])
            }
        }
    } else {
        None
    };
    Ok(Acquired {
        leader,
        dblock,
        geometry: io.g,
        lvb,
    })
}

/// Releases a resource on disk: a shared hold's mode block cleared, or
/// an exclusive lease's LVB written, dblock marked released and leader
/// freed (`release_token`).
fn release_disk(r: &Resource, rename: Option<Name>) -> i32 {
    if r.leader.lver == 0 && !r.shared {
        return 0;
    }
    let run = || -> Result<(), i32> {
        let io = LeaseIo::open(&r.path, r.offset, r.io_timeout, Some(r.geometry))?;
        let mut d = r.dblock;
        d.flags = DBLOCK_FL_RELEASED;
        if r.shared {
            return io.write_host_block(r.host_id, Some(d), None);
        }
        io.write_dirty_lvb(r);
        let _ = io.write_host_block(r.host_id, Some(d), None);
        io.release_leader(&r.leader, r.host_id, r.host_generation, rename)
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            warn!("release of {}:{} failed: {}", r.ls, r.name, rv::describe(e));
            e
        }
    }
}

/// Which client a token belongs to, and its pid, for the table.
pub struct Holder {
    pub ci: usize,
    pub pid: i32,
}

impl Daemon {
    fn live_space(&self, name: &Name) -> Option<Arc<Space>> {
        self.find_active(name)
            .filter(|s| !s.state.lock().unwrap().space_dead)
    }

    /// Acquires `resources` for client slot `ci` (all or none).
    pub fn acquire_for(&self, who: Holder, resources: &[SanlkResource], cmd_flags: u32) -> i32 {
        let mut got: Vec<(Name, Name, u32)> = Vec::new();
        let mut result = 0;
        for res in resources {
            let r = self.acquire_one(&who, res, cmd_flags);
            match r {
                Ok(token_id) => got.push((res.lockspace_name, res.name, token_id)),
                Err(e) => {
                    info!(
                        "r {}:{} acquire failed: {} ({e})",
                        res.lockspace_name,
                        res.name,
                        rv::describe(e)
                    );
                    result = e;
                    break;
                }
            }
        }
        if result != 0 {
            for (_, _, token_id) in got {
                self.release_token(token_id, None);
            }
        }
        result
    }

    fn acquire_one(&self, who: &Holder, res: &SanlkResource, cmd_flags: u32) -> Result<u32, i32> {
        if res.disks.is_empty() || res.disks.len() > proto::SANLK_MAX_DISKS {
            return Err(-libc::ERANGE);
        }
        if res.disks.len() > 1 {
            // Majority I/O over several disks is not implemented: refused,
            // not run on one disk.
            return Err(-libc::EOPNOTSUPP);
        }
        let sp = self.live_space(&res.lockspace_name).ok_or(-libc::ENOSPC)?;
        let (path, offset) = disk_path(res)?;
        let shared = res.flags & proto::SANLK_RES_SHARED != 0;
        let allow_orphan =
            cmd_flags & (proto::SANLK_ACQUIRE_ORPHAN | proto::SANLK_ACQUIRE_ORPHAN_ONLY) != 0;
        let mut tok = Token {
            token_id: 0,
            ci: who.ci,
            pid: who.pid,
            res: SanlkResource {
                flags: res.flags & proto::SANLK_RES_SHARED,
                lver: 0,
                ..res.clone()
            },
            acquire_flags: res.flags,
        };
        {
            let mut t = self.res.lock().unwrap();
            if let Some(i) = t.find(&res.lockspace_name, &res.name) {
                let r = &t.list[i];
                match r.list {
                    ResList::Rem => return Err(-libc::EAGAIN),
                    ResList::Add => return Err(-libc::EBUSY),
                    ResList::Held if r.shared && shared && !r.busy => {
                        tok.token_id = t.token_id();
                        t.list[i].tokens.push(tok.clone());
                        return Ok(tok.token_id);
                    }
                    ResList::Held => return Err(-libc::EEXIST),
                    ResList::Orphan => {
                        if !allow_orphan || r.shared != shared {
                            return Err(-libc::EUCLEAN);
                        }
                        // Adopt the orphan.
                        tok.token_id = t.token_id();
                        let r = &mut t.list[i];
                        if !shared {
                            tok.res.lver = r.leader.lver;
                            r.pid = who.pid;
                        }
                        r.move_to(ResList::Held);
                        r.tokens.push(tok.clone());
                        return Ok(tok.token_id);
                    }
                }
            }
            // sanlock tests the LVB bit here for ORPHAN_ONLY (its quirk):
            // an orphan-only acquire without LVB falls through to a normal one.
            if cmd_flags & proto::SANLK_ACQUIRE_ORPHAN_ONLY != 0
                && cmd_flags & proto::SANLK_ACQUIRE_LVB != 0
            {
                return Err(-libc::ENOENT);
            }
            tok.token_id = t.token_id();
            let res_id = t.res_id();
            let generation = sp.state.lock().unwrap().host_generation;
            t.list.push(Resource {
                res_id,
                list: ResList::Add,
                moved: MOVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                ls: res.lockspace_name,
                name: res.name,
                path,
                offset,
                disks: res.disks.clone(),
                shared,
                tokens: vec![tok.clone()],
                leader: LeaderRecord::default(),
                dblock: PaxosDblock::default(),
                geometry: Geometry::new(512, 1 << 20).expect("valid"),
                space_id: sp.space_id,
                host_id: sp.host_id,
                host_generation: generation,
                io_timeout: sp.io_timeout,
                pid: if shared { 0 } else { who.pid },
                lvb: None,
                lvb_dirty: false,
                busy: false,
            });
        }
        let mut r = acquire_disk(&sp, res, cmd_flags);
        // The lockspace may have failed, or been rejoined with a new
        // generation, while we balloted: a lease won for the old instance
        // is not ours to hand out (others may take it at once). sanlock
        // compares only the host_id here; the simulation showed why the
        // generation matters too.
        let generation_then = {
            let t = self.res.lock().unwrap();
            t.find(&res.lockspace_name, &res.name)
                .map(|i| t.list[i].host_generation)
        };
        if let Ok(a) = &r {
            let still = self.live_space(&res.lockspace_name).is_some_and(|now| {
                now.space_id == sp.space_id
                    && Some(now.state.lock().unwrap().host_generation) == generation_then
            });
            if !still {
                warn!(
                    "r {}:{} acquired for a lockspace instance that is gone: dropped",
                    res.lockspace_name, res.name
                );
                if !sp.state.lock().unwrap().space_dead {
                    let gone = self.res.lock().unwrap();
                    if let Some(i) = gone.find(&res.lockspace_name, &res.name) {
                        let mut tmp = gone.list[i].clone();
                        drop(gone);
                        (tmp.leader, tmp.dblock, tmp.geometry) = (a.leader, a.dblock, a.geometry);
                        release_disk(&tmp, None);
                    }
                }
                r = Err(-libc::ENOSPC);
            }
        }
        let mut t = self.res.lock().unwrap();
        let i = t
            .find(&res.lockspace_name, &res.name)
            .expect("our add entry stays");
        match r {
            Ok(a) => {
                let r = &mut t.list[i];
                r.leader = a.leader;
                r.dblock = a.dblock;
                r.geometry = a.geometry;
                r.lvb = a.lvb;
                r.move_to(ResList::Held);
                if !shared {
                    r.tokens[0].res.lver = a.leader.lver;
                }
                info!(
                    "r {}:{} acquired {} lver {} for pid {}",
                    res.lockspace_name,
                    res.name,
                    if shared { "SH" } else { "EX" },
                    a.leader.lver,
                    who.pid
                );
                Ok(tok.token_id)
            }
            Err(e) => {
                t.list.remove(i);
                Err(e)
            }
        }
    }

    /// Releases one token; the disk release runs when it was the last one
    /// of its resource (a persistent EX lease of an exiting client becomes
    /// an orphan instead when `orphan` is set).
    fn release_token_as(&self, token_id: u32, rename: Option<Name>, orphan: bool) -> i32 {
        let r = {
            let mut t = self.res.lock().unwrap();
            let Some(i) = t
                .list
                .iter()
                .position(|r| r.tokens.iter().any(|k| k.token_id == token_id))
            else {
                return -1;
            };
            let r = &mut t.list[i];
            let k = r
                .tokens
                .iter()
                .position(|k| k.token_id == token_id)
                .unwrap();
            let tok = r.tokens.remove(k);
            if !r.tokens.is_empty() {
                return if r.shared { 0 } else { rv::SANLK_ERROR };
            }
            if orphan && tok.acquire_flags & proto::SANLK_RES_PERSISTENT != 0 && r.leader.lver != 0
            {
                r.move_to(ResList::Orphan);
                r.busy = false;
                return 0;
            }
            r.move_to(ResList::Rem);
            r.clone()
        };
        let space_dead = self
            .find_space_id(r.space_id)
            .is_none_or(|s| s.state.lock().unwrap().space_dead);
        let rv = if space_dead {
            0
        } else {
            release_disk(&r, rename)
        };
        let mut t = self.res.lock().unwrap();
        if let Some(i) = t
            .list
            .iter()
            .position(|x| x.res_id == r.res_id && x.list == ResList::Rem)
        {
            t.list.remove(i);
        }
        rv
    }

    fn release_token(&self, token_id: u32, rename: Option<Name>) -> i32 {
        self.release_token_as(token_id, rename, false)
    }

    /// Releases the named leases (or all with `names` None) of client `ci`.
    pub fn release_for(&self, ci: usize, names: Option<&[SanlkResource]>) -> i32 {
        let ids: Vec<u32> = {
            let t = self.res.lock().unwrap();
            t.list
                .iter()
                .filter(|r| r.list == ResList::Held)
                .filter(|r| {
                    names.is_none_or(|ns| {
                        ns.iter()
                            .any(|n| n.lockspace_name.0 == r.ls.0 && n.name.0 == r.name.0)
                    })
                })
                .flat_map(|r| r.tokens.iter().filter(|k| k.ci == ci).map(|k| k.token_id))
                .collect()
        };
        // A name the client does not hold is -1, as sanlock's release.
        let mut result = if names.is_some_and(|ns| ids.len() < ns.len()) {
            -1
        } else {
            0
        };
        for id in ids {
            let r = self.release_token(id, None);
            if r < 0 {
                result = r;
            }
        }
        result
    }

    /// A client's connection closed: its leases go, except persistent
    /// ones, which stay held on disk as orphans.
    pub fn client_gone(&self, ci: usize) {
        let ids: Vec<u32> = {
            let t = self.res.lock().unwrap();
            t.list
                .iter()
                .flat_map(|r| r.tokens.iter().filter(|k| k.ci == ci).map(|k| k.token_id))
                .collect()
        };
        for id in ids {
            self.release_token_as(id, None, true);
        }
    }

    /// `SANLK_REL_RENAME`: releases `old` writing `new`'s name into the leader.
    pub fn release_rename(&self, ci: usize, old: &SanlkResource, new: &SanlkResource) -> i32 {
        let id = {
            let t = self.res.lock().unwrap();
            t.list
                .iter()
                .filter(|r| r.list == ResList::Held && r.ls.0 == old.lockspace_name.0)
                .filter(|r| r.name.0 == old.name.0)
                .flat_map(|r| r.tokens.iter().filter(|k| k.ci == ci).map(|k| k.token_id))
                .next()
        };
        match id {
            Some(id) => self.release_token(id, Some(new.name)),
            None => -1,
        }
    }

    /// `SANLK_REL_ORPHAN`: releases the orphans of a lockspace (all, or
    /// the one named); the count of them.
    pub fn release_orphans(&self, res: &SanlkResource) -> i32 {
        let ids: Vec<u32> = {
            let mut t = self.res.lock().unwrap();
            let mut v = Vec::new();
            for r in t.list.iter_mut().filter(|r| r.list == ResList::Orphan) {
                if r.ls.same_as(&res.lockspace_name)
                    && (res.name.0[0] == 0 || r.name.same_as(&res.name))
                {
                    r.move_to(ResList::Rem);
                    v.push(r.res_id);
                }
            }
            v
        };
        for id in &ids {
            let r = {
                let t = self.res.lock().unwrap();
                t.list.iter().find(|r| r.res_id == *id).cloned()
            };
            if let Some(r) = r {
                release_disk(&r, None);
                let mut t = self.res.lock().unwrap();
                t.list.retain(|x| x.res_id != *id);
            }
        }
        ids.len() as i32
    }

    pub fn find_space_id(&self, id: u32) -> Option<Arc<Space>> {
        self.spaces
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.space_id == id)
            .cloned()
    }

    /// The leases of client `ci` as sanlock's state string.
    pub fn inquire(&self, ci: usize) -> (usize, String) {
        let t = self.res.lock().unwrap();
        let mut toks: Vec<&Token> = t
            .list
            .iter()
            .filter(|r| r.list == ResList::Held)
            .flat_map(|r| r.tokens.iter().filter(|k| k.ci == ci))
            .collect();
        toks.sort_by_key(|k| k.token_id);
        let strs: Vec<String> = toks.iter().map(|k| res_string(&k.res)).collect();
        (strs.len(), strs.join(" "))
    }

    /// The processes holding (or acquiring) leases in lockspace `space_id`.
    pub fn holder_pids(&self, space_id: u32) -> Vec<(usize, i32)> {
        let t = self.res.lock().unwrap();
        let mut v: Vec<(usize, i32)> = t
            .list
            .iter()
            .filter(|r| r.space_id == space_id)
            .flat_map(|r| r.tokens.iter().map(|k| (k.ci, k.pid)))
            .filter(|&(_, pid)| pid > 0)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Whether any resource of lockspace `space_id` is held or in flight.
    pub fn space_has_resources(&self, space_id: u32) -> bool {
        self.res
            .lock()
            .unwrap()
            .list
            .iter()
            .any(|r| r.space_id == space_id)
    }

    /// SH ↔ EX for client `ci`'s token on the resource named by `res`.
    pub fn convert(&self, ci: usize, res: &SanlkResource, cmd_flags: u32) -> i32 {
        let to_shared = res.flags & proto::SANLK_RES_SHARED != 0;
        let r = {
            let mut t = self.res.lock().unwrap();
            let Some(i) = t.list.iter().position(|r| {
                r.list == ResList::Held && r.ls.0 == res.lockspace_name.0 && r.name.0 == res.name.0
            }) else {
                return -libc::ENOENT;
            };
            let r = &mut t.list[i];
            if !r.tokens.iter().any(|k| k.ci == ci) {
                return -libc::ENOENT;
            }
            if r.shared == to_shared {
                return -libc::EALREADY;
            }
            if r.busy {
                return -libc::EBUSY;
            }
            r.busy = true;
            r.clone()
        };
        let sp = self.find_space_id(r.space_id);
        let out = match sp {
            None => Err(-libc::ENOSPC),
            Some(_) if to_shared => convert_ex2sh(&r).map(|_| (r.leader, r.dblock)),
            Some(sp) => convert_sh2ex(&sp, &r, cmd_flags),
        };
        let mut t = self.res.lock().unwrap();
        let Some(x) = t.list.iter_mut().find(|x| x.res_id == r.res_id) else {
            return -libc::ENOENT;
        };
        x.busy = false;
        match out {
            Err(e) => e,
            Ok((leader, dblock)) => {
                x.leader = leader;
                x.dblock = dblock;
                x.shared = to_shared;
                x.lvb_dirty &= !to_shared;
                if to_shared {
                    x.pid = 0;
                } else {
                    x.pid = x.tokens.first().map(|k| k.pid).unwrap_or(0);
                }
                for k in x.tokens.iter_mut().filter(|k| k.ci == ci) {
                    if to_shared {
                        k.res.flags |= proto::SANLK_RES_SHARED;
                        k.res.lver = 0;
                    } else {
                        k.res.flags &= !proto::SANLK_RES_SHARED;
                        k.res.lver = leader.lver;
                    }
                }
                0
            }
        }
    }

    /// The LVB of a held resource (`get_lvb`): its first `len` bytes (0:
    /// all of it, a sector). A length beyond the LVB is refused with
    /// -E2BIG, as set_lvb refuses one: the client sizes this reply, and
    /// sanlock copies that much from its sector-sized buffer.
    pub fn get_lvb(&self, res: &SanlkResource, len: usize) -> Result<Vec<u8>, i32> {
        let t = self.res.lock().unwrap();
        let r = t
            .list
            .iter()
            .find(|r| r.list == ResList::Held && r.is(&res.lockspace_name, &res.name))
            .ok_or(-libc::ENOENT)?;
        let lvb = r.lvb.as_ref().ok_or(-libc::EINVAL)?;
        match len {
            0 => Ok(lvb.clone()),
            n if n <= lvb.len() => Ok(lvb[..n].to_vec()),
            _ => Err(-libc::E2BIG),
        }
    }

    /// Sets the LVB of a held resource; written at its release.
    pub fn set_lvb(&self, res: &SanlkResource, data: &[u8]) -> i32 {
        let mut t = self.res.lock().unwrap();
        let Some(r) = t
            .list
            .iter_mut()
            .find(|r| r.list == ResList::Held && r.is(&res.lockspace_name, &res.name))
        else {
            return -libc::ENOENT;
        };
        let ss = r.geometry.sector_size as usize;
        let Some(lvb) = r.lvb.as_mut() else {
            return -libc::EINVAL;
        };
        if data.len() > ss {
            return -libc::E2BIG;
        }
        lvb[..data.len()].copy_from_slice(data);
        r.lvb_dirty = true;
        0
    }

    /// Held exclusive resources of lockspace `ls` whose request record asks
    /// for them (`examine` on the resource thread): (pid, force_mode).
    pub fn requested_holders(&self, ls: &Name) -> Vec<(i32, u32, String)> {
        let held: Vec<Resource> = {
            let t = self.res.lock().unwrap();
            t.list
                .iter()
                .filter(|r| r.list == ResList::Held && !r.shared && r.ls.same_as(ls))
                .cloned()
                .collect()
        };
        let mut out = Vec::new();
        for r in held {
            let Ok(io) = LeaseIo::open(&r.path, r.offset, r.io_timeout, Some(r.geometry)) else {
                continue;
            };
            let Ok(area) = io.area() else { continue };
            let Ok(b) = area.read(r.geometry.sector_size as u64, io.ss()) else {
                continue;
            };
            let Ok(req) = crate::ondisk::RequestRecord::decode(&b) else {
                continue;
            };
            if req.magic != crate::ondisk::REQ_DISK_MAGIC
                || req.version & 0xffff_0000 != crate::ondisk::REQ_DISK_VERSION_MAJOR
            {
                continue;
            }
            if req.force_mode != 0 && req.lver != 0 && req.lver > r.leader.lver {
                out.push((r.pid, req.force_mode, format!("{}:{}", r.ls, r.name)));
            }
        }
        out
    }

    /// The `r` entries of `client status`: (list, state text, pid, lver,
    /// resource as sent).
    pub fn resource_states(&self) -> Vec<(String, u32, u64, SanlkResource)> {
        let t = self.res.lock().unwrap();
        let mut out = Vec::new();
        for list in [ResList::Held, ResList::Add, ResList::Rem, ResList::Orphan] {
            // Newest first, as sanlock's lists (and tokens) are.
            let mut on: Vec<&Resource> = t.list.iter().filter(|r| r.list == list).collect();
            on.sort_by_key(|r| std::cmp::Reverse(r.moved));
            for r in on {
                let mut sent = SanlkResource {
                    lockspace_name: r.ls,
                    name: r.name,
                    flags: if r.shared { proto::SANLK_RES_SHARED } else { 0 },
                    disks: r.disks.clone(),
                    ..Default::default()
                };
                for d in sent.disks.iter_mut() {
                    d.pad1 = r.geometry.sector_size;
                    d.pad2 = u32::MAX;
                }
                let state = |pid: i32, token_id: u32| {
                    (
                        format!(
                            "list={} flags={:x} sector_size={} align_size={} lver={} reused=0 res_id={} token_id={}",
                            list.name(),
                            r.shared as u32,
                            r.geometry.sector_size,
                            r.geometry.align_size,
                            r.leader.lver,
                            r.res_id,
                            token_id
                        ),
                        pid as u32,
                        r.leader.lver,
                        sent.clone(),
                    )
                };
                match list {
                    ResList::Held | ResList::Add => {
                        for k in r.tokens.iter().rev() {
                            out.push(state(k.pid, k.token_id));
                        }
                    }
                    _ => out.push(state(r.pid, 0)),
                }
            }
        }
        out
    }
}

impl Daemon {
    pub fn do_request(&self, pid: i32, force_mode: u32, what: &str) {
        if pid <= 0 {
            return;
        }
        let slot = self
            .clients
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .find(|s| s.registered && s.pid == pid)
            .cloned()
            .unwrap_or_default();
        let r = slot.restricted;
        let sig = match force_mode {
            proto::SANLK_REQ_FORCE if r & proto::SANLK_RESTRICT_SIGKILL != 0 => libc::SIGTERM,
            proto::SANLK_REQ_FORCE => libc::SIGKILL,
            proto::SANLK_REQ_GRACEFUL => {
                if let Some((path, args)) = &slot.killpath {
                    info!("{what}: request graceful: running killpath {path} for pid {pid}");
                    self.kills.ran_killpath();
                    run_killpath(path, args, slot.killpath_pid.then_some(pid));
                    return;
                }
                if r & proto::SANLK_RESTRICT_SIGTERM != 0 {
                    libc::SIGKILL
                } else {
                    libc::SIGTERM
                }
            }
            m => {
                warn!("{what}: request with unknown force_mode {m}");
                return;
            }
        };
        info!("{what}: request force_mode {force_mode}: signal {sig} to pid {pid}");
        self.kills.signal(sig);
        // SAFETY: kill(2) with a registered client's pid.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Runs a client's killpath program with its arguments (split at
/// unescaped spaces, as sanlock's helper does), and the pid if asked.
pub fn run_killpath(path: &str, args: &str, pid: Option<i32>) {
    use std::os::unix::ffi::OsStrExt;
    // Through the helper, which holds no lease file (see helper.rs).
    if super::helper::request(path, args, pid) {
        return;
    }
    let argv = crate::recovery::killpath_argv(path.as_bytes(), args.as_bytes(), pid);
    let argv = argv[1..].iter().map(|a| std::ffi::OsStr::from_bytes(a));
    let mut cmd = std::process::Command::new(path);
    cmd.args(argv);
    // SAFETY: only an async-signal-safe setrlimit runs in the child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            super::accept::restore_nofile_in_child();
            Ok(())
        });
    }
    match cmd.spawn() {
        // Reaped by a thread so it leaves no zombie.
        Ok(mut ch) => {
            let _ = std::thread::Builder::new()
                .name("killpath".into())
                .spawn(move || ch.wait());
        }
        Err(e) => warn!("killpath {path}: {e}"),
    }
}

/// EX → SH: our host block becomes "released + SHARED", then the leader
/// is freed (`convert_ex2sh_token`).
fn convert_ex2sh(r: &Resource) -> Result<(), i32> {
    let io = LeaseIo::open(&r.path, r.offset, r.io_timeout, Some(r.geometry))?;
    io.write_dirty_lvb(r);
    let mut d = r.dblock;
    d.flags = DBLOCK_FL_RELEASED;
    io.write_host_block(r.host_id, Some(d), Some(r.host_generation))?;
    io.release_leader(&r.leader, r.host_id, r.host_generation, None)
}

/// SH → EX: a ballot whose dblock writes keep our SHARED mode block, then
/// every other shared holder must be dead (`convert_sh2ex_token`).
fn convert_sh2ex(
    sp: &Arc<Space>,
    r: &Resource,
    cmd_flags: u32,
) -> Result<(LeaderRecord, PaxosDblock), i32> {
    let io = LeaseIo::open(&r.path, r.offset, r.io_timeout, Some(r.geometry))?;
    let mut flags = paxos::PAXOS_WRITE_MBLOCK_SH;
    if cmd_flags & proto::SANLK_CONVERT_OWNER_NOWAIT != 0 {
        flags |= paxos::PAXOS_ACQUIRE_OWNER_NOWAIT;
    }
    let res = SanlkResource {
        lockspace_name: r.ls,
        name: r.name,
        ..Default::default()
    };
    let won = paxos_acquire(sp, &io, &res, flags).map_err(|(e, _)| e)?;
    if !won.shared.is_empty() {
        let live = clear_dead_shared(sp, &io, &won.shared);
        if live != Ok(0) {
            // Still shared: the leader goes back; our mode block stayed.
            let _ = io.release_leader(&won.leader, r.host_id, r.host_generation, None);
            return Err(match live {
                Err(e) => e,
                Ok(_) => -libc::EAGAIN,
            });
        }
    }
    let _ = io.write_host_block(r.host_id, Some(won.dblock), None);
    Ok((won.leader, won.dblock))
}

/// `sanlock_res_to_str`: `LS:RES:path:off[:path:off...]:lver|SH`.
pub fn res_string(r: &SanlkResource) -> String {
    let mut s = format!("{}:{}", r.lockspace_name, r.name);
    for d in &r.disks {
        s.push_str(&format!(
            ":{}:{}",
            crate::lease_str::escape_path(&d.path.to_string_lossy()),
            d.offset
        ));
    }
    if r.flags & proto::SANLK_RES_SHARED != 0 {
        s.push_str(":SH");
    } else {
        s.push_str(&format!(":{}", r.lver));
    }
    s
}

/// A Paxos lease the daemon takes for itself for the length of one
/// command (sanlock's "rindex_lease", which serialises changes to a
/// resource index among hosts).
pub struct InternalLease {
    io: LeaseIo,
    leader: LeaderRecord,
    host_id: u64,
    generation: u64,
}

/// Acquires the lease `lockspace`:`name` at `path`:`offset` (geometry `g`)
/// for `sp`'s host, without waiting for a live owner (OWNER_NOWAIT), as
/// sanlock's rindex commands do.
pub fn acquire_internal(
    sp: &Arc<Space>,
    path: &str,
    offset: u64,
    g: Geometry,
    lockspace: Name,
    name: Name,
) -> Result<InternalLease, i32> {
    let io = LeaseIo::open(path, offset, sp.io_timeout, Some(g))?;
    let res = SanlkResource {
        lockspace_name: lockspace,
        name,
        ..Default::default()
    };
    let flags = paxos::PAXOS_ACQUIRE_OWNER_NOWAIT | paxos::PAXOS_ACQUIRE_QUIET_FAIL;
    let won = paxos_acquire(sp, &io, &res, flags).map_err(|(e, _)| e)?;
    Ok(InternalLease {
        io,
        leader: won.leader,
        host_id: sp.host_id,
        generation: sp.state.lock().unwrap().host_generation,
    })
}

impl InternalLease {
    /// Frees the leader only: sanlock's `paxos_lease_release` leaves our
    /// dblock as the ballot wrote it (no RELEASED flag) for this lease.
    pub fn release(self) -> Result<(), i32> {
        self.io
            .release_leader(&self.leader, self.host_id, self.generation, None)
    }
}
