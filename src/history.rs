//! "Why is host 3 FAIL?": what a daemon remembers of a lockspace, in
//! bounded rings: the delta-lease timestamps it saw of each host and when,
//! each of its own renewals (I/O time and result), and each host's state
//! changes with the rule that decided them. Pure data and its text form;
//! [`crate::hosts`] fills the host part, the daemon the renewals.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::hosts::HostState;

/// Sightings kept per host: at io_timeout 10 (a renewal every 20 s) this
/// is the last ~10 minutes of a live host; a stopped host's last ones stay.
pub const SEEN_KEEP: usize = 32;
/// State changes kept per host.
pub const CHANGES_KEEP: usize = 32;
/// Own renewal attempts kept per lockspace.
pub const RENEWALS_KEEP: usize = 64;
/// Events of the lockspace itself kept (its file deleted, back, ...).
pub const EVENTS_KEEP: usize = 32;

/// A moment on both of this host's clocks: monotonic seconds (what lease
/// timestamps and the judgement use) and wall-clock Unix seconds (for
/// people; 0 when the caller had none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moment {
    pub mono: u64,
    pub wall: u64,
}

impl Moment {
    /// Now, on both clocks.
    pub fn now() -> Moment {
        Moment {
            mono: crate::timeouts::monotime(),
            wall: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// Another host's delta lease as we saw it change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    pub at: Moment,
    /// The lease's timestamp (the other host's monotonic clock).
    pub timestamp: u64,
    pub owner_id: u64,
    pub generation: u64,
}

/// A host's judged state changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    pub at: Moment,
    /// None: the first judgement of this host.
    pub from: Option<HostState>,
    pub to: HostState,
    pub rule: String,
}

/// What we remember of one other host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostHistory {
    pub seen: VecDeque<Sighting>,
    pub changes: VecDeque<StateChange>,
    /// The last judged state (the `to` of the last change).
    pub state: Option<HostState>,
}

fn push_bounded<T>(q: &mut VecDeque<T>, keep: usize, v: T) {
    if q.len() == keep {
        q.pop_front();
    }
    q.push_back(v);
}

impl HostHistory {
    pub fn saw(&mut self, s: Sighting) {
        push_bounded(&mut self.seen, SEEN_KEEP, s);
    }

    pub fn changed(&mut self, c: StateChange) {
        self.state = Some(c.to);
        push_bounded(&mut self.changes, CHANGES_KEEP, c);
    }
}

/// One renewal attempt of our own host_id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalAttempt {
    pub at: Moment,
    /// The timestamp written (0 if the renewal failed).
    pub timestamp: u64,
    pub read_ms: u64,
    pub write_ms: u64,
    /// Whole attempt, including a read or write that failed or timed out.
    pub total_ms: u64,
    /// 0 (sanlock's SANLK_OK is 1, but 0 reads better here) or the error.
    pub result: i32,
}

/// Records our renewal attempts, bounded.
pub fn push_renewal(q: &mut VecDeque<RenewalAttempt>, a: RenewalAttempt) {
    push_bounded(q, RENEWALS_KEEP, a);
}

/// Something that happened to the lockspace itself, such as its file
/// being deleted or replaced under the daemon, in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceEvent {
    pub at: Moment,
    pub what: String,
}

/// Records a lockspace event, bounded.
pub fn push_event(q: &mut VecDeque<SpaceEvent>, e: SpaceEvent) {
    push_bounded(q, EVENTS_KEEP, e);
}

/// One host in a history reply: its current judgement and its rings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    pub host_id: u64,
    pub state: HostState,
    pub rule: String,
    pub generation: u64,
    pub timestamp: u64,
    pub io_timeout: u64,
    pub owner_name: String,
    pub seen: Vec<Sighting>,
    pub changes: Vec<StateChange>,
}

/// The hactl-only history reply for one lockspace (JSON on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockspaceHistory {
    pub lockspace: String,
    pub host_id: u64,
    pub io_timeout: u64,
    pub watchdog_fire_timeout: u64,
    pub now: Moment,
    pub renewals: Vec<RenewalAttempt>,
    pub hosts: Vec<HostReport>,
    /// Early warnings of lease loss raised and cleared, ours and other
    /// hosts' (absent in replies of daemons from before they existed).
    #[serde(default)]
    pub warnings: Vec<crate::early_warning::Warning>,
    /// Absent from daemons that predate it.
    #[serde(default)]
    pub events: Vec<SpaceEvent>,
}

