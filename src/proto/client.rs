//! A blocking client for the daemon's Unix socket
//! (`$SANLOCK_RUN_DIR/sanlock.sock`), speaking exactly what libsanlock
//! sends, so it works against the real sanlock daemon or hactl's. One
//! method per lockspace-level command; each opens its own connection, as
//! libsanlock does.
//!
//! Results are sanlock's numbers: a method returns `Ok` with the daemon's
//! non-negative result (or the data it sent), or a [`ClientError`] whose
//! [`ClientError::rv`] is what libsanlock would have returned (`-errno`,
//! `-1` for a short reply, or the daemon's negative result).
//!
//! Every read and write has a timeout ([`Client::timeout`], default
//! [`DEFAULT_TIMEOUT`]) except where the command legitimately blocks for
//! long: add/rem/inq lockspace and shutdown-wait take their own `wait`
//! parameter (`None` = wait forever, as sanlock's CLI does).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::structs::{
    EventCb, SanlkDisk, SanlkHost, SanlkHostEvent, SanlkLockspace, SanlkOptions, SanlkRentry,
    SanlkResource, SanlkRindex, SanlkState, WireStruct,
};
use super::{
    Cmd, DEFAULT_RUN_DIR, HEADER_SIZE, Header, ProtoError, SANLK_HELPER_ARGS_LEN,
    SANLK_HELPER_PATH_LEN, SANLK_MAX_DISKS, SANLK_MAX_RESOURCES, SANLK_REL_ALL, SANLK_SOCKET_NAME,
    SANLK_STATE_LOCKSPACE, SANLK_STATE_RESOURCE, SM_MAGIC,
};
use crate::ondisk::Name;

/// The timeout of a command that the daemon answers without waiting on a
/// lockspace: long enough for a write_lockspace (sanlock allows its init
/// write 60 s) behind a busy worker pool.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest socket path sanlock builds (`snprintf` into
/// `sizeof(sun_path) - 1`, so 106 characters and the NUL).
pub const MAX_SOCKET_PATH: usize = 106;

/// Why a command did not get a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the daemon at {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("socket path {0} is over the {MAX_SOCKET_PATH} bytes sanlock allows")]
    SocketPathTooLong(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("{what}: no answer from the daemon within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("{what}: the daemon closed the connection after {got} of {want} bytes")]
    Short {
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error("{what}: malformed reply: {source}")]
    Proto {
        what: &'static str,
        source: ProtoError,
    },
    #[error("the daemon answered {0}")]
    Daemon(i32),
    #[error("{0}")]
    Invalid(&'static str),
    #[error(
        "the daemon at {0} closed the connection without answering hactl's history command: it is not hactl's daemon (sanlock's daemon keeps no history; `client host_status` and `client renewal` show what it has)"
    )]
    NotHactl(PathBuf),
}

impl ClientError {
    /// The number libsanlock returns for this failure.
    pub fn rv(&self) -> i32 {
        match self {
            ClientError::Connect { source, .. } | ClientError::Io { source, .. } => {
                -source.raw_os_error().unwrap_or(1)
            }
            ClientError::SocketPathTooLong(_) => -libc::ENAMETOOLONG,
            ClientError::Timeout { .. } => -libc::EAGAIN,
            ClientError::Short { .. } | ClientError::Proto { .. } => -1,
            ClientError::Daemon(rv) => *rv,
            ClientError::Invalid(_) => -libc::EINVAL,
            ClientError::NotHactl(_) => -libc::EOPNOTSUPP,
        }
    }
}

/// sanlock's result for a call: the `Ok` value, or the error's number.
pub fn rv_of(r: &Result<i32, ClientError>) -> i32 {
    match r {
        Ok(v) => *v,
        Err(e) => e.rv(),
    }
}

/// A list reply (`get_lockspaces`, `get_hosts`): the result (0, or
/// `-ENOSPC` when the daemon ran out of buffer), the total count the daemon
/// reported, and the items it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    pub result: i32,
    pub count: u32,
    pub items: Vec<T>,
}

/// What follows a `sanlk_state` in a `status` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBin {
    None,
    Lockspace(Box<SanlkLockspace>),
    Resource(SanlkResource),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    pub state: SanlkState,
    pub bin: StateBin,
}

/// A streamed reply (`status`, `host_status`, `renewal`): the reply header
/// and the records up to EOF. `truncated` says why the stream ended early
/// (a record cut short or malformed), as sanlock's client silently stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateStream {
    pub header: Header,
    pub entries: Vec<StatusEntry>,
    pub truncated: Option<String>,
}

/// `log_dump`: `declared` is the header's data (the length the daemon
/// announced), `bytes` what arrived of it (nothing when `declared` is not
/// in `1..=max_size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDump {
    pub header: Header,
    pub declared: i32,
    pub bytes: Vec<u8>,
}

/// `version`: the reply's result, socket protocol (`h.version`) and daemon
/// version (`data2`, 0 when the result is an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionReply {
    pub result: i32,
    pub proto: u32,
    pub version: u32,
}

/// One connection: header + payload out, replies in, every read and write
/// bounded by the connection's timeout.
pub struct Conn {
    stream: UnixStream,
    timeout: Option<Duration>,
}

fn io_err(what: &'static str, after: Option<Duration>, e: io::Error) -> ClientError {
    match (e.kind(), after) {
        (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, Some(after)) => {
            ClientError::Timeout { what, after }
        }
        _ => ClientError::Io { what, source: e },
    }
}

impl Conn {
    /// Sets the read and write timeout (`None`: block).
    pub fn set_timeout(&mut self, t: Option<Duration>) -> Result<(), ClientError> {
        let t = t.filter(|d| !d.is_zero());
        self.stream
            .set_read_timeout(t)
            .and_then(|_| self.stream.set_write_timeout(t))
            .map_err(|e| ClientError::Io {
                what: "set socket timeout",
                source: e,
            })?;
        self.timeout = t;
        Ok(())
    }

    pub fn send(&mut self, what: &'static str, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(bytes)
            .map_err(|e| io_err(what, self.timeout, e))
    }

