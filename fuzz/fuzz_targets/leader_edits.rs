//! `direct write_leader -F FILE`: the `field value` text on any input,
//! never panicking; lines that are not `field value` are reported, and the
//! names written stay within 48 bytes.
#![no_main]

use hactl::direct::apply_leader_edits;
use hactl::ondisk::LeaderRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for is_ls in [true, false] {
        let mut lr = LeaderRecord::default();
        let edits = apply_leader_edits(&mut lr, &text, is_ls);
        assert!(edits.notes.len() <= text.split_inclusive('\n').count());
        assert!(lr.space_name.bytes().len() <= 48);
        let b = lr.encode();
        assert_eq!(LeaderRecord::decode(&b).unwrap(), lr);
    }
});
