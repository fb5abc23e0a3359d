//! sanlock's on-disk records, byte for byte: leader records (delta and
//! paxos), request records, paxos dblocks with their mode blocks, and the
//! resource index. Everything is little-endian at fixed offsets, encoded
//! field by field (never by transmuting a struct).

pub mod crc;
pub mod dblock;
pub mod leader;
pub mod name;
pub mod request;
pub mod rindex;

pub use crc::sanlock_crc32c;
pub use dblock::{ModeBlock, PaxosDblock};
pub use leader::LeaderRecord;
pub use name::{NAME_ID_SIZE, Name, NameTooLong};
pub use request::RequestRecord;
pub use rindex::{RindexEntry, RindexHeader};

pub const DELTA_DISK_MAGIC: u32 = 0x1221_2010;
pub const DELTA_DISK_VERSION_MAJOR: u32 = 0x0003_0000;
pub const DELTA_DISK_VERSION_MINOR: u32 = 0x0000_0004;
pub const PAXOS_DISK_MAGIC: u32 = 0x0615_2010;
/// A paxos lease area written with `init -z`: present but deliberately invalid.
pub const PAXOS_DISK_CLEAR: u32 = 0x1128_2016;
pub const PAXOS_DISK_VERSION_MAJOR: u32 = 0x0006_0000;
pub const PAXOS_DISK_VERSION_MINOR: u32 = 0x0000_0004;
pub const REQ_DISK_MAGIC: u32 = 0x0829_2011;
pub const REQ_DISK_VERSION_MAJOR: u32 = 0x0001_0000;
pub const REQ_DISK_VERSION_MINOR: u32 = 0x0000_0001;
pub const RINDEX_DISK_MAGIC: u32 = 0x0104_2018;
pub const RINDEX_DISK_VERSION_MAJOR: u32 = 0x0001_0000;
pub const RINDEX_DISK_VERSION_MINOR: u32 = 0x0000_0002;
/// vdsm's xleases index metadata block.
pub const XLEASES_INDEX_MAGIC: u32 = 0x1215_2016;

/// The leader uses the first 256 bytes of a sector; in a delta lease the
/// last 256 bytes of that area hold the host_id request bitmap.
pub const LEADER_RECORD_MAX: usize = 256;
pub const HOSTID_BITMAP_OFFSET: usize = 256;
pub const HOSTID_BITMAP_SIZE: usize = 256;

/// Which record a piece of bytes was expected to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RecordKind {
    DeltaLeader,
    PaxosLeader,
    Request,
    Dblock,
    RindexHeader,
    RindexEntry,
    ModeBlock,
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordKind::DeltaLeader => "a delta lease (lockspace) leader record",
            RecordKind::PaxosLeader => "a paxos lease (resource) leader record",
            RecordKind::Request => "a paxos request record",
            RecordKind::Dblock => "a paxos dblock",
            RecordKind::RindexHeader => "a resource index header",
            RecordKind::RindexEntry => "a resource index entry",
            RecordKind::ModeBlock => "a mode block",
        })
    }
}

/// What a magic number says the bytes are, for error messages.
pub fn describe_magic(magic: u32) -> &'static str {
    match magic {
        0 => "nothing (zeroes)",
        DELTA_DISK_MAGIC => "a delta lease (lockspace) leader record",
        PAXOS_DISK_MAGIC => "a paxos lease (resource) leader record",
        PAXOS_DISK_CLEAR => "a paxos lease cleared with init -z",
        REQ_DISK_MAGIC => "a paxos request record",
        RINDEX_DISK_MAGIC => "a resource index header",
        XLEASES_INDEX_MAGIC => "a vdsm xleases index",
        _ => "no sanlock record (unknown magic)",
    }
}