    /// A header, then the payload, as two sends (like libsanlock).
    pub fn send_msg(&mut self, h: &Header, payload: &[u8]) -> Result<(), ClientError> {
        self.send("send header", &h.encode())?;
        if !payload.is_empty() {
            self.send("send payload", payload)?;
        }
        Ok(())
    }

    /// A request as libsanlock's `send_header` + `send_data`.
    pub fn request(
        &mut self,
        cmd: Cmd,
        cmd_flags: u32,
        data: u32,
        data2: u32,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let h = Header::request(cmd, cmd_flags, payload.len(), data, data2);
        self.send_msg(&h, payload)
    }

    /// Reads until `buf` is full or EOF, like `recv(MSG_WAITALL)`; returns
    /// how much arrived.
    pub fn read_full(&mut self, what: &'static str, buf: &mut [u8]) -> Result<usize, ClientError> {
        let mut got = 0;
        while got < buf.len() {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(what, self.timeout, e)),
            }
        }
        Ok(got)
    }

    /// Exactly `n` bytes, else [`ClientError::Short`].
    pub fn recv_exact(&mut self, what: &'static str, n: usize) -> Result<Vec<u8>, ClientError> {
        let mut b = vec![0u8; n];
        let got = self.read_full(what, &mut b)?;
        if got != n {
            return Err(ClientError::Short { what, got, want: n });
        }
        Ok(b)
    }

    /// A reply header; its magic must be sanlock's.
    pub fn recv_header(&mut self, what: &'static str) -> Result<Header, ClientError> {
        let b = self.recv_exact(what, HEADER_SIZE)?;
        let h = Header::decode(&b).map_err(|source| ClientError::Proto { what, source })?;
        if h.magic != SM_MAGIC {
            return Err(ClientError::Proto {
                what,
                source: ProtoError::BadMagic(h.magic),
            });
        }
        Ok(h)
    }

    pub fn recv_struct<T: WireStruct>(&mut self, what: &'static str) -> Result<T, ClientError> {
        let b = self.recv_exact(what, T::SIZE)?;
        T::decode(&b).map_err(|source| ClientError::Proto { what, source })
    }

    /// `sanlk_state` records (and, with `bins`, the lockspace/resource
    /// struct after each) until EOF.
    pub fn recv_states(
        &mut self,
        what: &'static str,
        bins: bool,
    ) -> Result<(Vec<StatusEntry>, Option<String>), ClientError> {
        let mut entries = Vec::new();
        loop {
            let mut head = [0u8; SanlkState::HEAD_SIZE];
            let got = self.read_full(what, &mut head)?;
            if got == 0 {
                return Ok((entries, None));
            }
            let cut = |what: &str, got: usize, want: usize| {
                Some(format!(
                    "a {what} record was cut short ({got} of {want} bytes)"
                ))
            };
            if got != head.len() {
                return Ok((entries, cut("sanlk_state", got, head.len())));
            }
            let (mut state, str_len) = match SanlkState::decode_head(&head) {
                Ok(v) => v,
                Err(e) => return Ok((entries, Some(e.to_string()))),
            };
            let mut text = vec![0u8; str_len];
            let got = self.read_full(what, &mut text)?;
            if got != str_len {
                return Ok((entries, cut("state string", got, str_len)));
            }
            state.text = text;
            let mut bin = StateBin::None;
            if bins && state.kind == SANLK_STATE_LOCKSPACE {
                let mut b = vec![0u8; SanlkLockspace::SIZE];
                let got = self.read_full(what, &mut b)?;
                match SanlkLockspace::decode(&b[..got]) {
                    Ok(ls) => bin = StateBin::Lockspace(Box::new(ls)),
                    Err(_) => return Ok((entries, cut("sanlk_lockspace", got, b.len()))),
                }
            } else if bins && state.kind == SANLK_STATE_RESOURCE {
                let mut b = vec![0u8; SanlkResource::HEAD_SIZE];
                let got = self.read_full(what, &mut b)?;
                if got != b.len() {
                    return Ok((entries, cut("sanlk_resource", got, b.len())));
                }
                let n = match SanlkResource::num_disks_in(&b) {
                    Ok(n) => n,
                    Err(e) => return Ok((entries, Some(e.to_string()))),
                };
                let want = b.len() + n * SanlkDisk::SIZE;
                b.resize(want, 0);
                let got = SanlkResource::HEAD_SIZE
                    + self.read_full(what, &mut b[SanlkResource::HEAD_SIZE..])?;
                match SanlkResource::decode(&b[..got]) {
                    Ok(r) => bin = StateBin::Resource(r),
                    Err(_) => return Ok((entries, cut("sanlk_resource disks", got, want))),
                }
            }
            entries.push(StatusEntry { state, bin });
        }
    }

    /// The reply header's result: `Ok` if ≥ 0, else [`ClientError::Daemon`].
    pub fn recv_result(&mut self, what: &'static str) -> Result<i32, ClientError> {
        ok_or_daemon(self.recv_header(what)?.result())
    }

    pub fn into_stream(self) -> UnixStream {
        self.stream
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

fn ok_or_daemon(rv: i32) -> Result<i32, ClientError> {
    if rv < 0 {
        Err(ClientError::Daemon(rv))
    } else {
        Ok(rv)
    }
}

/// A `reg_event` registration: the connection the daemon writes
/// [`EventCb`]s to. Poll its fd, then call [`EventFd::get_event`].
pub struct EventFd {
    stream: UnixStream,
}

impl EventFd {
    /// One pending event without blocking (`sanlock_get_event`): `None`
    /// when there is none.
    pub fn get_event(&mut self) -> Result<Option<EventCb>, ClientError> {
        let mut b = [0u8; EventCb::SIZE];
        // SAFETY: recv into a buffer we own, of the length we pass.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                b.as_mut_ptr().cast(),
                b.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(ClientError::Io {
                what: "get_event",
                source: e,
            });
        }
        let n = n as usize;
        if n != b.len() {
            return Err(ClientError::Short {
                what: "get_event",
                got: n,
                want: b.len(),
            });
        }
        EventCb::decode(&b)
            .map(Some)
            .map_err(|source| ClientError::Proto {
                what: "get_event",
                source,
            })
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// Where the daemon is, and how long to wait for it.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Option<Duration>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// `$SANLOCK_RUN_DIR` (even if empty, as sanlock reads it), else
    /// `/run/sanlock`.
    pub fn new() -> Client {
        let dir = std::env::var_os("SANLOCK_RUN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
        Client::with_run_dir(dir)
    }

    pub fn with_run_dir(dir: impl AsRef<Path>) -> Client {
        // "%s/%s", not Path::join: an empty run dir means "/sanlock.sock".
        let mut s = dir.as_ref().as_os_str().to_owned();
        s.push("/");
        s.push(SANLK_SOCKET_NAME);
        Client {
            socket: PathBuf::from(s),
            timeout: Some(DEFAULT_TIMEOUT),
        }
    }

    /// The timeout of every read and write (`None`: block forever).
    pub fn timeout(mut self, t: Option<Duration>) -> Client {
        self.timeout = t;
        self
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    pub fn connect(&self) -> Result<Conn, ClientError> {
        self.connect_with(self.timeout)
    }

    fn connect_with(&self, timeout: Option<Duration>) -> Result<Conn, ClientError> {
        if self.socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ClientError::SocketPathTooLong(self.socket.clone()));
        }
        let stream = UnixStream::connect(&self.socket).map_err(|e| ClientError::Connect {
            path: self.socket.clone(),
            source: e,
        })?;
        let mut c = Conn {
            stream,
            timeout: None,
        };
        c.set_timeout(timeout)?;
        Ok(c)
    }

    /// `cmd_lockspace`: header + lockspace, then the result.
    fn cmd_lockspace(
        &self,
        cmd: Cmd,
        ls: &SanlkLockspace,
        flags: u32,
        data: u32,
        timeout: Option<Duration>,
    ) -> Result<i32, ClientError> {
        let mut c = self.connect_with(timeout)?;
        c.request(cmd, flags, data, 0, &ls.encode())?;
        c.recv_result(cmd.name())
    }

    /// ADD_LOCKSPACE: `io_timeout` 0 lets the daemon use its own. Without
    /// [`super::SANLK_ADD_ASYNC`] the daemon answers only when the delta
    /// lease is acquired (seconds to minutes): `wait` bounds that.
    pub fn add_lockspace(
        &self,
        ls: &SanlkLockspace,
        flags: u32,
        io_timeout: u32,
        wait: Option<Duration>,
    ) -> Result<i32, ClientError> {
        self.cmd_lockspace(Cmd::AddLockspace, ls, flags, io_timeout, wait)
    }

    /// REM_LOCKSPACE ([`super::SANLK_REM_ASYNC`], [`super::SANLK_REM_UNUSED`]);
    /// without ASYNC it waits until the lockspace is gone.
    pub fn rem_lockspace(
        &self,
        ls: &SanlkLockspace,
        flags: u32,
        wait: Option<Duration>,
    ) -> Result<i32, ClientError> {
        self.cmd_lockspace(Cmd::RemLockspace, ls, flags, 0, wait)
    }

    /// INQ_LOCKSPACE: 0 joined, `-ENOENT`, `-EINPROGRESS`; with
    /// [`super::SANLK_INQ_WAIT`] it waits while in progress.
    pub fn inq_lockspace(
        &self,
        ls: &SanlkLockspace,
        flags: u32,
        wait: Option<Duration>,
    ) -> Result<i32, ClientError> {
        self.cmd_lockspace(Cmd::InqLockspace, ls, flags, 0, wait)
    }

    /// WRITE_LOCKSPACE (`init -s`): `ls.flags` carries the LSF sector/align
    /// bits; max_hosts goes in data (ignored by sanlock), io_timeout in data2.
    pub fn write_lockspace(
        &self,
        ls: &SanlkLockspace,
        max_hosts: u32,
        flags: u32,
        io_timeout: u32,
    ) -> Result<i32, ClientError> {
        if ls.host_id_disk.path.is_empty() {
            return Err(ClientError::Invalid("write_lockspace needs a path"));
        }
        let mut c = self.connect()?;
        c.request(
            Cmd::WriteLockspace,
            flags,
            max_hosts,
            io_timeout,
            &ls.encode(),
        )?;
        c.recv_result("write_lockspace")
    }

    /// READ_LOCKSPACE: the lockspace as read from disk (name, host_id,
    /// LSF sector/align flags) and its io_timeout.
    pub fn read_lockspace(
        &self,
        ls: &SanlkLockspace,
        flags: u32,
    ) -> Result<(SanlkLockspace, u32), ClientError> {
        if ls.host_id_disk.path.is_empty() {
            return Err(ClientError::Invalid("read_lockspace needs a path"));
        }
        let mut c = self.connect()?;
        c.request(Cmd::ReadLockspace, flags, 0, 0, &ls.encode())?;
        let h = c.recv_header("read_lockspace")?;
        ok_or_daemon(h.result())?;
        let out = c.recv_struct::<SanlkLockspace>("read_lockspace")?;
        Ok((out, h.data2))
    }

    /// Reads `count` structs, without trusting `count` for an allocation.
    fn recv_list<T: WireStruct>(
        c: &mut Conn,
        what: &'static str,
        h: &Header,
    ) -> Result<Listing<T>, ClientError> {
        let result = h.result();
        if result < 0 && result != -libc::ENOSPC {
            return Err(ClientError::Daemon(result));
        }
        // With -ENOSPC the daemon counts every item in data2 but sends
        // only what fits in its message (1 MiB: 949 lockspaces): read what
        // the length covers.
        let mut n = h.data2 as usize;
        if result == -libc::ENOSPC {
            n = n.min((h.length as usize).saturating_sub(HEADER_SIZE) / T::SIZE);
        }
        let mut items = Vec::new();
        for _ in 0..n {
            items.push(c.recv_struct::<T>(what)?);
        }
        Ok(Listing {
            result,
            count: h.data2,
            items,
        })
    }

    /// GET_LOCKSPACES: joined (flags 0), being removed (LSF_REM), being
    /// added (LSF_ADD).
    pub fn get_lockspaces(&self, flags: u32) -> Result<Listing<SanlkLockspace>, ClientError> {
        let mut c = self.connect()?;
        c.request(Cmd::GetLockspaces, flags, 0, 0, &[])?;
        let h = c.recv_header("get_lockspaces")?;
        Self::recv_list(&mut c, "get_lockspaces", &h)
    }

    /// GET_HOSTS of a lockspace (`host_id` 0: every host with a timestamp).
    /// `-EAGAIN` means "hosts not ready" (no renewal read yet).
    pub fn get_hosts(
        &self,
        name: &Name,
        host_id: u64,
        flags: u32,
    ) -> Result<Listing<SanlkHost>, ClientError> {
        let mut ls = SanlkLockspace::named(*name);
        ls.host_id = host_id;
        let mut c = self.connect()?;
        c.request(Cmd::GetHosts, flags, 0, 0, &ls.encode())?;
        let h = c.recv_header("get_hosts")?;
        Self::recv_list(&mut c, "get_hosts", &h)
    }

    /// Sends a header with `length = 32` and then, separately, a
    /// lockspace carrying only the name: the CLI's quirk for HOST_STATUS
    /// and RENEWAL, which the daemon must accept.
    fn named_stream(&self, cmd: Cmd, name: &Name) -> Result<StateStream, ClientError> {
        let mut c = self.connect()?;
        c.send_msg(&Header::request(cmd, 0, 0, 0, 0), &[])?;
        c.send("send lockspace", &SanlkLockspace::named(*name).encode())?;
        let header = c.recv_header(cmd.name())?;
        let (entries, truncated) = c.recv_states(cmd.name(), false)?;
        ok_or_daemon(header.result())?;
        Ok(StateStream {
            header,
            entries,
            truncated,
        })
    }

    /// HOST_STATUS: one `SANLK_STATE_HOST` per host seen (data32 =
    /// host_id, data64 = timestamp). Not found: `-ENOSPC`.
    pub fn host_status(&self, name: &Name) -> Result<StateStream, ClientError> {
        self.named_stream(Cmd::HostStatus, name)
    }

    /// hactl's own HISTORY command ([`super::HACTL_CMD_HISTORY`]): the
    /// lockspace's history, JSON of [`crate::history::LockspaceHistory`].
    /// sanlock's daemon ignores a command it does not know and waits for
    /// the next one, so our side of the connection is shut after the
    /// request: sanlock then closes it without a word
    /// ([`ClientError::NotHactl`]), while hactl's daemon answers.
    pub fn history(&self, name: &Name) -> Result<Vec<u8>, ClientError> {
        let mut c = self.connect()?;
        let payload = SanlkLockspace::named(*name).encode();
        let h = Header {
            magic: SM_MAGIC,
            version: super::SM_PROTO,
            cmd: super::HACTL_CMD_HISTORY,
            length: (HEADER_SIZE + payload.len()) as u32,
            ..Default::default()
        };
        c.send_msg(&h, &payload)?;
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        let mut hb = [0u8; HEADER_SIZE];
        let got = match c.read_full("history", &mut hb) {
            Err(ClientError::Io { source, .. })
                if source.kind() == io::ErrorKind::ConnectionReset =>
            {
                0
            }
            r => r?,
        };
        if got == 0 {
            return Err(ClientError::NotHactl(self.socket.clone()));
        }
        if got != HEADER_SIZE {
            return Err(ClientError::Short {
                what: "history",
                got,
                want: HEADER_SIZE,
            });
        }
        let r = Header::decode(&hb).map_err(|source| ClientError::Proto {
            what: "history",
            source,
        })?;
        if r.magic != SM_MAGIC {
            return Err(ClientError::Proto {
                what: "history",
                source: ProtoError::BadMagic(r.magic),
            });
        }
        ok_or_daemon(r.result())?;
        // Bounded rings make a few MiB at most (2000 hosts).
        if r.data2 as usize > 64 << 20 {
            return Err(ClientError::Invalid("history reply over 64 MiB"));
        }
        c.recv_exact("history", r.data2 as usize)
    }

    /// RENEWAL: the renewal history, oldest first; `header.data2` is the
    /// lockspace's io_timeout. Not found: `-ENOSPC`.
    pub fn renewal(&self, name: &Name) -> Result<StateStream, ClientError> {
        self.named_stream(Cmd::Renewal, name)
    }

    /// STATUS: `level` 0 for everything, 1 daemon only, 2 + clients,
    /// 3 + lockspaces. Lockspace and resource records carry their struct.
    pub fn status(&self, level: u32) -> Result<StateStream, ClientError> {
        let mut c = self.connect()?;
        c.request(Cmd::Status, 0, level, 0, &[])?;
        let header = c.recv_header("status")?;
        let (entries, truncated) = c.recv_states("status", true)?;
        Ok(StateStream {
            header,
            entries,
            truncated,
        })
    }

    /// LOG_DUMP: the daemon's in-memory log, at most `max_size` bytes.
    pub fn log_dump(&self, max_size: usize) -> Result<LogDump, ClientError> {
        let mut c = self.connect()?;
        c.request(Cmd::LogDump, 0, 0, 0, &[])?;
        let header = c.recv_header("log_dump")?;
        let declared = header.result();
        let mut bytes = Vec::new();
        if declared > 0 && declared as usize <= max_size {
            bytes = vec![0u8; declared as usize];
            let got = c.read_full("log_dump", &mut bytes)?;
            bytes.truncate(got);
        }
        Ok(LogDump {
            header,
            declared,
            bytes,
        })
    }

    /// VERSION: the daemon's version (`0x03080500` for 3.8.5) and socket
    /// protocol.
    pub fn version(&self, flags: u32) -> Result<VersionReply, ClientError> {
        let mut c = self.connect()?;
        c.request(Cmd::Version, flags, 0, 0, &[])?;
        let h = c.recv_header("version")?;
        let result = h.result();
        Ok(VersionReply {
            result,
            proto: h.version,
            version: if result < 0 { 0 } else { h.data2 },
        })
    }

    /// SHUTDOWN: no reply. Without force the daemon ignores it while
    /// lockspaces exist.
    pub fn shutdown(&self, force: u32) -> Result<(), ClientError> {
        let mut c = self.connect()?;
        c.request(Cmd::Shutdown, 0, force, 0, &[])
    }

    /// SHUTDOWN_WAIT: `-EBUSY` at once if lockspaces exist and not
    /// `force`; otherwise the reply comes when the daemon exits.
    pub fn shutdown_wait(&self, force: u32, wait: Option<Duration>) -> Result<i32, ClientError> {
        let mut c = self.connect_with(wait)?;
        c.request(Cmd::ShutdownWait, 0, force, 0, &[])?;
        c.recv_result("shutdown_wait")
    }

    /// SET_CONFIG: `cmd` is one of `SANLK_CONFIG_*`.
    pub fn set_config(&self, name: &Name, flags: u32, cmd: u32) -> Result<i32, ClientError> {
        let mut c = self.connect()?;
        c.request(
            Cmd::SetConfig,
            flags,
            cmd,
            0,
            &SanlkLockspace::named(*name).encode(),
        )?;
        c.recv_result("set_config")
    }

    /// REG_EVENT: on success the connection becomes the event fd.
    pub fn reg_event(
        &self,
        name: &Name,
        he: Option<&SanlkHostEvent>,
        flags: u32,
    ) -> Result<EventFd, ClientError> {
        let mut c = self.connect()?;
        let mut payload = SanlkLockspace::named(*name).encode();
        payload.extend_from_slice(&he.copied().unwrap_or_default().encode());
        c.request(Cmd::RegEvent, flags, 0, 0, &payload)?;
        c.recv_result("reg_event")?;
        // Events are read with MSG_DONTWAIT; no timeout needed.
        c.set_timeout(None)?;
        Ok(EventFd {
            stream: c.into_stream(),
        })
    }

    /// END_EVENT: writes u32 1 to the event fd and closes it (`-EALREADY`
    /// if that fails), then tells the daemon to drop closed event fds.
    pub fn end_event(&self, reg: EventFd, name: &Name, flags: u32) -> Result<i32, ClientError> {
        let mut s = reg.stream;
        if s.write_all(&1u32.to_le_bytes()).is_err() {
            return Err(ClientError::Daemon(-libc::EALREADY));
        }
        drop(s);
        let mut c = self.connect()?;
        c.request(
            Cmd::EndEvent,
            flags,
            0,
            0,
            &SanlkLockspace::named(*name).encode(),
        )?;
        c.recv_result("end_event").map(|_| 0)
    }

    /// SET_EVENT: `flags` are `SANLK_SETEV_*`.
    pub fn set_event(
        &self,
        name: &Name,
        he: &SanlkHostEvent,
        flags: u32,
    ) -> Result<i32, ClientError> {
        let mut c = self.connect()?;
        let mut payload = SanlkLockspace::named(*name).encode();
        payload.extend_from_slice(&he.encode());
        c.request(Cmd::SetEvent, flags, 0, 0, &payload)?;
        c.recv_result("set_event")
    }

    /// ALIGN: the lease alignment of a disk in bytes (1 MiB for 512-byte
    /// sectors and regular files, 8 MiB for 4K), or `-ENODEV`.
    pub fn align(&self, disk: &SanlkDisk) -> Result<i32, ClientError> {
        let mut c = self.connect()?;
        c.request(Cmd::Align, 0, 0, 0, &disk.encode())?;
        c.recv_result("align")
    }
}

/// Who a "registered" command (acquire, release, inquire, convert) is
/// for: the process registered on this connection (header data2 = -1), or
/// another registered pid, asked on a new connection (data2 = pid), as
/// libsanlock's `sock == -1` form.
pub enum Target<'a> {
    Conn(&'a mut Conn),
    Pid(i32),
}

/// `inquire`: the daemon's result, its token count (data2) and the state
/// string (`sanlock_args_to_state` format, without the NUL), `None` when
/// the reply carried no payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inquiry {
    pub result: i32,
    pub count: u32,
    pub state: Option<Vec<u8>>,
}

