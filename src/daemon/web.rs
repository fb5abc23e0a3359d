//! The daemon's read-only web view (`metrics_web = 1`, at `/` on the
//! metrics listener): per lockspace, whether this host's lease is in
//! danger, every host with its state and the time it has left before FAIL
//! and DEAD, this host's renewal latency over the last hour against its
//! thresholds, and each host's state changes on a timeline with the rule
//! that decided each. [`page`] gathers the figures under the lockspace
//! locks; [`render`] is pure.

use std::fmt::Write;

use super::Daemon;
use super::lockspace::SpaceList;
use crate::early_warning::{self, Outlook, Reason, Sample};
use crate::history::LockspaceHistory;
use crate::hosts::HostState;
use crate::timeouts::Timeouts;
use crate::web::html::{self, Cell, esc, table};
use crate::web::svg;

/// Seconds between the page's own refreshes.
pub const REFRESH_SECS: u64 = 2;

/// What the page shows of one lockspace.
pub struct LockspaceView {
    pub list: SpaceList,
    pub history: LockspaceHistory,
    pub outlooks: Vec<(u64, Outlook)>,
    pub latencies: Vec<Sample>,
    pub in_flight_since_ms: Option<u64>,
    pub now_ms: u64,
    pub active: Vec<Reason>,
    pub slow_ms: Option<u64>,
    pub last_success: u64,
    pub space_dead: bool,
    pub generation: u64,
}

/// Gathers every lockspace's figures and renders the page.
pub fn page(d: &Daemon) -> String {
    let mut views = Vec::new();
    let spaces = d.spaces.lock().clone();
    for sp in spaces.iter().rev() {
        let list = Daemon::list_of(sp);
        let history = sp.history();
        let now_ms = super::early_warning::now().mono_ms;
        let st = sp.state.lock();
        let outlooks = st
            .core
            .hosts()
            .history
            .keys()
            .filter_map(|&h| {
                early_warning::outlook(
                    st.core.hosts(),
                    h,
                    history.now.mono,
                    sp.io_timeout,
                    sp.watchdog_fire_timeout,
                )
                .map(|o| (h, o))
            })
            .collect();
        views.push(LockspaceView {
            list,
            outlooks,
            latencies: st.warn.latencies().copied().collect(),
            in_flight_since_ms: st.warn.in_flight_since_ms(),
            now_ms,
            active: st.warn.active().collect(),
            slow_ms: st.warn.slow_ms(),
            last_success: st.core.status().renewal_last_success,
            space_dead: st.space_dead(),
            generation: st.core.host_generation(),
            history,
        });
    }
    let host = d.our_host_name.to_string_lossy();
    render(&host, &views)
}

fn list_name(l: SpaceList) -> &'static str {
    match l {
        SpaceList::Adding => "joining",
        SpaceList::Active => "joined",
        SpaceList::Removing => "leaving",
    }
}

/// The page of `views` (pure).
pub fn render(host_name: &str, views: &[LockspaceView]) -> String {
    let mut m = String::new();
    if views.is_empty() {
        m.push_str("<section><p class=\"muted\">No lockspace is joined.</p></section>\n");
    }
    for v in views {
        lockspace_section(&mut m, v);
    }
    html::page(
        &format!("hactl daemon — {host_name}"),
        &format!("read-only view, refreshed every {REFRESH_SECS} s"),
        REFRESH_SECS,
        &m,
    )
}

