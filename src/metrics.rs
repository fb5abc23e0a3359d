//! Prometheus text exposition (format 0.0.4) for the daemon's opt-in
//! metrics endpoint: a latency histogram, and families of samples encoded
//! by the `prometheus` crate. Pure; the daemon collects the figures and
//! serves the text.

use prometheus::TextEncoder;
use prometheus::proto::{Bucket, Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

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

/// Builds an exposition: each metric family is declared once with
/// [`Exposition::family`], then its samples follow. The text is written
/// by the `prometheus` crate's encoder (format 0.0.4, which checks names
/// and escapes label values); families without samples are left out, as
/// the crate's own registry does.
#[derive(Default)]
pub struct Exposition {
    families: Vec<MetricFamily>,
}

fn metric(l: &[(&str, &str)]) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        l.iter()
            .map(|(k, v)| {
                let mut p = LabelPair::default();
                p.set_name(k.to_string());
                p.set_value(v.to_string());
                p
            })
            .collect(),
    );
    m
}

impl Exposition {
    /// `kind`: "counter", "gauge" or "histogram".
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(match kind {
            "counter" => MetricType::COUNTER,
            "histogram" => MetricType::HISTOGRAM,
            _ => MetricType::GAUGE,
        });
        self.families.push(f);
    }

    fn of(&mut self, name: &str) -> &mut MetricFamily {
        self.families
            .iter_mut()
            .rev()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("metric family {name} not declared"))
    }

    /// A counter or gauge sample of a declared family.
    pub fn sample(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        let f = self.of(name);
        let mut m = metric(l);
        if f.get_field_type() == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(v);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(v);
            m.set_gauge(g);
        }
        f.mut_metric().push(m);
    }

    /// The `_bucket`, `_sum` and `_count` samples of a histogram family.
    pub fn histogram(&mut self, name: &str, l: &[(&str, &str)], h: &Histogram) {
        let mut ph = prometheus::proto::Histogram::default();
        let mut cum = 0;
        let mut buckets = Vec::new();
        for (i, b) in LATENCY_BOUNDS.iter().enumerate() {
            cum += h.counts[i];
            let mut pb = Bucket::default();
            pb.set_upper_bound(*b);
            pb.set_cumulative_count(cum);
            buckets.push(pb);
        }
        ph.set_bucket(buckets);
        ph.set_sample_count(h.count());
        ph.set_sample_sum(h.sum);
        let mut m = metric(l);
        m.set_histogram(ph);
        self.of(name).mut_metric().push(m);
    }

    pub fn finish(self) -> String {
        let fams: Vec<MetricFamily> = self
            .families
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect();
        TextEncoder::new()
            .encode_to_string(&fams)
            .expect("metric families are well formed")
    }
}

/// The content type of [`Exposition::finish`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
}
