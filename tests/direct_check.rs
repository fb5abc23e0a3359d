//! `hactl direct check`: each kind of damage, made on real areas (written
//! by `hactl direct init` and by the real `sanlock direct init`, 512-byte
//! files and 4K loop devices), is flagged with its message and exit code 1;
//! clean areas pass with 0; usage and I/O errors give 2; and the check
//! never changes a byte of what it reads.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;

const MIB: u64 = 1 << 20;

/// One finding of the JSON report: (code, problem, message).
type Finding = (String, bool, String);

struct Checked {
    code: i32,
    text: String,
    findings: Vec<Finding>,
}

impl Checked {
    fn problems(&self) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.1).collect()
    }

    /// The one problem with `code`, whose text line must contain `msg`.
    fn flagged(&self, code: &str, msg: &str) {
        assert_eq!(self.code, 1, "exit code: {}", self.text);
        assert!(
            self.problems()
                .iter()
                .any(|f| f.0 == code && f.2.contains(msg)),
            "no {code} problem containing {msg:?} in:\n{}",
            self.text
        );
        assert!(
            self.text.lines().any(|l| l.contains(msg)),
            "text report lacks {msg:?}:\n{}",
            self.text
        );
    }

    fn clean(&self) {
        assert_eq!(self.code, 0, "not clean:\n{}", self.text);
        assert!(self.problems().is_empty(), "{}", self.text);
        assert!(
            self.text.lines().last().unwrap_or("").contains(": clean ("),
            "{}",
            self.text
        );
    }
}

