//! `hactl client <action>`: talks to the daemon (sanlock's or hactl's)
//! over its socket and prints exactly what `sanlock client <action>` prints
//! on stdout, with sanlock's exit codes (0 iff the action's result is 0, so
//! `log_dump` and `align` exit 1 when they work, as with sanlock). Why
//! something failed goes to stderr. `--json` prints JSON instead.
//!
//! Actions: status, host_status, renewal, gets, log_dump, shutdown,
//! add_lockspace, inq_lockspace, rem_lockspace, init/write -s, read -s,
//! align, version, set_event, set_config; resource leases: acquire,
//! release, inquire, convert, request, examine, init/write -r, read -r,
//! command (register, acquire, exec); the resource index: format, rebuild,
//! create, delete, lookup, update -x RINDEX.

use std::io::Write;

use serde_json::{Map, Value, json};

use super::args::Com;
use crate::lease_str::ResourceArg;
use crate::ondisk::Name;
use crate::proto::client::Target;
use crate::proto::client::{
    Client, ClientError, Listing, StateBin, StateStream, StatusEntry, rv_of,
};
use crate::proto::{
    self, DEFAULT_IO_TIMEOUT, LOG_DUMP_SIZE, SANLK_CONFIG_UNUSED, SANLK_CONFIG_UNUSED_BY_ORPHANS,
    SANLK_CONFIG_USED, SANLK_CONFIG_USED_BY_ORPHANS, SANLK_LSF_ADD, SANLK_LSF_REM,
    SANLK_RES_SHARED, SANLK_STATE_CLIENT, SANLK_STATE_DAEMON, SANLK_STATE_HOST,
    SANLK_STATE_LOCKSPACE, SANLK_STATE_RENEWAL, SANLK_STATE_RESOURCE, SanlkHost, SanlkHostEvent,
    SanlkLockspace, SanlkPath, SanlkState,
};
use crate::proto::{Cmd, SANLK_WRITE_CLEAR, SanlkDisk, SanlkRentry, SanlkResource, SanlkRindex};

/// The actions this module implements (anything else is "unknown").
pub const ACTIONS: &[&str] = &[
    "status",
    "host_status",
    "renewal",
    "gets",
    "log_dump",
    "shutdown",
    "add_lockspace",
    "inq_lockspace",
    "rem_lockspace",
    "init",
    "write",
    "read",
    "align",
    "version",
    "set_event",
    "set_config",
    "acquire",
    "release",
    "inquire",
    "convert",
    "request",
    "examine",
    "command",
    "format",
    "rebuild",
    "create",
    "delete",
    "lookup",
    "update",
];

/// sanlock's `MAX_SORT_ENTRIES` for `status -o p|s`.
const MAX_SORT_ENTRIES: usize = 1024;

/// stdout as raw bytes: names and paths are printed as sanlock prints
/// them, whatever their encoding.
struct Out(Vec<u8>);

impl Out {
    fn b(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn s(&mut self, s: &str) -> &mut Self {
        self.b(s.as_bytes())
    }
    fn line(&mut self, s: &str) {
        self.s(s).s("\n");
    }
    /// Writes what is buffered now (before a call that may block).
    fn flush(&mut self) {
        let mut so = std::io::stdout().lock();
        let _ = so.write_all(&self.0);
        let _ = so.flush();
        self.0.clear();
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        self.flush();
    }
}

fn exit_code(rv: i32) -> i32 {
    if rv == 0 { 0 } else { 1 }
}

/// The bytes of a C string in `b`: up to the first NUL, or all of it.
fn cstr(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

fn path_bytes(p: &SanlkPath) -> &[u8] {
    cstr(&p.0)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// sanlock's `sanlock_path_export` into a `SANLK_PATH_LEN + 1` buffer: a
/// backslash before each unescaped space or colon; an existing backslash
/// and the character after it are copied as they are.
pub fn export_path(src: &[u8]) -> Vec<u8> {
    const DSTLEN: usize = proto::SANLK_PATH_LEN + 1;
    let src = cstr(src);
    let mut dst = Vec::with_capacity(src.len() + 8);
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        if c == b'\\' {
            if dst.len() > DSTLEN - 3 {
                break;
            }
            dst.push(c);
            i += 1;
            match src.get(i) {
                Some(&n) => dst.push(n),
                None => break,
            }
        } else if c == b' ' || c == b':' {
            if dst.len() > DSTLEN - 3 {
                break;
            }
            dst.push(b'\\');
            dst.push(c);
        } else {
            if dst.len() > DSTLEN - 2 {
                break;
            }
            dst.push(c);
        }
        i += 1;
    }
    dst
}

/// sanlock's `print_debug`: each space-separated word of the state string
/// on its own line, indented by 4 spaces.
fn print_debug(o: &mut Out, text: &[u8]) {
    let len = text.len();
    let mut start = 0;
    for i in 0..len.saturating_sub(1) {
        if text[i] == b' ' {
            o.s("    ").b(cstr(&text[start..i])).s("\n");
            start = i + 1;
        }
    }
    o.s("    ").b(cstr(&text[start..])).s("\n");
}

/// `add_rem_str`: the ADD/REM/ORPHAN suffix taken from the state string.
fn add_rem(st: &SanlkState) -> Option<&'static str> {
    if st.text.is_empty() {
        return None;
    }
    let t = cstr(&st.text);
    let has = |needle: &[u8]| t.windows(needle.len()).any(|w| w == needle);
    if has(b"list=add") {
        Some("ADD")
    } else if has(b"list=rem") {
        Some("REM")
    } else if has(b"list=orphan") {
        Some("ORPHAN")
    } else {
        None
    }
}

fn debug_text(o: &mut Out, st: &SanlkState, debug: bool) {
    if !st.text.is_empty() && debug {
        print_debug(o, &st.text);
    }
}

/// `print_st`: one `status` record as sanlock prints it.
fn print_state(o: &mut Out, e: &StatusEntry, debug: bool) {
    let st = &e.state;
    match st.kind {
        SANLK_STATE_DAEMON => {
            o.s("daemon ").b(st.name.bytes()).s("\n");
        }
        SANLK_STATE_CLIENT => {
            o.s(&format!("p {} ", st.data32 as i32))
                .b(st.name.bytes())
                .s("\n");
        }
        SANLK_STATE_LOCKSPACE => {
            let ls = match &e.bin {
                StateBin::Lockspace(ls) => (**ls).clone(),
                _ => SanlkLockspace::default(),
            };
            o.s("s")
                .s(" ")
                .b(ls.name.bytes())
                .s(&format!(":{}:", ls.host_id))
                .b(&export_path(&ls.host_id_disk.path.0))
                .s(&format!(":{}", ls.host_id_disk.offset));
            match add_rem(st) {
                Some(a) => o.line(&format!(" {a}")),
                None => o.line(""),
            }
        }
        SANLK_STATE_RESOURCE => {
            let res = match &e.bin {
                StateBin::Resource(r) => r.clone(),
                _ => Default::default(),
            };
            o.s("r ")
                .b(res.lockspace_name.bytes())
                .s(":")
                .b(res.name.bytes());
            for d in &res.disks {
                o.s(":")
                    .b(&export_path(&d.path.0))
                    .s(&format!(":{}", d.offset));
            }
            if res.flags & SANLK_RES_SHARED != 0 {
                o.s(&format!(":SH p {}", st.data32));
            } else {
                o.s(&format!(":{} p {}", st.data64, st.data32));
            }
            match add_rem(st) {
                Some(a) => o.line(&format!(" {a}")),
                None => o.line(""),
            }
        }
        _ => return,
    }
    debug_text(o, st, debug);
}

/// `status -o p|s`: sanlock's sorted orders (`print_type`, `print_p`,
/// `print_r_by_p`, `print_r_by_s`), with "-" before whatever is left.
struct Sorter<'a> {
    left: Vec<Option<&'a StatusEntry>>,
    done: usize,
    debug: bool,
}

