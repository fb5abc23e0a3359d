//! python3-sanlock's resource calls, used as vdsm uses them, return the
//! same values and raise the same errors against `hactl daemon` as against
//! the real daemon: write/read_resource, register, acquire (exclusive,
//! shared, with a version, with the LVB), inquire, release,
//! read_resource_owners, set_lvb/get_lvb, request, killpath, get_alignment,
//! and the errors of bad offsets, foreign lockspaces, unregistered callers.

mod common;

use common::*;

const SCRIPT: &str = r#"
import sanlock, sys, json, os, errno
ids, leases = sys.argv[1], sys.argv[2]
out = []
def norm(r):
    if isinstance(r, list):
        return [norm(x) for x in r]
    if isinstance(r, tuple):
        return [norm(x) for x in r]
    if isinstance(r, dict):
        return {k: norm(v) for k, v in sorted(r.items()) if k != "timestamp"}
    if isinstance(r, bytes):
        return r.decode(errors="replace")
    return r
def rec(name, f):
    try:
        out.append([name, "ok", norm(f())])
    except sanlock.SanlockException as e:
        out.append([name, "err", e.errno])
    except Exception as e:
        out.append([name, "exc", type(e).__name__])
LS = b"LS"
D = [(leases, 1048576)]
D2 = [(leases, 2097152)]
rec("write_lockspace", lambda: sanlock.write_lockspace(LS, ids, iotimeout=1))
rec("add_lockspace", lambda: sanlock.add_lockspace(LS, 1, ids, iotimeout=1))
rec("get_alignment", lambda: sanlock.get_alignment(leases))
rec("write_resource", lambda: sanlock.write_resource(LS, b"r1", D))
rec("write_resource 2", lambda: sanlock.write_resource(LS, b"r2", D2, max_hosts=10))
rec("read_resource", lambda: sanlock.read_resource(leases, 1048576))
rec("read_resource 2", lambda: sanlock.read_resource(leases, 2097152))
rec("read_resource nothing there", lambda: sanlock.read_resource(leases, 3145728))
rec("read_resource 4K sizes", lambda: sanlock.read_resource(leases, 1048576, align=8388608, sector=4096))
rec("owners free", lambda: sanlock.read_resource_owners(LS, b"r1", D))
rec("owners wrong name", lambda: sanlock.read_resource_owners(LS, b"zz", D))
rec("owners wrong align", lambda: sanlock.read_resource_owners(LS, b"r1", D, align=2097152))
fd = sanlock.register()
rec("acquire no fd no pid", lambda: sanlock.acquire(LS, b"r1", D))
rec("acquire", lambda: sanlock.acquire(LS, b"r1", D, slkfd=fd))
rec("read_resource held", lambda: sanlock.read_resource(leases, 1048576))
rec("owners held", lambda: sanlock.read_resource_owners(LS, b"r1", D))
rec("inquire", lambda: sanlock.inquire(slkfd=fd))
rec("inquire by pid", lambda: sanlock.inquire(pid=os.getpid()))
rec("acquire again", lambda: sanlock.acquire(LS, b"r1", D, slkfd=fd))
rec("acquire wrong offset", lambda: sanlock.acquire(LS, b"r3", [(leases, 3145728)], slkfd=fd))
rec("acquire foreign lockspace", lambda: sanlock.acquire(b"NOLS", b"r1", D, slkfd=fd))
rec("acquire wrong name", lambda: sanlock.acquire(LS, b"zz", D, slkfd=fd))
rec("acquire missing file", lambda: sanlock.acquire(LS, b"r3", [(leases + ".nope", 0)], slkfd=fd))
rec("set_lvb not lvb", lambda: sanlock.set_lvb(LS, b"r1", D, b"x"))
rec("get_lvb not lvb", lambda: sanlock.get_lvb(LS, b"r1", D, 16))
rec("release", lambda: sanlock.release(LS, b"r1", D, slkfd=fd))
rec("release again", lambda: sanlock.release(LS, b"r1", D, slkfd=fd))
rec("owners released", lambda: sanlock.read_resource_owners(LS, b"r1", D))
rec("read_resource released", lambda: sanlock.read_resource(leases, 1048576))
rec("acquire version 1", lambda: sanlock.acquire(LS, b"r1", D, slkfd=fd, version=1))
rec("inquire versioned", lambda: sanlock.inquire(slkfd=fd))
rec("release v", lambda: sanlock.release(LS, b"r1", D, slkfd=fd))
rec("acquire stale version", lambda: sanlock.acquire(LS, b"r1", D, slkfd=fd, version=1))
rec("acquire shared", lambda: sanlock.acquire(LS, b"r1", D, slkfd=fd, shared=True))
rec("inquire shared", lambda: sanlock.inquire(slkfd=fd))
rec("owners shared", lambda: sanlock.read_resource_owners(LS, b"r1", D))
rec("read_resource shared", lambda: sanlock.read_resource(leases, 1048576))
fd2 = sanlock.register()
rec("second client exclusive vs shared", lambda: sanlock.acquire(LS, b"r1", D, slkfd=fd2))
rec("second client shared", lambda: sanlock.acquire(LS, b"r1", D, slkfd=fd2, shared=True))
rec("inquire second", lambda: sanlock.inquire(slkfd=fd2))
rec("release second", lambda: sanlock.release(LS, b"r1", D, slkfd=fd2))
rec("release shared", lambda: sanlock.release(LS, b"r1", D, slkfd=fd))
rec("owners after shared", lambda: sanlock.read_resource_owners(LS, b"r1", D))
rec("acquire lvb", lambda: sanlock.acquire(LS, b"r2", D2, slkfd=fd, lvb=True))
rec("get_lvb fresh", lambda: sanlock.get_lvb(LS, b"r2", D2, 512))
rec("set_lvb", lambda: sanlock.set_lvb(LS, b"r2", D2, b"hello lvb"))
rec("get_lvb set", lambda: sanlock.get_lvb(LS, b"r2", D2, 16))
rec("set_lvb too big", lambda: sanlock.set_lvb(LS, b"r2", D2, b"x" * 513))
rec("get_lvb bad size", lambda: sanlock.get_lvb(LS, b"r2", D2, 5000))
rec("get_lvb not held", lambda: sanlock.get_lvb(LS, b"r1", D, 16))
rec("release lvb", lambda: sanlock.release(LS, b"r2", D2, slkfd=fd))
rec("acquire lvb again", lambda: sanlock.acquire(LS, b"r2", D2, slkfd=fd, lvb=True))
rec("get_lvb persisted", lambda: sanlock.get_lvb(LS, b"r2", D2, 16))
rec("request free", lambda: sanlock.request(LS, b"r1", D))
rec("request old version", lambda: sanlock.request(LS, b"r2", D2, version=1))
rec("killpath", lambda: sanlock.killpath("/bin/true", ["a", "b c"], slkfd=fd))
rec("killpath too long", lambda: sanlock.killpath("/bin/true", ["x" * 200], slkfd=fd))
rec("release all", lambda: sanlock.release(LS, b"r2", D2, slkfd=fd))
rec("write_resource clear", lambda: sanlock.write_resource(LS, b"r1", D, clear=True))
rec("read_resource cleared", lambda: sanlock.read_resource(leases, 1048576))
rec("acquire cleared", lambda: sanlock.acquire(LS, b"r1", D, slkfd=fd))
rec("write_resource bad sector", lambda: sanlock.write_resource(LS, b"r1", D, sector=1024))
rec("rem_lockspace", lambda: sanlock.rem_lockspace(LS, 1, ids))
rec("acquire after rem", lambda: sanlock.acquire(LS, b"r2", D2, slkfd=fd))
print(json.dumps(out))
"#;