/// Why bytes are not the valid record they were expected to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{kind} needs {need} bytes, only {got} were given")]
    Short {
        kind: RecordKind,
        need: usize,
        got: usize,
    },
    #[error(
        "no magic number where {kind} was expected: the area was never initialised, or was wiped"
    )]
    NoMagic { kind: RecordKind },
    #[error("found {} (magic {found:#010x}) where {kind} was expected", describe_magic(*found))]
    ForeignMagic { kind: RecordKind, found: u32 },
    #[error("{kind} has major version {found:#010x}; hactl reads major version {supported:#010x}")]
    WrongVersion {
        kind: RecordKind,
        found: u32,
        supported: u32,
    },
    #[error(
        "{kind} has a bad checksum (stored {stored:#x}, computed {computed:#x}): damaged, or not written by sanlock"
    )]
    BadChecksum {
        kind: RecordKind,
        stored: u32,
        computed: u32,
    },
    #[error("{kind} says sector_size {found}; only 512 and 4096 exist")]
    WrongSectorSize { kind: RecordKind, found: u32 },
    #[error("{kind} belongs to lockspace {found:?}, not {expected:?}")]
    WrongLockspace {
        kind: RecordKind,
        found: String,
        expected: String,
    },
    #[error("{kind} belongs to resource {found:?}, not {expected:?}")]
    WrongResource {
        kind: RecordKind,
        found: String,
        expected: String,
    },
    #[error("the lease has num_hosts {num_hosts}, too small for host_id {host_id}")]
    NumHosts { num_hosts: u64, host_id: u64 },
    #[error("{kind}: {source}")]
    NameTooLong {
        kind: RecordKind,
        source: NameTooLong,
    },
    #[error("{kind} says rindex offset {found}, but it was read at offset {expected}")]
    WrongOffset {
        kind: RecordKind,
        found: u64,
        expected: u64,
    },
}

impl DecodeError {
    /// The error number sanlock returns for the same condition.
    pub fn sanlk_rv(&self) -> i32 {
        use DecodeError::*;
        let rindex = matches!(
            self,
            NoMagic {
                kind: RecordKind::RindexHeader
            } | ForeignMagic {
                kind: RecordKind::RindexHeader,
                ..
            } | WrongVersion {
                kind: RecordKind::RindexHeader,
                ..
            } | WrongLockspace {
                kind: RecordKind::RindexHeader,
                ..
            }
        );
        if rindex {
            return match self {
                WrongVersion { .. } => crate::rv::SANLK_RINDEX_VERSION,
                WrongLockspace { .. } => crate::rv::SANLK_RINDEX_LOCKSPACE,
                _ => crate::rv::SANLK_RINDEX_MAGIC,
            };
        }
        match self {
            Short { .. } => -libc::EMSGSIZE,
            NoMagic { .. } | ForeignMagic { .. } => crate::rv::SANLK_LEADER_MAGIC,
            WrongVersion { .. } => crate::rv::SANLK_LEADER_VERSION,
            BadChecksum {
                kind: RecordKind::Dblock,
                ..
            } => crate::rv::SANLK_DBLOCK_CHECKSUM,
            BadChecksum { .. } => crate::rv::SANLK_LEADER_CHECKSUM,
            WrongSectorSize { .. } => crate::rv::SANLK_LEADER_SECTORSIZE,
            WrongLockspace { .. } => crate::rv::SANLK_LEADER_LOCKSPACE,
            WrongResource { .. } => crate::rv::SANLK_LEADER_RESOURCE,
            NumHosts { .. } => crate::rv::SANLK_LEADER_NUMHOSTS,
            NameTooLong { .. } => -libc::ENAMETOOLONG,
            WrongOffset { .. } => crate::rv::SANLK_RINDEX_OFFSET,
        }
    }
}

/// Little-endian field access at fixed offsets.
pub(crate) mod le {
    pub fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
    }
    pub fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    pub fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }
    pub fn put_u16(b: &mut [u8], o: usize, v: u16) {
        b[o..o + 2].copy_from_slice(&v.to_le_bytes());
    }
    pub fn put_u32(b: &mut [u8], o: usize, v: u32) {
        b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub fn put_u64(b: &mut [u8], o: usize, v: u64) {
        b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    pub fn name_at(b: &[u8], o: usize) -> super::Name {
        super::Name(b[o..o + super::NAME_ID_SIZE].try_into().unwrap())
    }
    pub fn put_name(b: &mut [u8], o: usize, n: &super::Name) {
        b[o..o + super::NAME_ID_SIZE].copy_from_slice(&n.0);
    }
}

pub(crate) fn need(kind: RecordKind, b: &[u8], n: usize) -> Result<(), DecodeError> {
    if b.len() < n {
        Err(DecodeError::Short {
            kind,
            need: n,
            got: b.len(),
        })
    } else {
        Ok(())
    }
}

/// Checks a magic number: zero, another sanlock record, or unknown.
pub(crate) fn check_magic(kind: RecordKind, found: u32, expected: u32) -> Result<(), DecodeError> {
    if found == expected {
        Ok(())
    } else if found == 0 {
        Err(DecodeError::NoMagic { kind })
    } else {
        Err(DecodeError::ForeignMagic { kind, found })
    }
}
