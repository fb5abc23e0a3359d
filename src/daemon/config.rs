//! `hactl daemon` settings: sanlock's defaults, overridden by
//! `sanlock.conf`, overridden by the command line (sanlock's precedence).

use std::path::{Path, PathBuf};

/// Where sanlock reads its configuration.
pub const SANLK_CONF_PATH: &str = "/etc/sanlock/sanlock.conf";
pub const DEFAULT_RUN_DIR: &str = "/run/sanlock";

#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub debug: bool,
    pub quiet_fail: i32,
    pub debug_renew: i32,
    pub renewal_history_size: usize,
    pub logfile_priority: i32,
    pub syslog_priority: i32,
    pub uname: Option<String>,
    pub gname: Option<String>,
    pub uid: u32,
    pub gid: u32,
    pub max_worker_threads: i32,
    pub kill_grace_seconds: u64,
    pub io_timeout: u64,
    pub use_watchdog: bool,
    pub high_priority: bool,
    pub mlock_level: i32,
    pub set_bitmap_seconds: u64,
    pub our_host_name: Option<String>,
    pub use_aio: i32,
    pub watchdog_fire_timeout: u64,
    pub write_init_io_timeout: u64,
    pub sh_retries: i32,
    pub renewal_read_extend_sec: Option<u64>,
    pub debug_clients: i32,
    pub run_dir: PathBuf,
    pub privileged: bool,
    /// Log timestamps in UTC instead of local time.
    pub logfile_use_utc: bool,
    // Accepted and shown as sanlock shows them; hactl's logging does not
    // distinguish these (no per-name or per-I/O debug lines).
    pub names_log_priority: i32,
    pub paxos_debug_all: bool,
    pub debug_io_submit: bool,
    pub debug_io_complete: bool,
    /// One bit per command number (sanlock's `debug_cmd = +name|-name|+all|-all`).
    pub debug_cmds: u64,
    /// sanlock adjusts a device's max_sectors_kb; hactl never writes sysfs,
    /// but keeps the setting for `status -D`.
    pub max_sectors_kb: MaxSectorsKb,
    /// hactl's own: where the Prometheus metrics endpoint listens
    /// (`metrics_listen = 127.0.0.1:9365` / `--metrics-listen`); off if None.
    pub metrics_listen: Option<String>,
    /// hactl's own: also serve the web view (`/`) on that listener
    /// (`metrics_web = 1` / `--metrics-web`); off by default.
    pub metrics_web: bool,
    /// hactl's own: when this host's lease counts as in danger
    /// (`warn_renewal_slow_percent`, `warn_renewal_late_percent`).
    pub warn: crate::early_warning::WarnConfig,
    /// hactl's own: the most client connections served at once
    /// (`max_clients` / `--max-clients`); more are closed at once. Also
    /// kept below the daemon's descriptor limit (see `server::serve`).
    pub max_clients: usize,
    /// hactl's own: the log file's size cap in KiB (`logfile_max_kb` /
    /// `--logfile-max-kb`); at the cap it becomes `<log>.old`.
    pub logfile_max_kb: u64,
}

/// Connections served at once by default: a host runs one registered
/// connection per VM (libvirt's lock driver, vdsm's leases) plus short
/// command connections; even large oVirt hosts run a few hundred VMs.
pub const DEFAULT_MAX_CLIENTS: usize = 2000;
/// The log file's default cap: sanlock's logrotate rule rotates at 10M.
pub const DEFAULT_LOGFILE_MAX_KB: u64 = 10 * 1024;
/// The smallest log cap taken (a few lines fit).
pub const MIN_LOGFILE_MAX_KB: u64 = 4;
/// Renewal history entries kept at most (sanlock's default is 180; each is
/// 40 bytes, kept per lockspace).
pub const MAX_RENEWAL_HISTORY: usize = 100_000;
/// sanlock.conf is read up to this many bytes.
pub const MAX_CONF_BYTES: u64 = 1 << 20;

/// sanlock's `max_sectors_kb` setting: `ignore`, `align` or a size in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxSectorsKb {
    Ignore,
    Align,
    Num(u32),
}