/// Runs the check twice (text and JSON) on `target`, asserting that the
/// bytes of every file in `watch` are the same before and after.
fn check(target: &str, extra: &[&str], watch: &[&Path]) -> Checked {
    let before: Vec<Vec<u8>> = watch.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let mut a = vec!["direct", "check", target];
    a.extend_from_slice(extra);
    let t = run(hactl(), &a);
    a.push("--json");
    let j = run(hactl(), &a);
    assert_eq!(t.code, j.code, "text and JSON exit codes differ");
    for (f, b) in watch.iter().zip(&before) {
        assert!(
            std::fs::read(f).unwrap() == *b,
            "check changed {}",
            f.display()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&j.stdout).unwrap_or_else(|e| panic!("JSON: {e}: {}", j.text()));
    assert_eq!(v["exit_code"], j.code);
    let findings = v["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["code"].as_str().unwrap().to_string(),
                        f["problem"].as_bool().unwrap(),
                        f["message"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Checked {
        code: t.code,
        text: format!("{}{}", t.text(), t.stderr),
        findings,
    }
}

fn ok(bin: &str, args: &[&str]) -> String {
    let o = run(bin, args);
    assert_eq!(o.code, 0, "{bin} {args:?}: {} {}", o.text(), o.stderr);
    o.text()
}

/// `direct write_leader` with `field value` lines (hactl's: it writes the
/// checksum it reports, so the record stays valid with the new fields).
fn edit_leader(dir: &Path, which: &str, spec: &str, fields: &str) {
    let f = dir.join("fields");
    std::fs::write(&f, fields).unwrap();
    ok(
        hactl(),
        &["direct", "write_leader", which, spec, "-F", p(&f)],
    );
}

fn flip(f: &Path, at: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(f)
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x10;
    file.write_all_at(&b, at).unwrap();
}

fn write_at(f: &Path, at: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
    file.write_all_at(bytes, at).unwrap();
}

/// A lockspace LS at 0 and resources R1, R2 at 1M and 2M, written by `bin`.
fn areas(dir: &Path, bin: &str, name: &str) -> std::path::PathBuf {
    let f = dir.join(name);
    make_file(&f, 4 * MIB as usize, 0);
    let s = p(&f);
    ok(bin, &["direct", "init", "-s", &format!("LS:0:{s}:0")]);
    ok(bin, &["direct", "init", "-r", &format!("LS:R1:{s}:1M")]);
    ok(bin, &["direct", "init", "-r", &format!("LS:R2:{s}:2M")]);
    f
}

#[test]
fn clean_areas_pass_and_checksums_magic_and_geometry_are_flagged() {
    let dir = workdir();
    for bin in [hactl(), sanlock()] {
        let tag = if bin == hactl() { "h" } else { "s" };
        let f = areas(dir.path(), bin, &format!("{tag}-clean"));
        let c = check(p(&f), &[], &[&f]);
        c.clean();
        assert!(
            c.text
                .contains("1 lockspace area, 2 resource leases checked"),
            "{}",
            c.text
        );
        // Each resource alone, and told its kind, is clean too.
        check(&format!("{}:1M", p(&f)), &["--kind", "resource"], &[&f]).clean();

        // A flipped bit in host_id 5's delta lease (its generation field).
        let f = areas(dir.path(), bin, &format!("{tag}-delta-sum"));
        flip(&f, 4 * 512 + 40);
        check(p(&f), &[], &[&f]).flagged("bad_checksum", "host_id 5: a delta lease");

        // ... in R2's leader.
        let f = areas(dir.path(), bin, &format!("{tag}-paxos-sum"));
        flip(&f, 2 * MIB + 50);
        let c = check(p(&f), &[], &[&f]);
        c.flagged(
            "bad_checksum",
            "a paxos lease (resource) leader record has a bad checksum",
        );
        assert_eq!(c.problems().len(), 1, "{}", c.text);

        // ... in a dblock written by a real ballot (host 1 acquires R1).
        let f = areas(dir.path(), bin, &format!("{tag}-dblock"));
        let r1 = format!("LS:R1:{}:1M", p(&f));
        ok(bin, &["direct", "acquire", "-r", &r1, "-i", "1", "-g", "1"]);
        // sanlock's direct release acts as host_id 0 and leaves the lease
        // held; hactl's releases as the host given.
        ok(
            hactl(),
            &["direct", "release", "-r", &r1, "-i", "1", "-g", "1"],
        );
        check(p(&f), &[], &[&f]).clean();
        flip(&f, MIB + 2 * 512 + 16); // dblock of host_id 1: inp
        check(p(&f), &[], &[&f]).flagged("bad_checksum", "dblock of host_id 1: a paxos dblock");

        // A wiped request record.
        let f = areas(dir.path(), bin, &format!("{tag}-request"));
        write_at(&f, MIB + 512, &[0u8; 512]);
        check(p(&f), &[], &[&f]).flagged("no_magic", "request record: no magic number");

        // Host sectors missing from the lockspace (zeroed).
        let f = areas(dir.path(), bin, &format!("{tag}-zeroed"));
        write_at(&f, 9 * 512, &[0u8; 3 * 512]);
        check(p(&f), &[], &[&f]).flagged(
            "no_delta_lease",
            "host_ids 10-12: no delta lease (zeroes): such a host cannot join",
        );

        // Align flags: two at once, and one sanlock has no geometry for.
        let f = areas(dir.path(), bin, &format!("{tag}-flags"));
        let s = p(&f).to_string();
        edit_leader(dir.path(), "-r", &format!("LS:R1:{s}:1M"), "flags 0x30\n");
        edit_leader(dir.path(), "-r", &format!("LS:R2:{s}:2M"), "flags 0x80\n");
        edit_leader(dir.path(), "-s", &format!("LS:3:{s}:0"), "flags 0x11\n");
        let c = check(&s, &[], &[&f]);
        c.flagged("align_flags", "flags 0x30 name several align sizes");
        c.flagged(
            "geometry",
            "sector_size 512 with align flag 8M is no geometry sanlock accepts",
        );
        c.flagged(
            "geometry_differs",
            "host_id 3: sector_size 512 flags 0x11, but host_id 1 says sector_size 512 flags 0x10",
        );

        // A lease of another lockspace among LS's.
        let f = areas(dir.path(), bin, &format!("{tag}-foreign"));
        ok(
            bin,
            &["direct", "init", "-r", &format!("OTHER:R9:{}:2M", p(&f))],
        );
        check(p(&f), &[], &[&f]).flagged(
            "wrong_lockspace",
            "belongs to lockspace \"OTHER\", which is not the lockspace checked (LS)",
        );

        // Told the wrong kind: the magic found is named.
        let f = areas(dir.path(), bin, &format!("{tag}-kind"));
        check(&format!("{}:1M", p(&f)), &["--kind", "lockspace"], &[&f]).flagged(
            "foreign_magic",
            "found a paxos lease (resource) leader record",
        );

        // The device ends inside the last lease.
        let f = areas(dir.path(), bin, &format!("{tag}-short"));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(2 * MIB + 512)
            .unwrap();
        check(p(&f), &[], &[&f]).flagged("truncated", "but the device ends at 2097664");
    }
}

#[test]
fn owners_are_judged_against_the_lockspace() {
    let dir = workdir();
    let f = areas(dir.path(), sanlock(), "owners");
    let s = p(&f).to_string();
    let ids = dir.path().join("ids");
    make_file(&ids, MIB as usize, 0);
    ok(
        sanlock(),
        &["direct", "init", "-s", &format!("LS:0:{}:0", p(&ids))],
    );

    // Host 1 joins for real (generation 1) and takes R1: clean, whether the
    // lockspace is in the same file or given with -s.
    ok(
        sanlock(),
        &["direct", "acquire_id", "-s", &format!("LS:1:{s}:0")],
    );
    let r1 = format!("LS:R1:{s}:1M");
    ok(
        sanlock(),
        &["direct", "acquire", "-r", &r1, "-i", "1", "-g", "1"],
    );
    check(&s, &[], &[&f]).clean();
    check(&format!("{s}:1M"), &["-s", &format!("{s}:0")], &[&f]).clean();
    // Without its lockspace the owner is not judged: a note, not a problem.
    let c = check(&format!("{s}:1M"), &[], &[&f]);
    c.clean();
    assert!(
        c.findings.iter().any(|x| x.0 == "no_lockspace"),
        "{}",
        c.text
    );

    // R2 held by host 2, which never joined: FREE.
    let r2 = format!("LS:R2:{s}:2M");
    ok(
        hactl(),
        &["direct", "acquire", "-r", &r2, "-i", "2", "-g", "1"],
    );
    check(&s, &[], &[&f]).flagged(
        "owner_free",
        "owner host_id 2 generation 1: host_id 2 is FREE in lockspace LS",
    );
    ok(
        hactl(),
        &["direct", "release", "-r", &r2, "-i", "2", "-g", "1"],
    );
    check(&s, &[], &[&f]).clean();

    // R2 taken as host 1 at a generation host 1 never had.
    ok(
        hactl(),
        &["direct", "acquire", "-r", &r2, "-i", "1", "-g", "5"],
    );
    check(&s, &[], &[&f]).flagged(
        "owner_generation",
        "owner host_id 1 generation 5: host_id 1 is only at generation 1 in lockspace LS",
    );
    ok(
        hactl(),
        &["direct", "release", "-r", &r2, "-i", "1", "-g", "5"],
    );
    check(&s, &[], &[&f]).clean();

    // Host 1 rejoined (generation 2) while R1 still names generation 1.
    edit_leader(
        dir.path(),
        "-s",
        &format!("LS:1:{s}:0"),
        "owner_generation 2\n",
    );
    check(&s, &[], &[&f]).flagged(
        "owner_dead",
        "owner host_id 1 generation 1: host_id 1 is at generation 2 in lockspace LS",
    );

    // Host 1 left the lockspace: R1's owner is FREE.
    ok(
        sanlock(),
        &["direct", "release_id", "-s", &format!("LS:1:{s}:0")],
    );
    check(&s, &[], &[&f]).flagged("owner_free", "host_id 1 is FREE in lockspace LS");

    // Judged against the lockspace area given with -s, not the one in the file.
    check(&format!("{s}:1M"), &["-s", p(&ids)], &[&f, &ids]).flagged(
        "owner_free",
        &format!(
            "host_id 1 is FREE in lockspace LS at offset 0 of {}",
            p(&ids)
        ),
    );
    // Given another lockspace with -s, the leases are not its.
    let other = dir.path().join("ids2");
    make_file(&other, MIB as usize, 0);
    ok(
        hactl(),
        &["direct", "init", "-s", &format!("L2:0:{}:0", p(&other))],
    );
    check(&format!("{s}:1M"), &["-s", p(&other)], &[&f, &other]).flagged(
        "wrong_lockspace",
        "belongs to lockspace \"LS\", which is not the lockspace checked (L2)",
    );
}

#[test]
fn xleases_index_records_must_match_their_leases() {
    let dir = workdir();
    let (x, ids) = (dir.path().join("xleases"), dir.path().join("ids"));
    make_file(&x, 12 * MIB as usize, 0);
    make_file(&ids, MIB as usize, 0);
    let (xs, is) = (p(&x).to_string(), p(&ids).to_string());
    ok(
        sanlock(),
        &["direct", "init", "-s", &format!("SD:0:{is}:0")],
    );
    let xl = |a: &[&str]| {
        let mut v = vec!["xleases"];
        v.extend_from_slice(a);
        ok(hactl(), &v)
    };
    xl(&["format", "-p", &xs, "-s", "SD"]);
    for vm in ["vm1", "vm2", "vm3", "vm4", "vm5"] {
        xl(&["add", "-p", &xs, vm]);
    }
    // Slot 0 is unused by vdsm: a lockspace there does not hide the index.
    ok(
        sanlock(),
        &["direct", "init", "-s", &format!("SD:0:{xs}:0")],
    );
    // vdsm writes its leases through sanlock: one slot as sanlock writes it.
    ok(
        sanlock(),
        &["direct", "init", "-r", &format!("SD:vm1:{xs}:3M")],
    );
    let c = check(&xs, &["-s", &is], &[&x, &ids]);
    c.clean();
    assert!(c.text.contains("1 xleases index"), "{}", c.text);

    // vm1 held by a host that never joined SD.
    ok(
        sanlock(),
        &[
            "direct",
            "acquire",
            "-r",
            &format!("SD:vm1:{xs}:3M"),
            "-i",
            "4",
            "-g",
            "1",
        ],
    );
    check(&xs, &["-s", &is], &[&x, &ids])
        .flagged("owner_free", "host_id 4 is FREE in lockspace SD");
    ok(
        sanlock(),
        &[
            "direct",
            "release",
            "-r",
            &format!("SD:vm1:{xs}:3M"),
            "-i",
            "4",
            "-g",
            "1",
        ],
    );

    // vm2's slot holds another resource, vm3's another lockspace's lease,
    // vm4's slot was wiped.
    ok(
        sanlock(),
        &["direct", "init", "-r", &format!("SD:other:{xs}:4M")],
    );
    ok(
        hactl(),
        &["direct", "init", "-r", &format!("XX:vm3:{xs}:5M")],
    );
    write_at(&x, 6 * MIB, &[0u8; 4096]);
    // Record 4 (vm5) copied over free record 7: a duplicate whose offset
    // is not its slot's.
    let mut rec = [0u8; 64];
    std::fs::File::open(&x)
        .unwrap()
        .read_exact_at(&mut rec, MIB + 512 + 4 * 64)
        .unwrap();
    write_at(&x, MIB + 512 + 7 * 64, &rec);
    let c = check(&xs, &["-s", &is], &[&x, &ids]);
    c.flagged(
        "wrong_resource",
        "belongs to resource \"other\", not \"vm2\"",
    );
    c.flagged("wrong_lockspace", "belongs to lockspace \"XX\", not \"SD\"");
    c.flagged(
        "lease_missing",
        "no resource lease here (zeroes): the index points at an unformatted slot",
    );
    c.flagged(
        "duplicate",
        "record 7 duplicates lease id \"vm5\" of record 4",
    );
    c.flagged(
        "record_offset",
        "record 7 (\"vm5\") says offset 7340032, but its slot is at 10485760",
    );

    // An index left updating, and a record that does not parse.
    let f2 = dir.path().join("x2");
    make_file(&f2, 8 * MIB as usize, 0);
    let s2 = p(&f2).to_string();
    xl(&["format", "-p", &s2, "-s", "SD"]);
    xl(&["add", "-p", &s2, "vm1"]);
    write_at(&f2, MIB + 70, b"u");
    write_at(&f2, MIB + 512 + 2 * 64 + 49, b"12x");
    write_at(&f2, MIB + 512 + 48, b"-");
    let c = check(&s2, &[], &[&f2]);
    c.flagged("index_updating", "the index is marked updating");
    c.flagged("bad_record", "record 2: cannot parse offset");
    c.flagged(
        "bad_record",
        "record 0 (\"vm1\"): the byte after the lease id is not NUL, so vdsm's lookup never finds it",
    );
    // The volume's lockspace is not the one given.
    let other = dir.path().join("ids2");
    make_file(&other, MIB as usize, 0);
    ok(
        hactl(),
        &["direct", "init", "-s", &format!("L2:0:{}:0", p(&other))],
    );
    check(&xs, &["-s", p(&other)], &[&x, &other]).flagged(
        "wrong_lockspace",
        "belongs to lockspace \"SD\", which is not the lockspace checked (L2)",
    );
    // A volume too short for a record's slot.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f2)
        .unwrap()
        .set_len(3 * MIB + 4096)
        .unwrap();
    check(&s2, &[], &[&f2]).flagged("lease_missing", "lies beyond the end of the volume");
}

#[test]
fn four_k_loop_devices_and_a_512_layout_on_one() {
    let dir = workdir();
    for bin in [hactl(), sanlock()] {
        let img = dir
            .path()
            .join(format!("{}.img", if bin == hactl() { "h" } else { "s" }));
        make_file(&img, 20 * MIB as usize, 0);
        let dev = LoopDev::new(&img, 4096);
        let d = dev.dev.clone();
        ok(
            bin,
            &[
                "direct",
                "init",
                "-s",
                &format!("LS:0:{d}:0"),
                "-Z",
                "4096",
                "-A",
                "1M",
            ],
        );
        ok(
            bin,
            &[
                "direct",
                "init",
                "-r",
                &format!("LS:R1:{d}:1M"),
                "-Z",
                "4096",
                "-A",
                "1M",
            ],
        );
        // No -Z/-A: the 4K device's sector and the 8M default.
        ok(bin, &["direct", "init", "-r", &format!("LS:R8:{d}:8M")]);
        ok(
            bin,
            &[
                "direct",
                "acquire",
                "-r",
                &format!("LS:R1:{d}:1M"),
                "-i",
                "1",
                "-g",
                "1",
            ],
        );
        ok(
            hactl(),
            &[
                "direct",
                "release",
                "-r",
                &format!("LS:R1:{d}:1M"),
                "-i",
                "1",
                "-g",
                "1",
            ],
        );
        let c = check(&d, &[], &[&img]);
        c.clean();
        assert!(
            c.text.contains("1 lockspace area, 1 resource lease "),
            "{}",
            c.text
        );
        // The walk ends at the zeroes after R1: R8 is checked at its place.
        check(&format!("{d}:8M"), &[], &[&img]).clean();
        // A dblock damaged through the device (O_DIRECT, 4K sectors).
        let o = run(
            "dd",
            &[
                "if=/dev/urandom",
                &format!("of={d}"),
                "bs=4096",
                "count=1",
                &format!("seek={}", 256 + 2),
                "oflag=direct",
                "conv=notrunc",
            ],
        );
        assert_eq!(o.code, 0, "dd: {}", o.stderr);
        check(&d, &[], &[&img]).flagged("bad_checksum", "dblock of host_id 1: a paxos dblock");
    }

    // A 512-byte layout, then the same bytes seen through 4K sectors.
    let img = dir.path().join("512.img");
    make_file(&img, 4 * MIB as usize, 0);
    ok(
        sanlock(),
        &["direct", "init", "-s", &format!("LS:0:{}:0", p(&img))],
    );
    ok(
        hactl(),
        &["direct", "init", "-r", &format!("LS:R1:{}:1M", p(&img))],
    );
    check(p(&img), &[], &[&img]).clean();
    let dev = LoopDev::new(&img, 4096);
    let c = check(&dev.dev, &[], &[&img]);
    c.flagged(
        "device_sector",
        "sector_size 512 but the device has 4096-byte sectors: sanlock cannot use this layout on it",
    );
    assert_eq!(
        c.problems()
            .iter()
            .filter(|f| f.0 == "device_sector")
            .count(),
        2,
        "{}",
        c.text
    );
}

#[test]
fn usage_and_io_errors_exit_2_and_nothing_found_exits_1() {
    let dir = workdir();
    let o = run(hactl(), &["direct", "check"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = run(hactl(), &["direct", "check", "x", "--kind", "bogus"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = run(
        hactl(),
        &["direct", "check", p(&dir.path().join("missing"))],
    );
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("cannot open"), "{}", o.stderr);
    let o = run(hactl(), &["direct", "check", "--help"]);
    assert_eq!(o.code, 0);
    assert!(
        o.text()
            .contains("Exit status: 0 clean, 1 problems found, 2 usage or I/O error."),
        "{}",
        o.text()
    );
    // Zeroes: nothing sanlock or vdsm wrote.
    let f = dir.path().join("zeroes");
    make_file(&f, 4 * MIB as usize, 0);
    check(p(&f), &[], &[&f]).flagged("no_area", "found nothing (zeroes)");
}

#[test]
fn resource_index_entries_must_match_their_leases() {
    let dir = workdir();
    for bin in [hactl(), sanlock()] {
        let f = dir.path().join(if bin == hactl() {
            "h-rindex"
        } else {
            "s-rindex"
        });
        make_file(&f, 8 * MIB as usize, 0);
        let s = p(&f).to_string();
        let x = format!("LS:{s}:1M");
        ok(bin, &["direct", "init", "-s", &format!("LS:0:{s}:0")]);
        ok(bin, &["direct", "format", "-x", &x]);
        ok(bin, &["direct", "init", "-r", &format!("LS:R1:{s}:3M")]);
        ok(bin, &["direct", "update", "-x", &x, "-e", "R1:3M"]);
        let c = check(&s, &[], &[&f]);
        c.clean();
        assert!(c.text.contains("1 resource index"), "{}", c.text);

        // An entry for a lease that was never initialised.
        ok(bin, &["direct", "update", "-x", &x, "-e", "R9:4M"]);
        check(&s, &[], &[&f]).flagged(
            "entry_mismatch",
            "entry for R9 at offset 4194304: no magic number",
        );
        // R9 initialised under another name.
        ok(bin, &["direct", "init", "-r", &format!("LS:R8:{s}:4M")]);
        check(&s, &[], &[&f]).flagged(
            "entry_mismatch",
            "entry for R9 at offset 4194304: a paxos lease (resource) leader record belongs to resource \"R8\", not \"R9\"",
        );
    }
}
