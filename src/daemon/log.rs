//! Daemon logging: `tracing` events formatted as sanlock formats its log
//! lines, kept in the 1 MiB ring that `client log_dump` returns, written to
//! stderr with `-D`, and to the log file up to `logfile_priority`.
//!
//! Nothing a client, a peer or a disk does may flood the log: every log
//! statement (call site) writes at most [`LIMIT_BURST`] lines at once and
//! [`LIMIT_PER_SEC`] a second after that; what it drops is counted and
//! reported in a line of its own ("N similar lines suppressed"). The log
//! file has a size cap: at `logfile_max_kb` it is renamed `<file>.old`
//! (one kept) and a new one is started.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// sanlock's `LOG_DUMP_SIZE`.
pub const LOG_DUMP_SIZE: usize = 1 << 20;
/// Lines one call site may write at once.
pub const LIMIT_BURST: f64 = 100.0;
/// Lines one call site may write each second after its burst.
pub const LIMIT_PER_SEC: f64 = 1.0;
/// sanlock's longest log line (`LOG_STR_LEN` 512, with its newline).
const LINE_MAX: usize = 510;

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

/// A token bucket per call site; `now` is in seconds on any monotonic
/// clock (a parameter, so that tests choose it).
#[derive(Default)]
pub struct Limiter {
    sites: HashMap<usize, Site>,
}

struct Site {
    tokens: f64,
    last: f64,
    suppressed: u64,
    /// When the first suppressed line came, and its text.
    first: Option<(f64, String)>,
    level: Level,
    origin: String,
}

/// What to do with one event.
#[derive(Debug, PartialEq)]
pub enum Admit {
    Write,
    /// Dropped; `want_text`: it is the first of its run, give its text to
    /// [`Limiter::note_first`].
    Drop {
        want_text: bool,
    },
}

/// A line that says how many lines a call site dropped.
#[derive(Debug, PartialEq)]
pub struct Suppressed {
    pub level: Level,
    pub text: String,
}

impl Limiter {
    fn refill(s: &mut Site, now: f64) {
        s.tokens = (s.tokens + (now - s.last).max(0.0) * LIMIT_PER_SEC).min(LIMIT_BURST);
        s.last = now;
    }

    /// Whether call site `key` may write a line now. A site that dropped
    /// lines first reports them (returned), before its next line.
    pub fn admit(
        &mut self,
        key: usize,
        now: f64,
        level: Level,
        origin: impl FnOnce() -> String,
    ) -> (Admit, Option<Suppressed>) {
        let s = self.sites.entry(key).or_insert_with(|| Site {
            tokens: LIMIT_BURST,
            last: now,
            suppressed: 0,
            first: None,
            level,
            origin: origin(),
        });
        Self::refill(s, now);
        if s.tokens < 1.0 {
            s.suppressed += 1;
            return (
                Admit::Drop {
                    want_text: s.first.is_none(),
                },
                None,
            );
        }
        s.tokens -= 1.0;
        let report = Self::report(s, now);
        if report.is_some() {
            // The report takes a line of the site's budget too.
            s.tokens = (s.tokens - 1.0).max(0.0);
        }
        (Admit::Write, report)
    }

    /// Keeps the text of the first dropped line of `key`'s current run.
    pub fn note_first(&mut self, key: usize, now: f64, text: String) {
        if let Some(s) = self.sites.get_mut(&key)
            && s.first.is_none()
        {
            s.first = Some((now, text));
        }
    }

    fn report(s: &mut Site, now: f64) -> Option<Suppressed> {
        if s.suppressed == 0 {
            return None;
        }
        let (since, first) = s.first.take().unwrap_or((now, String::new()));
        let n = std::mem::take(&mut s.suppressed);
        Some(Suppressed {
            level: s.level,
            text: format!(
                "{n} similar lines suppressed in {:.0}s ({}), the first: {first}",
                (now - since).max(0.0),
                s.origin
            ),
        })
    }

    /// Reports of sites that dropped lines and may write again (so a
    /// count is not kept back until the site's next line, if any).
    pub fn due(&mut self, now: f64) -> Vec<Suppressed> {
        let mut out = Vec::new();
        for s in self.sites.values_mut() {
            if s.suppressed == 0 {
                continue;
            }
            Self::refill(s, now);
            if s.tokens >= 1.0 {
                s.tokens -= 1.0;
                out.extend(Self::report(s, now));
            }
        }
        out
    }
}

/// "Log this once per interval": a caller that repeats a line (a refused
/// connection, an accept error) asks [`OncePer::hit`] each time; it says
/// when to write it, with how many were held back since the last one.
pub struct OncePer {
    interval: Duration,
    last: Option<Instant>,
    held: u64,
}

