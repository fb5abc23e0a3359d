//! `direct format | lookup | update | rebuild -x RINDEX`: the resource index,
//! one aligned area of entries, followed by an area holding the paxos lease
//! ("rindex_lease") that guards it; resource leases follow from
//! `rx_offset + 2 * align_size`, one per aligned area.

use super::{DirectError, DirectOpts, Result, WRITE_INIT_IO_TIMEOUT, init_geometry, record_err};
use crate::geometry::{Geometry, leader_flag_from_align, rindex_flag_from_align};
use crate::io::{Area, Disk, IoError};
use crate::lease_str::{DiskArg, ResourceArg, RindexArg};
use crate::ondisk::{
    self, LeaderRecord, Name, RindexEntry, RindexHeader,
    rindex::{DEFAULT_MAX_RESOURCES, RINDEX_ENTRY_SIZE},
};

/// The name of the internal lease that protects updates of the index.
pub const RINDEX_LEASE_NAME: &str = "rindex_lease";

/// An opened, verified resource index.
pub struct Rindex {
    pub disk: Disk,
    pub offset: u64,
    pub header: RindexHeader,
    pub geometry: Geometry,
    /// The whole index area.
    pub data: crate::io::AlignedBuf,
}

impl Rindex {
    pub fn max_resources(&self) -> u32 {
        match self.header.max_resources {
            0 => self.geometry.max_resources(),
            n => n,
        }
    }

    /// Offset of the resource lease that entry `i` describes.
    pub fn res_offset(&self, i: u64) -> u64 {
        let a = self.geometry.align_size as u64;
        self.offset + 2 * a + i * a
    }

    /// Entry number for a resource lease offset, if it is one of this index's.
    pub fn entry_for_offset(&self, res_offset: u64) -> Result<u64> {
        let a = self.geometry.align_size as u64;
        let first = self.offset + 2 * a;
        if !res_offset.is_multiple_of(a)
            || res_offset < first
            || (res_offset - first) / a >= self.max_resources() as u64
        {
            return Err(DirectError::RindexOffset(format!(
                "offset {res_offset} is not a resource lease slot of this index (slots start at {first}, every {a} bytes, {} of them)",
                self.max_resources()
            )));
        }
        Ok((res_offset - first) / a)
    }

    /// Byte offset of entry `i` inside the index area.
    pub fn entry_pos(&self, i: u64) -> usize {
        self.geometry.sector_size as usize + i as usize * RINDEX_ENTRY_SIZE
    }

    pub fn entry(&self, i: u64) -> RindexEntry {
        RindexEntry::decode(&self.data[self.entry_pos(i)..]).expect("entry inside index")
    }

    pub fn entries(&self) -> impl Iterator<Item = (u64, RindexEntry)> + '_ {
        (0..self.max_resources() as u64).map(|i| (i, self.entry(i)))
    }
}

/// Reads and checks the index header (magic, version, lockspace, offset),
/// then the whole index area.
pub fn open_rindex(rx: &RindexArg, opts: &DirectOpts) -> Result<Rindex> {
    let disk = Disk::open(rx.disk.path.as_ref())?;
    let off = rx.disk.offset;
    let head = disk.read(off, 4096.max(disk.device_sector as usize), opts.timeout())?;
    let header = RindexHeader::decode(&head).expect("a sector holds the header");
    header
        .verify(Some(&rx.lockspace), off)
        .map_err(|e| record_err(&disk, off, e))?;
    let geometry = header.geometry().expect("verified");
    let data = disk.read(off, geometry.align_size as usize, opts.timeout())?;
    Ok(Rindex {
        disk,
        offset: off,
        header,
        geometry,
        data,
    })
}

/// `format`: a header with no entries, and the index's own lease.
pub fn format(rx: &RindexArg, opts: &DirectOpts) -> Result<()> {
    let disk = Disk::open(rx.disk.path.as_ref())?;
    let (g, _) = init_geometry(opts, &disk)?;
    disk.check_sector_size(g.sector_size)?;
    let header = RindexHeader {
        magic: ondisk::RINDEX_DISK_MAGIC,
        version: ondisk::RINDEX_DISK_VERSION_MAJOR | ondisk::RINDEX_DISK_VERSION_MINOR,
        flags: rindex_flag_from_align(g.align_size),
        sector_size: g.sector_size,
        max_resources: DEFAULT_MAX_RESOURCES.min(g.max_resources()),
        unused: 0,
        rx_offset: rx.disk.offset,
        lockspace_name: rx.lockspace,
    };
    let a = g.align_size as u64;
    let area = Area::new(&disk, rx.disk.offset, 2 * a, WRITE_INIT_IO_TIMEOUT)?;
    let mut buf = vec![0u8; g.align_size as usize];
    let hb = header.encode();
    buf[..hb.len()].copy_from_slice(&hb);
    area.write(0, &buf)?;

    // The rindex lease: an ordinary resource lease in the next area, with
    // sizes from the index and as many hosts as the geometry holds.
    let lease = ResourceArg {
        lockspace: rx.lockspace,
        name: Name::new(RINDEX_LEASE_NAME).expect("short name"),
        disks: vec![DiskArg {
            path: rx.disk.path.clone(),
            offset: rx.disk.offset + a,
        }],
        lver: None,
        shared: false,
    };
    let mut lr = LeaderRecord {
        magic: ondisk::PAXOS_DISK_MAGIC,
        version: ondisk::PAXOS_DISK_VERSION_MAJOR | ondisk::PAXOS_DISK_VERSION_MINOR,
        flags: leader_flag_from_align(g.align_size),
        sector_size: g.sector_size,
        num_hosts: g.max_hosts() as u64,
        max_hosts: g.max_hosts() as u64,
        space_name: lease.lockspace,
        resource_name: lease.name,
        ..Default::default()
    };
    buf.fill(0);
    let lb = lr.seal();
    buf[..lb.len()].copy_from_slice(&lb);
    let rr = ondisk::RequestRecord::fresh().encode();
    let ss = g.sector_size as usize;
    buf[ss..ss + rr.len()].copy_from_slice(&rr);
    area.write(a, &buf)?;
    Ok(())
}

