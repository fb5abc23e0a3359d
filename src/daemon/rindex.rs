//! The resource index over the socket (sanlock's `rindex.c`): format,
//! lookup, update, rebuild of the index area, and create/delete of a
//! resource lease together with its entry.
//!
//! Layout (see [`crate::direct::rindex`]): at the index offset one aligned
//! area (header sector, then 64-byte entries), then the "rindex_lease" that
//! guards it, then resource leases, one per aligned area. Create, delete
//! and rebuild hold the rindex lease (a Paxos lease taken by our host in
//! the joined lockspace) while they change the index; lookup and update do
//! not. All but format need the lockspace joined here, unless the client
//! asks for `SANLK_RX_NO_LOCKSPACE` (lookup, update, rebuild). As in
//! sanlock, only one rindex command runs per lockspace at a time (-EBUSY),
//! and the lockspace cannot be removed while one runs.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::Daemon;
use super::lockspace::Space;
use super::resource::acquire_internal;
use crate::direct::resource_area_bytes;
use crate::direct::rindex::RINDEX_LEASE_NAME;
use crate::geometry::{ALIGN_1M, ALIGN_2M, ALIGN_4M, ALIGN_8M, Geometry, rindex_flag_from_align};
use crate::io::{Area, Disk};
use crate::ondisk::rindex::{DEFAULT_MAX_RESOURCES, RINDEX_ENTRY_SIZE};
use crate::ondisk::{self, LeaderRecord, Name, RindexEntry, RindexHeader};
use crate::proto::{self, SanlkRentry, SanlkRindex};
use crate::rv;

/// sanlock's RX_OP_* (what `rindex_op` records for a lockspace).
const RX_OP_CREATE: u32 = 2;
const RX_OP_DELETE: u32 = 3;
const RX_OP_LOOKUP: u32 = 4;
const RX_OP_UPDATE: u32 = 5;
const RX_OP_REBUILD: u32 = 6;

/// What a command knows of the lockspace it runs in (sanlock's
/// `space_info`); without a lockspace only the daemon's io_timeout.
struct SpaceInfo {
    space: Option<Arc<Space>>,
    io_timeout: u64,
    sector_size: u32,
}

impl SpaceInfo {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.io_timeout.max(1))
    }
}

/// Marks a lockspace busy with one rindex command; cleared on drop, so
/// every return path gives it back (`lockspace_clear_rindex_op`).
struct OpGuard(Arc<Space>);

impl Drop for OpGuard {
    fn drop(&mut self) {
        self.0.state.lock().rindex_op = 0;
    }
}

/// `lockspace_begin_rindex_op`: the joined lockspace of that name (-ENOENT),
/// alive (-ENOSPC), with no other rindex command running (-EBUSY).
fn begin_op(d: &Daemon, ls: &Name, op: u32) -> Result<(OpGuard, SpaceInfo), i32> {
    let sp = d.find_active(ls).ok_or(-libc::ENOENT)?;
    let mut st = sp.state.lock();
    if st.space_dead() || sp.stop.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(-libc::ENOSPC);
    }
    if st.rindex_op != 0 {
        debug!("begin_rindex_op busy with {}", st.rindex_op);
        return Err(-libc::EBUSY);
    }
    st.rindex_op = op;
    let info = SpaceInfo {
        space: Some(sp.clone()),
        io_timeout: sp.io_timeout,
        sector_size: st.sector_size(),
    };
    drop(st);
    Ok((OpGuard(sp), info))
}

/// Starts a command that may run without the lockspace (`nolock`).
fn begin(
    d: &Daemon,
    ls: &Name,
    op: u32,
    nolock: bool,
) -> Result<(Option<OpGuard>, SpaceInfo), i32> {
    if nolock {
        return Ok((
            None,
            SpaceInfo {
                space: None,
                io_timeout: d.cfg.io_timeout,
                sector_size: 0,
            },
        ));
    }
    let (g, i) = begin_op(d, ls, op)?;
    Ok((Some(g), i))
}

