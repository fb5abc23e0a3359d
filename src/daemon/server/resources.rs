//! Resources: acquire, release, convert, request, read/write, owners (lease
//! I/O, on the pool), the LVB, killpath and examine (memory only), and the
//! resource index commands.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::debug;

use super::{Conn, Next};
use crate::daemon::Daemon;
use crate::proto::request::Request;
use crate::proto::{self, Cmd, Header, SanlkRentry, SanlkResource, WireStruct};

/// The registered client a command acts for: this connection (data2 -1)
/// or the registered process whose pid is in data2.
pub(super) fn target(d: &Daemon, c: &Conn, h: &Header) -> Result<(usize, i32), i32> {
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

/// The 128-byte head of a resource (replies carry no disks).
fn res_head(r: &SanlkResource) -> Vec<u8> {
    let mut b = r.encode();
    b.truncate(SanlkResource::HEAD_SIZE);
    b[124..128].copy_from_slice(&(r.disks.len() as u32).to_ne_bytes());
    b
}

fn head(req: Result<Request, i32>) -> Result<SanlkResource, i32> {
    match req? {
        Request::ResourceHead(r) | Request::ResourceDisks(r) => Ok(r),
        _ => Err(-libc::EINVAL),
    }
}

/// Acquire and release, as tasks: the lease file is opened on the pool,
/// the Disk Paxos operation runs on the engine, and no thread waits for it.
pub(super) async fn apply_task(
    d: &Arc<Daemon>,
    c: &mut Conn,
    h: &Header,
    cmd: Cmd,
    req: Result<Request, i32>,
) -> Next {
    match cmd {
        Cmd::Acquire => {
            let rv = match req {
                Ok(Request::Acquire { resources, opts }) => match target(d, c, h) {
                    Ok((ci, pid)) => {
                        d.client_update(ci, |s| s.owner_name = opts.owner_name.to_string());
                        d.acquire_for(
                            crate::daemon::resource::Holder { ci, pid },
                            &resources,
                            h.cmd_flags,
                        )
                        .await
                    }
                    Err(e) => e,
                },
                Ok(_) => -libc::EINVAL,
                Err(e) => e,
            };
            c.reply(h, rv);
            if rv == -libc::E2BIG || rv == -libc::ERANGE || rv == -libc::ENOTCONN {
                return Next::Close;
            }
            Next::Keep
        }
        Cmd::Release => {
            // The client is looked up before any wait: the task holds no
            // borrow of the connection across one.
            let rv = match req {
                Err(e) => e,
                Ok(r) => match (r, target(d, c, h)) {
                    (
                        Request::ReleaseOrphans(_)
                        | Request::ReleaseRename(..)
                        | Request::Release(_),
                        Err(e),
                    ) => e,
                    (Request::ReleaseOrphans(res), Ok(_)) => d.release_orphans(&res).await,
                    (Request::ReleaseRename(old, new), Ok((ci, _))) => {
                        d.release_rename(ci, &old, &new).await
                    }
                    (Request::Release(names), Ok((ci, _))) => {
                        d.release_for(ci, names.as_deref()).await
                    }
                    _ => -libc::EINVAL,
                },
            };
            c.reply(h, rv);
            Next::Keep
        }
        _ => {
            c.reply(h, -libc::EINVAL);
            Next::Keep
        }
    }
}

pub(super) fn apply(
    d: &Arc<Daemon>,
    c: &mut Conn,
    h: &Header,
    cmd: Cmd,
    req: Result<Request, i32>,
) -> Next {
    match cmd {
        Cmd::Convert => {
            let rv = head(req)
                .and_then(|res| {
                    let (ci, _) = target(d, c, h)?;
                    Ok(d.convert(ci, &res, h.cmd_flags))
                })
                .unwrap_or_else(|e| e);
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::Killpath => {
            let rv = (|| match req? {
                Request::Killpath { path, args } => {
                    let (ci, _) = target(d, c, h)?;
                    let pid_flag = h.cmd_flags & proto::SANLK_KILLPATH_PID != 0;
                    d.client_update(ci, |s| {
                        s.killpath = (!path.is_empty()).then(|| (path.clone(), args.clone()));
                        s.killpath_pid = pid_flag;
                    });
                    Ok(0)
                }
                _ => Err(-libc::EINVAL),
            })()
            .unwrap_or_else(|e| e);
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::Request => {
            let rv = head(req)
                .and_then(|res| {
                    let sp = d
                        .find_active(&res.lockspace_name)
                        .filter(|s| !s.state.lock().space_dead())
                        .ok_or(-libc::ENOSPC)?;
                    let next = h.cmd_flags & proto::SANLK_REQUEST_NEXT_LVER != 0;
                    let owner =
                        crate::daemon::resource_ops::request(&res, h.data, next, sp.io_timeout)?;
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
        Cmd::ExamineResource => {
            if let Ok(res) = head(req)
                && let Some(sp) = d.find_active(&res.lockspace_name)
            {
                sp.examine.store(true, Ordering::Relaxed);
            }
            // sanlock replies 0 whatever it found.
            c.reply(h, 0);
            Next::Keep
        }
        Cmd::ReadResource => {
            let (rv, res) = match head(req) {
                Ok(res) => crate::daemon::resource_ops::read_resource(res, d.cfg.io_timeout),
                Err(e) => (e, SanlkResource::default()),
            };
            c.reply_listing(h, rv, 0, &res_head(&res));
            Next::Keep
        }
        Cmd::WriteResource => {
            let rv = head(req)
                .map(|res| {
                    crate::daemon::resource_ops::write_resource(
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
            let (rv, res, hosts) = match head(req) {
                Ok(res) => crate::daemon::resource_ops::read_resource_owners(res, d.cfg.io_timeout),
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
            let rv = match req {
                Ok(Request::SetLvb { res, data }) => d.set_lvb(&res, &data),
                Ok(_) => -libc::EINVAL,
                Err(e) => e,
            };
            c.reply(h, rv);
            if rv == -libc::E2BIG {
                return Next::Close;
            }
            Next::Keep
        }
        Cmd::GetLvb => {
            match head(req).and_then(|res| d.get_lvb(&res, h.data2 as usize)) {
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
            let rv = match req {
                Err(e) => e,
                Ok(Request::Rindex(ri)) if cmd == Cmd::FormatRindex => {
                    crate::daemon::rindex::format(d, &ri)
                }
                Ok(Request::Rindex(ri)) => crate::daemon::rindex::rebuild(d, &ri, h.cmd_flags),
                Ok(_) => -libc::EINVAL,
            };
            debug!("{cmd} done {rv}");
            c.reply(h, rv);
            Next::Keep
        }
        Cmd::UpdateRindex | Cmd::LookupRindex | Cmd::CreateResource | Cmd::DeleteResource => {
            use crate::daemon::rindex;
            let (rv, re_ret) = match req {
                Err(e) => (e, SanlkRentry::default()),
                Ok(Request::RindexEntry(ri, re)) => match cmd {
                    Cmd::LookupRindex => rindex::lookup(d, &ri, &re, h.cmd_flags),
                    Cmd::UpdateRindex => rindex::update(d, &ri, &re, h.cmd_flags),
                    // data = max_hosts (unused by sanlock), data2 = num_hosts.
                    Cmd::CreateResource => rindex::create(d, &ri, &re, h.data2),
                    _ => rindex::delete(d, &ri, &re),
                },
                Ok(_) => (-libc::EINVAL, SanlkRentry::default()),
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
            c.send(&r.encode());
            c.send(&re_ret.encode());
            Next::Keep
        }
        _ => {
            c.reply(h, -libc::EINVAL);
            Next::Close
        }
    }
}
