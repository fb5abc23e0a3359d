//! Daemon logging: `tracing` events formatted as sanlock formats its log
//! lines, kept in the 1 MiB ring that `client log_dump` returns, and written
//! to stderr with `-D` (or warnings and errors to the log file).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// sanlock's `LOG_DUMP_SIZE`.
pub const LOG_DUMP_SIZE: usize = 1 << 20;

/// The circular log buffer behind `log_dump`.
pub struct LogRing {
    buf: Vec<u8>,
    point: usize,
    wrapped: bool,
}

impl Default for LogRing {
    fn default() -> Self {
        LogRing {
            buf: vec![0; LOG_DUMP_SIZE],
            point: 0,
            wrapped: false,
        }
    }
}

impl LogRing {
    pub fn append(&mut self, line: &[u8]) {
        for &b in line {
            self.buf[self.point] = b;
            self.point += 1;
            if self.point == LOG_DUMP_SIZE {
                self.point = 0;
                self.wrapped = true;
            }
        }
    }

    /// What `log_dump` sends: oldest first; when not wrapped, everything but
    /// the final newline (as sanlock's `copy_log_dump`).
    pub fn dump(&self) -> Vec<u8> {
        if self.wrapped {
            let mut v = self.buf[self.point..].to_vec();
            v.extend_from_slice(&self.buf[..self.point]);
            v
        } else if self.point == 0 {
            Vec::new()
        } else {
            self.buf[..self.point - 1].to_vec()
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` in local time, or UTC (`logfile_use_utc`).
fn wall_time(utc: bool) -> String {
    // SAFETY: time(NULL) has no preconditions.
    let t = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: localtime_r/gmtime_r write into the tm we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe {
        if utc {
            libc::gmtime_r(&t, &mut tm);
        } else {
            libc::localtime_r(&t, &mut tm);
        }
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

struct Msg(String);

impl Visit for Msg {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// Formats events into the ring, stderr (`-D`: everything) and a log file.
pub struct RingLayer {
    pub ring: Arc<Mutex<LogRing>>,
    pub stderr_all: bool,
    pub file: Option<Mutex<std::fs::File>>,
    pub utc: bool,
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut m = Msg(String::new());
        event.record(&mut m);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let mut line = format!(
            "{} {} [{}]: {}",
            wall_time(self.utc),
            crate::timeouts::monotime(),
            tid,
            m.0
        );
        line.truncate(509);
        line.push('\n');
        self.ring.lock().unwrap().append(line.as_bytes());
        let level = *event.metadata().level();
        if self.stderr_all {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        if let (true, Some(f)) = (level <= Level::WARN, &self.file) {
            let _ = f.lock().unwrap().write_all(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_drops_final_newline_and_wraps_oldest_first() {
        let mut r = LogRing::default();
        r.append(b"one\ntwo\n");
        assert_eq!(r.dump(), b"one\ntwo");
        // After wrapping, the dump is exactly the last 1 MiB appended.
        let mut all = b"one\ntwo\n".to_vec();
        for i in 0..40_000u32 {
            let line = format!("line {i} of the log ring test\n");
            r.append(line.as_bytes());
            all.extend_from_slice(line.as_bytes());
        }
        assert!(all.len() > LOG_DUMP_SIZE);
        assert_eq!(r.dump(), all[all.len() - LOG_DUMP_SIZE..]);
    }
}