impl<'a> Sorter<'a> {
    fn take(&mut self, o: &mut Out, i: usize) {
        if let Some(e) = self.left[i].take() {
            print_state(o, e, self.debug);
            self.done += 1;
        }
    }

    fn print_where(&mut self, o: &mut Out, f: impl Fn(&StatusEntry) -> bool) {
        for i in 0..self.left.len() {
            if self.left[i].is_some_and(&f) {
                self.take(o, i);
            }
        }
    }

    /// Each remaining record of type `outer`, then the resources it owns.
    fn print_r_by(
        &mut self,
        o: &mut Out,
        outer: u32,
        owns: impl Fn(&StatusEntry, &StatusEntry) -> bool,
    ) {
        while let Some(i) =
            (0..self.left.len()).find(|&i| self.left[i].is_some_and(|e| e.state.kind == outer))
        {
            let e = self.left[i].expect("found above");
            print_state(o, e, self.debug);
            self.print_where(o, |r| r.state.kind == SANLK_STATE_RESOURCE && owns(e, r));
            self.left[i] = None;
            self.done += 1;
        }
    }
}

fn print_sorted(o: &mut Out, entries: &[StatusEntry], by: char, debug: bool) {
    let mut s = Sorter {
        left: entries.iter().map(Some).collect(),
        done: 0,
        debug,
    };
    s.print_where(o, |e| e.state.kind == SANLK_STATE_DAEMON);
    // print_p(-1): connections that are not registered processes.
    s.print_where(o, |e| {
        e.state.kind == SANLK_STATE_CLIENT && e.state.data32 == u32::MAX
    });
    if by == 'p' {
        s.print_where(o, |e| e.state.kind == SANLK_STATE_LOCKSPACE);
        s.print_r_by(o, SANLK_STATE_CLIENT, |c, r| {
            c.state.data32 != 0 && r.state.data32 == c.state.data32
        });
    } else {
        s.print_where(o, |e| e.state.kind == SANLK_STATE_CLIENT);
        s.print_r_by(o, SANLK_STATE_LOCKSPACE, |l, r| match &r.bin {
            StateBin::Resource(res) => res.lockspace_name.same_as(&l.state.name),
            _ => Name::default().same_as(&l.state.name),
        });
    }
    if s.done < entries.len() {
        o.line("-");
        s.print_where(o, |_| true);
    }
}

/// A `key=value` value as JSON: a number when it is written as one
/// (`03080500` and `0x1f` stay strings).
fn json_value(v: &str) -> Value {
    if let Ok(n) = v.parse::<i64>()
        && n.to_string() == v
    {
        json!(n)
    } else if let Ok(n) = v.parse::<u64>()
        && n.to_string() == v
    {
        json!(n)
    } else {
        json!(v)
    }
}

fn fields_json(st: &SanlkState) -> Value {
    let mut m = Map::new();
    for (k, v) in st.fields() {
        m.insert(k, json_value(&v));
    }
    Value::Object(m)
}

fn lockspace_json(ls: &SanlkLockspace) -> Value {
    json!({
        "name": ls.name.to_string_lossy(),
        "host_id": ls.host_id,
        "path": ls.host_id_disk.path.to_string_lossy(),
        "offset": ls.host_id_disk.offset,
    })
}

fn entry_json(e: &StatusEntry) -> Value {
    let st = &e.state;
    let mut v = match st.kind {
        SANLK_STATE_DAEMON => json!({"type": "daemon", "name": st.name.to_string_lossy()}),
        SANLK_STATE_CLIENT => json!({
            "type": "client",
            "pid": st.data32 as i32,
            "name": st.name.to_string_lossy(),
        }),
        SANLK_STATE_LOCKSPACE => {
            let mut v = match &e.bin {
                StateBin::Lockspace(ls) => lockspace_json(ls),
                _ => json!({"name": st.name.to_string_lossy()}),
            };
            v["type"] = json!("lockspace");
            v
        }
        SANLK_STATE_RESOURCE => {
            let mut v = json!({"type": "resource", "pid": st.data32 as i32, "lver": st.data64});
            if let StateBin::Resource(r) = &e.bin {
                v["lockspace"] = json!(r.lockspace_name.to_string_lossy());
                v["name"] = json!(r.name.to_string_lossy());
                v["shared"] = json!(r.flags & SANLK_RES_SHARED != 0);
                v["disks"] = r
                    .disks
                    .iter()
                    .map(|d| json!({"path": d.path.to_string_lossy(), "offset": d.offset}))
                    .collect();
            }
            v
        }
        SANLK_STATE_HOST => json!({"type": "host", "host_id": st.data32, "timestamp": st.data64}),
        SANLK_STATE_RENEWAL => json!({"type": "renewal", "timestamp": st.data64}),
        k => json!({"type": k}),
    };
    v["list"] = json!(add_rem(st));
    v["fields"] = fields_json(st);
    v
}

fn print_json(v: &Value) {
    let mut so = std::io::stdout().lock();
    let _ = writeln!(so, "{}", serde_json::to_string_pretty(v).expect("json"));
}

/// A human reading of a result number, for stderr.
fn describe(rv: i32) -> String {
    use crate::rv::*;
    let name = match rv {
        SANLK_ERROR => "SANLK_ERROR",
        SANLK_AIO_TIMEOUT => "SANLK_AIO_TIMEOUT: an i/o timed out",
        SANLK_WD_ERROR => "SANLK_WD_ERROR: watchdog (wdmd) failure",
        SANLK_LEADER_READ => "SANLK_LEADER_READ: leader read failed",
        SANLK_LEADER_WRITE => "SANLK_LEADER_WRITE: leader write failed",
        SANLK_LEADER_MAGIC => "SANLK_LEADER_MAGIC: no lockspace at this offset (bad magic)",
        SANLK_LEADER_VERSION => "SANLK_LEADER_VERSION: unsupported on-disk version",
        SANLK_LEADER_SECTORSIZE => "SANLK_LEADER_SECTORSIZE: bad sector size on disk",
        SANLK_LEADER_LOCKSPACE => "SANLK_LEADER_LOCKSPACE: the lockspace name on disk differs",
        SANLK_LEADER_CHECKSUM => "SANLK_LEADER_CHECKSUM: the record's checksum is wrong",
        SANLK_ADDLS_SIZES => "SANLK_ADDLS_SIZES: invalid sector/align sizes on disk",
        SANLK_ADDLS_INVALID_HOSTID => "SANLK_ADDLS_INVALID_HOSTID: host_id over max_hosts",
        SANLK_HOSTID_BUSY => "SANLK_HOSTID_BUSY: another host holds this host_id",
        _ if rv <= -200 => return crate::rv::describe(rv),
        _ if rv < 0 => return std::io::Error::from_raw_os_error(-rv).to_string(),
        _ => return format!("{rv}"),
    };
    name.to_string()
}

