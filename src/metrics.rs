//! Prometheus text exposition (format 0.0.4) for the daemon's opt-in
//! metrics endpoint: a latency histogram and a writer that groups samples
//! under their `# HELP` / `# TYPE` lines and escapes label values. Pure;
//! the daemon collects the figures and serves the text.

use std::fmt::Write;

/// Upper bounds (seconds) of the renewal latency buckets: a healthy local
/// renewal takes milliseconds; io_timeout is 10 s by default.
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A cumulative-on-output histogram of seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts, one per bound, then +Inf.
    counts: [u64; LATENCY_BOUNDS.len() + 1],
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, secs: f64) {
        let i = LATENCY_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.counts[i] += 1;
        self.sum += secs;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Escapes a label value as the text format requires.
fn escape(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn labels(l: &[(&str, &str)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Builds an exposition: each metric family is declared once with
/// [`Exposition::family`], then its samples follow.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        let _ = writeln!(self.out, "{name}{} {v}", labels(l));
    }

    /// The `_bucket`, `_sum` and `_count` samples of a histogram family.
    pub fn histogram(&mut self, name: &str, l: &[(&str, &str)], h: &Histogram) {
        let mut cum = 0;
        for (i, c) in h.counts.iter().enumerate() {
            cum += c;
            let le = LATENCY_BOUNDS
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".into());
            let mut with = l.to_vec();
            with.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with, cum as f64);
        }
        self.sample(&format!("{name}_sum"), l, h.sum);
        self.sample(&format!("{name}_count"), l, cum as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// The HTTP/1.0 answer to a request for the metrics (`text` is the
/// exposition): 200 for `GET /metrics` (or `/`), 404 for another path,
/// 405 for another method, 400 for what is not an HTTP request line.
pub fn http_response(request_line: &str, text: impl FnOnce() -> String) -> Vec<u8> {
    let mut it = request_line.split_whitespace();
    let (status, ctype, body) = match (it.next(), it.next(), it.next()) {
        (Some("GET"), Some("/metrics" | "/"), Some(v)) if v.starts_with("HTTP/") => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text())
        }
        (Some(_), Some(_), Some(v)) if v.starts_with("HTTP/") => {
            if request_line.starts_with("GET ") {
                ("404 Not Found", "text/plain", "try /metrics\n".into())
            } else {
                ("405 Method Not Allowed", "text/plain", "GET only\n".into())
            }
        }
        _ => (
            "400 Bad Request",
            "text/plain",
            "not an HTTP request\n".into(),
        ),
    };
    let mut r = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_text() {
        let mut h = Histogram::default();
        h.observe(0.0005);
        h.observe(0.02);
        h.observe(30.0);
        let mut e = Exposition::default();
        e.family("x_seconds", "histogram", "test");
        e.histogram("x_seconds", &[("lockspace", "L\"S")], &h);
        let t = e.finish();
        assert!(t.starts_with("# HELP x_seconds test\n# TYPE x_seconds histogram\n"));
        assert!(t.contains("x_seconds_bucket{lockspace=\"L\\\"S\",le=\"0.001\"} 1\n"));
        assert!(t.contains("x_seconds_bucket{lockspace=\"L\\\"S\",le=\"0.025\"} 2\n"));
        assert!(t.contains("x_seconds_bucket{lockspace=\"L\\\"S\",le=\"10\"} 2\n"));
        assert!(t.contains("x_seconds_bucket{lockspace=\"L\\\"S\",le=\"+Inf\"} 3\n"));
        assert!(t.contains("x_seconds_count{lockspace=\"L\\\"S\"} 3\n"));
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn http_answers() {
        let ok =
            String::from_utf8(http_response("GET /metrics HTTP/1.1", || "a 1\n".into())).unwrap();
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(ok.ends_with("\r\n\r\na 1\n"));
        assert!(ok.contains("Content-Length: 4\r\n"));
        let nf = String::from_utf8(http_response("GET /x HTTP/1.0", String::new)).unwrap();
        assert!(nf.starts_with("HTTP/1.0 404"));
        let na = String::from_utf8(http_response("POST /metrics HTTP/1.0", String::new)).unwrap();
        assert!(na.starts_with("HTTP/1.0 405"));
        let bad = String::from_utf8(http_response("\u{1}\u{2}", String::new)).unwrap();
        assert!(bad.starts_with("HTTP/1.0 400"));
    }
}
