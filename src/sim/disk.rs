//! The shared disk: one lockspace area and one resource lease area, 512-byte
//! sectors. A write that completes lands whole. A write interrupted (its
//! host crashed, or the storage failed it with EIO) lands partly
//! ([`Landing`]): its first sectors whole, then possibly one sector torn —
//! part new bytes, part old, so its checksum no longer matches — and none
//! after. A multi-sector read may see each sector as it was when the read
//! started or when it ended.

use crate::daemon::core::{Io, IoFailure, IoOp, IoResult, Layout, Storage, Target};
use crate::delta::lease_sector;
use crate::ondisk::{self, LeaderRecord, Name};
use crate::paxos::leader_sector;

pub const SS: usize = 512;
/// Host ids 1..=MAX_HOSTS (the lockspace area holds one sector each).
pub const MAX_HOSTS: usize = 4;
/// Sector offsets of the two areas.
pub const LS_OFF: usize = 0;
pub const LS_SECTORS: usize = MAX_HOSTS;
pub const RES_OFF: usize = LS_SECTORS;
/// Leader, request record, one dblock per host.
pub const RES_SECTORS: usize = 2 + MAX_HOSTS;
pub const DISK_SECTORS: usize = RES_OFF + RES_SECTORS;

/// The lockspace area's shape as the daemon's core sees it.
pub fn lockspace_layout() -> Layout {
    Layout {
        sector_size: SS,
        align_size: (LS_SECTORS * SS) as u64,
        max_hosts: MAX_HOSTS,
    }
}

/// A resource lease area's shape (leader, request, one dblock per host).
pub fn lease_layout() -> Layout {
    Layout {
        sector_size: SS,
        align_size: (RES_SECTORS * SS) as u64,
        max_hosts: MAX_HOSTS,
    }
}

pub fn space_name() -> Name {
    Name::new("LS").unwrap()
}

pub fn resource_name() -> Name {
    Name::new("R").unwrap()
}

/// How much of an interrupted write reached the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landing {
    /// Sectors from the start of the write that landed whole.
    pub whole: usize,
    /// The next sector is torn at byte `cut`: new bytes before it (`true`)
    /// or after it (`false`), old ones on the other side.
    pub torn: Option<(usize, bool)>,
}

impl Landing {
    pub const NOTHING: Landing = Landing {
        whole: 0,
        torn: None,
    };
}

#[derive(Clone, Debug)]
pub struct SimDisk {
    pub bytes: Vec<u8>,
}

impl SimDisk {
    /// Both areas as `write_lockspace` and `write_resource` leave them.
    pub fn formatted(io_timeout: u64) -> Self {
        let mut bytes = vec![0u8; DISK_SECTORS * SS];
        for i in 0..LS_SECTORS {
            let mut lr = LeaderRecord {
                magic: ondisk::DELTA_DISK_MAGIC,
                version: ondisk::DELTA_DISK_VERSION_MAJOR | ondisk::DELTA_DISK_VERSION_MINOR,
                flags: 0x10,
                sector_size: SS as u32,
                max_hosts: 1,
                io_timeout: io_timeout as u16,
                space_name: space_name(),
                ..Default::default()
            };
            let s = lease_sector(&mut lr, SS, None);
            bytes[(LS_OFF + i) * SS..(LS_OFF + i + 1) * SS].copy_from_slice(&s);
        }
        let mut lr = LeaderRecord {
            magic: ondisk::PAXOS_DISK_MAGIC,
            version: ondisk::PAXOS_DISK_VERSION_MAJOR | ondisk::PAXOS_DISK_VERSION_MINOR,
            flags: 0x10,
            sector_size: SS as u32,
            num_hosts: MAX_HOSTS as u64,
            max_hosts: 2000,
            space_name: space_name(),
            resource_name: resource_name(),
            ..Default::default()
        };
        let s = leader_sector(&mut lr, SS);
        bytes[RES_OFF * SS..(RES_OFF + 1) * SS].copy_from_slice(&s);
        SimDisk { bytes }
    }

