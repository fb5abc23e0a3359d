//! The watchdog multiplexing daemon (wdmd) client, as sanlock uses it
//! (sanlock's `watchdog.c` over wdmd's `client.c`), and the pure decision of
//! what to tell wdmd when.
//!
//! wdmd pets /dev/watchdog only while every registered connection's
//! `expire_time` (CLOCK_MONOTONIC seconds) is ahead of now. A lockspace
//! connection that stops sending `test_live` (our renewals failed, or this
//! daemon hung or died) lets the device fire `fire_timeout` seconds after
//! that expiry; `test_live(0, 0)` takes the connection out of the test.
//!
//! The protocol: a stream socket at `$WDMD_RUN_DIR/wdmd.sock` (sanlock and
//! wdmd have `/run/wdmd` built in; the variable lets tests run a peer of
//! their own). Every message, both ways, is one `struct wdmd_header` in the
//! host's byte order; only `status` (and `open_watchdog`) are answered.
//!
//! sanlock 3.8.5 and its wdmd (Debian's) use connect, register,
//! refcount_set/clear, status and test_live; wdmd opens the device itself
//! at start. `open_watchdog` (cmd 7) is from later sanlock releases, where
//! wdmd opens the device on a client's request; a 3.8.5 wdmd never answers it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// `WDMD_NAME_SIZE`.
pub const NAME_SIZE: usize = 128;
/// `sizeof(struct wdmd_header)`: six u32, three u64, the name.
pub const HEADER_SIZE: usize = 6 * 4 + 3 * 8 + NAME_SIZE;
/// wdmd's built-in run dir (`WDMD_RUN_DIR` in wdmd_sock.h).
pub const DEFAULT_RUN_DIR: &str = "/run/wdmd";
pub const SOCKET_NAME: &str = "wdmd.sock";

/// The commands (wdmd_sock.h's enum, from 1).
pub const CMD_REGISTER: u32 = 1;
pub const CMD_REFCOUNT_SET: u32 = 2;
pub const CMD_REFCOUNT_CLEAR: u32 = 3;
pub const CMD_TEST_LIVE: u32 = 4;
pub const CMD_STATUS: u32 = 5;
pub const CMD_DUMP_DEBUG: u32 = 6;
pub const CMD_OPEN_WATCHDOG: u32 = 7;

/// How long one exchange with wdmd may take. libwdmd blocks forever; a
/// bound keeps a hung wdmd from wedging a renewal (it then fires anyway).
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// `struct wdmd_header`. libwdmd never sets `magic`, `len` or `flags` (they
/// go out as 0) and wdmd does not check them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub magic: u32,
    pub cmd: u32,
    pub len: u32,
    pub flags: u32,
    pub test_interval: u32,
    pub fire_timeout: u32,
    pub last_keepalive: u64,
    pub renewal_time: u64,
    pub expire_time: u64,
    pub name: [u8; NAME_SIZE],
}

impl Default for Header {
    fn default() -> Self {
        Header {
            magic: 0,
            cmd: 0,
            len: 0,
            flags: 0,
            test_interval: 0,
            fire_timeout: 0,
            last_keepalive: 0,
            renewal_time: 0,
            expire_time: 0,
            name: [0; NAME_SIZE],
        }
    }
}

impl Header {
    pub fn cmd(cmd: u32) -> Header {
        Header {
            cmd,
            ..Default::default()
        }
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        let u32s = [
            self.magic,
            self.cmd,
            self.len,
            self.flags,
            self.test_interval,
            self.fire_timeout,
        ];
        for (i, v) in u32s.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        let u64s = [self.last_keepalive, self.renewal_time, self.expire_time];
        for (i, v) in u64s.iter().enumerate() {
            b[24 + i * 8..32 + i * 8].copy_from_slice(&v.to_ne_bytes());
        }
        b[48..].copy_from_slice(&self.name);
        b
    }

