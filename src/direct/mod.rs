//! `hactl direct`: reading and writing lease areas straight on storage, with
//! no daemon, exactly as `sanlock direct` does (init, dump, read_leader,
//! write_leader, next_free, and the resource index commands).

pub mod check;
pub mod dump;
pub mod rindex;

use std::time::Duration;

use crate::geometry::{BadGeometry, DEFAULT_MAX_HOSTS, Geometry, leader_flag_from_align};
use crate::io::{Area, Disk, IoError};
use crate::lease_str::{LockspaceArg, ResourceArg};
use crate::ondisk::{self, DecodeError, LeaderRecord, RequestRecord};

/// sanlock's `DEFAULT_IO_TIMEOUT`.
pub const DEFAULT_IO_TIMEOUT: u16 = 10;
/// sanlock's `DEFAULT_WRITE_INIT_IO_TIMEOUT`: initialising an area may take
/// longer than the lease algorithm's io_timeout.
pub const WRITE_INIT_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Options shared by the direct commands (`-o -Z -A -n -z -f`).
#[derive(Clone, Debug)]
pub struct DirectOpts {
    pub io_timeout: u16,
    pub sector_size: Option<u32>,
    pub align_size: Option<u32>,
    pub num_hosts: u64,
    pub clear: bool,
    pub force_mode: u32,
}

impl Default for DirectOpts {
    fn default() -> Self {
        DirectOpts {
            io_timeout: DEFAULT_IO_TIMEOUT,
            sector_size: None,
            align_size: None,
            num_hosts: 0,
            clear: false,
            force_mode: 0,
        }
    }
}

impl DirectOpts {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.io_timeout as u64)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{0} (sanlock reports this as: device not found)")]
    NoDevice(IoError),
    #[error("at offset {offset} of {path}: {source}")]
    Record {
        path: String,
        offset: u64,
        source: DecodeError,
    },
    #[error(transparent)]
    Geometry(#[from] BadGeometry),
    #[error("-Z (sector size) and -A (align size) must be given together")]
    FlagsIncomplete,
    #[error(
        "no lockspace or resource leader at offset {offset} of {path} tells the sector and align size; give them with -Z and -A"
    )]
    NoSizes { path: String, offset: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    RindexOffset(String),
    #[error("{0}")]
    RindexDiff(String),
    /// A lease algorithm's own result (SANLK_* or -errno).
    #[error("{desc} ({code})", desc = crate::rv::describe(*.0), code = .0)]
    Sanlk(i32),
}

impl DirectError {
    /// The number sanlock prints as `... done <rv>` for the same failure.
    pub fn sanlk_rv(&self) -> i32 {
        match self {
            DirectError::Io(e) => e.sanlk_rv(),
            DirectError::NoDevice(_) => -libc::ENODEV,
            DirectError::Record { source, .. } => source.sanlk_rv(),
            DirectError::Geometry(_)
            | DirectError::FlagsIncomplete
            | DirectError::NoSizes { .. } => -1,
            DirectError::Invalid(_) => -libc::EINVAL,
            DirectError::NotFound(_) => -libc::ENOENT,
            DirectError::RindexOffset(_) => crate::rv::SANLK_RINDEX_OFFSET,
            DirectError::RindexDiff(_) => crate::rv::SANLK_RINDEX_DIFF,
            DirectError::Sanlk(e) => *e,
        }
    }
}

pub type Result<T> = std::result::Result<T, DirectError>;

pub(crate) fn record_err(disk: &Disk, offset: u64, source: DecodeError) -> DirectError {
    DirectError::Record {
        path: disk.path().display().to_string(),
        offset,
        source,
    }
}

