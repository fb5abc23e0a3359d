//! Property tests for sanlock's on-disk records and the argument parsers.
//!
//! Every record must survive decode(encode(x)) == x, every buffer of the
//! record's size must survive encode(decode(b)) == b (apart from padding),
//! sealed records must verify and a single flipped bit in the checksummed
//! range (or in the checksum itself) must make them fail, short buffers must
//! be refused with `DecodeError::Short`, and the string parsers must never
//! panic.
//!
//! `PROPTEST_CASES` overrides the per-block case counts set below.

use hactl::cli::args;
use hactl::direct::dump::parse_dump_spec;
use hactl::lease_str::{
    self, DiskArg, ResourceArg, escape_path, parse_lockspace, parse_rentry, parse_resource,
    parse_rindex,
};
use hactl::ondisk::dblock::{DBLOCK_CHECKSUM_LEN, DBLOCK_SIZE, MODE_BLOCK_SIZE};
use hactl::ondisk::leader::{LEADER_CHECKSUM_LEN, LEADER_SIZE};
use hactl::ondisk::request::REQUEST_SIZE;
use hactl::ondisk::rindex::{RINDEX_ENTRY_SIZE, RINDEX_HEADER_SIZE};
use hactl::ondisk::{
    DELTA_DISK_MAGIC, DELTA_DISK_VERSION_MAJOR, DecodeError, LeaderRecord, ModeBlock, NAME_ID_SIZE,
    Name, PAXOS_DISK_MAGIC, PAXOS_DISK_VERSION_MAJOR, PaxosDblock, RecordKind, RequestRecord,
    RindexEntry, RindexHeader,
};
use proptest::prelude::*;

/// Byte offset of the leader's checksum field (it follows the covered range).
const LEADER_CHECKSUM_OFF: usize = LEADER_CHECKSUM_LEN;
/// Byte offset of the dblock's checksum field.
const DBLOCK_CHECKSUM_OFF: usize = DBLOCK_CHECKSUM_LEN;
/// RequestRecord: the C struct's tail padding after `force_mode`.
const REQUEST_PADDING: std::ops::Range<usize> = 20..24;
/// ModeBlock: padding between `flags` (u32) and `generation` (u64).
const MODE_BLOCK_PADDING: std::ops::Range<usize> = 4..8;

fn cases(n: u32) -> ProptestConfig {
    // An explicit PROPTEST_CASES wins over the per-block defaults.
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- strategies

/// Names as they occur: raw 48 bytes (garbage after a NUL, no NUL at all),
/// sanlock-style NUL-padded text, and the empty name.
fn arb_name() -> impl Strategy<Value = Name> {
    prop_oneof![
        prop::array::uniform::<_, NAME_ID_SIZE>(any::<u8>()).prop_map(Name),
        "[a-zA-Z0-9_.-]{0,48}".prop_map(|s| Name::new(&s).unwrap()),
        Just(Name::default()),
    ]
}

/// Integers biased towards edges, so that 0 and all-ones show up often.
fn edge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![3 => any::<u64>(), 1 => Just(0u64), 1 => Just(u64::MAX)]
}

fn edge_u32() -> impl Strategy<Value = u32> {
    prop_oneof![3 => any::<u32>(), 1 => Just(0u32), 1 => Just(u32::MAX)]
}

fn arb_leader() -> impl Strategy<Value = LeaderRecord> {
    (
        (edge_u32(), edge_u32(), edge_u32(), edge_u32()),
        (edge_u64(), edge_u64(), edge_u64(), edge_u64(), edge_u64()),
        (arb_name(), arb_name()),
        (
            edge_u64(),
            edge_u64(),
            edge_u32(),
            any::<u16>(),
            any::<u16>(),
        ),
        (edge_u64(), edge_u64(), edge_u64()),
    )
        .prop_map(
            |(
                (magic, version, flags, sector_size),
                (num_hosts, max_hosts, owner_id, owner_generation, lver),
                (space_name, resource_name),
                (timestamp, unused1, checksum, unused2, io_timeout),
                (write_id, write_generation, write_timestamp),
            )| LeaderRecord {
                magic,
                version,
                flags,
                sector_size,
                num_hosts,
                max_hosts,
                owner_id,
                owner_generation,
                lver,
                space_name,
                resource_name,
                timestamp,
                unused1,
                checksum,
                unused2,
                io_timeout,
                write_id,
                write_generation,
                write_timestamp,
            },
        )
}