/// `lookup`: with no entry, the first free slot's offset; with a name, its
/// offset; with an offset, the name recorded there (and with both, an error
/// if they differ). Returns (name, offset).
pub fn lookup(rx: &RindexArg, name: &Name, offset: u64, opts: &DirectOpts) -> Result<(Name, u64)> {
    let ri = open_rindex(rx, opts)?;
    if offset != 0 && !offset.is_multiple_of(ri.geometry.align_size as u64) {
        return Err(DirectError::RindexOffset(format!(
            "offset {offset} is not a multiple of the index's align size {}",
            ri.geometry.align_size
        )));
    }
    match (name.is_empty(), offset) {
        (true, 0) => ri
            .entries()
            .find(|(_, e)| e.is_free())
            .map(|(i, _)| (Name::default(), ri.res_offset(i)))
            .ok_or_else(|| DirectError::NotFound("the resource index has no free entry".into())),
        (false, 0) => ri
            .entries()
            .find(|(_, e)| !e.name.is_empty() && e.name.same_as(name))
            .map(|(i, _)| (*name, ri.res_offset(i)))
            .ok_or_else(|| {
                DirectError::NotFound(format!("no resource named {name:?} in the index"))
            }),
        (true, off) => {
            let i = ri.entry_for_offset(off)?;
            Ok((ri.entry(i).name, off))
        }
        (false, off) => {
            let i = ri.entry_for_offset(off)?;
            let e = ri.entry(i);
            if !e.name.same_as(name) {
                return Err(DirectError::RindexDiff(format!(
                    "the index records {:?} at offset {off}, not {name:?}",
                    e.name.to_string_lossy()
                )));
            }
            Ok((e.name, off))
        }
    }
}

/// `update`: add (name and offset) or, with `remove`, clear (offset) one
/// entry, rewriting only the sector that holds it.
pub fn update(
    rx: &RindexArg,
    name: &Name,
    offset: u64,
    remove: bool,
    opts: &DirectOpts,
) -> Result<(Name, u64)> {
    let ri = open_rindex(rx, opts)?;
    if offset != 0 && !offset.is_multiple_of(ri.geometry.align_size as u64) {
        return Err(DirectError::RindexOffset(format!(
            "offset {offset} is not a multiple of the index's align size {}",
            ri.geometry.align_size
        )));
    }
    if offset == 0 || (!remove && name.is_empty()) {
        return Err(DirectError::Invalid(
            "update needs -e <resource_name>:<offset> to add, or -e :<offset> with -z 1 to remove"
                .into(),
        ));
    }
    let i = ri.entry_for_offset(offset)?;
    let entry = if remove {
        RindexEntry::default()
    } else {
        RindexEntry {
            res_offset: offset,
            name: *name,
            ..Default::default()
        }
    };
    let ss = ri.geometry.sector_size as usize;
    let pos = ri.entry_pos(i);
    let sector_start = pos / ss * ss;
    let mut sector = ri.data[sector_start..sector_start + ss].to_vec();
    let eb = entry.encode();
    sector[pos - sector_start..pos - sector_start + eb.len()].copy_from_slice(&eb);
    let area = Area::new(
        &ri.disk,
        ri.offset,
        ri.geometry.align_size as u64,
        opts.timeout(),
    )?;
    area.write(sector_start as u64, &sector)?;
    Ok(if remove {
        (Name::default(), 0)
    } else {
        (*name, offset)
    })
}

/// `rebuild`: clears every entry, then records each slot that holds a
/// resource leader, stopping at the end of the device.
pub fn rebuild(rx: &RindexArg, opts: &DirectOpts) -> Result<usize> {
    let ri = open_rindex(rx, opts)?;
    let ss = ri.geometry.sector_size as usize;
    let mut data = ri.data.to_vec();
    data[ss..].fill(0);
    let mut found = 0;
    for i in 0..ri.max_resources() as u64 {
        let off = ri.res_offset(i);
        let buf = match ri.disk.read(off, 4096.max(ss), opts.timeout()) {
            Ok(b) => b,
            Err(IoError::Short { .. }) => break,
            Err(_) => continue,
        };
        let lr = LeaderRecord::decode(&buf).expect("a sector holds a leader");
        if lr.magic != ondisk::PAXOS_DISK_MAGIC {
            continue;
        }
        let e = RindexEntry {
            res_offset: off,
            name: lr.resource_name,
            ..Default::default()
        };
        let pos = ri.entry_pos(i);
        data[pos..pos + RINDEX_ENTRY_SIZE].copy_from_slice(&e.encode());
        found += 1;
    }
    Area::new(
        &ri.disk,
        ri.offset,
        ri.geometry.align_size as u64,
        opts.timeout(),
    )?
    .write(0, &data)?;
    Ok(found)
}
