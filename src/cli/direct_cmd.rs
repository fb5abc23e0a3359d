//! `hactl direct <action>`: runs a direct action and prints what
//! `sanlock direct` prints (stdout), with hactl's explanation of any
//! failure on stderr. Returns the process exit code.

use std::io::Write;

use serde_json::json;

use super::args::Com;
use crate::direct::{self, DirectError, DirectOpts, dump, rindex};
use crate::ondisk::LeaderRecord;

fn opts(com: &Com) -> DirectOpts {
    DirectOpts {
        io_timeout: com.io_timeout.unwrap_or(direct::DEFAULT_IO_TIMEOUT),
        sector_size: com.sector_size,
        align_size: com.align_size,
        num_hosts: com.num_hosts,
        clear: com.clear,
        force_mode: com.force_mode,
    }
}

fn rv_of(r: &Result<(), DirectError>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.sanlk_rv(),
    }
}

fn explain(r: &Result<(), DirectError>) {
    if let Err(e) = r {
        eprintln!("hactl: {e}");
    }
}

fn exit_code(rv: i32) -> i32 {
    if rv == 0 { 0 } else { 1 }
}

/// `print_leader`: sanlock's `read_leader`/`write_leader` field list.
pub fn leader_text(lr: &LeaderRecord, is_ls: bool) -> Vec<u8> {
    let mut o = Vec::new();
    writeln!(o, "magic 0x{:x}", lr.magic).unwrap();
    writeln!(o, "version 0x{:x}", lr.version).unwrap();
    writeln!(o, "flags 0x{:x}", lr.flags).unwrap();
    writeln!(o, "sector_size {}", lr.sector_size).unwrap();
    writeln!(o, "num_hosts {}", lr.num_hosts).unwrap();
    writeln!(o, "max_hosts {}", lr.max_hosts).unwrap();
    writeln!(o, "owner_id {}", lr.owner_id).unwrap();
    writeln!(o, "owner_generation {}", lr.owner_generation).unwrap();
    writeln!(o, "lver {}", lr.lver).unwrap();
    o.extend_from_slice(b"space_name ");
    o.extend_from_slice(lr.space_name.bytes());
    o.extend_from_slice(b"\nresource_name ");
    o.extend_from_slice(lr.resource_name.bytes());
    o.push(b'\n');
    writeln!(o, "timestamp {}", lr.timestamp).unwrap();
    writeln!(o, "checksum 0x{:x}", lr.checksum).unwrap();
    writeln!(o, "io_timeout {}", lr.io_timeout).unwrap();
    let names = if is_ls {
        ["extra1", "extra2", "extra3"]
    } else {
        ["write_id", "write_generation", "write_timestamp"]
    };
    writeln!(o, "{} {}", names[0], lr.write_id).unwrap();
    writeln!(o, "{} {}", names[1], lr.write_generation).unwrap();
    writeln!(o, "{} {}", names[2], lr.write_timestamp).unwrap();
    o
}

