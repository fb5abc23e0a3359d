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

use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use super::core::resource::{
    Acquire, AcquireParams, Acquired, ConvertToExclusive, ConvertToShared, ExamineRequest,
    FreeLeaderOp, Held, LeaseRef, NoLockspace, PaxosOnly, Release, Warm, WarmLeases,
};
use super::core::{CoreError, Knobs, Layout};
use super::engine::{self, AreaStorage};
use super::lockspace::{Space, SpaceView};
use super::{Daemon, WarmKey};
use crate::geometry::Geometry;
use crate::io::Disk;
use crate::ondisk::{LeaderRecord, Name, PaxosDblock};
use crate::paxos::{self, PaxosParams};
use crate::proto::{self, SanlkResource};
use crate::rv;
use crate::timeouts::monotime;
use parking_lot::Mutex;

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
    /// The lease's file as the acquire opened it (None until then).
    pub disk: Option<LeaseFile>,
}

/// An open lease file kept with its resource. The last one closes the
/// file on the blocking pool: a close can block (FUSE and NFS flush on
/// close; a frozen FUSE daemon never answers), and the tasks' thread must
/// not.
#[derive(Clone)]
pub struct LeaseFile(Option<Disk>);

impl LeaseFile {
    fn disk(&self) -> Option<&Disk> {
        self.0.as_ref()
    }
}

impl Drop for LeaseFile {
    fn drop(&mut self) {
        if let Some(d) = self.0.take()
            && d.is_last_ref()
            && let Ok(h) = tokio::runtime::Handle::try_current()
        {
            h.spawn_blocking(move || drop(d));
        }
    }
}

impl std::fmt::Debug for LeaseFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(d) => write!(f, "LeaseFile({})", d.path().display()),
            None => write!(f, "LeaseFile(closed)"),
        }
    }
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

/// A lease's geometry as the core describes it.
fn geometry(l: Layout) -> Geometry {
    Geometry {
        sector_size: l.sector_size as u32,
        align_size: l.align_size as u32,
    }
}

/// A held resource's lease, for the core's operations on it.
fn lease_ref(r: &Resource, watchdog_fire_timeout: u64) -> LeaseRef {
    LeaseRef {
        space_name: r.ls,
        resource_name: r.name,
        layout: Some(r.geometry.into()),
        io_timeout: r.io_timeout,
        watchdog_fire_timeout,
    }
}

fn held(r: &Resource, watchdog_fire_timeout: u64) -> Held {
    Held {
        lease: lease_ref(r, watchdog_fire_timeout),
        host_id: r.host_id,
        generation: r.host_generation,
        shared: r.shared,
        leader: r.leader,
        dblock: r.dblock,
        dirty_lvb: if r.lvb_dirty { r.lvb.clone() } else { None },
    }
}

/// The lease area of `path`:`offset`, opened now.
fn open_lease(path: &str, offset: u64) -> Result<AreaStorage, CoreError> {
    AreaStorage::lease(Path::new(path), offset)
        .map_err(|f| CoreError::io("opening the lease", f.rv, f))
}

/// Whether `sp` is stopping: an operation's wait in it is given up.
fn stopping(sp: &Arc<Space>) -> impl Fn() -> bool + Send + 'static {
    let sp = sp.clone();
    move || sp.stop.load(std::sync::atomic::Ordering::Relaxed)
}

/// An operation that nothing gives up.
fn never() -> bool {
    false
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into b.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    u64::from_ne_bytes(b)
}

/// A seed for an operation's random back-offs.
fn seed(host_id: u64) -> u64 {
    monotime() ^ (host_id << 40) ^ std::process::id() as u64 ^ rand_u64()
}

/// Runs `f` where it may block (an open(2) that hangs on dead storage
/// must not stop the tasks): on the blocking pool.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
) -> Result<T, CoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(CoreError::new(what, rv::SANLK_ERROR)))
}

