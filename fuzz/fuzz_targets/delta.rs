//! A delta lease sector as a renewal reads it (`delta::verify_sector`):
//! never panics, accepts exactly what verify_delta accepts (sector size
//! aside, as sanlock), and a sector rebuilt from an accepted leader is
//! accepted again.
#![no_main]

use hactl::delta::{lease_sector, verify_sector};
use hactl::ondisk::{DecodeError, LeaderRecord, Name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: how long the lockspace name is; then the name, then the sector.
    let (n, rest) = match data.split_first() {
        Some((&n, rest)) => ((n as usize % 49).min(rest.len()), rest),
        None => return,
    };
    let Some(name) = Name::from_bytes(&rest[..n]) else {
        return;
    };
    let sector = &rest[n..];
    let r = verify_sector(sector, &name);
    match LeaderRecord::decode(sector) {
        Err(_) => assert!(r.is_err()),
        Ok(lr) => {
            let v = lr.verify_delta(Some(&name));
            let expect_ok = matches!(v, Ok(()) | Err(DecodeError::WrongSectorSize { .. }));
            assert_eq!(r.is_ok(), expect_ok, "{v:?}");
            if let Ok(got) = r {
                assert_eq!(got, lr);
                let mut again = got;
                let s = lease_sector(&mut again, 512, None);
                let back = verify_sector(&s, &name).expect("rebuilt sector verifies");
                assert_eq!(back.space_name, got.space_name);
                assert_eq!(back.timestamp, got.timestamp);
            }
        }
    }
});
