//! Sector size and alignment: the combinations sanlock accepts, the host
//! count and rindex capacity each implies, and the flags that record them.

use std::fmt;

pub const ALIGN_1M: u32 = 1 << 20;
pub const ALIGN_2M: u32 = 2 << 20;
pub const ALIGN_4M: u32 = 4 << 20;
pub const ALIGN_8M: u32 = 8 << 20;

/// `DEFAULT_MAX_HOSTS`: used when no sector/align flags were given.
pub const DEFAULT_MAX_HOSTS: u32 = 2000;

// leader_record.flags
pub const LFL_SHORT_HOLD: u32 = 0x1;
pub const LFL_ALIGN_1M: u32 = 0x10;
pub const LFL_ALIGN_2M: u32 = 0x20;
pub const LFL_ALIGN_4M: u32 = 0x40;
pub const LFL_ALIGN_8M: u32 = 0x80;

// rindex_header.flags
pub const RHF_ALIGN_1M: u32 = 0x1;
pub const RHF_ALIGN_2M: u32 = 0x2;
pub const RHF_ALIGN_4M: u32 = 0x4;
pub const RHF_ALIGN_8M: u32 = 0x8;

/// A valid (sector size, align size) pair: 512/1M, 4K/1M, 4K/2M, 4K/4M, 4K/8M.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Geometry {
    pub sector_size: u32,
    pub align_size: u32,
}

/// A sector/align pair sanlock does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid sector_size/align_size combination ({sector_size}/{align_size}); use one of: 512/1M, 4096/1M, 4096/2M, 4096/4M, 4096/8M"
)]
pub struct BadGeometry {
    pub sector_size: u32,
    pub align_size: u32,
}

impl Geometry {
    pub fn new(sector_size: u32, align_size: u32) -> Result<Self, BadGeometry> {
        let g = Geometry {
            sector_size,
            align_size,
        };
        if g.max_hosts() == 0 {
            return Err(BadGeometry {
                sector_size,
                align_size,
            });
        }
        Ok(g)
    }

    /// What sanlock assumed before align flags existed: 512 meant 1M and
    /// 4K meant 8M.
    pub fn old_default(sector_size: u32) -> Option<Self> {
        match sector_size {
            512 => Some(Geometry {
                sector_size,
                align_size: ALIGN_1M,
            }),
            4096 => Some(Geometry {
                sector_size,
                align_size: ALIGN_8M,
            }),
            _ => None,
        }
    }

    /// Hosts (delta leases) or paxos dblocks that fit in one aligned area.
    pub fn max_hosts(&self) -> u32 {
        match (self.sector_size, self.align_size) {
            (512, ALIGN_1M) => 2000,
            (4096, ALIGN_1M) => 250,
            (4096, ALIGN_2M) => 500,
            (4096, ALIGN_4M) => 1000,
            (4096, ALIGN_8M) => 2000,
            _ => 0,
        }
    }

    /// Upper bound of rindex entries for this geometry.
    pub fn max_resources(&self) -> u32 {
        match (self.sector_size, self.align_size) {
            (4096, ALIGN_2M) => 32000,
            (4096, ALIGN_4M) => 64000,
            (4096, ALIGN_8M) => 128000,
            _ => 16000,
        }
    }

    pub fn sectors_per_area(&self) -> u32 {
        self.align_size / self.sector_size
    }

    /// The geometry a leader record describes: its sector size and align
    /// flag, or the old default when the flag is absent.
    pub fn from_leader(sector_size: u32, flags: u32) -> Option<Self> {
        match align_from_leader_flags(flags) {
            Some(a) => Geometry::new(sector_size, a).ok(),
            None => Geometry::old_default(sector_size),
        }
    }
}

impl fmt::Display for Geometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sector_size, align_str(self.align_size))
    }
}

pub fn align_str(align_size: u32) -> String {
    if align_size.is_multiple_of(ALIGN_1M) && align_size > 0 {
        format!("{}M", align_size / ALIGN_1M)
    } else {
        align_size.to_string()
    }
}

/// Parses `-A`'s value: exactly "1M", "2M", "4M" or "8M" (anything else is
/// ignored by sanlock, i.e. left unset).
pub fn parse_align_arg(s: &str) -> Option<u32> {
    match s {
        "1M" => Some(ALIGN_1M),
        "2M" => Some(ALIGN_2M),
        "4M" => Some(ALIGN_4M),
        "8M" => Some(ALIGN_8M),
        _ => None,
    }
}

pub fn leader_flag_from_align(align_size: u32) -> u32 {
    match align_size {
        ALIGN_1M => LFL_ALIGN_1M,
        ALIGN_2M => LFL_ALIGN_2M,
        ALIGN_4M => LFL_ALIGN_4M,
        ALIGN_8M => LFL_ALIGN_8M,
        _ => 0,
    }
}

/// First align flag set wins, in sanlock's order (1M, 2M, 4M, 8M).
pub fn align_from_leader_flags(flags: u32) -> Option<u32> {
    [
        (LFL_ALIGN_1M, ALIGN_1M),
        (LFL_ALIGN_2M, ALIGN_2M),
        (LFL_ALIGN_4M, ALIGN_4M),
        (LFL_ALIGN_8M, ALIGN_8M),
    ]
    .into_iter()
    .find(|(f, _)| flags & f != 0)
    .map(|(_, a)| a)
}

pub fn rindex_flag_from_align(align_size: u32) -> u32 {
    match align_size {
        ALIGN_1M => RHF_ALIGN_1M,
        ALIGN_2M => RHF_ALIGN_2M,
        ALIGN_4M => RHF_ALIGN_4M,
        ALIGN_8M => RHF_ALIGN_8M,
        _ => 0,
    }
}

pub fn align_from_rindex_flags(flags: u32) -> Option<u32> {
    [
        (RHF_ALIGN_1M, ALIGN_1M),
        (RHF_ALIGN_2M, ALIGN_2M),
        (RHF_ALIGN_4M, ALIGN_4M),
        (RHF_ALIGN_8M, ALIGN_8M),
    ]
    .into_iter()
    .find(|(f, _)| flags & f != 0)
    .map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_combinations_and_hosts() {
        let ok = [
            (512, ALIGN_1M, 2000),
            (4096, ALIGN_1M, 250),
            (4096, ALIGN_2M, 500),
            (4096, ALIGN_4M, 1000),
            (4096, ALIGN_8M, 2000),
        ];
        for (s, a, h) in ok {
            assert_eq!(Geometry::new(s, a).unwrap().max_hosts(), h);
        }
        for (s, a) in [
            (512, ALIGN_2M),
            (512, ALIGN_8M),
            (1024, ALIGN_1M),
            (4096, 3 << 20),
        ] {
            assert!(Geometry::new(s, a).is_err());
        }
    }

    #[test]
    fn leader_flags_round_trip() {
        for a in [ALIGN_1M, ALIGN_2M, ALIGN_4M, ALIGN_8M] {
            assert_eq!(align_from_leader_flags(leader_flag_from_align(a)), Some(a));
            assert_eq!(align_from_rindex_flags(rindex_flag_from_align(a)), Some(a));
        }
        assert_eq!(Geometry::from_leader(4096, 0).unwrap().align_size, ALIGN_8M);
        assert_eq!(Geometry::from_leader(512, 0).unwrap().align_size, ALIGN_1M);
    }
}