/// Acquires `res` on disk for `sp`'s host, exclusive or shared
/// ([`Acquire`]: geometry, ballot, shared rules, LVB, and the check that
/// the lockspace is still the instance the ballot ran in). The lease's
/// file is opened on the blocking pool, the ballot runs on the engine;
/// the file stays open for the release (as sanlock keeps a token's fds).
async fn acquire_disk(
    sp: &Arc<Space>,
    res: &SanlkResource,
    cmd_flags: u32,
    warm: Option<Warm>,
) -> Result<(Acquired, LeaseFile), CoreError> {
    let (path, offset) = disk_path(res).map_err(|e| CoreError::new("the lease's disk", e))?;
    let (lspath, lsoffset, lsdisk) = (sp.path.clone(), sp.offset, sp.disk());
    let (storage, disk) = blocking("opening the lease", move || {
        let disk = Disk::open(Path::new(&path))
            .map_err(|e| CoreError::io("opening the lease", e.sanlk_rv(), e.into()))?;
        let mut st = AreaStorage::lease_on(disk.clone(), offset)
            .with_lockspace_disk(lsdisk, &lspath, lsoffset);
        st.open_now();
        Ok((st, LeaseFile(Some(disk))))
    })
    .await?;
    let op = Acquire::new(AcquireParams {
        lease: LeaseRef {
            space_name: res.lockspace_name,
            resource_name: res.name,
            layout: None,
            io_timeout: sp.io_timeout,
            watchdog_fire_timeout: sp.watchdog_fire_timeout,
        },
        shared: res.flags & proto::SANLK_RES_SHARED != 0,
        owner_nowait: cmd_flags & proto::SANLK_ACQUIRE_OWNER_NOWAIT != 0,
        lvb: cmd_flags & proto::SANLK_ACQUIRE_LVB != 0,
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
        seed: seed(sp.host_id),
        knobs: Knobs::default(),
        warm,
    });
    // The storage's clone of the file goes first: the LeaseFile is the
    // last one, closed on the pool if the acquire failed.
    let (storage, acquired) =
        engine::run_op_async(op, storage, SpaceView(sp.clone()), stopping(sp)).await?;
    drop(storage);
    Ok((acquired?, disk))
}

/// Releases a resource on disk ([`Release`]): a shared hold's block
/// cleared, or an exclusive lease's LVB written, dblock marked released and
/// leader freed (`release_token`), through the file the acquire opened.
async fn release_disk(
    r: &Resource,
    rename: Option<Name>,
    warm: &Mutex<WarmLeases<WarmKey>>,
) -> i32 {
    if r.leader.lver == 0 && !r.shared {
        return 0;
    }
    let run = async {
        let kept = r.disk.as_ref().and_then(LeaseFile::disk);
        let storage = match kept {
            Some(d) => AreaStorage::lease_on(d.clone(), r.offset),
            None => {
                let (path, offset) = (r.path.clone(), r.offset);
                blocking("opening the lease", move || open_lease(&path, offset)).await?
            }
        };
        let op = Release::new(held(r, 0), rename);
        let (storage, out) = engine::run_op_async(op, storage, NoLockspace, never).await?;
        if kept.is_none() {
            // Opened here, so its last clone: closed on the pool.
            tokio::task::spawn_blocking(move || drop(storage));
        }
        out
    };
    match run.await {
        Ok(released) => {
            let key = (r.ls, r.name, r.path.clone(), r.offset);
            warm.lock().put(key, &released);
            0
        }
        Err(e) => {
            warn!("release of {}:{} failed: {e}", r.ls, r.name);
            e.rv
        }
    }
}

/// Which client a token belongs to, and its pid, for the table.
pub struct Holder {
    pub ci: usize,
    pub pid: i32,
}

impl Daemon {
    /// Waits for one of the [`Daemon::lease_ops`] permits; held for an
    /// acquire or release on disk, it also keeps a free area buffer in the
    /// pool for the operation ([`crate::io::PoolDemand`]).
    async fn lease_op_slot(
        &self,
    ) -> (
        Option<tokio::sync::SemaphorePermit<'_>>,
        crate::io::PoolDemand,
    ) {
        // Never closed: the Err arm is not taken (and would run unbounded).
        let permit = self.lease_ops.acquire().await.ok();
        (permit, crate::io::PoolDemand::new())
    }