impl MaxSectorsKb {
    /// `(ignore, align, num)` as `status -D` prints them.
    pub fn fields(self) -> (i32, i32, u32) {
        match self {
            MaxSectorsKb::Ignore => (1, 0, 0),
            MaxSectorsKb::Align => (0, 1, 0),
            MaxSectorsKb::Num(n) => (0, 0, n),
        }
    }
}

/// The command debug mask `status -D` shows for sanlock 3.8.5's default.
pub const DEFAULT_DEBUG_CMDS: u64 = 0xffff_ffff_fe2e_ffff;

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            debug: false,
            quiet_fail: 1,
            debug_renew: 0,
            renewal_history_size: 180,
            logfile_priority: 4,
            syslog_priority: 3,
            uname: None,
            gname: None,
            uid: 0,
            gid: 0,
            max_worker_threads: 8,
            kill_grace_seconds: 40,
            io_timeout: 10,
            use_watchdog: true,
            high_priority: false,
            mlock_level: 1,
            set_bitmap_seconds: 0,
            our_host_name: None,
            use_aio: 1,
            watchdog_fire_timeout: crate::timeouts::DEFAULT_WATCHDOG_FIRE_TIMEOUT,
            write_init_io_timeout: 60,
            sh_retries: 8,
            renewal_read_extend_sec: None,
            debug_clients: 0,
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            privileged: true,
            logfile_use_utc: false,
            names_log_priority: 4,
            paxos_debug_all: false,
            debug_io_submit: false,
            debug_io_complete: false,
            debug_cmds: DEFAULT_DEBUG_CMDS,
            max_sectors_kb: MaxSectorsKb::Num(1024),
            metrics_listen: None,
            metrics_web: false,
            warn: crate::early_warning::WarnConfig::default(),
            max_clients: DEFAULT_MAX_CLIENTS,
            logfile_max_kb: DEFAULT_LOGFILE_MAX_KB,
        }
    }
}

fn atoi(s: &str) -> i64 {
    let t = s.trim();
    let end = t
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map(|(i, _)| i);
    t[..end.unwrap_or(t.len())].parse().unwrap_or(0)
}