    pub fn decode(b: &[u8; HEADER_SIZE]) -> Header {
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().unwrap());
        let mut name = [0u8; NAME_SIZE];
        name.copy_from_slice(&b[48..]);
        Header {
            magic: u32_at(0),
            cmd: u32_at(4),
            len: u32_at(8),
            flags: u32_at(12),
            test_interval: u32_at(16),
            fire_timeout: u32_at(20),
            last_keepalive: u64_at(24),
            renewal_time: u64_at(32),
            expire_time: u64_at(40),
            name,
        }
    }

    /// The name up to its first NUL.
    pub fn name_str(&self) -> String {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(NAME_SIZE);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// The name sanlock registers a lockspace's connection under
/// (`activate_watchdog`: at most `NAME_SIZE - 2` bytes, as its snprintf).
pub fn client_name(space_name: &str, host_id: u64) -> String {
    let mut s = format!("sanlock_{space_name}:{host_id}");
    s.truncate(NAME_SIZE - 2);
    s
}

/// `$WDMD_RUN_DIR/wdmd.sock`, else `/run/wdmd/wdmd.sock`.
pub fn socket_path() -> PathBuf {
    let dir = std::env::var_os("WDMD_RUN_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
    dir.join(SOCKET_NAME)
}

/// Why talking to wdmd failed.
#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    /// `open_watchdog` was answered with another fire timeout (wdmd answers
    /// 0 when it could not open or set up the device).
    FireTimeout {
        asked: u32,
        got: u32,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::FireTimeout { asked, got } => {
                write!(f, "wdmd fire_timeout {got}, asked for {asked}")
            }
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// wdmd's `status` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub test_interval: u32,
    pub fire_timeout: u32,
    pub last_keepalive: u64,
}

/// One connection to wdmd (libwdmd's calls, one per method).
pub struct Conn {
    s: UnixStream,
}

impl Conn {
    /// `wdmd_connect`.
    pub fn connect() -> Result<Conn, Error> {
        Self::connect_at(&socket_path())
    }

    pub fn connect_at(path: &std::path::Path) -> Result<Conn, Error> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn { s })
    }

    fn send(&mut self, h: &Header) -> Result<(), Error> {
        self.s.write_all(&h.encode())?;
        Ok(())
    }

    fn recv(&mut self) -> Result<Header, Error> {
        let mut b = [0u8; HEADER_SIZE];
        self.s.read_exact(&mut b)?;
        Ok(Header::decode(&b))
    }

    /// `wdmd_open_watchdog` (after 3.8.5, unused by the daemon): wdmd opens
    /// the device with this fire timeout (or checks that the one it has
    /// matches) and starts petting it.
    pub fn open_watchdog(&mut self, fire_timeout: u32) -> Result<(), Error> {
        self.send(&Header {
            fire_timeout,
            ..Header::cmd(CMD_OPEN_WATCHDOG)
        })?;
        let r = self.recv()?;
        if r.fire_timeout != fire_timeout {
            return Err(Error::FireTimeout {
                asked: fire_timeout,
                got: r.fire_timeout,
            });
        }
        Ok(())
    }

    /// `wdmd_register`.
    pub fn register(&mut self, name: &str) -> Result<(), Error> {
        let mut h = Header::cmd(CMD_REGISTER);
        let n = name.as_bytes();
        let len = n.len().min(NAME_SIZE);
        h.name[..len].copy_from_slice(&n[..len]);
        self.send(&h)
    }

    /// `wdmd_refcount_set`: wdmd must not exit cleanly while we are armed.
    pub fn refcount_set(&mut self) -> Result<(), Error> {
        self.send(&Header::cmd(CMD_REFCOUNT_SET))
    }

    pub fn refcount_clear(&mut self) -> Result<(), Error> {
        self.send(&Header::cmd(CMD_REFCOUNT_CLEAR))
    }

    /// `wdmd_test_live`; (0, 0) takes this connection out of the test.
    pub fn test_live(&mut self, renewal_time: u64, expire_time: u64) -> Result<(), Error> {
        self.send(&Header {
            renewal_time,
            expire_time,
            ..Header::cmd(CMD_TEST_LIVE)
        })
    }

    /// `wdmd_status`.
    pub fn status(&mut self) -> Result<Status, Error> {
        self.send(&Header::cmd(CMD_STATUS))?;
        let r = self.recv()?;
        Ok(Status {
            test_interval: r.test_interval,
            fire_timeout: r.fire_timeout,
            last_keepalive: r.last_keepalive,
        })
    }

    /// sanlock's `activate_watchdog`, once our host_id is acquired:
    /// register, hold a refcount, check wdmd's fire timeout is ours, and
    /// arm the test for the acquired lease.
    pub fn activate(
        &mut self,
        name: &str,
        fire_timeout: u32,
        renewal_time: u64,
        expire_time: u64,
    ) -> Result<(), Error> {
        self.register(name)?;
        self.refcount_set()?;
        let r = (|| {
            let st = self.status()?;
            if st.fire_timeout != fire_timeout {
                return Err(Error::FireTimeout {
                    asked: fire_timeout,
                    got: st.fire_timeout,
                });
            }
            self.test_live(renewal_time, expire_time)
        })();
        if r.is_err() {
            let _ = self.refcount_clear();
        }
        r
    }

    /// sanlock's `deactivate_watchdog`: test_live(0, 0), retried once after
    /// half a second (a failure here resets the host), then drop the refcount.
    pub fn deactivate(&mut self) -> Result<(), Error> {
        let r = self.test_live(0, 0).or_else(|_| {
            std::thread::sleep(Duration::from_millis(500));
            self.test_live(0, 0)
        });
        let _ = self.refcount_clear();
        r
    }
}