/// Says on stderr why an action failed.
fn explain(action: &str, e: &ClientError) {
    match e {
        ClientError::Daemon(rv) => {
            eprintln!(
                "hactl: {action}: the daemon answered {rv} ({})",
                describe(*rv)
            )
        }
        e => eprintln!("hactl: {action}: {e}"),
    }
}

/// `io_timeout` from /etc/sanlock/sanlock.conf, which sanlock's client
/// also reads (it changes what `add_lockspace` and `init` send).
fn conf_io_timeout() -> Option<u32> {
    let text = std::fs::read("/etc/sanlock/sanlock.conf").ok()?;
    let mut found = None;
    for line in text.split(|&c| c == b'\n') {
        if line.first().is_none_or(|&c| c == b'#') {
            continue;
        }
        let line = &line[..line.len().min(127)];
        let key_end = line
            .iter()
            .position(|&c| matches!(c, b' ' | b'=' | b'\t' | 0))
            .unwrap_or(line.len());
        if &line[..key_end] != b"io_timeout" {
            continue;
        }
        let Some(eq) = line.iter().position(|&c| c == b'=') else {
            continue;
        };
        let val = String::from_utf8_lossy(&line[eq + 1..]);
        let word = val.split_whitespace().next().unwrap_or("");
        let digits: String = word
            .chars()
            .enumerate()
            .take_while(|(i, c)| c.is_ascii_digit() || (*i == 0 && (*c == '-' || *c == '+')))
            .map(|(_, c)| c)
            .collect();
        if let Ok(v) = digits.parse::<i64>()
            && v > 0
        {
            found = Some(v.min(u32::MAX as i64) as u32);
        }
    }
    found
}

/// The io_timeout sanlock's client uses: `-o`, else the conf file, else 10.
fn io_timeout(com: &Com) -> u32 {
    com.io_timeout
        .map(u32::from)
        .or_else(conf_io_timeout)
        .unwrap_or(DEFAULT_IO_TIMEOUT)
}

/// The `-s` argument as a wire lockspace (empty if there is none).
fn lockspace(com: &Com) -> Result<SanlkLockspace, String> {
    let Some(l) = &com.lockspace else {
        return Ok(SanlkLockspace::default());
    };
    let path = SanlkPath::new(&l.disk.path).map_err(|e| format!("{}: {e}", l.disk.path))?;
    Ok(SanlkLockspace::new(l.name, l.host_id, path, l.disk.offset))
}

fn ls_name(com: &Com) -> Name {
    com.lockspace.as_ref().map(|l| l.name).unwrap_or_default()
}

/// `hactl client <action> <args>`: as sanlock, an unknown action is
/// reported before the options are parsed.
pub fn main(action: &str, args: &[String]) -> i32 {
    if !ACTIONS.contains(&action) {
        println!("client action \"{action}\" is unknown");
        return 1;
    }
    match super::args::parse_client(action, args) {
        Ok(com) => run(&com),
        Err(e) => {
            println!("{e}");
            1
        }
    }
}

pub fn run(com: &Com) -> i32 {
    if !ACTIONS.contains(&com.action.as_str()) {
        println!("client action \"{}\" is unknown", com.action);
        return 1;
    }
    let ls = match lockspace(com) {
        Ok(ls) => ls,
        Err(e) => {
            eprintln!("hactl: {e}");
            return 1;
        }
    };
    let client = Client::new();
    let mut o = Out(Vec::new());
    for n in &com.notes {
        o.line(n);
    }
    match com.action.as_str() {
        "acquire" | "release" | "inquire" | "convert" | "request" | "examine" | "command" => {
            resource_action(com, &client, &ls, &mut o)
        }
        "status" => status(com, &client, &mut o),
        "host_status" => host_status(com, &client, &mut o),
        "renewal" => renewal(com, &client, &mut o),
        "gets" => gets(com, &client, &mut o),
        "log_dump" => log_dump(com, &client, &mut o),
        "version" => version(com, &client, &mut o),
        "read" => read(com, &client, &ls, &mut o),
        "init" | "write" => init(com, &client, &ls, &mut o),
        "format" | "rebuild" | "create" | "delete" | "lookup" | "update" => {
            rindex_action(com, &client, &mut o)
        }
        _ => simple(com, &client, &ls, &mut o),
    }
}

/// The resource index through the daemon (`sanlock_format_rindex` and
/// friends), with sanlock's lines: `format done 0`, `create_resource done
/// 0` + `offset N`, `lookup done 0` + `name N offset N`, ...
fn rindex_action(com: &Com, client: &Client, o: &mut Out) -> i32 {
    let action = com.action.as_str();
    let Some(rx) = com.rindex.as_ref() else {
        eprintln!("hactl: {action} needs -x RINDEX (<lockspace_name>:<path>:<offset>)");
        o.line(&format!("{action} done -22"));
        return 1;
    };
    let Ok(path) = SanlkPath::new(&rx.disk.path) else {
        eprintln!("hactl: {action}: the index path is too long or has a NUL");
        o.line(&format!("{action} done -22"));
        return 1;
    };
    let mut ri = SanlkRindex {
        lockspace_name: rx.lockspace,
        disk: SanlkDisk::new(path, rx.disk.offset),
        ..Default::default()
    };
    if action == "format" {
        ri.flags |= match com.sector_size {
            Some(512) => proto::SANLK_RIF_SECTOR512,
            Some(4096) => proto::SANLK_RIF_SECTOR4K,
            _ => 0,
        };
        ri.flags |= match com.align_size {
            Some(a) if a == 1 << 20 => proto::SANLK_RIF_ALIGN1M,
            Some(a) if a == 2 << 20 => proto::SANLK_RIF_ALIGN2M,
            Some(a) if a == 4 << 20 => proto::SANLK_RIF_ALIGN4M,
            Some(a) if a == 8 << 20 => proto::SANLK_RIF_ALIGN8M,
            _ => 0,
        };
    }
    let (name, offset) = com.rentry.unwrap_or_default();
    let re = SanlkRentry {
        name,
        offset,
        ..Default::default()
    };
    let (label, r) = match action {
        "format" => (
            "format",
            client.rindex_whole(Cmd::FormatRindex, &ri, 0).map(|_| None),
        ),
        "rebuild" => (
            "rebuild",
            client
                .rindex_whole(Cmd::RebuildRindex, &ri, 0)
                .map(|_| None),
        ),
        "create" => (
            "create_resource",
            client
                .rindex_entry(Cmd::CreateResource, &ri, 0, &re, 0)
                .map(Some),
        ),
        "delete" => (
            "delete_resource",
            client
                .rindex_entry(Cmd::DeleteResource, &ri, 0, &re, 0)
                .map(|_| None),
        ),
        "lookup" => (
            "lookup",
            client
                .rindex_entry(Cmd::LookupRindex, &ri, 0, &re, 0)
                .map(Some),
        ),
        _ => {
            let how = if com.clear {
                proto::SANLK_RXUP_REM
            } else {
                proto::SANLK_RXUP_ADD
            };
            (
                "update",
                client
                    .rindex_entry(Cmd::UpdateRindex, &ri, how, &re, 0)
                    .map(|_| None),
            )
        }
    };
    let rv = r.as_ref().map_or_else(ClientError::rv, |_| 0);
    let found = r.as_ref().ok().cloned().flatten();
    if com.json {
        let mut v = json!({"action": label, "rv": rv});
        if let Some(e) = found {
            v["offset"] = json!(e.offset);
            if action == "lookup" {
                v["name"] = json!(lossy(e.name.bytes()));
            }
        }
        if let Err(e) = &r {
            v["error"] = json!(e.to_string());
        }
        print_json(&v);
        return exit_code(rv);
    }
    o.line(&format!("{label} done {rv}"));
    match (action, found) {
        ("create", Some(e)) => o.line(&format!("offset {}", e.offset)),
        ("lookup", Some(e)) => {
            let shown: &[u8] = if e.name.is_empty() {
                b"-"
            } else {
                e.name.bytes()
            };
            o.s("name ").b(shown).line(&format!(" offset {}", e.offset));
        }
        _ => {}
    }
    if let Err(e) = &r
        && !matches!(e, ClientError::Daemon(_))
    {
        eprintln!("hactl: {label}: {e}");
    }
    exit_code(rv)
}

