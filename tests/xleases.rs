//! vdsm's xleases volume written by `hactl xleases`: the bytes are the ones
//! vdsm's `lib/vdsm/storage/xlease.py` describes, each lease is a resource
//! the real sanlock reads and acquires at the offset hactl gave, refusals
//! write nothing, and rebuild restores the index from the leases.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use hactl::ondisk::{LeaderRecord, PAXOS_DISK_MAGIC};

const MIB: usize = 1 << 20;
const INDEX_SIZE: usize = 62 * 4096;
const GUARD: u8 = 0x5A;

fn x(args: &[&str]) -> Out {
    let mut a = vec!["xleases"];
    a.extend_from_slice(args);
    run(hactl(), &a)
}

fn ok(args: &[&str]) -> String {
    let o = x(args);
    assert_eq!(o.code, 0, "hactl xleases {args:?}: {}", o.stderr);
    o.text()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Fails if any byte outside `written` (sorted, disjoint ranges) is not `GUARD`.
fn assert_only(bytes: &[u8], written: &[(usize, usize)], what: &str) {
    let mut from = 0;
    for &(s, e) in written.iter().chain([(bytes.len(), bytes.len())].iter()) {
        if let Some(i) = bytes[from..s].iter().position(|&b| b != GUARD) {
            panic!(
                "{what}: byte {} outside the areas hactl may write was changed to {:#x}",
                from + i,
                bytes[from + i]
            );
        }
        from = e;
    }
}

/// The metadata block, field by field as vdsm's `>i x 4s x 48s x 10s x c 440x c`.
fn check_metadata(b: &[u8], lockspace: &str, t0: u64, t1: u64) {
    assert_eq!(&b[0..4], &[0x12, 0x15, 0x20, 0x16], "magic, big-endian");
    assert_eq!(b[4], 0);
    assert_eq!(&b[5..9], b"0001", "version %04d");
    assert_eq!(b[9], 0);
    let mut ls = [0u8; 48];
    ls[..lockspace.len()].copy_from_slice(lockspace.as_bytes());
    assert_eq!(&b[10..58], &ls, "lockspace, NUL padded");
    assert_eq!(b[58], 0);
    let mtime: u64 = std::str::from_utf8(&b[59..69]).unwrap().parse().unwrap();
    assert!(
        (t0..=t1).contains(&mtime),
        "mtime {mtime} not in {t0}..{t1}"
    );
    assert_eq!(b[69], 0);
    assert_eq!(b[70], b'-', "updating flag clear");
    assert!(b[71..511].iter().all(|&c| c == 0), "padding");
    assert_eq!(b[511], b'\n');
}

/// One record as vdsm's `48s x 11s x 3c`.
fn record_bytes(id: &str, offset: u64) -> [u8; 64] {
    let mut r = [0u8; 64];
    r[..id.len()].copy_from_slice(id.as_bytes());
    r[49..60].copy_from_slice(format!("{offset:011}").as_bytes());
    r[61..64].copy_from_slice(b"--\n");
    r
}

fn record_at(bytes: &[u8], index: usize, n: usize) -> &[u8] {
    let at = index + 512 + n * 64;
    &bytes[at..at + 64]
}

/// The slot sanlock's own `direct init -r` writes for the same resource
/// (vdsm writes leases with sanlock's write_resource, the same
/// paxos_lease_init), at the same offset of a scratch file.
fn sanlock_slot(dir: &Path, res: &str, off: usize, ss: usize, align: &str) -> Vec<u8> {
    let f = dir.join(format!("ref-{res}-{off}"));
    let a = if align == "8M" { 8 * MIB } else { MIB };
    make_file(&f, off + a, 0);
    let o = run(
        sanlock(),
        &[
            "direct",
            "init",
            "-r",
            &format!("LS:{res}:{}:{off}", p(&f)),
            "-Z",
            &ss.to_string(),
            "-A",
            align,
        ],
    );
    assert_eq!(o.code, 0, "sanlock direct init -r: {}", o.text());
    let mut b = std::fs::read(&f).unwrap()[off..off + a].to_vec();
    mask_request_padding(&mut b, 0, ss);
    b
}

fn slot(bytes: &[u8], off: usize, len: usize, ss: usize) -> Vec<u8> {
    let mut b = bytes[off..off + len].to_vec();
    mask_request_padding(&mut b, 0, ss);
    b
}

fn leader(bytes: &[u8], off: usize) -> LeaderRecord {
    LeaderRecord::decode(&bytes[off..off + 512]).unwrap()
}

/// A lease vdsm's remove leaves: a valid leader with empty names.
fn assert_cleared(bytes: &[u8], off: usize) {
    let lr = leader(bytes, off);
    assert_eq!(lr.magic, PAXOS_DISK_MAGIC);
    assert!(lr.space_name.is_empty() && lr.resource_name.is_empty());
    lr.verify_paxos(None, None, 0)
        .expect("cleared leader is valid");
}

fn read_leader(target: &str) -> Out {
    run(sanlock(), &["direct", "read_leader", "-r", target])
}

#[test]
fn xleases_512_file_has_vdsms_layout_and_sanlock_reads_the_leases() {
    let mut t = Tally("xleases 512", 0);
    let dir = workdir();
    let f = dir.path().join("xleases");
    let fs = p(&f);
    make_file(&f, 16 * MIB, GUARD);

    let t0 = now();
    let out = ok(&["format", "-p", fs, "-s", "LS"]);
    assert!(out.contains("512") && out.contains("1M"), "{out}");
    let t1 = now();
    let b = std::fs::read(&f).unwrap();
    check_metadata(&b[MIB..MIB + 512], "LS", t0, t1);
    let empty = record_bytes("", 0);
    for n in 0..3960 {
        assert_eq!(record_at(&b, MIB, n), empty, "record {n} after format");
    }
    assert_only(&b, &[(MIB, MIB + INDEX_SIZE)], "format");

    let long_id = "0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(
        ok(&["add", "-p", fs, "vm-1"]).trim(),
        format!("LS:vm-1:{fs}:{}", 3 * MIB)
    );
    ok(&["add", "-p", fs, "vm-2"]);
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["add", "-p", fs, long_id, "--json"])).unwrap();
    assert_eq!(j["offset"], 5 * MIB);
    assert_eq!(j["lockspace"], "LS");
    assert_eq!(j["path"], fs);

    let b = std::fs::read(&f).unwrap();
    check_metadata(&b[MIB..MIB + 512], "LS", t0, t1);
    assert_eq!(record_at(&b, MIB, 0), record_bytes("vm-1", 3 * MIB as u64));
    assert_eq!(&record_at(&b, MIB, 1)[49..60], b"00004194304");
    assert_eq!(record_at(&b, MIB, 2), record_bytes(long_id, 5 * MIB as u64));
    assert_eq!(record_at(&b, MIB, 3), empty);
    assert_only(&b, &[(MIB, MIB + INDEX_SIZE), (3 * MIB, 6 * MIB)], "add");
    for (i, id) in ["vm-1", "vm-2", long_id].iter().enumerate() {
        let off = (3 + i) * MIB;
        t.same(
            &format!("slot of {id}"),
            &slot(&b, off, MIB, 512),
            &sanlock_slot(dir.path(), id, off, 512, "1M"),
        );
        let o = read_leader(&format!("LS:{id}:{fs}:{off}"));
        assert_eq!(o.code, 0, "sanlock read_leader {id}: {}", o.text());
        let txt = o.text();
        for want in [
            "flags 0x10\n",
            "sector_size 512\n",
            "num_hosts 2000\n",
            "space_name LS\n",
            &format!("resource_name {id}\n"),
        ] {
            assert!(txt.contains(want), "{want:?} missing in\n{txt}");
        }
    }
    let dump = run(sanlock(), &["direct", "dump", &format!("{fs}:{}", 3 * MIB)]).text();
    for (off, id) in [(3 * MIB, "vm-1"), (4 * MIB, "vm-2"), (5 * MIB, long_id)] {
        assert!(
            dump.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() > 3 && w[0] == format!("{off:08}") && w[1] == "LS" && w[2] == id
            }),
            "sanlock dump has no {id} at {off}:\n{dump}"
        );
    }

    assert_eq!(
        ok(&["lookup", "-p", fs, "vm-2"]).trim(),
        format!("LS:vm-2:{fs}:{}", 4 * MIB)
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&["list", "-p", fs, "--json"])).unwrap();
    let ids: Vec<(&str, u64)> = j["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["resource"].as_str().unwrap(),
                l["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("vm-1", 3 * MIB as u64),
            ("vm-2", 4 * MIB as u64),
            (long_id, 5 * MIB as u64)
        ]
    );
    assert_eq!(j["metadata"]["lockspace"], "LS");

    // Remove: the record is vdsm's empty record again, the slot a leader
    // with empty names; the freed record is the next one used.
    let before = std::fs::read(&f).unwrap();
    ok(&["remove", "-p", fs, "vm-1"]);
    let b = std::fs::read(&f).unwrap();
    assert_eq!(record_at(&b, MIB, 0), empty);
    assert_eq!(
        &b[MIB + 512 + 64..MIB + INDEX_SIZE],
        &before[MIB + 512 + 64..MIB + INDEX_SIZE]
    );
    assert_cleared(&b, 3 * MIB);
    let o = read_leader(&format!("LS:vm-1:{fs}:{}", 3 * MIB));
    assert_ne!(o.code, 0, "sanlock still reads vm-1 after remove");
    assert_eq!(x(&["lookup", "-p", fs, "vm-1"]).code, 3);
    assert_eq!(
        ok(&["add", "-p", fs, "vm-3"]).trim(),
        format!("LS:vm-3:{fs}:{}", 3 * MIB)
    );
    assert_only(
        &std::fs::read(&f).unwrap(),
        &[(MIB, MIB + INDEX_SIZE), (3 * MIB, 6 * MIB)],
        "remove and add",
    );
}

