//! One connection, as a task: reads requests as their bytes arrive,
//! decodes them (`proto::request`), applies each where its command runs
//! (inline, on the pool, or as a waiting task) and sends the reply. A
//! client's requests are applied one after the other, as sanlock does.

use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream as StdStream;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tracing::{error, warn};

use super::{Conn, Exec, Next};
use crate::daemon::accept::Slot;
use crate::daemon::{ClientSlot, Daemon};
use crate::proto::request::{self, Decoded};
use crate::proto::{self, Cmd, Header};

/// How long a client may take to send the payload that follows a header.
const PAYLOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the rest of a refused request may take to arrive.
const SKIP_TIMEOUT: Duration = Duration::from_millis(100);
/// How much is read at a time. A request is at most ~35 KiB (8
/// resources of 4 disks): the buffer holds one request and one read.
const READ_CHUNK: usize = 16 * 1024;

/// The bytes received and not yet used.
struct Input {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Input {
    /// Reads once more (waiting at most `limit`); false at EOF, on an
    /// error or when the time is up.
    async fn more(&mut self, limit: Option<Duration>) -> bool {
        let at = self.buf.len();
        self.buf.resize(at + READ_CHUNK, 0);
        let r = match limit {
            None => self.s.read(&mut self.buf[at..]).await,
            Some(t) => match tokio::time::timeout(t, self.s.read(&mut self.buf[at..])).await {
                Ok(r) => r,
                Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
            },
        };
        let n = r.unwrap_or(0);
        self.buf.truncate(at + n);
        n > 0
    }

    /// Waits until `n` bytes are there.
    async fn fill(&mut self, n: usize, limit: Option<Duration>) -> bool {
        while self.buf.len() < n {
            if !self.more(limit).await {
                return false;
            }
        }
        true
    }

    /// Drops what a request took, and up to `skip` more bytes that arrive
    /// within [`SKIP_TIMEOUT`] (the rest of a refused request), so the
    /// client reads the reply rather than a reset.
    async fn consume(&mut self, used: usize, skip: usize) {
        let want = used.saturating_add(skip);
        let deadline = tokio::time::Instant::now() + SKIP_TIMEOUT;
        while self.buf.len() < want {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.more(Some(left)).await {
                break;
            }
        }
        let n = want.min(self.buf.len());
        self.buf.drain(..n);
    }

    async fn send(&mut self, out: &mut Vec<u8>) -> bool {
        let ok = out.is_empty() || self.s.write_all(out).await.is_ok();
        out.clear();
        ok
    }
}

/// Serves one accepted connection to its end.
pub(super) async fn serve(d: Arc<Daemon>, s: StdStream, slot: Slot) {
    let peer = crate::daemon::access::peer_of(&s);
    let me = nix::unistd::geteuid().as_raw();
    let ok = peer
        .as_ref()
        .is_some_and(|p| crate::daemon::access::allowed(p, d.cfg.uid, d.cfg.gid, me));
    let s = match s
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(s))
    {
        Ok(s) => s,
        Err(e) => {
            warn!("connection: {e}");
            return;
        }
    };
    let mut input = Input { s, buf: Vec::new() };
    if !ok {
        match &peer {
            Some(p) => warn!("{}", crate::daemon::access::refusal_line(p, &d.cfg)),
            None => warn!("client with no peer credentials refused"),
        }
        refuse(&mut input).await;
        drop(slot);
        return;
    }
    let pid = peer.map(|p| p.pid).unwrap_or(-1);
    let fd = input.s.as_raw_fd();
    let ci = d.client_add(ClientSlot {
        fd,
        pid: -1,
        owner_name: String::new(),
        cmd_last: 0,
        ..Default::default()
    });
    let mut c = Conn::new(ci, pid, fd);
    requests(&d, &mut input, &mut c).await;
    // A registered process that closed its connection has exited (or
    // given up): its leases go with it.
    let registered = matches!(d.clients.lock().get(ci), Some(Some(s)) if s.registered);
    if registered {
        d.client_gone(ci).await;
    }
    d.client_free(ci);
    drop(slot);
}