/// A daemon that refuses a listing answers with a negative result and no
/// entries (hactl's credential check: -EACCES). sanlock's client prints
/// nothing then; we say why on stderr and exit 1.
fn refused(h: &crate::proto::Header, what: &str, com: &Com) -> bool {
    let rv = h.result();
    if rv >= 0 {
        return false;
    }
    let why = std::io::Error::from_raw_os_error(-rv);
    eprintln!("hactl: {what}: the daemon refused: {rv} ({why})");
    if com.json {
        print_json(&json!({"rv": rv, "error": why.to_string()}));
    }
    true
}

/// Actions that print "<what> ..." / "<what> done <rv>".
fn simple(com: &Com, client: &Client, ls: &SanlkLockspace, o: &mut Out) -> i32 {
    let name = ls_name(com);
    let io = io_timeout(com);
    let force = com.force_mode;
    let wait = com.wait.unwrap_or(0);
    let config_cmd = match (com.orphan, com.used) {
        (Some(o), _) if o != 0 => SANLK_CONFIG_USED_BY_ORPHANS,
        (Some(_), _) => SANLK_CONFIG_UNUSED_BY_ORPHANS,
        (None, Some(u)) if u != 0 => SANLK_CONFIG_USED,
        (None, Some(_)) => SANLK_CONFIG_UNUSED,
        (None, None) => 0,
    };
    let he = SanlkHostEvent {
        host_id: com.host_id,
        generation: com.host_generation,
        event: com.he_event,
        data: com.he_data,
    };
    let action = com.action.as_str();
    let what = match action {
        "add_lockspace" if io != DEFAULT_IO_TIMEOUT => "add_lockspace_timeout",
        a => a,
    };
    if !com.json {
        match action {
            "add_lockspace" if io != DEFAULT_IO_TIMEOUT => {
                o.line(&format!("add_lockspace_timeout {io}"))
            }
            "shutdown" => o.line(&format!("shutdown force {} wait {wait}", force as i32)),
            "set_config" => o
                .s("set_config ")
                .b(name.bytes())
                .line(&format!(" {config_cmd}")),
            "set_event" => o.line(&format!(
                "set_event {} {} event 0x{:x} data 0x{:x}",
                he.host_id, he.generation, he.event, he.data
            )),
            a => o.line(a),
        }
        // add/rem lockspace can take minutes: show what is under way.
        o.flush();
    }
    let r = match action {
        "add_lockspace" if io != DEFAULT_IO_TIMEOUT => client.add_lockspace(ls, 0, io, None),
        "add_lockspace" => client.add_lockspace(ls, 0, 0, None),
        "inq_lockspace" => client.inq_lockspace(ls, 0, Some(proto::client::DEFAULT_TIMEOUT)),
        "rem_lockspace" => client.rem_lockspace(ls, 0, None),
        "align" => client.align(&ls.host_id_disk),
        "shutdown" if wait != 0 => client.shutdown_wait(force, None),
        "shutdown" => client.shutdown(force).map(|_| 0),
        "set_config" => client.set_config(&name, 0, config_cmd),
        "set_event" => client.set_event(&name, &he, 0),
        other => unreachable!("{other} is not a simple action"),
    };
    let rv = rv_of(&r);
    if com.json {
        let mut v = json!({"action": action, "rv": rv});
        if let Err(e) = &r {
            v["error"] = json!(e.to_string());
        }
        if action == "align" && rv > 0 {
            v["align_size"] = json!(rv);
        }
        print_json(&v);
    } else {
        o.line(&format!("{what} done {rv}"));
    }
    if let Err(e) = &r {
        explain(action, e);
    }
    exit_code(rv)
}

fn version(com: &Com, client: &Client, o: &mut Out) -> i32 {
    let (err, proto_v, version) = match client.version(0) {
        Ok(v) if v.result < 0 => (Some(v.result), v.proto, 0),
        Ok(v) => (None, v.proto, v.version),
        Err(e) => {
            eprintln!("hactl: version: {e}");
            (Some(e.rv()), 0, 0)
        }
    };
    let ver = |v: u32| format!("{}.{}.{}", v >> 24, (v >> 16) & 0xFF, (v >> 8) & 0xFF);
    let prot = |p: u32| format!("{}.{}", p >> 16, p & 0xFFFF);
    if com.json {
        print_json(&json!({
            "rv": err.unwrap_or(0),
            "client_version": ver(proto::VERSION_COMBINED),
            "client_version_hex": format!("0x{:08x}", proto::VERSION_COMBINED),
            "daemon_version": err.is_none().then(|| ver(version)),
            "daemon_version_hex": err.is_none().then(|| format!("0x{version:08x}")),
            "client_socket_protocol": prot(proto::SM_PROTO),
            "daemon_socket_protocol": prot(proto_v),
        }));
        return 0;
    }
    if let Some(rv) = err {
        o.line(&format!("daemon version error {rv}"));
    }
    o.line(&format!(
        "client version {} (0x{:08x})",
        ver(proto::VERSION_COMBINED),
        proto::VERSION_COMBINED
    ));
    o.line(&format!(
        "daemon version {} (0x{version:08x})",
        ver(version)
    ));
    o.line(&format!("client socket protocol {}", prot(proto::SM_PROTO)));
    o.line(&format!("daemon socket protocol {}", prot(proto_v)));
    0
}

fn status(com: &Com, client: &Client, o: &mut Out) -> i32 {
    let s = match client.status(0) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hactl: status: {e}");
            if com.json {
                print_json(&json!({"rv": e.rv(), "error": e.to_string()}));
            }
            return 1;
        }
    };
    if refused(&s.header, "status", com) {
        return 1;
    }
    if let Some(t) = &s.truncated {
        eprintln!("hactl: status: the reply ended early: {t}");
    }
    if com.json {
        let entries: Vec<Value> = s.entries.iter().map(entry_json).collect();
        print_json(&json!({"rv": 0, "entries": entries}));
        return 0;
    }
    match com.sort_arg {
        Some(by @ ('p' | 's')) => {
            if s.entries.len() > MAX_SORT_ENTRIES {
                o.line(&format!("cannot sort over {MAX_SORT_ENTRIES}"));
                return 1;
            }
            print_sorted(o, &s.entries, by, com.debug);
        }
        _ => {
            for e in &s.entries {
                print_state(o, e, com.debug);
            }
        }
    }
    0
}

