//! The resource index over the socket: the unmodified `sanlock client
//! format | create | delete | lookup | update | rebuild -x ...` against the
//! real sanlock daemon and against `hactl daemon`, each host with its own
//! file and a joined lockspace. Every command must print the same and exit
//! the same, and the files must hold the same bytes afterwards, except for
//! what is host- or time-specific (see [`masked`]). sanlock's own
//! `direct lookup` and `direct dump` must read hactl's result as they read
//! sanlock's. Raw requests cover what the CLI never sends
//! (SANLK_RX_NO_LOCKSPACE, create's num_hosts) and compare the whole reply.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use common::*;
use hactl::ondisk::Name;
use hactl::proto::{self, Cmd, Header, SanlkDisk, SanlkPath, SanlkRentry, SanlkRindex, WireStruct};

const MB: usize = 1 << 20;

/// One host: a daemon (sanlock's or hactl's) and its own lease file, with
/// lockspace LS (host_id 1) at offset 0 joined.
struct Host {
    run_dir: PathBuf,
    file: PathBuf,
    /// The client program: sanlock's, or hactl's own `hactl client`.
    bin: &'static str,
}

impl Host {
    fn setup(dir: &Path, run_dir: &Path, name: &str) -> Host {
        let file = dir.join(name);
        make_file(&file, 16 * MB, 0);
        let o = run(
            sanlock(),
            &[
                "direct",
                "init",
                "-s",
                &format!("LS:0:{}:0", p(&file)),
                "-o",
                "1",
            ],
        );
        assert_eq!(o.code, 0, "{}", o.stderr);
        let h = Host {
            run_dir: run_dir.to_path_buf(),
            file,
            bin: sanlock(),
        };
        let o = h.client("add_lockspace -s LS:1:FILE:0 -o 1");
        assert!(o.text().contains("done 0"), "{}", o.text());
        h
    }

    /// `sanlock client ARGS`, FILE in ARGS standing for this host's file.
    fn client(&self, args: &str) -> Out {
        let args = args.replace("FILE", p(&self.file));
        let mut a = vec!["client"];
        a.extend(args.split_whitespace());
        run_env(self.bin, &a, &[("SANLOCK_RUN_DIR", p(&self.run_dir))])
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.file).unwrap()
    }

    fn socket(&self) -> UnixStream {
        UnixStream::connect(self.run_dir.join("sanlock.sock")).unwrap()
    }
}

struct Pair {
    _dir: tempfile::TempDir,
    theirs: Host,
    ours: Host,
    _sd: SanlockDaemon,
    _hd: HactlDaemon,
}

fn pair() -> Pair {
    let dir = workdir();
    let sd = SanlockDaemon::start(&dir.path().join("s"));
    let hd = HactlDaemon::start(&dir.path().join("h"));
    let theirs = Host::setup(dir.path(), &sd.run_dir, "theirs");
    let ours = Host::setup(dir.path(), &hd.run_dir, "ours");
    Pair {
        _dir: dir,
        theirs,
        ours,
        _sd: sd,
        _hd: hd,
    }
}

impl Pair {
    /// Runs one client command on both hosts; stdout (the file's path
    /// written FILE) and exit code must be the same. Returns sanlock's text.
    fn both(&self, t: &mut Tally, args: &str) -> String {
        let show = |h: &Host| {
            let o = h.client(args);
            format!("{}exit {}\n", o.text().replace(p(&h.file), "FILE"), o.code)
        };
        let (theirs, ours) = (show(&self.theirs), show(&self.ours));
        t.same(
            &format!("client {args}"),
            ours.as_bytes(),
            theirs.as_bytes(),
        );
        theirs
    }

    /// The two files from 1 MiB on (the index, its lease, the resource
    /// leases; the lockspace holds host names and timestamps), masked.
    fn same_disk(&self, t: &mut Tally, what: &str, indexes: &[(usize, usize, usize)]) {
        let (a, b) = (self.theirs.bytes(), self.ours.bytes());
        let (a, b) = (masked(a, indexes), masked(b, indexes));
        t.same(what, &b[MB..], &a[MB..]);
    }
}