/// What to send wdmd for one lockspace, decided from its renewals alone.
///
/// - the acquired lease, and each successful renewal at `t`, arm expiry at
///   `t + 8 * io_timeout` (sanlock's `id_renewal_fail_seconds`): when this
///   host's lease counts as lost here and its holders are killed;
/// - a failed renewal sends nothing, so the last expiry stands;
/// - once the lockspace has failed (a renewal came at or after the expiry
///   the previous renewal armed, or the daemon judged it lost: renewals
///   failing, our lease changed by someone else)
///   nothing is ever sent again, not even after a late successful renewal:
///   the holders are being killed and the watchdog is what ends one that
///   will not die. (sanlock would re-arm on such a renewal; we keep the
///   stricter rule.)
/// - the acquire's own arming does not count for lateness: its timestamp
///   predates the acquire's wait (20 s with io_timeout 1), so it is often
///   expired when sent, as in sanlock; the first renewal follows at once.
/// - disarm, once, when the lockspace is stopped with every holder gone
///   (removed, or failed and cleared); nothing after that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub fail_seconds: u64,
    /// The expire_time the last renewal (not the acquire) armed.
    renewal_expire: Option<u64>,
    failed: bool,
    disarmed: bool,
}

impl Keepalive {
    pub fn new(io_timeout: u64) -> Keepalive {
        Keepalive {
            fail_seconds: crate::timeouts::Timeouts::new(io_timeout).id_renewal_fail_seconds(),
            renewal_expire: None,
            failed: false,
            disarmed: false,
        }
    }

    /// The expire_time for a lease renewed at `last_success`.
    pub fn expire_time(&self, last_success: u64) -> u64 {
        last_success + self.fail_seconds
    }

    /// The first arming, for the lease just acquired at `timestamp`.
    pub fn arm(&mut self, timestamp: u64) -> (u64, u64) {
        (timestamp, self.expire_time(timestamp))
    }

    /// After a renewal attempt at `now`: the `(renewal_time, expire_time)`
    /// to send, if any. `renewed`: the new lease timestamp if it succeeded.
    /// `lockspace_failed`: the daemon judged the lockspace lost (latched).
    /// `stopping`: the lockspace is being stopped (disarm is on its way).
    pub fn after_renewal(
        &mut self,
        now: u64,
        renewed: Option<u64>,
        lockspace_failed: bool,
        stopping: bool,
    ) -> Option<(u64, u64)> {
        self.failed |= lockspace_failed || self.renewal_expire.is_some_and(|e| now >= e);
        if self.failed || self.disarmed || stopping {
            return None;
        }
        let (t, e) = self.arm(renewed?);
        self.renewal_expire = Some(e);
        Some((t, e))
    }

