//! The daemon's main loop (sanlock's main_loop in main.c), apart from the
//! lockspace threads so that a lockspace whose I/O hangs cannot delay it:
//! - a lockspace that cannot renew (or is being removed) has its lease
//!   holders killed by the [`crate::recovery`] machine: SIGTERM or the
//!   killpath during the grace, then SIGKILL; once they are all gone the
//!   lockspace is stopped. Every holder is gone before another host may
//!   call this one DEAD (the watchdog backs this up where there is one).
//! - requests from other hosts (our bit in their delta leases) and
//!   `examine` commands make it read the request records of our leases.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{error, info, warn};

use super::Daemon;
use super::lockspace::SpaceList;
use crate::recovery::{Action, Holder, Recovery, RecoveryConfig, Signal};
use crate::timeouts::monotime;

pub fn run(d: Arc<Daemon>) {
    let mut rec: HashMap<u32, Recovery> = HashMap::new();
    while !d.shutting_down.load(Ordering::Relaxed) || !d.spaces.lock().unwrap().is_empty() {
        let spaces = d.spaces.lock().unwrap().clone();
        rec.retain(|id, _| spaces.iter().any(|s| s.space_id == *id));
        let mut fast = false;
        for sp in spaces {
            let (list, last_success, corrupt) = {
                let st = sp.state.lock().unwrap();
                (st.list, st.renewal_last_success, st.corrupt_result != 0)
            };
            if list != SpaceList::Active {
                continue;
            }
            sp.warn_tick();
            if sp.examine.swap(false, Ordering::Relaxed) {
                for (pid, force_mode, what) in d.requested_holders(&sp.name) {
                    d.do_request(pid, force_mode, &what);
                }
            }
            let r = rec.entry(sp.space_id).or_insert_with(|| {
                Recovery::new(RecoveryConfig::new(
                    sp.io_timeout,
                    sp.watchdog_fire_timeout,
                    Some(d.cfg.kill_grace_seconds),
                ))
            });
            let holders = holders(&d, sp.space_id);
            let force = sp.external_remove.load(Ordering::Relaxed);
            for a in r.check(monotime(), last_success, corrupt, force, &holders) {
                act(&d, &sp, a, force);
            }
            fast |= r.space_dead() && !holders.is_empty();
        }
        super::log::tick();
        super::memory::trim_if_due();
        std::thread::sleep(Duration::from_millis(if fast { 200 } else { 500 }));
    }
}

/// The holders of a lockspace's leases, with what the kill needs to know.
fn holders(d: &Daemon, space_id: u32) -> Vec<Holder> {
    let pids = d.holder_pids(space_id);
    let clients = d.clients.lock().unwrap();
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

fn act(d: &Arc<Daemon>, sp: &Arc<super::lockspace::Space>, a: Action, removing: bool) {
    match a {
        Action::LockspaceFailed { corrupt, gap } => {
            if removing {
                info!(space = %sp.name, "lockspace removed: killing its lease holders");
            } else {
                error!(space = %sp.name, "lockspace failed (renewal gap {gap}s, corrupt {corrupt}): killing its lease holders");
            }
            let mut st = sp.state.lock().unwrap();
            st.space_dead = true;
            st.renew_fail |= !removing;
        }
        Action::Signal { pid, signal } => {
            let pid = pid as i32;
            match signal {
                Signal::RunKillpath => {
                    let slot = d
                        .clients
                        .lock()
                        .unwrap()
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
        Action::Stuck { pid } => {
            error!(space = %sp.name, "pid {pid} survives every kill: only the watchdog can stop it");
        }
        Action::AllClear => {
            if removing {
                return; // rem_lockspace's remover stops and drops it
            }
            warn!(space = %sp.name, "all lease holders gone: lockspace stopped");
            let d = d.clone();
            let sp = sp.clone();
            std::thread::spawn(move || {
                sp.stop_and_join();
                d.spaces.lock().unwrap().retain(|s| !Arc::ptr_eq(s, &sp));
            });
        }
    }
}