/// An index whose header has been read and checked.
struct Rx {
    disk: Disk,
    path: String,
    offset: u64,
    lockspace: Name,
    header: RindexHeader,
    g: Geometry,
}

fn open_disk(ri: &SanlkRindex) -> Result<(Disk, String), i32> {
    let path = super::path_string(&ri.disk.path)?;
    let disk = Disk::open(path.as_ref()).map_err(|e| {
        warn!("rindex open failed {} {path}", e.sanlk_rv());
        e.sanlk_rv()
    })?;
    Ok((disk, path))
}

/// `read_rindex_header`: one lockspace sector (4096 without a lockspace)
/// at the index offset, checked for magic, major version, lockspace name
/// and the offset it records for itself, in sanlock's order.
fn read_header(ri: &SanlkRindex, opened: (Disk, String), spi: &SpaceInfo) -> Result<Rx, i32> {
    let (disk, path) = opened;
    let offset = ri.disk.offset;
    let ss = match spi.sector_size {
        0 => 4096,
        n => n as usize,
    };
    let b = disk
        .read(offset, ss, spi.timeout())
        .map_err(|e| e.sanlk_rv())?;
    let header = RindexHeader::decode(&b).expect("a sector holds the header");
    if header.magic != ondisk::RINDEX_DISK_MAGIC {
        debug!(
            "rindex header bad magic {:x} on {path}:{offset}",
            header.magic
        );
        return Err(rv::SANLK_RINDEX_MAGIC);
    }
    if header.version & 0xFFFF_0000 != ondisk::RINDEX_DISK_VERSION_MAJOR {
        return Err(rv::SANLK_RINDEX_VERSION);
    }
    if !header.lockspace_name.same_as(&ri.lockspace_name) {
        return Err(rv::SANLK_RINDEX_LOCKSPACE);
    }
    if header.rx_offset != offset {
        return Err(rv::SANLK_RINDEX_OFFSET);
    }
    // sanlock would go on with whatever sizes a damaged header claims;
    // every offset derives from them, so hactl stops here.
    let g = header.geometry().ok_or_else(|| {
        warn!(
            "rindex header on {path}:{offset} has no valid sector/align size ({} / flags {:#x})",
            header.sector_size, header.flags
        );
        -libc::EINVAL
    })?;
    Ok(Rx {
        disk,
        path,
        offset,
        lockspace: ri.lockspace_name,
        header,
        g,
    })
}

impl Rx {
    fn align(&self) -> u64 {
        self.g.align_size as u64
    }

    fn ss(&self) -> usize {
        self.g.sector_size as usize
    }

    /// Entries searched: the header's count, or the geometry's limit; never
    /// more than the area holds.
    fn max_resources(&self) -> u64 {
        let n = match self.header.max_resources {
            0 => self.g.max_resources(),
            n => n,
        } as u64;
        let fit = (self.align() - self.ss() as u64) / RINDEX_ENTRY_SIZE as u64;
        n.min(fit)
    }

    /// Where entry `i`'s resource lease lies. sanlock's `search_entries`
    /// computes `i * align_size` in a C int, which wraps from 2 GiB past
    /// the first lease (entry 2048 with 1M areas, 256 with 8M) and points
    /// create at an earlier area; hactl keeps the true offset.
    fn res_offset(&self, i: u64) -> u64 {
        self.offset + 2 * self.align() + i * self.align()
    }

    fn ent_offset(&self, i: u64) -> usize {
        self.ss() + i as usize * RINDEX_ENTRY_SIZE
    }

