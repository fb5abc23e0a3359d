//! The daemon's socket: sanlock's protocol on `$SANLOCK_RUN_DIR/sanlock.sock`,
//! one thread per connection. A connection that sends something malformed
//! is logged and closed; nobody else is affected.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::config::DaemonConfig;
use super::lockspace::SpaceList;
use super::{ClientSlot, Daemon};
use crate::geometry::Geometry;
use crate::lease_str::{DiskArg, LockspaceArg};
use crate::ondisk::{LeaderRecord, Name};
use crate::proto::{
    self, Cmd, Header, SanlkDisk, SanlkHost, SanlkHostEvent, SanlkLockspace, SanlkOptions,
    SanlkPath, SanlkRentry, SanlkResource, SanlkRindex, SanlkState, WireStruct,
};
use crate::rv;
use crate::timeouts::monotime;

/// How long a client may take to send the payload that follows a header.
const PAYLOAD_TIMEOUT: Duration = Duration::from_secs(30);

pub fn listen(cfg: &DaemonConfig) -> Result<UnixListener, String> {
    let path = cfg.run_dir.join(proto::SANLK_SOCKET_NAME);
    let _ = std::fs::remove_file(&path);
    let l =
        UnixListener::bind(&path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| e.to_string())?;
    nix::unistd::chown(&path, Some(cfg.uid.into()), Some(cfg.gid.into())).map_err(|e| {
        format!(
            "cannot chown {} to {}:{}: {e}",
            path.display(),
            cfg.uid,
            cfg.gid
        )
    })?;
    Ok(l)
}

static TERM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::Relaxed);
}

/// Accepts connections until a shutdown is asked for and no lockspace is left.
pub fn serve(d: Arc<Daemon>, l: UnixListener) {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let h = nix::sys::signal::SigHandler::Handler(on_term);
        let sa = nix::sys::signal::SigAction::new(
            h,
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        for s in [
            nix::sys::signal::SIGTERM,
            nix::sys::signal::SIGINT,
            nix::sys::signal::SIGHUP,
        ] {
            let _ = nix::sys::signal::sigaction(s, &sa);
        }
        let _ = nix::sys::signal::signal(
            nix::sys::signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    l.set_nonblocking(true).expect("nonblocking listener");
    let mut gate = super::accept::Gate::new(d.cfg.max_clients);
    loop {
        if TERM.swap(false, Ordering::Relaxed) {
            d.shutdown_if_idle();
        }
        // Set by an idle shutdown, or a forced one once its lockspaces
        // are gone.
        if d.shutting_down.load(Ordering::Relaxed) && d.spaces.lock().is_empty() {
            info!("shutdown");
            return;
        }
        let mut pfd = libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        if gate.backoff().is_zero() {
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 200) };
        } else {
            std::thread::sleep(gate.backoff());
        }
        if let Some((s, slot)) = gate.accept(&l) {
            let _ = s.set_nonblocking(false);
            let d = d.clone();
            // A thread per connection, on a small stack (see memory.rs).
            let _ = std::thread::Builder::new()
                .name("conn".into())
                .stack_size(super::memory::CONN_STACK)
                .spawn(move || {
                    connection(d, s);
                    drop(slot);
                });
        }
        gate.tick();
    }
}

/// A refused connection: its first request that expects a reply is
/// answered `-EACCES` (the error a client of sanlock sees when the
/// socket's mode refuses it) and the connection is closed at once, so
/// clients that read until EOF (status, log_dump) do not wait. Register,
/// which sanlock never answers, is passed over: the client's next request
/// gets the refusal.
fn refuse(mut s: UnixStream) {
    // A refused client has no business sending large payloads.
    const MAX_DISCARD: u64 = 1 << 20;
    let _ = s.set_read_timeout(Some(PAYLOAD_TIMEOUT));
    loop {
        let mut hb = [0u8; proto::HEADER_SIZE];
        if s.read_exact(&mut hb).is_err() {
            return;
        }
        let Ok((h, cmd)) = Header::parse(&hb) else {
            return;
        };
        let rest = (h.length as u64).saturating_sub(proto::HEADER_SIZE as u64);
        if rest > MAX_DISCARD
            || std::io::copy(&mut (&s).take(rest), &mut std::io::sink()).ok() != Some(rest)
        {
            return;
        }
        if cmd != Cmd::Register {
            let _ = s.write_all(&h.result_reply(-libc::EACCES).encode());
            return;
        }
    }
}

/// A connection's socket and its slot in the client table.
struct Conn {
    s: UnixStream,
    ci: usize,
    pid: i32,
}

impl Conn {
    fn read_payload<T: WireStruct>(&mut self) -> Result<T, i32> {
        let mut b = vec![0u8; T::SIZE];
        let _ = self.s.set_read_timeout(Some(PAYLOAD_TIMEOUT));
        let r = self.s.read_exact(&mut b);
        let _ = self.s.set_read_timeout(None);
        r.map_err(|_| -libc::ENOTCONN)?;
        T::decode(&b).map_err(|_| -libc::EINVAL)
    }

    fn read_bytes(&mut self, n: usize) -> Result<Vec<u8>, i32> {
        let mut b = vec![0u8; n];
        let _ = self.s.set_read_timeout(Some(PAYLOAD_TIMEOUT));
        let r = self.s.read_exact(&mut b);
        let _ = self.s.set_read_timeout(None);
        r.map_err(|_| -libc::ENOTCONN)?;
        Ok(b)
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        self.s.write_all(bytes).is_ok()
    }

    fn reply(&mut self, h: &Header, result: i32) -> bool {
        self.send(&h.result_reply(result).encode())
    }

    /// The request header with `data` = result and length 32, `data2`
    /// echoed (sanlock's replies to set_config, reg_event, end_event).
    fn reply_echo(&mut self, h: &Header, result: i32) -> bool {
        let r = Header {
            version: proto::SM_PROTO,
            length: 32,
            data: result as u32,
            ..*h
        };
        self.send(&r.encode())
    }