fn arb_request() -> impl Strategy<Value = RequestRecord> {
    (edge_u32(), edge_u32(), edge_u64(), edge_u32()).prop_map(
        |(magic, version, lver, force_mode)| RequestRecord {
            magic,
            version,
            lver,
            force_mode,
        },
    )
}

fn arb_dblock() -> impl Strategy<Value = PaxosDblock> {
    (
        (edge_u64(), edge_u64(), edge_u64()),
        (edge_u64(), edge_u64(), edge_u64()),
        (edge_u32(), edge_u32()),
    )
        .prop_map(
            |((mbal, bal, inp), (inp2, inp3, lver), (checksum, flags))| PaxosDblock {
                mbal,
                bal,
                inp,
                inp2,
                inp3,
                lver,
                checksum,
                flags,
            },
        )
}

fn arb_mode_block() -> impl Strategy<Value = ModeBlock> {
    (edge_u32(), edge_u64()).prop_map(|(flags, generation)| ModeBlock { flags, generation })
}

fn arb_rindex_header() -> impl Strategy<Value = RindexHeader> {
    (
        (edge_u32(), edge_u32(), edge_u32(), edge_u32()),
        (edge_u32(), edge_u32(), edge_u64()),
        arb_name(),
    )
        .prop_map(
            |(
                (magic, version, flags, sector_size),
                (max_resources, unused, rx_offset),
                lockspace_name,
            )| RindexHeader {
                magic,
                version,
                flags,
                sector_size,
                max_resources,
                unused,
                rx_offset,
                lockspace_name,
            },
        )
}

fn arb_rindex_entry() -> impl Strategy<Value = RindexEntry> {
    (edge_u64(), edge_u32(), edge_u32(), arb_name()).prop_map(
        |(res_offset, flags, unused, name)| RindexEntry {
            res_offset,
            flags,
            unused,
            name,
        },
    )
}

fn bytes_of(n: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), n)
}

/// Buffers strictly shorter than `n` (including empty).
fn short_bytes(n: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..n)
}

/// A leader with a valid magic, major version and sector size for `magic`;
/// everything else (minor version, names, counters, trailing fields) is free.
fn valid_leader(magic: u32, major: u32) -> impl Strategy<Value = LeaderRecord> {
    (
        arb_leader(),
        any::<u16>(),
        prop::sample::select(vec![512u32, 4096]),
    )
        .prop_map(move |(mut lr, minor, ss)| {
            lr.magic = magic;
            lr.version = major | minor as u32;
            lr.sector_size = ss;
            lr
        })
}

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[bit / 8] ^= 1 << (bit % 8);
    b
}

/// Every bit in the leader's checksummed range and in its checksum field.
fn leader_covered_bits() -> impl Iterator<Item = usize> {
    0..(LEADER_CHECKSUM_OFF + 4) * 8
}

/// Every bit in the dblock's checksummed range and in its checksum field.
fn dblock_covered_bits() -> impl Iterator<Item = usize> {
    0..(DBLOCK_CHECKSUM_OFF + 4) * 8
}

fn assert_short(
    r: Result<impl std::fmt::Debug, DecodeError>,
    kind: RecordKind,
    need: usize,
    got: usize,
) {
    match r {
        Err(DecodeError::Short {
            kind: k,
            need: n,
            got: g,
        }) => {
            assert_eq!(k, kind, "wrong kind in Short");
            assert_eq!(n, need, "wrong `need` in Short");
            assert_eq!(g, got, "wrong `got` in Short");
        }
        other => panic!("{kind:?}: {got}-byte buffer gave {other:?}, not Err(Short)"),
    }
}