/// `read_resource_owners`: the resource as read (names, lver, SH flag) and
/// the holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    pub res: SanlkResource,
    pub hosts: Vec<SanlkHost>,
}

/// The first 128 bytes of a resource as sent without its disks (release,
/// convert, examine, LVB): `num_disks` keeps the caller's count, as
/// libsanlock sends `sizeof(struct sanlk_resource)` of the caller's struct.
fn res_head(res: &SanlkResource) -> Vec<u8> {
    let mut b = res.encode();
    b.truncate(SanlkResource::HEAD_SIZE);
    b
}

/// A 128-byte resource head from a reply; its num_disks is the daemon's
/// and is not followed by disks, so it is read as zero.
fn decode_res_head(b: &[u8]) -> Result<SanlkResource, ProtoError> {
    let mut b = b.to_vec();
    if b.len() >= SanlkResource::HEAD_SIZE {
        b[124..128].fill(0);
    }
    SanlkResource::decode(&b)
}

/// read/write_resource and read_resource_owners refuse what libsanlock
/// refuses before connecting.
fn check_disks(res: &SanlkResource, what: &'static str) -> Result<(), ClientError> {
    if res.disks.is_empty() || res.disks.len() > SANLK_MAX_DISKS || res.disks[0].path.is_empty() {
        return Err(ClientError::Invalid(what));
    }
    Ok(())
}

