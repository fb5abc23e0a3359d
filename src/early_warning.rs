//! Early warning of lease loss, as a pure state machine: from this host's
//! renewal attempts, its last good renewal and the clock it says when the
//! host's lease is in danger — before the daemon kills the lease holders at
//! last good renewal + id_renewal_fail_seconds — and when it is safe again;
//! and which other hosts renew so late that they may soon be judged FAIL.
//! The daemon logs, records, counts and sends on what this returns
//! (`daemon/early_warning.rs`); the web view plots the latencies it keeps.
//!
//! This host's lease is in danger when (thresholds from sanlock.conf):
//! - a renewal takes longer than `warn_renewal_slow_percent` (default 50)
//!   percent of io_timeout, finished or still running: at 100 % its read
//!   times out and the renewal fails;
//! - a renewal fails (I/O error, timeout, or the lease found changed);
//! - the last good renewal is older than `warn_renewal_late_percent`
//!   (default 50) percent of id_renewal_fail_seconds (8 × io_timeout); a
//!   healthy host renews every 2 × io_timeout, i.e. at 25 %.
//!
//! Storage that stalls just after a renewal is seen by the first rule
//! 2 × io_timeout + half an io_timeout later, 5.5 × io_timeout before the
//! holders are killed (at 8 × io_timeout): more than half of
//! id_renewal_fail_seconds. The warning clears once a renewal succeeds
//! within the slow threshold.
//!
//! Another host is at risk when its delta lease timestamp has not changed
//! for longer than one missed renewal can explain: its renewal interval
//! (2 × its io_timeout), one of its io_timeouts for the renewal itself,
//! and our own reading interval (we see its lease only at our renewals,
//! every 2 × our io_timeout, with a second of slack), while it is still
//! LIVE. With equal io_timeouts that is 5 × io_timeout + 1 s, before the
//! FAIL at 8 × io_timeout.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::history::Moment;
use crate::hosts::{HostState, HostTable};
use crate::timeouts::Timeouts;

pub const DEFAULT_SLOW_PERCENT: u64 = 50;
pub const DEFAULT_LATE_PERCENT: u64 = 50;
/// Renewal latencies kept for the web view's plot: the last hour, bounded
/// (at io_timeout 1 a renewal every ~2.5 s is ~1440 an hour).
pub const LATENCY_KEEP_MS: u64 = 3_600_000;
pub const LATENCY_KEEP: usize = 2048;
/// Warning records kept for `host_status --history`.
pub const WARNINGS_KEEP: usize = 64;

/// The `event` numbers of this host's warnings on the `reg_event`
/// channel. sanlock defines no event numbers of its own (they are the
/// applications'); the one published set, sanlk-resetd's, uses bits 0x1
/// (reset), 0x2 (resetting), 0x4 (reboot) and 0x8 (rebooting), and acts
/// on 0x1 and 0x4 whatever else is set. These leave the low byte clear,
/// so sanlk-resetd ignores them, and carry "HA" (0x4841) in the top 16
/// bits, as hactl's own socket command 0x48410001 does. They come with
/// from_host_id = our own host_id, which no other host's event has.
pub const EVENT_LEASE_WARNING: u64 = 0x4841_0000_0000_0100;
pub const EVENT_LEASE_HEALTHY: u64 = 0x4841_0000_0000_0200;

/// The thresholds, as percentages (0 turns a rule off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarnConfig {
    /// Of io_timeout: a renewal slower than this is a warning.
    pub slow_percent: u64,
    /// Of id_renewal_fail_seconds: a last good renewal older than this.
    pub late_percent: u64,
}

impl Default for WarnConfig {
    fn default() -> Self {
        WarnConfig {
            slow_percent: DEFAULT_SLOW_PERCENT,
            late_percent: DEFAULT_LATE_PERCENT,
        }
    }
}

/// Why a lease is in danger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A renewal of ours took (or is taking) too long.
    SlowRenewal,
    /// A renewal of ours failed.
    RenewalFailed,
    /// Our last good renewal is old.
    RenewalLate,
    /// Another host's lease has not changed for longer than expected.
    HostLate,
}

