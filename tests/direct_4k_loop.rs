//! 4K-sector block devices (loop devices with `--sector-size 4096`): the
//! sector size is taken from the device, both tools agree on what is there,
//! and hactl refuses layouts the device cannot hold without writing a byte.

mod common;

use common::*;

const MIB: usize = 1 << 20;

fn image(dir: &std::path::Path, name: &str, size: usize) -> std::path::PathBuf {
    let f = dir.join(name);
    make_file(&f, size, 0x5A);
    f
}

#[test]
fn lockspace_and_resources_on_4k_loop_devices() {
    let mut t = Tally("4K loop", 0);
    let dir = workdir();
    let (ia, ib) = (
        image(dir.path(), "a.img", 24 * MIB),
        image(dir.path(), "b.img", 24 * MIB),
    );
    let (la, lb) = (LoopDev::new(&ia, 4096), LoopDev::new(&ib, 4096));

    // No -Z/-A: both read 4096 from the device and use the 8M default.
    let o = run(
        sanlock(),
        &["direct", "init", "-s", &format!("LS:0:{}:0", la.dev)],
    );
    assert_eq!(o.code, 0, "{}", o.text());
    let o = run(
        hactl(),
        &["direct", "init", "-s", &format!("LS:0:{}:0", lb.dev)],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    for args in [["-Z", "4096", "-A", "8M"], ["-Z", "4096", "-A", "2M"]] {
        let off = if args[3] == "8M" { 8 * MIB } else { 16 * MIB };
        for (bin, dev) in [(sanlock(), &la.dev), (hactl(), &lb.dev)] {
            let mut a = vec!["direct", "init", "-r"];
            let r = format!("LS:R{}:{dev}:{off}", args[3]);
            a.push(&r);
            a.extend_from_slice(&args);
            let o = run(bin, &a);
            assert_eq!(o.code, 0, "{bin} {a:?}: {} {}", o.text(), o.stderr);
        }
    }
    let (mut ab, mut bb) = (std::fs::read(&ia).unwrap(), std::fs::read(&ib).unwrap());
    for b in [&mut ab, &mut bb] {
        mask_request_padding(b, 8 * MIB, 4096);
        mask_request_padding(b, 16 * MIB, 4096);
    }
    t.same("4K device contents", &bb, &ab);
    assert_guards(&bb, 0, 18 * MIB, 0x5A, "4K inits");

    for dev in [&la.dev, &lb.dev] {
        for args in [
            vec![
                "direct".to_string(),
                "read_leader".into(),
                "-s".into(),
                format!("LS:1:{dev}:0"),
            ],
            vec![
                "direct".to_string(),
                "read_leader".into(),
                "-s".into(),
                format!("LS:2000:{dev}:0"),
            ],
            vec![
                "direct".to_string(),
                "read_leader".into(),
                "-r".into(),
                format!("LS:R8M:{dev}:8M"),
            ],
            vec![
                "direct".to_string(),
                "dump".into(),
                dev.clone(),
                "-f".into(),
                "1".into(),
            ],
            vec![
                "direct".to_string(),
                "dump".into(),
                format!("{dev}:16M"),
                "-f".into(),
                "1".into(),
            ],
        ] {
            let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let (ours, theirs) = (run(hactl(), &a), run(sanlock(), &a));
            t.same(&format!("{a:?}"), &ours.stdout, &theirs.stdout);
            assert_eq!(ours.code, theirs.code);
        }
    }
    let rl = run(
        hactl(),
        &["direct", "read_leader", "-s", &format!("LS:1:{}:0", lb.dev)],
    )
    .text();
    assert!(
        rl.contains("\nsector_size 4096\n") && rl.contains("\nflags 0x80\n"),
        "{rl}"
    );

    // A 512-byte layout cannot live on a 4K device; a lease past the end of
    // the device cannot be written. Both refused before any write.
    let before = std::fs::read(&ib).unwrap();
    for args in [
        vec![
            "direct".to_string(),
            "init".into(),
            "-s".into(),
            format!("LS:0:{}:16M", lb.dev),
            "-Z".into(),
            "512".into(),
            "-A".into(),
            "1M".into(),
        ],
        vec![
            "direct".to_string(),
            "init".into(),
            "-r".into(),
            format!("LS:BIG:{}:20M", lb.dev),
            "-Z".into(),
            "4096".into(),
            "-A".into(),
            "8M".into(),
        ],
        vec![
            "direct".to_string(),
            "format".into(),
            "-x".into(),
            format!("LS:{}:16M", lb.dev),
            "-Z".into(),
            "4096".into(),
            "-A".into(),
            "8M".into(),
        ],
    ] {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o = run(hactl(), &a);
        assert_eq!(o.code, 1, "{a:?} should be refused: {}", o.text());
        assert!(!o.stderr.is_empty(), "{a:?}: no explanation");
        assert_eq!(
            std::fs::read(&ib).unwrap(),
            before,
            "{a:?} wrote to the device"
        );
    }
}
