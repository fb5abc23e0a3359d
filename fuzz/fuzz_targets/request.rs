//! RequestRecord: decode any bytes, verify, and round-trip (the 4 tail
//! bytes are padding and are not expected to survive).
#![no_main]

use hactl::ondisk::request::REQUEST_SIZE;
use hactl::ondisk::{
    DecodeError, REQ_DISK_MAGIC, REQ_DISK_VERSION_MAJOR, RecordKind, RequestRecord,
};
use libfuzzer_sys::fuzz_target;

/// Bytes 20..24 are the C struct's tail padding.
const PAD: std::ops::Range<usize> = 20..24;

fuzz_target!(|data: &[u8]| {
    let rr = match RequestRecord::decode(data) {
        Err(e) => {
            assert!(
                data.len() < REQUEST_SIZE,
                "{} bytes refused: {e}",
                data.len()
            );
            assert_eq!(
                e,
                DecodeError::Short {
                    kind: RecordKind::Request,
                    need: REQUEST_SIZE,
                    got: data.len()
                }
            );
            let _ = (e.to_string(), e.sanlk_rv());
            return;
        }
        Ok(rr) => rr,
    };
    let enc = rr.encode();
    assert_eq!(
        &enc[..PAD.start],
        &data[..PAD.start],
        "encode(decode(b)) != b"
    );
    assert_eq!(&enc[PAD.end..], &data[PAD.end..REQUEST_SIZE]);
    assert_eq!(&enc[PAD], &[0u8; 4], "padding not zeroed");
    assert_eq!(
        RequestRecord::decode(&enc).unwrap(),
        rr,
        "decode(encode(x)) != x"
    );

    let v = rr.verify();
    let ok = rr.magic == REQ_DISK_MAGIC && rr.version & 0xFFFF_0000 == REQ_DISK_VERSION_MAJOR;
    assert_eq!(v.is_ok(), ok, "verify() = {v:?} for {rr:?}");
    if let Err(e) = v {
        let _ = (e.to_string(), e.sanlk_rv());
    }
    assert!(RequestRecord::fresh().verify().is_ok());
});