/// A C string into a fixed field as `snprintf(buf, len - 1, "%s")` does:
/// at most `len - 2` bytes and a NUL, the rest zero.
fn helper_field(s: &[u8], len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    let n = s.len().min(len - 2);
    b[..n].copy_from_slice(&s[..n]);
    b
}

impl Client {
    /// Runs a registered command on the target's connection.
    fn on_target<R>(
        &self,
        t: Target<'_>,
        f: impl FnOnce(&mut Conn, u32) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        match t {
            Target::Conn(c) => f(c, u32::MAX),
            Target::Pid(pid) => {
                let mut c = self.connect()?;
                f(&mut c, pid as u32)
            }
        }
    }

    /// REGISTER: no reply; the returned connection is the registration of
    /// this process (its pid, from SO_PEERCRED). Keep it open while leases
    /// are held: the daemon releases them when it closes.
    pub fn register(&self) -> Result<Conn, ClientError> {
        let mut c = self.connect()?;
        c.request(Cmd::Register, 0, 0, 0, &[])?;
        Ok(c)
    }

    /// RESTRICT (`SANLK_RESTRICT_*`) on a registered connection.
    pub fn restrict(&self, conn: &mut Conn, flags: u32) -> Result<i32, ClientError> {
        conn.request(Cmd::Restrict, flags, 0, u32::MAX, &[])?;
        conn.recv_result("restrict")
    }

