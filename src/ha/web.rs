//! The HA agent's read-only web view (`hactl ha agent --web ADDR`): the
//! hosts with their states, scores and maintenance, each VM with where it
//! runs, its lease owner and lver, and the agent's decisions with their
//! reasons on a timeline and in a table. It reads what the agent writes
//! each cycle (`RUN_DIR/status.json`, `RUN_DIR/events.jsonl`), so it adds
//! no storage I/O and cannot slow the agent; [`render`] is pure.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::agent::{EVENTS_FILE, Event, STATUS_FILE, unix_now};
use crate::web::html::{self, Cell, esc, table};
use crate::web::{Reply, svg};

/// Decisions shown (the newest), and the most of events.jsonl read for them.
pub const EVENTS_SHOWN: usize = 200;
const EVENTS_TAIL_BYTES: u64 = 256 * 1024;

/// Serves the view of the agent whose run dir is `run_dir` at `addr`.
pub fn start(addr: &str, run_dir: PathBuf, refresh_secs: u64) -> Result<(), String> {
    let handler: crate::web::Handler = Arc::new(move |path, _| match path {
        "/" => Reply::html(page(&run_dir, refresh_secs)),
        "/status.json" => match std::fs::read(run_dir.join(STATUS_FILE)) {
            Ok(b) => Reply::ok("application/json", b),
            Err(_) => Reply::not_found("/ (the agent has not written its status yet)"),
        },
        "/metrics" => {
            let status: Option<Value> = std::fs::read(run_dir.join(STATUS_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            Reply::ok(crate::metrics::CONTENT_TYPE, metrics(status.as_ref()))
        }
        _ => Reply::not_found("/, /status.json or /metrics"),
    });
    let local = crate::web::serve(addr, "ha-web", handler)?;
    eprintln!("hactl ha agent: web view on http://{local}/");
    Ok(())
}

/// The last events of events.jsonl (whole lines of its last 256 KiB).
pub fn tail_events(path: &Path, n: usize) -> Vec<Event> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(EVENTS_TAIL_BYTES);
    let _ = f.seek(SeekFrom::Start(from));
    let mut buf = Vec::new();
    let _ = f.take(EVENTS_TAIL_BYTES).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if from > 0 && !lines.is_empty() {
        lines.remove(0); // cut in the middle
    }
    let mut evs: Vec<Event> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let skip = evs.len().saturating_sub(n);
    evs.drain(..skip);
    evs
}

/// The agent's Prometheus metrics, from its status.json: fences by
/// result, the last fence's duration, and whether a fence is under way.
pub fn metrics(status: Option<&Value>) -> String {
    let mut e = crate::metrics::Exposition::default();
    let f = status.map(|s| &s["fencing"]);
    e.family(
        "hactl_ha_fences_total",
        "counter",
        "Fences run by this host's agent, by result (declared: off confirmed and the host's delta lease released; failed: no agent confirmed off; not_declared: off confirmed but the lease had changed)",
    );
    for result in ["declared", "failed", "not_declared"] {
        let n = f.and_then(|f| f["fences"][result].as_u64()).unwrap_or(0);
        e.sample("hactl_ha_fences_total", &[("result", result)], n as f64);
    }
    e.family(
        "hactl_ha_fence_running",
        "gauge",
        "1 while this host's agent fences a host",
    );
    let busy = f.is_some_and(|f| !f["busy"].is_null());
    e.sample("hactl_ha_fence_running", &[], if busy { 1.0 } else { 0.0 });
    if let Some(s) = f.and_then(|f| f["last_fence_seconds"].as_f64()) {
        e.family(
            "hactl_ha_last_fence_seconds",
            "gauge",
            "How long this host's last fence took, first agent run to its end",
        );
        e.sample("hactl_ha_last_fence_seconds", &[], s);
    }
    e.finish()
}

fn page(run_dir: &Path, refresh_secs: u64) -> String {
    let status: Option<Value> = std::fs::read(run_dir.join(STATUS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let events = tail_events(&run_dir.join(EVENTS_FILE), EVENTS_SHOWN);
    render(status.as_ref(), &events, unix_now(), refresh_secs)
}

fn opt(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(opt).collect::<Vec<_>>().join(", "),
        v => v.to_string(),
    }
}

fn state_class(s: &str) -> &'static str {
    match s {
        "LIVE" => "LIVE",
        "FAIL" => "FAIL",
        "DEAD" => "DEAD",
        "FREE" => "FREE",
        _ => "UNKNOWN",
    }
}

/// The page from the agent's status and its last events (pure).
pub fn render(status: Option<&Value>, events: &[Event], now: f64, refresh_secs: u64) -> String {
    let mut m = String::new();
    let Some(st) = status else {
        m.push_str(
            "<section><p class=\"muted\">The agent has not written its status yet.</p></section>",
        );
        return html::page("hactl HA agent", "", refresh_secs, &m);
    };
    let me = opt(&st["host_id"]);
    let age = now - st["t_unix"].as_f64().unwrap_or(now);
    let _ = std::fmt::Write::write_fmt(
        &mut m,
        format_args!(
            "<section><p>As seen by the agent of host {me} in its cycle {} ({:.0} s ago). \
             Global maintenance <b id=\"global-maintenance\">{}</b>; this host's local maintenance \
             <b id=\"local-maintenance\">{}</b>; its score {}.</p>",
            opt(&st["cycle"]),
            age.max(0.0),
            if st["global_maintenance"] == Value::Bool(true) {
                "ON"
            } else {
                "off"
            },
            if st["local_maintenance"] == Value::Bool(true) {
                "ON"
            } else {
                "off"
            },
            opt(&st["score"]),
        ),
    );
    if let Some(p) = st["problem"].as_str() {
        m.push_str(&format!(
            "<p class=\"st FAIL\" id=\"problem\">{}</p>",
            esc(p)
        ));
    }
    let hosts: Vec<Vec<Cell>> = st["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let s = opt(&h["state"]);
            let maint = match h["local_maintenance"] {
                Value::Bool(true) => "LOCAL",
                Value::Bool(false) => "-",
                _ => "?",
            };
            vec![
                Cell::num(opt(&h["host_id"])),
                Cell::state(&s, state_class(&s)),
                Cell::num(opt(&h["generation"])),
                Cell::num(opt(&h["score"])),
                Cell::text(maint),
                Cell::text(opt(&h["running"])),
                Cell::num(
                    h["renewal_age"]
                        .as_u64()
                        .map_or("-".into(), |a| format!("{a} s")),
                ),
                Cell::text(opt(&h["fresh"])),
            ]
        })
        .collect();
    m.push_str("<h2>hosts</h2>");
    m.push_str(&table(
        "ha-hosts",
        &[
            "host_id",
            "state",
            "generation",
            "score",
            "maintenance",
            "runs (whiteboard)",
            "lease unchanged for",
            "whiteboard fresh",
        ],
        &hosts,
    ));
    let vms: Vec<Vec<Cell>> = st["vms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let l = &v["lease"];
            let local = &v["local"];
            let here = match local["state"].as_str() {
                Some("idle") | None => String::new(),
                Some(s) => format!(" (here: {s})"),
            };
            vec![
                Cell::text(opt(&v["name"])),
                Cell::text(format!("{}{here}", opt(&v["whiteboard_hosts"]))),
                Cell::text(opt(&l["state"])),
                Cell::num(opt(&l["owner"])),
                Cell::num(opt(&l["generation"])),
                Cell::num(opt(&l["lver"])),
                Cell::text(opt(&v["last_decision"])),
            ]
        })
        .collect();
    m.push_str("<h2>VMs</h2>");
    m.push_str(&table(
        "ha-vms",
        &[
            "vm",
            "runs on",
            "lease",
            "owner",
            "generation",
            "lver",
            "last decision here",
        ],
        &vms,
    ));
    m.push_str("</section>");

    // Decisions: a lane per VM (and one for the host's own events).
    let mut names: Vec<String> = st["vms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect();
    names.insert(0, String::new());
    let t1 = now;
    let first = events.first().map_or(now - 60.0, |e| e.t_unix);
    let t0 = (first - ((now - first) * 0.05).max(5.0)).max(now - 3600.0);
    let lanes: Vec<svg::Lane> = names
        .iter()
        .map(|n| svg::Lane {
            label: if n.is_empty() {
                format!("host {me}")
            } else {
                n.clone()
            },
            spans: Vec::new(),
            marks: events
                .iter()
                .filter(|e| &e.vm == n && e.t_unix >= t0)
                .map(|e| svg::Mark {
                    at: e.t_unix,
                    color: svg::state_color(&e.kind),
                    title: format!("{} {}: {}", html::clock(e.t_unix as u64), e.kind, e.reason),
                })
                .collect(),
        })
        .collect();
    m.push_str("<section><h2>decisions (UTC; hover for the reason)</h2>");
    m.push_str(&svg::timeline("ha-timeline", &lanes, t0, t1));
    let rows: Vec<Vec<Cell>> = events
        .iter()
        .rev()
        .map(|e| {
            vec![
                Cell::text(crate::history::utc(e.t_unix as u64)),
                Cell::text(if e.vm.is_empty() { "-" } else { &e.vm }),
                Cell::text(&e.kind),
                Cell::text(&e.reason),
            ]
        })
        .collect();
    m.push_str(&table(
        "ha-events",
        &["when", "vm", "decision", "reason"],
        &rows,
    ));
    m.push_str("</section>");
    html::page(
        &format!("hactl HA agent — host {me}"),
        &format!("read-only view, refreshed every {refresh_secs} s"),
        refresh_secs,
        &m,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_hosts_vms_and_decisions() {
        let st = json!({
            "host_id": 2, "t_unix": 1000.0, "cycle": 7, "score": 100,
            "local_maintenance": false, "global_maintenance": true, "problem": null,
            "hosts": [
                {"host_id": 1, "state": "DEAD", "generation": 3, "renewal_age": 80,
                 "fresh": false, "score": 100, "local_maintenance": false, "running": ["vm1"]},
                {"host_id": 2, "state": "LIVE", "generation": 1, "renewal_age": 1,
                 "fresh": true, "score": 100, "local_maintenance": true, "running": []}
            ],
            "vms": [{"name": "vm1", "local": {"state": "running", "pid": 9},
                     "lease": {"state": "held", "owner": 2, "generation": 1, "lver": 4},
                     "whiteboard_hosts": [2], "last_decision": null}]
        });
        let ev = [Event {
            t_unix: 990.0,
            host: 2,
            vm: "vm1".into(),
            kind: "start".into(),
            reason: "vm1: host 1 is DEAD <now>".into(),
        }];
        let p = render(Some(&st), &ev, 1002.0, 2);
        assert!(p.contains("<b id=\"global-maintenance\">ON</b>"));
        assert!(p.contains("<td class=\"num\">1</td><td><span class=\"st DEAD\">DEAD</span></td>"));
        assert!(p.contains("<td>LOCAL</td>"));
        assert!(p.contains(
            "<tr><td>vm1</td><td>2 (here: running)</td><td>held</td><td class=\"num\">2</td><td class=\"num\">1</td><td class=\"num\">4</td>"
        ));
        assert!(p.contains("<td>start</td><td>vm1: host 1 is DEAD &lt;now&gt;</td>"));
        assert!(p.contains("<svg id=\"ha-timeline\""));
        assert!(render(None, &[], 0.0, 2).contains("not written its status yet"));
    }

    #[test]
    fn metrics_count_fences_by_result() {
        let st = serde_json::json!({"fencing": {"busy": 2, "fences": {"declared": 3, "failed": 1}, "last_fence_seconds": 2.5}});
        let m = metrics(Some(&st));
        assert!(
            m.contains("hactl_ha_fences_total{result=\"declared\"} 3"),
            "{m}"
        );
        assert!(
            m.contains("hactl_ha_fences_total{result=\"failed\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("hactl_ha_fences_total{result=\"not_declared\"} 0"),
            "{m}"
        );
        assert!(m.contains("hactl_ha_fence_running 1"), "{m}");
        assert!(m.contains("hactl_ha_last_fence_seconds 2.5"), "{m}");
        let m = metrics(None);
        assert!(m.contains("hactl_ha_fence_running 0"), "{m}");
    }

    #[test]
    fn tail_reads_whole_lines_of_the_end() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("events.jsonl");
        let mut s = String::new();
        for i in 0..10_000 {
            s.push_str(&format!(
                "{{\"t_unix\":{i}.0,\"host\":1,\"vm\":\"\",\"kind\":\"state\",\"reason\":\"r{i}\"}}\n"
            ));
        }
        std::fs::write(&f, s).unwrap();
        let e = tail_events(&f, 5);
        assert_eq!(e.len(), 5);
        assert_eq!(e[4].reason, "r9999");
        assert!(tail_events(&d.path().join("none"), 5).is_empty());
    }
}
