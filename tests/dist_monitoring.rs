//! The monitoring files under dist/ checked with Prometheus's own tool
//! (`promtool`, Debian's prometheus package) against a live daemon: the
//! alert rules load and their unit tests pass, every PromQL expression
//! of the Grafana dashboard parses, every metric the dashboard and the
//! rules use is one the daemon exposes, and the exposition passes
//! `promtool check metrics`.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn promtool() -> &'static str {
    let p = "/usr/bin/promtool";
    assert!(
        Path::new(p).exists(),
        "promtool is missing: tools/test.sh installs Debian's prometheus package"
    );
    p
}

fn dist(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist").join(rel)
}

/// Every `expr` in the dashboard, with Grafana's variables filled in.
fn dashboard_exprs() -> Vec<String> {
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(dist("grafana/hactl-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    assert_eq!(d["uid"], "hactl-overview");
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(METRIC{...}, label) -> the selector alone.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel.to_string())
                .expect("a label_values query");
            out.push(inner);
        }
    }
    out.into_iter()
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
                .replace("$lockspace", ".*")
        })
        .collect()
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("hactl_") {
        let s = i + at;
        let mut e = s;
        while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
            e += 1;
        }
        out.insert(text[s..e].to_string());
        i = e;
    }
    out
}

#[test]
fn rules_and_dashboard_pass_promtool_against_a_live_daemon() {
    // The rules: load, and their unit tests.
    for args in [
        vec!["check", "rules", "hactl-rules.yml"],
        vec!["test", "rules", "hactl-rules.test.yml"],
    ] {
        let o = Command::new(promtool())
            .args(&args)
            .current_dir(dist("prometheus"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // The dashboard's expressions, as recording rules promtool parses.
    let exprs = dashboard_exprs();
    let dir = workdir();
    let mut y = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        y.push_str(&format!(
            "      - record: dashboard:expr{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let rules = dir.path().join("dashboard-rules.yml");
    std::fs::write(&rules, y).unwrap();
    let o = Command::new(promtool())
        .args(["check", "rules", p(&rules)])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "a dashboard expression does not parse: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // A live daemon in a two-host lockspace, so that every family has samples.
    let ids = dir.path().join("ids");
    lockspace_file(&ids);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let h1 = HactlDaemon::start_with(&dir.path().join("h1"), &["--metrics-listen", &listen]);
    let h2 = HactlDaemon::start(&dir.path().join("h2"));
    std::thread::scope(|s| {
        s.spawn(|| add_lockspace(&h1.run_dir, 1, &ids));
        s.spawn(|| add_lockspace(&h2.run_dir, 2, &ids));
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (status, _, body) = http(port, "GET /metrics HTTP/1.0\r\n\r\n");
        assert_eq!(status, "HTTP/1.0 200 OK");
        if body.contains("hactl_host_renewal_age_seconds{lockspace=\"LS\",host_id=\"2\"}")
            && body.contains("hactl_renewal_latency_seconds_count")
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no host 2 in the metrics: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    parse_exposition(&text);
    let mut c = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // Every metric named in the dashboard and the rules is exposed.
    let exposed = metric_names(&text);
    let rules_text = std::fs::read_to_string(dist("prometheus/hactl-rules.yml")).unwrap();
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| metric_names(e))
        .chain(metric_names(&rules_text))
        .collect();
    assert!(used.len() >= 10, "{used:?}");
    let missing: Vec<&String> = used.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "used but not exposed: {missing:?}\n{text}"
    );
}
