//! Resource leases held for registered client processes: acquire runs the
//! Disk Paxos machine ([`crate::paxos`]) against the lease area, judging a
//! current owner by our lockspace's view of it and by its delta lease on
//! disk; release marks our dblock released and frees the leader; a client
//! whose registered connection closes loses all its leases.
//!
//! Exclusive leases only for now; shared leases, convert, request and the
//! LVB are refused with -EOPNOTSUPP by the server.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::Daemon;
use super::lockspace::Space;
use crate::geometry::Geometry;
use crate::io::{Area, Disk};
use crate::ondisk::{LeaderRecord, PaxosDblock};
use crate::paxos::{self, PaxosAcquire, PaxosParams};
use crate::proto::{self, SanlkResource};
use crate::rv;
use crate::timeouts::monotime;

/// A lease held for a client.
#[derive(Clone, Debug)]
pub struct Held {
    /// The client slot (registered connection) holding it.
    pub ci: usize,
    pub pid: i32,
    pub res: SanlkResource,
    pub space_id: u32,
    pub leader: LeaderRecord,
    pub dblock: PaxosDblock,
    pub geometry: Geometry,
    pub host_id: u64,
    pub host_generation: u64,
}

fn disk_path(res: &SanlkResource) -> Result<(String, u64), i32> {
    let d = res.disks.first().ok_or(-libc::ERANGE)?;
    Ok((super::path_string(&d.path)?, d.offset))
}

/// Runs one exclusive acquire for `sp`'s host.
pub fn acquire(
    sp: &Arc<Space>,
    res: &SanlkResource,
    cmd_flags: u32,
) -> Result<(LeaderRecord, PaxosDblock, Geometry), i32> {
    let (path, offset) = disk_path(res)?;
    let disk = Disk::open(path.as_ref()).map_err(|e| e.sanlk_rv())?;
    let t = Duration::from_secs(sp.io_timeout);
    // The lease's own geometry, from its leader.
    let g = crate::direct::read_leader_sizes(&disk, offset, t).map_err(|e| match e {
        crate::direct::DirectError::NoSizes { .. } => rv::SANLK_LEADER_MAGIC,
        other => other.sanlk_rv(),
    })?;
    let ss = g.sector_size as usize;
    let area = Area::new(&disk, offset, g.align_size as u64, t).map_err(|e| e.sanlk_rv())?;

    let (host_id, host_generation, ls_ss) = {
        let st = sp.state.lock().unwrap();
        (sp.host_id, st.host_generation, st.sector_size as usize)
    };
    let ls_disk = Disk::open(&sp.path).map_err(|_| rv::SANLK_ACQUIRE_IDDISK)?;
    let mut flags = 0;
    if cmd_flags & proto::SANLK_ACQUIRE_OWNER_NOWAIT != 0 {
        flags |= paxos::PAXOS_ACQUIRE_OWNER_NOWAIT;
    }
    let m = PaxosAcquire::new(PaxosParams {
        host_id,
        host_generation,
        sector_size: ss,
        flags,
        acquire_lver: if res.flags & proto::SANLK_RES_LVER != 0 {
            res.lver
        } else {
            0
        },
        new_num_hosts: if res.flags & proto::SANLK_RES_NUM_HOSTS != 0 {
            res.data32 as u64
        } else {
            0
        },
        watchdog_fire_timeout: sp.watchdog_fire_timeout,
        io_timeout: sp.io_timeout,
        seed: monotime() ^ (host_id << 40) ^ std::process::id() as u64,
        names: Some((res.lockspace_name, res.name)),
    });
    let owners = SpaceOwners {
        sp,
        ls_disk,
        ls_ss,
        timeout: t,
    };
    crate::direct::drive_paxos_acquire(&area, m, g.align_size as usize, &owners, |d| {
        std::thread::sleep(d);
        !sp.stop.load(std::sync::atomic::Ordering::Relaxed)
    })
    .map(|(l, d)| (l, d, g))
}

/// The owner of a lease as our lockspace sees it, and its delta lease.
struct SpaceOwners<'a> {
    sp: &'a Arc<Space>,
    ls_disk: Disk,
    ls_ss: usize,
    timeout: Duration,
}

impl crate::direct::OwnerView for SpaceOwners<'_> {
    fn host_info(&self, owner_id: u64) -> Result<Option<crate::hosts::HostStatus>, i32> {
        let st = self.sp.state.lock().unwrap();
        Ok(st
            .hosts
            .hosts
            .get((owner_id as usize).wrapping_sub(1))
            .cloned())
    }

    fn owner_delta(&self, owner_id: u64) -> Result<LeaderRecord, i32> {
        let at = self.sp.offset + (owner_id - 1) * self.ls_ss as u64;
        let b = self
            .ls_disk
            .read(at, self.ls_ss, self.timeout)
            .map_err(|e| e.sanlk_rv())?;
        crate::delta::verify_sector(&b, &self.sp.name)
    }
}