/// `2026-11-23 11:17:45 UTC` from Unix seconds ("-" for 0: no wall clock).
pub fn utc(secs: u64) -> String {
    if secs == 0 {
        return "-".into();
    }
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn at(m: &Moment) -> String {
    format!("mono {} ({})", m.mono, utc(m.wall))
}

impl LockspaceHistory {
    /// The text `client host_status --history` prints.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "lockspace {} host_id {} io_timeout {} watchdog_fire_timeout {} now {}",
            self.lockspace,
            self.host_id,
            self.io_timeout,
            self.watchdog_fire_timeout,
            at(&self.now)
        );
        let _ = writeln!(o, "renewals of host_id {}:", self.host_id);
        for r in &self.renewals {
            let res = if r.result == 0 {
                format!("ok timestamp {}", r.timestamp)
            } else {
                format!("error {}", r.result)
            };
            let _ = writeln!(
                o,
                "  {} read_ms {} write_ms {} total_ms {} {res}",
                at(&r.at),
                r.read_ms,
                r.write_ms,
                r.total_ms
            );
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(o, "warnings:");
        }
        for w in &self.warnings {
            let _ = writeln!(
                o,
                "  {} {} {} host {}: {}",
                at(&w.at),
                w.event,
                w.reason.as_str(),
                w.host_id,
                w.message
            );
        }
        for e in &self.events {
            let _ = writeln!(o, "event at {}: {}", at(&e.at), e.what);
        }
        for h in &self.hosts {
            let _ = writeln!(
                o,
                "host {} {} generation {} timestamp {} io_timeout {} name {}",
                h.host_id, h.state, h.generation, h.timestamp, h.io_timeout, h.owner_name
            );
            let _ = writeln!(o, "  because {}", h.rule);
            for s in &h.seen {
                let _ = writeln!(
                    o,
                    "  seen timestamp {} generation {} at {}",
                    s.timestamp,
                    s.generation,
                    at(&s.at)
                );
            }
            for c in &h.changes {
                let from = c.from.map(|f| f.as_str()).unwrap_or("-");
                let _ = writeln!(o, "  state {from} -> {} at {}: {}", c.to, at(&c.at), c.rule);
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1), "1970-01-01 00:00:01 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_432_665), "2026-11-23 11:17:45 UTC");
    }

    #[test]
    fn rings_are_bounded() {
        let mut h = HostHistory::default();
        for i in 0..100 {
            h.saw(Sighting {
                at: Moment { mono: i, wall: 0 },
                timestamp: i,
                owner_id: 2,
                generation: 1,
            });
        }
        assert_eq!(h.seen.len(), SEEN_KEEP);
        assert_eq!(h.seen.front().unwrap().timestamp, 100 - SEEN_KEEP as u64);
        let mut q = VecDeque::new();
        for i in 0..100 {
            push_renewal(
                &mut q,
                RenewalAttempt {
                    at: Moment { mono: i, wall: 0 },
                    timestamp: i,
                    read_ms: 0,
                    write_ms: 0,
                    total_ms: 0,
                    result: 0,
                },
            );
        }
        assert_eq!(q.len(), RENEWALS_KEEP);
        assert_eq!(q.back().unwrap().timestamp, 99);
    }

    #[test]
    fn render_names_rule_and_times() {
        let h = LockspaceHistory {
            lockspace: "LS".into(),
            host_id: 1,
            io_timeout: 1,
            watchdog_fire_timeout: 60,
            now: Moment {
                mono: 200,
                wall: 1_795_432_665,
            },
            renewals: vec![RenewalAttempt {
                at: Moment { mono: 198, wall: 0 },
                timestamp: 198,
                read_ms: 1,
                write_ms: 2,
                total_ms: 3,
                result: 0,
            }],
            hosts: vec![HostReport {
                host_id: 2,
                state: HostState::Fail,
                rule: "x".into(),
                generation: 1,
                timestamp: 90,
                io_timeout: 1,
                owner_name: "b".into(),
                seen: vec![],
                changes: vec![StateChange {
                    at: Moment {
                        mono: 199,
                        wall: 1_795_432_664,
                    },
                    from: Some(HostState::Live),
                    to: HostState::Fail,
                    rule: "why".into(),
                }],
            }],
            warnings: vec![crate::early_warning::Warning {
                at: Moment {
                    mono: 199,
                    wall: 1_795_432_664,
                },
                host_id: 1,
                event: "raised".into(),
                reason: crate::early_warning::Reason::RenewalLate,
                seconds_left: 3,
                message: "lockspace LS: it is late".into(),
            }],
            events: vec![SpaceEvent {
                at: Moment {
                    mono: 199,
                    wall: 1_795_432_664,
                },
                what: "lockspace file deleted: /x".into(),
            }],
        };
        let t = h.render();
        assert!(t.contains(
            "warnings:\n  mono 199 (2026-11-23 11:17:44 UTC) raised renewal_late host 1: lockspace LS: it is late\n"
        ));
        assert!(
            t.contains("event at mono 199 (2026-11-23 11:17:44 UTC): lockspace file deleted: /x")
        );
        let old: LockspaceHistory = serde_json::from_str(
            &serde_json::to_string(&h)
                .unwrap()
                .replace(",\"events\":[{\"at\":{\"mono\":199,\"wall\":1795432664},\"what\":\"lockspace file deleted: /x\"}]", ""),
        )
        .unwrap();
        assert!(old.events.is_empty(), "an older daemon's reply reads");
        assert!(t.contains("read_ms 1 write_ms 2 total_ms 3 ok timestamp 198"));
        assert!(t.contains("state LIVE -> FAIL at mono 199 (2026-11-23 11:17:44 UTC): why"));
        let back: LockspaceHistory =
            serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }
}