/// The geometry an init uses: `-Z` with `-A`, or with neither the device's
/// own sector size and the old default alignment (and 2000 hosts).
fn init_geometry(opts: &DirectOpts, disk: &Disk) -> Result<(Geometry, u32)> {
    match (opts.sector_size, opts.align_size) {
        (Some(s), Some(a)) => {
            let g = Geometry::new(s, a)?;
            Ok((g, g.max_hosts()))
        }
        (None, None) => {
            let g = Geometry::old_default(disk.device_sector).ok_or(BadGeometry {
                sector_size: disk.device_sector,
                align_size: 0,
            })?;
            Ok((g, DEFAULT_MAX_HOSTS))
        }
        _ => Err(DirectError::FlagsIncomplete),
    }
}

/// Reads the first 4096 bytes at `offset` and takes the sector and align
/// size from a delta or paxos leader there (`direct_read_leader_sizes`).
pub fn read_leader_sizes(disk: &Disk, offset: u64, timeout: Duration) -> Result<Geometry> {
    let buf = disk.read(offset, 4096, timeout)?;
    let lr = LeaderRecord::decode(&buf).map_err(|e| record_err(disk, offset, e))?;
    let no_sizes = || DirectError::NoSizes {
        path: disk.path().display().to_string(),
        offset,
    };
    if lr.magic != ondisk::DELTA_DISK_MAGIC && lr.magic != ondisk::PAXOS_DISK_MAGIC {
        return Err(no_sizes());
    }
    Geometry::from_leader(lr.sector_size, lr.flags).ok_or_else(no_sizes)
}

/// `direct init -s`: writes every host's delta lease in one aligned area,
/// with host 1's magic left invalid, then commits by writing host 1's
/// sector, so a crash in between leaves no half-valid lockspace.
pub fn init_lockspace(ls: &LockspaceArg, opts: &DirectOpts) -> Result<()> {
    if ls.disk.path.is_empty() {
        return Err(DirectError::NoDevice(IoError::Open {
            path: "".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        }));
    }
    let disk = Disk::open(ls.disk.path.as_ref()).map_err(DirectError::NoDevice)?;
    let (g, max_hosts) = init_geometry(opts, &disk)?;
    disk.check_sector_size(g.sector_size)?;
    let ss = g.sector_size as usize;
    let area = Area::new(
        &disk,
        ls.disk.offset,
        g.align_size as u64,
        WRITE_INIT_IO_TIMEOUT,
    )?;

    let mut leader = LeaderRecord {
        magic: ondisk::DELTA_DISK_MAGIC,
        version: ondisk::DELTA_DISK_VERSION_MAJOR | ondisk::DELTA_DISK_VERSION_MINOR,
        flags: leader_flag_from_align(g.align_size),
        sector_size: g.sector_size,
        max_hosts: 1,
        io_timeout: opts.io_timeout,
        space_name: ls.name,
        ..Default::default()
    };
    let mut buf = vec![0u8; g.align_size as usize];
    for i in 0..max_hosts as usize {
        let mut lr = leader;
        if i == 0 {
            lr.magic = 0;
        }
        let b = lr.seal();
        buf[i * ss..i * ss + b.len()].copy_from_slice(&b);
    }
    area.write(0, &buf)?;

    let b = leader.seal();
    buf[..b.len()].copy_from_slice(&b);
    area.write(0, &buf[..ss])?;
    Ok(())
}

/// `direct init -r`: a leader (or a cleared leader with `-z`), the request
/// record, and zeroed dblocks, in one aligned area on every disk.
pub fn init_resource(res: &ResourceArg, opts: &DirectOpts) -> Result<()> {
    if res.disks.is_empty() || res.disks[0].path.is_empty() {
        return Err(DirectError::NoDevice(IoError::Open {
            path: "".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        }));
    }
    let disks: Vec<Disk> = res
        .disks
        .iter()
        .map(|d| Disk::open(d.path.as_ref()))
        .collect::<std::result::Result<_, _>>()?;
    let (g, max_hosts) = init_geometry(opts, &disks[0])?;
    let num_hosts = if opts.num_hosts == 0 || opts.num_hosts > max_hosts as u64 {
        max_hosts as u64
    } else {
        opts.num_hosts
    };
    let buf = resource_area_bytes(
        g,
        max_hosts,
        num_hosts,
        &res.lockspace,
        &res.name,
        opts.clear,
    );

    for (disk, arg) in disks.iter().zip(&res.disks) {
        disk.check_sector_size(g.sector_size)?;
        Area::new(disk, arg.offset, g.align_size as u64, WRITE_INIT_IO_TIMEOUT)?.write(0, &buf)?;
    }
    Ok(())
}

