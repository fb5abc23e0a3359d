//! The two read-only web views in a real headless Chromium (Debian's
//! `chromium`, driven by `chromedriver`), each with a live cluster behind
//! it: what the pages show is checked against `client gets` and `ha
//! status --json`, and that they update themselves (no reload) when the
//! cluster changes. Screenshots go to `target/screenshots/`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use hactl::ha::cluster::{Cluster, ClusterOpts};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn gets(run_dir: &Path) -> std::collections::BTreeMap<u64, (u64, String)> {
    parse_gets_hosts(
        &run_env(
            hactl(),
            &["client", "gets", "-h", "1"],
            &[("SANLOCK_RUN_DIR", p(run_dir))],
        )
        .text(),
    )
}

/// The hosts table's rows by host_id: (state cell, generation cell).
fn page_hosts(b: &Browser) -> std::collections::BTreeMap<u64, Vec<String>> {
    b.table("hosts-LS")
        .into_iter()
        .filter_map(|r| Some((r.first()?.parse().ok()?, r)))
        .collect()
}

#[test]
fn daemon_page_matches_client_gets_and_follows_a_hung_host() {
    let dir = workdir();
    let ids = dir.path().join("ids");
    lockspace_file(&ids);
    let port = free_port();
    let conf = dir.path().join("sanlock.conf");
    std::fs::write(
        &conf,
        format!("metrics_listen = 127.0.0.1:{port}\nmetrics_web = 1\n"),
    )
    .unwrap();
    let h1 = HactlDaemon::start_with_env(
        &dir.path().join("h1"),
        &[],
        &[("HACTL_SANLOCK_CONF", p(&conf))],
    );
    let h2 = HactlDaemon::start(&dir.path().join("h2"));
    std::thread::scope(|s| {
        s.spawn(|| add_lockspace(&h1.run_dir, 1, &ids));
        s.spawn(|| add_lockspace(&h2.run_dir, 2, &ids));
    });
    wait_for("host 2 LIVE", Duration::from_secs(30), || {
        gets(&h1.run_dir).get(&2).is_some_and(|h| h.1 == "LIVE")
    });
    // A few renewals for the plot.
    std::thread::sleep(Duration::from_secs(4));

    let b = Browser::start();
    b.goto(&format!("http://127.0.0.1:{port}/"));
    let rows = page_hosts(&b);
    let truth = gets(&h1.run_dir);
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        truth.keys().collect::<Vec<_>>(),
        "{rows:?}"
    );
    for (id, (generation, state)) in &truth {
        let r = &rows[id];
        assert_eq!(&r[1], state, "host {id}: {r:?}");
        assert_eq!(r[2], generation.to_string(), "host {id}: {r:?}");
    }
    // Host 2's time left before FAIL and DEAD (io_timeout 1: 8 s, 68 s).
    let secs = |c: &str| c.trim_end_matches(" s").parse::<u64>().unwrap();
    let r2 = &rows[&2];
    assert!(secs(&r2[6]) <= 9 && secs(&r2[7]) <= 69, "{r2:?}");
    assert!(secs(&r2[7]) - secs(&r2[6]) == 60, "{r2:?}");
    assert_eq!(r2[6..8], rows[&2][6..8]);
    assert_eq!(rows[&1][4], "this host");
    let text = b.text();
    assert!(text.contains("lease healthy: last good renewal"), "{text}");
    let plotted = b.eval("return document.querySelectorAll('#latency-LS circle.ok').length;");
    assert!(
        plotted.as_u64().unwrap() >= 2,
        "renewals plotted: {plotted}"
    );
    let refs = b.eval(
        "return Array.from(document.querySelectorAll('#latency-LS text')).map(t => t.textContent);",
    );
    for l in ["io_timeout 1 s", "fail threshold 8 s", "warning 0.5 s"] {
        assert!(
            refs.as_array().unwrap().iter().any(|t| t == l),
            "{l} line: {refs}"
        );
    }

    // Host 2 hangs: the page, not reloaded, shows it at risk, then FAIL,
    // as client gets does.
    kill(Pid::from_raw(h2.pid()), Signal::SIGSTOP).unwrap();
    wait_for(
        "the page to show host 2 FAIL",
        Duration::from_secs(40),
        || page_hosts(&b).get(&2).is_some_and(|r| r[1] == "FAIL"),
    );
    assert_eq!(gets(&h1.run_dir)[&2].1, "FAIL");
    let warnings = b.table("warnings-LS");
    assert!(
        warnings
            .iter()
            .any(|w| w[3] == "host_late" && w[4].contains("host 2 at risk")),
        "{warnings:?}"
    );
    let changes = b.table("changes-LS");
    let fail = changes
        .iter()
        .find(|c| c[1] == "2" && c[2].ends_with("FAIL"))
        .expect("the FAIL change listed");
    assert!(fail[3].contains("> id_renewal_fail_seconds 8s"), "{fail:?}");
    let spans = b.eval("return document.querySelectorAll('#timeline-LS rect.span.FAIL').length;");
    assert_eq!(spans.as_u64(), Some(1), "a FAIL span on the timeline");
    b.screenshot(&screenshot_path("daemon-web.png"));
    kill(Pid::from_raw(h2.pid()), Signal::SIGKILL).unwrap();
}