/// The host lines of one lockspace (`lockspace_host_status`): its result.
fn host_lines(
    client: &Client,
    name: &Name,
    debug: bool,
    o: &mut Out,
    json_hosts: &mut Vec<Value>,
) -> i32 {
    if name.is_empty() {
        return -1;
    }
    let s = match client.host_status(name) {
        Ok(s) => s,
        Err(e) => {
            if !matches!(e, ClientError::Daemon(_)) {
                eprintln!("hactl: host_status: {e}");
            }
            return e.rv();
        }
    };
    for e in s
        .entries
        .iter()
        .filter(|e| e.state.kind == SANLK_STATE_HOST)
    {
        o.line(&format!("{} timestamp {}", e.state.data32, e.state.data64));
        debug_text(o, &e.state, debug);
        let mut v = fields_json(&e.state);
        v["host_id"] = json!(e.state.data32);
        v["timestamp"] = json!(e.state.data64);
        json_hosts.push(v);
    }
    s.header.result()
}

/// `host_status -s LS --history`: hactl's daemon's history of the
/// lockspace (see [`crate::history`]); sanlock's daemon has none.
fn history(com: &Com, client: &Client) -> i32 {
    let name = ls_name(com);
    if name.is_empty() {
        eprintln!("hactl: host_status --history needs -s LOCKSPACE");
        return 1;
    }
    let r = client.history(&name).and_then(|b| {
        serde_json::from_slice::<crate::history::LockspaceHistory>(&b)
            .map_err(|_| ClientError::Invalid("the history reply is not the JSON expected"))
    });
    match r {
        Ok(h) if com.json => print_json(&json!({"rv": 0, "history": h})),
        Ok(h) => print!("{}", h.render()),
        Err(e) => {
            if com.json {
                print_json(&json!({"rv": e.rv(), "error": e.to_string()}));
            }
            if matches!(e, ClientError::Daemon(rv) if rv == -libc::ENOENT) {
                eprintln!("hactl: host_status --history: no lockspace named {name}");
            } else {
                explain("host_status --history", &e);
            }
            return 1;
        }
    }
    0
}

fn host_status(com: &Com, client: &Client, o: &mut Out) -> i32 {
    if com.history {
        return history(com, client);
    }
    let name = ls_name(com);
    let mut hosts = Vec::new();
    if !name.is_empty() {
        let rv = host_lines(client, &name, com.debug, o, &mut hosts);
        if com.json {
            o.0.clear();
            print_json(
                &json!({"rv": rv, "lockspaces": [{"name": name.to_string_lossy(), "hosts": hosts}]}),
            );
        }
        if rv == -libc::ENOSPC {
            eprintln!("hactl: host_status: no lockspace named {name}");
        }
        return exit_code(rv);
    }
    let s = match client.status(SANLK_STATE_LOCKSPACE) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hactl: host_status: {e}");
            if com.json {
                print_json(&json!({"rv": e.rv(), "error": e.to_string()}));
            }
            return 1;
        }
    };
    if refused(&s.header, "host_status", com) {
        return 1;
    }
    let names: Vec<Name> = s
        .entries
        .iter()
        .filter(|e| e.state.kind == SANLK_STATE_LOCKSPACE)
        .map(|e| match &e.bin {
            StateBin::Lockspace(ls) => ls.name,
            _ => Name::default(),
        })
        .collect();
    let mut all = Vec::new();
    for n in &names {
        o.s("lockspace ").b(n.bytes()).s("\n");
        let mut hosts = Vec::new();
        let rv = host_lines(client, n, com.debug, o, &mut hosts);
        all.push(json!({"name": n.to_string_lossy(), "rv": rv, "hosts": hosts}));
    }
    if com.json {
        o.0.clear();
        print_json(&json!({"rv": 0, "lockspaces": all}));
    }
    0
}

fn renewal(com: &Com, client: &Client, o: &mut Out) -> i32 {
    let name = ls_name(com);
    if name.is_empty() {
        eprintln!("hactl: renewal needs -s LOCKSPACE");
        return 1;
    }
    let s: StateStream = match client.renewal(&name) {
        Ok(s) => s,
        Err(e) => {
            explain("renewal", &e);
            return 1;
        }
    };
    if com.json {
        let list: Vec<Value> = s.entries.iter().map(|e| fields_json(&e.state)).collect();
        print_json(
            &json!({"rv": s.header.result(), "io_timeout": s.header.data2, "renewals": list}),
        );
        return exit_code(s.header.result());
    }
    // sanlock prints its string buffer for every record; a record with no
    // string reprints the previous one.
    let mut last: Vec<u8> = Vec::new();
    for e in &s.entries {
        if !e.state.text.is_empty() {
            last = cstr(&e.state.text).to_vec();
        }
        o.b(&last).s("\n");
    }
    exit_code(s.header.result())
}

fn hosts_json(l: &Listing<SanlkHost>) -> Value {
    l.items
        .iter()
        .map(|h| {
            json!({
                "host_id": h.host_id,
                "generation": h.generation,
                "timestamp": h.timestamp,
                "io_timeout": h.io_timeout,
                "state": h.state_name(),
                "flags": h.flags,
            })
        })
        .collect()
}

fn gets(com: &Com, client: &Client, o: &mut Out) -> i32 {
    let list = match client.get_lockspaces(0) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hactl: gets: {e}");
            if com.json {
                print_json(&json!({"rv": e.rv(), "error": e.to_string()}));
            } else {
                o.line(&format!("gets error {}", e.rv()));
            }
            return 1;
        }
    };
    if list.result < 0 {
        o.line(&format!("gets error {}", list.result));
    }
    let mut js = Vec::new();
    for ls in &list.items {
        let mut flags = String::new();
        if ls.flags & SANLK_LSF_ADD != 0 {
            flags.push_str("ADD ");
        }
        if ls.flags & SANLK_LSF_REM != 0 {
            flags.push_str("REM ");
        }
        o.s("s ")
            .b(ls.name.bytes())
            .s(&format!(":{}:", ls.host_id))
            .b(path_bytes(&ls.host_id_disk.path))
            .line(&format!(":{} {flags}", ls.host_id_disk.offset));
        let mut v = lockspace_json(ls);
        v["state"] = json!(flags.split_whitespace().collect::<Vec<_>>());
        if com.get_hosts != 0 {
            match client.get_hosts(&ls.name, 0, 0) {
                Err(ClientError::Daemon(rv)) if rv == -libc::EAGAIN => {
                    o.line("hosts not ready");
                    v["hosts_rv"] = json!(rv);
                }
                Err(e) => {
                    o.line(&format!("hosts error {}", e.rv()));
                    v["hosts_rv"] = json!(e.rv());
                }
                Ok(h) if h.result < 0 => {
                    o.line(&format!("hosts error {}", h.result));
                    v["hosts_rv"] = json!(h.result);
                }
                Ok(h) => {
                    for x in &h.items {
                        o.line(&format!(
                            "h {} gen {} timestamp {} {}",
                            x.host_id,
                            x.generation,
                            x.timestamp,
                            x.state_name()
                        ));
                    }
                    v["hosts"] = hosts_json(&h);
                }
            }
        }
        js.push(v);
    }
    if com.json {
        o.0.clear();
        print_json(&json!({"rv": list.result, "count": list.count, "lockspaces": js}));
    }
    0
}