pub fn leader_json(lr: &LeaderRecord, rv: i32, error: Option<String>) -> serde_json::Value {
    json!({
        "rv": rv,
        "error": error,
        "valid": rv == 0,
        "magic": lr.magic,
        "version": lr.version,
        "flags": lr.flags,
        "sector_size": lr.sector_size,
        "num_hosts": lr.num_hosts,
        "max_hosts": lr.max_hosts,
        "owner_id": lr.owner_id,
        "owner_generation": lr.owner_generation,
        "lver": lr.lver,
        "space_name": lr.space_name.to_string_lossy(),
        "resource_name": lr.resource_name.to_string_lossy(),
        "timestamp": lr.timestamp,
        "checksum": lr.checksum,
        "computed_checksum": lr.computed_checksum(),
        "io_timeout": lr.io_timeout,
        "write_id": lr.write_id,
        "write_generation": lr.write_generation,
        "write_timestamp": lr.write_timestamp,
    })
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

fn out(bytes: &[u8]) {
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(bytes);
    let _ = so.flush();
}

/// Prints "<what> done <rv>" (or JSON) for actions with no other output.
fn done(com: &Com, what: &str, r: Result<(), DirectError>) -> i32 {
    let rv = rv_of(&r);
    if com.json {
        print_json(
            &json!({"action": what, "rv": rv, "error": r.as_ref().err().map(|e| e.to_string())}),
        );
    } else {
        println!("{what} done {rv}");
    }
    explain(&r);
    exit_code(rv)
}

pub fn run(com: &Com) -> i32 {
    let o = opts(com);
    match com.action.as_str() {
        "init" => {
            let r = if let Some(ls) = com.lockspace.as_ref().filter(|l| !l.disk.path.is_empty()) {
                direct::init_lockspace(ls, &o)
            } else if let Some(res) = com.resources.first() {
                direct::init_resource(res, &o)
            } else {
                Err(DirectError::Invalid(
                    "init needs -s LOCKSPACE or -r RESOURCE".into(),
                ))
            };
            done(com, "init", r)
        }
        "read_leader" => {
            let read = if let Some(ls) = com.lockspace.as_ref().filter(|l| !l.disk.path.is_empty())
            {
                (direct::read_leader_lockspace(ls, &o), true)
            } else if let Some(res) = com.resources.first() {
                (direct::read_leader_resource(res, &o), false)
            } else {
                eprintln!("hactl: read_leader needs -s LOCKSPACE or -r RESOURCE");
                println!("read_leader done -1");
                return 1;
            };
            let (lr, is_ls) = (read.0.leader, read.1);
            let rv = rv_of(&read.0.result);
            if com.json {
                print_json(&leader_json(
                    &lr,
                    rv,
                    read.0.result.as_ref().err().map(|e| e.to_string()),
                ));
            } else {
                let mut t = format!("read_leader done {rv}\n").into_bytes();
                t.extend(leader_text(&lr, is_ls));
                out(&t);
            }
            explain(&read.0.result);
            exit_code(rv)
        }
        "write_leader" => write_leader(com, &o),
        "dump" => {
            let spec = com.dump_path.as_deref().unwrap_or_default();
            let start = dump::parse_dump_spec(spec).map(|p| p.1).unwrap_or(0);
            if !com.json && dump::offset_warning(start) {
                println!("WARNING: dump offset should be a multiple of 1048576 bytes.");
            }
            match dump::dump(spec, &o) {
                Ok(report) => {
                    if com.json {
                        print_json(&serde_json::to_value(&report).expect("json"));
                    } else {
                        out(&dump::render_text(&report));
                    }
                    if let Some(at) = report.truncated_at {
                        eprintln!(
                            "hactl: warning: {} ends inside the area at offset {at}; that area is incomplete and was not shown",
                            report.path
                        );
                    }
                    0
                }
                Err(e) => {
                    if !com.json {
                        match &e {
                            DirectError::NoDevice(_) => {
                                let path =
                                    dump::parse_dump_spec(spec).map(|p| p.0).unwrap_or_default();
                                println!("Device {path} not found.")
                            }
                            DirectError::NoSizes { .. } => {
                                println!(
                                    "Cannot find sector_size and align_size, set with -A and -Z."
                                )
                            }
                            _ => {}
                        }
                    } else {
                        print_json(&json!({"rv": e.sanlk_rv(), "error": e.to_string()}));
                    }
                    eprintln!("hactl: {e}");
                    1
                }
            }
        }
        "next_free" => {
            let spec = com.dump_path.as_deref().unwrap_or_default();
            // sanlock splits at the first colon, with no escapes here.
            let (path, off) = match spec.split_once(':') {
                Some((p, o)) => (p, o.parse::<u64>().unwrap_or(0)),
                None => (spec, 0),
            };
            match direct::next_free(path, off, &o) {
                Ok(free) => {
                    if com.json {
                        print_json(&json!({"next_free": free}));
                    } else {
                        println!("{free}");
                    }
                    0
                }
                Err(e) => {
                    eprintln!("hactl: {e}");
                    1
                }
            }
        }
        "format" | "lookup" | "update" | "rebuild" => rindex_action(com, &o),
        "acquire" | "release" => {
            let Some(res) = com.resources.first() else {
                eprintln!("hactl: {} needs -r RESOURCE", com.action);
                println!("{} done -22", com.action);
                return 1;
            };
            let r = if com.action == "acquire" {
                direct::acquire(res, &o, com.host_id, com.host_generation).map(|_| ())
            } else {
                let r = direct::release(res, &o, com.host_id, com.host_generation);
                if let Ok(None) = r {
                    eprintln!(
                        "hactl: nothing released: the leader was not written by host_id {} (sanlock's direct release acts as host_id 0; give -i and -g to release as a host)",
                        com.host_id
                    );
                }
                r.map(|_| ())
            };
            done(com, &com.action, r)
        }
        "acquire_id" | "renew_id" | "release_id" => {
            let Some(ls) = com.lockspace.as_ref() else {
                eprintln!("hactl: {} needs -s LOCKSPACE", com.action);
                println!("{} done -22", com.action);
                return 1;
            };
            let r = match com.action.as_str() {
                "acquire_id" => {
                    let name = com
                        .our_host_name
                        .as_deref()
                        .and_then(|n| {
                            crate::ondisk::Name::from_bytes(&n.as_bytes()[..n.len().min(48)])
                        })
                        .unwrap_or_else(crate::delta::default_host_name);
                    direct::acquire_id(ls, &o, name)
                }
                "renew_id" => direct::renew_id(ls, &o),
                _ => direct::release_id(ls, &o),
            };
            // sanlock prints its renew_id result as "rewew_id done".
            let label = if com.action == "renew_id" {
                "rewew_id"
            } else {
                com.action.as_str()
            };
            done(com, label, r.map(|_| ()))
        }
        other => {
            println!("direct action \"{other}\" is unknown");
            1
        }
    }
}

fn rindex_action(com: &Com, o: &DirectOpts) -> i32 {
    let Some(rx) = com.rindex.as_ref() else {
        eprintln!(
            "hactl: {} needs -x RINDEX (<lockspace_name>:<path>:<offset>)",
            com.action
        );
        println!("{} done -22", com.action);
        return 1;
    };
    let (name, off) = com.rentry.unwrap_or_default();
    match com.action.as_str() {
        "format" => done(com, "format", rindex::format(rx, o)),
        "rebuild" => done(com, "rebuild", rindex::rebuild(rx, o).map(|_| ())),
        "lookup" | "update" => {
            let r = if com.action == "lookup" {
                rindex::lookup(rx, &name, off, o)
            } else {
                rindex::update(rx, &name, off, com.clear, o)
            };
            let unit = r
                .as_ref()
                .map(|_| ())
                .map_err(|e| DirectError::Invalid(e.to_string()));
            let rv = match &r {
                Ok(_) => 0,
                Err(e) => e.sanlk_rv(),
            };
            if com.json {
                let (n, of) = r.as_ref().ok().copied().unwrap_or_default();
                print_json(
                    &json!({"action": com.action, "rv": rv, "name": n.to_string_lossy(), "offset": of,
                    "error": r.as_ref().err().map(|e| e.to_string())}),
                );
            } else {
                println!("{} done {rv}", com.action);
                if let (Ok((n, of)), "lookup") = (&r, com.action.as_str()) {
                    let shown = if n.is_empty() {
                        b"-".to_vec()
                    } else {
                        n.bytes().to_vec()
                    };
                    let mut line = b"name ".to_vec();
                    line.extend(shown);
                    line.extend(format!(" offset {of}\n").into_bytes());
                    out(&line);
                }
            }
            explain(&unit);
            exit_code(rv)
        }
        _ => unreachable!(),
    }
}

fn write_leader(com: &Com, o: &DirectOpts) -> i32 {
    let ls = com.lockspace.as_ref().filter(|l| !l.disk.path.is_empty());
    let res = com.resources.first();
    let is_ls = ls.is_some();
    let Some(file) = com.file_path.as_deref() else {
        eprintln!(
            "hactl: write_leader needs -F FILE with the fields to change (as read_leader prints them)"
        );
        println!("write_leader done -22");
        return 1;
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            println!("open error {} {file}", e.raw_os_error().unwrap_or(0));
            return 1;
        }
    };
    // Start from what is on disk now, whether or not it is valid.
    let mut lr = match (ls, res) {
        (Some(l), _) => direct::read_leader_lockspace(l, o).leader,
        (None, Some(r)) => direct::read_leader_resource(r, o).leader,
        _ => LeaderRecord::default(),
    };
    let edits = direct::apply_leader_edits(&mut lr, &text, is_ls);
    for n in &edits.notes {
        println!("{n}");
    }
    let computed = lr.computed_checksum();
    // Unlike sanlock 3.8.5 (which writes an uninitialised checksum for
    // lockspaces and ignores -f for resources), hactl writes the checksum
    // it reports: the generated one, or with -f the one from the file.
    if com.force_mode != 0 && is_ls {
        lr.checksum = edits.checksum.unwrap_or(0);
        println!(
            "warning: using specified checksum {:x} (generated is {computed:x})",
            lr.checksum
        );
    } else {
        lr.checksum = computed;
        println!("use new generated checksum {computed:x}");
    }
    let r = direct::write_leader(ls, res, &lr, o);
    let rv = rv_of(&r);
    println!("write_leader done {rv}");
    if rv == 0 {
        out(&leader_text(&lr, is_ls));
    }
    explain(&r);
    exit_code(rv)
}

