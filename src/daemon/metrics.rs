//! The opt-in Prometheus endpoint (`metrics_listen = ADDR:PORT`) and, with
//! `metrics_web = 1`, the read-only web view at `/` on the same listener
//! ([`super::web`]); served by [`crate::web`] on a thread of its own, with
//! the figures collected from the daemon at each request.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::info;

use super::Daemon;
use super::lockspace::SpaceList;
use super::resource::ResList;
use crate::early_warning::Reason;
use crate::hosts::HostState;
use crate::metrics::{CONTENT_TYPE, Exposition};
use crate::web::Reply;

/// Binds `addr` and serves the metrics (and the web view) on a thread of
/// their own.
pub fn start(d: Arc<Daemon>, addr: &str) -> Result<(), String> {
    let web = d.cfg.metrics_web;
    let dd = d.clone();
    let handler: crate::web::Handler = Arc::new(move |path, _query| match path {
        "/metrics" => Reply::ok(CONTENT_TYPE, render(&dd)),
        "/" if web => Reply::html(super::web::page(&dd)),
        "/" => Reply::ok(CONTENT_TYPE, render(&dd)),
        _ if web => Reply::not_found("/ or /metrics"),
        _ => Reply::not_found("/metrics"),
    });
    let local = crate::web::serve(addr, "metrics", handler)?;
    info!("metrics endpoint on http://{local}/metrics");
    if web {
        info!("web view on http://{local}/");
    }
    Ok(())
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
        .iter()
        .map(|(n, c)| (n.clone(), c.clone()))
        .collect();
    for (name, c) in &counters {
        let h = c.latency.lock().clone();
        e.histogram("hactl_renewal_latency_seconds", &[("lockspace", name)], &h);
    }
    e.family(
        "hactl_renewals_total",
        "counter",
        "This host's delta-lease renewal attempts, by result.",
    );
    for (name, c) in &counters {
        let ok = c.latency.lock().count() as f64;
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
        "hactl_lease_warnings_total",
        "counter",
        "Early warnings raised, by reason (host_late: another host at risk).",
    );
    for (name, c) in &counters {
        let w = c.warnings.lock().clone();
        for r in Reason::OWN.iter().chain([&Reason::HostLate]) {
            e.sample(
                "hactl_lease_warnings_total",
                &[("lockspace", name), ("reason", r.as_str())],
                w.get(r).copied().unwrap_or(0) as f64,
            );
        }
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
        "hactl_lease_warning",
        "gauge",
        "1 while this host's lease is in danger for this reason (early warning), else 0.",
    );
    e.family(
        "hactl_lease_seconds_until_kill",
        "gauge",
        "Seconds until this host's lease holders are killed if no renewal succeeds (id_renewal_fail_seconds after the last good renewal).",
    );
    e.family(
        "hactl_renewal_last_success_age_seconds",
        "gauge",
        "Seconds since this host's last good renewal.",
    );
    e.family(
        "hactl_host_at_risk",
        "gauge",
        "1 for another host whose lease has not changed for longer than a missed renewal explains, while still LIVE.",
    );
    e.family(
        "hactl_host_renewal_age_seconds",
        "gauge",
        "Seconds since this daemon saw each host's delta lease change.",
    );
    let mono = crate::timeouts::monotime();
    for sp in &spaces {
        let name = sp.name.to_string_lossy();
        let st = sp.state.lock();
        let active: Vec<Reason> = st.warn.active().collect();
        for r in Reason::OWN {
            e.sample(
                "hactl_lease_warning",
                &[("lockspace", &name), ("reason", r.as_str())],
                f64::from(u8::from(active.contains(&r))),
            );
        }
        let last = st.core.status().renewal_last_success;
        let kill_at = st.warn.kill_at_ms(last) / 1000;
        e.sample(
            "hactl_lease_seconds_until_kill",
            &[("lockspace", &name)],
            kill_at.saturating_sub(mono) as f64,
        );
        e.sample(
            "hactl_renewal_last_success_age_seconds",
            &[("lockspace", &name)],
            mono.saturating_sub(last) as f64,
        );
        let risk: Vec<u64> = st.warn.hosts_at_risk().collect();
        for (&host_id, h) in &st.core.hosts().history {
            if h.state.is_none() {
                continue;
            }
            let id = host_id.to_string();
            e.sample(
                "hactl_host_at_risk",
                &[("lockspace", &name), ("host_id", &id)],
                f64::from(u8::from(risk.contains(&host_id))),
            );
            if let Some(hs) = st.core.hosts().hosts.get(host_id as usize - 1) {
                e.sample(
                    "hactl_host_renewal_age_seconds",
                    &[("lockspace", &name), ("host_id", &id)],
                    mono.saturating_sub(hs.last_seen()) as f64,
                );
            }
        }
    }
    e.family(
        "hactl_host_state",
        "gauge",
        "1 for the state this daemon judges each host to be in (sanlock's rules), 0 for the others.",
    );
    for sp in &spaces {
        let name = sp.name.to_string_lossy();
        let st = sp.state.lock();
        for (host_id, h) in &st.core.hosts().history {
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
        let now = sp.state.lock().lease_file;
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
        let res = d.res.lock();
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