/// The bytes `paxos_lease_init` writes for one resource lease area: leader
/// (or a cleared leader), the request record, and zeroes for every dblock.
pub fn resource_area_bytes(
    g: Geometry,
    max_hosts: u32,
    num_hosts: u64,
    lockspace: &ondisk::Name,
    name: &ondisk::Name,
    clear: bool,
) -> Vec<u8> {
    let mut leader = LeaderRecord {
        magic: if clear {
            ondisk::PAXOS_DISK_CLEAR
        } else {
            ondisk::PAXOS_DISK_MAGIC
        },
        version: ondisk::PAXOS_DISK_VERSION_MAJOR | ondisk::PAXOS_DISK_VERSION_MINOR,
        flags: leader_flag_from_align(g.align_size),
        sector_size: g.sector_size,
        num_hosts,
        max_hosts: max_hosts as u64,
        space_name: *lockspace,
        resource_name: *name,
        write_timestamp: if clear {
            crate::timeouts::monotime()
        } else {
            0
        },
        ..Default::default()
    };
    let ss = g.sector_size as usize;
    let mut buf = vec![0u8; g.align_size as usize];
    let b = leader.seal();
    buf[..b.len()].copy_from_slice(&b);
    let rr = RequestRecord::fresh().encode();
    buf[ss..ss + rr.len()].copy_from_slice(&rr);
    buf
}

/// A leader as read, with the verdict on it: sanlock prints what it read
/// even when the record is not valid.
pub struct LeaderRead {
    pub leader: LeaderRecord,
    pub result: Result<()>,
}

impl LeaderRead {
    fn failed(e: DirectError) -> Self {
        LeaderRead {
            leader: LeaderRecord::default(),
            result: Err(e),
        }
    }
}

/// `direct read_leader -s LS:HOST_ID:path:off`: host_id's delta lease.
pub fn read_leader_lockspace(ls: &LockspaceArg, opts: &DirectOpts) -> LeaderRead {
    if ls.disk.path.is_empty() {
        return LeaderRead::failed(DirectError::Invalid("no path given".into()));
    }
    if ls.host_id == 0 {
        return LeaderRead::failed(DirectError::Invalid(
            "host_id 0 has no delta lease (host_ids start at 1)".into(),
        ));
    }
    let disk = match Disk::open(ls.disk.path.as_ref()) {
        Ok(d) => d,
        Err(e) => return LeaderRead::failed(DirectError::NoDevice(e)),
    };
    let g = match (opts.sector_size, opts.align_size) {
        (Some(s), Some(a)) => Geometry::new(s, a).map_err(DirectError::from),
        _ => read_leader_sizes(&disk, ls.disk.offset, opts.timeout()),
    };
    let g = match g {
        Ok(g) => g,
        Err(e) => return LeaderRead::failed(e),
    };
    let offset = ls.disk.offset + (ls.host_id - 1) * g.sector_size as u64;
    let buf = match disk.read(offset, g.sector_size as usize, opts.timeout()) {
        Ok(b) => b,
        Err(e) => return LeaderRead::failed(e.into()),
    };
    let leader = LeaderRecord::decode(&buf).expect("a sector holds a leader");
    let result = leader
        .verify_delta(Some(&ls.name))
        .map_err(|e| record_err(&disk, offset, e));
    LeaderRead { leader, result }
}