fn user_to_uid(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

fn group_to_gid(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

impl DaemonConfig {
    /// Defaults, then the environment (`SANLOCK_RUN_DIR`, `SANLOCK_PRIVILEGED`).
    pub fn from_env() -> Self {
        let mut c = DaemonConfig::default();
        if let (Some(u), Some(g)) = (user_to_uid("sanlock"), group_to_gid("sanlock")) {
            c.uname = Some("sanlock".into());
            c.gname = Some("sanlock".into());
            c.uid = u;
            c.gid = g;
        }
        if let Ok(d) = std::env::var("SANLOCK_RUN_DIR") {
            c.run_dir = PathBuf::from(d);
        }
        // sanlock: unset means privileged; only exactly "1" keeps it.
        c.privileged = std::env::var("SANLOCK_PRIVILEGED")
            .map(|v| v == "1")
            .unwrap_or(true);
        c
    }

    /// Applies `key = value` lines (sanlock.conf), read as sanlock reads
    /// them: the key ends at the first space, tab or `=`, the value is the
    /// first word after the `=`, `#` comments only at the start of a line.
    /// Unknown keys and refused values are returned as notes for the log.
    pub fn apply_conf(&mut self, text: &str) -> Vec<String> {
        let mut notes = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let k = line.split([' ', '\t', '=']).next().unwrap_or("");
            let Some(v) = line
                .split_once('=')
                .and_then(|(_, v)| v.split_whitespace().next())
            else {
                notes.push(format!("sanlock.conf: no value in line {line:?}"));
                continue;
            };
            if let Some(n) = self.apply_key(k, v) {
                notes.push(format!("sanlock.conf: {n}"));
            }
        }
        notes
    }

    /// One sanlock.conf setting; `Some(note)` if it was not taken.
    fn apply_key(&mut self, k: &str, v: &str) -> Option<String> {
        let n = atoi(v);
        match k {
            "quiet_fail" => self.quiet_fail = n as i32,
            "debug_renew" => self.debug_renew = n as i32,
            "use_aio" => self.use_aio = n as i32,
            "logfile_priority" => self.logfile_priority = n as i32,
            "logfile_use_utc" => self.logfile_use_utc = n != 0,
            "syslog_priority" => self.syslog_priority = n as i32,
            "names_log_priority" => self.names_log_priority = n as i32,
            "use_watchdog" => self.use_watchdog = n != 0,
            "io_timeout" if n > 0 => self.io_timeout = n as u64,
            "watchdog_fire_timeout" if n > 0 => self.watchdog_fire_timeout = n as u64,
            "kill_grace_seconds" if (0..=60).contains(&n) => self.kill_grace_seconds = n as u64,
            "high_priority" => self.high_priority = n != 0,
            "mlock_level" => self.mlock_level = n as i32,
            "sh_retries" => self.sh_retries = n as i32,
            "uname" => {
                self.uname = Some(v.to_string());
                self.uid = user_to_uid(v).unwrap_or(0);
                if user_to_uid(v).is_none() {
                    return Some(format!("user '{v}' not found, using uid: 0"));
                }
            }
            "gname" => {
                self.gname = Some(v.to_string());
                self.gid = group_to_gid(v).unwrap_or(0);
                if group_to_gid(v).is_none() {
                    return Some(format!("group '{v}' not found, using gid: 0"));
                }
            }
            "our_host_name" => self.our_host_name = Some(v.to_string()),
            "renewal_read_extend_sec" => self.renewal_read_extend_sec = Some(n.max(0) as u64),
            "write_init_io_timeout" if n > 0 => self.write_init_io_timeout = n as u64,
            "renewal_history_size" => return self.set_history_size(n),
            "max_clients" if n > 0 => self.max_clients = n as usize,
            "logfile_max_kb" if n >= MIN_LOGFILE_MAX_KB as i64 => self.logfile_max_kb = n as u64,
            "max_clients" => return Some(format!("ignored {k} = {v}: must be above 0")),
            "logfile_max_kb" => {
                return Some(format!(
                    "ignored {k} = {v}: must be at least {MIN_LOGFILE_MAX_KB}"
                ));
            }
            "paxos_debug_all" => self.paxos_debug_all = n != 0,
            "debug_io" => {
                self.debug_io_submit |= v.contains("submit");
                self.debug_io_complete |= v.contains("complete");
            }
            "debug_clients" => self.debug_clients = n as i32,
            "metrics_listen" if v.is_empty() => self.metrics_listen = None,
            "metrics_listen" => self.metrics_listen = Some(v.to_string()),
            "metrics_web" => self.metrics_web = n != 0,
            "warn_renewal_slow_percent" if (0..=100).contains(&n) => {
                self.warn.slow_percent = n as u64
            }
            "warn_renewal_late_percent" if (0..=99).contains(&n) => {
                self.warn.late_percent = n as u64
            }
            "warn_renewal_slow_percent" => {
                return Some(format!("ignored {k} = {v}: must be 0 (off) to 100"));
            }
            "warn_renewal_late_percent" => {
                return Some(format!("ignored {k} = {v}: must be 0 (off) to 99"));
            }
            "debug_cmd" => match v {
                "+all" => self.debug_cmds = !0,
                "-all" => self.debug_cmds = 0,
                _ => {
                    let cmd = v.get(1..).and_then(crate::proto::Cmd::from_name);
                    match (v.as_bytes()[0], cmd) {
                        (b'+', Some(c)) => self.debug_cmds |= 1u64 << (c as u32),
                        (b'-', Some(c)) => self.debug_cmds &= !(1u64 << (c as u32)),
                        _ => return Some(format!("ignore unknown debug_cmd {v}")),
                    }
                }
            },
            "max_sectors_kb" => {
                self.max_sectors_kb = if v.contains("ignore") {
                    MaxSectorsKb::Ignore
                } else if v.contains("align") {
                    MaxSectorsKb::Align
                } else if v.as_bytes()[0].is_ascii_digit() {
                    match n {
                        2..=8192 if n % 2 == 0 => MaxSectorsKb::Num(n as u32),
                        _ => return Some(format!("ignore invalid num max_sectors_kb {v}")),
                    }
                } else {
                    return Some(format!("ignore unknown max_sectors_kb {v}"));
                }
            }
            "max_worker_threads" => self.max_worker_threads = (n as i32).max(2),
            "io_timeout" | "watchdog_fire_timeout" | "write_init_io_timeout" => {
                return Some(format!("ignored {k} = {v}: must be above 0"));
            }
            "kill_grace_seconds" => {
                return Some(format!("ignored {k} = {v}: must be 0 to 60"));
            }
            _ => return Some(format!("unknown key {k:?}")),
        }
        None
    }

    /// `renewal_history_size` / `-H`, bounded; a note if it was cut.
    fn set_history_size(&mut self, n: i64) -> Option<String> {
        self.renewal_history_size = (n.max(0) as usize).min(MAX_RENEWAL_HISTORY);
        (n > MAX_RENEWAL_HISTORY as i64)
            .then(|| format!("renewal_history_size {n} is over {MAX_RENEWAL_HISTORY}: using {MAX_RENEWAL_HISTORY}"))
    }

    pub fn load_conf(&mut self, path: &Path) -> Vec<String> {
        use std::io::Read;
        let Ok(f) = std::fs::File::open(path) else {
            return Vec::new();
        };
        let mut text = String::new();
        match f.take(MAX_CONF_BYTES).read_to_string(&mut text) {
            Ok(_) => self.apply_conf(&text),
            Err(e) => vec![format!("cannot read {}: {e}", path.display())],
        }
    }

    /// sanlock's daemon options; every one is `-X value` except `-D`.
    pub fn apply_args(&mut self, args: &[String]) -> Result<(), String> {
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            // hactl's own option, long so it cannot take a letter sanlock
            // may give a meaning one day.
            if a == "--metrics-listen" {
                let Some(v) = args.get(i + 1) else {
                    return Err("option '--metrics-listen' requires arg (ADDR:PORT)".into());
                };
                self.metrics_listen = Some(v.clone());
                i += 2;
                continue;
            }
            if a == "--metrics-web" {
                self.metrics_web = true;
                i += 1;
                continue;
            }
            if a == "--max-clients" || a == "--logfile-max-kb" {
                let n = args
                    .get(i + 1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| format!("option '{a}' requires a number"))?;
                if a == "--max-clients" {
                    if n == 0 {
                        return Err("--max-clients must be above 0".into());
                    }
                    self.max_clients = n.min(usize::MAX as u64) as usize;
                } else {
                    if n < MIN_LOGFILE_MAX_KB {
                        return Err(format!(
                            "--logfile-max-kb must be at least {MIN_LOGFILE_MAX_KB}"
                        ));
                    }
                    self.logfile_max_kb = n;
                }
                i += 2;
                continue;
            }
            if !a.starts_with('-') || a.len() != 2 {
                return Err(format!(
                    "unknown option {a}\nspace required before option value"
                ));
            }
            let opt = a.as_bytes()[1] as char;
            i += 1;
            if opt == 'D' {
                self.debug = true;
                continue;
            }
            let Some(v) = args.get(i) else {
                return Err(format!("option '{opt}' requires arg"));
            };
            let n = atoi(v);
            match opt {
                'Q' => self.quiet_fail = n as i32,
                'R' => self.debug_renew = n as i32,
                'H' => {
                    let _ = self.set_history_size(n);
                }
                'L' => self.logfile_priority = n as i32,
                'S' => self.syslog_priority = n as i32,
                'U' => {
                    self.uname = Some(v.clone());
                    self.uid = user_to_uid(v).unwrap_or(0);
                }
                'G' => {
                    self.gname = Some(v.clone());
                    self.gid = group_to_gid(v).unwrap_or(0);
                }
                't' => self.max_worker_threads = (n as i32).max(2),
                'g' if (0..=60).contains(&n) => self.kill_grace_seconds = n as u64,
                'g' => {}
                'o' if n > 0 => self.io_timeout = n as u64,
                'o' => {}
                'w' => self.use_watchdog = n != 0,
                'h' => self.high_priority = n != 0,
                'l' => self.mlock_level = n as i32,
                'b' => self.set_bitmap_seconds = n.max(0) as u64,
                'e' => self.our_host_name = Some(v.clone()),
                'a' => self.use_aio = (n != 0) as i32,
                // accepted for every command by sanlock's parser, meaningless here
                'Z' | 'A' | 'F' | 'c' | 'i' | 'p' | 'r' | 's' | 'x' | 'n' | 'm' | 'f' | 'd'
                | 'z' | 'u' | 'O' | 'P' => {}
                _ => return Err(format!("unknown option: {opt}")),
            }
            i += 1;
        }
        Ok(())
    }

    pub fn set_bitmap_seconds(&self) -> u64 {
        if self.set_bitmap_seconds > 0 {
            self.set_bitmap_seconds
        } else {
            6 * self.io_timeout
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_overrides_conf() {
        let mut c = DaemonConfig::default();
        c.apply_conf("# comment\nio_timeout = 5\nuse_watchdog=0\nrenewal_history_size = 10\n");
        assert_eq!(
            (c.io_timeout, c.use_watchdog, c.renewal_history_size),
            (5, false, 10)
        );
        let args: Vec<String> = ["-D", "-w", "1", "-o", "1", "-g", "99"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        c.apply_args(&args).unwrap();
        assert!(c.debug && c.use_watchdog);
        assert_eq!(c.io_timeout, 1);
        assert_eq!(c.kill_grace_seconds, 40, "-g outside 0..60 is ignored");
        assert!(c.apply_args(&["-o1".to_string()]).is_err());
        assert_eq!(c.metrics_listen, None, "metrics are off by default");
        c.apply_conf("metrics_listen = 127.0.0.1:9365\n");
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9365"));
        c.apply_args(&["--metrics-listen".into(), "[::1]:1".into(), "-D".into()])
            .unwrap();
        assert_eq!(c.metrics_listen.as_deref(), Some("[::1]:1"));
        assert!(!c.metrics_web, "the web view is off by default");
        let notes = c.apply_conf(
            "metrics_web = 1\nwarn_renewal_slow_percent = 30\nwarn_renewal_late_percent = 0\nwarn_renewal_slow_percent = 101\n",
        );
        assert!(c.metrics_web);
        assert_eq!(
            c.warn,
            crate::early_warning::WarnConfig {
                slow_percent: 30,
                late_percent: 0
            }
        );
        assert_eq!(
            notes,
            ["sanlock.conf: ignored warn_renewal_slow_percent = 101: must be 0 (off) to 100"]
        );
        assert!(c.apply_args(&["--metrics-listen".into()]).is_err());
    }

    /// hactl's own bounds: configurable, and what sanlock.conf or the
    /// command line may ask for is bounded too.
    #[test]
    fn bounds_are_configurable_and_bounded() {
        let mut c = DaemonConfig::default();
        assert_eq!(
            (c.max_clients, c.logfile_max_kb),
            (DEFAULT_MAX_CLIENTS, DEFAULT_LOGFILE_MAX_KB)
        );
        let notes = c.apply_conf(
            "max_clients = 50\nlogfile_max_kb = 64\nrenewal_history_size = 4000000000\n\
             max_clients = 0\nlogfile_max_kb = 3\n",
        );
        assert_eq!((c.max_clients, c.logfile_max_kb), (50, 64));
        assert_eq!(c.renewal_history_size, MAX_RENEWAL_HISTORY);
        assert_eq!(notes.len(), 3, "{notes:?}");
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        c.apply_args(&args(&[
            "--max-clients",
            "7",
            "--logfile-max-kb",
            "100",
            "-H",
            "9999999",
        ]))
        .unwrap();
        assert_eq!((c.max_clients, c.logfile_max_kb), (7, 100));
        assert_eq!(c.renewal_history_size, MAX_RENEWAL_HISTORY);
        assert!(c.apply_args(&args(&["--max-clients", "0"])).is_err());
        assert!(c.apply_args(&args(&["--logfile-max-kb", "1"])).is_err());
        assert!(c.apply_args(&args(&["--max-clients"])).is_err());
    }

    /// Every key of sanlock 3.8.5's read_config_file is taken.
    #[test]
    fn every_sanlock_key_is_known() {
        let conf = "quiet_fail = 0\ndebug_renew = 1\nuse_aio = 0\nlogfile_priority = 7\n\
            logfile_use_utc = 1\nsyslog_priority = 4\nnames_log_priority = 6\nuse_watchdog = 0\n\
            io_timeout = 5\nwatchdog_fire_timeout = 30\nkill_grace_seconds = 20\n\
            high_priority = 1\nmlock_level = 2\nsh_retries = 4\nuname = root\ngname = root\n\
            our_host_name = host-a\nrenewal_read_extend_sec = 3\nwrite_init_io_timeout = 40\n\
            renewal_history_size = 50\npaxos_debug_all = 1\ndebug_io = submit,complete\n\
            debug_clients = 1\ndebug_cmd = +inq_lockspace\nmax_sectors_kb = align\n\
            max_worker_threads = 1\n";
        let mut c = DaemonConfig::default();
        assert_eq!(c.apply_conf(conf), Vec::<String>::new());
        assert_eq!((c.quiet_fail, c.debug_renew, c.use_aio), (0, 1, 0));
        assert_eq!(
            (c.logfile_priority, c.syslog_priority, c.names_log_priority),
            (7, 4, 6)
        );
        assert!(c.logfile_use_utc && !c.use_watchdog && c.high_priority && c.paxos_debug_all);
        assert_eq!(
            (c.io_timeout, c.watchdog_fire_timeout, c.kill_grace_seconds),
            (5, 30, 20)
        );
        assert_eq!((c.mlock_level, c.sh_retries, c.uid, c.gid), (2, 4, 0, 0));
        assert_eq!(c.our_host_name.as_deref(), Some("host-a"));
        assert_eq!(c.renewal_read_extend_sec, Some(3));
        assert_eq!((c.write_init_io_timeout, c.renewal_history_size), (40, 50));
        assert!(c.debug_io_submit && c.debug_io_complete);
        assert_eq!(c.debug_clients, 1);
        assert_eq!(c.debug_cmds, DEFAULT_DEBUG_CMDS | 1 << 16);
        assert_eq!(c.max_sectors_kb, MaxSectorsKb::Align);
        assert_eq!(c.max_worker_threads, 2, "at least sanlock's minimum");
    }

    /// sanlock's reading: key up to a space, tab or `=`, the first word of
    /// the value, `#` only in column 0; refused values keep the default.
    #[test]
    fn read_as_sanlock_reads_it() {
        let mut c = DaemonConfig::default();
        let notes = c.apply_conf(
            "our_host_name=two words\nio_timeout\t= 7 # seven\n  # not a comment\n\
             kill_grace_seconds = 61\nio_timeout_x = 3\nmax_sectors_kb = 7\n\
             debug_cmd = +nosuch\ndebug_cmd = -all\nuse_watchdog\nuname = no-such-user-hactl\n",
        );
        assert_eq!(c.our_host_name.as_deref(), Some("two"));
        assert_eq!(c.io_timeout, 7);
        assert_eq!(c.kill_grace_seconds, 40);
        assert_eq!(c.max_sectors_kb, MaxSectorsKb::Num(1024));
        assert_eq!(c.debug_cmds, 0);
        assert!(c.use_watchdog, "a key with no value changes nothing");
        assert_eq!(c.uid, 0, "an unknown user is uid 0, as sanlock");
        let want = [
            "no value in line \"  # not a comment\"",
            "ignored kill_grace_seconds = 61: must be 0 to 60",
            "unknown key \"io_timeout_x\"",
            "ignore invalid num max_sectors_kb 7",
            "ignore unknown debug_cmd +nosuch",
            "no value in line \"use_watchdog\"",
            "user 'no-such-user-hactl' not found, using uid: 0",
        ];
        let notes: Vec<String> = notes
            .iter()
            .map(|n| n.trim_start_matches("sanlock.conf: ").to_string())
            .collect();
        assert_eq!(notes, want);
    }
}
