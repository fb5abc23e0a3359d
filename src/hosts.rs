//! What this host knows about the others in a lockspace, from the delta
//! leases it reads at each of its own renewals, and the LIVE / FAIL / DEAD
//! judgement made from it (sanlock's `check_other_leases` and
//! `get_host_flag`). Pure: the caller supplies the clock and the bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::{HostHistory, Moment, Sighting, StateChange};
use crate::ondisk::{self, HOSTID_BITMAP_OFFSET, LeaderRecord, Name};
use crate::timeouts::Timeouts;

/// sanlock's `SANLK_HOST_*` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HostState {
    Unknown = 1,
    Free = 2,
    Live = 3,
    Fail = 4,
    Dead = 5,
}

impl HostState {
    pub fn as_str(&self) -> &'static str {
        match self {
            HostState::Unknown => "UNKNOWN",
            HostState::Free => "FREE",
            HostState::Live => "LIVE",
            HostState::Fail => "FAIL",
            HostState::Dead => "DEAD",
        }
    }

    pub fn flag(&self) -> u32 {
        *self as u32
    }

    pub const ALL: [HostState; 5] = [
        HostState::Unknown,
        HostState::Free,
        HostState::Live,
        HostState::Fail,
        HostState::Dead,
    ];
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a host is in its state: the rule that decided, with its numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub state: HostState,
    pub rule: String,
}

/// Per-host observations (sanlock's `struct host_status`). Times are this
/// host's monotonic seconds; `timestamp` is the other host's own clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostStatus {
    pub first_check: u64,
    pub last_check: u64,
    /// When we last saw its lease change.
    pub last_live: u64,
    pub last_req: u64,
    pub owner_id: u64,
    pub owner_generation: u64,
    pub timestamp: u64,
    pub io_timeout: u64,
    pub owner_name: Name,
    pub lease_bad: u32,
    /// When we set this host's bit in our bitmap (0: not set).
    pub set_bit_time: u64,
}

/// Whether a host seen holding a lease SHARED (its mode block names
/// generation `generation`) may still hold it (sanlock's `host_live`): in doubt,
/// live. Dead once its delta lease is free, taken by a newer generation,
/// or unrenewed for host_dead_seconds.
pub fn shared_holder_live(
    hs: Option<&HostStatus>,
    generation: u64,
    now: u64,
    our_io_timeout: u64,
    watchdog_fire_timeout: u64,
) -> bool {
    let Some(hs) = hs else { return true };
    if hs.last_check == 0 {
        return true;
    }
    if hs.timestamp == 0 || hs.owner_generation > generation {
        return false;
    }
    now.saturating_sub(hs.last_seen()) <= hs.dead_seconds(our_io_timeout, watchdog_fire_timeout)
}

/// An event another host sent us through its bitmap and write_* fields
/// (`event` 0: only the bit, a resource request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostEvent {
    pub host_id: u64,
    pub generation: u64,
    pub event: u64,
    pub data: u64,
    pub from_host_id: u64,
    pub from_generation: u64,
}

impl HostStatus {
    /// When we last saw its lease change (or first saw it, if never).
    pub fn last_seen(&self) -> u64 {
        if self.last_live != 0 {
            self.last_live
        } else {
            self.first_check
        }
    }

    /// host_dead_seconds by its own io_timeout, or ours when its lease
    /// does not say.
    pub fn dead_seconds(&self, our_io_timeout: u64, watchdog_fire_timeout: u64) -> u64 {
        Timeouts {
            io_timeout: if self.io_timeout != 0 {
                self.io_timeout
            } else {
                our_io_timeout
            },
            watchdog_fire_timeout,
        }
        .host_dead_seconds()
    }

    /// The host's state as `get_host_flag` judges it, without the rule's
    /// text: what the main loop asks of every slot at every tick (1,000
    /// lockspaces × 2,000 slots), so it allocates nothing.
    pub fn state(&self, now: u64, our_host_id: u64, watchdog_fire_timeout: u64) -> HostState {
        if self.timestamp == 0 {
            return HostState::Free;
        }
        if our_host_id == self.owner_id {
            return HostState::Live;
        }
        let t = Timeouts {
            io_timeout: self.io_timeout,
            watchdog_fire_timeout,
        };
        let since = now.saturating_sub(self.last_seen());
        if since <= t.id_renewal_fail_seconds() {
            if self.first_check == self.last_live {
                HostState::Unknown
            } else {
                HostState::Live
            }
        } else if since > t.host_dead_seconds() {
            HostState::Dead
        } else {
            HostState::Fail
        }
    }

