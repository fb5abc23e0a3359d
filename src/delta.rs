//! Delta leases: how a host acquires, renews and releases its host_id in a
//! lockspace (sanlock's `delta_lease.c`), as a state machine with no I/O or
//! clock inside. The driver (the daemon, `hactl direct`, or a simulation)
//! performs each [`Step`] and feeds the result back.
//!
//! Acquire: read our slot; if another live owner may hold it, watch it for
//! host_dead_seconds and take it only if nothing changed; write our lease
//! (generation + 1); wait 2 * io_timeout; read it back and give up if
//! anyone else wrote meanwhile.

use crate::ondisk::{
    self, DecodeError, HOSTID_BITMAP_OFFSET, HOSTID_BITMAP_SIZE, LeaderRecord, NAME_ID_SIZE, Name,
};
use crate::rv;
use crate::timeouts::Timeouts;

/// Who is acquiring what.
#[derive(Clone, Debug)]
pub struct DeltaParams {
    pub space_name: Name,
    pub host_id: u64,
    /// Written into the lease's resource_name (at most 47 bytes are used).
    pub our_name: Name,
    pub io_timeout: u64,
    pub sector_size: usize,
    pub watchdog_fire_timeout: u64,
}

/// What the driver must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read our host_id's sector.
    Read,
    /// Write this sector to our host_id's slot.
    Write(Vec<u8>),
    /// Wait this many seconds (the driver may abort the acquire meanwhile).
    Sleep(u64),
    /// Finished: the lease we hold, or sanlock's error number.
    Done(Result<LeaderRecord, i32>),
}

/// What happened to the last step.
#[derive(Clone, Debug)]
pub enum Input {
    Start,
    ReadDone(Result<Vec<u8>, i32>),
    WriteDone(Result<(), i32>),
    Slept,
}

#[derive(Clone, Debug)]
enum Phase {
    FirstRead,
    Watching { seen: Vec<u8> },
    RereadAfterWatch { seen: Vec<u8> },
    Writing { wrote: Vec<u8> },
    Settling { wrote: Vec<u8> },
    Confirming { wrote: Vec<u8> },
    Done,
}

/// One host_id acquisition in progress.
#[derive(Clone, Debug)]
pub struct DeltaAcquire {
    p: DeltaParams,
    phase: Phase,
    /// The io_timeout the previous owner wrote: it sets our waits.
    other_io_timeout: u64,
    /// The lease we wrote (valid once Writing).
    new_leader: LeaderRecord,
    pub now: u64,
}

/// Checks a delta lease sector for our lockspace (`verify_leader`).
pub fn verify_sector(sector: &[u8], space_name: &Name) -> Result<LeaderRecord, i32> {
    let lr = LeaderRecord::decode(sector).map_err(|e| e.sanlk_rv())?;
    match lr.verify_delta(Some(space_name)) {
        // sanlock's delta verify does not look at the sector size field.
        Ok(()) | Err(DecodeError::WrongSectorSize { .. }) => Ok(lr),
        Err(e) => Err(e.sanlk_rv()),
    }
}

/// A read's result, verified as our lockspace's delta lease.
fn read_verified(
    r: Result<Vec<u8>, i32>,
    space_name: &Name,
) -> Result<(Vec<u8>, LeaderRecord), i32> {
    let sector = r?;
    let lr = verify_sector(&sector, space_name)?;
    Ok((sector, lr))
}

/// A sector holding `lr` (checksummed), zeros, and `bitmap` at offset 256.
pub fn lease_sector(
    lr: &mut LeaderRecord,
    sector_size: usize,
    bitmap: Option<&[u8; HOSTID_BITMAP_SIZE]>,
) -> Vec<u8> {
    let mut s = vec![0u8; sector_size];
    let b = lr.seal();
    s[..b.len()].copy_from_slice(&b);
    if let Some(bm) = bitmap {
        s[HOSTID_BITMAP_OFFSET..HOSTID_BITMAP_OFFSET + HOSTID_BITMAP_SIZE].copy_from_slice(bm);
    }
    s
}