// ------------------------------------------------- decode(encode(x)) == x

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn leader_roundtrip(lr in arb_leader()) {
        let b = lr.encode();
        prop_assert_eq!(b.len(), LEADER_SIZE);
        prop_assert_eq!(LeaderRecord::decode(&b).unwrap(), lr);
    }

    #[test]
    fn request_roundtrip(rr in arb_request()) {
        let b = rr.encode();
        prop_assert_eq!(b.len(), REQUEST_SIZE);
        prop_assert_eq!(RequestRecord::decode(&b).unwrap(), rr);
        // encode is deterministic: padding is always written as zeroes
        prop_assert_eq!(&b[REQUEST_PADDING], &[0u8; 4][..]);
    }

    #[test]
    fn dblock_roundtrip(db in arb_dblock()) {
        let b = db.encode();
        prop_assert_eq!(b.len(), DBLOCK_SIZE);
        prop_assert_eq!(PaxosDblock::decode(&b).unwrap(), db);
    }

    #[test]
    fn mode_block_roundtrip(mb in arb_mode_block()) {
        let b = mb.encode();
        prop_assert_eq!(b.len(), MODE_BLOCK_SIZE);
        prop_assert_eq!(ModeBlock::decode(&b).unwrap(), mb);
        prop_assert_eq!(&b[MODE_BLOCK_PADDING], &[0u8; 4][..]);
    }

    #[test]
    fn rindex_header_roundtrip(h in arb_rindex_header()) {
        let b = h.encode();
        prop_assert_eq!(b.len(), RINDEX_HEADER_SIZE);
        prop_assert_eq!(RindexHeader::decode(&b).unwrap(), h);
    }

    #[test]
    fn rindex_entry_roundtrip(e in arb_rindex_entry()) {
        let b = e.encode();
        prop_assert_eq!(b.len(), RINDEX_ENTRY_SIZE);
        prop_assert_eq!(RindexEntry::decode(&b).unwrap(), e);
    }
}

// ------------------------------------------- encode(decode(bytes)) == bytes

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn leader_bytes_roundtrip(b in bytes_of(LEADER_SIZE), tail in short_bytes(64)) {
        let lr = LeaderRecord::decode(&b).unwrap();
        prop_assert_eq!(&lr.encode()[..], &b[..]);
        // bytes after the record are not part of it
        let mut longer = b.clone();
        longer.extend_from_slice(&tail);
        prop_assert_eq!(LeaderRecord::decode(&longer).unwrap(), lr);
    }

    #[test]
    fn dblock_bytes_roundtrip(b in bytes_of(DBLOCK_SIZE), tail in short_bytes(64)) {
        let db = PaxosDblock::decode(&b).unwrap();
        prop_assert_eq!(&db.encode()[..], &b[..]);
        let mut longer = b.clone();
        longer.extend_from_slice(&tail);
        prop_assert_eq!(PaxosDblock::decode(&longer).unwrap(), db);
    }

    #[test]
    fn rindex_header_bytes_roundtrip(b in bytes_of(RINDEX_HEADER_SIZE), tail in short_bytes(64)) {
        let h = RindexHeader::decode(&b).unwrap();
        prop_assert_eq!(&h.encode()[..], &b[..]);
        let mut longer = b.clone();
        longer.extend_from_slice(&tail);
        prop_assert_eq!(RindexHeader::decode(&longer).unwrap(), h);
    }

    #[test]
    fn rindex_entry_bytes_roundtrip(b in bytes_of(RINDEX_ENTRY_SIZE), tail in short_bytes(64)) {
        let e = RindexEntry::decode(&b).unwrap();
        prop_assert_eq!(&e.encode()[..], &b[..]);
        let mut longer = b.clone();
        longer.extend_from_slice(&tail);
        prop_assert_eq!(RindexEntry::decode(&longer).unwrap(), e);
    }

    #[test]
    fn request_bytes_roundtrip_except_padding(b in bytes_of(REQUEST_SIZE)) {
        let rr = RequestRecord::decode(&b).unwrap();
        let out = rr.encode();
        prop_assert_eq!(&out[..REQUEST_PADDING.start], &b[..REQUEST_PADDING.start]);
        prop_assert_eq!(&out[REQUEST_PADDING.end..], &b[REQUEST_PADDING.end..]);
        // the padding carries nothing: whatever it held, the record is the same
        let mut other = b.clone();
        other[REQUEST_PADDING].iter_mut().for_each(|x| *x = !*x);
        prop_assert_eq!(RequestRecord::decode(&other).unwrap(), rr);
    }

    #[test]
    fn mode_block_bytes_roundtrip_except_padding(b in bytes_of(MODE_BLOCK_SIZE)) {
        let mb = ModeBlock::decode(&b).unwrap();
        let out = mb.encode();
        prop_assert_eq!(&out[..MODE_BLOCK_PADDING.start], &b[..MODE_BLOCK_PADDING.start]);
        prop_assert_eq!(&out[MODE_BLOCK_PADDING.end..], &b[MODE_BLOCK_PADDING.end..]);
        let mut other = b.clone();
        other[MODE_BLOCK_PADDING].iter_mut().for_each(|x| *x = !*x);
        prop_assert_eq!(ModeBlock::decode(&other).unwrap(), mb);
    }
}