/// Zeroes, for each index (offset, sector size, align size) in the file,
/// what differs between any two hosts or runs and is not part of the
/// format:
/// - in the rindex lease: the leader's write_timestamp (bytes 192..200,
///   outside the leader checksum), and host 1's dblock inp3 (a timestamp,
///   bytes 32..40) and its checksum (48..52);
/// - in the rindex lease and every resource lease slot: the leader's
///   write_timestamp (a deleted lease's clear time) and the request
///   record's tail padding, which sanlock copies from an uninitialised
///   stack struct.
fn masked(mut b: Vec<u8>, indexes: &[(usize, usize, usize)]) -> Vec<u8> {
    let end = b.len();
    for &(rx, ss, align) in indexes {
        let mut zero = |from: usize, len: usize| {
            if from + len <= b.len() {
                b[from..from + len].fill(0);
            }
        };
        let lease = rx + align;
        zero(lease + 2 * ss + 32, 8);
        zero(lease + 2 * ss + 48, 4);
        let mut at = lease;
        while at < end {
            zero(at + 192, 8);
            zero(at + ss + 20, 4);
            at += align;
        }
    }
    b
}

/// Index at 1M: 512-byte sectors, 1M areas; resource leases from 3M.
const IX: (usize, usize, usize) = (MB, 512, MB);

#[test]
fn client_rindex_commands_match_sanlock() {
    let mut t = Tally("daemon rindex: client commands", 0);
    rindex_commands(&mut t, pair());
}

/// `hactl client format | create | ...` against hactl's daemon prints what
/// `sanlock client` prints against sanlock's, and leaves the same bytes.
#[test]
fn hactl_client_rindex_commands_match_sanlock() {
    let mut t = Tally("daemon rindex: hactl client commands", 0);
    let mut s = pair();
    s.ours.bin = hactl();
    rindex_commands(&mut t, s);
}

fn rindex_commands(t: &mut Tally, s: Pair) {
    let x = "-x LS:FILE:1M";

    // Format, then every kind of lookup on the empty index.
    let out = s.both(t, &format!("format {x}"));
    assert!(out.starts_with("format done 0"), "{out}");
    s.same_disk(t, "bytes after format", &[IX]);
    let out = s.both(t, &format!("lookup {x}"));
    assert!(out.contains("name - offset 3145728"), "{out}");
    s.both(t, &format!("lookup {x} -e R1"));

    // Creates take the first free entry; sanlock does not refuse a
    // name the index already has, so neither does hactl.
    for name in ["R1", "R2", "R3", "R1"] {
        let out = s.both(t, &format!("create {x} -e {name}"));
        assert!(out.contains("create_resource done 0\noffset"), "{out}");
    }
    s.same_disk(t, "bytes after four creates", &[IX]);
    for args in [
        format!("lookup {x} -e R2"),
        format!("lookup {x} -e R1"),
        format!("lookup {x}"),
        format!("lookup {x} -e :4M"),
        format!("lookup {x} -e R2:4M"),
        // Name and offset that disagree: SANLK_RINDEX_DIFF.
        format!("lookup {x} -e R3:4M"),
        // Missing name: -ENOENT.
        format!("lookup {x} -e NOSUCH"),
        // An offset that is no lease slot boundary: SANLK_RINDEX_OFFSET.
        format!("lookup {x} -e :3145729"),
    ] {
        s.both(t, &args);
    }

    // Delete clears the first entry of that name and the lease it named.
    let out = s.both(t, &format!("delete {x} -e R1"));
    assert!(out.starts_with("delete_resource done 0"), "{out}");
    s.both(t, &format!("delete {x} -e NOSUCH"));
    s.both(t, &format!("delete {x} -e R2:3145729"));
    s.same_disk(t, "bytes after deletes", &[IX]);
    s.both(t, &format!("lookup {x} -e R1"));
    // The freed slot is taken again.
    s.both(t, &format!("create {x} -e R4"));

    // Update adds or (-z 1) removes an entry, leases untouched.
    for args in [
        format!("update {x} -e U1:9M"),
        format!("update {x} -e :4M -z 1"),
        // Neither a name to add nor -z 1: -EINVAL.
        format!("update {x} -e :5M"),
        format!("update {x} -e U2:3145729"),
    ] {
        s.both(t, &args);
    }
    s.both(t, &format!("lookup {x} -e :9M"));
    s.same_disk(t, "bytes after updates", &[IX]);

    // Rebuild forgets U1 (no lease there) and finds R2 again.
    let out = s.both(t, &format!("rebuild {x}"));
    assert!(out.starts_with("rebuild done 0"), "{out}");
    s.same_disk(t, "bytes after rebuild", &[IX]);
    s.both(t, &format!("lookup {x} -e R2"));
    s.both(t, &format!("lookup {x} -e U1"));

    // A second index with 4K sectors and 2M areas, asked for with -Z/-A.
    let x2 = "-x LS:FILE:10M";
    let ix2 = (10 * MB, 4096, 2 * MB);
    s.both(t, &format!("format {x2} -Z 4096 -A 2M"));
    s.both(t, &format!("create {x2} -e BIG"));
    s.both(t, &format!("create {x2} -e BIG2"));
    s.both(t, &format!("lookup {x2} -e BIG2"));
    s.both(t, &format!("rebuild {x2}"));
    s.same_disk(t, "bytes with a 4K/2M index", &[IX, ix2]);

    // sanlock's own direct tools read hactl's index and leases as sanlock's.
    for args in [
        "direct lookup -x LS:FILE:1M -e R2",
        "direct lookup -x LS:FILE:1M",
        "direct lookup -x LS:FILE:10M -e BIG",
        "direct dump FILE:1M",
        "direct dump FILE:3M",
    ] {
        let show = |h: &Host| {
            let a = args.replace("FILE", p(&h.file));
            let o = run(sanlock(), &a.split_whitespace().collect::<Vec<_>>());
            format!("{}exit {}\n", o.text(), o.code)
        };
        let (theirs, ours) = (show(&s.theirs), show(&s.ours));
        assert!(!theirs.contains("exit 1"), "{args}: {theirs}");
        t.same(
            &format!("sanlock {args}"),
            ours.as_bytes(),
            theirs.as_bytes(),
        );
    }
}