    /// KILLPATH on a registered connection: the program (and its
    /// arguments, already joined and escaped) the daemon runs instead of
    /// SIGTERM when the lease is requested; each field is 128 bytes, cut
    /// to 126 characters as libsanlock's snprintf does.
    pub fn killpath(
        &self,
        conn: &mut Conn,
        flags: u32,
        path: &[u8],
        args: &[u8],
    ) -> Result<i32, ClientError> {
        let mut payload = helper_field(path, SANLK_HELPER_PATH_LEN);
        payload.extend_from_slice(&helper_field(args, SANLK_HELPER_ARGS_LEN));
        conn.request(Cmd::Killpath, flags, 0, u32::MAX, &payload)?;
        conn.recv_result("killpath")
    }

    /// ACQUIRE of up to 8 resources (each with its disks; `SANLK_RES_LVER`,
    /// `SANLK_RES_SHARED`, ... in their flags) with `SANLK_ACQUIRE_*`
    /// flags. `opt` is sent as zeros when `None`; its owner_name becomes
    /// the name `client status` shows for the holder.
    pub fn acquire(
        &self,
        t: Target<'_>,
        flags: u32,
        res: &[SanlkResource],
        opt: Option<&SanlkOptions>,
    ) -> Result<i32, ClientError> {
        if res.len() > SANLK_MAX_RESOURCES {
            return Err(ClientError::Invalid("more than 8 resources"));
        }
        if res.iter().any(|r| r.disks.len() > SANLK_MAX_DISKS) {
            return Err(ClientError::Invalid("more than 4 disks"));
        }
        let mut payload = Vec::new();
        for r in res {
            payload.extend_from_slice(&r.encode());
        }
        payload.extend_from_slice(&opt.cloned().unwrap_or_default().encode());
        self.on_target(t, |c, data2| {
            c.request(Cmd::Acquire, flags, res.len() as u32, data2, &payload)?;
            c.recv_result("acquire")
        })
    }