fn lockspace_section(m: &mut String, v: &LockspaceView) {
    let h = &v.history;
    let t = Timeouts {
        io_timeout: h.io_timeout,
        watchdog_fire_timeout: h.watchdog_fire_timeout,
    };
    let fail = t.id_renewal_fail_seconds();
    let ls = esc(&h.lockspace);
    let now = h.now;
    let age = now.mono.saturating_sub(v.last_success);
    let kill_in = (v.last_success + fail).saturating_sub(now.mono);
    let _ = writeln!(
        m,
        "<section id=\"ls-{ls}\"><h2>lockspace {ls}</h2><p>{} as host_id {} generation {}, \
         io_timeout {} s: renewals every {} s; holders are killed {fail} s after the last good \
         renewal; other hosts are FAIL after {fail} s and DEAD after {} s without a renewal.</p>",
        list_name(v.list),
        h.host_id,
        v.generation,
        h.io_timeout,
        t.id_renewal_seconds(),
        t.host_dead_seconds()
    );
    // This host's lease.
    let latest: Option<&early_warning::Warning> = h
        .warnings
        .iter()
        .rev()
        .find(|w| w.host_id == h.host_id && w.raised());
    if v.space_dead {
        let _ = writeln!(
            m,
            "<p id=\"lease-{ls}\" class=\"st DEAD\">lockspace failed: no good renewal for {age} s; \
             its lease holders are being killed</p>"
        );
    } else if !v.active.is_empty() {
        let reasons: Vec<&str> = v.active.iter().map(|r| r.as_str()).collect();
        let _ = writeln!(
            m,
            "<p id=\"lease-{ls}\" class=\"st RISK\">lease in danger ({}): last good renewal {age} s ago; \
             holders will be killed in {kill_in} s unless storage answers</p>",
            reasons.join(", ")
        );
        if let Some(w) = latest {
            let _ = writeln!(m, "<p class=\"muted\">{}</p>", esc(&w.message));
        }
    } else if v.last_success > 0 {
        let _ = writeln!(
            m,
            "<p id=\"lease-{ls}\" class=\"st LIVE\">lease healthy: last good renewal {age} s ago</p>"
        );
    }

    // Hosts.
    let mut rows = Vec::new();
    for r in &h.hosts {
        let o = v
            .outlooks
            .iter()
            .find(|(id, _)| *id == r.host_id)
            .map(|x| x.1);
        let me = r.host_id == h.host_id;
        let risk = o.is_some_and(|o| o.at_risk);
        let state = if risk {
            Cell::raw(format!(
                "<span class=\"st {0}\">{0}</span> <span class=\"st RISK\">AT RISK</span>",
                r.state
            ))
        } else {
            Cell::state(r.state.as_str(), class(r.state))
        };
        let left = |n: Option<u64>| match n {
            _ if me => Cell::text("-"),
            Some(0) => Cell::text("now"),
            Some(n) => Cell::num(format!("{n} s")),
            None => Cell::text("-"),
        };
        let live_like = matches!(r.state, HostState::Live | HostState::Unknown);
        let fail_in = o.filter(|_| live_like).map(|o| o.fail_in);
        let dead_in = o
            .filter(|_| live_like || r.state == HostState::Fail)
            .map(|o| o.dead_in);
        rows.push(vec![
            Cell::num(r.host_id),
            state,
            Cell::num(r.generation),
            Cell::num(r.timestamp),
            Cell::text(if me { "this host" } else { &r.owner_name }),
            Cell::num(
                o.map(|o| format!("{} s", o.since))
                    .unwrap_or_else(|| "-".into()),
            ),
            left(fail_in),
            left(dead_in),
            Cell::text(&r.rule),
        ]);
    }
    m.push_str("<h3>hosts</h3>");
    m.push_str(&table(
        &format!("hosts-{}", h.lockspace),
        &[
            "host_id",
            "state",
            "generation",
            "timestamp",
            "name",
            "lease changed",
            "FAIL in",
            "DEAD in",
            "because",
        ],
        &rows,
    ));

    // Renewal latency over the last hour.
    let mut pts: Vec<svg::Point> = v
        .latencies
        .iter()
        .map(|s| svg::Point {
            t: (s.at_ms as f64 - v.now_ms as f64) / 1000.0,
            v: s.total_ms as f64 / 1000.0,
            kind: if s.result == 0 {
                svg::PointKind::Ok
            } else {
                svg::PointKind::Failed
            },
            title: if s.result == 0 {
                format!("renewal took {} ms", s.total_ms)
            } else {
                format!("renewal failed ({}) after {} ms", s.result, s.total_ms)
            },
        })
        .collect();
    if let Some(t0) = v.in_flight_since_ms {
        let ran = v.now_ms.saturating_sub(t0);
        if ran >= 1000 {
            pts.push(svg::Point {
                t: 0.0,
                v: ran as f64 / 1000.0,
                kind: svg::PointKind::Running,
                title: format!("renewal running for {} s", ran / 1000),
            });
        }
    }
    let mut lines = Vec::new();
    if let Some(s) = v.slow_ms {
        lines.push(svg::Line {
            v: s as f64 / 1000.0,
            label: format!("warning {} s", s as f64 / 1000.0),
            color: "#c79100",
        });
    }
    lines.push(svg::Line {
        v: h.io_timeout as f64,
        label: format!("io_timeout {} s", h.io_timeout),
        color: "#d93025",
    });
    lines.push(svg::Line {
        v: fail as f64,
        label: format!("fail threshold {fail} s"),
        color: "#7b1fa2",
    });
    // The last hour, or less while the lockspace is younger.
    let oldest = v
        .latencies
        .first()
        .map_or(0, |s| v.now_ms.saturating_sub(s.at_ms) / 1000);
    let window = oldest.div_ceil(300).clamp(1, 12) * 300;
    let _ = write!(
        m,
        "<h3>renewal time of host_id {} (last {} min: {} renewals)</h3>",
        h.host_id,
        window / 60,
        v.latencies.len()
    );
    m.push_str(&svg::latency_plot(
        &format!("latency-{}", h.lockspace),
        &pts,
        window as f64,
        &lines,
    ));

    // Timeline of state changes and warnings.
    let now_wall = now.wall as f64;
    let first = h
        .hosts
        .iter()
        .flat_map(|r| r.changes.iter().map(|c| c.at.wall))
        .chain(h.warnings.iter().map(|w| w.at.wall))
        .filter(|&w| w > 0)
        .min()
        .unwrap_or(now.wall) as f64;
    // From a little before the first change (at most an hour back).
    let t0 = (first - ((now_wall - first) * 0.05).max(5.0)).max(now_wall - 3600.0);
    let lanes: Vec<svg::Lane> = h
        .hosts
        .iter()
        .map(|r| {
            let mut spans = Vec::new();
            for (i, c) in r.changes.iter().enumerate() {
                let to = r
                    .changes
                    .get(i + 1)
                    .map(|n| n.at.wall as f64)
                    .unwrap_or(now_wall);
                spans.push(svg::Span {
                    from: c.at.wall as f64,
                    to,
                    state: c.to.as_str().into(),
                    title: format!(
                        "{} -> {} at {}: {}",
                        c.from.map(|f| f.as_str()).unwrap_or("-"),
                        c.to,
                        html::clock(c.at.wall),
                        c.rule
                    ),
                });
            }
            let marks = h
                .warnings
                .iter()
                .filter(|w| w.host_id == r.host_id)
                .map(|w| svg::Mark {
                    at: w.at.wall as f64,
                    color: if w.raised() { "#f4c20d" } else { "#3aa757" },
                    title: format!("{} {}: {}", html::clock(w.at.wall), w.event, w.message),
                })
                .collect();
            svg::Lane {
                label: if r.host_id == h.host_id {
                    format!("host {} (us)", r.host_id)
                } else {
                    format!("host {}", r.host_id)
                },
                spans,
                marks,
            }
        })
        .collect();
    m.push_str("<h3>timeline (UTC; hover for the rule)</h3>");
    m.push_str(&svg::timeline(
        &format!("timeline-{}", h.lockspace),
        &lanes,
        t0,
        now_wall,
    ));

    let mut changes: Vec<(u64, Vec<Cell>)> = Vec::new();
    for r in &h.hosts {
        for c in &r.changes {
            changes.push((
                c.at.mono,
                vec![
                    Cell::text(crate::history::utc(c.at.wall)),
                    Cell::num(r.host_id),
                    Cell::raw(format!(
                        "{} &rarr; <span class=\"st {}\">{}</span>",
                        c.from.map(|f| f.as_str()).unwrap_or("-"),
                        class(c.to),
                        c.to
                    )),
                    Cell::text(&c.rule),
                ],
            ));
        }
    }
    changes.sort_by_key(|c| std::cmp::Reverse(c.0));
    m.push_str("<h3>state changes, newest first</h3>");
    m.push_str(&table(
        &format!("changes-{}", h.lockspace),
        &["when", "host_id", "change", "rule"],
        &changes.into_iter().map(|c| c.1).collect::<Vec<_>>(),
    ));
    let warnings: Vec<Vec<Cell>> = h
        .warnings
        .iter()
        .rev()
        .map(|w| {
            vec![
                Cell::text(crate::history::utc(w.at.wall)),
                Cell::num(w.host_id),
                Cell::text(&w.event),
                Cell::text(w.reason.as_str()),
                Cell::text(&w.message),
            ]
        })
        .collect();
    m.push_str("<h3>early warnings, newest first</h3>");
    m.push_str(&table(
        &format!("warnings-{}", h.lockspace),
        &["when", "host_id", "event", "reason", "message"],
        &warnings,
    ));
    if !h.events.is_empty() {
        let events: Vec<Vec<Cell>> = h
            .events
            .iter()
            .rev()
            .map(|e| {
                vec![
                    Cell::text(crate::history::utc(e.at.wall)),
                    Cell::text(&e.what),
                ]
            })
            .collect();
        m.push_str("<h3>lockspace events, newest first</h3>");
        m.push_str(&table(
            &format!("events-{}", h.lockspace),
            &["when", "event"],
            &events,
        ));
    }
    m.push_str("</section>\n");
}

