//! `struct leader_record`: the first 200 bytes of a delta lease sector (one
//! per host_id) and of the first sector of a paxos lease.

use super::le::*;
use super::*;

/// Encoded size of a leader record.
pub const LEADER_SIZE: usize = 200;
/// The checksum covers everything before the checksum field.
pub const LEADER_CHECKSUM_LEN: usize = 168;
/// Bytes compared when counting repeated leaders (everything before timestamp).
pub const LEADER_COMPARE_LEN: usize = 152;

/// A leader record as sanlock lays it out. Field names are sanlock's; the
/// `write_*` fields are printed as `extra1..3` for lockspaces.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LeaderRecord {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub sector_size: u32,
    pub num_hosts: u64,
    pub max_hosts: u64,
    pub owner_id: u64,
    pub owner_generation: u64,
    pub lver: u64,
    pub space_name: Name,
    pub resource_name: Name,
    pub timestamp: u64,
    pub unused1: u64,
    pub checksum: u32,
    pub unused2: u16,
    pub io_timeout: u16,
    pub write_id: u64,
    pub write_generation: u64,
    pub write_timestamp: u64,
}

impl LeaderRecord {
    /// Reads the fields; fails only if fewer than 200 bytes are given.
    /// Use [`LeaderRecord::verify_delta`] / [`LeaderRecord::verify_paxos`]
    /// to decide whether the record is valid.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        need(RecordKind::DeltaLeader, b, LEADER_SIZE)?;
        Ok(LeaderRecord {
            magic: u32_at(b, 0),
            version: u32_at(b, 4),
            flags: u32_at(b, 8),
            sector_size: u32_at(b, 12),
            num_hosts: u64_at(b, 16),
            max_hosts: u64_at(b, 24),
            owner_id: u64_at(b, 32),
            owner_generation: u64_at(b, 40),
            lver: u64_at(b, 48),
            space_name: name_at(b, 56),
            resource_name: name_at(b, 104),
            timestamp: u64_at(b, 152),
            unused1: u64_at(b, 160),
            checksum: u32_at(b, 168),
            unused2: u16_at(b, 172),
            io_timeout: u16_at(b, 174),
            write_id: u64_at(b, 176),
            write_generation: u64_at(b, 184),
            write_timestamp: u64_at(b, 192),
        })
    }

    /// Encodes every field as it is, including the stored checksum.
    pub fn encode(&self) -> [u8; LEADER_SIZE] {
        let mut b = [0u8; LEADER_SIZE];
        put_u32(&mut b, 0, self.magic);
        put_u32(&mut b, 4, self.version);
        put_u32(&mut b, 8, self.flags);
        put_u32(&mut b, 12, self.sector_size);
        put_u64(&mut b, 16, self.num_hosts);
        put_u64(&mut b, 24, self.max_hosts);
        put_u64(&mut b, 32, self.owner_id);
        put_u64(&mut b, 40, self.owner_generation);
        put_u64(&mut b, 48, self.lver);
        put_name(&mut b, 56, &self.space_name);
        put_name(&mut b, 104, &self.resource_name);
        put_u64(&mut b, 152, self.timestamp);
        put_u64(&mut b, 160, self.unused1);
        put_u32(&mut b, 168, self.checksum);
        put_u16(&mut b, 172, self.unused2);
        put_u16(&mut b, 174, self.io_timeout);
        put_u64(&mut b, 176, self.write_id);
        put_u64(&mut b, 184, self.write_generation);
        put_u64(&mut b, 192, self.write_timestamp);
        b
    }

    /// The checksum sanlock would compute for these fields.
    pub fn computed_checksum(&self) -> u32 {
        sanlock_crc32c(&self.encode()[..LEADER_CHECKSUM_LEN])
    }

    /// Sets the checksum from the other fields and returns the bytes to write.
    pub fn seal(&mut self) -> [u8; LEADER_SIZE] {
        self.checksum = self.computed_checksum();
        self.encode()
    }

    fn check_common(&self, kind: RecordKind, magic: u32, major: u32) -> Result<(), DecodeError> {
        check_magic(kind, self.magic, magic)?;
        if self.version & 0xFFFF_0000 != major {
            return Err(DecodeError::WrongVersion {
                kind,
                found: self.version,
                supported: major,
            });
        }
        Ok(())
    }

    fn check_checksum_and_sector(&self, kind: RecordKind) -> Result<(), DecodeError> {
        let computed = self.computed_checksum();
        if self.checksum != computed {
            return Err(DecodeError::BadChecksum {
                kind,
                stored: self.checksum,
                computed,
            });
        }
        if self.sector_size != 512 && self.sector_size != 4096 {
            return Err(DecodeError::WrongSectorSize {
                kind,
                found: self.sector_size,
            });
        }
        Ok(())
    }

    /// A lockspace leader as sanlock's delta `verify_leader` checks it, in
    /// its order: magic, major version, lockspace name, checksum (then,
    /// beyond sanlock, a sector size that exists).
    pub fn verify_delta(&self, space_name: Option<&Name>) -> Result<(), DecodeError> {
        let kind = RecordKind::DeltaLeader;
        self.check_common(kind, DELTA_DISK_MAGIC, DELTA_DISK_VERSION_MAJOR)?;
        if let Some(s) = space_name
            && !self.space_name.same_as(s)
        {
            return Err(DecodeError::WrongLockspace {
                kind,
                found: self.space_name.to_string_lossy(),
                expected: s.to_string_lossy(),
            });
        }
        self.check_checksum_and_sector(kind)
    }

    /// A resource leader as sanlock's paxos `verify_leader` checks it:
    /// cleared/magic, major version, lockspace, resource, num_hosts, checksum.
    pub fn verify_paxos(
        &self,
        space_name: Option<&Name>,
        resource_name: Option<&Name>,
        host_id: u64,
    ) -> Result<(), DecodeError> {
        let kind = RecordKind::PaxosLeader;
        self.check_common(kind, PAXOS_DISK_MAGIC, PAXOS_DISK_VERSION_MAJOR)?;
        if let Some(s) = space_name
            && !self.space_name.same_as(s)
        {
            return Err(DecodeError::WrongLockspace {
                kind,
                found: self.space_name.to_string_lossy(),
                expected: s.to_string_lossy(),
            });
        }
        if let Some(r) = resource_name
            && !self.resource_name.same_as(r)
        {
            return Err(DecodeError::WrongResource {
                kind,
                found: self.resource_name.to_string_lossy(),
                expected: r.to_string_lossy(),
            });
        }
        if self.num_hosts < host_id {
            return Err(DecodeError::NumHosts {
                num_hosts: self.num_hosts,
                host_id,
            });
        }
        self.check_checksum_and_sector(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sector 0 of `sanlock direct init -s LS:0:file:0` on a 512-byte file,
    /// as the real sanlock 3.8.5 wrote it (checksum 0xb0f174c0).
    #[test]
    fn fresh_lockspace_leader_matches_sanlock() {
        let mut lr = LeaderRecord {
            magic: DELTA_DISK_MAGIC,
            version: DELTA_DISK_VERSION_MAJOR | DELTA_DISK_VERSION_MINOR,
            flags: crate::geometry::LFL_ALIGN_1M,
            sector_size: 512,
            max_hosts: 1,
            io_timeout: 10,
            space_name: Name::new("LS").unwrap(),
            ..Default::default()
        };
        let b = lr.seal();
        assert_eq!(lr.checksum, 0xb0f1_74c0);
        assert_eq!(&b[0..4], &[0x10, 0x20, 0x21, 0x12]);
        assert_eq!(&b[168..176], &[0xc0, 0x74, 0xf1, 0xb0, 0, 0, 0x0a, 0]);
        assert!(lr.verify_delta(Some(&Name::new("LS").unwrap())).is_ok());
    }

    #[test]
    fn one_flipped_bit_is_a_bad_checksum() {
        let mut lr = LeaderRecord {
            magic: PAXOS_DISK_MAGIC,
            version: PAXOS_DISK_VERSION_MAJOR | PAXOS_DISK_VERSION_MINOR,
            sector_size: 512,
            num_hosts: 2000,
            ..Default::default()
        };
        let mut b = lr.seal();
        b[40] ^= 1;
        let back = LeaderRecord::decode(&b).unwrap();
        let e = back.verify_paxos(None, None, 0).unwrap_err();
        assert!(matches!(e, DecodeError::BadChecksum { .. }), "{e}");
        assert_eq!(e.sanlk_rv(), crate::rv::SANLK_LEADER_CHECKSUM);
    }

    #[test]
    fn foreign_and_missing_magic() {
        let lr = LeaderRecord {
            magic: RINDEX_DISK_MAGIC,
            ..Default::default()
        };
        let e = lr.verify_delta(None).unwrap_err();
        assert!(e.to_string().contains("resource index header"), "{e}");
        let lr = LeaderRecord::default();
        assert!(matches!(
            lr.verify_delta(None),
            Err(DecodeError::NoMagic { .. })
        ));
    }
}
