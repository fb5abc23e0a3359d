//! sanlock's checksum: CRC-32C (Castagnoli) seeded with `~1` and with no
//! final inversion (sanlock's `crc32c()` is the raw reflected table update).

/// The checksum sanlock stores in leader records and paxos dblocks.
pub fn sanlock_crc32c(data: &[u8]) -> u32 {
    // The crc32c crate inverts on entry and exit; undo both so the result
    // equals sanlock's raw update from the seed 0xFFFF_FFFE.
    !crc32c::crc32c_append(!0xFFFF_FFFEu32, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference implementation: the bitwise reflected CRC-32C update with
    /// no pre/post inversion, exactly as sanlock's table loop computes it.
    fn raw_bitwise(mut crc: u32, data: &[u8]) -> u32 {
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn matches_raw_update_from_seed() {
        for len in [0usize, 1, 7, 48, 168, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            assert_eq!(
                sanlock_crc32c(&data),
                raw_bitwise(!1u32, &data),
                "len {len}"
            );
        }
    }
}