/// `snprintf(resource_name, 48, "%s", name)`: at most 47 bytes and a NUL;
/// the bytes after the NUL keep what the field held.
fn put_host_name(field: &mut Name, name: &Name) {
    let n = name.bytes();
    let len = n.len().min(NAME_ID_SIZE - 1);
    field.0[..len].copy_from_slice(&n[..len]);
    field.0[len] = 0;
}

impl DeltaAcquire {
    pub fn new(p: DeltaParams, now: u64) -> Self {
        let io = p.io_timeout;
        DeltaAcquire {
            p,
            phase: Phase::FirstRead,
            other_io_timeout: io,
            new_leader: LeaderRecord::default(),
            now,
        }
    }

    fn finish(&mut self, r: Result<LeaderRecord, i32>) -> Step {
        self.phase = Phase::Done;
        Step::Done(r)
    }

    fn write_new(&mut self, mut lr: LeaderRecord) -> Step {
        lr.timestamp = self.now;
        lr.io_timeout = (self.p.io_timeout & 0xFF) as u16;
        lr.owner_id = self.p.host_id;
        lr.owner_generation += 1;
        put_host_name(&mut lr.resource_name, &self.p.our_name);
        let sector = lease_sector(&mut lr, self.p.sector_size, None);
        self.new_leader = lr;
        self.phase = Phase::Writing {
            wrote: sector[..ondisk::leader::LEADER_SIZE].to_vec(),
        };
        Step::Write(sector)
    }

    /// Advances the acquisition; `now` is the driver's monotonic seconds.
    pub fn step(&mut self, now: u64, input: Input) -> Step {
        self.now = now;
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        match (phase, input) {
            (Phase::FirstRead, Input::Start) => {
                self.phase = Phase::FirstRead;
                Step::Read
            }
            (Phase::FirstRead, Input::ReadDone(r)) => {
                let (sector, lr) = match read_verified(r, &self.p.space_name) {
                    Ok(x) => x,
                    Err(e) => return self.finish(Err(e)),
                };
                if lr.io_timeout != 0 {
                    self.other_io_timeout = lr.io_timeout as u64;
                }
                if lr.timestamp == 0 || lr.resource_name.bytes() == self.p.our_name.bytes() {
                    return self.write_new(lr);
                }
                // Held (or left behind) by another name: it is ours only if
                // nothing changes for as long as a live owner would need to
                // renew and its watchdog to fire.
                let t = Timeouts {
                    io_timeout: self.other_io_timeout,
                    watchdog_fire_timeout: self.p.watchdog_fire_timeout,
                };
                self.phase = Phase::Watching {
                    seen: sector[..ondisk::leader::LEADER_SIZE].to_vec(),
                };
                Step::Sleep(t.delta_acquire_held_delay())
            }
            (Phase::Watching { seen }, Input::Slept) => {
                self.phase = Phase::RereadAfterWatch { seen };
                Step::Read
            }
            (Phase::RereadAfterWatch { seen }, Input::ReadDone(r)) => {
                let (sector, lr) = match read_verified(r, &self.p.space_name) {
                    Ok(x) => x,
                    Err(e) => return self.finish(Err(e)),
                };
                if sector[..ondisk::leader::LEADER_SIZE] == seen[..] || lr.timestamp == 0 {
                    self.write_new(lr)
                } else {
                    self.finish(Err(rv::SANLK_HOSTID_BUSY))
                }
            }
            (Phase::Writing { wrote }, Input::WriteDone(r)) => {
                if let Err(e) = r {
                    return self.finish(Err(e));
                }
                self.phase = Phase::Settling { wrote };
                Step::Sleep(Timeouts::new(self.other_io_timeout).delta_short_delay())
            }
            (Phase::Settling { wrote }, Input::Slept) => {
                self.phase = Phase::Confirming { wrote };
                Step::Read
            }
            (Phase::Confirming { wrote }, Input::ReadDone(r)) => {
                let (sector, lr) = match read_verified(r, &self.p.space_name) {
                    Ok(x) => x,
                    Err(e) => return self.finish(Err(e)),
                };
                if sector[..ondisk::leader::LEADER_SIZE] != wrote[..] {
                    // Someone else wrote our slot while we waited.
                    return self.finish(Err(rv::SANLK_HOSTID_BUSY));
                }
                self.finish(Ok(lr))
            }
            (phase, input) => {
                self.phase = phase;
                panic!(
                    "delta acquire: input {input:?} does not fit phase {:?}",
                    self.phase
                )
            }
        }
    }
}