#[test]
fn rindex_refusals_match_sanlock() {
    let mut t = Tally("daemon rindex: refusals", 0);
    let s = pair();
    s.both(&mut t, "format -x LS:FILE:1M");

    // No rindex header there: SANLK_RINDEX_MAGIC, for every command.
    for cmd in ["lookup", "create", "delete", "update", "rebuild"] {
        let e = match cmd {
            "update" => " -e R:3M",
            "lookup" | "rebuild" => "",
            _ => " -e R",
        };
        let out = s.both(&mut t, &format!("{cmd} -x LS:FILE:512{e}"));
        assert!(out.contains("done -274"), "{out}");
    }

    // An index of lockspace LS2, which neither host has joined: format
    // needs no lockspace; the others answer -ENOENT.
    s.both(&mut t, "format -x LS2:FILE:6M");
    for args in [
        "lookup -x LS2:FILE:6M",
        "create -x LS2:FILE:6M -e R",
        "delete -x LS2:FILE:6M -e R",
        "update -x LS2:FILE:6M -e R:8M",
        "rebuild -x LS2:FILE:6M",
    ] {
        let out = s.both(&mut t, args);
        assert!(out.contains("done -2"), "{out}");
    }
    // The LS2 index read as an index of LS: SANLK_RINDEX_LOCKSPACE.
    let out = s.both(&mut t, "lookup -x LS:FILE:6M");
    assert!(out.contains("done -276"), "{out}");
    s.same_disk(&mut t, "bytes after the refusals", &[IX, (6 * MB, 512, MB)]);

    // A full index: every one of its 4096 entries taken (written straight
    // into both files), so create and the free-slot lookup find nothing.
    for h in [&s.theirs, &s.ours] {
        let mut b = h.bytes();
        for i in 0..4096usize {
            let at = MB + 512 + i * 64;
            let off = (3 * MB + i * MB) as u64;
            b[at..at + 8].copy_from_slice(&off.to_le_bytes());
            let name = format!("F{i}");
            b[at + 16..at + 16 + name.len()].copy_from_slice(name.as_bytes());
        }
        std::fs::write(&h.file, b).unwrap();
    }
    let out = s.both(&mut t, "create -x LS:FILE:1M -e LAST");
    assert!(out.contains("create_resource done -2"), "{out}");
    s.both(&mut t, "lookup -x LS:FILE:1M");
    // Entry 2047 is the last whose offset sanlock computes right: from
    // 2048 on, its `i * align_size` overflows an int (hactl does not copy that).
    let out = s.both(&mut t, "lookup -x LS:FILE:1M -e F2047");
    assert!(out.contains("offset 2149580800"), "{out}");
    let ours = s.ours.client("lookup -x LS:FILE:1M -e F4095");
    assert!(ours.text().contains("offset 4297064448"), "{}", ours.text());
    s.same_disk(&mut t, "bytes of a full index after create", &[IX]);
}

