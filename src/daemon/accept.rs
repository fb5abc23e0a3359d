//! Taking connections without being taken down by them: at most a bounded
//! number are served at once (`max_clients`, and never more than the
//! descriptors allow), a connection beyond that is closed at once with a
//! refusal logged once per interval, and an accept that fails (out of
//! descriptors or memory) is backed off, not retried in a spin. When the
//! process is out of descriptors a spare one is given up to accept and
//! close the waiting connection, so clients hear "no" instead of hanging.

use std::fs::File;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::log::OncePer;

/// Descriptors kept for everything but connections: lockspace and lease
/// files, the log, wdmd, the metrics endpoint, killpath pipes.
pub const RESERVED_FDS: u64 = 64;
/// Descriptors one served client may use at once: its connection, and
/// the lease and lockspace files an acquire opens.
pub const FDS_PER_CLIENT: u64 = 3;
/// How often a repeated refusal or accept error is logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The longest pause between accepts that keep failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The soft descriptor limit is raised up to this (or the hard limit).
const WANT_NOFILE: u64 = 65536;

/// The soft RLIMIT_NOFILE the daemon was started with (0: not changed),
/// given back to the programs it runs (killpaths).
static STARTED_NOFILE: AtomicU64 = AtomicU64::new(0);

fn nofile() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (r.rlim_cur, r.rlim_max)
}

/// Raises the soft descriptor limit towards the hard one (systemd starts
/// services at 1,024 soft), remembering the old one for children.
pub fn raise_nofile() {
    let (soft, hard) = nofile();
    let want = hard.min(WANT_NOFILE);
    if want > soft {
        let r = libc::rlimit {
            rlim_cur: want,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } == 0 {
            STARTED_NOFILE.store(soft, Ordering::Relaxed);
        }
    }
}

/// In a child between fork and exec: the soft descriptor limit the daemon
/// was started with (programs using select() expect 1,024).
pub fn restore_nofile_in_child() {
    let soft = STARTED_NOFILE.load(Ordering::Relaxed);
    if soft == 0 {
        return;
    }
    let (_, hard) = nofile();
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit is async-signal-safe; the struct is ours.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
}

/// The connections a daemon may serve at once with `max_clients` and a
/// soft descriptor limit of `nofile`.
pub fn limit(max_clients: usize, nofile: u64) -> usize {
    let by_fds = nofile.saturating_sub(RESERVED_FDS) / FDS_PER_CLIENT;
    (max_clients as u64).min(by_fds).max(1) as usize
}

/// Held by a connection's task while it is served.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        super::memory::connection_ended();
    }
}

/// The accept side of the socket.
pub struct Gate {
    limit: usize,
    max_clients: usize,
    nofile: u64,
    open: Arc<AtomicUsize>,
    refused: OncePer,
    errors: OncePer,
    backoff: Duration,
    spare: Option<File>,
}

impl Gate {
    pub fn new(max_clients: usize) -> Gate {
        let nofile = nofile().0;
        let limit = limit(max_clients, nofile);
        info!(
            "serving at most {limit} connections (max_clients {max_clients}, open files {nofile})"
        );
        Gate {
            limit,
            max_clients,
            nofile,
            open: Arc::default(),
            refused: OncePer::new(LOG_INTERVAL),
            errors: OncePer::new(LOG_INTERVAL),
            backoff: Duration::ZERO,
            spare: File::open("/dev/null").ok(),
        }
    }

    /// Connections being served now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// How long to wait before the next accept: after failures, the
    /// backoff; else the caller's usual poll.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    /// One accept: a connection to serve, `Some(None)` for one refused,
    /// or None when nothing is waiting (or an error was logged and backed
    /// off): accept again until None.
    #[allow(clippy::option_option)]
    pub fn accept(&mut self, l: &UnixListener) -> Option<Option<(UnixStream, Slot)>> {
        match l.accept() {
            Ok((s, _)) => {
                self.backoff = Duration::ZERO;
                if self.open() >= self.limit {
                    self.refuse(s);
                    return Some(None);
                }
                self.open.fetch_add(1, Ordering::Relaxed);
                Some(Some((s, Slot(self.open.clone()))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => {
                let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if let Some(n) = self.errors.hit(Instant::now()) {
                    warn!(
                        "accept: {e}; {} connections open (limit {}, open files {}); retrying in up to {:?}{}",
                        self.open(),
                        self.limit,
                        self.nofile,
                        MAX_BACKOFF,
                        suppressed(n)
                    );
                }
                if out_of_fds && self.spare.take().is_some() {
                    // Our spare descriptor lets the waiting client be told.
                    if let Ok((s, _)) = l.accept() {
                        drop(s);
                    }
                    self.spare = File::open("/dev/null").ok();
                }
                self.backoff = (self.backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
                None
            }
        }
    }

    fn refuse(&mut self, s: UnixStream) {
        drop(s);
        if let Some(n) = self.refused.hit(Instant::now()) {
            warn!("{}{}", self.refusal(), suppressed(n));
        }
    }

    fn refusal(&self) -> String {
        format!(
            "connection refused: {} connections open (max_clients {}, open files {})",
            self.open(),
            self.max_clients,
            self.nofile
        )
    }

    /// Reports refusals and errors held back, once their interval is over.
    pub fn tick(&mut self) {
        let now = Instant::now();
        if let Some(n) = self.refused.flush(now) {
            warn!("{}{}", self.refusal(), suppressed(n));
        }
        if let Some(n) = self.errors.flush(now) {
            warn!("accept errors: {n} more in the last {LOG_INTERVAL:?} (suppressed)");
        }
    }
}

fn suppressed(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("; {n} similar lines suppressed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_keeps_descriptors_for_the_rest() {
        assert_eq!(limit(2000, 65536), 2000);
        assert_eq!(limit(2000, 1024), (1024 - 64) / 3);
        assert_eq!(limit(8, 1024), 8);
        assert_eq!(limit(2000, 256), 64);
        assert_eq!(limit(2000, 10), 1, "one client, whatever the limit");
    }

    #[test]
    fn beyond_the_bound_connections_are_closed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = UnixListener::bind(&path).unwrap();
        l.set_nonblocking(true).unwrap();
        let mut g = Gate::new(2);
        let clients: Vec<_> = (0..4)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        let a = g.accept(&l).flatten().expect("first");
        let b = g.accept(&l).flatten().expect("second");
        assert_eq!(g.open(), 2);
        assert!(matches!(g.accept(&l), Some(None)), "third refused");
        assert!(matches!(g.accept(&l), Some(None)), "fourth refused");
        assert!(g.accept(&l).is_none(), "nothing waiting");
        use std::io::Read;
        let mut buf = [0u8; 1];
        assert_eq!((&clients[2]).read(&mut buf).unwrap(), 0, "closed");
        drop(a);
        assert_eq!(g.open(), 1);
        let _c = UnixStream::connect(&path).unwrap();
        assert!(g.accept(&l).flatten().is_some(), "room again");
        drop(b);
    }
}
