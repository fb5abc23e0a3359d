//! A tiny executor for the core's unit tests: areas in memory, I/O that
//! completes at once (or fails, or is late, as a test says), timers that
//! advance a fake clock. The real executors are the daemon's engine and
//! the simulation.

use super::lockspace::{Action, Event, Lockspace, LockspaceConfig};
use super::resource::{Input, LockspaceView, Op, Step};
use super::{Io, IoFailure, IoOp, IoResult, Knobs, Layout, Now, Target};
use crate::delta::lease_sector;
use crate::geometry::leader_flag_from_align;
use crate::ondisk::{self, LeaderRecord, Name};
use crate::paxos::leader_sector;

pub const SS: usize = 512;

/// A small lockspace: 8 host slots of 512 bytes.
pub fn small_layout() -> Layout {
    Layout {
        sector_size: SS,
        align_size: 8 * SS as u64,
        max_hosts: 8,
    }
}

/// A lockspace area as `direct init -s` leaves it (`slots` sectors).
pub fn lockspace_area(name: &str, slots: usize, align_size: u32, io_timeout: u16) -> Vec<u8> {
    let mut area = vec![0u8; slots * SS];
    for i in 0..slots {
        let mut lr = LeaderRecord {
            magic: ondisk::DELTA_DISK_MAGIC,
            version: ondisk::DELTA_DISK_VERSION_MAJOR | ondisk::DELTA_DISK_VERSION_MINOR,
            flags: leader_flag_from_align(align_size),
            sector_size: SS as u32,
            max_hosts: 1,
            io_timeout,
            space_name: Name::new(name).unwrap(),
            ..Default::default()
        };
        area[i * SS..(i + 1) * SS].copy_from_slice(&lease_sector(&mut lr, SS, None));
    }
    area
}

/// A resource lease area as `direct init -r` leaves it, `hosts` dblocks
/// (and room up to `len` bytes).
pub fn lease_area(ls: &str, res: &str, hosts: u64, len: usize) -> Vec<u8> {
    let mut area = vec![0u8; len];
    let mut lr = LeaderRecord {
        magic: ondisk::PAXOS_DISK_MAGIC,
        version: ondisk::PAXOS_DISK_VERSION_MAJOR | ondisk::PAXOS_DISK_VERSION_MINOR,
        flags: leader_flag_from_align(1 << 20),
        sector_size: SS as u32,
        num_hosts: hosts,
        max_hosts: 2000,
        space_name: Name::new(ls).unwrap(),
        resource_name: Name::new(res).unwrap(),
        ..Default::default()
    };
    area[..SS].copy_from_slice(&leader_sector(&mut lr, SS));
    let rr = ondisk::RequestRecord::fresh().encode();
    area[SS..SS + rr.len()].copy_from_slice(&rr);
    area
}

/// The areas, and the faults a test injects.
pub struct Disks {
    pub ls: Vec<u8>,
    pub lease: Vec<u8>,
    /// From this time on every I/O fails (frozen or lost storage).
    pub fail_from_ms: Option<u64>,
    pub ios: usize,
    /// Bytes read so far (the lease area's reads dominate an acquire).
    pub read_bytes: usize,
}

impl Disks {
    pub fn new(ls: Vec<u8>, lease: Vec<u8>) -> Disks {
        Disks {
            ls,
            lease,
            fail_from_ms: None,
            ios: 0,
            read_bytes: 0,
        }
    }

    pub fn perform(&mut self, now_ms: u64, io: &Io) -> IoResult {
        self.ios += 1;
        if self.fail_from_ms.is_some_and(|t| now_ms >= t) {
            return Err(IoFailure::timeout());
        }
        let area = match io.target {
            Target::Lockspace => &mut self.ls,
            Target::Lease => &mut self.lease,
        };
        let (off, len) = (io.offset as usize, io.len());
        assert!(
            (off + len) as u64 <= io.area_len,
            "I/O {io:?} leaves its area"
        );
        let end = off + len;
        if end > area.len() {
            return Err(IoFailure::code(-libc::EMSGSIZE));
        }
        match &io.op {
            IoOp::Read { .. } => {
                self.read_bytes += len;
                Ok(area[off..end].to_vec().into())
            }
            IoOp::Write { data } => {
                area[off..end].copy_from_slice(data);
                Ok(Vec::new().into())
            }
        }
    }
}