#[test]
fn xleases_on_4k_loop_device_uses_8m_slots() {
    let mut t = Tally("xleases 4K", 0);
    let dir = workdir();
    let img = dir.path().join("x.img");
    make_file(&img, 48 * MIB, GUARD);
    let lo = LoopDev::new(&img, 4096);
    let dev = lo.dev.as_str();

    // A 512-byte layout cannot live on 4K sectors: refused, nothing written.
    let o = x(&["format", "-p", dev, "-s", "LS", "-Z", "512"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("4096"), "{}", o.stderr);
    assert_only(&std::fs::read(&img).unwrap(), &[], "refused 512 format");

    let t0 = now();
    let out = ok(&["format", "-p", dev, "-s", "LS"]);
    assert!(out.contains("4096") && out.contains("8M"), "{out}");
    let t1 = now();
    let idx = 8 * MIB;
    // No -A: the index is found at 8M.
    for (i, id) in ["vm-a", "vm-b", "vm-c"].iter().enumerate() {
        assert_eq!(
            ok(&["add", "-p", dev, id]).trim(),
            format!("LS:{id}:{dev}:{}", (3 + i) * 8 * MIB)
        );
    }
    // Three 8M slots fit in 48M; the fourth record's slot does not.
    let before = std::fs::read(&img).unwrap();
    let o = x(&["add", "-p", dev, "vm-d"]);
    assert_eq!(o.code, 5, "{}", o.stderr);
    assert!(o.stderr.contains("extend the volume"), "{}", o.stderr);
    assert_eq!(std::fs::read(&img).unwrap(), before, "refused add wrote");

    let b = before;
    check_metadata(&b[idx..idx + 512], "LS", t0, t1);
    assert_eq!(record_at(&b, idx, 0), record_bytes("vm-a", 24 * MIB as u64));
    assert_eq!(&record_at(&b, idx, 1)[49..60], b"00033554432");
    assert_eq!(&record_at(&b, idx, 2)[49..60], b"00041943040");
    assert_eq!(record_at(&b, idx, 3), record_bytes("", 0));
    assert_only(
        &b,
        &[(idx, idx + INDEX_SIZE), (24 * MIB, 48 * MIB)],
        "4K adds",
    );
    t.same(
        "4K slot of vm-b",
        &slot(&b, 32 * MIB, 8 * MIB, 4096),
        &sanlock_slot(dir.path(), "vm-b", 32 * MIB, 4096, "8M"),
    );
    let o = read_leader(&format!("LS:vm-b:{dev}:{}", 32 * MIB));
    assert_eq!(o.code, 0, "{}", o.text());
    assert!(
        o.text().contains("flags 0x80\nsector_size 4096\n"),
        "{}",
        o.text()
    );

    ok(&["remove", "-p", dev, "vm-b"]);
    let b = std::fs::read(&img).unwrap();
    assert_eq!(record_at(&b, idx, 1), record_bytes("", 0));
    assert_cleared(&b, 32 * MIB);
    let l = ok(&["list", "-p", dev]);
    assert_eq!(
        l.lines().skip(1).collect::<Vec<_>>(),
        ["vm-a 25165824", "vm-c 41943040"]
    );
    assert!(l.starts_with("lockspace LS version 1 mtime "), "{l}");
    assert!(
        l.lines()
            .next()
            .unwrap()
            .ends_with("sector_size 4096 align_size 8M")
    );
}

#[test]
fn xleases_refusals_write_nothing() {
    let dir = workdir();
    let f = dir.path().join("xleases");
    let fs = p(&f);
    make_file(&f, 8 * MIB, GUARD);
    let same = |what: &str, before: &[u8]| {
        assert!(
            std::fs::read(&f).unwrap() == before,
            "{what} changed the volume"
        );
    };

    // Never formatted: no index.
    let o = x(&["lookup", "-p", fs, "vm-1"]);
    assert_eq!(o.code, 6, "{}", o.stderr);
    assert!(o.stderr.contains("magic"), "{}", o.stderr);
    let o = x(&["add", "-p", fs, "vm-1"]);
    assert_eq!(o.code, 6);
    same("add without index", &vec![GUARD; 8 * MIB]);

    // A sanlock lockspace where the index would go: not formatted over.
    let o = run(
        sanlock(),
        &["direct", "init", "-s", &format!("LS:0:{fs}:{MIB}")],
    );
    assert_eq!(o.code, 0);
    let b = std::fs::read(&f).unwrap();
    let o = x(&["format", "-p", fs, "-s", "LS"]);
    assert_eq!(o.code, 7, "{}", o.stderr);
    assert!(o.stderr.contains("delta lease"), "{}", o.stderr);
    same("format over a lockspace", &b);
    ok(&["format", "-p", fs, "-s", "LS", "--force"]);

    ok(&["add", "-p", fs, "vm-1"]);
    let b = std::fs::read(&f).unwrap();
    for (args, code, what) in [
        (vec!["add", "-p", fs, "vm-1"], 4, "duplicate add"),
        (
            vec!["remove", "-p", fs, "vm-9"],
            3,
            "remove of a missing lease",
        ),
        (
            vec!["lookup", "-p", fs, "vm-9"],
            3,
            "lookup of a missing lease",
        ),
        (
            vec!["format", "-p", fs, "-s", "LS"],
            7,
            "format over leases",
        ),
        (vec!["add", "-p", fs, &"a".repeat(49)], 2, "49-byte id"),
        (vec!["add", "-p", fs, "vm-é"], 2, "non-ASCII id"),
        (vec!["add", "-p", fs, "x", "-A", "8M"], 2, "512/8M"),
    ] {
        let o = x(&args);
        assert_eq!(o.code, code, "{what}: {}", o.stderr);
        assert!(!o.stderr.is_empty(), "{what}: no reason given");
        same(what, &b);
    }

    // Damaged metadata: bad magic, unknown version. Nothing is written.
    for (at, byte, says) in [(MIB, 0x13u8, "magic"), (MIB + 8, b'2', "version")] {
        let mut d = b.clone();
        d[at] = byte;
        std::fs::write(&f, &d).unwrap();
        for args in [
            vec!["lookup", "-p", fs, "vm-1"],
            vec!["list", "-p", fs],
            vec!["add", "-p", fs, "vm-2"],
            vec!["remove", "-p", fs, "vm-1"],
            vec!["rebuild", "-p", fs],
        ] {
            let o = x(&args);
            assert_eq!(o.code, 6, "{args:?} on bad {says}: {}", o.stderr);
            assert!(o.stderr.contains(says), "{}", o.stderr);
            same(&format!("{args:?} on bad {says}"), &d);
        }
    }

    // An index left "updating" is refused until rebuilt.
    let mut d = b.clone();
    d[MIB + 70] = b'u';
    std::fs::write(&f, &d).unwrap();
    let o = x(&["add", "-p", fs, "vm-2"]);
    assert_eq!(o.code, 6);
    assert!(o.stderr.contains("updating"), "{}", o.stderr);
    same("add on an updating index", &d);
    ok(&["rebuild", "-p", fs]);
    assert_eq!(std::fs::read(&f).unwrap()[MIB + 70], b'-');
    assert_eq!(
        ok(&["lookup", "-p", fs, "vm-1"]).trim(),
        format!("LS:vm-1:{fs}:{}", 3 * MIB)
    );

    // Too small to hold the reserved slots.
    let small = dir.path().join("small");
    make_file(&small, 2 * MIB, GUARD);
    let o = x(&["format", "-p", p(&small), "-s", "LS"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("at least"), "{}", o.stderr);
    assert_only(
        &std::fs::read(&small).unwrap(),
        &[],
        "format of a small file",
    );
}

#[test]
fn xleases_rebuild_restores_index_from_leases() {
    let dir = workdir();
    let f = dir.path().join("xleases");
    let fs = p(&f);
    make_file(&f, 12 * MIB, GUARD);
    ok(&["format", "-p", fs, "-s", "LS"]);
    for id in ["a", "b", "c", "d"] {
        ok(&["add", "-p", fs, id]);
    }
    let good = std::fs::read(&f).unwrap();
    let rec = |n: usize| MIB + 512 + n * 64;
    let idx_no_mtime = |b: &[u8]| {
        let mut i = b[MIB..MIB + INDEX_SIZE].to_vec();
        i[59..69].fill(b'0');
        i
    };

    // Every record unreadable (zeroed), metadata intact: all four come back
    // from the leases, byte for byte.
    let mut d = good.clone();
    d[rec(0)..MIB + INDEX_SIZE].fill(0);
    std::fs::write(&f, &d).unwrap();
    let out = ok(&["rebuild", "-p", fs]);
    assert_eq!(
        out.matches("record restored from lease").count(),
        4,
        "{out}"
    );
    let b = std::fs::read(&f).unwrap();
    assert_eq!(idx_no_mtime(&b), idx_no_mtime(&good));
    assert_eq!(&b[3 * MIB..], &good[3 * MIB..], "rebuild touched a lease");

    // One damage of each kind vdsm's rebuild_index handles:
    let mut d = good.clone();
    d[rec(0) + 50] = b'x'; // a's offset field unparsable: restored from a's lease
    d[rec(1)..rec(1) + 64].copy_from_slice(&record_bytes("", 0)); // b: leftover lease
    d[5 * MIB..6 * MIB].fill(0); // c's lease missing: rewritten from its record
    std::fs::write(&f, &d).unwrap();
    // d's slot holds another resource name: renamed back to the record's.
    let o = run(
        sanlock(),
        &[
            "direct",
            "init",
            "-r",
            &format!("LS:other:{fs}:{}", 6 * MIB),
        ],
    );
    assert_eq!(o.code, 0);
    let j: serde_json::Value = serde_json::from_str(&ok(&["rebuild", "-p", fs, "--json"])).unwrap();
    let acts: Vec<(u64, &str)> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["recnum"].as_u64().unwrap(), a["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        acts,
        [
            (0, "record restored from lease"),
            (1, "leftover lease cleared"),
            (2, "missing lease written"),
            (3, "lease renamed to its record"),
        ]
    );
    let b = std::fs::read(&f).unwrap();
    assert_eq!(record_at(&b, MIB, 0), record_bytes("a", 3 * MIB as u64));
    assert_eq!(record_at(&b, MIB, 1), record_bytes("", 0));
    assert_cleared(&b, 4 * MIB);
    for (id, off) in [("a", 3), ("c", 5), ("d", 6)] {
        let o = read_leader(&format!("LS:{id}:{fs}:{}", off * MIB));
        assert_eq!(o.code, 0, "{id} after rebuild: {}", o.text());
    }
    assert_eq!(
        ok(&["list", "-p", fs]).lines().skip(1).collect::<Vec<_>>(),
        ["a 3145728", "c 5242880", "d 6291456"]
    );

    // A lease with a bad checksum: rebuild cannot judge it and writes nothing.
    let mut d = std::fs::read(&f).unwrap();
    d[5 * MIB + 40] ^= 1;
    d[rec(0) + 50] = b'x';
    std::fs::write(&f, &d).unwrap();
    let o = x(&["rebuild", "-p", fs]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("checksum"), "{}", o.stderr);
    assert!(std::fs::read(&f).unwrap() == d, "refused rebuild wrote");
}

#[test]
fn real_sanlock_acquires_the_lease_hactl_added() {
    let dir = workdir();
    let (ids, xl) = (dir.path().join("ids"), dir.path().join("xleases"));
    make_file(&ids, MIB, 0);
    make_file(&xl, 8 * MIB, 0);
    let (is, xs) = (p(&ids), p(&xl));
    let o = run(
        sanlock(),
        &["direct", "init", "-s", &format!("LS:0:{is}:0"), "-o", "1"],
    );
    assert_eq!(o.code, 0);
    ok(&["format", "-p", xs, "-s", "LS"]);
    ok(&["add", "-p", xs, "vm-0"]);
    let res = ok(&["add", "-p", xs, "vm-1"]).trim().to_string();
    assert_eq!(res, format!("LS:vm-1:{xs}:{}", 4 * MIB));

    let d = SanlockDaemon::start(&dir.path().join("run"));
    let o = d.client(&["add_lockspace", "-s", &format!("LS:1:{is}:0"), "-o", "1"]);
    assert_eq!(o.code, 0, "add_lockspace: {}", o.text());

    // `sanlock client command` registers, acquires the lease and runs sleep.
    let mut holder = std::process::Command::new(sanlock())
        .args(["client", "command", "-r", &res, "-c", "/bin/sleep", "1000"])
        .envs(d.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let held_line = format!("r {res}:1 p {}", holder.id());
    loop {
        let st = d.client(&["status"]).text();
        if st.contains(&held_line) {
            break;
        }
        assert!(Instant::now() < deadline, "lease never held:\n{st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = read_leader(&res);
    assert!(
        o.text().contains("owner_id 1\n") && o.text().contains("lver 1\n"),
        "{}",
        o.text()
    );

    // A second acquire of the same lease (another process) is refused.
    let script = format!(
        "import sanlock, sys\nfd = sanlock.register()\ntry:\n    sanlock.acquire(b'LS', b'vm-1', [('{xs}', {})], slkfd=fd)\nexcept sanlock.SanlockException as e:\n    print(e.errno); sys.exit(0)\nprint('acquired'); sys.exit(1)\n",
        4 * MIB
    );
    let o = run_env(python3(), &["-c", &script], &d.env());
    assert_eq!(
        o.code,
        0,
        "second acquire succeeded: {} {}",
        o.text(),
        o.stderr
    );
    assert_eq!(o.text().trim(), libc::EEXIST.to_string());

    // hactl will not clear a held lease.
    let o = x(&["remove", "-p", xs, "vm-1"]);
    assert_eq!(o.code, 7, "{}", o.stderr);
    assert_eq!(ok(&["lookup", "-p", xs, "vm-1"]).trim(), res);

    // The holder ends: sanlock releases, and the lease can be removed.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.client(&["status"]).text().contains(&held_line) {
        assert!(Instant::now() < deadline, "lease never released");
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(&["remove", "-p", xs, "vm-1"]);
    assert_eq!(x(&["lookup", "-p", xs, "vm-1"]).code, 3);
}