fn python_run(
    run_dir: &std::path::Path,
    ids: &std::path::Path,
    leases: &std::path::Path,
) -> serde_json::Value {
    let o = run_env(
        python3(),
        &["-c", SCRIPT, p(ids), p(leases)],
        &[("SANLOCK_RUN_DIR", p(run_dir))],
    );
    assert_eq!(o.code, 0, "python3-sanlock script failed: {}", o.stderr);
    serde_json::from_slice(&o.stdout).expect("json from the script")
}

#[test]
fn python3_sanlock_vdsm_sequence_matches() {
    let mut t = Tally("python3-sanlock vdsm resource calls", 0);
    let dir = workdir();
    let (ia, la) = (dir.path().join("a.ids"), dir.path().join("a.leases"));
    let (ib, lb) = (dir.path().join("b.ids"), dir.path().join("b.leases"));
    for f in [&ia, &ib] {
        make_file(f, 1 << 20, 0);
    }
    for f in [&la, &lb] {
        make_file(f, 4 << 20, 0);
    }
    let sd = SanlockDaemon::start(&dir.path().join("s"));
    let hd = HactlDaemon::start(&dir.path().join("h"));
    let theirs = python_run(&sd.run_dir, &ia, &la);
    let ours = python_run(&hd.run_dir, &ib, &lb);
    let (ta, oa) = (theirs.as_array().unwrap(), ours.as_array().unwrap());
    assert_eq!(ta.len(), oa.len());
    let norm = |v: &serde_json::Value| {
        v.to_string()
            .replace(p(&la), "LEASES")
            .replace(p(&lb), "LEASES")
    };
    let mut diffs = Vec::new();
    for (t_row, o_row) in ta.iter().zip(oa) {
        if norm(o_row) != norm(t_row) {
            diffs.push(format!("ours   {}\ntheirs {}", norm(o_row), norm(t_row)));
        }
    }
    // Every difference at once, then each row as a check.
    if !diffs.is_empty() {
        eprintln!("differences:\n{}", diffs.join("\n"));
    }
    for (t_row, o_row) in ta.iter().zip(oa) {
        t.same(
            &t_row[0].to_string(),
            norm(o_row).as_bytes(),
            norm(t_row).as_bytes(),
        );
    }
    // The lease areas, as each daemon left them, hold the same records
    // (timestamps and host names aside): compare the lvers and names.
    let (a, b) = (std::fs::read(&la).unwrap(), std::fs::read(&lb).unwrap());
    for off in [1usize << 20, 2 << 20] {
        let la = hactl::ondisk::LeaderRecord::decode(&a[off..off + 512]).unwrap();
        let lb = hactl::ondisk::LeaderRecord::decode(&b[off..off + 512]).unwrap();
        t.same(
            &format!("leader at {off}: magic, lver, names, num_hosts"),
            format!(
                "{:x} {} {} {} {}",
                lb.magic, lb.lver, lb.space_name, lb.resource_name, lb.num_hosts
            )
            .as_bytes(),
            format!(
                "{:x} {} {} {} {}",
                la.magic, la.lver, la.space_name, la.resource_name, la.num_hosts
            )
            .as_bytes(),
        );
    }
}