    /// The entry position for a resource lease offset. sanlock computes it
    /// without bounds (and reads outside its buffer for offsets before the
    /// first lease or past the area); hactl answers SANLK_RINDEX_OFFSET.
    fn ent_for_res(&self, res_offset: u64) -> Result<usize, i32> {
        let first = self.offset + 2 * self.align();
        let i = res_offset
            .checked_sub(first)
            .map(|x| x / self.align())
            .ok_or(rv::SANLK_RINDEX_OFFSET)?;
        let at = self.ss() as u64 + i * RINDEX_ENTRY_SIZE as u64;
        if at + RINDEX_ENTRY_SIZE as u64 > self.align() {
            return Err(rv::SANLK_RINDEX_OFFSET);
        }
        Ok(at as usize)
    }

    /// `read_rindex`: the whole index area.
    fn read(&self, spi: &SpaceInfo) -> Result<Vec<u8>, i32> {
        self.disk
            .read(self.offset, self.align() as usize, spi.timeout())
            .map(|b| b.to_vec())
            .map_err(|e| e.sanlk_rv())
    }

    fn area(&self, at: u64, timeout: Duration) -> Result<Area<'_>, i32> {
        Area::new(&self.disk, at, self.align(), timeout).map_err(|e| e.sanlk_rv())
    }

    /// `search_entries`: the first free entry, or the first named `name`;
    /// (entry position, resource lease offset), or -ENOENT.
    fn search(&self, data: &[u8], name: Option<&Name>) -> Result<(usize, u64), i32> {
        for i in 0..self.max_resources() {
            let at = self.ent_offset(i);
            let e = RindexEntry::decode(&data[at..]).expect("entry inside the area");
            let hit = match name {
                None => e.is_free(),
                Some(n) => !e.name.is_empty() && e.name.same_as(n),
            };
            if hit {
                return Ok((at, self.res_offset(i)));
            }
        }
        Err(-libc::ENOENT)
    }

    /// `update_rindex`: rewrites the one sector holding the entry at
    /// `ent_at`, with that entry replaced (or cleared).
    fn write_entry(
        &self,
        data: &[u8],
        ent_at: usize,
        entry: Option<(&Name, u64)>,
        spi: &SpaceInfo,
    ) -> Result<(), i32> {
        let ss = self.ss();
        let sector_at = ent_at / ss * ss;
        let mut sector = data[sector_at..sector_at + ss].to_vec();
        let e = match entry {
            Some((name, res_offset)) => RindexEntry {
                res_offset,
                name: *name,
                ..Default::default()
            },
            None => RindexEntry::default(),
        };
        let rel = ent_at - sector_at;
        sector[rel..rel + RINDEX_ENTRY_SIZE].copy_from_slice(&e.encode());
        self.area(self.offset, spi.timeout())?
            .write(sector_at as u64, &sector)
            .map_err(|e| e.sanlk_rv())
    }

    /// `paxos_lease_init` of one resource lease at `at` (cleared with `clear`).
    fn init_lease(
        &self,
        at: u64,
        name: &Name,
        num_hosts: u64,
        clear: bool,
        timeout: Duration,
    ) -> Result<(), i32> {
        let max_hosts = self.g.max_hosts();
        let num_hosts = if num_hosts == 0 || num_hosts > max_hosts as u64 {
            max_hosts as u64
        } else {
            num_hosts
        };
        let buf = resource_area_bytes(self.g, max_hosts, num_hosts, &self.lockspace, name, clear);
        self.area(at, timeout)?
            .write(0, &buf)
            .map_err(|e| e.sanlk_rv())
    }

    /// Runs `f` holding the rindex lease (the area after the index), taken
    /// for our host in the lockspace; the lease is freed whatever `f` returns.
    fn with_lease<T>(
        &self,
        spi: &SpaceInfo,
        what: &str,
        f: impl FnOnce() -> Result<T, i32>,
    ) -> Result<T, i32> {
        let sp = spi
            .space
            .as_ref()
            .expect("locked commands have a lockspace");
        let lease = acquire_internal(
            sp,
            &self.path,
            self.offset + self.align(),
            self.g,
            self.lockspace,
            Name::new(RINDEX_LEASE_NAME).expect("short name"),
        )
        .inspect_err(|e| warn!("rindex_{what} failed to acquire rindex lease {e}"))?;
        let r = f();
        if let Err(e) = lease.release() {
            // sanlock ignores the result of this release too.
            warn!("rindex_{what} release of the rindex lease failed {e}");
        }
        r
    }
}

