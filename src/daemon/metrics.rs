//! The opt-in Prometheus endpoint (`metrics_listen = ADDR:PORT`): one
//! thread answering HTTP/1.0 `GET /metrics`, one connection at a time,
//! with the figures collected from the daemon at that moment. A slow or
//! malformed client gets a timeout or a 400; the daemon is not affected.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{info, warn};

use super::Daemon;
use super::lockspace::SpaceList;
use super::resource::ResList;
use crate::hosts::HostState;
use crate::metrics::{Exposition, http_response};

/// Binds `addr` and serves the metrics on a thread of their own.
pub fn start(d: Arc<Daemon>, addr: &str) -> Result<(), String> {
    let l = TcpListener::bind(addr).map_err(|e| format!("cannot listen: {e}"))?;
    info!(
        "metrics endpoint on http://{}/metrics",
        l.local_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for s in l.incoming() {
                match s {
                    Ok(s) => answer(&d, s),
                    Err(e) => warn!("metrics accept: {e}"),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn answer(d: &Daemon, s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut r = BufReader::new(s);
    // The request line, bounded; the headers are read and ignored.
    let mut line = String::new();
    let mut limited = (&mut r).take(8192);
    if limited.read_line(&mut line).is_err() {
        return;
    }
    let mut hdr = String::new();
    while limited.read_line(&mut hdr).is_ok_and(|n| n > 0) && hdr.trim_end() != "" {
        hdr.clear();
    }
    let reply = http_response(line.trim_end(), || render(d));
    let _ = r.get_mut().write_all(&reply);
}

/// The exposition of everything the endpoint reports.
pub fn render(d: &Daemon) -> String {
    let mut e = Exposition::default();
    let spaces: Vec<_> = d.spaces_on(SpaceList::Active);
    for sp in &spaces {
        // So the host-state gauges are as of now, not of the last renewal.
        sp.judge_hosts();
    }

    e.family(
        "hactl_renewal_latency_seconds",
        "histogram",
        "I/O time (read + write) of this host's successful delta-lease renewals.",
    );
    let counters: Vec<_> = d
        .renew_counters
        .lock()
        .unwrap()
        .iter()
        .map(|(n, c)| (n.clone(), c.clone()))
        .collect();
    for (name, c) in &counters {
        let h = c.latency.lock().unwrap().clone();
        e.histogram("hactl_renewal_latency_seconds", &[("lockspace", name)], &h);
    }
    e.family(
        "hactl_renewals_total",
        "counter",
        "This host's delta-lease renewal attempts, by result.",
    );
    for (name, c) in &counters {
        let ok = c.latency.lock().unwrap().count() as f64;
        e.sample(
            "hactl_renewals_total",
            &[("lockspace", name), ("result", "ok")],
            ok,
        );
        e.sample(
            "hactl_renewals_total",
            &[("lockspace", name), ("result", "error")],
            c.errors.load(Ordering::Relaxed) as f64,
        );
    }
    e.family(
        "hactl_io_timeouts_total",
        "counter",
        "Renewal attempts whose I/O did not finish within its timeout.",
    );
    for (name, c) in &counters {
        let n = c.io_timeouts.load(Ordering::Relaxed);
        e.sample("hactl_io_timeouts_total", &[("lockspace", name)], n as f64);
    }
    e.family(
        "hactl_host_state",
        "gauge",
        "1 for the state this daemon judges each host to be in (sanlock's rules), 0 for the others.",
    );
    for sp in &spaces {
        let name = sp.name.to_string_lossy();
        let st = sp.state.lock().unwrap();
        for (host_id, h) in &st.hosts.history {
            let Some(cur) = h.state else { continue };
            let id = host_id.to_string();
            for s in HostState::ALL {
                e.sample(
                    "hactl_host_state",
                    &[
                        ("lockspace", &name),
                        ("host_id", &id),
                        ("state", s.as_str()),
                    ],
                    f64::from(u8::from(s == cur)),
                );
            }
        }
    }
    e.family(
        "hactl_lockspace_file_problem",
        "gauge",
        "1 if the lockspace's file was deleted, replaced or truncated under the daemon (its renewals then fail).",
    );
    for sp in &spaces {
        let name = sp.name.to_string_lossy();
        let now = sp.state.lock().unwrap().lease_file;
        for p in [
            crate::io::FileProblem::Deleted,
            crate::io::FileProblem::Replaced,
            crate::io::FileProblem::Truncated,
        ] {
            e.sample(
                "hactl_lockspace_file_problem",
                &[("lockspace", &name), ("problem", p.as_str())],
                f64::from(u8::from(now == Some(p))),
            );
        }
    }
    e.family(
        "hactl_leases_held",
        "gauge",
        "Resource leases this daemon holds, by lockspace.",
    );
    {
        let res = d.res.lock().unwrap();
        for sp in &spaces {
            let name = sp.name.to_string_lossy();
            let n = res
                .list
                .iter()
                .filter(|r| r.list == ResList::Held && r.ls.same_as(&sp.name))
                .count();
            e.sample("hactl_leases_held", &[("lockspace", &name)], n as f64);
        }
    }
    e.family(
        "hactl_clients_registered",
        "gauge",
        "Processes registered with the daemon.",
    );
    let registered = d
        .clients
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .filter(|c| c.registered)
        .count();
    e.sample("hactl_clients_registered", &[], registered as f64);
    e.family(
        "hactl_kills_total",
        "counter",
        "Lease holders signalled or killpaths run (lockspace failure, removal, requests).",
    );
    for (how, c) in [
        ("sigterm", &d.kills.sigterm),
        ("sigkill", &d.kills.sigkill),
        ("killpath", &d.kills.killpath),
    ] {
        e.sample(
            "hactl_kills_total",
            &[("how", how)],
            c.load(Ordering::Relaxed) as f64,
        );
    }
    e.finish()
}