// ------------------------------------------------------- seal and verify

proptest! {
    // each case checks every covered bit (1376 for a leader), so fewer cases
    #![proptest_config(cases(48))]

    #[test]
    fn sealed_delta_leader_verifies_and_detects_any_flip(
        lr in valid_leader(DELTA_DISK_MAGIC, DELTA_DISK_VERSION_MAJOR),
    ) {
        let mut lr = lr;
        let sealed = lr.seal();
        prop_assert_eq!(lr.checksum, lr.computed_checksum());
        prop_assert_eq!(&sealed[..], &lr.encode()[..]);
        let back = LeaderRecord::decode(&sealed).unwrap();
        prop_assert_eq!(back, lr);
        prop_assert!(back.verify_delta(None).is_ok(), "{:?}", back.verify_delta(None));
        let own = back.space_name;
        prop_assert!(back.verify_delta(Some(&own)).is_ok());

        for bit in leader_covered_bits() {
            let bad = LeaderRecord::decode(&flip(&sealed, bit)).unwrap();
            let r = bad.verify_delta(None);
            prop_assert!(r.is_err(), "bit {} flipped and verify_delta(None) passed", bit);
            prop_assert!(
                bad.verify_delta(Some(&own)).is_err(),
                "bit {} flipped and verify_delta(Some) passed", bit
            );
            // past magic and major version, the checksum is what must catch it
            let byte = bit / 8;
            let in_magic_or_major = byte < 4 || (6..8).contains(&byte);
            if !in_magic_or_major {
                prop_assert!(
                    matches!(r, Err(DecodeError::BadChecksum { kind: RecordKind::DeltaLeader, .. })),
                    "bit {} flipped gave {:?}, not BadChecksum", bit, r
                );
            }
        }

        // the fields after the checksum are not covered by it (as in sanlock)
        for bit in (LEADER_CHECKSUM_OFF + 4) * 8..LEADER_SIZE * 8 {
            let other = LeaderRecord::decode(&flip(&sealed, bit)).unwrap();
            prop_assert!(other.verify_delta(None).is_ok(), "bit {} is outside the checksum", bit);
        }
    }

    #[test]
    fn sealed_paxos_leader_verifies_and_detects_any_flip(
        lr in valid_leader(PAXOS_DISK_MAGIC, PAXOS_DISK_VERSION_MAJOR),
        host_frac in 0.0f64..=1.0,
    ) {
        let mut lr = lr;
        let host_id = (lr.num_hosts as f64 * host_frac) as u64;
        let host_id = host_id.min(lr.num_hosts);
        let sealed = lr.seal();
        let back = LeaderRecord::decode(&sealed).unwrap();
        prop_assert_eq!(back, lr);
        let (ls, res) = (back.space_name, back.resource_name);
        prop_assert!(back.verify_paxos(None, None, 0).is_ok(), "{:?}", back.verify_paxos(None, None, 0));
        prop_assert!(back.verify_paxos(Some(&ls), Some(&res), host_id).is_ok());
        // a delta leader is not a paxos leader and vice versa
        prop_assert!(back.verify_delta(None).is_err());

        for bit in leader_covered_bits() {
            let bad = LeaderRecord::decode(&flip(&sealed, bit)).unwrap();
            prop_assert!(
                bad.verify_paxos(None, None, 0).is_err(),
                "bit {} flipped and verify_paxos(None, None, 0) passed", bit
            );
            prop_assert!(
                bad.verify_paxos(Some(&ls), Some(&res), host_id).is_err(),
                "bit {} flipped and verify_paxos(Some, Some, {}) passed", bit, host_id
            );
        }
    }

    #[test]
    fn sealed_dblock_verifies_and_detects_any_flip(db in arb_dblock()) {
        let mut db = db;
        let sealed = db.seal();
        prop_assert_eq!(db.checksum, db.computed_checksum());
        let back = PaxosDblock::decode(&sealed).unwrap();
        prop_assert_eq!(back, db);
        prop_assert!(back.verify().is_ok());

        for bit in dblock_covered_bits() {
            let bad = PaxosDblock::decode(&flip(&sealed, bit)).unwrap();
            if bad.is_empty() {
                // an empty dblock is "never written", valid by definition
                prop_assert!(bad.verify().is_ok());
            } else {
                prop_assert!(
                    matches!(bad.verify(), Err(DecodeError::BadChecksum { kind: RecordKind::Dblock, .. })),
                    "bit {} flipped gave {:?}", bit, bad.verify()
                );
            }
        }
        // flags are not covered by the checksum
        for bit in (DBLOCK_CHECKSUM_OFF + 4) * 8..DBLOCK_SIZE * 8 {
            let other = PaxosDblock::decode(&flip(&sealed, bit)).unwrap();
            prop_assert!(other.verify().is_ok(), "flags bit {} is outside the checksum", bit);
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// A dblock whose stored checksum is not the computed one fails, unless
    /// it is entirely zero.
    #[test]
    fn dblock_with_wrong_checksum_fails(db in arb_dblock()) {
        prop_assume!(db.checksum != db.computed_checksum());
        prop_assume!(!db.is_empty());
        prop_assert!(db.verify().is_err());
    }

    /// A leader whose stored checksum is wrong never verifies.
    #[test]
    fn leader_with_wrong_checksum_fails(
        lr in valid_leader(DELTA_DISK_MAGIC, DELTA_DISK_VERSION_MAJOR),
    ) {
        prop_assume!(lr.checksum != lr.computed_checksum());
        prop_assert!(
            matches!(lr.verify_delta(None), Err(DecodeError::BadChecksum { .. })),
            "{:?}", lr.verify_delta(None)
        );
    }

    /// A sealed leader with a sector size other than 512/4096 is refused.
    #[test]
    fn leader_with_bad_sector_size_fails(
        lr in valid_leader(DELTA_DISK_MAGIC, DELTA_DISK_VERSION_MAJOR),
        ss in any::<u32>(),
    ) {
        prop_assume!(ss != 512 && ss != 4096);
        let mut lr = lr;
        lr.sector_size = ss;
        lr.seal();
        prop_assert!(
            matches!(lr.verify_delta(None), Err(DecodeError::WrongSectorSize { .. })),
            "{:?}", lr.verify_delta(None)
        );
    }
}

#[test]
fn all_zero_dblock_is_valid_and_zero_leader_is_not() {
    assert!(PaxosDblock::default().verify().is_ok());
    let zero = LeaderRecord::decode(&[0u8; LEADER_SIZE]).unwrap();
    assert!(matches!(
        zero.verify_delta(None),
        Err(DecodeError::NoMagic { .. })
    ));
    assert!(matches!(
        zero.verify_paxos(None, None, 0),
        Err(DecodeError::NoMagic { .. })
    ));
}

// ----------------------------------------------------- short buffers

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn short_leader(b in short_bytes(LEADER_SIZE)) {
        assert_short(LeaderRecord::decode(&b), RecordKind::DeltaLeader, LEADER_SIZE, b.len());
    }

    #[test]
    fn short_request(b in short_bytes(REQUEST_SIZE)) {
        assert_short(RequestRecord::decode(&b), RecordKind::Request, REQUEST_SIZE, b.len());
    }

    #[test]
    fn short_dblock(b in short_bytes(DBLOCK_SIZE)) {
        assert_short(PaxosDblock::decode(&b), RecordKind::Dblock, DBLOCK_SIZE, b.len());
    }

    #[test]
    fn short_mode_block(b in short_bytes(MODE_BLOCK_SIZE)) {
        assert_short(ModeBlock::decode(&b), RecordKind::ModeBlock, MODE_BLOCK_SIZE, b.len());
    }

    #[test]
    fn short_rindex_header(b in short_bytes(RINDEX_HEADER_SIZE)) {
        assert_short(RindexHeader::decode(&b), RecordKind::RindexHeader, RINDEX_HEADER_SIZE, b.len());
    }

    #[test]
    fn short_rindex_entry(b in short_bytes(RINDEX_ENTRY_SIZE)) {
        assert_short(RindexEntry::decode(&b), RecordKind::RindexEntry, RINDEX_ENTRY_SIZE, b.len());
    }
}

/// Every length below the record size, exhaustively (cheap, and covers the
/// off-by-one lengths a random sample might miss).
#[test]
fn every_short_length_is_refused() {
    let buf = [0xA5u8; LEADER_SIZE];
    for n in 0..LEADER_SIZE {
        let b = &buf[..n];
        assert_short(
            LeaderRecord::decode(b),
            RecordKind::DeltaLeader,
            LEADER_SIZE,
            n,
        );
        if n < REQUEST_SIZE {
            assert_short(
                RequestRecord::decode(b),
                RecordKind::Request,
                REQUEST_SIZE,
                n,
            );
        }
        if n < DBLOCK_SIZE {
            assert_short(PaxosDblock::decode(b), RecordKind::Dblock, DBLOCK_SIZE, n);
        }
        if n < MODE_BLOCK_SIZE {
            assert_short(
                ModeBlock::decode(b),
                RecordKind::ModeBlock,
                MODE_BLOCK_SIZE,
                n,
            );
        }
        if n < RINDEX_HEADER_SIZE {
            assert_short(
                RindexHeader::decode(b),
                RecordKind::RindexHeader,
                RINDEX_HEADER_SIZE,
                n,
            );
        }
        if n < RINDEX_ENTRY_SIZE {
            assert_short(
                RindexEntry::decode(b),
                RecordKind::RindexEntry,
                RINDEX_ENTRY_SIZE,
                n,
            );
        }
    }
    // and exactly the record size is enough
    assert!(LeaderRecord::decode(&buf[..LEADER_SIZE]).is_ok());
    assert!(RequestRecord::decode(&buf[..REQUEST_SIZE]).is_ok());
    assert!(PaxosDblock::decode(&buf[..DBLOCK_SIZE]).is_ok());
    assert!(ModeBlock::decode(&buf[..MODE_BLOCK_SIZE]).is_ok());
    assert!(RindexHeader::decode(&buf[..RINDEX_HEADER_SIZE]).is_ok());
    assert!(RindexEntry::decode(&buf[..RINDEX_ENTRY_SIZE]).is_ok());
}

// ---------------------------------------------- string parsers never panic

/// Strings made of the characters the parsers care about, so that colons,
/// escapes, suffixes and numbers meet far more often than in random text.
fn lease_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        r"[a-zA-Z0-9:\\ M/SHx\-é\x00]{0,80}",
        r"(\\?[a-z]{0,3}(:|\\:)?[0-9]{0,22}M?){0,10}",
        // long fields: names over 48 bytes, paths over 1023 bytes
        (r"[a-z]{40,60}", r"[a-z/]{1000,1100}", r"[0-9]{0,25}M?")
            .prop_map(|(n, p, o)| format!("{n}:1:{p}:{o}")),
    ]
}