    fn live_space(&self, name: &Name) -> Option<Arc<Space>> {
        self.find_active(name)
            .filter(|s| !s.state.lock().space_dead())
    }

    /// Acquires `resources` for client slot `ci` (all or none).
    pub async fn acquire_for(
        &self,
        who: Holder,
        resources: &[SanlkResource],
        cmd_flags: u32,
    ) -> i32 {
        let mut got: Vec<(Name, Name, u32)> = Vec::new();
        let mut result = 0;
        for res in resources {
            let r = self.acquire_one(&who, res, cmd_flags).await;
            match r {
                Ok(token_id) => got.push((res.lockspace_name, res.name, token_id)),
                Err(e) => {
                    info!("r {}:{} acquire failed: {e}", res.lockspace_name, res.name);
                    result = e.rv;
                    break;
                }
            }
        }
        if result != 0 {
            for (_, _, token_id) in got {
                self.release_token(token_id, None).await;
            }
        }
        result
    }

    async fn acquire_one(
        &self,
        who: &Holder,
        res: &SanlkResource,
        cmd_flags: u32,
    ) -> Result<u32, CoreError> {
        let refuse = |rv| CoreError::new("acquire", rv);
        if res.disks.is_empty() || res.disks.len() > proto::SANLK_MAX_DISKS {
            return Err(refuse(-libc::ERANGE));
        }
        if res.disks.len() > 1 {
            // Majority I/O over several disks is not implemented: refused,
            // not run on one disk.
            return Err(refuse(-libc::EOPNOTSUPP));
        }
        let sp = self
            .live_space(&res.lockspace_name)
            .ok_or(refuse(-libc::ENOSPC))?;
        let (path, offset) = disk_path(res).map_err(refuse)?;
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
        let generation = sp.state.lock().core.host_generation();
        let warm_key = (res.lockspace_name, res.name, path.clone(), offset);
        {
            let mut t = self.res.lock();
            if let Some(i) = t.find(&res.lockspace_name, &res.name) {
                let r = &t.list[i];
                match r.list {
                    ResList::Rem => return Err(refuse(-libc::EAGAIN)),
                    ResList::Add => return Err(refuse(-libc::EBUSY)),
                    ResList::Held if r.shared && shared && !r.busy => {
                        tok.token_id = t.token_id();
                        t.list[i].tokens.push(tok.clone());
                        return Ok(tok.token_id);
                    }
                    ResList::Held => return Err(refuse(-libc::EEXIST)),
                    ResList::Orphan => {
                        if !allow_orphan || r.shared != shared {
                            return Err(refuse(-libc::EUCLEAN));
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
                return Err(refuse(-libc::ENOENT));
            }
            tok.token_id = t.token_id();
            let res_id = t.res_id();
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
                disk: None,
            });
        }
        let r = {
            let _slot = self.lease_op_slot().await;
            let w = self.warm.lock().take(&warm_key, sp.host_id, generation);
            acquire_disk(&sp, res, cmd_flags, w).await
        };
        let mut t = self.res.lock();
        let i = t
            .find(&res.lockspace_name, &res.name)
            .expect("our add entry stays");
        match r {
            Ok((a, disk)) => {
                if a.warm {
                    self.warm_acquires
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let r = &mut t.list[i];
                r.disk = Some(disk);
                r.leader = a.leader;
                r.dblock = a.dblock;
                r.geometry = geometry(a.layout);
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
    async fn release_token_as(&self, token_id: u32, rename: Option<Name>, orphan: bool) -> i32 {
        let r = {
            let mut t = self.res.lock();
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
            .is_none_or(|s| s.state.lock().space_dead());
        let rv = if space_dead {
            0
        } else {
            let _slot = self.lease_op_slot().await;
            release_disk(&r, rename, &self.warm).await
        };
        let mut t = self.res.lock();
        if let Some(i) = t
            .list
            .iter()
            .position(|x| x.res_id == r.res_id && x.list == ResList::Rem)
        {
            t.list.remove(i);
        }
        rv
    }

    async fn release_token(&self, token_id: u32, rename: Option<Name>) -> i32 {
        self.release_token_as(token_id, rename, false).await
    }

    /// Releases the named leases (or all with `names` None) of client `ci`.
    pub async fn release_for(&self, ci: usize, names: Option<&[SanlkResource]>) -> i32 {
        let ids: Vec<u32> = {
            let t = self.res.lock();
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
            let r = self.release_token(id, None).await;
            if r < 0 {
                result = r;
            }
        }
        result
    }

    /// A client's connection closed: its leases go, except persistent
    /// ones, which stay held on disk as orphans.
    pub async fn client_gone(&self, ci: usize) {
        let ids: Vec<u32> = {
            let t = self.res.lock();
            t.list
                .iter()
                .flat_map(|r| r.tokens.iter().filter(|k| k.ci == ci).map(|k| k.token_id))
                .collect()
        };
        for id in ids {
            self.release_token_as(id, None, true).await;
        }
    }

    /// `SANLK_REL_RENAME`: releases `old` writing `new`'s name into the leader.
    pub async fn release_rename(&self, ci: usize, old: &SanlkResource, new: &SanlkResource) -> i32 {
        let id = {
            let t = self.res.lock();
            t.list
                .iter()
                .filter(|r| r.list == ResList::Held && r.ls.0 == old.lockspace_name.0)
                .filter(|r| r.name.0 == old.name.0)
                .flat_map(|r| r.tokens.iter().filter(|k| k.ci == ci).map(|k| k.token_id))
                .next()
        };
        match id {
            Some(id) => self.release_token(id, Some(new.name)).await,
            None => -1,
        }
    }

    /// `SANLK_REL_ORPHAN`: releases the orphans of a lockspace (all, or
    /// the one named); the count of them.
    pub async fn release_orphans(&self, res: &SanlkResource) -> i32 {
        let ids: Vec<u32> = {
            let mut t = self.res.lock();
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
                let t = self.res.lock();
                t.list.iter().find(|r| r.res_id == *id).cloned()
            };
            if let Some(r) = r {
                let _slot = self.lease_op_slot().await;
                release_disk(&r, None, &self.warm).await;
                let mut t = self.res.lock();
                t.list.retain(|x| x.res_id != *id);
            }
        }
        ids.len() as i32
    }

    pub fn find_space_id(&self, id: u32) -> Option<Arc<Space>> {
        self.spaces
            .lock()
            .iter()
            .find(|s| s.space_id == id)
            .cloned()
    }

    /// The leases of client `ci` as sanlock's state string.
    pub fn inquire(&self, ci: usize) -> (usize, String) {
        let t = self.res.lock();
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
        let t = self.res.lock();
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
        self.res.lock().list.iter().any(|r| r.space_id == space_id)
    }

    /// SH ↔ EX for client `ci`'s token on the resource named by `res`.
    pub fn convert(&self, ci: usize, res: &SanlkResource, cmd_flags: u32) -> i32 {
        let to_shared = res.flags & proto::SANLK_RES_SHARED != 0;
        let r = {
            let mut t = self.res.lock();
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
        let mut t = self.res.lock();
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
        let t = self.res.lock();
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
        let mut t = self.res.lock();
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
            let t = self.res.lock();
            t.list
                .iter()
                .filter(|r| r.list == ResList::Held && !r.shared && r.ls.same_as(ls))
                .cloned()
                .collect()
        };
        let mut out = Vec::new();
        for r in held {
            let Ok(mut storage) = open_lease(&r.path, r.offset) else {
                continue;
            };
            let op = ExamineRequest::new(lease_ref(&r, 0), r.leader.lver);
            let asked = engine::run_op(op, &mut storage, NoLockspace, never);
            if let Some(force_mode) = asked {
                out.push((r.pid, force_mode, format!("{}:{}", r.ls, r.name)));
            }
        }
        out
    }

    /// The `r` entries of `client status`: (list, state text, pid, lver,
    /// resource as sent).
    pub fn resource_states(&self) -> Vec<(String, u32, u64, SanlkResource)> {
        let t = self.res.lock();
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

/// EX → SH ([`ConvertToShared`]): our host block becomes "released +
/// SHARED", then the leader is freed (`convert_ex2sh_token`).
fn convert_ex2sh(r: &Resource) -> Result<(), i32> {
    let run = || {
        let mut storage = open_lease(&r.path, r.offset)?;
        let op = ConvertToShared::new(held(r, 0));
        engine::run_op(op, &mut storage, NoLockspace, never)
    };
    run().map_err(|e| {
        warn!("convert of {}:{} to shared failed: {e}", r.ls, r.name);
        e.rv
    })
}

/// SH → EX ([`ConvertToExclusive`]): a ballot whose dblock writes keep our
/// SHARED mode block, then every other shared holder must be dead
/// (`convert_sh2ex_token`).
fn convert_sh2ex(
    sp: &Arc<Space>,
    r: &Resource,
    cmd_flags: u32,
) -> Result<(LeaderRecord, PaxosDblock), i32> {
    let run = || {
        let mut storage =
            open_lease(&r.path, r.offset)?.with_lockspace_disk(sp.disk(), &sp.path, sp.offset);
        let nowait = cmd_flags & proto::SANLK_CONVERT_OWNER_NOWAIT != 0;
        let op = ConvertToExclusive::new(
            held(r, sp.watchdog_fire_timeout),
            nowait,
            seed(sp.host_id),
            Knobs::default(),
        );
        engine::run_op(op, &mut storage, SpaceView(sp.clone()), stopping(sp))
    };
    run().map_err(|e| {
        info!("convert of {}:{} to exclusive failed: {e}", r.ls, r.name);
        e.rv
    })
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
    storage: AreaStorage,
    lease: LeaseRef,
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
    let mut storage = open_lease(path, offset)
        .map_err(|e| e.rv)?
        .with_lockspace(&sp.path, sp.offset);
    let generation = sp.state.lock().core.host_generation();
    let lease = LeaseRef {
        space_name: lockspace,
        resource_name: name,
        layout: Some(g.into()),
        io_timeout: sp.io_timeout,
        watchdog_fire_timeout: sp.watchdog_fire_timeout,
    };
    let op = PaxosOnly::new(
        lease.clone(),
        PaxosParams {
            host_id: sp.host_id,
            host_generation: generation,
            sector_size: g.sector_size as usize,
            flags: paxos::PAXOS_ACQUIRE_OWNER_NOWAIT | paxos::PAXOS_ACQUIRE_QUIET_FAIL,
            acquire_lver: 0,
            new_num_hosts: 0,
            watchdog_fire_timeout: sp.watchdog_fire_timeout,
            io_timeout: sp.io_timeout,
            seed: seed(sp.host_id),
            names: Some((lockspace, name)),
        },
        Knobs::default(),
    );
    let (leader, _) = engine::run_op(op, &mut storage, SpaceView(sp.clone()), stopping(sp))?;
    Ok(InternalLease {
        storage,
        lease,
        leader,
        host_id: sp.host_id,
        generation,
    })
}

impl InternalLease {
    /// Frees the leader only: sanlock's `paxos_lease_release` leaves our
    /// dblock as the ballot wrote it (no RELEASED flag) for this lease.
    pub fn release(mut self) -> Result<(), i32> {
        let op = FreeLeaderOp::new(self.lease, self.leader, self.host_id, self.generation);
        engine::run_op(op, &mut self.storage, NoLockspace, never)
            .map(|_| ())
            .map_err(|e| {
                warn!("rindex lease release failed: {e}");
                e.rv
            })
    }
}