/// `direct read_leader -r LS:RES:path:off`: the resource's leader.
pub fn read_leader_resource(res: &ResourceArg, opts: &DirectOpts) -> LeaderRead {
    let Some(d) = res.disks.first() else {
        return LeaderRead::failed(DirectError::Invalid("no disk given".into()));
    };
    let disk = match Disk::open(d.path.as_ref()) {
        Ok(d) => d,
        Err(e) => return LeaderRead::failed(e.into()),
    };
    // sanlock reads a 4K sector when no size is given: the leader fits either way.
    let ss = opts.sector_size.unwrap_or(4096).max(disk.device_sector);
    let buf = match disk.read(d.offset, ss as usize, opts.timeout()) {
        Ok(b) => b,
        Err(e) => return LeaderRead::failed(e.into()),
    };
    let leader = LeaderRecord::decode(&buf).expect("a sector holds a leader");
    let result = leader
        .verify_paxos(Some(&res.lockspace), Some(&res.name), 0)
        .map_err(|e| record_err(&disk, d.offset, e));
    LeaderRead { leader, result }
}

/// Field overrides for `direct write_leader -F FILE`, in sanlock's
/// `field value` text (the form `read_leader` prints).
pub struct LeaderEdits {
    /// Lines sanlock would report as `ignore line:` / `ignore field:`.
    pub notes: Vec<String>,
    /// The checksum given in the file, if any (used only with `-f`).
    pub checksum: Option<u32>,
}

fn parse_hex(v: &str) -> Option<u32> {
    u32::from_str_radix(v.strip_prefix("0x")?, 16).ok()
}

/// Applies `field value` lines to `lr`; `is_ls` selects the `extra1..3`
/// names (lockspace) or `write_*` (resource) for the last three fields.
pub fn apply_leader_edits(lr: &mut LeaderRecord, text: &str, is_ls: bool) -> LeaderEdits {
    let mut notes = Vec::new();
    let mut checksum = None;
    for line in text.split_inclusive('\n') {
        let mut it = line.split_whitespace();
        let (Some(field), Some(val)) = (it.next(), it.next()) else {
            notes.push(format!("ignore line: \"{line}\""));
            continue;
        };
        let num = || val.parse::<u64>().unwrap_or(0);
        match field {
            "magic" => lr.magic = parse_hex(val).unwrap_or(lr.magic),
            "version" => lr.version = parse_hex(val).unwrap_or(lr.version),
            "flags" => lr.flags = parse_hex(val).unwrap_or(lr.flags),
            "sector_size" => lr.sector_size = num() as u32,
            "num_hosts" => lr.num_hosts = num(),
            "max_hosts" => lr.max_hosts = num(),
            "owner_id" => lr.owner_id = num(),
            "owner_generation" => lr.owner_generation = num(),
            "lver" => lr.lver = num(),
            "space_name" => {
                lr.space_name = ondisk::Name::from_bytes(&val.as_bytes()[..val.len().min(48)])
                    .unwrap_or_default()
            }
            "resource_name" => {
                lr.resource_name = ondisk::Name::from_bytes(&val.as_bytes()[..val.len().min(48)])
                    .unwrap_or_default()
            }
            "timestamp" => lr.timestamp = num(),
            "checksum" => checksum = parse_hex(val),
            "io_timeout" => lr.io_timeout = num() as u16,
            "extra1" if is_ls => lr.write_id = num(),
            "extra2" if is_ls => lr.write_generation = num(),
            "extra3" if is_ls => lr.write_timestamp = num(),
            "write_id" if !is_ls => lr.write_id = num(),
            "write_generation" if !is_ls => lr.write_generation = num(),
            "write_timestamp" if !is_ls => lr.write_timestamp = num(),
            _ => notes.push(format!("ignore field: \"{field}\"")),
        }
    }
    LeaderEdits { notes, checksum }
}

