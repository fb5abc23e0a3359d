//! The wdmd protocol header: decode is total over its 112 bytes and
//! encode(decode(b)) == b; the name stops at the first NUL.
#![no_main]

use hactl::wdmd::{HEADER_SIZE, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks_exact(HEADER_SIZE) {
        let b: &[u8; HEADER_SIZE] = chunk.try_into().unwrap();
        let h = Header::decode(b);
        assert_eq!(&h.encode(), b, "encode(decode(b)) != b");
        assert_eq!(Header::decode(&h.encode()), h);
        let name = h.name_str();
        assert!(!name.contains('\0'));
    }
});
