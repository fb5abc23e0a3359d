//! `struct request_record`: the second sector of a paxos lease, where other
//! hosts ask the owner to release (`sanlock client request`).

use super::le::*;
use super::*;

/// Encoded size (the C struct is 24 bytes with its tail padding).
pub const REQUEST_SIZE: usize = 24;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RequestRecord {
    pub magic: u32,
    pub version: u32,
    pub lver: u64,
    pub force_mode: u32,
}

impl RequestRecord {
    /// The record `init -r` writes: magic and version, no request.
    pub fn fresh() -> Self {
        RequestRecord {
            magic: REQ_DISK_MAGIC,
            version: REQ_DISK_VERSION_MAJOR | REQ_DISK_VERSION_MINOR,
            lver: 0,
            force_mode: 0,
        }
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        need(RecordKind::Request, b, REQUEST_SIZE)?;
        Ok(RequestRecord {
            magic: u32_at(b, 0),
            version: u32_at(b, 4),
            lver: u64_at(b, 8),
            force_mode: u32_at(b, 16),
        })
    }

    pub fn encode(&self) -> [u8; REQUEST_SIZE] {
        let mut b = [0u8; REQUEST_SIZE];
        put_u32(&mut b, 0, self.magic);
        put_u32(&mut b, 4, self.version);
        put_u64(&mut b, 8, self.lver);
        put_u32(&mut b, 16, self.force_mode);
        b
    }

    pub fn verify(&self) -> Result<(), DecodeError> {
        let kind = RecordKind::Request;
        check_magic(kind, self.magic, REQ_DISK_MAGIC)?;
        if self.version & 0xFFFF_0000 != REQ_DISK_VERSION_MAJOR {
            return Err(DecodeError::WrongVersion {
                kind,
                found: self.version,
                supported: REQ_DISK_VERSION_MAJOR,
            });
        }
        Ok(())
    }
}
