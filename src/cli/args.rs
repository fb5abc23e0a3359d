//! sanlock's option syntax for `client` and `direct` actions: every option
//! is a separate `-X value` pair (only `-D` stands alone), `-c` ends the
//! options and starts a command line, and `dump`/`next_free` take a path
//! first. Parsed here so that scripts written for sanlock work unchanged.

use crate::geometry::parse_align_arg;
use crate::lease_str::{self, LockspaceArg, ResourceArg, RindexArg, c_strtoull as strtoull};
use crate::ondisk::Name;

/// Everything the options of one action can carry (sanlock's `struct command_line`).
#[derive(Debug, Clone, Default)]
pub struct Com {
    pub action: String,
    /// First argument of `dump` / `next_free`.
    pub dump_path: Option<String>,
    pub debug: bool,
    pub json: bool,
    /// `host_status --history` (hactl's own): the daemon's history view.
    pub history: bool,
    pub lockspace: Option<LockspaceArg>,
    pub resources: Vec<ResourceArg>,
    pub rindex: Option<RindexArg>,
    pub rentry: Option<(Name, u64)>,
    pub io_timeout: Option<u16>,
    pub sector_size: Option<u32>,
    pub align_size: Option<u32>,
    pub num_hosts: u64,
    pub max_hosts: u64,
    /// `-z`: present at all means "clear" (sanlock ignores its value).
    pub clear: bool,
    pub force_mode: u32,
    pub file_path: Option<String>,
    pub host_id: u64,
    pub host_generation: u64,
    pub pid: Option<i32>,
    pub get_hosts: u32,
    pub all: u32,
    pub wait: Option<u32>,
    pub our_host_name: Option<String>,
    pub sort_arg: Option<char>,
    pub command: Vec<String>,
    /// `-e` read as a number (`strtoull`): set_event's event.
    pub he_event: u64,
    /// `-d`: set_event's data.
    pub he_data: u64,
    /// `-u 0|1`: set_config used/unused.
    pub used: Option<i64>,
    /// `-O 0|1`: set_config used/unused by orphans (wins over `-u`).
    pub orphan: Option<i64>,
    /// `-P 1`: acquire with `SANLK_RES_PERSISTENT`.
    pub persistent: i64,
    /// Lines sanlock prints while parsing options (client resource parse
    /// errors), to be printed before the action's own output.
    pub notes: Vec<String>,
}

/// A usage error, printed as sanlock prints it, then exit 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub Vec<String>);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

fn atoi(s: &str) -> i64 {
    // C's atoi: leading whitespace, optional sign, digits; anything else stops it.
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n: i64 = digits
        .bytes()
        .take_while(|b| b.is_ascii_digit())
        .fold(0i64, |acc, b| {
            acc.saturating_mul(10).saturating_add((b - b'0') as i64)
        });
    if neg { -n } else { n }
}

fn usage(lines: &[&str]) -> UsageError {
    UsageError(lines.iter().map(|s| s.to_string()).collect())
}

/// Parses the arguments after the action (`args` excludes the action itself).
pub fn parse(action: &str, args: &[String]) -> Result<Com, UsageError> {
    parse_as(action, args, false)
}

/// `client` actions: `-r` is read as sanlock's client reads it, a
/// resource that does not parse is reported in [`Com::notes`] and skipped
/// (sanlock carries on without it).
pub fn parse_client(action: &str, args: &[String]) -> Result<Com, UsageError> {
    parse_as(action, args, true)
}