fn log_dump(com: &Com, client: &Client, o: &mut Out) -> i32 {
    let d = match client.log_dump(LOG_DUMP_SIZE) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("hactl: log_dump: {e}");
            return 1;
        }
    };
    // sanlock returns the received byte count, so this exits 1 even when
    // it works.
    if d.declared <= 0 || d.declared as usize > LOG_DUMP_SIZE {
        return 1;
    }
    if d.bytes.is_empty() {
        eprintln!("hactl: log_dump: the daemon closed the connection before the log");
        return 1;
    }
    if com.json {
        print_json(&json!({
            "declared": d.declared,
            "received": d.bytes.len(),
            "log": lossy(cstr(&d.bytes)),
        }));
        return 1;
    }
    o.b(cstr(&d.bytes)).s("\n");
    if d.bytes.len() != d.declared as usize {
        o.line(&format!("partial dump {} of {}", d.bytes.len(), d.declared));
    }
    1
}

fn lsf_flags(com: &Com) -> u32 {
    com.sector_size.map(proto::lsf_sector_flag).unwrap_or(0)
        | com.align_size.map(proto::lsf_align_flag).unwrap_or(0)
}

fn read(com: &Com, client: &Client, ls: &SanlkLockspace, o: &mut Out) -> i32 {
    if ls.host_id_disk.path.is_empty() {
        return read_resource(com, client, o);
    }
    let mut req = ls.clone();
    req.flags |= lsf_flags(com);
    match client.read_lockspace(&req, 0) {
        Err(e) => {
            explain("read", &e);
            if com.json {
                print_json(&json!({"rv": e.rv(), "error": e.to_string()}));
            } else {
                o.line(&format!("read error {}", e.rv()));
            }
            1
        }
        Ok((got, io)) => {
            let sector = proto::lsf_sector_size(got.flags);
            let align = proto::lsf_align_size(got.flags);
            if com.json {
                let mut v = lockspace_json(&got);
                v["rv"] = json!(0);
                v["io_timeout"] = json!(io);
                v["sector_size"] = json!(sector);
                v["align_size"] = json!(align);
                print_json(&v);
                return 0;
            }
            o.s("s ")
                .b(got.name.bytes())
                .s(&format!(":{}:", got.host_id))
                .b(path_bytes(&got.host_id_disk.path))
                .line(&format!(":{}", got.host_id_disk.offset));
            if com.debug {
                o.line(&format!("io_timeout {io}"));
                o.line(&format!("sector_size {sector}"));
                o.line(&format!("align_size {align}"));
            }
            0
        }
    }
}

fn init(com: &Com, client: &Client, ls: &SanlkLockspace, o: &mut Out) -> i32 {
    if !com.json {
        o.line("init");
        o.flush();
    }
    let r = if ls.host_id_disk.path.is_empty() {
        match first_resource(com) {
            // sanlock_write_resource(NULL): -EINVAL.
            None => Err(ClientError::Invalid(
                "init needs -s LOCKSPACE or -r RESOURCE with a path",
            )),
            Some(Err(e)) => Err(e),
            Some(Ok(mut res)) => {
                res.flags |= res_size_flags(com);
                let clear = if com.clear { SANLK_WRITE_CLEAR } else { 0 };
                client.write_resource(
                    &res,
                    clamp_u32(com.max_hosts),
                    clamp_u32(com.num_hosts),
                    clear,
                )
            }
        }
    } else {
        let mut req = ls.clone();
        req.flags |= lsf_flags(com);
        let max_hosts = com.max_hosts.min(u32::MAX as u64) as u32;
        client.write_lockspace(&req, max_hosts, 0, io_timeout(com))
    };
    let rv = rv_of(&r);
    if com.json {
        print_json(&json!({"action": "init", "rv": rv}));
    } else {
        o.line(&format!("init done {rv}"));
    }
    if let Err(e) = &r {
        explain("init", e);
    }
    exit_code(rv)
}

fn clamp_u32(v: u64) -> u32 {
    v.min(u32::MAX as u64) as u32
}

/// A parsed `-r` as the wire struct (`SANLK_RES_LVER` / `SANLK_RES_SHARED`
/// as sanlock_str_to_res sets them).
pub fn resource_to_wire(r: &ResourceArg) -> Result<SanlkResource, ClientError> {
    let mut disks = Vec::with_capacity(r.disks.len());
    for d in &r.disks {
        let path = SanlkPath::new(&d.path)
            .map_err(|_| ClientError::Invalid("a resource path is too long or has a NUL"))?;
        disks.push(SanlkDisk::new(path, d.offset));
    }
    let mut flags = 0;
    if r.shared {
        flags |= SANLK_RES_SHARED;
    }
    if r.lver.is_some() {
        flags |= proto::SANLK_RES_LVER;
    }
    Ok(SanlkResource {
        lockspace_name: r.lockspace,
        name: r.name,
        lver: r.lver.unwrap_or(0),
        flags,
        disks,
        ..Default::default()
    })
}

fn first_resource(com: &Com) -> Option<Result<SanlkResource, ClientError>> {
    com.resources.first().map(resource_to_wire)
}

fn res_size_flags(com: &Com) -> u32 {
    // The SANLK_RES_* size bits are the LSF ones.
    lsf_flags(com)
}

/// `sanlock_res_to_str`: `LS:RES:path:off[:path:off...]:lver|:SH`, paths
/// escaped.
pub fn res_to_str(res: &SanlkResource) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(res.lockspace_name.bytes());
    s.push(b':');
    s.extend_from_slice(res.name.bytes());
    for d in &res.disks {
        s.push(b':');
        s.extend_from_slice(&export_path(&d.path.0));
        s.extend_from_slice(format!(":{}", d.offset).as_bytes());
    }
    if res.flags & SANLK_RES_SHARED != 0 {
        s.extend_from_slice(b":SH");
    } else {
        s.extend_from_slice(format!(":{}", res.lver).as_bytes());
    }
    s
}

fn resource_json(res: &SanlkResource) -> Value {
    json!({
        "lockspace": res.lockspace_name.to_string_lossy(),
        "name": res.name.to_string_lossy(),
        "lver": res.lver,
        "shared": res.flags & SANLK_RES_SHARED != 0,
        "disks": res.disks.iter()
            .map(|d| json!({"path": d.path.to_string_lossy(), "offset": d.offset}))
            .collect::<Vec<_>>(),
    })
}

/// The `-r` arguments as wire structs, with acquire's `-n`/`-P` flags.
fn wire_resources(com: &Com) -> Result<Vec<SanlkResource>, ClientError> {
    let mut out = Vec::new();
    for r in &com.resources {
        let mut w = resource_to_wire(r)?;
        if matches!(com.action.as_str(), "acquire" | "command") {
            if com.num_hosts != 0 {
                w.flags |= proto::SANLK_RES_NUM_HOSTS;
                w.data32 = clamp_u32(com.num_hosts);
            }
            if com.persistent != 0 {
                w.flags |= proto::SANLK_RES_PERSISTENT;
            }
        }
        out.push(w);
    }
    Ok(out)
}