    /// The request header with `data` = result, `data2` = a count, and a
    /// length that covers `body`, then the body.
    fn reply_listing(&mut self, h: &Header, result: i32, count: u32, body: &[u8]) -> bool {
        let r = Header {
            version: proto::SM_PROTO,
            length: (proto::HEADER_SIZE + body.len()) as u32,
            data: result as u32,
            data2: count,
            ..*h
        };
        self.send(&r.encode()) && (body.is_empty() || self.send(body))
    }
}

fn connection(d: Arc<Daemon>, s: UnixStream) {
    let peer = super::access::peer_of(&s);
    let me = nix::unistd::geteuid().as_raw();
    let ok = peer
        .as_ref()
        .is_some_and(|p| super::access::allowed(p, d.cfg.uid, d.cfg.gid, me));
    if !ok {
        match &peer {
            Some(p) => warn!("{}", super::access::refusal_line(p, &d.cfg)),
            None => warn!("client with no peer credentials refused"),
        }
        refuse(s);
        return;
    }
    let pid = peer.map(|p| p.pid).unwrap_or(-1);
    let fd = s.as_raw_fd();
    let ci = d.client_add(ClientSlot {
        fd,
        pid: -1,
        owner_name: String::new(),
        cmd_last: 0,
        ..Default::default()
    });
    let mut c = Conn { s, ci, pid };
    let mut refused_restricted = 0u64;
    loop {
        let mut hb = [0u8; proto::HEADER_SIZE];
        if c.s.read_exact(&mut hb).is_err() {
            break;
        }
        if restricted_all(&d, ci) {
            // libvirt restricts the connection that qemu inherits: nothing
            // sent on it may act. sanlock stops reading such a connection
            // (and its main loop with it); we answer -EPERM and go on, so
            // neither this client nor anyone else waits. The connection
            // stays open: closing it would release the leases it holds
            // while the process still runs.
            refused_restricted += 1;
            if !refuse_restricted(&mut c, &hb, refused_restricted) {
                break;
            }
            continue;
        }
        if let Ok(raw) = Header::decode(&hb)
            && raw.magic == proto::SM_MAGIC
            && raw.cmd == proto::HACTL_CMD_HISTORY
        {
            d.client_update(ci, |sl| sl.cmd_last = raw.cmd);
            send_history(&d, &mut c, &raw);
            break;
        }
        let (h, cmd) = match Header::parse(&hb) {
            Ok(x) => x,
            Err(e) => {
                warn!("client pid {pid}: {e}; closing its connection");
                break;
            }
        };
        d.client_update(ci, |sl| sl.cmd_last = h.cmd);
        match handle(&d, &mut c, &h, cmd) {
            Next::Keep => {}
            Next::Close => break,
        }
    }
    // A registered process that closed its connection has exited (or
    // given up): its leases go with it.
    let registered = matches!(d.clients.lock().get(ci), Some(Some(s)) if s.registered);
    if registered {
        d.client_gone(ci);
    }
    d.client_free(ci);
}