/// `direct write_leader`: writes `lr` (already edited, checksum already
/// chosen) as host_id's delta lease sector or the resource's first sector.
/// The rest of that sector (e.g. the host_id bitmap) is zeroed, as sanlock does.
pub fn write_leader(
    ls: Option<&LockspaceArg>,
    res: Option<&ResourceArg>,
    lr: &LeaderRecord,
    opts: &DirectOpts,
) -> Result<()> {
    let ss = lr.sector_size;
    if ss != 512 && ss != 4096 {
        return Err(DirectError::Invalid(format!(
            "sector_size {ss} in the new leader is neither 512 nor 4096"
        )));
    }
    let (path, base, sector_nr) = match (ls, res) {
        (Some(ls), _) if !ls.disk.path.is_empty() => {
            if ls.host_id == 0 {
                return Err(DirectError::Invalid("host_id 0 has no delta lease".into()));
            }
            (&ls.disk.path, ls.disk.offset, ls.host_id - 1)
        }
        (_, Some(r)) if !r.disks.is_empty() => (&r.disks[0].path, r.disks[0].offset, 0),
        _ => {
            return Err(DirectError::Invalid(
                "write_leader needs -s LOCKSPACE or -r RESOURCE".into(),
            ));
        }
    };
    let disk = Disk::open(path.as_ref()).map_err(DirectError::NoDevice)?;
    disk.check_sector_size(ss)?;
    let mut sector = vec![0u8; ss as usize];
    let b = lr.encode();
    sector[..b.len()].copy_from_slice(&b);
    let off = sector_nr * ss as u64;
    Area::new(&disk, base + off, ss as u64, opts.timeout())?.write(0, &sector)?;
    Ok(())
}

/// `direct next_free path[:offset]`: the first aligned area (relative to
/// offset) with no lockspace, resource or rindex magic.
pub fn next_free(path: &str, offset: u64, opts: &DirectOpts) -> Result<u64> {
    let disk = Disk::open(path.as_ref()).map_err(DirectError::NoDevice)?;
    let g = match (opts.sector_size, opts.align_size) {
        (Some(s), Some(a)) => Geometry::new(s, a)?,
        _ => read_leader_sizes(&disk, offset, opts.timeout())?,
    };
    let mut rel = 0u64;
    loop {
        let magic = match disk.read(offset + rel, g.sector_size as usize, opts.timeout()) {
            Ok(b) => u32::from_le_bytes(b[0..4].try_into().unwrap()),
            // Past the end of the file or device: free from here on.
            Err(IoError::Short { .. }) => 0,
            Err(e) => return Err(e.into()),
        };
        if magic != ondisk::DELTA_DISK_MAGIC
            && magic != ondisk::PAXOS_DISK_MAGIC
            && magic != ondisk::RINDEX_DISK_MAGIC
        {
            return Ok(rel);
        }
        rel += g.align_size as u64;
    }
}

/// The pieces every direct delta command needs: the open disk, the
/// lockspace geometry (from `-Z/-A` or host 1's leader) and the parameters.
fn delta_setup(
    ls: &LockspaceArg,
    opts: &DirectOpts,
    our_name: crate::ondisk::Name,
) -> Result<(Disk, Geometry, crate::delta::DeltaParams)> {
    if ls.disk.path.is_empty() {
        return Err(DirectError::NoDevice(IoError::Open {
            path: "".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        }));
    }
    if ls.host_id == 0 {
        return Err(DirectError::Invalid(
            "host_id 0 has no delta lease (host_ids start at 1)".into(),
        ));
    }
    let disk = Disk::open(ls.disk.path.as_ref()).map_err(DirectError::NoDevice)?;
    let g = match (opts.sector_size, opts.align_size) {
        (Some(s), Some(a)) => Geometry::new(s, a)?,
        _ => read_leader_sizes(&disk, ls.disk.offset, opts.timeout())?,
    };
    if ls.host_id > g.max_hosts() as u64 {
        return Err(DirectError::Invalid(format!(
            "host_id {} is over the {} hosts of this lockspace",
            ls.host_id,
            g.max_hosts()
        )));
    }
    let p = crate::delta::DeltaParams {
        space_name: ls.name,
        host_id: ls.host_id,
        our_name,
        io_timeout: opts.io_timeout as u64,
        sector_size: g.sector_size as usize,
        watchdog_fire_timeout: crate::timeouts::DEFAULT_WATCHDOG_FIRE_TIMEOUT,
    };
    Ok((disk, g, p))
}