impl Reason {
    pub const OWN: [Reason; 3] = [
        Reason::SlowRenewal,
        Reason::RenewalFailed,
        Reason::RenewalLate,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::SlowRenewal => "slow_renewal",
            Reason::RenewalFailed => "renewal_failed",
            Reason::RenewalLate => "renewal_late",
            Reason::HostLate => "host_late",
        }
    }

    /// The reason's number in the `data` of a warning event (high 32 bits).
    pub fn code(&self) -> u64 {
        match self {
            Reason::SlowRenewal => 1,
            Reason::RenewalFailed => 2,
            Reason::RenewalLate => 3,
            Reason::HostLate => 4,
        }
    }
}

/// A warning raised or cleared, as the daemon reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub at: Moment,
    /// Whose lease: ours, or another host's.
    pub host_id: u64,
    /// "raised" or "cleared".
    pub event: String,
    pub reason: Reason,
    /// Ours: seconds until our lease holders are killed unless a renewal
    /// succeeds. Another host's: seconds until it is judged FAIL.
    pub seconds_left: u64,
    pub message: String,
}

impl Warning {
    pub fn raised(&self) -> bool {
        self.event == "raised"
    }
}

/// One renewal attempt of ours, for the latency plot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When it started, monotonic milliseconds.
    pub at_ms: u64,
    pub total_ms: u64,
    /// 0 or the error.
    pub result: i32,
}

/// Another host's outlook, as of now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outlook {
    pub state: HostState,
    /// Seconds since we saw its lease change.
    pub since: u64,
    /// Seconds until it is judged FAIL, DEAD (0: already).
    pub fail_in: u64,
    pub dead_in: u64,
    pub at_risk: bool,
}

/// When another host, LIVE with io_timeout `theirs`, is at risk: its
/// lease unchanged for longer than this (see the module doc).
pub fn host_late_after(theirs: u64, ours: u64) -> u64 {
    3 * theirs + 2 * ours + 1
}

/// Another host's state and time left before FAIL and DEAD, from what
/// the host table knows of it at `now` (monotonic seconds).
pub fn outlook(t: &HostTable, host_id: u64, now: u64, our_io: u64, wft: u64) -> Option<Outlook> {
    let hs = t.hosts.get((host_id as usize).checked_sub(1)?)?;
    if hs.last_check == 0 {
        return None;
    }
    let state = hs.state(now, t.our_host_id, wft);
    let io = if hs.io_timeout != 0 {
        hs.io_timeout
    } else {
        our_io
    };
    let to = Timeouts {
        io_timeout: io,
        watchdog_fire_timeout: wft,
    };
    let since = now.saturating_sub(hs.last_seen());
    // Judged FAIL once `since` exceeds the limit, DEAD likewise.
    let fail_in = (to.id_renewal_fail_seconds() + 1).saturating_sub(since);
    let dead_in = (to.host_dead_seconds() + 1).saturating_sub(since);
    let at_risk = state == HostState::Live
        && host_id != t.our_host_id
        && since > host_late_after(io, our_io).min(to.id_renewal_fail_seconds());
    Some(Outlook {
        state,
        since,
        fail_in,
        dead_in,
        at_risk,
    })
}

/// The early-warning state of one lockspace.
#[derive(Clone, Debug)]
pub struct Watch {
    pub cfg: WarnConfig,
    pub lockspace: String,
    pub host_id: u64,
    pub io_timeout: u64,
    pub watchdog_fire_timeout: u64,
    in_flight_since_ms: Option<u64>,
    /// Our lease's active warnings.
    active: BTreeSet<Reason>,
    /// When the current warning began (monotonic ms).
    since_ms: Option<u64>,
    /// Other hosts now at risk.
    hosts_at_risk: BTreeSet<u64>,
    latencies: VecDeque<Sample>,
    pub records: VecDeque<Warning>,
}

/// A monotonic millisecond and the wall clock, as the caller reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono_ms: u64,
    pub wall: u64,
}

impl Now {
    fn moment(&self) -> Moment {
        Moment {
            mono: self.mono_ms / 1000,
            wall: self.wall,
        }
    }
}

fn secs(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} s", ms / 1000)
    }
}

