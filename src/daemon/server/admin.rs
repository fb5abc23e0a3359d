//! The connection and the daemon itself: version, register, restrict,
//! shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Conn, Next};
use crate::daemon::Daemon;
use crate::proto::{self, Cmd, Header};

pub(super) fn apply(d: &Arc<Daemon>, c: &mut Conn, h: &Header, cmd: Cmd) -> Next {
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
            let pid = c.pid;
            d.client_update(c.ci, |s| {
                s.registered = true;
                s.pid = pid;
                s.owner_name = pid.to_string();
            });
            Next::Keep
        }
        Cmd::Restrict => {
            d.client_update(c.ci, |s| s.restricted = h.cmd_flags);
            c.reply(h, 0);
            Next::Keep
        }
        Cmd::Shutdown => {
            c.set_owner(d, "shutdown");
            // No reply: sanlock's client does not wait for one.
            if h.data != 0 {
                d.shutdown_force();
            } else {
                d.shutdown_if_idle();
            }
            Next::Close
        }
        _ => {
            c.reply(h, -libc::EINVAL);
            Next::Close
        }
    }
}

/// `shutdown -w 1`: answered once every lockspace is gone.
pub(super) async fn shutdown_wait(d: &Arc<Daemon>, c: &mut Conn, h: &Header) -> Next {
    // Counted before the shutdown starts, so the exit waits for this
    // reply (the accept loop may see the lockspaces gone first).
    d.shutdown_waiters.fetch_add(1, Ordering::SeqCst);
    if h.data != 0 {
        d.shutdown_force();
    } else if !d.shutdown_if_idle() {
        d.shutdown_waiters.fetch_sub(1, Ordering::SeqCst);
        c.reply(h, -libc::EBUSY);
        return Next::Keep;
    }
    while !d.spaces.lock().is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = Header {
        magic: proto::SM_MAGIC,
        version: proto::SM_PROTO,
        length: 32,
        ..Default::default()
    };
    c.send(&r.encode());
    // Counted down once the reply is out: the daemon exits only then.
    let d = d.clone();
    c.after_send = Some(Box::new(move || {
        d.shutdown_waiters.fetch_sub(1, Ordering::SeqCst);
    }));
    Next::Close
}