    /// RELEASE of the named resources (heads only: the daemon matches
    /// lockspace and resource names). With `SANLK_REL_ALL` the list is
    /// ignored and nothing follows the header, as the daemon reads nothing;
    /// with `SANLK_REL_ORPHAN` the reply is the number of orphans released.
    pub fn release(
        &self,
        t: Target<'_>,
        flags: u32,
        res: &[SanlkResource],
    ) -> Result<i32, ClientError> {
        let mut payload = Vec::new();
        for r in res {
            payload.extend_from_slice(&res_head(r));
        }
        self.on_target(t, |c, data2| {
            c.request(Cmd::Release, flags, res.len() as u32, data2, &payload)?;
            c.recv_result("release")
        })
    }

    /// RELEASE with `SANLK_REL_ALL`: every lease of the target.
    pub fn release_all(&self, t: Target<'_>) -> Result<i32, ClientError> {
        self.release(t, SANLK_REL_ALL, &[])
    }

    /// INQUIRE: the target's leases as a state string. A negative result
    /// is returned in [`Inquiry::result`], not as an error, because the
    /// CLI prints the count with it.
    pub fn inquire(&self, t: Target<'_>, flags: u32) -> Result<Inquiry, ClientError> {
        self.on_target(t, |c, data2| {
            c.request(Cmd::Inquire, flags, 0, data2, &[])?;
            let h = c.recv_header("inquire")?;
            let len = (h.length as usize).saturating_sub(HEADER_SIZE);
            if len == 0 {
                return Ok(Inquiry {
                    result: h.result(),
                    count: 0,
                    state: None,
                });
            }
            if len > super::MAX_CLIENT_MSG {
                return Err(ClientError::Proto {
                    what: "inquire",
                    source: ProtoError::WrongLength {
                        what: "inquire state",
                        need: super::MAX_CLIENT_MSG,
                        have: len,
                    },
                });
            }
            let mut state = c.recv_exact("inquire", len)?;
            let end = state.iter().position(|&b| b == 0).unwrap_or(state.len());
            state.truncate(end);
            Ok(Inquiry {
                result: h.result(),
                count: h.data2,
                state: Some(state),
            })
        })
    }

    /// CONVERT one held resource to shared (`SANLK_RES_SHARED` in
    /// `res.flags`) or exclusive; the disks are not sent.
    pub fn convert(
        &self,
        t: Target<'_>,
        flags: u32,
        res: &SanlkResource,
    ) -> Result<i32, ClientError> {
        // The head's flags word is what the daemon reads as the target mode.
        let payload = res_head(res);
        self.on_target(t, |c, data2| {
            c.request(Cmd::Convert, flags, 0, data2, &payload)?;
            c.recv_result("convert")
        })
    }

    /// FORMAT_RINDEX / REBUILD_RINDEX: `rx.flags` carries the RIF
    /// sector/align bits for format; rebuild's `flags` may be
    /// `SANLK_RX_NO_LOCKSPACE`.
    pub fn rindex_whole(&self, cmd: Cmd, rx: &SanlkRindex, flags: u32) -> Result<i32, ClientError> {
        let mut c = self.connect()?;
        c.request(cmd, flags, 0, 0, &rx.encode())?;
        c.recv_result(cmd.name())
    }

    /// LOOKUP_RINDEX, UPDATE_RINDEX, CREATE_RESOURCE, DELETE_RESOURCE: the
    /// index, then one entry; on success the daemon's entry comes back
    /// (lookup: the name and offset found; create: the offset given).
    /// `num_hosts` is create's (data2).
    pub fn rindex_entry(
        &self,
        cmd: Cmd,
        rx: &SanlkRindex,
        flags: u32,
        re: &SanlkRentry,
        num_hosts: u32,
    ) -> Result<SanlkRentry, ClientError> {
        let mut c = self.connect()?;
        let mut payload = rx.encode();
        payload.extend_from_slice(&re.encode());
        c.request(cmd, flags, 0, num_hosts, &payload)?;
        c.recv_result(cmd.name())?;
        c.recv_struct::<SanlkRentry>(cmd.name())
    }