    /// Judges the host as `get_host_flag` does, saying which rule decided
    /// with its numbers (the constants of [`Timeouts`], from the io_timeout
    /// in the host's own lease). `our_host_id` is never judged: our own
    /// slot is LIVE while we hold it.
    pub fn judge(&self, now: u64, our_host_id: u64, watchdog_fire_timeout: u64) -> Verdict {
        let state = self.state(now, our_host_id, watchdog_fire_timeout);
        let io = self.io_timeout;
        let t = Timeouts {
            io_timeout: io,
            watchdog_fire_timeout,
        };
        let (fail, dead) = (t.id_renewal_fail_seconds(), t.host_dead_seconds());
        let since = now.saturating_sub(self.last_seen());
        let ts = self.timestamp;
        let fail_is = || format!("id_renewal_fail_seconds {fail}s (8 x io_timeout {io}s)");
        let dead_is = || {
            format!(
                "host_dead_seconds {dead}s (8 x io_timeout {io}s + watchdog_fire_timeout {watchdog_fire_timeout}s)"
            )
        };
        let rule = match state {
            HostState::Free => "its lease timestamp is 0 (released or never used)".into(),
            HostState::Live if our_host_id == self.owner_id => "it is this host".into(),
            HostState::Unknown => format!(
                "timestamp {ts} seen once, {since}s ago, no change observed yet (LIVE once it changes within {})",
                fail_is()
            ),
            HostState::Live => format!("timestamp {ts} changed {since}s ago, within {}", fail_is()),
            HostState::Dead => format!(
                "timestamp {ts} unchanged for {since}s > {}: its watchdog has fired",
                dead_is()
            ),
            HostState::Fail => format!(
                "timestamp {ts} unchanged for {since}s > {} (DEAD after {})",
                fail_is(),
                dead_is()
            ),
        };
        Verdict { state, rule }
    }
}

/// All hosts of one lockspace, as seen by `our_host_id`.
#[derive(Clone, Debug)]
pub struct HostTable {
    pub hosts: Vec<HostStatus>,
    pub our_host_id: u64,
    /// By host_id, for hosts ever seen in use (bounded rings).
    pub history: BTreeMap<u64, HostHistory>,
    /// Indexes of the slots whose lease was ever seen to change (the only
    /// ones not FREE), ascending: what is judged at every tick, instead of
    /// all 2,000 slots of each lockspace.
    used: Vec<usize>,
}

impl HostTable {
    pub fn new(max_hosts: usize, our_host_id: u64) -> Self {
        HostTable {
            hosts: vec![HostStatus::default(); max_hosts],
            our_host_id,
            history: BTreeMap::new(),
            used: Vec::new(),
        }
    }