fn parse_as(action: &str, args: &[String], client: bool) -> Result<Com, UsageError> {
    let mut com = Com {
        action: action.to_string(),
        ..Default::default()
    };
    let mut args: Vec<String> = args.to_vec();
    if let Some(p) = args.iter().position(|a| a == "--json") {
        args.remove(p);
        com.json = true;
    }
    if action == "host_status"
        && let Some(p) = args.iter().position(|a| a == "--history")
    {
        args.remove(p);
        com.history = true;
    }
    let mut i = 0;
    if action == "dump" || action == "next_free" {
        let Some(p) = args.first() else {
            return Err(usage(&[&format!("{action} requires a path argument")]));
        };
        com.dump_path = Some(p.clone());
        i = 1;
    }
    let rindex_op = matches!(
        action,
        "format" | "rebuild" | "create" | "delete" | "lookup" | "update"
    );
    while i < args.len() {
        let p = &args[i];
        if !p.starts_with('-') || p.len() != 2 {
            return Err(usage(&[
                &format!("unknown option {p}"),
                "space required before option value",
            ]));
        }
        let opt = p.as_bytes()[1] as char;
        i += 1;
        if opt == 'D' {
            com.debug = true;
            continue;
        }
        let Some(val) = args.get(i) else {
            return Err(usage(&[&format!("option '{opt}' requires arg")]));
        };
        let bad = |e: lease_str::ArgError| UsageError(vec![e.to_string()]);
        match opt {
            's' => com.lockspace = Some(lease_str::parse_lockspace(val).map_err(bad)?),
            'r' if client => {
                if com.resources.len() >= 8 {
                    com.notes.push("resource args over max 8".into());
                } else {
                    match lease_str::parse_resource_sanlock(&lease_str::rewrite_mib_offset(val)) {
                        Ok(r) => com.resources.push(r),
                        // log_tool("...%d\n"): the message ends in a blank line.
                        Err(rv) => com.notes.push(format!("resource arg parse error {rv}\n")),
                    }
                }
            }
            'r' => {
                if com.resources.len() >= 8 {
                    return Err(usage(&["resource args over max 8"]));
                }
                com.resources
                    .push(lease_str::parse_resource(val).map_err(bad)?)
            }
            'x' => com.rindex = Some(lease_str::parse_rindex(val).map_err(bad)?),
            'e' if rindex_op => com.rentry = Some(lease_str::parse_rentry(val).map_err(bad)?),
            'e' => {
                com.our_host_name = Some(val.clone());
                com.he_event = strtoull(val);
            }
            'd' => com.he_data = strtoull(val),
            'u' => com.used = Some(atoi(val)),
            'O' => com.orphan = Some(atoi(val)),
            'o' if action == "status" => com.sort_arg = val.chars().next(),
            'o' => {
                let v = atoi(val);
                if v > 0 {
                    com.io_timeout = Some(v.min(u16::MAX as i64) as u16);
                }
            }
            'Z' => com.sector_size = Some(atoi(val) as u32).filter(|&s| s != 0),
            'A' => com.align_size = parse_align_arg(val),
            'n' => com.num_hosts = atoi(val).max(0) as u64,
            'm' => com.max_hosts = atoi(val).max(0) as u64,
            'z' => com.clear = true,
            'f' => com.force_mode = lease_str::parse_c_u64(val).unwrap_or(0) as u32,
            'F' => com.file_path = Some(val.clone()),
            'i' => com.host_id = lease_str::parse_c_u64(val).unwrap_or(0),
            'g' => com.host_generation = lease_str::parse_c_u64(val).unwrap_or(0),
            'p' => com.pid = Some(atoi(val) as i32),
            'h' => com.get_hosts = atoi(val).max(0) as u32,
            'a' => com.all = atoi(val).max(0) as u32,
            'w' => com.wait = Some(atoi(val).max(0) as u32),
            'c' => {
                com.command = args[i..].to_vec();
                if com.command.is_empty() {
                    return Err(usage(&["command option (-c) requires an arg"]));
                }
                break;
            }
            'P' => com.persistent = atoi(val),
            'Q' | 'R' | 'H' | 'L' | 'S' | 't' | 'l' | 'b' | 'U' | 'G' => {}
            _ => return Err(usage(&[&format!("unknown option: {opt}")])),
        }
        i += 1;
    }
    match (com.sector_size, com.align_size) {
        (None, None) | (Some(_), None) => {}
        (s, Some(a)) if crate::geometry::Geometry::new(s.unwrap_or(0), a).is_ok() => {}
        (s, a) => {
            return Err(UsageError(vec![
                format!(
                    "Invalid sector_size/align_size combination ({}/{})",
                    s.unwrap_or(0),
                    a.unwrap_or(0)
                ),
                "Use one of: 512/1M, 4096/1M, 4096/2M, 4096/4M, 4096/8M.".into(),
            ]));
        }
    }
    Ok(com)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sanlock_style_options() {
        let c = parse(
            "init",
            &v(&["-s", "LS:0:/f:0", "-Z", "4096", "-A", "8M", "-o", "1"]),
        )
        .unwrap();
        assert_eq!(c.sector_size, Some(4096));
        assert_eq!(c.align_size, Some(8 << 20));
        assert_eq!(c.io_timeout, Some(1));
        assert_eq!(c.lockspace.unwrap().disk.path, "/f");
    }

    #[test]
    fn attached_values_are_refused_like_sanlock() {
        let e = parse("init", &v(&["-Z4096"])).unwrap_err();
        assert_eq!(
            e.0,
            vec![
                "unknown option -Z4096",
                "space required before option value"
            ]
        );
    }

    #[test]
    fn bad_combination() {
        let e = parse("init", &v(&["-Z", "512", "-A", "2M"])).unwrap_err();
        assert_eq!(
            e.0[0],
            "Invalid sector_size/align_size combination (512/2097152)"
        );
        let e = parse("init", &v(&["-A", "1M"])).unwrap_err();
        assert_eq!(
            e.0[0],
            "Invalid sector_size/align_size combination (0/1048576)"
        );
    }

    #[test]
    fn set_event_and_set_config_options() {
        let c = parse(
            "set_event",
            &v(&["-s", "LS", "-e", "0x10", "-d", "012", "-u", "1", "-O", "0"]),
        )
        .unwrap();
        assert_eq!((c.he_event, c.he_data), (16, 10));
        assert_eq!((c.used, c.orphan), (Some(1), Some(0)));
        assert_eq!(strtoull("12abc"), 12);
        assert_eq!(strtoull("junk"), 0);
        assert_eq!(strtoull("-1"), u64::MAX);
    }

    #[test]
    fn dump_takes_path_then_options() {
        let c = parse("dump", &v(&["/dev/x:1M", "-f", "2", "--json"])).unwrap();
        assert_eq!(c.dump_path.as_deref(), Some("/dev/x:1M"));
        assert_eq!(c.force_mode, 2);
        assert!(c.json);
    }
}
