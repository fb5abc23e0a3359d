//! The resource index: a header sector then 64-byte entries, each naming a
//! resource lease and its offset (`struct rindex_header` / `rindex_entry`).

use super::le::*;
use super::*;

pub const RINDEX_HEADER_SIZE: usize = 80;
pub const RINDEX_ENTRY_SIZE: usize = 64;
/// `max_resources` written by `format` when none is asked for.
pub const DEFAULT_MAX_RESOURCES: u32 = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RindexHeader {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub sector_size: u32,
    pub max_resources: u32,
    pub unused: u32,
    /// Where this header itself lives, from the start of the device.
    pub rx_offset: u64,
    pub lockspace_name: Name,
}

impl RindexHeader {
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        need(RecordKind::RindexHeader, b, RINDEX_HEADER_SIZE)?;
        Ok(RindexHeader {
            magic: u32_at(b, 0),
            version: u32_at(b, 4),
            flags: u32_at(b, 8),
            sector_size: u32_at(b, 12),
            max_resources: u32_at(b, 16),
            unused: u32_at(b, 20),
            rx_offset: u64_at(b, 24),
            lockspace_name: name_at(b, 32),
        })
    }

    pub fn encode(&self) -> [u8; RINDEX_HEADER_SIZE] {
        let mut b = [0u8; RINDEX_HEADER_SIZE];
        put_u32(&mut b, 0, self.magic);
        put_u32(&mut b, 4, self.version);
        put_u32(&mut b, 8, self.flags);
        put_u32(&mut b, 12, self.sector_size);
        put_u32(&mut b, 16, self.max_resources);
        put_u32(&mut b, 20, self.unused);
        put_u64(&mut b, 24, self.rx_offset);
        put_name(&mut b, 32, &self.lockspace_name);
        b
    }

    /// sanlock's `read_rindex_header` checks, in its order: magic, major
    /// version, lockspace name, the offset the header records for itself.
    /// The header has no checksum. Beyond sanlock: sector size and align
    /// flag must describe a real geometry, since every offset derives from them.
    pub fn verify(&self, lockspace: Option<&Name>, read_at: u64) -> Result<(), DecodeError> {
        let kind = RecordKind::RindexHeader;
        check_magic(kind, self.magic, RINDEX_DISK_MAGIC)?;
        if self.version & 0xFFFF_0000 != RINDEX_DISK_VERSION_MAJOR {
            return Err(DecodeError::WrongVersion {
                kind,
                found: self.version,
                supported: RINDEX_DISK_VERSION_MAJOR,
            });
        }
        if let Some(ls) = lockspace
            && !self.lockspace_name.same_as(ls)
        {
            return Err(DecodeError::WrongLockspace {
                kind,
                found: self.lockspace_name.to_string_lossy(),
                expected: ls.to_string_lossy(),
            });
        }
        if self.rx_offset != read_at {
            return Err(DecodeError::WrongOffset {
                kind,
                found: self.rx_offset,
                expected: read_at,
            });
        }
        if self.geometry().is_none() {
            return Err(DecodeError::WrongSectorSize {
                kind,
                found: self.sector_size,
            });
        }
        Ok(())
    }

    pub fn geometry(&self) -> Option<crate::geometry::Geometry> {
        let align = crate::geometry::align_from_rindex_flags(self.flags)?;
        crate::geometry::Geometry::new(self.sector_size, align).ok()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RindexEntry {
    pub res_offset: u64,
    pub flags: u32,
    pub unused: u32,
    pub name: Name,
}

impl RindexEntry {
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        need(RecordKind::RindexEntry, b, RINDEX_ENTRY_SIZE)?;
        Ok(RindexEntry {
            res_offset: u64_at(b, 0),
            flags: u32_at(b, 8),
            unused: u32_at(b, 12),
            name: name_at(b, 16),
        })
    }

    pub fn encode(&self) -> [u8; RINDEX_ENTRY_SIZE] {
        let mut b = [0u8; RINDEX_ENTRY_SIZE];
        put_u64(&mut b, 0, self.res_offset);
        put_u32(&mut b, 8, self.flags);
        put_u32(&mut b, 12, self.unused);
        put_name(&mut b, 16, &self.name);
        b
    }

    /// sanlock treats an entry with no offset and no name as free.
    pub fn is_free(&self) -> bool {
        self.res_offset == 0 && self.name.is_empty()
    }
}
