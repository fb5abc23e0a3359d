//! PaxosDblock and ModeBlock: decode any bytes (a dblock at 0, a mode block
//! at 0 and, when the input is a whole dblock sector prefix, at
//! MBLOCK_OFFSET), verify, seal, and round-trip.
#![no_main]

use hactl::ondisk::dblock::{DBLOCK_CHECKSUM_LEN, DBLOCK_SIZE, MBLOCK_OFFSET, MODE_BLOCK_SIZE};
use hactl::ondisk::{DecodeError, ModeBlock, PaxosDblock, RecordKind};
use libfuzzer_sys::fuzz_target;

/// Bytes 4..8 of a mode block are padding between flags and generation.
const MB_PAD: std::ops::Range<usize> = 4..8;

fn check_mode_block(b: &[u8]) {
    let mb = match ModeBlock::decode(b) {
        Err(e) => {
            assert!(b.len() < MODE_BLOCK_SIZE, "{} bytes refused: {e}", b.len());
            assert_eq!(
                e,
                DecodeError::Short {
                    kind: RecordKind::ModeBlock,
                    need: MODE_BLOCK_SIZE,
                    got: b.len()
                }
            );
            return;
        }
        Ok(mb) => mb,
    };
    let enc = mb.encode();
    assert_eq!(
        &enc[..MB_PAD.start],
        &b[..MB_PAD.start],
        "mode block encode(decode(b)) != b"
    );
    assert_eq!(&enc[MB_PAD.end..], &b[MB_PAD.end..MODE_BLOCK_SIZE]);
    assert_eq!(&enc[MB_PAD], &[0u8; 4], "mode block padding not zeroed");
    assert_eq!(ModeBlock::decode(&enc).unwrap(), mb);
    assert_eq!(mb.is_shared(), b[0] & 1 != 0);
}

fuzz_target!(|data: &[u8]| {
    check_mode_block(data);
    if data.len() >= MBLOCK_OFFSET {
        check_mode_block(&data[MBLOCK_OFFSET..]);
    }

    let db = match PaxosDblock::decode(data) {
        Err(e) => {
            assert!(
                data.len() < DBLOCK_SIZE,
                "{} bytes refused: {e}",
                data.len()
            );
            assert_eq!(
                e,
                DecodeError::Short {
                    kind: RecordKind::Dblock,
                    need: DBLOCK_SIZE,
                    got: data.len()
                }
            );
            let _ = (e.to_string(), e.sanlk_rv());
            return;
        }
        Ok(db) => db,
    };
    let enc = db.encode();
    assert_eq!(
        &enc[..],
        &data[..DBLOCK_SIZE],
        "dblock encode(decode(b)) != b"
    );
    assert_eq!(
        PaxosDblock::decode(&enc).unwrap(),
        db,
        "decode(encode(x)) != x"
    );
    assert_eq!(
        db.computed_checksum(),
        hactl::ondisk::sanlock_crc32c(&data[..DBLOCK_CHECKSUM_LEN])
    );

    // valid iff empty as sanlock's verify_dblock sees it (checksum, mbal,
    // bal, inp and lver zero; inp2, inp3 and flags are not looked at) or
    // the checksum matches
    let v = db.verify();
    let empty = [db.mbal, db.bal, db.inp, db.lver].iter().all(|&x| x == 0) && db.checksum == 0;
    let ok = empty || db.checksum == db.computed_checksum();
    assert_eq!(v.is_ok(), ok, "verify() = {v:?} for {db:?}");
    if let Err(e) = &v {
        assert_eq!(e.sanlk_rv(), hactl::rv::SANLK_DBLOCK_CHECKSUM);
        let _ = e.to_string();
    }

    // sealing fixes the checksum field only, and then it verifies
    let mut sealed = db;
    let bytes = sealed.seal();
    assert_eq!(&bytes[..DBLOCK_CHECKSUM_LEN], &data[..DBLOCK_CHECKSUM_LEN]);
    assert_eq!(
        &bytes[DBLOCK_CHECKSUM_LEN + 4..],
        &data[DBLOCK_CHECKSUM_LEN + 4..DBLOCK_SIZE]
    );
    assert!(PaxosDblock::decode(&bytes).unwrap().verify().is_ok());
});
