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
    /// hactl's own: where the Prometheus metrics endpoint listens
    /// (`metrics_listen = 127.0.0.1:9365` / `--metrics-listen`); off if None.
    pub metrics_listen: Option<String>,
}

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
            metrics_listen: None,
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

    /// Applies `key = value` lines (sanlock.conf). Unknown keys are reported.
    pub fn apply_conf(&mut self, text: &str) -> Vec<String> {
        let mut notes = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                notes.push(format!("sanlock.conf: ignored line {line:?}"));
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            let n = atoi(v);
            match k {
                "quiet_fail" => self.quiet_fail = n as i32,
                "debug_renew" => self.debug_renew = n as i32,
                "use_aio" => self.use_aio = n as i32,
                "logfile_priority" => self.logfile_priority = n as i32,
                "syslog_priority" => self.syslog_priority = n as i32,
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
                }
                "gname" => {
                    self.gname = Some(v.to_string());
                    self.gid = group_to_gid(v).unwrap_or(0);
                }
                "our_host_name" => self.our_host_name = Some(v.to_string()),
                "renewal_read_extend_sec" => self.renewal_read_extend_sec = Some(n.max(0) as u64),
                "write_init_io_timeout" if n > 0 => self.write_init_io_timeout = n as u64,
                "renewal_history_size" => self.renewal_history_size = n.max(0) as usize,
                "max_worker_threads" => self.max_worker_threads = (n as i32).max(2),
                "debug_clients" => self.debug_clients = n as i32,
                "metrics_listen" if v.is_empty() => self.metrics_listen = None,
                "metrics_listen" => self.metrics_listen = Some(v.to_string()),
                "logfile_use_utc" | "names_log_priority" | "paxos_debug_all" | "debug_io"
                | "debug_cmd" | "max_sectors_kb" => {}
                _ => notes.push(format!("sanlock.conf: unknown key {k:?}")),
            }
        }
        notes
    }

    pub fn load_conf(&mut self, path: &Path) -> Vec<String> {
        match std::fs::read_to_string(path) {
            Ok(t) => self.apply_conf(&t),
            Err(_) => Vec::new(),
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
                'H' => self.renewal_history_size = n.max(0) as usize,
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
        assert!(c.apply_args(&["--metrics-listen".into()]).is_err());
    }
}