impl OncePer {
    pub const fn new(interval: Duration) -> Self {
        OncePer {
            interval,
            last: None,
            held: 0,
        }
    }

    /// `Some(n)`: write the line now, saying that `n` were not written
    /// since the previous one; `None`: counted, not written.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < self.interval)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }

    /// The count held back, once its interval is over (for a line saying
    /// so when the repeats have stopped).
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.held == 0
            || self
                .last
                .is_some_and(|l| now.duration_since(l) < self.interval)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// The log file, renamed to `<path>.old` when a line would take it over
/// `max` bytes (so it and its one old copy stay under twice the cap).
pub struct LogFile {
    path: PathBuf,
    f: Option<File>,
    len: u64,
    max: u64,
}

impl LogFile {
    pub fn open(path: PathBuf, max: u64) -> std::io::Result<LogFile> {
        let f = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = f.metadata()?.len();
        Ok(LogFile {
            path,
            f: Some(f),
            len,
            max,
        })
    }

    pub fn old_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".old");
        PathBuf::from(p)
    }

    pub fn write(&mut self, line: &[u8]) {
        let Some(f) = &self.f else { return };
        if self.len + line.len() as u64 > self.max {
            // Someone (logrotate's copytruncate) may have emptied it.
            self.len = f.metadata().map(|m| m.len()).unwrap_or(self.len);
        }
        if self.len + line.len() as u64 > self.max {
            self.rotate();
        }
        if let Some(f) = &mut self.f
            && f.write_all(line).is_ok()
        {
            self.len += line.len() as u64;
        }
    }

    fn rotate(&mut self) {
        let _ = std::fs::rename(&self.path, self.old_path());
        match OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&self.path)
        {
            Ok(f) => {
                self.len = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.f = Some(f);
            }
            // Writing on into the renamed file would grow it without
            // bound: stop file logging (the ring and stderr go on).
            Err(_) => self.f = None,
        }
    }
}

/// Everything a log line goes to, shared by the tracing layer and the
/// daemon (which asks it to report suppressed lines, see [`tick`]).
pub struct Logger {
    pub ring: Arc<Mutex<LogRing>>,
    pub stderr_all: bool,
    pub utc: bool,
    pub file: Option<Mutex<LogFile>>,
    /// sanlock's `logfile_priority`: lines up to this syslog priority go
    /// to the file (3 errors, 4 warnings, 6 info, 7 debug).
    pub file_priority: i32,
    limiter: Mutex<Limiter>,
    start: Instant,
}

/// The syslog priority sanlock gives a line of this level.
fn priority(level: Level) -> i32 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl Logger {
    pub fn new(
        ring: Arc<Mutex<LogRing>>,
        stderr_all: bool,
        utc: bool,
        file: Option<LogFile>,
        file_priority: i32,
    ) -> Logger {
        Logger {
            ring,
            stderr_all,
            utc,
            file: file.map(Mutex::new),
            file_priority,
            limiter: Mutex::default(),
            start: Instant::now(),
        }
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Writes one message as a line to every sink its level goes to.
    pub fn write(&self, level: Level, msg: &str) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let mut line = format!(
            "{} {} [{}]: {}",
            wall_time(self.utc),
            crate::timeouts::monotime(),
            tid,
            msg
        );
        if line.len() > LINE_MAX - 1 {
            let mut n = LINE_MAX - 1;
            while !line.is_char_boundary(n) {
                n -= 1;
            }
            line.truncate(n);
        }
        line.push('\n');
        locked(&self.ring).append(line.as_bytes());
        if self.stderr_all {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        if let Some(f) = &self.file
            && priority(level) <= self.file_priority
        {
            locked(f).write(line.as_bytes());
        }
    }

    /// Writes the reports of call sites that dropped lines.
    pub fn report_suppressed(&self) {
        let due = locked(&self.limiter).due(self.now());
        for s in due {
            self.write(s.level, &s.text);
        }
    }
}

/// The log's locks and poisoning: a thread that panicked while holding
/// one left a ring, file or limiter that is still whole (each change is
/// one append or one counter), so the log goes on rather than the daemon
/// panicking on every later line.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static LOGGER: OnceLock<Arc<Logger>> = OnceLock::new();

/// Makes `logger` the process's log (the tracing subscriber); false if
/// one was installed already.
pub fn install(logger: Arc<Logger>) -> bool {
    use tracing_subscriber::layer::SubscriberExt;
    if LOGGER.set(logger.clone()).is_err() {
        return false;
    }
    let layer = RingLayer(logger);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).is_ok()
}

