//! The daemon's main loop (sanlock's main_loop in main.c), a task on the
//! connection thread, which never waits for storage: a lockspace whose
//! I/O hangs cannot delay it (reading request records, the one thing it
//! does on storage, goes to the worker pool).
//! Every half second (200 ms while killing) it ticks each active
//! lockspace's core with the processes holding leases there: a lockspace
//! that cannot renew (or is being removed) has its holders killed by the
//! core's kill sequence ([`crate::recovery`]: SIGTERM or the killpath
//! during the grace, then SIGKILL), and once they are all gone it stops.
//! It also judges the hosts (for the log and history), and reads the
//! request records of our leases when another host asked for one of them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{info, warn};

use super::Daemon;
use super::core::lockspace::{Action, Event};
use super::lockspace::SpaceList;
use crate::recovery::{Holder, Signal};

pub async fn run(d: Arc<Daemon>) {
    while !d.shutting_down.load(Ordering::Relaxed) || !d.spaces.lock().is_empty() {
        d.spaces.lock().retain(|sp| {
            let gone = sp.removed.load(Ordering::Relaxed);
            if gone {
                info!("s{} lockspace removed", sp.space_id);
            }
            !gone
        });
        let spaces = d.spaces.lock().clone();
        let mut fast = false;
        for sp in spaces {
            if Daemon::list_of(&sp) != SpaceList::Active {
                continue;
            }
            sp.warn_tick();
            if sp.examine.swap(false, Ordering::Relaxed) {
                let (d, name) = (d.clone(), sp.name);
                tokio::task::spawn_blocking(move || {
                    for (pid, force_mode, what) in d.requested_holders(&name) {
                        d.do_request(pid, force_mode, &what);
                    }
                });
            }
            let holders = holders(&d, sp.space_id);
            let any = !holders.is_empty();
            for a in sp.step(Event::Tick { holders }) {
                act(&d, &sp, a);
            }
            sp.judge_hosts();
            fast |= sp.state.lock().space_dead() && any;
        }
        super::log::tick();
        super::memory::trim_if_due();
        tokio::time::sleep(Duration::from_millis(if fast { 200 } else { 500 })).await;
    }
}

/// The holders of a lockspace's leases, with what the kill needs to know.
fn holders(d: &Daemon, space_id: u32) -> Vec<Holder> {
    let pids = d.holder_pids(space_id);
    let clients = d.clients.lock();
    pids.iter()
        .map(|&(ci, pid)| {
            let slot = clients.get(ci).and_then(|s| s.as_ref());
            let restricted = slot.map(|s| s.restricted).unwrap_or(0);
            Holder {
                pid: pid as u32,
                killpath: slot.is_some_and(|s| s.killpath.is_some()),
                restrict_sigkill: restricted & crate::proto::SANLK_RESTRICT_SIGKILL != 0,
                restrict_sigterm: restricted & crate::proto::SANLK_RESTRICT_SIGTERM != 0,
            }
        })
        .collect()
}

/// Performs what the kill sequence asks of the daemon.
fn act(d: &Arc<Daemon>, sp: &Arc<super::lockspace::Space>, a: Action) {
    match a {
        Action::Signal { pid, signal } => {
            let pid = pid as i32;
            match signal {
                Signal::RunKillpath => {
                    let slot = d
                        .clients
                        .lock()
                        .iter()
                        .flatten()
                        .find(|s| s.registered && s.pid == pid)
                        .cloned();
                    if let Some((path, args)) = slot.as_ref().and_then(|s| s.killpath.clone()) {
                        warn!(space = %sp.name, "kill pid {pid}: running killpath {path} {args}");
                        let with_pid = slot.is_some_and(|s| s.killpath_pid);
                        d.kills.ran_killpath();
                        super::resource::run_killpath(&path, &args, with_pid.then_some(pid));
                    }
                }
                Signal::Term | Signal::Kill => {
                    let sig = if signal == Signal::Term {
                        libc::SIGTERM
                    } else {
                        libc::SIGKILL
                    };
                    warn!(space = %sp.name, "kill pid {pid} sig {sig}");
                    d.kills.signal(sig);
                    // SAFETY: kill(2) on a registered lease holder's pid.
                    unsafe { libc::kill(pid, sig) };
                }
            }
        }
        Action::AllClear => {
            // The core stopped itself (it releases the host_id if the
            // last renewal succeeded); once that is over, drop it.
            let d = d.clone();
            let me = sp.clone();
            sp.stop_then(move || d.spaces.lock().retain(|s| !Arc::ptr_eq(s, &me)));
        }
        other => warn!(space = %sp.name, "main loop: unexpected {other:?}"),
    }
}