    /// Whether to send the disarming `test_live(0, 0)` now (true once).
    pub fn disarm(&mut self) -> bool {
        !std::mem::replace(&mut self.disarmed, true)
    }

    pub fn disarmed(&self) -> bool {
        self.disarmed
    }

    /// No refresh will ever be sent again (the lockspace failed).
    pub fn failed(&self) -> bool {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wdmd_header_layout_is_the_c_struct() {
        assert_eq!(HEADER_SIZE, 176);
        let mut h = Header {
            magic: 0x0102_0304,
            cmd: CMD_TEST_LIVE,
            len: 5,
            flags: 6,
            test_interval: 10,
            fire_timeout: 60,
            last_keepalive: 0x1122_3344_5566_7788,
            renewal_time: 1000,
            expire_time: 1080,
            ..Default::default()
        };
        h.name[..3].copy_from_slice(b"abc");
        let b = h.encode();
        // Offsets of struct wdmd_header's fields, in host byte order.
        assert_eq!(&b[0..4], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(&b[4..8], &4u32.to_ne_bytes());
        assert_eq!(&b[16..20], &10u32.to_ne_bytes());
        assert_eq!(&b[20..24], &60u32.to_ne_bytes());
        assert_eq!(&b[24..32], &0x1122_3344_5566_7788u64.to_ne_bytes());
        assert_eq!(&b[32..40], &1000u64.to_ne_bytes());
        assert_eq!(&b[40..48], &1080u64.to_ne_bytes());
        assert_eq!(&b[48..51], b"abc");
        assert!(b[51..].iter().all(|&c| c == 0));
        assert_eq!(Header::decode(&b), h);
        assert_eq!(Header::decode(&b).name_str(), "abc");
    }

    /// libwdmd's calls against a peer of ours: what goes out, in order,
    /// and how answers are checked.
    #[test]
    fn wdmd_conn_speaks_libwdmds_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_NAME);
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; HEADER_SIZE];
            while s.read_exact(&mut b).is_ok() {
                let h = Header::decode(&b);
                got.push(h);
                let answer = match h.cmd {
                    // Answers as wdmd: a copy with its values filled in.
                    CMD_OPEN_WATCHDOG => Some(Header {
                        fire_timeout: 60,
                        ..h
                    }),
                    CMD_STATUS => Some(Header {
                        test_interval: 10,
                        fire_timeout: 60,
                        last_keepalive: 7,
                        ..h
                    }),
                    _ => None,
                };
                if let Some(a) = answer {
                    s.write_all(&a.encode()).unwrap();
                }
            }
            got
        });
        let mut c = Conn::connect_at(&path).unwrap();
        c.open_watchdog(60).unwrap();
        c.activate("sanlock_LS:1", 60, 100, 108).unwrap();
        c.test_live(102, 110).unwrap();
        // wdmd with another fire timeout is refused, as sanlock does.
        assert!(matches!(
            c.open_watchdog(30),
            Err(Error::FireTimeout { asked: 30, got: 60 })
        ));
        assert!(matches!(
            c.activate("sanlock_LS:1", 30, 0, 0),
            Err(Error::FireTimeout { asked: 30, got: 60 })
        ));
        c.deactivate().unwrap();
        drop(c);
        let got = peer.join().unwrap();
        let seq: Vec<(u32, u32, u64, u64, String)> = got
            .iter()
            .map(|h| {
                (
                    h.cmd,
                    h.fire_timeout,
                    h.renewal_time,
                    h.expire_time,
                    h.name_str(),
                )
            })
            .collect();
        let n = String::new;
        assert_eq!(
            seq,
            vec![
                (CMD_OPEN_WATCHDOG, 60, 0, 0, n()),
                (CMD_REGISTER, 0, 0, 0, "sanlock_LS:1".into()),
                (CMD_REFCOUNT_SET, 0, 0, 0, n()),
                (CMD_STATUS, 0, 0, 0, n()),
                (CMD_TEST_LIVE, 0, 100, 108, n()),
                (CMD_TEST_LIVE, 0, 102, 110, n()),
                (CMD_OPEN_WATCHDOG, 30, 0, 0, n()),
                (CMD_REGISTER, 0, 0, 0, "sanlock_LS:1".into()),
                (CMD_REFCOUNT_SET, 0, 0, 0, n()),
                (CMD_STATUS, 0, 0, 0, n()),
                (CMD_REFCOUNT_CLEAR, 0, 0, 0, n()),
                (CMD_TEST_LIVE, 0, 0, 0, n()),
                (CMD_REFCOUNT_CLEAR, 0, 0, 0, n()),
            ]
        );
        assert!(
            got.iter()
                .all(|h| h.magic == 0 && h.len == 0 && h.flags == 0)
        );
    }

    #[test]
    fn wdmd_connect_without_wdmd_fails() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Conn::connect_at(&dir.path().join(SOCKET_NAME)).is_err());
    }

    #[test]
    fn wdmd_command_numbers() {
        assert_eq!(
            [
                CMD_REGISTER,
                CMD_REFCOUNT_SET,
                CMD_REFCOUNT_CLEAR,
                CMD_TEST_LIVE,
                CMD_STATUS,
                CMD_DUMP_DEBUG,
                CMD_OPEN_WATCHDOG
            ],
            [1, 2, 3, 4, 5, 6, 7]
        );
    }

    #[test]
    fn wdmd_client_name_is_sanlocks() {
        assert_eq!(client_name("LS", 3), "sanlock_LS:3");
        let long = "x".repeat(200);
        assert_eq!(client_name(&long, 1).len(), NAME_SIZE - 2);
    }

    #[test]
    fn wdmd_keepalive_expiry_is_renewal_plus_8_io_timeouts() {
        let mut k = Keepalive::new(10);
        assert_eq!(k.arm(500), (500, 580));
        assert_eq!(
            k.after_renewal(520, Some(520), false, false),
            Some((520, 600))
        );
        let mut k = Keepalive::new(1);
        assert_eq!(k.arm(500), (500, 508));
        assert_eq!(
            k.after_renewal(502, Some(502), false, false),
            Some((502, 510))
        );
    }

    #[test]
    fn wdmd_keepalive_failed_renewal_sends_nothing() {
        let mut k = Keepalive::new(1);
        k.arm(100);
        assert_eq!(k.after_renewal(102, None, false, false), None);
        // A transient failure within the fail window: the next success re-arms.
        assert_eq!(
            k.after_renewal(104, Some(104), false, false),
            Some((104, 112))
        );
        assert!(!k.failed());
    }

    #[test]
    fn wdmd_keepalive_never_rearms_after_the_lockspace_failed() {
        let mut k = Keepalive::new(1);
        k.arm(100);
        assert_eq!(k.after_renewal(103, None, true, false), None);
        // The storage came back: still nothing, the kill is under way.
        assert_eq!(k.after_renewal(105, Some(105), false, false), None);
        assert!(k.failed());
        // Holders gone: disarm once.
        assert!(k.disarm());
        assert!(!k.disarm());
    }

    #[test]
    fn wdmd_keepalive_never_rearms_once_the_expiry_passed() {
        // A renewal that lands at or after the expiry the previous renewal
        // armed comes too late: the lease already counts as lost here.
        let mut k = Keepalive::new(1);
        k.arm(100);
        // The acquire's arming was stale (its wait); the first renewal re-arms.
        assert_eq!(
            k.after_renewal(120, Some(120), false, false),
            Some((120, 128))
        );
        assert_eq!(
            k.after_renewal(127, Some(127), false, false),
            Some((127, 135))
        );
        assert_eq!(k.after_renewal(135, Some(135), false, false), None);
        assert_eq!(k.after_renewal(136, Some(136), false, false), None);
        assert!(k.failed());
    }

    #[test]
    fn wdmd_keepalive_nothing_while_stopping_or_after_disarm() {
        let mut k = Keepalive::new(1);
        k.arm(100);
        assert_eq!(k.after_renewal(102, Some(102), false, true), None);
        assert!(k.disarm());
        assert!(k.disarmed());
        assert_eq!(k.after_renewal(104, Some(104), false, false), None);
    }
}