    /// The slots ever seen in use, as (host_id, status): every other slot
    /// is FREE and never was anything else.
    pub fn used(&self) -> impl Iterator<Item = (u64, &HostStatus)> + '_ {
        self.used.iter().map(|&i| (i as u64 + 1, &self.hosts[i]))
    }

    /// Takes in the whole lockspace area as read at one of our renewals
    /// (`check_other_leases`). Returns events addressed to us.
    pub fn observe(
        &mut self,
        now: u64,
        area: &[u8],
        sector_size: usize,
        space_name: &Name,
    ) -> Vec<HostEvent> {
        let at = Moment { mono: now, wall: 0 };
        self.observe_at(at, area, sector_size, space_name)
    }

    /// [`HostTable::observe`] at a moment on both clocks, so that the
    /// history says when (in wall time too) each change was seen.
    pub fn observe_at(
        &mut self,
        at: Moment,
        area: &[u8],
        sector_size: usize,
        space_name: &Name,
    ) -> Vec<HostEvent> {
        let now = at.mono;
        let mut events = Vec::new();
        let our = self.our_host_id;
        for (i, hs) in self.hosts.iter_mut().enumerate() {
            let Some(sector) = area.get(i * sector_size..(i + 1) * sector_size) else {
                break;
            };
            hs.last_check = now;
            if hs.first_check == 0 {
                hs.first_check = now;
            }
            let lr = LeaderRecord::decode(sector).expect("a sector holds a leader");
            let bad = lr.magic != ondisk::DELTA_DISK_MAGIC || !lr.space_name.same_as(space_name);
            hs.lease_bad = if bad {
                hs.lease_bad.saturating_add(1)
            } else {
                0
            };
            if lr.owner_id == hs.owner_id
                && lr.owner_generation == hs.owner_generation
                && lr.timestamp == hs.timestamp
            {
                continue;
            }
            if !bad {
                hs.owner_id = lr.owner_id;
                hs.owner_generation = lr.owner_generation;
                hs.owner_name = lr.resource_name;
                hs.io_timeout = lr.io_timeout as u64;
            }
            hs.timestamp = lr.timestamp;
            hs.last_live = now;
            if let Err(at) = self.used.binary_search(&i) {
                self.used.insert(at, i);
            }

            let host_id = i as u64 + 1;
            // A sector that is not a delta lease of this lockspace is
            // reported by the caller (`lease_bad`), not remembered as a
            // host: its random "timestamps" would fill the history.
            if host_id != our && !bad {
                self.history.entry(host_id).or_default().saw(Sighting {
                    at,
                    timestamp: lr.timestamp,
                    owner_id: lr.owner_id,
                    generation: lr.owner_generation,
                });
            }
            if host_id != our && our > 0 && !bad {
                let bitmap = &sector[HOSTID_BITMAP_OFFSET..];
                let bit = (our - 1) as usize;
                if bitmap
                    .get(bit / 8)
                    .is_some_and(|b| b & (1 << (bit % 8)) != 0)
                {
                    // event 0: a plain bit, i.e. a request for one of our
                    // resources (the caller examines them).
                    events.push(HostEvent {
                        host_id: our,
                        generation: lr.write_id,
                        event: lr.write_generation,
                        data: lr.write_timestamp,
                        from_host_id: hs.owner_id,
                        from_generation: hs.owner_generation,
                    });
                }
            }
        }
        events
    }

    /// Judges every host checked so far and records those whose state
    /// changed (a never-used slot's first FREE is not a change). Returns
    /// the changes, by host_id, for the log.
    pub fn judge_all(&mut self, at: Moment, watchdog_fire_timeout: u64) -> Vec<(u64, StateChange)> {
        let mut out = Vec::new();
        // A slot never seen in use is FREE, and its first FREE is no change.
        for &i in &self.used {
            let hs = &self.hosts[i];
            // Unchecked, or holding garbage: a bad sector's owner and
            // io_timeout are not taken, so its judgement flips at every
            // read (as sanlock's get_hosts does); that is no host's story.
            if hs.last_check == 0 || hs.lease_bad != 0 {
                continue;
            }
            let host_id = i as u64 + 1;
            let state = hs.state(at.mono, self.our_host_id, watchdog_fire_timeout);
            let from = self.history.get(&host_id).and_then(|h| h.state);
            if from == Some(state) || (from.is_none() && state == HostState::Free) {
                continue;
            }
            let v = hs.judge(at.mono, self.our_host_id, watchdog_fire_timeout);
            let c = StateChange {
                at,
                from,
                to: v.state,
                rule: v.rule,
            };
            self.history.entry(host_id).or_default().changed(c.clone());
            out.push((host_id, c));
        }
        out
    }

    /// Host ids whose sector did not hold a delta lease of this lockspace
    /// at the last read, and for how many reads in a row.
    pub fn bad_leases(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.lease_bad != 0)
            .map(|(i, h)| (i as u64 + 1, h.lease_bad))
    }

    /// Whether any check has happened yet (`get_hosts` says "not ready" before).
    pub fn checked(&self) -> bool {
        self.hosts.first().is_some_and(|h| h.last_check != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(first: u64, live: u64, ts: u64, io: u64) -> HostStatus {
        HostStatus {
            first_check: first,
            last_check: live,
            last_live: live,
            owner_id: 2,
            owner_generation: 1,
            timestamp: ts,
            io_timeout: io,
            ..Default::default()
        }
    }

    #[test]
    fn sanlock_rules_in_order() {
        // io_timeout 1: FAIL after 8 s, DEAD after 68 s without a change.
        assert_eq!(
            seen(100, 100, 5, 1).judge(101, 1, 60).state,
            HostState::Unknown
        );
        assert_eq!(
            seen(100, 104, 7, 1).judge(105, 1, 60).state,
            HostState::Live
        );
        assert_eq!(
            seen(100, 104, 7, 1).judge(112, 1, 60).state,
            HostState::Live
        );
        assert_eq!(
            seen(100, 104, 7, 1).judge(113, 1, 60).state,
            HostState::Fail
        );
        assert_eq!(
            seen(100, 104, 7, 1).judge(172, 1, 60).state,
            HostState::Fail
        );
        assert_eq!(
            seen(100, 104, 7, 1).judge(173, 1, 60).state,
            HostState::Dead
        );
        assert_eq!(
            seen(100, 104, 0, 1).judge(500, 1, 60).state,
            HostState::Free
        );
        // a host dead before we started: UNKNOWN, then FAIL, then DEAD
        assert_eq!(
            seen(100, 100, 9, 1).judge(108, 1, 60).state,
            HostState::Unknown
        );
        assert_eq!(
            seen(100, 100, 9, 1).judge(109, 1, 60).state,
            HostState::Fail
        );
        // our own slot
        let mut me = seen(100, 100, 9, 1);
        me.owner_id = 1;
        assert_eq!(me.judge(1000, 1, 60).state, HostState::Live);
    }

    #[test]
    fn observe_tracks_changes_and_events() {
        let name = Name::new("LS").unwrap();
        let mut area = vec![0u8; 4 * 512];
        let put = |area: &mut Vec<u8>, host: usize, ts: u64, bit_for: Option<u64>| {
            let mut lr = LeaderRecord {
                magic: ondisk::DELTA_DISK_MAGIC,
                version: ondisk::DELTA_DISK_VERSION_MAJOR | 4,
                sector_size: 512,
                owner_id: host as u64,
                owner_generation: 3,
                timestamp: ts,
                io_timeout: 1,
                space_name: name,
                write_id: 7,
                write_generation: 42,
                ..Default::default()
            };
            let b = lr.seal();
            let s = (host - 1) * 512;
            area[s..s + 200].copy_from_slice(&b);
            if let Some(h) = bit_for {
                let bit = (h - 1) as usize;
                area[s + 256 + bit / 8] |= 1 << (bit % 8);
            }
        };
        put(&mut area, 2, 50, Some(1));
        let mut t = HostTable::new(4, 1);
        let ev = t.observe(10, &area, 512, &name);
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].event, ev[0].from_host_id, ev[0].from_generation),
            (42, 2, 3)
        );
        assert_eq!(t.hosts[1].last_live, 10);
        assert_eq!(t.hosts[1].judge(11, 1, 60).state, HostState::Unknown);
        // unchanged: last_live stays; changed: it moves
        t.observe(12, &area, 512, &name);
        assert_eq!(t.hosts[1].last_live, 10);
        put(&mut area, 2, 52, None);
        t.observe(14, &area, 512, &name);
        assert_eq!(t.hosts[1].last_live, 14);
        assert_eq!(t.hosts[1].judge(15, 1, 60).state, HostState::Live);
        assert_eq!(t.hosts[2].judge(15, 1, 60).state, HostState::Free);
    }

    #[test]
    fn shared_holder_liveness() {
        let hs = HostStatus {
            first_check: 1,
            last_check: 100,
            last_live: 100,
            owner_id: 2,
            owner_generation: 5,
            timestamp: 99,
            io_timeout: 1,
            ..Default::default()
        };
        // dead seconds at io 1 = 8 + 60
        assert!(shared_holder_live(Some(&hs), 5, 168, 10, 60));
        assert!(!shared_holder_live(Some(&hs), 5, 169, 10, 60));
        assert!(
            !shared_holder_live(Some(&hs), 4, 101, 10, 60),
            "restarted since"
        );
        let freed = HostStatus {
            timestamp: 0,
            ..hs.clone()
        };
        assert!(!shared_holder_live(Some(&freed), 5, 101, 10, 60));
        let unseen = HostStatus {
            last_check: 0,
            ..hs.clone()
        };
        assert!(shared_holder_live(Some(&unseen), 5, 10_000, 10, 60));
        assert!(shared_holder_live(None, 5, 10_000, 10, 60));
    }

    /// Random bytes in other hosts' sectors: counted as bad leases, never
    /// judged or remembered as hosts (their judgement flips every read).
    #[test]
    fn garbage_sectors_are_bad_leases_not_hosts() {
        let name = Name::new("LS").unwrap();
        let mut t = HostTable::new(100, 1);
        let at = |mono| Moment { mono, wall: 0 };
        let mut area = vec![0u8; 100 * 512];
        for (i, b) in area.iter_mut().enumerate().skip(512) {
            *b = (i.wrapping_mul(2_654_435_761) >> 7) as u8;
        }
        let mut lr = LeaderRecord {
            magic: ondisk::DELTA_DISK_MAGIC,
            version: ondisk::DELTA_DISK_VERSION_MAJOR | 4,
            sector_size: 512,
            owner_id: 1,
            owner_generation: 1,
            timestamp: 77,
            io_timeout: 1,
            space_name: name,
            ..Default::default()
        };
        area[..200].copy_from_slice(&lr.seal());
        for round in 0..5u64 {
            t.observe_at(at(100 + 2 * round), &area, 512, &name);
            for later in [1, 50] {
                let c = t.judge_all(at(100 + later + 2 * round), 60);
                assert!(c.iter().all(|(h, _)| *h == 1), "{c:?}");
            }
        }
        assert!(t.history.keys().all(|&h| h == 1), "{:?}", t.history.keys());
        let bad: Vec<_> = t.bad_leases().collect();
        assert_eq!(bad.len(), 99);
        assert_eq!(bad[0], (2, 5));
        // A sector that turns into a valid lease is a host again.
        lr.owner_id = 2;
        area[512..1024].fill(0);
        area[512..712].copy_from_slice(&lr.seal());
        t.observe_at(at(200), &area, 512, &name);
        assert_eq!(t.bad_leases().count(), 98);
        assert_eq!(t.judge_all(at(200), 60).len(), 1);
    }

    #[test]
    fn judge_all_records_changes_with_rules() {
        let name = Name::new("LS").unwrap();
        let mut area = vec![0u8; 3 * 512];
        let put = |area: &mut Vec<u8>, ts: u64| {
            let mut lr = LeaderRecord {
                magic: ondisk::DELTA_DISK_MAGIC,
                version: ondisk::DELTA_DISK_VERSION_MAJOR | 4,
                sector_size: 512,
                owner_id: 2,
                owner_generation: 3,
                timestamp: ts,
                io_timeout: 1,
                space_name: name,
                ..Default::default()
            };
            area[512..712].copy_from_slice(&lr.seal());
        };
        let at = |mono| Moment {
            mono,
            wall: 1_000_000 + mono,
        };
        let mut t = HostTable::new(3, 1);
        put(&mut area, 50);
        t.observe_at(at(100), &area, 512, &name);
        let c = t.judge_all(at(100), 60);
        assert_eq!(c.len(), 1, "host 2 UNKNOWN; free slots are not changes");
        assert_eq!(
            (c[0].0, c[0].1.from, c[0].1.to),
            (2, None, HostState::Unknown)
        );
        put(&mut area, 52);
        t.observe_at(at(102), &area, 512, &name);
        let c = t.judge_all(at(102), 60);
        assert_eq!(c[0].1.to, HostState::Live);
        assert!(t.judge_all(at(110), 60).is_empty(), "still LIVE at 8 s");
        let c = t.judge_all(at(111), 60);
        assert_eq!(
            (c[0].1.from, c[0].1.to),
            (Some(HostState::Live), HostState::Fail)
        );
        assert_eq!(
            c[0].1.rule,
            "timestamp 52 unchanged for 9s > id_renewal_fail_seconds 8s (8 x io_timeout 1s) \
             (DEAD after host_dead_seconds 68s (8 x io_timeout 1s + watchdog_fire_timeout 60s))"
        );
        let c = t.judge_all(at(171), 60);
        assert_eq!(c[0].1.to, HostState::Dead);
        assert!(
            c[0].1
                .rule
                .starts_with("timestamp 52 unchanged for 69s > host_dead_seconds 68s")
        );
        let h = &t.history[&2];
        assert_eq!(h.seen.len(), 2);
        assert_eq!((h.seen[1].timestamp, h.seen[1].at.wall), (52, 1_000_102));
        assert_eq!(h.changes.len(), 4);
        assert!(!t.history.contains_key(&1), "our own slot has no sightings");
    }
}