fn sanlk(e: i32) -> DirectError {
    DirectError::Sanlk(e)
}

/// `direct acquire_id`: joins the lockspace as the daemon's add_lockspace
/// would (the daemon's own lockspace machine, stopped once joined), then
/// leaves the lease to expire (nothing renews it).
pub fn acquire_id(
    ls: &LockspaceArg,
    opts: &DirectOpts,
    our_name: crate::ondisk::Name,
) -> Result<LeaderRecord> {
    use crate::daemon::core::lockspace::LockspaceConfig;
    use crate::daemon::engine::{AreaStorage, join_only};
    let (disk, g, p) = delta_setup(ls, opts, our_name)?;
    // The geometry is known here: the join does not read it again.
    Area::new(&disk, ls.disk.offset, g.align_size as u64, opts.timeout())?;
    let cfg = LockspaceConfig {
        space_id: 0,
        space_name: ls.name,
        host_id: ls.host_id,
        our_name: p.our_name,
        io_timeout: p.io_timeout,
        watchdog_fire_timeout: p.watchdog_fire_timeout,
        kill_grace_seconds: None,
        set_bitmap_seconds: 0,
        use_watchdog: false,
        layout: Some(g.into()),
        sizes_read_len: 4096,
        knobs: Default::default(),
    };
    let mut storage = AreaStorage::lockspace(disk, ls.disk.offset);
    join_only(cfg, &mut storage).map_err(|e| sanlk(e.rv))
}

/// `direct renew_id`: one renewal of a host_id we hold.
pub fn renew_id(ls: &LockspaceArg, opts: &DirectOpts) -> Result<LeaderRecord> {
    let (disk, g, mut p) = delta_setup(ls, opts, Default::default())?;
    let area = Area::new(&disk, ls.disk.offset, g.align_size as u64, opts.timeout())?;
    let buf = area.read(0, g.align_size as usize)?;
    let at = (ls.host_id as usize - 1) * p.sector_size;
    let last =
        crate::delta::verify_sector(&buf[at..at + p.sector_size], &ls.name).map_err(sanlk)?;
    p.our_name = last.resource_name;
    let now = crate::timeouts::monotime();
    let (lr, sector) =
        crate::delta::renew(&p, &last, false, &buf, now, (0, 0, 0), &[0; 256]).map_err(sanlk)?;
    area.write(at as u64, &sector)?;
    Ok(lr)
}

/// `direct release_id`: frees a host_id (timestamp 0).
pub fn release_id(ls: &LockspaceArg, opts: &DirectOpts) -> Result<LeaderRecord> {
    let (disk, g, p) = delta_setup(ls, opts, Default::default())?;
    let area = Area::new(&disk, ls.disk.offset, g.align_size as u64, opts.timeout())?;
    let at = (ls.host_id - 1) * p.sector_size as u64;
    let buf = area.read(at, p.sector_size)?;
    let last = crate::delta::verify_sector(&buf, &ls.name).map_err(sanlk)?;
    let (lr, sector) = crate::delta::release_sector(&last, p.sector_size);
    area.write(at, &sector)?;
    Ok(lr)
}