/// acquire, release, inquire, convert, request, examine, command: sanlock's
/// lines (`<what> pid N` / `<what> done RV`), or one JSON object.
fn resource_action(com: &Com, client: &Client, ls: &SanlkLockspace, o: &mut Out) -> i32 {
    let action = com.action.as_str();
    let pid = com.pid.unwrap_or(-1);
    let orphan = com.orphan.unwrap_or(0) != 0;
    let mut res = match wire_resources(com) {
        Ok(r) => r,
        Err(e) => {
            explain(action, &e);
            return 1;
        }
    };
    if action == "command" {
        return command(com, client, &res, o);
    }
    if action == "inquire" {
        return inquire(com, client, pid, o);
    }
    if !com.json {
        match action {
            "acquire" | "release" | "convert" => o.line(&format!("{action} pid {pid}")),
            a => o.line(a),
        }
        o.flush();
    }
    let r = match action {
        "acquire" => {
            let flags = if orphan {
                proto::SANLK_ACQUIRE_ORPHAN
            } else {
                0
            };
            client.acquire(Target::Pid(pid), flags, &res, None)
        }
        "release" => {
            // `-O 1 -s LS` without -r: every orphan of that lockspace.
            if orphan && res.is_empty() && !ls.name.is_empty() {
                res.push(SanlkResource {
                    lockspace_name: ls.name,
                    ..Default::default()
                });
            }
            let mut flags = 0;
            if orphan {
                flags |= proto::SANLK_REL_ORPHAN;
            }
            if com.all != 0 {
                flags |= proto::SANLK_REL_ALL;
            }
            client.release(Target::Pid(pid), flags, &res)
        }
        "convert" => match res.first() {
            Some(r) => client.convert(Target::Pid(pid), 0, r),
            None => Err(ClientError::Invalid("convert needs -r RESOURCE")),
        },
        "request" => match res.first() {
            Some(r) => client.request_resource(0, com.force_mode, r),
            None => Err(ClientError::Invalid("request needs -r RESOURCE")),
        },
        "examine" => client.examine(
            0,
            Some(ls).filter(|l| !l.host_id_disk.path.is_empty()),
            res.first(),
        ),
        other => unreachable!("{other} is not a resource action"),
    };
    let rv = rv_of(&r);
    if com.json {
        let mut v = json!({"action": action, "rv": rv});
        if matches!(action, "acquire" | "release" | "convert") {
            v["pid"] = json!(pid);
        }
        if let Err(e) = &r {
            v["error"] = json!(e.to_string());
        }
        print_json(&v);
    } else {
        o.line(&format!("{action} done {rv}"));
    }
    if let Err(e) = &r {
        explain(action, e);
    }
    exit_code(rv)
}

fn inquire(com: &Com, client: &Client, pid: i32, o: &mut Out) -> i32 {
    if !com.json {
        o.line(&format!("inquire pid {pid}"));
    }
    let (rv, count, state) = match client.inquire(Target::Pid(pid), 0) {
        Ok(i) => (i.result, i.count, i.state),
        Err(e) => {
            explain("inquire", &e);
            (e.rv(), 0, None)
        }
    };
    if com.json {
        let mut v = json!({"action": "inquire", "pid": pid, "rv": rv, "res_count": count});
        if let Some(st) = &state {
            v["state"] = json!(lossy(st));
            if let Ok(list) = crate::lease_str::state_to_args(st) {
                v["resources"] = list
                    .iter()
                    .filter_map(|r| resource_to_wire(r).ok())
                    .map(|r| resource_json(&r))
                    .collect();
            }
        }
        print_json(&v);
        return exit_code(rv);
    }
    o.line(&format!("inquire done {rv} res_count {count}"));
    if rv < 0 {
        explain("inquire", &ClientError::Daemon(rv));
        return 1;
    }
    let Some(state) = state else {
        // printf("%s", NULL) in glibc.
        o.line("\"(null)\"");
        if com.debug {
            // sanlock crashes here (sanlock_state_to_args(NULL)); say why we stop.
            eprintln!("hactl: inquire -D: no resources to convert");
        }
        return exit_code(rv);
    };
    o.s("\"").b(&state).s("\"\n");
    if !com.debug {
        return exit_code(rv);
    }
    let list = match crate::lease_str::state_to_args(&state) {
        Ok(l) => l,
        Err((e, n)) => {
            o.line(&format!("\nstate_to_args done {e} res_count {n}"));
            return 1;
        }
    };
    o.line(&format!("\nstate_to_args done 0 res_count {}", list.len()));
    let mut wire = Vec::new();
    for r in &list {
        let d0 = r.disks.first();
        o.s("\"")
            .b(r.lockspace.bytes())
            .s(":")
            .b(r.name.bytes())
            .s(&format!(
                ":{}:{}:{}\"\n",
                d0.map(|d| d.path.as_str()).unwrap_or(""),
                d0.map(|d| d.offset).unwrap_or(0),
                r.lver.unwrap_or(0)
            ));
        match resource_to_wire(r) {
            Ok(w) => wire.push(w),
            Err(e) => {
                explain("inquire", &e);
                return 1;
            }
        }
    }
    let joined: Vec<Vec<u8>> = wire.iter().map(res_to_str).collect();
    o.line("\nargs_to_state done 0");
    o.s("\"").b(&joined.join(&b' ')).s("\"\n");
    0
}

/// `command -r RES... -c PATH ARGS`: register, acquire on the registered
/// connection, then exec PATH in this process, which keeps the
/// registration (same pid, inherited socket): the leases go when it exits.
fn command(com: &Com, client: &Client, res: &[SanlkResource], o: &mut Out) -> i32 {
    use std::os::fd::AsRawFd;
    // sanlock prints with stdio: line-buffered on a terminal, otherwise
    // buffered until exit, so a successful exec discards its lines. Do the
    // same, or scripts capturing `command`'s output would see other text.
    // SAFETY: isatty only inspects fd 1.
    let tty = unsafe { libc::isatty(1) } == 1;
    let show = |o: &mut Out| {
        if tty {
            o.flush();
        }
    };
    o.line("register");
    show(o);
    let mut conn = match client.register() {
        Ok(c) => c,
        Err(e) => {
            explain("register", &e);
            o.line(&format!("register done {}", e.rv()));
            // sanlock: rv stays 0 when register fails.
            return 0;
        }
    };
    let fd = conn.as_raw_fd();
    o.line(&format!("register done {fd}"));
    o.line(&format!("acquire fd {fd}"));
    show(o);
    let flags = if com.orphan.unwrap_or(0) != 0 {
        proto::SANLK_ACQUIRE_ORPHAN
    } else {
        0
    };
    // The lease may wait for a dead owner: no timeout, as libsanlock.
    let r = conn
        .set_timeout(None)
        .and_then(|_| client.acquire(Target::Conn(&mut conn), flags, res, None));
    let rv = rv_of(&r);
    o.line(&format!("acquire done {rv}"));
    show(o);
    if let Err(e) = &r {
        explain("acquire", e);
        return 1;
    }
    let Some(path) = com.command.first().filter(|p| !p.is_empty()) else {
        // sanlock without a command path: hold the leases forever.
        o.flush();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(10));
        }
    };
    let failed = exec_keeping(conn, path, &com.command);
    // Only reached when exec failed: sanlock's buffered lines come out at exit.
    failed
}