/// Sends one rindex request by hand, as libsanlock does, and returns the
/// whole reply: the result header, and for entry commands the entry.
fn raw(
    h: &Host,
    cmd: Cmd,
    flags: u32,
    data2: u32,
    ls: &str,
    off: u64,
    re: Option<(&str, u64)>,
) -> Vec<u8> {
    let ri = SanlkRindex {
        lockspace_name: Name::new(ls).unwrap(),
        disk: SanlkDisk::new(SanlkPath::new(p(&h.file)).unwrap(), off),
        ..Default::default()
    };
    let mut body = ri.encode();
    if let Some((name, offset)) = re {
        let r = SanlkRentry {
            name: Name::new(name).unwrap(),
            offset,
            ..Default::default()
        };
        body.extend_from_slice(&r.encode());
    }
    let hdr = Header::request(cmd, flags, body.len(), 0, data2);
    let mut s = h.socket();
    s.write_all(&hdr.encode()).unwrap();
    s.write_all(&body).unwrap();
    let n = if re.is_some() { 32 + 64 } else { 32 };
    let mut reply = vec![0u8; n];
    s.read_exact(&mut reply).unwrap();
    reply
}

#[test]
fn raw_rindex_requests_match_sanlock() {
    let mut t = Tally("daemon rindex: raw requests", 0);
    let s = pair();
    s.both(&mut t, "format -x LS2:FILE:1M");
    s.both(&mut t, "format -x LS:FILE:6M");
    let nolock = proto::SANLK_RX_NO_LOCKSPACE;
    let add = proto::SANLK_RXUP_ADD | nolock;
    let rem = proto::SANLK_RXUP_REM | nolock;
    type Req = (
        &'static str,
        Cmd,
        u32,
        u32,
        &'static str,
        u64,
        Option<(&'static str, u64)>,
    );
    let reqs: &[Req] = &[
        // LS2 is not joined: refused, unless the client says the
        // lockspace is not needed (lookup, update, rebuild).
        (
            "lookup LS2",
            Cmd::LookupRindex,
            0,
            0,
            "LS2",
            MB as u64,
            Some(("", 0)),
        ),
        (
            "lookup LS2 nolock",
            Cmd::LookupRindex,
            nolock,
            0,
            "LS2",
            MB as u64,
            Some(("", 0)),
        ),
        (
            "update LS2 nolock",
            Cmd::UpdateRindex,
            add,
            0,
            "LS2",
            MB as u64,
            Some(("A", 3 * MB as u64)),
        ),
        (
            "update LS2 nolock no op",
            Cmd::UpdateRindex,
            nolock,
            0,
            "LS2",
            MB as u64,
            Some(("A", 4 * MB as u64)),
        ),
        (
            "lookup LS2 nolock A",
            Cmd::LookupRindex,
            nolock,
            0,
            "LS2",
            MB as u64,
            Some(("A", 0)),
        ),
        (
            "update LS2 nolock rem",
            Cmd::UpdateRindex,
            rem,
            0,
            "LS2",
            MB as u64,
            Some(("", 3 * MB as u64)),
        ),
        (
            "rebuild LS2",
            Cmd::RebuildRindex,
            0,
            0,
            "LS2",
            MB as u64,
            None,
        ),
        (
            "rebuild LS2 nolock",
            Cmd::RebuildRindex,
            nolock,
            0,
            "LS2",
            MB as u64,
            None,
        ),
        // create's data2 is the new lease's num_hosts.
        (
            "create num_hosts 7",
            Cmd::CreateResource,
            0,
            7,
            "LS",
            6 * MB as u64,
            Some(("N7", 0)),
        ),
        (
            "create num_hosts 0",
            Cmd::CreateResource,
            0,
            0,
            "LS",
            6 * MB as u64,
            Some(("N0", 0)),
        ),
        (
            "delete N0",
            Cmd::DeleteResource,
            0,
            0,
            "LS",
            6 * MB as u64,
            Some(("N0", 0)),
        ),
        (
            "lookup N7",
            Cmd::LookupRindex,
            0,
            0,
            "LS",
            6 * MB as u64,
            Some(("N7", 0)),
        ),
    ];
    for &(what, cmd, flags, data2, ls, off, re) in reqs {
        let theirs = raw(&s.theirs, cmd, flags, data2, ls, off, re);
        let ours = raw(&s.ours, cmd, flags, data2, ls, off, re);
        t.same(&format!("reply to {what}"), &ours, &theirs);
    }
    s.same_disk(
        &mut t,
        "bytes after the raw requests",
        &[IX, (6 * MB, 512, MB)],
    );
    // N7's lease (the first slot after the 6M index) says 7 hosts.
    let b = s.ours.bytes();
    let num_hosts = u64::from_le_bytes(b[8 * MB + 16..8 * MB + 24].try_into().unwrap());
    assert_eq!(num_hosts, 7);
}
