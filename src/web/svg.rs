//! Inline SVG charts for the web views (pure): renewal latency over time
//! on a log scale against reference lines, and state timelines with a
//! tooltip (`<title>`) on every span and mark.

use std::fmt::Write;

use super::html::{clock, esc};

/// What a latency point was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointKind {
    Ok,
    Failed,
    /// Still running: its value is how long so far.
    Running,
}

pub struct Point {
    /// Seconds relative to now (<= 0).
    pub t: f64,
    /// Seconds.
    pub v: f64,
    pub kind: PointKind,
    pub title: String,
}

/// A horizontal reference line at `v` seconds.
pub struct Line {
    pub v: f64,
    pub label: String,
    pub color: &'static str,
}

const W: f64 = 900.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 170.0;

fn fmt_secs(v: f64) -> String {
    if v < 1.0 {
        format!("{} ms", (v * 1000.0).round())
    } else {
        format!("{} s", v)
    }
}

/// Latency points over the last `window` seconds, y on a log scale from
/// 1 ms to above the highest reference line.
pub fn latency_plot(id: &str, points: &[Point], window: f64, lines: &[Line]) -> String {
    let (h, top, bottom) = (260.0, 12.0, 30.0);
    let ymin: f64 = 0.001;
    let ymax = lines
        .iter()
        .map(|l| l.v)
        .chain(points.iter().map(|p| p.v))
        .fold(1.0f64, f64::max)
        * 1.5;
    let plot_h = h - top - bottom;
    let plot_w = W - LEFT - RIGHT;
    let y = |v: f64| {
        let v = v.clamp(ymin, ymax);
        top + (ymax.ln() - v.ln()) / (ymax.ln() - ymin.ln()) * plot_h
    };
    let x = |t: f64| LEFT + ((t + window) / window).clamp(0.0, 1.0) * plot_w;
    let mut o = format!(
        "<svg id=\"{}\" viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\" font-family=\"sans-serif\">",
        esc(id)
    );
    let _ = write!(
        o,
        "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"#fafbfc\" stroke=\"#ccd\"/>"
    );
    // Decades on y.
    let mut d = ymin;
    while d <= ymax {
        let yy = y(d);
        let _ = write!(
            o,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#666\">{}</text>",
            LEFT + plot_w,
            LEFT - 4.0,
            yy + 4.0,
            fmt_secs(d)
        );
        d *= 10.0;
    }
    // Minutes on x.
    let step = if window > 1200.0 { 600.0 } else { 60.0 };
    let mut t = 0.0;
    while t <= window {
        let xx = x(-t);
        let label = if t == 0.0 {
            "now".to_string()
        } else {
            format!("-{} min", (t / 60.0).round())
        };
        let _ = write!(
            o,
            "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"#eee\"/>\
             <text x=\"{xx:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#666\">{label}</text>",
            top + plot_h,
            h - 12.0
        );
        t += step;
    }
    for l in lines {
        let yy = y(l.v);
        let _ = write!(
            o,
            "<line class=\"ref\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"{c}\" \
             stroke-dasharray=\"6 3\" stroke-width=\"1.5\"/><text x=\"{}\" y=\"{:.1}\" fill=\"{c}\">{}</text>",
            LEFT + plot_w,
            LEFT + plot_w + 6.0,
            yy + 4.0,
            esc(&l.label),
            c = l.color
        );
    }
    for p in points {
        let (xx, yy) = (x(p.t), y(p.v));
        let title = format!("<title>{}</title>", esc(&p.title));
        match p.kind {
            PointKind::Ok => {
                let _ = write!(
                    o,
                    "<circle class=\"ok\" cx=\"{xx:.1}\" cy=\"{yy:.1}\" r=\"2.5\" fill=\"#1a73e8\">{title}</circle>"
                );
            }
            PointKind::Failed => {
                let _ = write!(
                    o,
                    "<path class=\"failed\" d=\"M{:.1} {:.1}l8 8m0 -8l-8 8\" stroke=\"#d93025\" stroke-width=\"2\">{title}</path>",
                    xx - 4.0,
                    yy - 4.0
                );
            }
            PointKind::Running => {
                let _ = write!(
                    o,
                    "<rect class=\"running\" x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"#f29b38\">{title}</rect>",
                    xx - 4.0,
                    yy - 4.0
                );
            }
        }
    }
    let _ = write!(
        o,
        "<text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\" fill=\"#444\">renewal time</text></svg>",
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    o
}

/// A coloured span of a timeline lane, between two Unix times.
pub struct Span {
    pub from: f64,
    pub to: f64,
    /// A state name: picks the colour.
    pub state: String,
    pub title: String,
}

/// A moment on a lane (a warning, a decision).
pub struct Mark {
    pub at: f64,
    pub color: &'static str,
    pub title: String,
}

pub struct Lane {
    pub label: String,
    pub spans: Vec<Span>,
    pub marks: Vec<Mark>,
}

pub fn state_color(state: &str) -> &'static str {
    match state {
        "LIVE" | "running" | "start" => "#3aa757",
        "FAIL" | "stop" | "exited" => "#f29b38",
        "DEAD" | "failed_start" | "lost_race" => "#d93025",
        "RISK" | "wait" => "#f4c20d",
        "FREE" => "#dadce0",
        _ => "#9aa0a6",
    }
}

