//! LeaderRecord: decode any bytes, verify as delta and paxos leader, and
//! check that decode/encode round-trips and that sealing makes a record
//! with a valid header verify.
#![no_main]

use hactl::geometry::Geometry;
use hactl::ondisk::leader::{LEADER_CHECKSUM_LEN, LEADER_SIZE};
use hactl::ondisk::{
    DELTA_DISK_MAGIC, DELTA_DISK_VERSION_MAJOR, DecodeError, LeaderRecord, PAXOS_DISK_MAGIC,
    PAXOS_DISK_VERSION_MAJOR, RecordKind,
};
use libfuzzer_sys::fuzz_target;

fn valid_sector_size(ss: u32) -> bool {
    ss == 512 || ss == 4096
}

fuzz_target!(|data: &[u8]| {
    let lr = match LeaderRecord::decode(data) {
        Err(e) => {
            assert!(
                data.len() < LEADER_SIZE,
                "{} bytes refused: {e}",
                data.len()
            );
            assert_eq!(
                e,
                DecodeError::Short {
                    kind: RecordKind::DeltaLeader,
                    need: LEADER_SIZE,
                    got: data.len()
                }
            );
            let _ = (e.to_string(), e.sanlk_rv());
            return;
        }
        Ok(lr) => lr,
    };
    assert!(data.len() >= LEADER_SIZE);

    // round trip, both ways (a leader has no padding)
    let enc = lr.encode();
    assert_eq!(&enc[..], &data[..LEADER_SIZE], "encode(decode(b)) != b");
    assert_eq!(
        LeaderRecord::decode(&enc).unwrap(),
        lr,
        "decode(encode(x)) != x"
    );

    let checksum_ok = lr.checksum == lr.computed_checksum();
    assert_eq!(
        lr.computed_checksum(),
        hactl::ondisk::sanlock_crc32c(&data[..LEADER_CHECKSUM_LEN])
    );

    // verification agrees with its definition
    let delta = lr.verify_delta(None);
    let delta_ok = lr.magic == DELTA_DISK_MAGIC
        && lr.version & 0xFFFF_0000 == DELTA_DISK_VERSION_MAJOR
        && checksum_ok
        && valid_sector_size(lr.sector_size);
    assert_eq!(
        delta.is_ok(),
        delta_ok,
        "verify_delta(None) = {delta:?} for {lr:?}"
    );
    let own = lr.space_name;
    assert_eq!(lr.verify_delta(Some(&own)).is_ok(), delta_ok);

    let paxos = lr.verify_paxos(None, None, 0);
    let paxos_ok = lr.magic == PAXOS_DISK_MAGIC
        && lr.version & 0xFFFF_0000 == PAXOS_DISK_VERSION_MAJOR
        && checksum_ok
        && valid_sector_size(lr.sector_size);
    assert_eq!(
        paxos.is_ok(),
        paxos_ok,
        "verify_paxos = {paxos:?} for {lr:?}"
    );
    let (ls, res) = (lr.space_name, lr.resource_name);
    assert_eq!(
        lr.verify_paxos(Some(&ls), Some(&res), lr.num_hosts).is_ok(),
        paxos_ok
    );
    if lr.num_hosts < u64::MAX {
        assert!(lr.verify_paxos(None, None, lr.num_hosts + 1).is_err());
    }
    assert!(!(delta_ok && paxos_ok));

    for r in [&delta, &paxos] {
        if let Err(e) = r {
            let _ = (e.to_string(), e.sanlk_rv());
        }
    }
    let _ = Geometry::from_leader(lr.sector_size, lr.flags);
    let _ = (lr.space_name.to_string_lossy(), format!("{lr:?}"));

    // sealing fixes the checksum, and only the checksum
    let mut sealed = lr;
    let bytes = sealed.seal();
    assert_eq!(&bytes[..LEADER_CHECKSUM_LEN], &data[..LEADER_CHECKSUM_LEN]);
    assert_eq!(
        &bytes[LEADER_CHECKSUM_LEN + 4..],
        &data[LEADER_CHECKSUM_LEN + 4..LEADER_SIZE]
    );
    let back = LeaderRecord::decode(&bytes).unwrap();
    assert_eq!(back, sealed);
    let header_ok = valid_sector_size(lr.sector_size);
    if lr.magic == DELTA_DISK_MAGIC && lr.version & 0xFFFF_0000 == DELTA_DISK_VERSION_MAJOR {
        assert_eq!(back.verify_delta(None).is_ok(), header_ok);
    }
    if lr.magic == PAXOS_DISK_MAGIC && lr.version & 0xFFFF_0000 == PAXOS_DISK_VERSION_MAJOR {
        assert_eq!(back.verify_paxos(None, None, 0).is_ok(), header_ok);
    }
});