/// `hactl direct check`'s own options (not sanlock's syntax: sanlock has
/// no such action).
#[derive(clap::Parser, Debug)]
#[command(
    name = "hactl direct check",
    about = "Check a lockspace area, resource leases (with any resource index among them) or a vdsm xleases volume, read-only, like fsck",
    after_help = "Reports each problem as `PATH: offset N: AREA: message` and a summary line; \
notes (not problems) start with `note:`. Owners of held leases are judged against the \
lockspace: give its area with -s when it is not in the area checked (vdsm: the `ids` \
volume of an xleases volume's storage domain).\n\n\
Exit status: 0 clean, 1 problems found, 2 usage or I/O error."
)]
struct CheckArgs {
    /// What to check: PATH[:OFFSET] (OFFSET in bytes, or with an M suffix;
    /// `\:` escapes a colon in PATH).
    target: String,
    /// A lockspace area the leases belong to: PATH[:OFFSET]; may be repeated.
    #[arg(
        short = 's',
        long = "lockspace",
        value_name = "LOCKSPACE_PATH[:OFFSET]"
    )]
    lockspaces: Vec<String>,
    /// Check as this kind instead of going by the magic numbers found.
    #[arg(long, value_enum)]
    kind: Option<CheckKind>,
    /// Sector size, where the records do not tell it (damaged flags, xleases).
    #[arg(short = 'Z', value_parser = ["512", "4096"])]
    sector_size: Option<String>,
    /// Align size 1M, 2M, 4M or 8M, where the records do not tell it.
    #[arg(short = 'A', value_parser = ["1M", "2M", "4M", "8M"])]
    align_size: Option<String>,
    /// Seconds before a read is abandoned.
    #[arg(short = 'o', default_value_t = direct::DEFAULT_IO_TIMEOUT)]
    io_timeout: u16,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum CheckKind {
    Lockspace,
    Resource,
    Xleases,
}