pub fn ls_config(name: &str, host_id: u64, our_name: &str) -> LockspaceConfig {
    LockspaceConfig {
        space_id: 1,
        space_name: Name::new(name).unwrap(),
        host_id,
        our_name: Name::new(our_name).unwrap(),
        io_timeout: 1,
        watchdog_fire_timeout: 10,
        kill_grace_seconds: None,
        set_bitmap_seconds: 6,
        use_watchdog: false,
        layout: Some(small_layout()),
        sizes_read_len: 4096,
        knobs: Knobs::default(),
    }
}

/// Drives one lockspace: I/O at once, timers in order. Returns every
/// action with the time it was produced.
pub struct LsDriver {
    pub ls: Lockspace,
    pub now: u64,
    pub timers: Vec<(u64, super::Id)>,
    pub log: Vec<(u64, Action)>,
    /// Answer to watchdog connect / activate.
    pub wdmd_ok: bool,
}

impl LsDriver {
    pub fn new(cfg: LockspaceConfig, start_ms: u64) -> LsDriver {
        LsDriver {
            ls: Lockspace::new(cfg),
            now: start_ms,
            timers: Vec::new(),
            log: Vec::new(),
            wdmd_ok: true,
        }
    }

    pub fn now(&self) -> Now {
        Now::at_ms(self.now)
    }

    pub fn step(&mut self, disks: &mut Disks, ev: Event) {
        let mut queue = vec![ev];
        while let Some(ev) = queue.pop() {
            self.ls.step(self.now(), ev);
            for a in self.ls.ready() {
                match &a {
                    Action::Io(io) => {
                        let result = disks.perform(self.now, io);
                        queue.insert(0, Event::Io { id: io.id, result });
                    }
                    Action::Timer { id, at_ms } => self.timers.push((*at_ms, *id)),
                    Action::WatchdogConnect { id } | Action::WatchdogActivate { id, .. } => queue
                        .insert(
                            0,
                            Event::Watchdog {
                                id: *id,
                                ok: self.wdmd_ok,
                            },
                        ),
                    _ => {}
                }
                self.log.push((self.now, a));
            }
        }
    }

    /// Runs timers until `until_ms`, with a main-loop tick (holders from
    /// `holders`) every 500 ms as the daemon's.
    pub fn run_until(
        &mut self,
        disks: &mut Disks,
        until_ms: u64,
        mut holders: impl FnMut(u64) -> Vec<crate::recovery::Holder>,
    ) {
        let mut next_tick = self.now + 500;
        loop {
            self.timers.sort();
            let next_timer = self.timers.first().map(|t| t.0).unwrap_or(u64::MAX);
            let at = next_timer.min(next_tick);
            if at > until_ms {
                self.now = until_ms;
                return;
            }
            self.now = self.now.max(at);
            if at == next_timer {
                let (_, id) = self.timers.remove(0);
                self.step(disks, Event::Timer { id });
            } else {
                next_tick += 500;
                let h = holders(self.now);
                self.step(disks, Event::Tick { holders: h });
            }
        }
    }

    pub fn actions(&self, f: impl Fn(&Action) -> bool) -> Vec<(u64, Action)> {
        self.log.iter().filter(|(_, a)| f(a)).cloned().collect()
    }
}

/// Runs an operation to its end against the disks; timers advance `now`.
pub fn run_op<O: Op>(
    op: &mut O,
    disks: &mut Disks,
    ls: &dyn LockspaceView,
    now: &mut u64,
) -> O::Output {
    let mut input = Input::Start;
    loop {
        match op.step(Now::at_ms(*now), input, ls) {
            Step::Io(io) => {
                let result = disks.perform(*now, &io);
                input = Input::Io { id: io.id, result };
            }
            Step::Timer { id, at_ms } => {
                *now = (*now).max(at_ms);
                input = Input::Timer { id };
            }
            Step::Done(out) => return out,
        }
    }
}
