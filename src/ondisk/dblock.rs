//! `struct paxos_dblock` (one per host_id, from the third sector of a paxos
//! lease) and `struct mode_block`, which shares the dblock's sector at
//! offset 128 and marks shared (SH) holders.

use super::le::*;
use super::*;

pub const DBLOCK_SIZE: usize = 56;
/// The dblock checksum covers the six u64 fields before it.
pub const DBLOCK_CHECKSUM_LEN: usize = 48;
pub const DBLOCK_FL_RELEASED: u32 = 0x1;
/// Where the mode block starts inside a dblock sector.
pub const MBLOCK_OFFSET: usize = 128;
pub const MODE_BLOCK_SIZE: usize = 16;
pub const MBLOCK_SHARED: u32 = 0x1;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PaxosDblock {
    pub mbal: u64,
    pub bal: u64,
    /// host_id of the proposed owner
    pub inp: u64,
    /// its generation
    pub inp2: u64,
    /// its delta lease timestamp
    pub inp3: u64,
    pub lver: u64,
    pub checksum: u32,
    pub flags: u32,
}

impl PaxosDblock {
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        need(RecordKind::Dblock, b, DBLOCK_SIZE)?;
        Ok(PaxosDblock {
            mbal: u64_at(b, 0),
            bal: u64_at(b, 8),
            inp: u64_at(b, 16),
            inp2: u64_at(b, 24),
            inp3: u64_at(b, 32),
            lver: u64_at(b, 40),
            checksum: u32_at(b, 48),
            flags: u32_at(b, 52),
        })
    }

    /// The lver field of a dblock sector, without decoding the rest: a
    /// ballot's scan skips most of 2,000 dblocks on it alone.
    pub fn lver_of(sector: &[u8]) -> u64 {
        u64_at(sector, 40)
    }

    pub fn encode(&self) -> [u8; DBLOCK_SIZE] {
        let mut b = [0u8; DBLOCK_SIZE];
        put_u64(&mut b, 0, self.mbal);
        put_u64(&mut b, 8, self.bal);
        put_u64(&mut b, 16, self.inp);
        put_u64(&mut b, 24, self.inp2);
        put_u64(&mut b, 32, self.inp3);
        put_u64(&mut b, 40, self.lver);
        put_u32(&mut b, 48, self.checksum);
        put_u32(&mut b, 52, self.flags);
        b
    }

    pub fn computed_checksum(&self) -> u32 {
        sanlock_crc32c(&self.encode()[..DBLOCK_CHECKSUM_LEN])
    }

    pub fn seal(&mut self) -> [u8; DBLOCK_SIZE] {
        self.checksum = self.computed_checksum();
        self.encode()
    }

    /// Never written (or erased), as sanlock's `verify_dblock` tells it:
    /// checksum, mbal, bal, inp and lver all zero (inp2, inp3 and flags are
    /// not looked at).
    pub fn is_empty(&self) -> bool {
        self.checksum == 0 && self.mbal == 0 && self.bal == 0 && self.inp == 0 && self.lver == 0
    }

    /// An empty dblock is valid as such (sanlock skips the checksum for it);
    /// any other must carry a good one.
    pub fn verify(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            return Ok(());
        }
        let computed = self.computed_checksum();
        if self.checksum != computed {
            return Err(DecodeError::BadChecksum {
                kind: RecordKind::Dblock,
                stored: self.checksum,
                computed,
            });
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ModeBlock {
    pub flags: u32,
    pub generation: u64,
}

impl ModeBlock {
    /// Decodes a mode block from its own 16 bytes (the caller slices from
    /// [`MBLOCK_OFFSET`] of the dblock sector).
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        need(RecordKind::ModeBlock, b, MODE_BLOCK_SIZE)?;
        Ok(ModeBlock {
            flags: u32_at(b, 0),
            generation: u64_at(b, 8),
        })
    }

    pub fn encode(&self) -> [u8; MODE_BLOCK_SIZE] {
        let mut b = [0u8; MODE_BLOCK_SIZE];
        put_u32(&mut b, 0, self.flags);
        put_u64(&mut b, 8, self.generation);
        b
    }

    pub fn is_shared(&self) -> bool {
        self.flags & MBLOCK_SHARED != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sanlock's verify_dblock skips the checksum when checksum, mbal, bal,
    /// inp and lver are zero, whatever inp2, inp3 and flags hold (an input
    /// the dblock fuzz target's old all-zero oracle disagreed on).
    #[test]
    fn empty_as_sanlock_ignores_inp2_inp3_flags() {
        let d = PaxosDblock {
            inp2: 7,
            inp3: 987_951_735_040,
            flags: DBLOCK_FL_RELEASED,
            ..Default::default()
        };
        assert!(d.is_empty());
        assert!(d.verify().is_ok());
        let d = PaxosDblock { lver: 1, ..d };
        assert!(!d.is_empty());
        assert!(matches!(d.verify(), Err(DecodeError::BadChecksum { .. })));
    }
}