async fn requests(d: &Arc<Daemon>, input: &mut Input, c: &mut Conn) {
    let mut refused_restricted = 0u64;
    loop {
        // An idle connection waits as long as it likes.
        if !input.fill(proto::HEADER_SIZE, None).await {
            return;
        }
        let mut hb = [0u8; proto::HEADER_SIZE];
        hb.copy_from_slice(&input.buf[..proto::HEADER_SIZE]);
        if restricted_all(d, c.ci) {
            // libvirt restricts the connection that qemu inherits: nothing
            // sent on it may act. sanlock stops reading such a connection
            // (and its main loop with it); we answer -EPERM and go on, so
            // neither this client nor anyone else waits. The connection
            // stays open: closing it would release the leases it holds
            // while the process still runs.
            refused_restricted += 1;
            if !refuse_restricted(input, c, &hb, refused_restricted).await {
                return;
            }
            continue;
        }
        if let Ok(raw) = Header::decode(&hb)
            && raw.magic == proto::SM_MAGIC
            && raw.cmd == proto::HACTL_CMD_HISTORY
        {
            d.client_update(c.ci, |sl| sl.cmd_last = raw.cmd);
            let ls = payload(input, request::decode_history)
                .await
                .unwrap_or_else(Err);
            super::query::send_history(d, c, &raw, ls);
            input.send(&mut c.out).await;
            return;
        }
        let (h, cmd) = match Header::parse(&hb) {
            Ok(x) => x,
            Err(e) => {
                warn!("client pid {}: {e}; closing its connection", c.pid);
                return;
            }
        };
        d.client_update(c.ci, |sl| sl.cmd_last = h.cmd);
        // A payload that never came whole is answered, then the
        // connection closed: what follows would be read out of step.
        let (req, whole) = match payload(input, |p| request::decode(&h, cmd, p)).await {
            Ok(req) => (req, true),
            Err(e) => (Err(e), false),
        };
        let next = match super::exec_of(cmd) {
            Exec::Inline => super::apply(d, c, &h, cmd, req),
            Exec::Wait | Exec::Task => super::apply_wait(d, c, &h, cmd, req).await,
            Exec::Pool => {
                let d2 = d.clone();
                let mut moved = std::mem::replace(c, Conn::new(c.ci, c.pid, c.fd));
                match tokio::task::spawn_blocking(move || {
                    let next = super::apply(&d2, &mut moved, &h, cmd, req);
                    (moved, next)
                })
                .await
                {
                    Ok((back, next)) => {
                        *c = back;
                        next
                    }
                    Err(e) => {
                        error!("client pid {} cmd {cmd} failed: {e}", c.pid);
                        c.reply(&h, -libc::ENOMSG);
                        Next::Close
                    }
                }
            }
        };
        let sent = input.send(&mut c.out).await;
        if let Some(f) = c.after_send.take() {
            f();
        }
        if !sent || !whole || matches!(next, Next::Close) {
            return;
        }
    }
}

/// Waits for the payload after the header at the front of the buffer
/// (at most [`PAYLOAD_TIMEOUT`] for the rest of it) and decodes it with
/// `dec`; consumes the header, the payload and what is to be skipped.
/// Err(-ENOTCONN) when it never came whole.
async fn payload<T>(
    input: &mut Input,
    dec: impl Fn(&[u8]) -> Decoded<T>,
) -> Result<Result<T, i32>, i32> {
    loop {
        match dec(&input.buf[proto::HEADER_SIZE..]) {
            Decoded::More => {
                if !input.more(Some(PAYLOAD_TIMEOUT)).await {
                    input.buf.clear();
                    return Err(-libc::ENOTCONN);
                }
            }
            Decoded::Done {
                req,
                consumed,
                skip,
            } => {
                input.consume(proto::HEADER_SIZE + consumed, skip).await;
                return Ok(req);
            }
        }
    }
}

/// Whether the connection's client set `SANLK_RESTRICT_ALL`.
fn restricted_all(d: &Daemon, ci: usize) -> bool {
    matches!(d.clients.lock().get(ci), Some(Some(s)) if s.restricted & proto::SANLK_RESTRICT_ALL != 0)
}

/// Answers a request on a `SANLK_RESTRICT_ALL` connection with `-EPERM`
/// (register, which is never answered, gets nothing), after reading its
/// payload so the connection stays in step. The refusal is logged the
/// first time and then every 100th, so a looping client cannot flood the
/// log. Returns false when the header is malformed: the connection closes
/// as any other malformed one.
async fn refuse_restricted(
    input: &mut Input,
    c: &mut Conn,
    hb: &[u8; proto::HEADER_SIZE],
    count: u64,
) -> bool {
    let (h, cmd) = match Header::parse(hb) {
        Ok(x) => x,
        Err(e) => {
            warn!(
                "client pid {}: {e}; closing its restricted connection",
                c.pid
            );
            return false;
        }
    };
    if count == 1 || count.is_multiple_of(100) {
        warn!(
            "client pid {} cmd {} refused: connection restricted (SANLK_RESTRICT_ALL), {count} refused so far",
            c.pid, h.cmd
        );
    }
    input
        .consume(proto::HEADER_SIZE, request::declared_payload(&h))
        .await;
    if cmd == Cmd::Register {
        return true;
    }
    c.reply(&h, -libc::EPERM);
    input.send(&mut c.out).await
}

/// A refused connection: its first request that expects a reply is
/// answered `-EACCES` (the error a client of sanlock sees when the
/// socket's mode refuses it) and the connection is closed at once, so
/// clients that read until EOF (status, log_dump) do not wait. Register,
/// which sanlock never answers, is passed over: the client's next request
/// gets the refusal.
async fn refuse(input: &mut Input) {
    loop {
        if !input.fill(proto::HEADER_SIZE, Some(PAYLOAD_TIMEOUT)).await {
            return;
        }
        let Ok((h, cmd)) = Header::parse(&input.buf[..proto::HEADER_SIZE]) else {
            return;
        };
        // A refused client has no business sending large payloads: what
        // its length counts is dropped (bounded), then it is answered.
        let rest = request::declared_payload(&h);
        if !input
            .fill(proto::HEADER_SIZE + rest, Some(PAYLOAD_TIMEOUT))
            .await
        {
            return;
        }
        input.buf.drain(..proto::HEADER_SIZE + rest);
        if cmd != Cmd::Register {
            let mut out = h.result_reply(-libc::EACCES).encode().to_vec();
            input.send(&mut out).await;
            return;
        }
    }
}
