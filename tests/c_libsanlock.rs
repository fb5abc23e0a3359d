//! A C program linked with the real libsanlock (tests/c/acquire_release.c)
//! registers, acquires, inquires and releases through `hactl daemon` and
//! through sanlock's daemon: the same output from both.

mod common;

use std::path::Path;

use common::*;

const MIB: usize = 1 << 20;

/// A lockspace and one lease (R1 at 1M) on files in `dir`, joined by the
/// daemon in `rd`; returns the RESOURCE string.
fn setup(dir: &Path, rd: &Path) -> String {
    let (ls, res) = (dir.join("ls"), dir.join("res"));
    make_file(&ls, MIB, 0);
    make_file(&res, 2 * MIB, 0);
    let lss = format!("LS:0:{}:0", p(&ls));
    let r1 = format!("LS:R1:{}:1048576", p(&res));
    assert_eq!(
        run(hactl(), &["direct", "init", "-s", &lss, "-o", "1"]).code,
        0
    );
    assert_eq!(run(hactl(), &["direct", "init", "-r", &r1]).code, 0);
    let o = run_env(
        sanlock(),
        &[
            "client",
            "add_lockspace",
            "-s",
            &format!("LS:1:{}:0", p(&ls)),
            "-o",
            "1",
        ],
        &[("SANLOCK_RUN_DIR", p(rd))],
    );
    assert!(o.text().contains("done 0"), "{}", o.text());
    r1
}

#[test]
fn libsanlock_program_same_on_both_daemons() {
    let mut t = Tally("libsanlock C program", 0);
    let dir = workdir();
    let bin = compile_c("acquire_release", dir.path());
    let (ds, dh) = (dir.path().join("s"), dir.path().join("h"));
    std::fs::create_dir_all(&ds).unwrap();
    std::fs::create_dir_all(&dh).unwrap();
    let sd = SanlockDaemon::start(&ds.join("run"));
    let hd = HactlDaemon::start(&dh.join("run"));
    let rs = setup(&ds, &sd.run_dir);
    let rh = setup(&dh, &hd.run_dir);
    let theirs = run_env(p(&bin), &[&rs], &[("SANLOCK_RUN_DIR", p(&sd.run_dir))]);
    let ours = run_env(p(&bin), &[&rh], &[("SANLOCK_RUN_DIR", p(&hd.run_dir))]);
    assert_eq!(
        theirs.code,
        0,
        "against sanlock: {}{}",
        theirs.text(),
        theirs.stderr
    );
    assert_eq!(
        ours.code,
        0,
        "against hactl: {}{}",
        ours.text(),
        ours.stderr
    );
    let (ts, os) = (
        theirs.text().replace(&rs, "RESOURCE"),
        ours.text().replace(&rh, "RESOURCE"),
    );
    for want in [
        "acquire 0\n",
        "acquire again -17\n",
        "release 0\n",
        "inquire 0 count 1 state \"RESOURCE:1\"\n",
    ] {
        assert!(ts.contains(want), "sanlock's run lacks {want:?}:\n{ts}");
    }
    for (i, (a, b)) in ts.lines().zip(os.lines()).enumerate() {
        t.same(&format!("line {i}"), b.as_bytes(), a.as_bytes());
    }
    assert_eq!(ts.lines().count(), os.lines().count(), "{ts}\n---\n{os}");
}