/// Releases a held lease: our dblock marked released, then the leader
/// freed if we wrote it (`release_token` + `paxos_lease_release`).
pub fn release(h: &Held, io_timeout: u64) -> i32 {
    let Ok((path, offset)) = disk_path(&h.res) else {
        return -libc::EINVAL;
    };
    let run = || -> Result<(), i32> {
        let disk = Disk::open(path.as_ref()).map_err(|e| e.sanlk_rv())?;
        let ss = h.geometry.sector_size as usize;
        let area = Area::new(
            &disk,
            offset,
            h.geometry.align_size as u64,
            Duration::from_secs(io_timeout),
        )
        .map_err(|e| e.sanlk_rv())?;
        let rel = paxos::released_dblock_sector(&h.dblock, ss);
        let _ = area.write((1 + h.host_id) * ss as u64, &rel);
        let now_leader =
            LeaderRecord::decode(&area.read(0, ss).map_err(|e| e.sanlk_rv())?).expect("sector");
        if let Some((_, sector)) = paxos::release_leader(
            &now_leader,
            &h.leader,
            h.host_id,
            h.host_generation,
            monotime(),
            ss,
        )? {
            area.write(0, &sector).map_err(|e| e.sanlk_rv())?;
        }
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            warn!(
                "release of {}:{} failed: {}",
                h.res.lockspace_name,
                h.res.name,
                rv::describe(e)
            );
            e
        }
    }
}

impl Daemon {
    /// Acquires `resources` for client slot `ci` (all or none).
    pub fn acquire_for(
        &self,
        ci: usize,
        pid: i32,
        resources: &[SanlkResource],
        cmd_flags: u32,
    ) -> i32 {
        let mut got: Vec<Held> = Vec::new();
        let mut result = 0;
        for res in resources {
            if res.disks.is_empty() || res.disks.len() > proto::SANLK_MAX_DISKS {
                result = -libc::ERANGE;
                break;
            }
            if res.flags & proto::SANLK_RES_SHARED != 0 || res.disks.len() > 1 {
                // Shared leases and multi-disk leases come with the rest of Disk Paxos.
                result = -libc::EOPNOTSUPP;
                break;
            }
            let Some(sp) = self
                .find_active(&res.lockspace_name)
                .filter(|s| !s.state.lock().unwrap().space_dead)
            else {
                result = -libc::ENOSPC;
                break;
            };
            let dup = self.held.lock().unwrap().iter().chain(got.iter()).any(|h| {
                h.res.lockspace_name.same_as(&res.lockspace_name) && h.res.name.same_as(&res.name)
            });
            if dup {
                result = -libc::EEXIST;
                break;
            }
            match acquire(&sp, res, cmd_flags) {
                Ok((leader, dblock, geometry)) => {
                    let mut r = res.clone();
                    r.lver = leader.lver;
                    let host_generation = sp.state.lock().unwrap().host_generation;
                    info!(
                        "r {}:{} acquired lver {} for pid {pid}",
                        res.lockspace_name, res.name, leader.lver
                    );
                    got.push(Held {
                        ci,
                        pid,
                        res: r,
                        space_id: sp.space_id,
                        leader,
                        dblock,
                        geometry,
                        host_id: sp.host_id,
                        host_generation,
                    });
                }
                Err(e) => {
                    info!(
                        "r {}:{} acquire failed: {} ({e})",
                        res.lockspace_name,
                        res.name,
                        rv::describe(e)
                    );
                    result = e;
                    break;
                }
            }
        }
        if result != 0 {
            for h in &got {
                release(h, self.cfg.io_timeout);
            }
            return result;
        }
        self.held.lock().unwrap().extend(got);
        0
    }

    /// Releases the named leases (or all with `names` None) of client `ci`.
    pub fn release_for(&self, ci: usize, names: Option<&[SanlkResource]>) -> i32 {
        let mine: Vec<Held> = {
            let mut held = self.held.lock().unwrap();
            let (take, keep): (Vec<Held>, Vec<Held>) = held.drain(..).partition(|h| {
                h.ci == ci
                    && names.is_none_or(|ns| {
                        ns.iter().any(|n| {
                            n.lockspace_name.0 == h.res.lockspace_name.0 && n.name.0 == h.res.name.0
                        })
                    })
            });
            *held = keep;
            take
        };
        // A name the client does not hold is -1, as sanlock's release.
        let mut result = if names.is_some_and(|ns| mine.len() < ns.len()) {
            -1
        } else {
            0
        };
        for h in &mine {
            let io = self
                .find_space_id(h.space_id)
                .map(|s| s.io_timeout)
                .unwrap_or(self.cfg.io_timeout);
            let r = release(h, io);
            if r < 0 {
                result = r;
            }
        }
        result
    }

    fn find_space_id(&self, id: u32) -> Option<Arc<Space>> {
        self.spaces
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.space_id == id)
            .cloned()
    }

    /// The leases of client `ci` as sanlock's state string.
    pub fn inquire(&self, ci: usize) -> (usize, String) {
        let held = self.held.lock().unwrap();
        let strs: Vec<String> = held
            .iter()
            .filter(|h| h.ci == ci)
            .map(|h| res_string(&h.res))
            .collect();
        (strs.len(), strs.join(" "))
    }
}

/// `sanlock_res_to_str`: `LS:RES:path:off[:path:off...]:lver|SH`.
pub fn res_string(r: &SanlkResource) -> String {
    let mut s = format!("{}:{}", r.lockspace_name, r.name);
    for d in &r.disks {
        s.push_str(&format!(
            ":{}:{}",
            crate::lease_str::escape_path(&d.path.to_string_lossy()),
            d.offset
        ));
    }
    if r.flags & proto::SANLK_RES_SHARED != 0 {
        s.push_str(":SH");
    } else {
        s.push_str(&format!(":{}", r.lver));
    }
    s
}
