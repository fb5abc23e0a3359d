//! The daemon's socket: sanlock's protocol on `$SANLOCK_RUN_DIR/sanlock.sock`.
//!
//! In mini-redis's shape: one thread runs the accept loop and every
//! connection as a task ([`conn`]); a request is decoded in
//! `proto::request` and applied by its command family's module
//! ([`admin`], [`query`], [`lockspaces`], [`resources`]). Commands that
//! only look at or change the daemon's memory are applied on that thread;
//! acquire and release are tasks whose Disk Paxos runs on the I/O
//! engine's thread (the lease file opened on the pool first), at most
//! [`crate::daemon::MAX_LEASE_OPS`] at once; the other commands that do
//! lease I/O run on a pool bounded by `max_worker_threads` (sanlock's
//! `-t`), and those that wait for a lockspace (add, rem, inq, shutdown -w)
//! wait as tasks, holding no thread. So the thread count does not grow
//! with the clients, and a command stuck on frozen storage holds at most
//! one pool thread while `client status` is still answered.
//! A connection that sends something malformed is logged and closed;
//! nobody else is affected.

mod admin;
mod conn;
mod lockspaces;
mod query;
mod resources;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{error, info};

use super::Daemon;
use super::config::DaemonConfig;
use crate::proto::{self, Cmd, Header, request::Request};

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

fn install_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let sa = SigAction::new(
            SigHandler::Handler(on_term),
            SaFlags::empty(),
            SigSet::empty(),
        );
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            let _ = nix::sys::signal::sigaction(s, &sa);
        }
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn);
    }
}

/// Accepts and serves connections until a shutdown is asked for and no
/// lockspace is left (and the `shutdown -w 1` waiters have their reply).
pub fn serve(d: Arc<Daemon>, l: UnixListener) {
    install_signals();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(d.cfg.max_worker_threads.max(2) as usize)
        .thread_name("worker")
        .thread_stack_size(super::memory::CONN_STACK)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the connection loop: {e}");
            return;
        }
    };
    rt.block_on(async {
        tokio::spawn(super::main_loop::run(d.clone()));
        accept_loop(d, l).await
    });
    // Requests still on the pool (stuck on storage) are not waited for.
    rt.shutdown_timeout(Duration::from_secs(1));
}

async fn accept_loop(d: Arc<Daemon>, l: UnixListener) {
    if let Err(e) = l.set_nonblocking(true) {
        error!("listener: {e}");
        return;
    }
    // SAFETY: the listener owns its descriptor, kept open and unreplaced
    // while the AsyncFd holds it.
    let l = match unsafe { tokio::io::unix::AsyncFd::register(l) } {
        Ok(l) => l,
        Err(e) => {
            error!("listener: {e}");
            return;
        }
    };
    let mut gate = super::accept::Gate::new(d.cfg.max_clients);
    loop {
        if TERM.swap(false, Ordering::Relaxed) {
            d.shutdown_if_idle();
        }
        // Set by an idle shutdown, or a forced one once its lockspaces
        // are gone.
        if d.shutting_down.load(Ordering::Relaxed) && d.spaces.lock().is_empty() {
            info!("shutdown");
            // `shutdown -w 1` waiters are tasks here: let them reply.
            let end = tokio::time::Instant::now() + Duration::from_secs(2);
            while d.shutdown_waiters.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < end
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            return;
        }
        let backoff = gate.backoff();
        if backoff.is_zero() {
            // Woken by a connection, or every 200 ms for the checks above.
            if let Ok(Ok(mut ready)) =
                tokio::time::timeout(Duration::from_millis(200), l.readable()).await
            {
                ready.clear_ready();
            }
        } else {
            tokio::time::sleep(backoff).await;
        }
        while let Some(got) = gate.accept(l.get_ref()) {
            if let Some((s, slot)) = got {
                tokio::spawn(conn::serve(d.clone(), s, slot));
            }
        }
        gate.tick();
    }
}

/// What the connection does after a request.
pub(super) enum Next {
    Keep,
    Close,
}