/// Arguments as a user would type them, plus garbage.
fn arg_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => r"-[a-zA-Z]",
        1 => r"-?.{0,2}",
        3 => lease_like(),
        1 => prop::sample::select(vec![
            "--json", "-D", "-c", "-", "", "1M", "2M", "4M", "8M", "512", "4096", "0x10", "-1",
            "99999999999999999999", "SH",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

fn action_like() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "init", "dump", "next_free", "read_leader", "write_leader", "format", "rebuild",
            "create", "delete", "lookup", "update", "status", "acquire", "release",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn lease_str_parsers_never_panic(s in lease_like()) {
        if let Ok(ls) = parse_lockspace(&s) {
            prop_assert!(ls.disk.path.len() < lease_str::SANLK_PATH_LEN);
        }
        if let Ok(r) = parse_resource(&s) {
            prop_assert!(r.disks.len() <= lease_str::SANLK_MAX_DISKS);
            prop_assert!(r.disks.iter().all(|d| !d.path.is_empty()));
            prop_assert!(!(r.shared && r.lver.is_some()));
        }
        if let Ok(rx) = parse_rindex(&s) {
            prop_assert!(rx.disk.path.len() < lease_str::SANLK_PATH_LEN);
        }
        let _ = parse_rentry(&s);
        let _ = parse_dump_spec(&s);
        let _ = lease_str::parse_offset(&s);
        let _ = lease_str::parse_c_u64(&s);
        let _ = lease_str::unescape_path(&s);
    }

    #[test]
    fn cli_args_parse_never_panics(
        action in action_like(),
        argv in prop::collection::vec(arg_like(), 0..12),
    ) {
        if let Ok(com) = args::parse(&action, &argv) {
            prop_assert!(com.resources.len() <= 8);
            if let Some(a) = com.align_size {
                prop_assert!(
                    hactl::geometry::Geometry::new(com.sector_size.unwrap_or(0), a).is_ok()
                );
            }
            if action == "dump" || action == "next_free" {
                prop_assert!(com.dump_path.is_some());
            }
        }
    }
}

// ------------------------------ well-formed strings parse to what they say

fn plain_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,48}"
}

