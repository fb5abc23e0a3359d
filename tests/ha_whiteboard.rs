//! The whiteboard on real storage: a file with 512-byte sectors and a loop
//! device with 4096-byte sectors, through O_DIRECT; writes stay in their
//! sector; damage is reported, never written over.

mod common;

use std::path::Path;

use common::{LoopDev, make_file, workdir};
use hactl::ha::whiteboard::{HostSector, SectorError, VmBitmap, Whiteboard};

fn sector(h: u64, seq: u64) -> HostSector {
    HostSector {
        host_id: h,
        generation: 3,
        seq,
        written_unix: 1_700_000_000 + seq,
        score: 3400,
        flags: 0,
        config_digest: 0x1234_5678,
        running: VmBitmap::from_indexes([h as usize, 100]),
        failed: VmBitmap::default(),
        fence: Default::default(),
        health: Default::default(),
    }
}

/// format, write two hosts, read all back, flip global maintenance.
fn round_trip(path: &Path, ss: u32) {
    Whiteboard::format(path, ss, 4).unwrap();
    let wb = Whiteboard::open(path, ss).unwrap();
    let r = wb.read_all(4).unwrap();
    let c = r.cluster.as_ref().unwrap().unwrap();
    assert_eq!(c.sector_size, ss);
    assert!(!c.global_maintenance());
    assert_eq!(r.hosts.len(), 4);
    assert!(
        r.hosts.iter().all(|(_, s)| matches!(s, Ok(None))),
        "fresh board: never written"
    );

    wb.write_host(&sector(2, 1)).unwrap();
    wb.write_host(&sector(4, 9)).unwrap();
    wb.write_host(&sector(2, 2)).unwrap();
    let r = wb.read_all(4).unwrap();
    assert_eq!(r.host(2), Some(&sector(2, 2)));
    assert_eq!(r.host(4), Some(&sector(4, 9)));
    assert_eq!(r.host(1), None);
    assert_eq!(r.host(3), None);

    let c = wb.set_global_maintenance(true, 4).unwrap();
    assert!(c.global_maintenance());
    let r = wb.read_all(4).unwrap();
    assert!(r.global_maintenance());
    assert_eq!(r.cluster.as_ref().unwrap().unwrap().set_by_host, 4);
    assert_eq!(
        r.host(2),
        Some(&sector(2, 2)),
        "the flag write left host sectors alone"
    );
    wb.set_global_maintenance(false, 1).unwrap();
    assert!(!wb.read_all(4).unwrap().global_maintenance());

    // Opened with the other sector size: a clear error, not a misread.
    let other = if ss == 512 { 4096 } else { 512 };
    match Whiteboard::open(path, other) {
        Err(e) => assert!(e.to_string().contains("sector"), "{e}"),
        Ok(wb2) => {
            // A file formatted for 512 x 5 is also too short for 4096.
            let e = wb2.read_cluster().unwrap_err().to_string();
            assert!(
                e.contains(&format!("formatted with {ss}-byte sectors")) || e.contains("too short"),
                "{e}"
            );
        }
    }
}

#[test]
fn file_with_512_byte_sectors() {
    let dir = workdir();
    let path = dir.path().join("wb");
    round_trip(&path, 512);
    // The agents read no further than the area has room for: a lockspace
    // may have hosts (non-HA ones) with higher ids than the board's sectors.
    let wb = Whiteboard::open(&path, 512).unwrap();
    assert_eq!(wb.capacity(), 4, "formatted for 4 hosts in a file");
    assert!(wb.read_all(wb.capacity()).is_ok());
    assert!(
        wb.read_all(wb.capacity() + 1).is_err(),
        "past the area's end"
    );
}

#[test]
fn loop_device_with_4096_byte_sectors() {
    let dir = workdir();
    let img = dir.path().join("img");
    make_file(&img, 1 << 20, 0);
    let dev = LoopDev::new(&img, 4096);
    round_trip(Path::new(&dev.dev), 4096);
    // A 512-byte layout cannot live on 4K sectors.
    let e = Whiteboard::open(Path::new(&dev.dev), 512)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("4096-byte sectors"), "{e}");
}

#[test]
fn writes_stay_in_their_sector() {
    let dir = workdir();
    let path = dir.path().join("wb");
    let ss = 512usize;
    // Whiteboard for 3 hosts, then guard bytes after it.
    make_file(&path, ss * 8, 0xa5);
    std::fs::write(&path, {
        let mut b = vec![0u8; ss * 4];
        b.extend(vec![0xa5u8; ss * 4]);
        b
    })
    .unwrap();
    Whiteboard::format(&path, 512, 3).unwrap();
    let wb = Whiteboard::open(&path, 512).unwrap();
    wb.write_host(&sector(3, 1)).unwrap();
    wb.set_global_maintenance(true, 3).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes[ss * 4..].iter().all(|&b| b == 0xa5),
        "bytes past the whiteboard changed"
    );
    assert!(
        bytes[ss..3 * ss].iter().all(|&b| b == 0),
        "hosts 1 and 2 untouched"
    );
    // A host id out of range is refused before any I/O.
    let bad = HostSector {
        host_id: 2001,
        ..sector(1, 1)
    };
    let e = wb.write_host(&bad).unwrap_err().to_string();
    assert!(e.contains("host_id 2001"), "{e}");
}

#[test]
fn damage_is_reported_per_sector_and_not_overwritten() {
    let dir = workdir();
    let path = dir.path().join("wb");
    Whiteboard::format(&path, 512, 3).unwrap();
    let wb = Whiteboard::open(&path, 512).unwrap();
    wb.write_host(&sector(1, 1)).unwrap();
    wb.write_host(&sector(2, 1)).unwrap();
    // One bit flips in host 2's sector.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2 * 512 + 70] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let r = wb.read_all(3).unwrap();
    assert_eq!(r.host(1), Some(&sector(1, 1)), "other sectors still read");
    assert!(matches!(
        r.hosts[1].1,
        Err(SectorError::BadChecksum { sector: 2, .. })
    ));
    assert!(
        r.hosts[1]
            .1
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("damaged")
    );
    // Its owner rewriting it heals it.
    wb.write_host(&sector(2, 2)).unwrap();
    assert_eq!(wb.read_all(3).unwrap().host(2), Some(&sector(2, 2)));

    // A damaged sector 0: global maintenance cannot be set over it.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[30] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let e = wb.set_global_maintenance(true, 1).unwrap_err().to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing written");
}

#[test]
fn format_refuses_foreign_data_and_short_reads_are_errors() {
    let dir = workdir();
    let path = dir.path().join("wb");
    make_file(&path, 4096, 0x41);
    let e = Whiteboard::format(&path, 512, 3).unwrap_err().to_string();
    assert!(e.contains("holds something else"), "{e}");
    assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0x41));
    // Unformatted: global maintenance is refused.
    let zero = dir.path().join("zero");
    make_file(&zero, 4096, 0);
    let wb = Whiteboard::open(&zero, 512).unwrap();
    let e = wb.set_global_maintenance(true, 1).unwrap_err().to_string();
    assert!(e.contains("not formatted"), "{e}");
    // A board for 3 hosts read as if it had 20.
    let small = dir.path().join("small");
    Whiteboard::format(&small, 512, 3).unwrap();
    let e = Whiteboard::open(&small, 512)
        .unwrap()
        .read_all(20)
        .unwrap_err()
        .to_string();
    assert!(e.contains("too short"), "{e}");
}