/// Called about once a second (the main loop): reports suppressed lines
/// whose call site has gone quiet.
pub fn tick() {
    if let Some(l) = LOGGER.get() {
        l.report_suppressed();
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

fn text_of(event: &Event<'_>) -> String {
    let mut m = Msg(String::new());
    event.record(&mut m);
    m.0
}

/// The tracing layer: rate-limits per call site, then writes.
pub struct RingLayer(pub Arc<Logger>);

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // One key per call site: its metadata is a static of its own.
        let key = meta as *const _ as usize;
        let level = *meta.level();
        let now = self.0.now();
        let (admit, report) = locked(&self.0.limiter).admit(key, now, level, || {
            format!(
                "{}:{}",
                meta.file().unwrap_or("?"),
                meta.line().unwrap_or(0)
            )
        });
        if let Some(r) = report {
            self.0.write(r.level, &r.text);
        }
        match admit {
            Admit::Write => self.0.write(level, &text_of(event)),
            Admit::Drop { want_text: true } => {
                let text = text_of(event);
                locked(&self.0.limiter).note_first(key, now, text);
            }
            Admit::Drop { want_text: false } => {}
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

    fn admit(l: &mut Limiter, key: usize, now: f64) -> (Admit, Option<Suppressed>) {
        l.admit(key, now, Level::WARN, || format!("site{key}"))
    }

    #[test]
    fn a_call_site_writes_its_burst_then_one_a_second_and_counts_the_rest() {
        let mut l = Limiter::default();
        let mut written = 0;
        // 4,000 lines at once (one renewal's worth of garbage hosts).
        for i in 0..4000 {
            match admit(&mut l, 1, 0.0) {
                (Admit::Write, None) => written += 1,
                (Admit::Drop { want_text }, None) => {
                    if want_text {
                        l.note_first(1, 0.0, format!("line {i}"));
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(written, LIMIT_BURST as usize);
        // Another call site is not affected.
        assert_eq!(admit(&mut l, 2, 0.0).0, Admit::Write);
        // Nothing is due before a token is back; then one report.
        assert!(l.due(0.5).is_empty());
        let due = l.due(1.0);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].level, Level::WARN);
        assert!(
            due[0]
                .text
                .starts_with("3900 similar lines suppressed in 1s (site1), the first: line 100"),
            "{}",
            due[0].text
        );
        assert!(l.due(1.5).is_empty(), "reported once");
        // Over an hour of 4,000 lines every 20 s, about one line a second
        // (and a report per gap) gets through, not 720,000.
        let mut written = 0;
        for tick in 0..180 {
            let now = 2.0 + tick as f64 * 20.0;
            for _ in 0..4000 {
                if admit(&mut l, 1, now).0 == Admit::Write {
                    written += 1;
                }
            }
            written += l.due(now + 10.0).len();
        }
        assert!(written <= 180 * 21, "{written} lines in an hour");
    }

    #[test]
    fn a_report_comes_before_the_next_line_of_its_site() {
        let mut l = Limiter::default();
        for _ in 0..(LIMIT_BURST as usize + 5) {
            admit(&mut l, 7, 0.0);
        }
        let (a, r) = admit(&mut l, 7, 10.0);
        assert_eq!(a, Admit::Write);
        let r = r.expect("a report of the 5 dropped lines");
        assert!(
            r.text.starts_with("5 similar lines suppressed"),
            "{}",
            r.text
        );
        assert!(admit(&mut l, 7, 10.0).1.is_none());
    }

    #[test]
    fn once_per_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut o = OncePer::new(Duration::from_secs(10));
        assert_eq!(o.hit(t0), Some(0));
        for i in 1..50 {
            assert_eq!(o.hit(t0 + s * i / 10), None);
        }
        assert_eq!(o.flush(t0 + s * 5), None, "interval not over");
        assert_eq!(o.flush(t0 + s * 11), Some(49));
        assert_eq!(o.flush(t0 + s * 30), None, "nothing held");
        assert_eq!(o.hit(t0 + s * 30), Some(0));
        assert_eq!(o.hit(t0 + s * 31), None);
        assert_eq!(o.hit(t0 + s * 41), Some(1));
    }

    #[test]
    fn the_log_file_is_renamed_at_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hactl.log");
        let mut f = LogFile::open(path.clone(), 1000).unwrap();
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        for _ in 0..35 {
            f.write(&line);
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(len <= 1000, "{len}");
        }
        let old = std::fs::metadata(f.old_path()).unwrap().len();
        assert_eq!(old, 1000);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 500);
        // An outside truncation (logrotate copytruncate) is seen.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        for _ in 0..9 {
            f.write(&line);
        }
        assert_eq!(std::fs::metadata(f.old_path()).unwrap().len(), 1000);
    }
}