enum Next {
    Keep,
    Close,
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
fn refuse_restricted(c: &mut Conn, hb: &[u8; proto::HEADER_SIZE], count: u64) -> bool {
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
    discard_payload(c, &h);
    cmd == Cmd::Register || c.reply(&h, -libc::EPERM)
}

fn set_owner(d: &Daemon, c: &Conn, name: &str) {
    d.client_update(c.ci, |s| s.owner_name = name.to_string());
}

fn ls_path(ls: &SanlkLockspace) -> Result<String, i32> {
    super::path_string(&ls.host_id_disk.path)
}

fn handle(d: &Arc<Daemon>, c: &mut Conn, h: &Header, cmd: Cmd) -> Next {
    match cmd {
        Cmd::Version => {
            let r = Header {
                magic: proto::SM_MAGIC,
                version: proto::SM_PROTO,
                cmd: Cmd::Version as u32,
                length: proto::HEADER_SIZE as u32,
                data2: proto::VERSION_COMBINED,
                ..Default::default()
            };
            c.send(&r.encode());
            Next::Keep
        }
        Cmd::Register => {
            d.client_update(c.ci, |s| {
                s.registered = true;
                s.pid = c.pid;
                s.owner_name = c.pid.to_string();
            });
            Next::Keep
        }
        Cmd::Restrict => {
            d.client_update(c.ci, |s| s.restricted = h.cmd_flags);
            c.reply(h, 0);
            Next::Keep
        }
        Cmd::Shutdown => {
            set_owner(d, c, "shutdown");
            // No reply: sanlock's client does not wait for one.
            if h.data != 0 {
                d.shutdown_force();
            } else {
                d.shutdown_if_idle();
            }
            Next::Close
        }
        Cmd::ShutdownWait => {
            // Counted before the shutdown starts, so the exit waits for
            // this reply (the main loop may see the lockspaces gone first).
            d.shutdown_waiters.fetch_add(1, Ordering::SeqCst);
            if h.data != 0 {
                d.shutdown_force();
            } else if !d.shutdown_if_idle() {
                d.shutdown_waiters.fetch_sub(1, Ordering::SeqCst);
                c.reply(h, -libc::EBUSY);
                return Next::Keep;
            }
            while !d.spaces.lock().is_empty() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let r = Header {
                magic: proto::SM_MAGIC,
                version: proto::SM_PROTO,
                length: 32,
                ..Default::default()
            };
            c.send(&r.encode());
            d.shutdown_waiters.fetch_sub(1, Ordering::SeqCst);
            Next::Close
        }
        Cmd::Status => {
            set_owner(d, c, "status");
            send_status(d, c, h);
            Next::Close
        }
        Cmd::HostStatus => {
            set_owner(d, c, "host_status");
            let ls: SanlkLockspace = match c.read_payload() {
                Ok(ls) => ls,
                Err(e) => {
                    c.reply(h, e);
                    return Next::Close;
                }
            };
            send_host_status(d, c, h, &ls.name);
            Next::Close
        }
        Cmd::Renewal => {
            set_owner(d, c, "renewal");
            send_renewal(d, c, h);
            Next::Close
        }
        Cmd::LogDump => {
            set_owner(d, c, "log_dump");
            let dump = d.log.lock().unwrap().dump();
            let r = Header {
                version: proto::SM_PROTO,
                data: dump.len() as u32,
                ..*h
            };
            if c.send(&r.encode()) {
                c.send(&dump);
            }
            Next::Close
        }
        Cmd::GetLockspaces => {
            set_owner(d, c, "get_lockspaces");
            // sanlock sends at most 1 MiB of lockspaces, says -ENOSPC if
            // there were more, and counts them all in data2.
            let max = proto::MAX_CLIENT_MSG / SanlkLockspace::SIZE;
            let mut body = Vec::new();
            let mut count = 0u32;
            for (list, flags) in [
                (SpaceList::Active, 0),
                (SpaceList::Removing, proto::SANLK_LSF_REM),
                (SpaceList::Adding, proto::SANLK_LSF_ADD),
            ] {
                for sp in d.spaces_on(list) {
                    if (count as usize) < max {
                        let mut ls =
                            SanlkLockspace::new(sp.name, sp.host_id, path_of(&sp.path), sp.offset);
                        ls.flags = flags;
                        body.extend(ls.encode());
                    }
                    count += 1;
                }
            }
            let rv = if count as usize > max {
                -libc::ENOSPC
            } else {
                0
            };
            c.reply_listing(h, rv, count, &body);
            Next::Close
        }
        Cmd::GetHosts => {
            set_owner(d, c, "get_hosts");
            let ls: SanlkLockspace = match c.read_payload() {
                Ok(ls) => ls,
                Err(e) => {
                    c.reply(h, e);
                    return Next::Close;
                }
            };
            let (rv, hosts) = get_hosts(d, &ls.name, ls.host_id);
            let body: Vec<u8> = hosts.iter().flat_map(|x| x.encode()).collect();
            c.reply_listing(h, rv, hosts.len() as u32, &body);
            Next::Close
        }
        Cmd::SetConfig => {
            set_owner(d, c, "set_config");
            let rv = match c.read_payload::<SanlkLockspace>() {
                Err(e) => e,
                Ok(ls) => set_config(d, &ls.name, h.data),
            };
            c.reply_echo(h, rv);
            Next::Close
        }
        Cmd::RegEvent => {
            set_owner(d, c, "reg_event");
            let rv = match (
                c.read_payload::<SanlkLockspace>(),
                c.read_payload::<SanlkHostEvent>(),
            ) {
                (Ok(ls), Ok(_)) => reg_event(d, c, &ls.name),
                (Err(e), _) | (_, Err(e)) => e,
            };
            c.reply_echo(h, rv);
            Next::Close
        }
        Cmd::EndEvent => {
            set_owner(d, c, "end_event");
            let rv = match c.read_payload::<SanlkLockspace>() {
                Err(e) => e,
                Ok(ls) if ls.name.is_empty() => -libc::EINVAL,
                Ok(ls) => match d.find_active(&ls.name) {
                    None => -libc::ENOENT,
                    Some(sp) => {
                        sp.prune_event_fds();
                        0
                    }
                },
            };
            c.reply_echo(h, rv);
            Next::Close
        }
        Cmd::AddLockspace => {
            set_owner(d, c, "add_lockspace");
            let ls: SanlkLockspace = match c.read_payload() {
                Ok(ls) => ls,
                Err(e) => {
                    c.reply(h, e);
                    return Next::Keep;
                }
            };
            let path = match ls_path(&ls) {
                Ok(p) => p,
                Err(e) => {
                    c.reply(h, e);
                    return Next::Keep;
                }
            };
            let rv = match d.add_lockspace_start(
                ls.name,
                ls.host_id,
                &path,
                ls.host_id_disk.offset,
                h.data as u64,
            ) {
                Err(e) => e,
                Ok(sp) if h.cmd_flags & proto::SANLK_ADD_ASYNC != 0 => {
                    Daemon::add_lockspace_later(d, sp);
                    0
                }
                Ok(sp) => d.add_lockspace_wait(&sp),
            };
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::InqLockspace | Cmd::RemLockspace => {
            set_owner(
                d,
                c,
                if cmd == Cmd::InqLockspace {
                    "inq_lockspace"
                } else {
                    "rem_lockspace"
                },
            );
            let ls: SanlkLockspace = match c.read_payload() {
                Ok(ls) => ls,
                Err(e) => {
                    c.reply(h, e);
                    return Next::Keep;
                }
            };
            let path = ls_path(&ls).unwrap_or_default();
            let off = ls.host_id_disk.offset;
            let rv = if cmd == Cmd::InqLockspace {
                loop {
                    let r = d.inq_lockspace(&ls.name, ls.host_id, &path, off);
                    if r != -libc::EINPROGRESS || h.cmd_flags & proto::SANLK_INQ_WAIT == 0 {
                        break r;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            } else if h.cmd_flags & proto::SANLK_REM_UNUSED != 0
                && d.find_exact(&ls.name, ls.host_id, &path, off)
                    .is_some_and(|sp| d.space_has_resources(sp.space_id))
            {
                -libc::EBUSY
            } else {
                d.rem_lockspace(
                    &ls.name,
                    ls.host_id,
                    &path,
                    off,
                    h.cmd_flags & proto::SANLK_REM_ASYNC == 0,
                )
            };
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::WriteLockspace => {
            let rv = match c.read_payload::<SanlkLockspace>() {
                Err(e) => e,
                Ok(ls) => write_lockspace(d, &ls, h.data2),
            };
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::ReadLockspace => {
            let (rv, io, ls) = match c.read_payload::<SanlkLockspace>() {
                Err(e) => (e, 0, SanlkLockspace::default()),
                Ok(ls) => read_lockspace(d, ls),
            };
            c.reply_listing(h, rv, io, &ls.encode());
            Next::Keep
        }
        Cmd::Align => {
            let rv = match c.read_payload::<SanlkDisk>() {
                Err(e) => e,
                Ok(disk) => align(&disk),
            };
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::SetEvent => {
            let rv = match (
                c.read_payload::<SanlkLockspace>(),
                c.read_payload::<SanlkHostEvent>(),
            ) {
                (Ok(ls), Ok(he)) => set_event(d, &ls.name, he, h.cmd_flags),
                (Err(e), _) | (_, Err(e)) => e,
            };
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::Acquire => {
            let r = read_acquire(c, h).and_then(|(resources, opts)| {
                let (ci, pid) = target(d, c, h)?;
                d.client_update(ci, |s| s.owner_name = opts.owner_name.to_string());
                Ok(d.acquire_for(super::resource::Holder { ci, pid }, &resources, h.cmd_flags))
            });
            let rv = r.unwrap_or_else(|e| e);
            c.reply(h, rv);
            if rv == -libc::E2BIG || rv == -libc::ERANGE || rv == -libc::ENOTCONN {
                return Next::Close;
            }
            Next::Keep
        }
        Cmd::Release => {
            let rv = (|| {
                if h.cmd_flags & proto::SANLK_REL_ORPHAN != 0 {
                    let res = read_res_head(c)?;
                    target(d, c, h)?;
                    return Ok(d.release_orphans(&res));
                }
                if h.cmd_flags & proto::SANLK_REL_RENAME != 0 {
                    let old = read_res_head(c)?;
                    let new = read_res_head(c)?;
                    let (ci, _) = target(d, c, h)?;
                    return Ok(d.release_rename(ci, &old, &new));
                }
                let names = if h.cmd_flags & proto::SANLK_REL_ALL != 0 {
                    None
                } else {
                    let count = (h.data as usize).min(proto::SANLK_MAX_RESOURCES);
                    let mut v = Vec::new();
                    for _ in 0..count {
                        let b = c.read_bytes(SanlkResource::HEAD_SIZE)?;
                        v.push(SanlkResource {
                            lockspace_name: Name(b[0..48].try_into().unwrap()),
                            name: Name(b[48..96].try_into().unwrap()),
                            ..Default::default()
                        });
                    }
                    Some(v)
                };
                let (ci, _) = target(d, c, h)?;
                Ok(d.release_for(ci, names.as_deref()))
            })()
            .unwrap_or_else(|e| e);
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::Inquire => {
            match target(d, c, h) {
                Err(e) => {
                    c.reply(h, e);
                }
                Ok((ci, _)) => {
                    let (count, state) = d.inquire(ci);
                    let mut body = Vec::new();
                    if count > 0 {
                        body.extend_from_slice(state.as_bytes());
                        body.push(0);
                    }
                    c.reply_listing(h, 0, count as u32, &body);
                }
            }
            Next::Keep
        }
        Cmd::Convert => {
            let rv = read_res_head(c)
                .and_then(|res| {
                    let (ci, _) = target(d, c, h)?;
                    Ok(d.convert(ci, &res, h.cmd_flags))
                })
                .unwrap_or_else(|e| e);
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::Killpath => {
            let rv = c
                .read_bytes(2 * KILLPATH_FIELD)
                .and_then(|b| {
                    let (ci, _) = target(d, c, h)?;
                    let field = |x: &[u8]| {
                        // sanlock forces a NUL at the last byte of each field.
                        let x = &x[..KILLPATH_FIELD - 1];
                        let n = x.iter().position(|&b| b == 0).unwrap_or(x.len());
                        String::from_utf8_lossy(&x[..n]).into_owned()
                    };
                    let path = field(&b[..KILLPATH_FIELD]);
                    let args = field(&b[KILLPATH_FIELD..]);
                    d.client_update(ci, |s| {
                        s.killpath = (!path.is_empty()).then(|| (path.clone(), args.clone()));
                        s.killpath_pid = h.cmd_flags & proto::SANLK_KILLPATH_PID != 0;
                    });
                    Ok(0)
                })
                .unwrap_or_else(|e| e);
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::Request => {
            let rv = read_res_disks(c)
                .and_then(|res| {
                    let sp = d
                        .find_active(&res.lockspace_name)
                        .filter(|s| !s.state.lock().space_dead())
                        .ok_or(-libc::ENOSPC)?;
                    let next = h.cmd_flags & proto::SANLK_REQUEST_NEXT_LVER != 0;
                    let owner = super::resource_ops::request(&res, h.data, next, sp.io_timeout)?;
                    if owner != 0 {
                        // Our next renewals carry the owner's bit: it examines.
                        sp.state
                            .lock()
                            .core
                            .set_request_bit(owner, crate::timeouts::monotime());
                    }
                    Ok(0)
                })
                .unwrap_or_else(|e| e);
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::ExamineResource | Cmd::ExamineLockspace => {
            let name = if cmd == Cmd::ExamineResource {
                read_res_head(c).map(|r| r.lockspace_name)
            } else {
                c.read_payload::<SanlkLockspace>().map(|l| l.name)
            };
            if let Ok(name) = name
                && let Some(sp) = d.find_active(&name)
            {
                sp.examine.store(true, Ordering::Relaxed);
            }
            // sanlock replies 0 whatever it found.
            c.reply(h, 0);
            Next::Keep
        }
        Cmd::ReadResource => {
            let (rv, res) = match read_res_disks(c) {
                Ok(res) => super::resource_ops::read_resource(res, d.cfg.io_timeout),
                Err(e) => (e, SanlkResource::default()),
            };
            c.reply_listing(h, rv, 0, &res_head(&res));
            Next::Keep
        }
        Cmd::WriteResource => {
            let rv = read_res_disks(c)
                .map(|res| {
                    super::resource_ops::write_resource(
                        &res,
                        h.data,
                        h.cmd_flags & proto::SANLK_WRITE_CLEAR != 0,
                        d.cfg.io_timeout,
                    )
                })
                .unwrap_or_else(|e| e);
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::ReadResourceOwners => {
            let (rv, res, hosts) = match read_res_disks(c) {
                Ok(res) => super::resource_ops::read_resource_owners(res, d.cfg.io_timeout),
                Err(e) => (e, SanlkResource::default(), Vec::new()),
            };
            let mut body = res_head(&res);
            for hs in &hosts {
                body.extend(hs.encode());
            }
            c.reply_listing(h, rv, hosts.len() as u32, &body);
            Next::Keep
        }
        Cmd::SetLvb => {
            let lvb_len =
                (h.length as usize).saturating_sub(proto::HEADER_SIZE + SanlkResource::HEAD_SIZE);
            let rv = read_res_head(c)
                .and_then(|res| {
                    if lvb_len > 4096 {
                        return Err(-libc::E2BIG);
                    }
                    let data = c.read_bytes(lvb_len)?;
                    Ok(d.set_lvb(&res, &data))
                })
                .unwrap_or_else(|e| e);
            c.reply(h, rv);
            if rv == -libc::E2BIG {
                return Next::Close;
            }
            Next::Keep
        }
        Cmd::GetLvb => {
            match read_res_head(c).and_then(|res| d.get_lvb(&res, h.data2 as usize)) {
                Ok(b) => {
                    c.reply_listing(h, 0, 0, &b);
                }
                Err(e) => {
                    // sanlock's header counts data2 bytes it never sends
                    // (libsanlock always asks with data2 0); a header
                    // that promises no body is the honest one.
                    let r = Header {
                        version: proto::SM_PROTO,
                        length: proto::HEADER_SIZE as u32,
                        data: e as u32,
                        data2: 0,
                        ..*h
                    };
                    c.send(&r.encode());
                }
            }
            Next::Keep
        }
        Cmd::FormatRindex | Cmd::RebuildRindex => {
            let rv = match c.read_payload::<SanlkRindex>() {
                Err(e) => e,
                Ok(ri) if cmd == Cmd::FormatRindex => super::rindex::format(d, &ri),
                Ok(ri) => super::rindex::rebuild(d, &ri, h.cmd_flags),
            };
            debug!("{cmd} done {rv}");
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::UpdateRindex | Cmd::LookupRindex | Cmd::CreateResource | Cmd::DeleteResource => {
            // Fixed sizes, whatever `length` says: sanlock's lookup client
            // counts a sanlk_resource (128) where it sends a sanlk_rentry (64).
            let got = c
                .read_payload::<SanlkRindex>()
                .and_then(|ri| Ok((ri, c.read_payload::<SanlkRentry>()?)));
            let (rv, re_ret) = match got {
                Err(e) => (e, SanlkRentry::default()),
                Ok((ri, re)) => match cmd {
                    Cmd::LookupRindex => super::rindex::lookup(d, &ri, &re, h.cmd_flags),
                    Cmd::UpdateRindex => super::rindex::update(d, &ri, &re, h.cmd_flags),
                    // data = max_hosts (unused by sanlock), data2 = num_hosts.
                    Cmd::CreateResource => super::rindex::create(d, &ri, &re, h.data2),
                    _ => super::rindex::delete(d, &ri, &re),
                },
            };
            debug!("{cmd} done {rv}");
            // The result header always carries the entry, even on failure.
            let r = Header {
                version: proto::SM_PROTO,
                length: (proto::HEADER_SIZE + SanlkRentry::SIZE) as u32,
                data: rv as u32,
                data2: 0,
                ..*h
            };
            let mut out = r.encode().to_vec();
            out.extend_from_slice(&re_ret.encode());
            c.send(&out);
            Next::Keep
        }
    }
}

/// Each killpath field (path, args) on the wire.
const KILLPATH_FIELD: usize = 128;

/// A resource without disks (release, convert, lvb, examine payloads).
fn read_res_head(c: &mut Conn) -> Result<SanlkResource, i32> {
    let b = c.read_bytes(SanlkResource::HEAD_SIZE)?;
    let mut head = b.clone();
    // Decode the head alone: its num_disks says nothing here.
    head[124..128].copy_from_slice(&0u32.to_ne_bytes());
    SanlkResource::decode(&head).map_err(|_| -libc::EINVAL)
}

/// A resource followed by its disks (1 to 4, else -ERANGE).
fn read_res_disks(c: &mut Conn) -> Result<SanlkResource, i32> {
    let mut b = c.read_bytes(SanlkResource::HEAD_SIZE)?;
    let n = SanlkResource::num_disks_in(&b).map_err(|_| -libc::ERANGE)?;
    if n == 0 {
        return Err(-libc::ERANGE);
    }
    b.extend(c.read_bytes(n * SanlkDisk::SIZE)?);
    SanlkResource::decode(&b).map_err(|_| -libc::EINVAL)
}

/// The 128-byte head of a resource (replies carry no disks).
fn res_head(r: &SanlkResource) -> Vec<u8> {
    let mut b = r.encode();
    b.truncate(SanlkResource::HEAD_SIZE);
    b[124..128].copy_from_slice(&(r.disks.len() as u32).to_ne_bytes());
    b
}

/// The registered client a command acts for: this connection (data2 -1)
/// or the registered process whose pid is in data2.
fn target(d: &Daemon, c: &Conn, h: &Header) -> Result<(usize, i32), i32> {
    let clients = d.clients.lock();
    if h.data2 == u32::MAX {
        return match clients.get(c.ci) {
            Some(Some(s)) if s.registered => Ok((c.ci, s.pid)),
            _ => Err(-libc::EBUSY),
        };
    }
    let pid = h.data2 as i32;
    clients
        .iter()
        .enumerate()
        .find_map(|(i, s)| {
            s.as_ref()
                .filter(|s| s.registered && s.pid == pid)
                .map(|_| (i, pid))
        })
        .ok_or(-libc::ESRCH)
}

/// ACQUIRE's payload: `data` resources, each with its disks, then options.
fn read_acquire(c: &mut Conn, h: &Header) -> Result<(Vec<SanlkResource>, SanlkOptions), i32> {
    let count = h.data as usize;
    if count > proto::SANLK_MAX_RESOURCES {
        discard_payload(c, h);
        return Err(-libc::E2BIG);
    }
    let mut resources = Vec::with_capacity(count);
    for _ in 0..count {
        let mut b = c.read_bytes(SanlkResource::HEAD_SIZE)?;
        let n = SanlkResource::num_disks_in(&b).map_err(|_| -libc::ERANGE)?;
        if n == 0 {
            return Err(-libc::ERANGE);
        }
        b.extend(c.read_bytes(n * SanlkDisk::SIZE)?);
        resources.push(SanlkResource::decode(&b).map_err(|_| -libc::EINVAL)?);
    }
    let opts: SanlkOptions = c.read_payload()?;
    Ok((resources, opts))
}

/// Reads and drops what follows the header of a refused command, as far
/// as its length says (at most 1 MiB), so the reply is not misread.
/// Streamed through a small buffer: nothing is allocated at the
/// client's say.
fn discard_payload(c: &mut Conn, h: &Header) {
    let n = (h.length as u64)
        .saturating_sub(proto::HEADER_SIZE as u64)
        .min(proto::MAX_CLIENT_MSG as u64);
    let _ = c.s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = std::io::copy(&mut (&c.s).take(n), &mut std::io::sink());
    let _ = c.s.set_read_timeout(None);
}

fn path_of(p: &std::path::Path) -> SanlkPath {
    SanlkPath::new(&p.to_string_lossy()).unwrap_or_default()
}

fn state(kind: u32, name: Name, data32: u32, data64: u64, text: &str) -> Vec<u8> {
    let mut st = SanlkState::with_text(kind, name, text);
    st.data32 = data32;
    st.data64 = data64;
    st.encode()
}

/// The daemon's `status -D` string, field for field as Debian's sanlock
/// 3.8.5 binary prints it (its source tree has two more fields), then
/// ours: which I/O engine runs the lease I/O (`io_uring` or `threads`),
/// how many of its I/Os timed out and are still held by the kernel, and
/// how many it has performed.
fn daemon_str(d: &Daemon) -> String {
    let c = &d.cfg;
    let io = crate::io::engine::get();
    format!(
        "our_host_name={} use_watchdog={} high_priority={} mlock_level={} quiet_fail={} debug_renew={} debug_clients={} \
         debug_cmds=0x{:x} renewal_history_size={} gid={} uid={} sh_retries={} max_sectors_kb_ignore={} \
         max_sectors_kb_align={} max_sectors_kb_num={} max_worker_threads={} write_init_io_timeout={} use_aio={} \
         kill_grace_seconds={} helper_pid=-1 helper_kill_fd=-1 helper_full_count=0 helper_last_status=0 monotime={} \
         version_str=3.8.5 version_num=3.8.5 version_hex={:08x} smproto_hex={:08x} \
         io_engine={} io_abandoned={} io_ops={}",
        d.our_host_name,
        c.use_watchdog as i32,
        c.high_priority as i32,
        c.mlock_level,
        c.quiet_fail,
        c.debug_renew,
        c.debug_clients,
        c.debug_cmds,
        c.renewal_history_size,
        c.gid,
        c.uid,
        c.sh_retries,
        c.max_sectors_kb.fields().0,
        c.max_sectors_kb.fields().1,
        c.max_sectors_kb.fields().2,
        c.max_worker_threads,
        c.write_init_io_timeout,
        c.use_aio,
        c.kill_grace_seconds,
        monotime(),
        proto::VERSION_COMBINED,
        proto::SM_PROTO,
        io.kind().as_str(),
        io.stats
            .abandoned_now
            .load(std::sync::atomic::Ordering::Relaxed),
        io.stats
            .submitted
            .load(std::sync::atomic::Ordering::Relaxed)
    )
}

fn send_status(d: &Daemon, c: &mut Conn, h: &Header) {
    let level = h.data;
    let r = Header {
        version: proto::SM_PROTO,
        length: 32,
        data: 0,
        ..*h
    };
    let mut out = r.encode().to_vec();
    out.extend(state(
        proto::SANLK_STATE_DAEMON,
        d.our_host_name,
        0,
        0,
        &daemon_str(d),
    ));
    if level != 1 {
        let clients = d.clients.lock().clone();
        for (ci, slot) in clients.iter().enumerate() {
            let Some(s) = slot else { continue };
            let text = format!(
                "ci={ci} fd={} pid={} flags=0 restricted={:x} cmd_active=0 cmd_last={} pid_dead=0 kill_count=0 kill_last=0 suspend=0 need_free=0",
                s.fd, s.pid, s.restricted, s.cmd_last
            );
            let name = Name::from_bytes(&s.owner_name.as_bytes()[..s.owner_name.len().min(48)])
                .unwrap_or_default();
            out.extend(state(
                proto::SANLK_STATE_CLIENT,
                name,
                s.pid as u32,
                0,
                &text,
            ));
        }
    }
    if level == 0 || level > 2 {
        for (list, lname) in [
            (SpaceList::Active, "spaces"),
            (SpaceList::Adding, "add"),
            (SpaceList::Removing, "rem"),
        ] {
            for sp in d.spaces_on(list) {
                let st = sp.state.lock();
                let status = *st.core.status();
                let text = format!(
                    "list={lname} space_id={} io_timeout={} sector_size={} align_size={} host_generation={} renew_fail={} \
                     space_dead={} killing_pids=0 used_retries={} external_used={} used_by_orphans={} \
                     renewal_read_extend_sec={} set_max_sectors_kb=0 corrupt_result={} acquire_last_result={} \
                     renewal_last_result={} acquire_last_attempt={} acquire_last_success={} renewal_last_attempt={} \
                     renewal_last_success={}",
                    sp.space_id,
                    sp.io_timeout,
                    st.sector_size(),
                    st.align_size(),
                    st.core.host_generation(),
                    st.core.renew_fail() as i32,
                    st.space_dead() as i32,
                    st.used_retries,
                    st.external_used as i32,
                    st.used_by_orphans as i32,
                    d.cfg.renewal_read_extend_sec.unwrap_or(sp.io_timeout),
                    status.corrupt_result,
                    status.acquire_last_result,
                    status.renewal_last_result,
                    status.acquire_last_attempt,
                    status.acquire_last_success,
                    status.renewal_last_attempt,
                    status.renewal_last_success
                );
                let text = text + &sp.lease_file_field_of(&st);
                out.extend(state(
                    proto::SANLK_STATE_LOCKSPACE,
                    sp.name,
                    0,
                    sp.host_id,
                    &text,
                ));
                let mut ls = SanlkLockspace::new(sp.name, sp.host_id, path_of(&sp.path), sp.offset);
                ls.host_id_disk.pad1 = st.sector_size();
                out.extend(ls.encode());
            }
        }
    }
    if level == 0 || level > 3 {
        for (text, pid, lver, res) in d.resource_states() {
            out.extend(state(
                proto::SANLK_STATE_RESOURCE,
                res.name,
                pid,
                lver,
                &text,
            ));
            out.extend(res.encode());
        }
    }
    c.send(&out);
}

fn send_host_status(d: &Daemon, c: &mut Conn, h: &Header, name: &Name) {
    let Some(sp) = d.find_by_name(name) else {
        c.reply_echo(h, -libc::ENOSPC);
        return;
    };
    let r = Header {
        version: proto::SM_PROTO,
        length: 32,
        data: 0,
        ..*h
    };
    let mut out = r.encode().to_vec();
    let st = sp.state.lock();
    for (i, hs) in st
        .core
        .hosts()
        .hosts
        .iter()
        .enumerate()
        .take(proto::DEFAULT_MAX_HOSTS as usize)
    {
        if hs.last_live == 0 && hs.owner_id == 0 {
            continue;
        }
        let text = format!(
            "last_check={} last_live={} last_req={} owner_id={} owner_generation={} timestamp={} io_timeout={} owner_name={}",
            hs.last_check,
            hs.last_live,
            hs.last_req,
            hs.owner_id,
            hs.owner_generation,
            hs.timestamp,
            hs.io_timeout,
            hs.owner_name
        );
        out.extend(state(
            proto::SANLK_STATE_HOST,
            Name::default(),
            i as u32 + 1,
            hs.timestamp,
            &text,
        ));
    }
    drop(st);
    c.send(&out);
}

/// hactl's HISTORY command: the lockspace's history as JSON.
fn send_history(d: &Daemon, c: &mut Conn, h: &Header) {
    set_owner(d, c, "history");
    let ls: SanlkLockspace = match c.read_payload() {
        Ok(ls) => ls,
        Err(e) => {
            c.reply_listing(h, e, 0, &[]);
            return;
        }
    };
    let Some(sp) = d.find_by_name(&ls.name) else {
        c.reply_listing(h, -libc::ENOENT, 0, &[]);
        return;
    };
    let body = serde_json::to_vec(&sp.history()).expect("history is JSON");
    c.reply_listing(h, 0, body.len() as u32, &body);
}

fn send_renewal(d: &Daemon, c: &mut Conn, h: &Header) {
    if d.cfg.renewal_history_size == 0 {
        let r = Header {
            version: proto::SM_PROTO,
            length: 32,
            data: 0,
            ..*h
        };
        c.send(&r.encode());
        return;
    }
    let ls: SanlkLockspace = match c.read_payload() {
        Ok(ls) => ls,
        Err(e) => {
            c.reply(h, e);
            return;
        }
    };
    let Some(sp) = d.find_by_name(&ls.name) else {
        c.reply_echo(h, -libc::ENOSPC);
        return;
    };
    let st = sp.state.lock();
    let data2 = if st.history.is_empty() {
        0
    } else {
        sp.io_timeout as u32
    };
    let r = Header {
        version: proto::SM_PROTO,
        length: 32,
        data: 0,
        data2,
        ..*h
    };
    let mut out = r.encode().to_vec();
    for e in &st.history {
        let text = format!(
            "timestamp={} read_ms={} write_ms={} next_timeouts={} next_errors={}",
            e.timestamp, e.read_ms, e.write_ms, e.next_timeouts, e.next_errors
        );
        out.extend(state(
            proto::SANLK_STATE_RENEWAL,
            Name::default(),
            0,
            e.timestamp,
            &text,
        ));
    }
    drop(st);
    c.send(&out);
}

fn get_hosts(d: &Daemon, name: &Name, host_id: u64) -> (i32, Vec<SanlkHost>) {
    let Some(sp) = d.find_active(name) else {
        return (-libc::ENOENT, Vec::new());
    };
    let st = sp.state.lock();
    if !st.core.hosts().checked() {
        return (-libc::EAGAIN, Vec::new());
    }
    let now = monotime();
    let mut out = Vec::new();
    for (i, hs) in st.core.hosts().hosts.iter().enumerate() {
        let id = i as u64 + 1;
        if (host_id != 0 && host_id != id) || (host_id == 0 && hs.timestamp == 0) {
            continue;
        }
        let v = hs.judge(now, sp.host_id, sp.watchdog_fire_timeout);
        out.push(SanlkHost {
            host_id: id,
            generation: hs.owner_generation,
            timestamp: hs.timestamp,
            io_timeout: hs.io_timeout as u32,
            flags: v.state.flag(),
        });
    }
    (0, out)
}

fn set_config(d: &Daemon, name: &Name, what: u32) -> i32 {
    let Some(sp) = d.find_active(name) else {
        return -libc::ENOENT;
    };
    let mut st = sp.state.lock();
    match what {
        proto::SANLK_CONFIG_USED if st.space_dead() => -libc::ENOSPC,
        proto::SANLK_CONFIG_USED => {
            st.external_used = true;
            0
        }
        proto::SANLK_CONFIG_UNUSED => {
            st.external_used = false;
            0
        }
        proto::SANLK_CONFIG_USED_BY_ORPHANS => {
            st.used_by_orphans = true;
            0
        }
        proto::SANLK_CONFIG_UNUSED_BY_ORPHANS => {
            st.used_by_orphans = false;
            0
        }
        _ => -libc::EINVAL,
    }
}

fn reg_event(d: &Daemon, c: &Conn, name: &Name) -> i32 {
    if name.is_empty() {
        return -libc::EINVAL;
    }
    let Some(sp) = d.find_active(name) else {
        return -libc::ENOENT;
    };
    let Ok(dup) = c.s.try_clone() else {
        return -libc::ENOMEM;
    };
    let mut fds = sp.event_fds.lock();
    if fds.len() >= 32 {
        drop(fds);
        sp.prune_event_fds();
        fds = sp.event_fds.lock();
        if fds.len() >= 32 {
            return -libc::ENOCSI;
        }
    }
    fds.push(dup);
    0
}

fn set_event(d: &Daemon, name: &Name, he: SanlkHostEvent, flags: u32) -> i32 {
    if name.is_empty() || he.host_id == 0 || he.host_id > proto::DEFAULT_MAX_HOSTS as u64 {
        return -libc::EINVAL;
    }
    let Some(sp) = d.find_active(name) else {
        return -libc::ENOENT;
    };
    let now = monotime();
    match sp.state.lock().core.set_event(now, he, flags) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

fn write_lockspace(d: &Daemon, ls: &SanlkLockspace, io_timeout: u32) -> i32 {
    let Ok(path) = ls_path(ls) else {
        return -libc::EINVAL;
    };
    if path.is_empty() {
        return -libc::ENODEV;
    }
    let ss = proto::lsf_sector_size(ls.flags);
    let al = proto::lsf_align_size(ls.flags);
    let opts = crate::direct::DirectOpts {
        io_timeout: if io_timeout == 0 {
            d.cfg.io_timeout as u16
        } else {
            io_timeout as u16
        },
        sector_size: (ss != 0).then_some(ss),
        align_size: (al != 0).then_some(al),
        ..Default::default()
    };
    let arg = LockspaceArg {
        name: ls.name,
        host_id: ls.host_id,
        disk: DiskArg {
            path,
            offset: ls.host_id_disk.offset,
        },
    };
    match crate::direct::init_lockspace(&arg, &opts) {
        Ok(()) => 0,
        Err(e) => {
            warn!("write_lockspace {}: {e}", ls.name);
            e.sanlk_rv()
        }
    }
}

/// `read_lockspace`: the name, io_timeout and geometry of a lockspace on disk.
fn read_lockspace(d: &Daemon, mut ls: SanlkLockspace) -> (i32, u32, SanlkLockspace) {
    let Ok(path) = ls_path(&ls) else {
        return (-libc::EINVAL, 0, ls);
    };
    if ls.host_id == 0 {
        ls.host_id = 1;
    }
    let Ok(disk) = crate::io::Disk::open(path.as_ref()) else {
        return (-libc::ENODEV, 0, ls);
    };
    let t = Duration::from_secs(d.cfg.io_timeout);
    let off = ls.host_id_disk.offset;
    // As sanlock: a sector size the caller gives is used as it is (a wrong
    // one fails the read with the I/O's own error, e.g. -EINVAL for 512
    // bytes on a 4K device); without one, the first leader says.
    let sector_size = match proto::lsf_sector_size(ls.flags) {
        0 => {
            use super::lockspace::{SizesError, read_lockspace_sizes};
            match read_lockspace_sizes(&disk, off, t) {
                Ok(g) => g.sector_size,
                Err(SizesError::Read(e)) => return (e, 0, ls),
                Err(SizesError::Magic) => return (rv::SANLK_LEADER_MAGIC, 0, ls),
                Err(SizesError::Version) => return (rv::SANLK_LEADER_VERSION, 0, ls),
                Err(SizesError::SectorSize | SizesError::Geometry) => {
                    return (-libc::EINVAL, 0, ls);
                }
            }
        }
        s => s,
    };
    let at = off + (ls.host_id - 1) * sector_size as u64;
    let buf = match disk.read(at, sector_size as usize, t) {
        Ok(b) => b,
        Err(e) => return (e.sanlk_rv(), 0, ls),
    };
    let lr = LeaderRecord::decode(&buf).expect("a sector holds a leader");
    let expect = if ls.name.is_empty() {
        lr.space_name
    } else {
        ls.name
    };
    if let Err(e) = crate::delta::verify_sector(&buf, &expect) {
        return (e, 0, ls);
    }
    // The flags the caller set may have been wrong: the leader's win.
    let Some(g) = Geometry::from_leader(lr.sector_size, lr.flags) else {
        return (rv::SANLK_LEADER_SECTORSIZE, 0, ls);
    };
    ls.name = lr.space_name;
    ls.flags &= !(proto::SANLK_LSF_SECTOR512 | proto::SANLK_LSF_SECTOR4K);
    ls.flags &= !(proto::SANLK_LSF_ALIGN1M
        | proto::SANLK_LSF_ALIGN2M
        | proto::SANLK_LSF_ALIGN4M
        | proto::SANLK_LSF_ALIGN8M);
    ls.flags |= proto::lsf_sector_flag(g.sector_size) | proto::lsf_align_flag(g.align_size);
    (0, lr.io_timeout as u32, ls)
}

fn align(disk: &SanlkDisk) -> i32 {
    let Ok(p) = disk.path.as_bytes() else {
        return -libc::ENODEV;
    };
    if p.is_empty() {
        return -libc::ENODEV;
    }
    let Ok(d) = crate::io::Disk::open(std::path::Path::new(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(p),
    )) else {
        return -libc::ENODEV;
    };
    match d.device_sector {
        512 => 1 << 20,
        4096 => 8 << 20,
        _ => -libc::EINVAL,
    }
}
