//! Resource commands that touch a lease area without holding it:
//! `write_resource`, `read_resource`, `read_resource_owners` and `request`
//! (sanlock's cmd_write_resource, paxos_read_resource,
//! read_resource_owners, request_token). All single-disk.

use std::time::Duration;

use super::core::resource::{LeaseRef, NoLockspace, WriteRequest};
use super::engine::{self, AreaStorage};
use crate::direct::{self, DirectOpts};
use crate::geometry::{Geometry, align_from_leader_flags};
use crate::io::Disk;
use crate::lease_str::{DiskArg, ResourceArg};
use crate::ondisk::dblock::{MBLOCK_OFFSET, ModeBlock};
use crate::ondisk::{self, LeaderRecord};
use crate::proto::{self, SanlkHost, SanlkResource};
use crate::rv;

/// The sizes a resource's flags name: Ok(None) if neither is set; -1 if
/// only one is, or the pair is not a valid geometry (`sizes_from_flags`).
fn sizes_from_flags(flags: u32) -> Result<Option<Geometry>, i32> {
    match flag_sizes(flags) {
        (0, 0) => Ok(None),
        (0, _) | (_, 0) => Err(-1),
        (s, a) => Geometry::new(s, a).map(Some).map_err(|_| -1),
    }
}

/// The sector and align sizes the flags name, each 0 if unset.
fn flag_sizes(flags: u32) -> (u32, u32) {
    let ss = match flags & (proto::SANLK_RES_SECTOR512 | proto::SANLK_RES_SECTOR4K) {
        proto::SANLK_RES_SECTOR512 => 512,
        proto::SANLK_RES_SECTOR4K => 4096,
        _ => 0,
    };
    let align = match flags
        & (proto::SANLK_RES_ALIGN1M
            | proto::SANLK_RES_ALIGN2M
            | proto::SANLK_RES_ALIGN4M
            | proto::SANLK_RES_ALIGN8M)
    {
        proto::SANLK_RES_ALIGN1M => 1 << 20,
        proto::SANLK_RES_ALIGN2M => 2 << 20,
        proto::SANLK_RES_ALIGN4M => 4 << 20,
        proto::SANLK_RES_ALIGN8M => 8 << 20,
        _ => 0,
    };
    (ss, align)
}

fn size_flags(g: Geometry) -> u32 {
    let s = if g.sector_size == 4096 {
        proto::SANLK_RES_SECTOR4K
    } else {
        proto::SANLK_RES_SECTOR512
    };
    let a = match g.align_size {
        0x10_0000 => proto::SANLK_RES_ALIGN1M,
        0x20_0000 => proto::SANLK_RES_ALIGN2M,
        0x40_0000 => proto::SANLK_RES_ALIGN4M,
        _ => proto::SANLK_RES_ALIGN8M,
    };
    s | a
}

const SIZE_FLAGS: u32 = proto::SANLK_RES_SECTOR512
    | proto::SANLK_RES_SECTOR4K
    | proto::SANLK_RES_ALIGN1M
    | proto::SANLK_RES_ALIGN2M
    | proto::SANLK_RES_ALIGN4M
    | proto::SANLK_RES_ALIGN8M;

fn first_disk(res: &SanlkResource) -> Result<(String, u64), i32> {
    if res.disks.is_empty() || res.disks.len() > proto::SANLK_MAX_DISKS {
        return Err(-libc::ERANGE);
    }
    super::resource::disk_path(res)
}

fn open(path: &str) -> Result<Disk, i32> {
    Disk::open(path.as_ref()).map_err(|e| e.sanlk_rv())
}

/// `write_resource`: a fresh lease area (`num_hosts` 0: the maximum).
pub fn write_resource(res: &SanlkResource, num_hosts: u32, clear: bool, io_timeout: u64) -> i32 {
    let run = || -> Result<(), i32> {
        let g = sizes_from_flags(res.flags)?;
        let mut disks = Vec::new();
        for d in &res.disks {
            disks.push(DiskArg {
                path: super::path_string(&d.path)?,
                offset: d.offset,
            });
        }
        if disks.is_empty() || disks.len() > proto::SANLK_MAX_DISKS {
            return Err(-libc::ERANGE);
        }
        let arg = ResourceArg {
            lockspace: res.lockspace_name,
            name: res.name,
            disks,
            lver: None,
            shared: false,
        };
        let opts = DirectOpts {
            io_timeout: io_timeout.min(u16::MAX as u64) as u16,
            sector_size: g.map(|g| g.sector_size),
            align_size: g.map(|g| g.align_size),
            num_hosts: num_hosts as u64,
            clear,
            force_mode: 0,
        };
        direct::init_resource(&arg, &opts).map_err(|e| e.sanlk_rv())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => e,
    }
}