    /// The lockspace area at sector `lockspace` and the lease area at
    /// sector `lease`, as the core addresses them.
    pub fn areas(&mut self, lockspace: usize, lease: usize) -> SimAreas<'_> {
        SimAreas {
            disk: self,
            lockspace,
            lease,
        }
    }

    pub fn read(&self, sector: usize, count: usize) -> Vec<u8> {
        self.bytes[sector * SS..(sector + count) * SS].to_vec()
    }

    pub fn write_sector(&mut self, sector: usize, data: &[u8]) {
        self.bytes[sector * SS..(sector + 1) * SS].copy_from_slice(&data[..SS]);
    }

    /// What an interrupted write of `data` at `sector` leaves behind.
    pub fn land_partly(&mut self, sector: usize, data: &[u8], l: Landing) {
        let count = data.len() / SS;
        let whole = l.whole.min(count);
        self.bytes[sector * SS..(sector + whole) * SS].copy_from_slice(&data[..whole * SS]);
        if let Some((cut, new_first)) = l.torn
            && whole < count
        {
            let at = (sector + whole) * SS;
            let (old, new) = (
                &mut self.bytes[at..at + SS],
                &data[whole * SS..(whole + 1) * SS],
            );
            let cut = cut.min(SS);
            if new_first {
                old[..cut].copy_from_slice(&new[..cut]);
            } else {
                old[cut..].copy_from_slice(&new[cut..]);
            }
        }
    }
}

/// The disk as one host's core sees it: I/O lands at once, whole (the
/// fault model decides before and after whether and how it does).
pub struct SimAreas<'a> {
    disk: &'a mut SimDisk,
    lockspace: usize,
    lease: usize,
}

impl SimAreas<'_> {
    /// The first sector an I/O touches and how many, if it stays on the
    /// disk and inside its area.
    pub fn sectors(&self, io: &Io) -> Option<(usize, usize)> {
        let base = match io.target {
            Target::Lockspace => self.lockspace,
            Target::Lease => self.lease,
        };
        let (off, len) = (io.offset as usize, io.len());
        if io.offset + len as u64 > io.area_len || off % SS != 0 || len % SS != 0 {
            return None;
        }
        let first = base + off / SS;
        let count = len / SS;
        (first + count <= self.disk.bytes.len() / SS).then_some((first, count))
    }
}

impl Storage for SimAreas<'_> {
    fn perform(&mut self, io: &Io) -> IoResult {
        let Some((first, count)) = self.sectors(io) else {
            return Err(IoFailure::code(-libc::EIO));
        };
        match &io.op {
            IoOp::Read { .. } => Ok(self.disk.read(first, count).into()),
            IoOp::Write { data } => {
                self.disk.bytes[first * SS..(first + count) * SS].copy_from_slice(data);
                Ok(Vec::new().into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ondisk::PaxosDblock;
    use crate::paxos::dblock_sector;

    #[test]
    fn an_interrupted_write_lands_whole_sectors_then_one_torn() {
        let mut d = SimDisk::formatted(1);
        let before = d.bytes.clone();
        // Three dblock sectors, each with a valid checksum.
        let first = RES_OFF + 2;
        let mut data = Vec::new();
        for i in 0..3 {
            let mut b = PaxosDblock {
                mbal: 10 + i,
                bal: 10 + i,
                inp: 1,
                inp2: 7,
                inp3: 99,
                lver: 5,
                ..Default::default()
            };
            data.extend(dblock_sector(&mut b, SS));
        }
        let dblock = |d: &SimDisk, s: usize| PaxosDblock::decode(&d.read(s, 1)).unwrap();
        d.land_partly(first, &data, Landing::NOTHING);
        assert_eq!(d.bytes, before);
        d.land_partly(
            first,
            &data,
            Landing {
                whole: 1,
                torn: Some((20, true)),
            },
        );
        assert_eq!(d.read(first, 1), data[..SS]);
        assert!(dblock(&d, first).verify().is_ok());
        // New mbal and bal, the rest old (zero): the checksum gives it away.
        let torn = dblock(&d, first + 1);
        assert_eq!((torn.mbal, torn.bal, torn.lver), (11, 11, 0));
        assert!(torn.verify().is_err());
        assert_eq!(
            d.read(first + 2, 1),
            before[(first + 2) * SS..(first + 3) * SS]
        );
        // Old bytes first, new after the cut.
        d.land_partly(
            first + 2,
            &data[2 * SS..],
            Landing {
                whole: 0,
                torn: Some((8, false)),
            },
        );
        let torn = dblock(&d, first + 2);
        assert_eq!((torn.mbal, torn.bal, torn.lver), (0, 12, 5));
        assert!(torn.verify().is_err());
    }
}