impl Watch {
    pub fn new(cfg: WarnConfig, lockspace: &str, host_id: u64, io_timeout: u64, wft: u64) -> Watch {
        Watch {
            cfg,
            lockspace: lockspace.to_string(),
            host_id,
            io_timeout,
            watchdog_fire_timeout: wft,
            in_flight_since_ms: None,
            active: BTreeSet::new(),
            since_ms: None,
            hosts_at_risk: BTreeSet::new(),
            latencies: VecDeque::new(),
            records: VecDeque::new(),
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            io_timeout: self.io_timeout,
            watchdog_fire_timeout: self.watchdog_fire_timeout,
        }
    }

    /// A renewal slower than this (ms) is a warning; None: rule off.
    pub fn slow_ms(&self) -> Option<u64> {
        (self.cfg.slow_percent > 0).then(|| self.io_timeout * 10 * self.cfg.slow_percent)
    }

    /// A last good renewal older than this (ms) is a warning.
    pub fn late_ms(&self) -> Option<u64> {
        (self.cfg.late_percent > 0)
            .then(|| self.timeouts().id_renewal_fail_seconds() * 10 * self.cfg.late_percent)
    }

    /// When our holders are killed if nothing renews (monotonic ms): the
    /// recovery acts once `now - last_success >= id_renewal_fail_seconds`.
    pub fn kill_at_ms(&self, last_success: u64) -> u64 {
        (last_success + self.timeouts().id_renewal_fail_seconds()) * 1000
    }