/// One renewal (`delta_lease_renew`), from the whole lockspace area as just
/// read. Returns the new lease and the sector to write, or sanlock's error.
/// `extra` is the host event (write_id, write_generation, write_timestamp).
#[allow(clippy::too_many_arguments)]
pub fn renew(
    p: &DeltaParams,
    last: &LeaderRecord,
    prev_ok: bool,
    area: &[u8],
    now: u64,
    extra: (u64, u64, u64),
    bitmap: &[u8; HOSTID_BITMAP_SIZE],
) -> Result<(LeaderRecord, Vec<u8>), i32> {
    // The slot is the one the last lease names as its owner, as sanlock
    // does: a lease that was never acquired (owner 0) cannot be renewed.
    let at = (last.owner_id as usize)
        .checked_sub(1)
        .ok_or(-libc::EINVAL)?
        * p.sector_size;
    let sector = area.get(at..at + p.sector_size).ok_or(-libc::EINVAL)?;
    let mut lr = verify_sector(sector, &p.space_name)?;
    if lr.owner_id != last.owner_id
        || lr.owner_generation != last.owner_generation
        || lr.resource_name.0 != last.resource_name.0
    {
        return Err(rv::SANLK_RENEW_OWNER);
    }
    if prev_ok && sector[..ondisk::leader::LEADER_SIZE] != last.encode()[..] {
        return Err(rv::SANLK_RENEW_DIFF);
    }
    lr.io_timeout = (p.io_timeout & 0xFF) as u16;
    lr.timestamp = now;
    (lr.write_id, lr.write_generation, lr.write_timestamp) = extra;
    let s = lease_sector(&mut lr, p.sector_size, Some(bitmap));
    Ok((lr, s))
}

/// The sector that releases our host_id: the last lease with timestamp 0.
pub fn release_sector(last: &LeaderRecord, sector_size: usize) -> (LeaderRecord, Vec<u8>) {
    let mut lr = *last;
    lr.timestamp = 0;
    let s = lease_sector(&mut lr, sector_size, None);
    (lr, s)
}