/// Paths with the characters that need escaping (no backslash: neither
/// sanlock nor hactl can express a literal one).
fn plain_path() -> impl Strategy<Value = String> {
    "/[a-zA-Z0-9_./: -]{0,60}"
}

fn arb_resource_arg() -> impl Strategy<Value = ResourceArg> {
    (
        plain_name(),
        plain_name(),
        // up to two disks more than sanlock allows, which must be refused
        prop::collection::vec(
            (plain_path(), any::<u64>()),
            1..=lease_str::SANLK_MAX_DISKS + 2,
        ),
        prop_oneof![Just(None), any::<u64>().prop_map(Some)],
        any::<bool>(),
    )
        .prop_map(|(ls, res, disks, lver, shared)| ResourceArg {
            lockspace: Name::new(&ls).unwrap(),
            name: Name::new(&res).unwrap(),
            disks: disks
                .into_iter()
                .map(|(path, offset)| DiskArg { path, offset })
                .collect(),
            lver: if shared { None } else { lver },
            shared,
        })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn lockspace_string_roundtrip(
        name in plain_name(), host_id in any::<u64>(), path in plain_path(), offset in any::<u64>(),
    ) {
        let s = format!("{name}:{host_id}:{}:{offset}", escape_path(&path));
        let ls = parse_lockspace(&s).unwrap();
        prop_assert_eq!(ls.name, Name::new(&name).unwrap());
        prop_assert_eq!(ls.host_id, host_id);
        prop_assert_eq!(ls.disk.path, path);
        prop_assert_eq!(ls.disk.offset, offset);
    }

    #[test]
    fn lockspace_offset_in_mib(name in plain_name(), mib in 0u64..(u64::MAX >> 20)) {
        let ls = parse_lockspace(&format!("{name}:1:/dev/x:{mib}M")).unwrap();
        prop_assert_eq!(ls.disk.offset, mib << 20);
    }

    #[test]
    fn resource_string_roundtrip(r in arb_resource_arg()) {
        let s = r.to_sanlock_string();
        if r.disks.len() > lease_str::SANLK_MAX_DISKS {
            let res = parse_resource(&s);
            prop_assert!(res.is_err(), "{} disks accepted: {:?}", r.disks.len(), res);
            return Ok(());
        }
        let back = parse_resource(&s).unwrap();
        prop_assert_eq!(back.lockspace, r.lockspace);
        prop_assert_eq!(back.name, r.name);
        prop_assert_eq!(&back.disks, &r.disks);
        prop_assert_eq!(back.shared, r.shared);
        // to_sanlock_string prints a missing lver as 0
        if !r.shared {
            prop_assert_eq!(back.lver, Some(r.lver.unwrap_or(0)));
        }
    }

    #[test]
    fn rindex_string_roundtrip(name in plain_name(), path in plain_path(), offset in any::<u64>()) {
        let rx = parse_rindex(&format!("{name}:{}:{offset}", escape_path(&path))).unwrap();
        prop_assert_eq!(rx.lockspace, Name::new(&name).unwrap());
        prop_assert_eq!(rx.disk.path, path);
        prop_assert_eq!(rx.disk.offset, offset);
    }

    #[test]
    fn escape_path_escapes_colons_and_spaces(path in plain_path()) {
        let e = escape_path(&path);
        let b = e.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            if c == b':' || c == b' ' {
                prop_assert!(i > 0 && b[i - 1] == b'\\', "{:?} -> {:?}: unescaped {:?}", path, e, c as char);
            }
        }
        prop_assert_eq!(lease_str::unescape_path(&e), path);
    }

    #[test]
    fn rentry_string_roundtrip(name in plain_name(), offset in any::<u64>()) {
        let (n, o) = parse_rentry(&format!("{name}:{offset}")).unwrap();
        prop_assert_eq!(n, Name::new(&name).unwrap());
        prop_assert_eq!(o, offset);
    }

    #[test]
    fn dump_spec_roundtrip(path in plain_path(), offset in any::<u64>(), size in any::<u64>()) {
        let (p, o, s) = parse_dump_spec(&format!("{}:{offset}:{size}", escape_path(&path))).unwrap();
        prop_assert_eq!(p, path);
        prop_assert_eq!(o, offset);
        prop_assert_eq!(s, size);
    }

    #[test]
    fn names_over_48_bytes_are_refused(name in "[a-z]{49,100}") {
        let ls = format!("{name}:1:/f:0");
        let res_ls = format!("{name}:R:/f:0");
        let res_name = format!("LS:{name}:/f:0");
        let rx = format!("{name}:/f:0");
        let re = format!("{name}:0");
        prop_assert!(parse_lockspace(&ls).is_err());
        prop_assert!(parse_resource(&res_ls).is_err());
        prop_assert!(parse_resource(&res_name).is_err());
        prop_assert!(parse_rindex(&rx).is_err());
        prop_assert!(parse_rentry(&re).is_err());
    }

    #[test]
    fn cli_lockspace_option_matches_parser(
        name in plain_name(), host_id in any::<u64>(), path in plain_path(), offset in any::<u64>(),
    ) {
        let s = format!("{name}:{host_id}:{}:{offset}", escape_path(&path));
        let com = args::parse("init", &["-s".to_string(), s.clone()]).unwrap();
        prop_assert_eq!(com.lockspace, Some(parse_lockspace(&s).unwrap()));
    }
}