/// The sizes `format` uses: both RIF flags, or neither (the device's sector
/// size and the old alignment); -1 otherwise (`sizes_from_flags`).
fn format_geometry(flags: u32, device_sector: u32) -> Result<Geometry, i32> {
    let align = [
        (proto::SANLK_RIF_ALIGN1M, ALIGN_1M),
        (proto::SANLK_RIF_ALIGN2M, ALIGN_2M),
        (proto::SANLK_RIF_ALIGN4M, ALIGN_4M),
        (proto::SANLK_RIF_ALIGN8M, ALIGN_8M),
    ]
    .iter()
    .find(|(f, _)| flags & f != 0)
    .map(|&(_, a)| a);
    let sector = if flags & proto::SANLK_RIF_SECTOR512 != 0 {
        Some(512)
    } else if flags & proto::SANLK_RIF_SECTOR4K != 0 {
        Some(4096)
    } else {
        None
    };
    match (sector, align) {
        (Some(s), Some(a)) => Geometry::new(s, a).map_err(|_| -1),
        (None, None) => Geometry::old_default(device_sector).ok_or(-1),
        _ => Err(-1),
    }
}

/// `rindex_format`: a header with no entries and a fresh rindex lease.
/// Needs no lockspace.
pub fn format(d: &Daemon, ri: &SanlkRindex) -> i32 {
    let run = || -> Result<(), i32> {
        let (disk, _) = open_disk(ri)?;
        let g = format_geometry(ri.flags, disk.device_sector)?;
        let max_resources = match ri.max_resources {
            0 => DEFAULT_MAX_RESOURCES,
            n => n,
        }
        .min(g.max_resources());
        let header = RindexHeader {
            magic: ondisk::RINDEX_DISK_MAGIC,
            version: ondisk::RINDEX_DISK_VERSION_MAJOR | ondisk::RINDEX_DISK_VERSION_MINOR,
            flags: rindex_flag_from_align(g.align_size),
            sector_size: g.sector_size,
            max_resources,
            unused: 0,
            rx_offset: ri.disk.offset,
            lockspace_name: ri.lockspace_name,
        };
        let t = Duration::from_secs(d.cfg.write_init_io_timeout.max(1));
        let a = g.align_size as u64;
        let mut buf = vec![0u8; a as usize];
        let hb = header.encode();
        buf[..hb.len()].copy_from_slice(&hb);
        Area::new(&disk, ri.disk.offset, a, t)
            .and_then(|ar| ar.write(0, &buf))
            .map_err(|e| e.sanlk_rv())?;
        let name = Name::new(RINDEX_LEASE_NAME).expect("short name");
        let lease = resource_area_bytes(
            g,
            g.max_hosts(),
            g.max_hosts() as u64,
            &ri.lockspace_name,
            &name,
            false,
        );
        Area::new(&disk, ri.disk.offset + a, a, t)
            .and_then(|ar| ar.write(0, &lease))
            .map_err(|e| e.sanlk_rv())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            warn!("rindex_format failed {e}");
            e
        }
    }
}