fn class(s: HostState) -> &'static str {
    match s {
        HostState::Live => "LIVE",
        HostState::Fail => "FAIL",
        HostState::Dead => "DEAD",
        HostState::Free => "FREE",
        HostState::Unknown => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{HostReport, Moment, StateChange};

    #[test]
    fn renders_hosts_danger_and_timeline() {
        let at = |mono| Moment {
            mono,
            wall: 1_795_432_000 + mono,
        };
        let history = LockspaceHistory {
            lockspace: "LS".into(),
            host_id: 1,
            io_timeout: 1,
            watchdog_fire_timeout: 60,
            now: at(200),
            renewals: vec![],
            hosts: vec![HostReport {
                host_id: 2,
                state: HostState::Live,
                rule: "timestamp 190 changed 7s ago".into(),
                generation: 3,
                timestamp: 190,
                io_timeout: 1,
                owner_name: "b<x>".into(),
                seen: vec![],
                changes: vec![StateChange {
                    at: at(150),
                    from: Some(HostState::Unknown),
                    to: HostState::Live,
                    rule: "timestamp 150 changed".into(),
                }],
            }],
            warnings: vec![],
            events: vec![crate::history::SpaceEvent {
                at: at(180),
                what: "lockspace file deleted: /ids".into(),
            }],
        };
        let v = LockspaceView {
            list: SpaceList::Active,
            history,
            outlooks: vec![(
                2,
                Outlook {
                    state: HostState::Live,
                    since: 7,
                    fail_in: 2,
                    dead_in: 62,
                    at_risk: true,
                },
            )],
            latencies: vec![Sample {
                at_ms: 195_000,
                total_ms: 3,
                result: 0,
            }],
            in_flight_since_ms: Some(196_000),
            now_ms: 200_000,
            active: vec![Reason::SlowRenewal],
            slow_ms: Some(500),
            last_success: 194,
            space_dead: false,
            generation: 4,
        };
        let p = render("h1", &[v]);
        assert!(p.contains("<table id=\"hosts-LS\">"));
        assert!(p.contains(
            "<tr><td class=\"num\">2</td><td><span class=\"st LIVE\">LIVE</span> <span class=\"st RISK\">AT RISK</span></td>"
        ));
        assert!(p.contains("<td>b&lt;x&gt;</td><td class=\"num\">7 s</td><td class=\"num\">2 s</td><td class=\"num\">62 s</td>"));
        assert!(p.contains("lease in danger (slow_renewal): last good renewal 6 s ago; holders will be killed in 2 s"));
        assert!(
            p.contains("class=\"running\""),
            "the renewal in progress is plotted"
        );
        assert!(p.contains("<svg id=\"timeline-LS\""));
        assert!(p.contains("class=\"span LIVE\""));
        assert!(p.contains("Unknown &rarr;") || p.contains("UNKNOWN &rarr;"));
        assert!(p.contains("<td>lockspace file deleted: /ids</td>"), "{p}");
    }
}