    /// REQUEST: writes a request record asking the owner to release
    /// (`force_mode` `SANLK_REQ_FORCE` / `SANLK_REQ_GRACEFUL`, 0 clears);
    /// `flags` `SANLK_REQUEST_NEXT_LVER` asks for the next version.
    pub fn request_resource(
        &self,
        flags: u32,
        force_mode: u32,
        res: &SanlkResource,
    ) -> Result<i32, ClientError> {
        let mut c = self.connect()?;
        c.request(Cmd::Request, flags, force_mode, 0, &res.encode())?;
        c.recv_result("request")
    }

    /// EXAMINE_LOCKSPACE when `ls` has a disk path, else EXAMINE_RESOURCE:
    /// makes the daemon check request records of its held leases. The
    /// daemon always answers 0.
    pub fn examine(
        &self,
        flags: u32,
        ls: Option<&SanlkLockspace>,
        res: Option<&SanlkResource>,
    ) -> Result<i32, ClientError> {
        let (cmd, payload) = match (ls, res) {
            (Some(ls), _) if !ls.host_id_disk.path.is_empty() => {
                (Cmd::ExamineLockspace, ls.encode())
            }
            (_, Some(r)) => (Cmd::ExamineResource, res_head(r)),
            (_, None) => {
                return Err(ClientError::Invalid(
                    "examine needs a lockspace with a path or a resource",
                ));
            }
        };
        let mut c = self.connect()?;
        c.request(cmd, flags, 0, 0, &payload)?;
        c.recv_result("examine")
    }

    /// READ_RESOURCE: the lease's leader as a resource (names, lver; sector
    /// and align flags from disk). The disks are the ones asked for.
    pub fn read_resource(
        &self,
        res: &SanlkResource,
        flags: u32,
    ) -> Result<SanlkResource, ClientError> {
        check_disks(res, "read_resource needs 1 to 4 disks with a path")?;
        let mut c = self.connect()?;
        c.request(Cmd::ReadResource, flags, 0, 0, &res.encode())?;
        let h = c.recv_header("read_resource")?;
        let b = c.recv_exact("read_resource", SanlkResource::HEAD_SIZE)?;
        ok_or_daemon(h.result())?;
        let mut out = decode_res_head(&b).map_err(|source| ClientError::Proto {
            what: "read_resource",
            source,
        })?;
        out.disks = res.disks.clone();
        Ok(out)
    }

    /// WRITE_RESOURCE (`init -r`): `num_hosts` is the on-disk num_hosts
    /// (0: the geometry's maximum). libsanlock sends its `max_hosts`
    /// argument where the daemon reads num_hosts (header data) and its
    /// `num_hosts` in data2, which the daemon ignores; this sends the same
    /// bytes, so `max_hosts_arg` is what lands on disk.
    pub fn write_resource(
        &self,
        res: &SanlkResource,
        max_hosts_arg: u32,
        num_hosts_arg: u32,
        flags: u32,
    ) -> Result<i32, ClientError> {
        check_disks(res, "write_resource needs 1 to 4 disks with a path")?;
        let mut c = self.connect()?;
        c.request(
            Cmd::WriteResource,
            flags,
            max_hosts_arg,
            num_hosts_arg,
            &res.encode(),
        )?;
        c.recv_result("write_resource")
    }

    /// READ_RESOURCE_OWNERS: the EX owner (with its timestamp) and the SH
    /// holders (timestamp 0) as the lease's blocks record them.
    pub fn read_resource_owners(
        &self,
        res: &SanlkResource,
        flags: u32,
    ) -> Result<Owners, ClientError> {
        check_disks(res, "read_resource_owners needs 1 to 4 disks with a path")?;
        let mut c = self.connect()?;
        c.request(Cmd::ReadResourceOwners, flags, 0, 0, &res.encode())?;
        let h = c.recv_header("read_resource_owners")?;
        ok_or_daemon(h.result())?;
        let b = c.recv_exact("read_resource_owners", SanlkResource::HEAD_SIZE)?;
        let mut out = decode_res_head(&b).map_err(|source| ClientError::Proto {
            what: "read_resource_owners",
            source,
        })?;
        out.disks = res.disks.clone();
        let mut hosts = Vec::new();
        // A count is at most max_hosts (2000); do not trust more.
        for _ in 0..h.data2.min(super::DEFAULT_MAX_HOSTS) {
            hosts.push(c.recv_struct::<SanlkHost>("read_resource_owners")?);
        }
        Ok(Owners { res: out, hosts })
    }

    /// SET_LVB of a lease held with `SANLK_ACQUIRE_LVB` by this host (it
    /// is written to disk on release).
    pub fn set_lvb(&self, flags: u32, res: &SanlkResource, lvb: &[u8]) -> Result<i32, ClientError> {
        if lvb.is_empty() {
            return Err(ClientError::Invalid("set_lvb needs data"));
        }
        let mut payload = res_head(res);
        payload.extend_from_slice(lvb);
        let mut c = self.connect()?;
        c.request(Cmd::SetLvb, flags, 0, 0, &payload)?;
        c.recv_result("set_lvb")
    }