/// `rindex_lookup`: with neither name nor offset, the first free slot;
/// with a name, its offset; with an offset, the name recorded there (and
/// with both, SANLK_RINDEX_DIFF if it is another name).
pub fn lookup(
    d: &Daemon,
    ri: &SanlkRindex,
    re: &SanlkRentry,
    cmd_flags: u32,
) -> (i32, SanlkRentry) {
    let mut ret = SanlkRentry::default();
    let nolock = cmd_flags & proto::SANLK_RX_NO_LOCKSPACE != 0;
    let mut run = || -> Result<i32, i32> {
        let opened = open_disk(ri)?;
        let (_guard, spi) = begin(d, &ri.lockspace_name, RX_OP_LOOKUP, nolock)?;
        let rx = read_header(ri, opened, &spi)?;
        let data = rx.read(&spi)?;
        if re.offset != 0 && !re.offset.is_multiple_of(rx.align()) {
            return Err(rv::SANLK_RINDEX_OFFSET);
        }
        match (re.name.is_empty(), re.offset) {
            (true, 0) => {
                let (_, off) = rx.search(&data, None)?;
                ret.offset = off;
                Ok(0)
            }
            (false, 0) => {
                let (_, off) = rx.search(&data, Some(&re.name))?;
                ret.name = re.name;
                ret.offset = off;
                Ok(0)
            }
            (no_name, off) => {
                let at = rx.ent_for_res(off)?;
                let e = RindexEntry::decode(&data[at..]).expect("entry inside the area");
                ret.name = e.name;
                ret.offset = off;
                Ok(if !no_name && !e.name.same_as(&re.name) {
                    rv::SANLK_RINDEX_DIFF
                } else {
                    0
                })
            }
        }
    };
    let r = run().unwrap_or_else(|e| e);
    (r, ret)
}

/// `rindex_update`: with SANLK_RXUP_ADD records name at offset, with
/// SANLK_RXUP_REM clears the entry for offset (-EINVAL without them).
pub fn update(
    d: &Daemon,
    ri: &SanlkRindex,
    re: &SanlkRentry,
    cmd_flags: u32,
) -> (i32, SanlkRentry) {
    let mut ret = SanlkRentry::default();
    let nolock = cmd_flags & proto::SANLK_RX_NO_LOCKSPACE != 0;
    let mut run = || -> Result<(), i32> {
        let opened = open_disk(ri)?;
        let (_guard, spi) = begin(d, &ri.lockspace_name, RX_OP_UPDATE, nolock)?;
        let rx = read_header(ri, opened, &spi)?;
        let data = rx.read(&spi)?;
        if re.offset != 0 && !re.offset.is_multiple_of(rx.align()) {
            return Err(rv::SANLK_RINDEX_OFFSET);
        }
        let remove = if cmd_flags & proto::SANLK_RXUP_REM != 0 && re.offset != 0 {
            true
        } else if cmd_flags & proto::SANLK_RXUP_ADD != 0 && !re.name.is_empty() && re.offset != 0 {
            false
        } else {
            return Err(-libc::EINVAL);
        };
        let at = rx.ent_for_res(re.offset)?;
        let entry = (!remove).then_some((&re.name, re.offset));
        rx.write_entry(&data, at, entry, &spi)
            .inspect_err(|e| warn!("rindex_update failed to update rindex {e}"))?;
        if !remove {
            ret.name = re.name;
            ret.offset = re.offset;
        }
        Ok(())
    };
    match run() {
        Ok(()) => (0, ret),
        Err(e) => (e, ret),
    }
}

/// `rindex_create`: under the rindex lease, takes the first free entry,
/// writes a new resource lease (`num_hosts`, 0 = the geometry's maximum)
/// at its offset, then records it. The name is not checked for
/// duplicates, as in sanlock. Returns the new lease's offset.
pub fn create(
    d: &Daemon,
    ri: &SanlkRindex,
    re: &SanlkRentry,
    num_hosts: u32,
) -> (i32, SanlkRentry) {
    let mut ret = SanlkRentry::default();
    let run = || -> Result<u64, i32> {
        let opened = open_disk(ri)?;
        let (_guard, spi) = begin_op(d, &ri.lockspace_name, RX_OP_CREATE).inspect_err(|e| {
            warn!(
                "rindex_create lockspace not available {e} {}",
                ri.lockspace_name
            )
        })?;
        let rx = read_header(ri, opened, &spi)?;
        rx.with_lease(&spi, "create", || {
            let data = rx.read(&spi)?;
            let (at, off) = rx.search(&data, None).inspect_err(|e| {
                warn!("rindex_create failed to find free offset {e}");
            })?;
            let t = Duration::from_secs(d.cfg.write_init_io_timeout.max(1));
            rx.init_lease(off, &re.name, num_hosts as u64, false, t)?;
            rx.write_entry(&data, at, Some((&re.name, off)), &spi)?;
            debug!(
                "rindex_create updated rindex entry {at} for {} {off}",
                re.name
            );
            Ok(off)
        })
    };
    match run() {
        Ok(off) => {
            ret.offset = off;
            (0, ret)
        }
        Err(e) => (e, ret),
    }
}

