//! The shared disk: one lockspace area and one resource lease area, 512-byte
//! sectors. A single-sector write lands atomically; a multi-sector write
//! lands sector by sector (torn if its writer dies or gives up halfway); a
//! multi-sector read may see each sector as it was when the read started or
//! when it ended.

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

pub fn space_name() -> Name {
    Name::new("LS").unwrap()
}

pub fn resource_name() -> Name {
    Name::new("R").unwrap()
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

    pub fn read(&self, sector: usize, count: usize) -> Vec<u8> {
        self.bytes[sector * SS..(sector + count) * SS].to_vec()
    }

    pub fn write_sector(&mut self, sector: usize, data: &[u8]) {
        self.bytes[sector * SS..(sector + 1) * SS].copy_from_slice(&data[..SS]);
    }
}
