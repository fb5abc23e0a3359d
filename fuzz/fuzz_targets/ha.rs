//! The HA layer's decoders: whiteboard sectors (cluster and host, 512 and
//! 4096 bytes) never panic, and whatever decodes re-encodes to a sector that
//! decodes to the same value; the HA config (TOML) never panics and what it
//! accepts is valid and has VM names it can look up.
#![no_main]

use hactl::ha::config::Config;
use hactl::ha::whiteboard::{ClusterSector, HostSector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for size in [512usize, 4096] {
        let mut b = data.to_vec();
        b.resize(size, 0);
        if let Ok(Some(c)) = ClusterSector::decode(&b) {
            assert_eq!(ClusterSector::decode(&c.encode()).unwrap(), Some(c));
        }
        // Sector 0 would be the cluster's; try the host_id the bytes claim
        // and a fixed one, so both the match and the mismatch paths run.
        let claimed = u64::from_le_bytes(b[12..20].try_into().unwrap());
        for sector in [claimed, 3] {
            if let Ok(Some(h)) = HostSector::decode(sector, &b) {
                assert_eq!(h.host_id, sector);
                let again = HostSector::decode(sector, &h.encode(size as u32)).unwrap();
                assert_eq!(again, Some(h));
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = Config::parse(text) {
            assert!(cfg.validate().is_ok(), "parse accepted an invalid config");
            for (i, vm) in cfg.vms.iter().enumerate() {
                assert_eq!(cfg.vm_index(&vm.name), Some(i));
            }
            let _ = cfg.digest();
        }
    }
});