/// A connection as the command modules see it: its slot in the client
/// table, the peer's pid, its descriptor (for event registration), and
/// the reply being built (sent by the connection task).
pub(super) struct Conn {
    pub ci: usize,
    pub pid: i32,
    pub fd: std::os::unix::io::RawFd,
    pub out: Vec<u8>,
    /// Run once the reply is sent (or could not be).
    pub after_send: Option<Box<dyn FnOnce() + Send>>,
}

impl Conn {
    pub fn new(ci: usize, pid: i32, fd: std::os::unix::io::RawFd) -> Conn {
        Conn {
            ci,
            pid,
            fd,
            out: Vec::new(),
            after_send: None,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        self.out.extend_from_slice(bytes);
        true
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

    fn set_owner(&self, d: &Daemon, name: &str) {
        d.client_update(self.ci, |s| s.owner_name = name.to_string());
    }
}

/// How a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exec {
    /// On the connection thread: it only touches the daemon's memory.
    Inline,
    /// On the bounded pool: it does lease I/O.
    Pool,
    /// As a task: it waits for a lockspace to change.
    Wait,
    /// As a task: its lease I/O runs on the engine (acquire, release).
    Task,
}

fn exec_of(cmd: Cmd) -> Exec {
    match cmd {
        Cmd::AddLockspace | Cmd::InqLockspace | Cmd::RemLockspace | Cmd::ShutdownWait => Exec::Wait,
        Cmd::Acquire | Cmd::Release => Exec::Task,
        Cmd::Convert
        | Cmd::Request
        | Cmd::ReadResource
        | Cmd::WriteResource
        | Cmd::ReadResourceOwners
        | Cmd::WriteLockspace
        | Cmd::ReadLockspace
        | Cmd::Align
        | Cmd::FormatRindex
        | Cmd::RebuildRindex
        | Cmd::UpdateRindex
        | Cmd::LookupRindex
        | Cmd::CreateResource
        | Cmd::DeleteResource => Exec::Pool,
        _ => Exec::Inline,
    }
}

/// Applies a request that runs inline or on the pool.
fn apply(d: &Arc<Daemon>, c: &mut Conn, h: &Header, cmd: Cmd, req: Result<Request, i32>) -> Next {
    match cmd {
        Cmd::Version | Cmd::Register | Cmd::Restrict | Cmd::Shutdown | Cmd::ShutdownWait => {
            admin::apply(d, c, h, cmd)
        }
        Cmd::Status
        | Cmd::HostStatus
        | Cmd::Renewal
        | Cmd::LogDump
        | Cmd::GetLockspaces
        | Cmd::GetHosts
        | Cmd::Inquire => query::apply(d, c, h, cmd, req),
        Cmd::AddLockspace
        | Cmd::InqLockspace
        | Cmd::RemLockspace
        | Cmd::WriteLockspace
        | Cmd::ReadLockspace
        | Cmd::Align
        | Cmd::SetConfig
        | Cmd::RegEvent
        | Cmd::EndEvent
        | Cmd::SetEvent
        | Cmd::ExamineLockspace => lockspaces::apply(d, c, h, cmd, req),
        Cmd::Acquire
        | Cmd::Release
        | Cmd::Convert
        | Cmd::Request
        | Cmd::ReadResource
        | Cmd::WriteResource
        | Cmd::ReadResourceOwners
        | Cmd::SetLvb
        | Cmd::GetLvb
        | Cmd::Killpath
        | Cmd::ExamineResource
        | Cmd::FormatRindex
        | Cmd::RebuildRindex
        | Cmd::UpdateRindex
        | Cmd::LookupRindex
        | Cmd::CreateResource
        | Cmd::DeleteResource => resources::apply(d, c, h, cmd, req),
    }
}

/// Applies a request that runs as a task.
async fn apply_wait(
    d: &Arc<Daemon>,
    c: &mut Conn,
    h: &Header,
    cmd: Cmd,
    req: Result<Request, i32>,
) -> Next {
    match cmd {
        Cmd::ShutdownWait => admin::shutdown_wait(d, c, h).await,
        Cmd::Acquire | Cmd::Release => resources::apply_task(d, c, h, cmd, req).await,
        _ => lockspaces::apply_wait(d, c, h, cmd, req).await,
    }
}
