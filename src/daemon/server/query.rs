//! What the daemon knows, read from its memory: status, host_status,
//! renewal, log_dump, get_lockspaces, get_hosts, inquire, and hactl's
//! history. Each reply is built whole and the connection closed after it,
//! as sanlock does (inquire keeps it: it is a registered client's).

use std::sync::Arc;

use super::{Conn, Next};
use crate::daemon::Daemon;
use crate::daemon::lockspace::SpaceList;
use crate::ondisk::Name;
use crate::proto::request::Request;
use crate::proto::{
    self, Cmd, Header, SanlkHost, SanlkLockspace, SanlkPath, SanlkState, WireStruct,
};
use crate::timeouts::monotime;

pub(super) fn apply(
    d: &Arc<Daemon>,
    c: &mut Conn,
    h: &Header,
    cmd: Cmd,
    req: Result<Request, i32>,
) -> Next {
    let ls = match req {
        Ok(Request::Lockspace(ls)) => Ok(ls),
        Ok(_) => Err(-libc::EINVAL),
        Err(e) => Err(e),
    };
    match cmd {
        Cmd::Status => {
            c.set_owner(d, "status");
            send_status(d, c, h);
        }
        Cmd::HostStatus => {
            c.set_owner(d, "host_status");
            match ls {
                Ok(ls) => send_host_status(d, c, h, &ls.name),
                Err(e) => {
                    c.reply(h, e);
                }
            }
        }
        Cmd::Renewal => {
            c.set_owner(d, "renewal");
            send_renewal(d, c, h, ls);
        }
        Cmd::LogDump => {
            c.set_owner(d, "log_dump");
            let dump = match d.log.lock() {
                Ok(l) => l.dump(),
                // A thread that panicked while logging left the ring as it
                // was: still worth dumping.
                Err(p) => p.into_inner().dump(),
            };
            let r = Header {
                version: proto::SM_PROTO,
                data: dump.len() as u32,
                ..*h
            };
            c.send(&r.encode());
            c.send(&dump);
        }
        Cmd::GetLockspaces => {
            c.set_owner(d, "get_lockspaces");
            get_lockspaces(d, c, h);
        }
        Cmd::GetHosts => {
            c.set_owner(d, "get_hosts");
            match ls {
                Ok(ls) => {
                    let (rv, hosts) = get_hosts(d, &ls.name, ls.host_id);
                    let body: Vec<u8> = hosts.iter().flat_map(|x| x.encode()).collect();
                    c.reply_listing(h, rv, hosts.len() as u32, &body);
                }
                Err(e) => {
                    c.reply(h, e);
                }
            }
        }
        Cmd::Inquire => {
            match super::resources::target(d, c, h) {
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
            return Next::Keep;
        }
        _ => {
            c.reply(h, -libc::EINVAL);
        }
    }
    Next::Close
}

/// sanlock sends at most 1 MiB of lockspaces, says -ENOSPC if there were
/// more, and counts them all in data2.
fn get_lockspaces(d: &Daemon, c: &mut Conn, h: &Header) {
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
                let mut ls = SanlkLockspace::new(sp.name, sp.host_id, path_of(&sp.path), sp.offset);
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
/// how many of its I/Os timed out and are still held by the kernel, how
/// many it has performed, and how many acquires started warm (a lease this
/// daemon freed last, its area read replaced by a leader-sector read).
fn daemon_str(d: &Daemon) -> String {
    let c = &d.cfg;
    let io = crate::io::engine::get();
    format!(
        "our_host_name={} use_watchdog={} high_priority={} mlock_level={} quiet_fail={} debug_renew={} debug_clients={} \
         debug_cmds=0x{:x} renewal_history_size={} gid={} uid={} sh_retries={} max_sectors_kb_ignore={} \
         max_sectors_kb_align={} max_sectors_kb_num={} max_worker_threads={} write_init_io_timeout={} use_aio={} \
         kill_grace_seconds={} helper_pid=-1 helper_kill_fd=-1 helper_full_count=0 helper_last_status=0 monotime={} \
         version_str=3.8.5 version_num=3.8.5 version_hex={:08x} smproto_hex={:08x} \
         io_engine={} io_abandoned={} io_ops={} io_warm_acquires={}",
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
            .load(std::sync::atomic::Ordering::Relaxed),
        d.warm_acquires.load(std::sync::atomic::Ordering::Relaxed),
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
pub(super) fn send_history(d: &Daemon, c: &mut Conn, h: &Header, ls: Result<SanlkLockspace, i32>) {
    c.set_owner(d, "history");
    let ls = match ls {
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
    let body = match serde_json::to_vec(&sp.history()) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("history of {}: {e}", ls.name);
            c.reply_listing(h, -libc::EINVAL, 0, &[]);
            return;
        }
    };
    c.reply_listing(h, 0, body.len() as u32, &body);
}

fn send_renewal(d: &Daemon, c: &mut Conn, h: &Header, ls: Result<SanlkLockspace, i32>) {
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
    let ls = match ls {
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
