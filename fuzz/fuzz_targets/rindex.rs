//! RindexHeader and RindexEntry: the input is a header followed by entries;
//! each is decoded, verified where there is a verify, and round-tripped.
#![no_main]

use hactl::ondisk::rindex::{RINDEX_ENTRY_SIZE, RINDEX_HEADER_SIZE};
use hactl::ondisk::{
    DecodeError, Name, RINDEX_DISK_MAGIC, RINDEX_DISK_VERSION_MAJOR, RecordKind, RindexEntry,
    RindexHeader,
};
use libfuzzer_sys::fuzz_target;

fn check_entry(b: &[u8]) {
    let e = match RindexEntry::decode(b) {
        Err(err) => {
            assert!(
                b.len() < RINDEX_ENTRY_SIZE,
                "{} bytes refused: {err}",
                b.len()
            );
            assert_eq!(
                err,
                DecodeError::Short {
                    kind: RecordKind::RindexEntry,
                    need: RINDEX_ENTRY_SIZE,
                    got: b.len()
                }
            );
            return;
        }
        Ok(e) => e,
    };
    let enc = e.encode();
    assert_eq!(
        &enc[..],
        &b[..RINDEX_ENTRY_SIZE],
        "entry encode(decode(b)) != b"
    );
    assert_eq!(
        RindexEntry::decode(&enc).unwrap(),
        e,
        "entry decode(encode(x)) != x"
    );
    assert_eq!(
        e.is_free(),
        b[..8].iter().all(|&x| x == 0) && b[16] == 0,
        "is_free wrong for {e:?}"
    );
    let _ = e.name.to_string_lossy();
}

fuzz_target!(|data: &[u8]| {
    let h = match RindexHeader::decode(data) {
        Err(e) => {
            assert!(
                data.len() < RINDEX_HEADER_SIZE,
                "{} bytes refused: {e}",
                data.len()
            );
            assert_eq!(
                e,
                DecodeError::Short {
                    kind: RecordKind::RindexHeader,
                    need: RINDEX_HEADER_SIZE,
                    got: data.len()
                }
            );
            let _ = (e.to_string(), e.sanlk_rv());
            check_entry(data);
            return;
        }
        Ok(h) => h,
    };
    let enc = h.encode();
    assert_eq!(
        &enc[..],
        &data[..RINDEX_HEADER_SIZE],
        "header encode(decode(b)) != b"
    );
    assert_eq!(
        RindexHeader::decode(&enc).unwrap(),
        h,
        "header decode(encode(x)) != x"
    );

    // verify agrees with its definition
    let at = h.rx_offset;
    let v = h.verify(None, at);
    let ok = h.magic == RINDEX_DISK_MAGIC
        && h.version & 0xFFFF_0000 == RINDEX_DISK_VERSION_MAJOR
        && h.geometry().is_some();
    assert_eq!(v.is_ok(), ok, "verify(None, rx_offset) = {v:?} for {h:?}");
    let own = h.lockspace_name;
    assert_eq!(h.verify(Some(&own), at).is_ok(), ok);
    assert!(
        h.verify(None, at ^ 1).is_err(),
        "header verified at the wrong offset"
    );
    let other = Name::new("\u{1}not-this-lockspace").unwrap();
    if !own.same_as(&other) {
        assert!(h.verify(Some(&other), at).is_err());
    }
    if let Err(e) = v {
        let _ = (e.to_string(), e.sanlk_rv());
    }
    if let Some(g) = h.geometry() {
        assert!(g.max_hosts() > 0);
        let _ = (g.max_resources(), g.sectors_per_area());
    }

    // then the entries, packed after the header
    let rest = &data[RINDEX_HEADER_SIZE..];
    for chunk in rest.chunks(RINDEX_ENTRY_SIZE) {
        check_entry(chunk);
    }
});