/// `direct acquire -r RESOURCE -i HOST_ID -g GENERATION`: runs Disk Paxos for
/// the lease as that host. With no daemon there is no lockspace to judge an
/// owner by, so a lease another host holds is refused
/// (SANLK_ACQUIRE_LOCKSPACE), as by sanlock.
pub fn acquire(
    res: &ResourceArg,
    opts: &DirectOpts,
    host_id: u64,
    host_generation: u64,
) -> Result<LeaderRecord> {
    use crate::daemon::core::resource::{LeaseRef, NoLockspace, PaxosOnly};
    use crate::daemon::engine::{self, AreaStorage};
    use crate::paxos::PaxosParams;
    let d = res
        .disks
        .first()
        .ok_or_else(|| DirectError::Invalid("acquire needs a disk in -r".into()))?;
    let disk = Disk::open(d.path.as_ref())?;
    let g = match (opts.sector_size, opts.align_size) {
        (Some(s), Some(a)) => Geometry::new(s, a)?,
        _ => read_leader_sizes(&disk, d.offset, opts.timeout())?,
    };
    let ss = g.sector_size as usize;
    // Refused before the first I/O if the area does not fit the device.
    Area::new(&disk, d.offset, g.align_size as u64, opts.timeout())?;
    let lease = LeaseRef {
        space_name: res.lockspace,
        resource_name: res.name,
        layout: Some(g.into()),
        io_timeout: opts.io_timeout as u64,
        watchdog_fire_timeout: crate::timeouts::DEFAULT_WATCHDOG_FIRE_TIMEOUT,
    };
    let op = PaxosOnly::new(
        lease,
        PaxosParams {
            host_id,
            host_generation,
            sector_size: ss,
            flags: 0,
            acquire_lver: 0,
            new_num_hosts: 0,
            watchdog_fire_timeout: crate::timeouts::DEFAULT_WATCHDOG_FIRE_TIMEOUT,
            io_timeout: opts.io_timeout as u64,
            seed: crate::timeouts::monotime() ^ (host_id << 32) ^ std::process::id() as u64,
            names: Some((res.lockspace, res.name)),
        },
        Default::default(),
    );
    let mut storage = AreaStorage::lease_on(disk, d.offset);
    engine::run_op(op, &mut storage, NoLockspace, || false)
        .map(|(lr, _)| lr)
        .map_err(DirectError::Sanlk)
}

/// `direct release -r RESOURCE [-i HOST_ID -g GENERATION]`: frees the
/// leader if that host wrote it as owner. sanlock 3.8.5 always releases as
/// host_id 0 here (so it never frees anything); without `-i` hactl does the
/// same, with `-i`/`-g` it releases as that host.
pub fn release(
    res: &ResourceArg,
    opts: &DirectOpts,
    host_id: u64,
    host_generation: u64,
) -> Result<Option<LeaderRecord>> {
    let d = res
        .disks
        .first()
        .ok_or_else(|| DirectError::Invalid("release needs a disk in -r".into()))?;
    let disk = Disk::open(d.path.as_ref())?;
    let ss = opts.sector_size.unwrap_or(4096).max(disk.device_sector);
    let buf = disk.read(d.offset, ss as usize, opts.timeout())?;
    let lr = LeaderRecord::decode(&buf).expect("sector holds a leader");
    lr.verify_paxos(Some(&res.lockspace), Some(&res.name), 0)
        .map_err(|e| record_err(&disk, d.offset, e))?;
    let now = crate::timeouts::monotime();
    let lss = lr.sector_size as usize;
    match crate::paxos::release_leader(&lr, &lr, host_id, host_generation, now, lss)
        .map_err(DirectError::Sanlk)?
    {
        None => Ok(None),
        Some((freed, sector)) => {
            let g = Geometry::from_leader(lr.sector_size, lr.flags)
                .ok_or_else(|| DirectError::Invalid("leader has no valid geometry".into()))?;
            Area::new(&disk, d.offset, g.align_size as u64, opts.timeout())?.write(0, &sector)?;
            Ok(Some(freed))
        }
    }
}