/// Lanes over the Unix times `t0..t1`, with clock labels (UTC).
pub fn timeline(id: &str, lanes: &[Lane], t0: f64, t1: f64) -> String {
    let lane_h = 22.0;
    let top = 8.0;
    let h = top + lanes.len() as f64 * lane_h + 28.0;
    let plot_w = W - LEFT - 20.0;
    let span = (t1 - t0).max(1.0);
    let x = |t: f64| LEFT + ((t - t0) / span).clamp(0.0, 1.0) * plot_w;
    let mut o = format!(
        "<svg id=\"{}\" viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\" font-family=\"sans-serif\">",
        esc(id)
    );
    for k in 0..=6 {
        let t = t0 + span * k as f64 / 6.0;
        let xx = x(t);
        let _ = write!(
            o,
            "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666\">{}</text>",
            h - 24.0,
            h - 10.0,
            clock(t as u64)
        );
    }
    for (i, lane) in lanes.iter().enumerate() {
        let yy = top + i as f64 * lane_h;
        let _ = write!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#222\">{}</text>",
            LEFT - 6.0,
            yy + 15.0,
            esc(&lane.label)
        );
        for s in &lane.spans {
            let (a, b) = (x(s.from), x(s.to));
            let _ = write!(
                o,
                "<rect class=\"span {st}\" x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"{}\"><title>{}</title></rect>",
                yy + 4.0,
                (b - a).max(1.5),
                state_color(&s.state),
                esc(&s.title),
                st = esc(&s.state)
            );
        }
        for m in &lane.marks {
            let xx = x(m.at);
            let _ = write!(
                o,
                "<path class=\"mark\" d=\"M{:.1} {:.1}l5 -8h-10z\" fill=\"{}\" stroke=\"#333\" stroke-width=\"0.5\"><title>{}</title></path>",
                xx,
                yy + 11.0,
                m.color,
                esc(&m.title)
            );
        }
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_places_points_on_a_log_scale() {
        let pts = [
            Point {
                t: -10.0,
                v: 0.01,
                kind: PointKind::Ok,
                title: "10 ms".into(),
            },
            Point {
                t: 0.0,
                v: 1.0,
                kind: PointKind::Failed,
                title: "failed <x>".into(),
            },
        ];
        let lines = [Line {
            v: 10.0,
            label: "io_timeout 10 s".into(),
            color: "#d93025",
        }];
        let s = latency_plot("lat", &pts, 3600.0, &lines);
        assert!(s.starts_with("<svg id=\"lat\""));
        assert_eq!(s.matches("<circle class=\"ok\"").count(), 1);
        assert_eq!(s.matches("class=\"failed\"").count(), 1);
        assert!(s.contains("<title>failed &lt;x&gt;</title>"));
        assert!(s.contains(">io_timeout 10 s</text>"));
        assert!(s.contains(">-60 min</text>") && s.contains(">now</text>"));
        for d in ["1 ms", "10 ms", "100 ms", "1 s", "10 s"] {
            assert!(s.contains(&format!(">{d}</text>")), "{d}");
        }
    }

    #[test]
    fn timeline_spans_and_marks() {
        let lanes = [Lane {
            label: "host 2".into(),
            spans: vec![
                Span {
                    from: 100.0,
                    to: 150.0,
                    state: "LIVE".into(),
                    title: "LIVE".into(),
                },
                Span {
                    from: 150.0,
                    to: 200.0,
                    state: "FAIL".into(),
                    title: "FAIL: timestamp unchanged".into(),
                },
            ],
            marks: vec![Mark {
                at: 140.0,
                color: "#f4c20d",
                title: "at risk".into(),
            }],
        }];
        let s = timeline("tl", &lanes, 100.0, 200.0);
        assert!(s.contains("class=\"span FAIL\""));
        assert!(s.contains("<title>FAIL: timestamp unchanged</title>"));
        assert_eq!(s.matches("class=\"mark\"").count(), 1);
        assert!(s.contains(">host 2</text>"));
    }
}