/// execv(path, argv) with the registered socket inherited (Rust opens it
/// close-on-exec). Returns only if exec failed (exit 0, as sanlock).
fn exec_keeping(conn: proto::client::Conn, path: &str, argv: &[String]) -> i32 {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, IntoRawFd};
    let stream = conn.into_stream();
    let fd = stream.as_raw_fd();
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFD);
        libc::fcntl(fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
    }
    let _ = stream.into_raw_fd();
    let (Ok(cpath), Ok(cargs)) = (
        CString::new(path),
        argv.iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<Vec<_>, _>>(),
    ) else {
        eprintln!("execv failed: Invalid argument");
        return 0;
    };
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: NUL-terminated strings and a NULL-terminated argv that live
    // across the call; execv returns only on failure.
    unsafe { libc::execv(cpath.as_ptr(), ptrs.as_ptr()) };
    // perror(): "execv failed: " and strerror, without Rust's "(os error N)".
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: strerror returns a valid C string (static or thread-local).
    let msg = unsafe { std::ffi::CStr::from_ptr(libc::strerror(errno)) };
    eprintln!("execv failed: {}", msg.to_string_lossy());
    0
}

/// `read -r RES [-h 1] [-D]`: the lease's leader (and, with -h 1, its
/// owners) as sanlock prints them.
fn read_resource(com: &Com, client: &Client, o: &mut Out) -> i32 {
    let got = match first_resource(com) {
        // sanlock_read_resource(NULL): -EINVAL.
        None => Err(ClientError::Invalid(
            "read needs -s LOCKSPACE or -r RESOURCE",
        )),
        Some(Err(e)) => Err(e),
        Some(Ok(mut res)) => {
            res.flags |= res_size_flags(com);
            if com.get_hosts != 0 {
                client
                    .read_resource_owners(&res, 0)
                    .map(|w| (w.res, Some(w.hosts)))
            } else {
                client.read_resource(&res, 0).map(|r| (r, None))
            }
        }
    };
    let (res, hosts) = match got {
        Err(e) => {
            explain("read", &e);
            if com.json {
                print_json(&json!({"rv": e.rv(), "error": e.to_string()}));
            } else {
                o.line(&format!("read error {}", e.rv()));
            }
            return 1;
        }
        Ok(v) => v,
    };
    let sector = proto::lsf_sector_size(res.flags);
    let align = proto::lsf_align_size(res.flags);
    if com.json {
        let mut v = resource_json(&res);
        v["rv"] = json!(0);
        v["sector_size"] = json!(sector);
        v["align_size"] = json!(align);
        if let Some(h) = &hosts {
            v["owners"] = h
                .iter()
                .map(|h| json!({"host_id": h.host_id, "generation": h.generation, "timestamp": h.timestamp}))
                .collect();
        }
        print_json(&v);
        return 0;
    }
    o.s("r ").b(&res_to_str(&res)).s("\n");
    if com.debug {
        o.line(&format!("sector_size {sector}"));
        o.line(&format!("align_size {align}"));
    }
    for h in hosts.iter().flatten() {
        if h.timestamp != 0 {
            o.line(&format!(
                "h {} gen {} timestamp {}",
                h.host_id, h.generation, h.timestamp
            ));
        } else {
            o.line(&format!("h {} gen {}", h.host_id, h.generation));
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SanlkDisk;

    #[test]
    fn export_path_escapes_like_sanlock() {
        assert_eq!(export_path(b"/a b:c"), b"/a\\ b\\:c".to_vec());
        assert_eq!(export_path(b"/x\\:y"), b"/x\\:y".to_vec());
        assert_eq!(export_path(b"/t\\"), b"/t\\".to_vec());
        assert_eq!(export_path(b"/p\0junk"), b"/p".to_vec());
    }

    #[test]
    fn print_debug_splits_words() {
        let mut o = Out(Vec::new());
        print_debug(&mut o, b"a=1 b=2 c=x\0");
        assert_eq!(o.0, b"    a=1\n    b=2\n    c=x\n".to_vec());
        o.0.clear();
    }

    #[test]
    fn json_numbers_only_when_written_as_numbers() {
        assert_eq!(json_value("12"), json!(12));
        assert_eq!(json_value("-1"), json!(-1));
        assert_eq!(json_value("18446744073709551615"), json!(u64::MAX));
        assert_eq!(json_value("03080500"), json!("03080500"));
        assert_eq!(json_value("0x1f"), json!("0x1f"));
        assert_eq!(json_value("3.8.5"), json!("3.8.5"));
    }

    #[test]
    fn list_suffix() {
        let st = SanlkState::with_text(3, Name::default(), "list=add space_id=1");
        assert_eq!(add_rem(&st), Some("ADD"));
        let st = SanlkState::with_text(3, Name::default(), "list=spaces");
        assert_eq!(add_rem(&st), None);
        assert_eq!(add_rem(&SanlkState::default()), None);
    }

    fn entry(kind: u32, pid: i32, name: &str, text: &str, bin: StateBin) -> StatusEntry {
        let mut state = SanlkState::with_text(kind, Name::new(name).unwrap(), text);
        state.data32 = pid as u32;
        StatusEntry { state, bin }
    }

    fn res(ls: &str, name: &str) -> StateBin {
        StateBin::Resource(proto::SanlkResource {
            lockspace_name: Name::new(ls).unwrap(),
            name: Name::new(name).unwrap(),
            disks: vec![SanlkDisk::new(SanlkPath::new("/d").unwrap(), 0)],
            ..Default::default()
        })
    }

    #[test]
    fn sorted_status_orders() {
        let lsb = |n: &str| {
            StateBin::Lockspace(Box::new(SanlkLockspace::new(
                Name::new(n).unwrap(),
                1,
                SanlkPath::new("/f").unwrap(),
                0,
            )))
        };
        let entries = vec![
            entry(1, 0, "host", "", StateBin::None),
            entry(2, -1, "helper", "", StateBin::None),
            entry(2, 42, "vm", "", StateBin::None),
            entry(3, 0, "A", "list=spaces", lsb("A")),
            entry(3, 0, "B", "list=spaces", lsb("B")),
            entry(4, 42, "R1", "list=held", res("B", "R1")),
            entry(4, 7, "R2", "list=held", res("A", "R2")),
        ];
        let mut o = Out(Vec::new());
        print_sorted(&mut o, &entries, 'p', false);
        let p = String::from_utf8(std::mem::take(&mut o.0)).unwrap();
        assert_eq!(
            p,
            "daemon host\np -1 helper\ns A:1:/f:0\ns B:1:/f:0\np 42 vm\nr B:R1:/d:0:0 p 42\n-\nr A:R2:/d:0:0 p 7\n"
        );
        print_sorted(&mut o, &entries, 's', false);
        let s = String::from_utf8(std::mem::take(&mut o.0)).unwrap();
        assert_eq!(
            s,
            "daemon host\np -1 helper\np 42 vm\ns A:1:/f:0\nr A:R2:/d:0:0 p 7\ns B:1:/f:0\nr B:R1:/d:0:0 p 42\n"
        );
    }
}