/// sanlock's default host name: a random UUID, a dot, and as much of the
/// node name as fits in 48 bytes.
pub fn default_host_name() -> Name {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap_or_default();
    let node = nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut s = format!("{}.", uuid.trim()).into_bytes();
    s.truncate(37);
    let room = NAME_ID_SIZE - s.len();
    s.extend(node.bytes().take(room));
    Name::from_bytes(&s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(host_id: u64, name: &str) -> DeltaParams {
        DeltaParams {
            space_name: Name::new("LS").unwrap(),
            host_id,
            our_name: Name::new(name).unwrap(),
            io_timeout: 1,
            sector_size: 512,
            watchdog_fire_timeout: 60,
        }
    }

    fn fresh_sector() -> Vec<u8> {
        let mut lr = LeaderRecord {
            magic: ondisk::DELTA_DISK_MAGIC,
            version: ondisk::DELTA_DISK_VERSION_MAJOR | ondisk::DELTA_DISK_VERSION_MINOR,
            flags: 0x10,
            sector_size: 512,
            max_hosts: 1,
            io_timeout: 1,
            space_name: Name::new("LS").unwrap(),
            ..Default::default()
        };
        lease_sector(&mut lr, 512, None)
    }

    /// Drives an acquire against one in-memory slot; `meddle` may change the
    /// slot while the acquirer sleeps.
    fn drive(
        p: DeltaParams,
        slot: &mut Vec<u8>,
        mut meddle: impl FnMut(&mut Vec<u8>),
    ) -> (Result<LeaderRecord, i32>, u64) {
        let mut now = 1000;
        let mut a = DeltaAcquire::new(p, now);
        let mut step = a.step(now, Input::Start);
        loop {
            step = match step {
                Step::Read => a.step(now, Input::ReadDone(Ok(slot.clone()))),
                Step::Write(s) => {
                    *slot = s;
                    a.step(now, Input::WriteDone(Ok(())))
                }
                Step::Sleep(d) => {
                    now += d;
                    meddle(slot);
                    a.step(now, Input::Slept)
                }
                Step::Done(r) => return (r, now - 1000),
            }
        }
    }

    #[test]
    fn free_slot_is_acquired_after_the_short_delay() {
        let mut slot = fresh_sector();
        let (r, waited) = drive(params(1, "host-a"), &mut slot, |_| {});
        let lr = r.unwrap();
        assert_eq!(
            (lr.owner_id, lr.owner_generation, lr.timestamp),
            (1, 1, 1000)
        );
        assert_eq!(lr.resource_name.to_string(), "host-a");
        assert_eq!(waited, 2, "2 * io_timeout");
    }

    #[test]
    fn held_slot_is_taken_only_after_host_dead_seconds_with_generation_plus_one() {
        let mut slot = fresh_sector();
        drive(params(1, "host-a"), &mut slot, |_| {}).0.unwrap();
        let (r, waited) = drive(params(1, "host-b"), &mut slot, |_| {});
        let lr = r.unwrap();
        assert_eq!(lr.owner_generation, 2);
        assert_eq!(
            waited,
            68 + 2,
            "8 * io_timeout + watchdog, then 2 * io_timeout"
        );
    }

    #[test]
    fn live_owner_keeps_its_host_id() {
        let mut slot = fresh_sector();
        let owner = drive(params(1, "host-a"), &mut slot, |_| {}).0.unwrap();
        // the owner renews while host-b watches
        let p = params(1, "host-a");
        let (r, _) = drive(params(1, "host-b"), &mut slot, |s| {
            let (_, sec) = renew(&p, &owner, true, s, 2000, (0, 0, 0), &[0; 256]).unwrap();
            *s = sec;
        });
        assert_eq!(r.unwrap_err(), rv::SANLK_HOSTID_BUSY);
    }

    #[test]
    fn concurrent_writer_during_settle_makes_acquire_fail() {
        let mut slot = fresh_sector();
        let mut first = true;
        let (r, _) = drive(params(1, "host-a"), &mut slot, |s| {
            if first {
                first = false;
                let mut lr = LeaderRecord::decode(s).unwrap();
                lr.resource_name = Name::new("host-b").unwrap();
                *s = lease_sector(&mut lr, 512, None);
            }
        });
        assert_eq!(r.unwrap_err(), rv::SANLK_HOSTID_BUSY);
    }

    #[test]
    fn renewal_detects_a_stolen_lease_and_release_frees_it() {
        let mut slot = fresh_sector();
        let p = params(1, "host-a");
        let lr = drive(p.clone(), &mut slot, |_| {}).0.unwrap();
        let (lr2, sec) = renew(&p, &lr, true, &slot, 1010, (0, 0, 0), &[0; 256]).unwrap();
        assert_eq!(lr2.timestamp, 1010);
        slot = sec;
        let mut thief = lr2;
        thief.owner_generation += 1;
        let stolen = lease_sector(&mut thief, 512, None);
        assert_eq!(
            renew(&p, &lr2, true, &stolen, 1012, (0, 0, 0), &[0; 256]).unwrap_err(),
            rv::SANLK_RENEW_OWNER
        );
        let (freed, _) = release_sector(&lr2, 512);
        assert_eq!(freed.timestamp, 0);
        assert_eq!(freed.owner_generation, lr2.owner_generation);
        let _ = slot;
    }

    #[test]
    fn wrong_lockspace_is_refused() {
        let mut slot = fresh_sector();
        let mut p = params(1, "host-a");
        p.space_name = Name::new("OTHER").unwrap();
        assert_eq!(
            drive(p, &mut slot, |_| {}).0.unwrap_err(),
            rv::SANLK_LEADER_LOCKSPACE
        );
    }
}