/// `read_resource`: the names and lver on disk, the sizes as flags. The
/// resource comes back in every case (sanlock always sends it).
pub fn read_resource(mut res: SanlkResource, io_timeout: u64) -> (i32, SanlkResource) {
    let run = |res: &mut SanlkResource| -> Result<(), i32> {
        let (path, offset) = first_disk(res)?;
        let disk = open(&path)?;
        let t = Duration::from_secs(io_timeout.max(1));
        // Unknown sizes: a 4K read is safe on 512 and 4K devices alike.
        let ss = match sizes_from_flags(res.flags) {
            Ok(Some(g)) => g.sector_size,
            _ => 4096,
        };
        let b = disk
            .read(offset, ss as usize, t)
            .map_err(|e| e.sanlk_rv())?;
        let lr = LeaderRecord::decode(&b).expect("a sector holds a leader");
        let ls = if res.lockspace_name.0[0] == 0 {
            lr.space_name
        } else {
            res.lockspace_name
        };
        let name = if res.name.0[0] == 0 {
            lr.resource_name
        } else {
            res.name
        };
        lr.verify_paxos(Some(&ls), Some(&name), 0)
            .or_else(|e| match e {
                ondisk::DecodeError::WrongSectorSize { .. } => Ok(()),
                e => Err(e),
            })
            .map_err(|e| e.sanlk_rv())?;
        res.lockspace_name = lr.space_name;
        res.name = lr.resource_name;
        res.lver = lr.lver;
        if lr.sector_size == 512 || lr.sector_size == 4096 {
            let a = align_from_leader_flags(lr.flags).unwrap_or(if lr.sector_size == 512 {
                1 << 20
            } else {
                8 << 20
            });
            if let Ok(g) = Geometry::new(lr.sector_size, a) {
                res.flags = (res.flags & !SIZE_FLAGS) | size_flags(g);
            }
        }
        Ok(())
    };
    let r = run(&mut res);
    (r.err().unwrap_or(0), res)
}

/// `read_resource_owners`: the EX owner (with its timestamp) and every
/// SHARED holder (timestamp 0), unfiltered by liveness.
pub fn read_resource_owners(
    mut res: SanlkResource,
    io_timeout: u64,
) -> (i32, SanlkResource, Vec<SanlkHost>) {
    let run = |res: &mut SanlkResource| -> Result<Vec<SanlkHost>, i32> {
        let (path, offset) = first_disk(res)?;
        let disk = open(&path)?;
        let t = Duration::from_secs(io_timeout.max(1));
        // Sizes the caller named must be right; unnamed ones are guessed
        // (512, its old default align) and corrected from the leader.
        let (given_ss, given_align) = flag_sizes(res.flags);
        let mut ss = if given_ss != 0 { given_ss } else { 512 };
        let mut align = if given_align != 0 {
            given_align
        } else if ss == 512 {
            1 << 20
        } else {
            8 << 20
        };
        // At most one correction: a leader whose sizes change between two
        // reads is not waited out.
        let mut rereads = 0;
        let (lr, area) = loop {
            let area = disk
                .read(offset, align as usize, t)
                .map_err(|e| e.sanlk_rv())?;
            let lr = LeaderRecord::decode(&area).expect("a sector holds a leader");
            let a = align_from_leader_flags(lr.flags).unwrap_or(match lr.sector_size {
                4096 => 8 << 20,
                _ => 1 << 20,
            });
            if (given_ss != 0 && given_ss != lr.sector_size)
                || (given_align != 0 && given_align != a)
            {
                return Err(-libc::EINVAL);
            }
            if ss != lr.sector_size || align != a {
                rereads += 1;
                if rereads > 1 || Geometry::new(lr.sector_size, a).is_err() {
                    return Err(rv::SANLK_LEADER_SECTORSIZE);
                }
                (ss, align) = (lr.sector_size, a);
                continue;
            }
            break (lr, area);
        };
        lr.verify_paxos(Some(&res.lockspace_name), Some(&res.name), 0)
            .map_err(|e| e.sanlk_rv())?;
        res.lver = lr.lver;
        let ss = ss as usize;
        let owned = lr.timestamp != 0 && lr.owner_id != 0;
        let mut hosts = Vec::new();
        if owned {
            hosts.push(SanlkHost {
                host_id: lr.owner_id,
                generation: lr.owner_generation,
                timestamp: lr.timestamp,
                ..Default::default()
            });
        }
        for i in 0..lr.num_hosts as usize {
            let at = (2 + i) * ss + MBLOCK_OFFSET;
            let Some(b) = area.get(at..at + 16) else {
                break;
            };
            let mb = ModeBlock::decode(b).expect("16 bytes");
            if !mb.is_shared() {
                continue;
            }
            res.flags |= proto::SANLK_RES_SHARED;
            let h = i as u64 + 1;
            if owned && h == lr.owner_id {
                continue;
            }
            hosts.push(SanlkHost {
                host_id: h,
                generation: mb.generation,
                ..Default::default()
            });
        }
        Ok(hosts)
    };
    match run(&mut res) {
        Ok(h) => (0, res, h),
        Err(e) => (e, res, Vec::new()),
    }
}

/// `request`: asks the holder of a lease to give it up by writing the
/// request record (lver wanted, force mode), with the core's
/// [`WriteRequest`]. Ok(owner host_id, 0 if the lease is free or nothing
/// was asked).
pub fn request(
    res: &SanlkResource,
    force_mode: u32,
    next_lver: bool,
    io_timeout: u64,
) -> Result<u64, i32> {
    let (path, offset) = first_disk(res)?;
    let mut storage = AreaStorage::lease(path.as_ref(), offset).map_err(|f| f.rv)?;
    let lease = LeaseRef {
        space_name: res.lockspace_name,
        resource_name: res.name,
        layout: None,
        io_timeout,
        watchdog_fire_timeout: 0,
    };
    let op = WriteRequest::new(lease, res.lver, force_mode, next_lver);
    engine::run_op(op, &mut storage, NoLockspace, || false).map_err(|e| {
        tracing::info!("request {}:{}: {e}", res.lockspace_name, res.name);
        e.rv
    })
}