fn check_spec(spec: &str) -> Result<(String, u64), String> {
    let (path, off, size) = dump::parse_dump_spec(spec).map_err(|e| e.to_string())?;
    if size != 0 || path.is_empty() {
        return Err(format!("{spec:?}: expected PATH[:OFFSET]"));
    }
    Ok((path, off))
}

/// `hactl direct check ...`: returns 0 clean, 1 problems, 2 usage or I/O error.
pub fn check_main(args: &[String]) -> i32 {
    use crate::direct::check::{self, CheckOpts, DiskSource, Kind, Source};
    use clap::Parser;
    let a = match CheckArgs::try_parse_from(
        std::iter::once("hactl direct check".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let timeout = std::time::Duration::from_secs(a.io_timeout.max(1) as u64);
    let fail = |msg: String| {
        if a.json {
            print_json(&json!({"error": msg, "exit_code": 2}));
        }
        eprintln!("hactl: {msg}");
        2
    };
    let (path, offset) = match check_spec(&a.target) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let src = match DiskSource::open(path.as_ref(), timeout) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let mut ls_srcs = Vec::new();
    for s in &a.lockspaces {
        let (p, o) = match check_spec(s) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        match DiskSource::open(p.as_ref(), timeout) {
            Ok(d) => ls_srcs.push((d, o)),
            Err(e) => return fail(e.to_string()),
        }
    }
    let ls_refs: Vec<(&dyn Source, u64)> = ls_srcs
        .iter()
        .map(|(d, o)| (d as &dyn Source, *o))
        .collect();
    let opts = CheckOpts {
        kind: match a.kind {
            None => Kind::Auto,
            Some(CheckKind::Lockspace) => Kind::Lockspace,
            Some(CheckKind::Resource) => Kind::Resource,
            Some(CheckKind::Xleases) => Kind::Xleases,
        },
        sector_size: a.sector_size.as_deref().and_then(|s| s.parse().ok()),
        align_size: a
            .align_size
            .as_deref()
            .and_then(crate::geometry::parse_align_arg),
    };
    match check::check(&src, offset, &ls_refs, &opts) {
        Ok(report) => {
            if a.json {
                let mut v = serde_json::to_value(&report).expect("json");
                v["problems"] = json!(report.problems());
                v["exit_code"] = json!(report.exit_code());
                print_json(&v);
            } else {
                out(report.render_text().as_bytes());
            }
            report.exit_code()
        }
        Err(e) => fail(e.to_string()),
    }
}