/// `rindex_delete`: under the rindex lease, clears the entry named
/// `re.name`, then writes a cleared lease where it pointed.
pub fn delete(d: &Daemon, ri: &SanlkRindex, re: &SanlkRentry) -> (i32, SanlkRentry) {
    let run = || -> Result<(), i32> {
        let opened = open_disk(ri)?;
        let (_guard, spi) = begin_op(d, &ri.lockspace_name, RX_OP_DELETE).inspect_err(|e| {
            warn!(
                "rindex_delete lockspace not available {e} {}",
                ri.lockspace_name
            )
        })?;
        let rx = read_header(ri, opened, &spi)?;
        if re.offset != 0 && !re.offset.is_multiple_of(rx.align()) {
            return Err(rv::SANLK_RINDEX_OFFSET);
        }
        rx.with_lease(&spi, "delete", || {
            let data = rx.read(&spi)?;
            let (at, off) = rx.search(&data, Some(&re.name)).inspect_err(|e| {
                warn!("rindex_delete failed to find entry '{}': {e}", re.name);
            })?;
            rx.write_entry(&data, at, None, &spi)?;
            let t = Duration::from_secs(d.cfg.write_init_io_timeout.max(1));
            rx.init_lease(off, &re.name, 0, true, t)
        })
    };
    (run().err().unwrap_or(0), SanlkRentry::default())
}

/// `rindex_rebuild`: clears every entry and records each slot that holds
/// a resource leader (paxos magic), up to the end of the device. Under
/// the rindex lease unless SANLK_RX_NO_LOCKSPACE.
pub fn rebuild(d: &Daemon, ri: &SanlkRindex, cmd_flags: u32) -> i32 {
    let nolock = cmd_flags & proto::SANLK_RX_NO_LOCKSPACE != 0;
    let run = || -> Result<(), i32> {
        let opened = open_disk(ri)?;
        let (_guard, spi) = begin(d, &ri.lockspace_name, RX_OP_REBUILD, nolock)?;
        let rx = read_header(ri, opened, &spi)?;
        let work = || -> Result<(), i32> {
            let mut data = rx.read(&spi)?;
            let ss = rx.ss();
            data[ss..].fill(0);
            for i in 0..rx.max_resources() {
                let off = rx.res_offset(i);
                let b = match rx.disk.read(off, ss, spi.timeout()) {
                    Ok(b) => b,
                    Err(e) if e.sanlk_rv() == -libc::EMSGSIZE => {
                        debug!("rindex_rebuild reached end of device at {i} {off}");
                        break;
                    }
                    Err(_) => continue,
                };
                let lr = LeaderRecord::decode(&b).expect("a sector holds a leader");
                if lr.magic != ondisk::PAXOS_DISK_MAGIC {
                    continue;
                }
                let e = RindexEntry {
                    res_offset: off,
                    name: lr.resource_name,
                    ..Default::default()
                };
                let at = rx.ent_offset(i);
                data[at..at + RINDEX_ENTRY_SIZE].copy_from_slice(&e.encode());
            }
            rx.area(rx.offset, spi.timeout())?
                .write(0, &data)
                .map_err(|e| e.sanlk_rv())
        };
        if nolock {
            work()
        } else {
            rx.with_lease(&spi, "rebuild", work)
        }
    };
    run().err().unwrap_or(0)
}