/// `ha status --json` of the cluster as host 1 sees it.
fn ha_status(c: &Cluster) -> Value {
    let h = c.host(1);
    let o = run_env(
        hactl(),
        &["ha", "status", "-c", p(&h.config), "--json"],
        &[("SANLOCK_RUN_DIR", p(&h.daemon_dir))],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    serde_json::from_slice(&o.stdout).unwrap()
}

/// What the page shows that `ha status` shows too, as text: hosts
/// (id, state, score, maintenance) and VMs (name, runs on, lease state,
/// owner, lver).
fn from_page(b: &Browser) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let hosts = b
        .table("ha-hosts")
        .into_iter()
        .map(|r| vec![r[0].clone(), r[1].clone(), r[3].clone(), r[4].clone()])
        .collect();
    let vms = b
        .table("ha-vms")
        .into_iter()
        .map(|r| {
            let on = r[1].split(" (here").next().unwrap().to_string();
            vec![r[0].clone(), on, r[2].clone(), r[3].clone(), r[5].clone()]
        })
        .collect();
    (hosts, vms)
}

fn from_status(v: &Value) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let s = |x: &Value| match x {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        x => x.to_string(),
    };
    let hosts = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let maint = match h["local_maintenance"] {
                Value::Bool(true) => "LOCAL",
                Value::Bool(false) => "-",
                _ => "?",
            };
            vec![
                s(&h["host_id"]),
                s(&h["state"]),
                s(&h["score"]),
                maint.to_string(),
            ]
        })
        .collect();
    let vms = v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let on: Vec<String> = m["whiteboard_hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(s)
                .collect();
            vec![
                s(&m["name"]),
                if on.is_empty() {
                    "-".into()
                } else {
                    on.join(", ")
                },
                s(&m["lease"]["state"]),
                s(&m["lease"]["owner"]),
                s(&m["lease"]["lver"]),
            ]
        })
        .collect();
    (hosts, vms)
}

#[test]
fn ha_agent_page_matches_ha_status_and_updates_itself() {
    let dir = workdir();
    let web = free_port();
    let metrics = free_port();
    let mut o = ClusterOpts::new(Path::new(hactl()), 2, 3);
    o.agent_args
        .insert(1, vec!["--web".into(), format!("127.0.0.1:{web}")]);
    o.daemon_args.insert(
        1,
        vec![
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics}"),
            "--metrics-web".into(),
        ],
    );
    let mut c = Cluster::create(dir.path(), o).expect("cluster files");
    c.start_all().expect("hosts start");
    wait_for("every VM to run", Duration::from_secs(90), || {
        c.running_on(Duration::from_secs(3))
            .iter()
            .all(Option::is_some)
    });

    let b = Browser::start();
    b.goto(&format!("http://127.0.0.1:{web}/"));
    // Both read the same storage a moment apart: equal once settled.
    let t0 = Instant::now();
    let last = loop {
        let page = from_page(&b);
        let st = ha_status(&c);
        let truth = from_status(&st);
        if page == truth {
            break (page.0, page.1, st);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the page shows {page:?}\nha status says {truth:?}\n{st}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let (hosts, vms, st) = last;
    assert_eq!(hosts.len(), 2, "{st}");
    assert!(hosts.iter().all(|h| h[1] == "LIVE"), "{hosts:?}");
    assert_eq!(vms.len(), 3);
    for v in &vms {
        assert_eq!(v[2], "held", "{v:?}");
        assert_eq!(v[1], v[3], "runs where its lease owner is: {v:?}");
        assert!(v[4].parse::<u64>().unwrap() >= 1, "lver {v:?}");
    }
    // Decisions with their reasons.
    let events = b.table("ha-events");
    assert!(
        events
            .iter()
            .any(|e| e[2] == "state" && e[3].starts_with("joined lockspace hademo as host 1")),
        "{events:?}"
    );
    let n_timeline = b.eval("return document.querySelectorAll('#ha-timeline path.mark').length;");
    assert!(n_timeline.as_u64().unwrap() >= 1, "{n_timeline}");
    assert_eq!(
        b.eval("return document.getElementById('global-maintenance').textContent;"),
        "off"
    );

    // Global maintenance on: the page shows it without a reload, and
    // keeps matching ha status.
    let cfg = c.host(1).config.clone();
    let m = run(
        hactl(),
        &["ha", "maintenance", "--global", "on", "-c", p(&cfg)],
    );
    assert_eq!(m.code, 0, "{}", m.stderr);
    wait_for(
        "the page to show global maintenance ON",
        Duration::from_secs(20),
        || b.eval("return document.getElementById('global-maintenance').textContent;") == "ON",
    );
    assert_eq!(ha_status(&c)["global_maintenance"], true);
    b.screenshot(&screenshot_path("ha-web.png"));

    // The daemon's own view of the same cluster, for the README.
    b.goto(&format!("http://127.0.0.1:{metrics}/"));
    assert!(b.table("hosts-hademo").len() >= 2);
    b.screenshot(&screenshot_path("daemon-web-ha-cluster.png"));
    c.stop_all();
}