    /// GET_LVB: `len` bytes of the lease's LVB (the daemon sends a whole
    /// sector, as libsanlock asks with data2 = 0; cut or zero-padded here).
    pub fn get_lvb(
        &self,
        flags: u32,
        res: &SanlkResource,
        len: usize,
    ) -> Result<Vec<u8>, ClientError> {
        if len == 0 {
            return Err(ClientError::Invalid("get_lvb needs a length"));
        }
        let mut c = self.connect()?;
        c.request(Cmd::GetLvb, flags, 0, 0, &res_head(res))?;
        let h = c.recv_header("get_lvb")?;
        let n = (h.length as usize).saturating_sub(HEADER_SIZE);
        ok_or_daemon(h.result())?;
        if n > super::MAX_CLIENT_MSG {
            return Err(ClientError::Invalid(
                "get_lvb: the daemon announced an oversized LVB",
            ));
        }
        let mut got = c.recv_exact("get_lvb", n)?;
        got.resize(len, 0);
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SanlkPath;
    use std::os::unix::net::UnixListener;
    use std::thread;

    /// A one-shot fake daemon: records what the client sent (`expect`
    /// bytes), answers `reply`, then closes.
    fn fake(expect: usize, reply: Vec<u8>) -> (tempfile::TempDir, thread::JoinHandle<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(dir.path().join("sanlock.sock")).unwrap();
        let t = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = vec![0u8; expect];
            s.read_exact(&mut got).unwrap();
            s.write_all(&reply).unwrap();
            got
        });
        (dir, t)
    }

    fn reply(cmd: Cmd, data: i32, data2: u32) -> Header {
        let mut h = Header::request(cmd, 0, 0, 0, 0).result_reply(data);
        h.data2 = data2;
        h
    }

    #[test]
    fn host_status_sends_length_32_then_a_lockspace() {
        let mut r = reply(Cmd::HostStatus, 0, 0).encode().to_vec();
        let mut st = SanlkState::with_text(5, Name::default(), "last_check=1 owner_id=1");
        st.data32 = 1;
        st.data64 = 99;
        r.extend_from_slice(&st.encode());
        let (dir, t) = fake(32 + 1104, r);
        let name = Name::new("LS").unwrap();
        let s = Client::with_run_dir(dir.path()).host_status(&name).unwrap();
        let sent = t.join().unwrap();
        let h = Header::decode(&sent).unwrap();
        assert_eq!((h.cmd, h.length), (Cmd::HostStatus as u32, 32));
        assert_eq!(SanlkLockspace::decode(&sent[32..]).unwrap().name, name);
        assert_eq!(s.entries.len(), 1);
        assert_eq!(s.entries[0].state.data64, 99);
        assert_eq!(s.truncated, None);
    }

    #[test]
    fn daemon_errors_and_short_replies_are_sanlock_numbers() {
        let (dir, t) = fake(
            32 + 1104,
            reply(Cmd::AddLockspace, -17, 0).encode().to_vec(),
        );
        let ls = SanlkLockspace::named(Name::new("LS").unwrap());
        let r = Client::with_run_dir(dir.path()).add_lockspace(&ls, 0, 1, None);
        assert_eq!(rv_of(&r), -17);
        let h = Header::decode(&t.join().unwrap()).unwrap();
        assert_eq!((h.data, h.length), (1, 32 + 1104));

        let (dir, t) = fake(32, vec![1, 2, 3]);
        let r = Client::with_run_dir(dir.path()).get_lockspaces(0);
        assert_eq!(r.unwrap_err().rv(), -1);
        t.join().unwrap();

        let empty = tempfile::tempdir().unwrap();
        let r = Client::with_run_dir(empty.path()).version(0);
        assert_eq!(r.unwrap_err().rv(), -libc::ENOENT);
    }

    #[test]
    fn write_resource_puts_max_hosts_in_data_and_killpath_cuts_at_126() {
        let mut res = SanlkResource {
            lockspace_name: Name::new("LS").unwrap(),
            name: Name::new("R").unwrap(),
            ..Default::default()
        };
        res.disks
            .push(SanlkDisk::new(SanlkPath::new("/f").unwrap(), 1 << 20));
        let (dir, t) = fake(
            32 + 128 + 1040,
            reply(Cmd::WriteResource, 0, 0).encode().to_vec(),
        );
        let c = Client::with_run_dir(dir.path());
        assert_eq!(c.write_resource(&res, 7, 9, 1).unwrap(), 0);
        let sent = t.join().unwrap();
        let h = Header::decode(&sent).unwrap();
        assert_eq!(
            (h.cmd_flags, h.data, h.data2, h.length),
            (1, 7, 9, 32 + 128 + 1040)
        );
        assert_eq!(SanlkResource::decode(&sent[32..]).unwrap(), res);

        let (dir, t) = fake(32 + 256, reply(Cmd::Killpath, 0, 0).encode().to_vec());
        let c = Client::with_run_dir(dir.path()).timeout(Some(Duration::from_secs(5)));
        let mut conn = c.connect().unwrap();
        c.killpath(&mut conn, 0, &[b'p'; 200], b"a\\ b").unwrap();
        let sent = t.join().unwrap();
        let h = Header::decode(&sent).unwrap();
        assert_eq!(
            (h.cmd, h.data2, h.length),
            (Cmd::Killpath as u32, u32::MAX, 32 + 256)
        );
        assert!(sent[32..32 + 126].iter().all(|&b| b == b'p'));
        assert_eq!(&sent[32 + 126..32 + 128], &[0, 0]);
        assert_eq!(&sent[160..165], b"a\\ b\0");

        // Release for another pid: a new connection, data2 = pid, and the
        // 128-byte head only (num_disks as given).
        let (dir, t) = fake(32 + 128, reply(Cmd::Release, 0, 0).encode().to_vec());
        let c = Client::with_run_dir(dir.path()).timeout(Some(Duration::from_secs(5)));
        c.release(Target::Pid(42), 0, std::slice::from_ref(&res))
            .unwrap();
        let sent = t.join().unwrap();
        let h = Header::decode(&sent).unwrap();
        assert_eq!(
            (h.cmd, h.data, h.data2, h.length),
            (Cmd::Release as u32, 1, 42, 160)
        );
        assert_eq!(
            u32::from_le_bytes(sent[32 + 124..32 + 128].try_into().unwrap()),
            1
        );
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let _l = UnixListener::bind(dir.path().join("sanlock.sock")).unwrap();
        let c = Client::with_run_dir(dir.path()).timeout(Some(Duration::from_millis(100)));
        let e = c.get_lockspaces(0).unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
        assert_eq!(e.rv(), -libc::EAGAIN);
    }

    #[test]
    fn a_truncated_stream_keeps_what_arrived() {
        let mut r = reply(Cmd::Status, 0, 0).encode().to_vec();
        r.extend_from_slice(&SanlkState::with_text(1, Name::default(), "a=1").encode());
        let mut bad = SanlkState::with_text(2, Name::default(), "b=2").encode();
        bad.truncate(40);
        r.extend_from_slice(&bad);
        let (dir, t) = fake(32, r);
        let s = Client::with_run_dir(dir.path()).status(0).unwrap();
        t.join().unwrap();
        assert_eq!(s.entries.len(), 1);
        assert!(s.truncated.unwrap().contains("40 of 80"));
    }
}