    pub fn active(&self) -> impl Iterator<Item = Reason> + '_ {
        self.active.iter().copied()
    }

    pub fn hosts_at_risk(&self) -> impl Iterator<Item = u64> + '_ {
        self.hosts_at_risk.iter().copied()
    }

    pub fn latencies(&self) -> impl Iterator<Item = &Sample> {
        self.latencies.iter()
    }

    /// The renewal in progress and since when (monotonic ms).
    pub fn in_flight_since_ms(&self) -> Option<u64> {
        self.in_flight_since_ms
    }

    fn until_kill(&self, now: Now, last_success: u64) -> String {
        let kill_at = self.kill_at_ms(last_success);
        let ago = now.mono_ms.saturating_sub(last_success * 1000);
        if now.mono_ms >= kill_at {
            format!(
                "last good renewal {} ago; its lease holders are being killed",
                secs(ago)
            )
        } else {
            format!(
                "last good renewal {} ago; holders will be killed in {} unless storage answers",
                secs(ago),
                secs(kill_at - now.mono_ms)
            )
        }
    }

    fn raise(&mut self, now: Now, last_success: u64, r: Reason, what: String) -> Warning {
        self.active.insert(r);
        self.since_ms.get_or_insert(now.mono_ms);
        let left = self.kill_at_ms(last_success).saturating_sub(now.mono_ms) / 1000;
        let w = Warning {
            at: now.moment(),
            host_id: self.host_id,
            event: "raised".into(),
            reason: r,
            seconds_left: left,
            message: format!(
                "lockspace {}: {what}; {}",
                self.lockspace,
                self.until_kill(now, last_success)
            ),
        };
        self.record(w)
    }

    fn record(&mut self, w: Warning) -> Warning {
        if self.records.len() == WARNINGS_KEEP {
            self.records.pop_front();
        }
        self.records.push_back(w.clone());
        w
    }

    /// A renewal of ours starts now.
    pub fn renewal_started(&mut self, now: Now) {
        self.in_flight_since_ms = Some(now.mono_ms);
    }

    /// A renewal of ours finished: `result` is the new timestamp, or the
    /// error; `last_success` the last good renewal's timestamp after it.
    pub fn renewal_done(
        &mut self,
        now: Now,
        total_ms: u64,
        result: Result<u64, i32>,
        last_success: u64,
    ) -> Vec<Warning> {
        let started = self
            .in_flight_since_ms
            .take()
            .unwrap_or(now.mono_ms.saturating_sub(total_ms));
        self.latencies.push_back(Sample {
            at_ms: started,
            total_ms,
            result: result.err().unwrap_or(0),
        });
        while self.latencies.len() > LATENCY_KEEP
            || self
                .latencies
                .front()
                .is_some_and(|s| s.at_ms + LATENCY_KEEP_MS < now.mono_ms)
        {
            self.latencies.pop_front();
        }
        let mut out = Vec::new();
        let slow = self.slow_ms().is_some_and(|s| total_ms > s);
        match result {
            Err(e) => {
                if !self.active.contains(&Reason::RenewalFailed) {
                    let what = format!(
                        "renewal failed after {} (error {e}: {})",
                        secs(total_ms),
                        crate::rv::describe(e)
                    );
                    out.push(self.raise(now, last_success, Reason::RenewalFailed, what));
                }
            }
            Ok(_) if slow => {
                // Renewed, so neither failed nor late any more; still slow.
                self.active.retain(|r| *r == Reason::SlowRenewal);
                if !self.active.contains(&Reason::SlowRenewal) {
                    let what = format!(
                        "renewal took {} (over {} % of io_timeout {} s; at 100 % it fails)",
                        secs(total_ms),
                        self.cfg.slow_percent,
                        self.io_timeout
                    );
                    out.push(self.raise(now, last_success, Reason::SlowRenewal, what));
                }
            }
            Ok(_) => {
                if !self.active.is_empty() {
                    let lasted = now.mono_ms - self.since_ms.unwrap_or(now.mono_ms);
                    let was: Vec<&str> = self.active.iter().map(|r| r.as_str()).collect();
                    let w = Warning {
                        at: now.moment(),
                        host_id: self.host_id,
                        event: "cleared".into(),
                        reason: *self.active.iter().next().unwrap(),
                        seconds_left: self.timeouts().id_renewal_fail_seconds(),
                        message: format!(
                            "lockspace {}: renewals healthy again (renewed in {}); warning ({}) cleared after {}",
                            self.lockspace,
                            secs(total_ms),
                            was.join(", "),
                            secs(lasted)
                        ),
                    };
                    self.active.clear();
                    self.since_ms = None;
                    out.push(self.record(w));
                }
            }
        }
        out
    }

    /// Checks the clock against our last good renewal and the renewal in
    /// progress, and every other host in `hosts` (judged at `now`).
    pub fn tick(&mut self, now: Now, last_success: u64, hosts: &HostTable) -> Vec<Warning> {
        let mut out = Vec::new();
        let our = self.host_id;
        if let (Some(t0), Some(slow)) = (self.in_flight_since_ms, self.slow_ms())
            && now.mono_ms.saturating_sub(t0) > slow
            && !self.active.contains(&Reason::SlowRenewal)
        {
            let what = format!(
                "renewal running for {} (over {} % of io_timeout {} s; at 100 % it fails)",
                secs(now.mono_ms - t0),
                self.cfg.slow_percent,
                self.io_timeout
            );
            out.push(self.raise(now, last_success, Reason::SlowRenewal, what));
        }
        let age = now.mono_ms.saturating_sub(last_success * 1000);
        if let Some(late) = self.late_ms()
            && last_success > 0
            && age > late
            && !self.active.contains(&Reason::RenewalLate)
        {
            let what = format!(
                "no good renewal for over {} % of id_renewal_fail_seconds {} s",
                self.cfg.late_percent,
                self.timeouts().id_renewal_fail_seconds()
            );
            out.push(self.raise(now, last_success, Reason::RenewalLate, what));
        }

        let now_s = now.mono_ms / 1000;
        // Only a slot ever seen in use can be LIVE and late, or have been.
        for (host_id, _) in hosts.used() {
            let i = host_id as usize - 1;
            if host_id == our {
                continue;
            }
            let Some(o) = outlook(
                hosts,
                host_id,
                now_s,
                self.io_timeout,
                self.watchdog_fire_timeout,
            ) else {
                continue;
            };
            let was = self.hosts_at_risk.contains(&host_id);
            let ts = hosts.hosts[i].timestamp;
            if o.at_risk && !was {
                self.hosts_at_risk.insert(host_id);
                let w = Warning {
                    at: now.moment(),
                    host_id,
                    event: "raised".into(),
                    reason: Reason::HostLate,
                    seconds_left: o.fail_in,
                    message: format!(
                        "lockspace {}: host {host_id} at risk: timestamp {ts} unchanged for {} s; \
                         FAIL in {} s, DEAD in {} s unless it renews",
                        self.lockspace, o.since, o.fail_in, o.dead_in
                    ),
                };
                out.push(self.record(w));
            } else if !o.at_risk && was {
                self.hosts_at_risk.remove(&host_id);
                let now_what = if o.state == HostState::Live {
                    format!("renewed (timestamp {ts})")
                } else {
                    format!("now {}", o.state)
                };
                let w = Warning {
                    at: now.moment(),
                    host_id,
                    event: "cleared".into(),
                    reason: Reason::HostLate,
                    seconds_left: o.fail_in,
                    message: format!(
                        "lockspace {}: host {host_id} no longer at risk: {now_what}",
                        self.lockspace
                    ),
                };
                out.push(self.record(w));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ondisk::{self, LeaderRecord, Name};

    fn at(ms: u64) -> Now {
        Now {
            mono_ms: ms,
            wall: 1_800_000_000 + ms / 1000,
        }
    }

    fn table() -> HostTable {
        HostTable::new(0, 1)
    }

    #[test]
    fn stall_warns_early_then_clears() {
        // io_timeout 10: renew every 20 s, holders killed 80 s after the
        // last good renewal (at 1000 s here).
        let mut w = Watch::new(WarnConfig::default(), "LS", 1, 10, 60);
        let t = table();
        w.renewal_started(at(1_000_000));
        assert!(w.renewal_done(at(1_000_010), 10, Ok(1000), 1000).is_empty());
        assert!(w.tick(at(1_019_000), 1000, &t).is_empty());
        // The next renewal starts at 1020.5 s and hangs.
        w.renewal_started(at(1_020_500));
        assert!(w.tick(at(1_025_000), 1000, &t).is_empty(), "4.5 s: not yet");
        let r = w.tick(at(1_025_600), 1000, &t);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reason, Reason::SlowRenewal);
        assert_eq!(r[0].seconds_left, 54);
        assert_eq!(
            r[0].message,
            "lockspace LS: renewal running for 5.1 s (over 50 % of io_timeout 10 s; at 100 % it fails); \
             last good renewal 25 s ago; holders will be killed in 54 s unless storage answers"
        );
        assert!(w.tick(at(1_028_000), 1000, &t).is_empty(), "raised once");
        // The read times out after io_timeout.
        let r = w.renewal_done(at(1_030_500), 10_000, Err(-202), 1000);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reason, Reason::RenewalFailed);
        assert!(
            r[0].message.contains("renewal failed after 10 s (error -202: an I/O did not complete within io_timeout); last good renewal 30 s ago; holders will be killed in 49 s"),
            "{}",
            r[0].message
        );
        // Late: over 40 s since the last good renewal.
        assert!(w.tick(at(1_040_000), 1000, &t).is_empty());
        let r = w.tick(at(1_041_000), 1000, &t);
        assert_eq!(r[0].reason, Reason::RenewalLate);
        assert_eq!(
            r[0].message,
            "lockspace LS: no good renewal for over 50 % of id_renewal_fail_seconds 80 s; \
             last good renewal 41 s ago; holders will be killed in 39 s unless storage answers"
        );
        assert_eq!(w.active().count(), 3);
        // Storage answers: a healthy renewal clears everything, with one line.
        w.renewal_started(at(1_045_000));
        let r = w.renewal_done(at(1_045_020), 20, Ok(1045), 1045);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].event, "cleared");
        assert_eq!(
            r[0].message,
            "lockspace LS: renewals healthy again (renewed in 0.0 s); warning (slow_renewal, \
             renewal_failed, renewal_late) cleared after 19 s"
        );
        assert_eq!(w.active().count(), 0);
        assert_eq!(w.records.len(), 4);
        assert_eq!(w.latencies().count(), 3);
        assert!(w.records.iter().all(|r| r.host_id == 1));
    }

    #[test]
    fn slow_but_successful_renewal_keeps_only_slow() {
        let mut w = Watch::new(WarnConfig::default(), "LS", 1, 1, 60);
        w.renewal_started(at(10_000));
        assert!(w.renewal_done(at(10_400), 400, Ok(10), 10).is_empty());
        w.renewal_started(at(12_500));
        let r = w.renewal_done(at(13_100), 600, Ok(12), 12);
        assert_eq!(r[0].reason, Reason::SlowRenewal);
        assert!(r[0].message.starts_with(
            "lockspace LS: renewal took 0.6 s (over 50 % of io_timeout 1 s; at 100 % it fails)"
        ));
        assert_eq!(r[0].seconds_left, 6, "killed at 12 + 8 s");
        // Still slow: no new line; then fast: cleared.
        w.renewal_started(at(15_000));
        assert!(w.renewal_done(at(15_700), 700, Ok(15), 15).is_empty());
        let r = w.renewal_done(at(17_010), 10, Ok(17), 17);
        assert_eq!(r[0].event, "cleared");
    }

    #[test]
    fn thresholds_follow_the_config_and_zero_turns_off() {
        let cfg = WarnConfig {
            slow_percent: 0,
            late_percent: 75,
        };
        let mut w = Watch::new(cfg, "LS", 1, 1, 60);
        let t = table();
        w.renewal_started(at(100_000));
        assert!(w.tick(at(105_000), 100, &t).is_empty(), "slow rule off");
        assert!(w.tick(at(106_000), 100, &t).is_empty(), "6 s = 75 % of 8");
        let r = w.tick(at(106_001), 100, &t);
        assert_eq!(r[0].reason, Reason::RenewalLate);
        assert_eq!(r[0].seconds_left, 1);
        let r = w.tick(at(109_000), 100, &t);
        assert!(r.is_empty());
        assert_eq!(w.late_ms(), Some(6000));
        assert_eq!(w.slow_ms(), None);
    }

    #[test]
    fn latencies_are_kept_for_an_hour() {
        let mut w = Watch::new(WarnConfig::default(), "LS", 1, 10, 60);
        for i in 0..400u64 {
            let t0 = i * 20_000;
            w.renewal_started(at(t0));
            w.renewal_done(at(t0 + 5), 5, Ok(t0 / 1000), t0 / 1000);
        }
        let first = w.latencies().next().unwrap().at_ms;
        let last = w.latencies().last().unwrap().at_ms;
        assert!(last - first <= LATENCY_KEEP_MS, "{first}..{last}");
        assert_eq!(w.latencies().count(), 180, "one every 20 s for an hour");
    }

    /// Another host (io_timeout 1) that stops renewing is at risk from
    /// 6 s (5 io + 1) until it is judged FAIL at 9 s, then it clears.
    #[test]
    fn late_host_is_at_risk_before_fail() {
        let name = Name::new("LS").unwrap();
        let mut area = vec![0u8; 2 * 512];
        let put = |area: &mut Vec<u8>, ts: u64| {
            let mut lr = LeaderRecord {
                magic: ondisk::DELTA_DISK_MAGIC,
                version: ondisk::DELTA_DISK_VERSION_MAJOR | 4,
                sector_size: 512,
                owner_id: 2,
                owner_generation: 1,
                timestamp: ts,
                io_timeout: 1,
                space_name: name,
                ..Default::default()
            };
            area[512..712].copy_from_slice(&lr.seal());
        };
        let mut t = HostTable::new(2, 1);
        put(&mut area, 50);
        t.observe(100, &area, 512, &name);
        put(&mut area, 52);
        t.observe(102, &area, 512, &name);
        let mut w = Watch::new(WarnConfig::default(), "LS", 1, 1, 60);
        let ok = |s: u64| s; // our own lease is fine throughout
        assert!(w.tick(at(108_000), ok(107), &t).is_empty(), "6 s: not yet");
        let r = w.tick(at(108_999), ok(107), &t);
        assert!(r.is_empty());
        let r = w.tick(at(109_000), ok(108), &t);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].host_id, r[0].reason), (2, Reason::HostLate));
        assert_eq!(
            r[0].message,
            "lockspace LS: host 2 at risk: timestamp 52 unchanged for 7 s; FAIL in 2 s, DEAD in 62 s unless it renews"
        );
        assert_eq!(w.hosts_at_risk().collect::<Vec<_>>(), [2]);
        let o = outlook(&t, 2, 110, 1, 60).unwrap();
        assert_eq!((o.state, o.fail_in, o.dead_in), (HostState::Live, 1, 61));
        let r = w.tick(at(111_000), ok(110), &t);
        assert_eq!(r[0].event, "cleared");
        assert_eq!(
            r[0].message,
            "lockspace LS: host 2 no longer at risk: now FAIL"
        );
        // It renews again: LIVE, not at risk.
        put(&mut area, 70);
        t.observe(120, &area, 512, &name);
        assert!(w.tick(at(120_000), ok(120), &t).is_empty());
        assert_eq!(outlook(&t, 2, 120, 1, 60).unwrap().fail_in, 9);
        assert!(!outlook(&t, 2, 120, 1, 60).unwrap().at_risk);
    }
}
