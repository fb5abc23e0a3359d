//! HTML for the read-only web views: escaping, the page around a body
//! (styles, and a few lines of script that refresh the page's `<main>`
//! in place; without script a `<noscript>` meta refresh reloads it), and
//! tables. Everything is rendered on the server, so the tables need no
//! script at all.

use std::fmt::Write;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:baseline}
header h1{font-size:18px;margin:0}
header .meta{color:#aab;font-size:12px}
main{padding:12px 20px}
section{background:#fff;border:1px solid #dde;border-radius:6px;padding:10px 14px;margin:0 0 14px}
h2{font-size:16px;margin:4px 0 8px}
h3{font-size:14px;margin:10px 0 6px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f0f2f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.st{font-weight:600;padding:1px 6px;border-radius:3px;display:inline-block}
.LIVE{background:#d9f2dd;color:#14612a}.FAIL{background:#ffe2c2;color:#8a4200}
.DEAD{background:#ffd4d4;color:#9b0d0d}.UNKNOWN{background:#e6e6ee;color:#444}
.FREE{background:#f1f1f1;color:#777}.RISK{background:#fff3b0;color:#6b5500}
.warn{background:#fff3b0;border-color:#e6c200}.bad{background:#ffe5e5;border-color:#e39a9a}
.ok{color:#14612a}.muted{color:#777}
svg{max-width:100%;height:auto;background:#fff}
"#;

const SCRIPT: &str = r#"
(function(){
  var every = Number(document.body.dataset.refresh || 0) * 1000;
  if (!every) return;
  var stamp = document.getElementById('updated');
  function tick(){
    fetch(location.href, {cache: 'no-store'}).then(function(r){
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.text();
    }).then(function(t){
      var doc = new DOMParser().parseFromString(t, 'text/html');
      var m = doc.querySelector('main');
      if (m) document.querySelector('main').replaceWith(m);
      if (stamp) stamp.textContent = 'updated ' + new Date().toLocaleTimeString();
    }).catch(function(e){
      if (stamp) stamp.textContent = 'not updated: ' + e.message;
    }).finally(function(){ setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
"#;

/// A whole page: `main` is the part that refreshes every `refresh_secs`.
pub fn page(title: &str, subtitle: &str, refresh_secs: u64, main: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>{STYLE}</style>\
         <noscript><meta http-equiv=\"refresh\" content=\"{refresh_secs}\"></noscript></head>\
         <body data-refresh=\"{refresh_secs}\"><header><h1>{t}</h1><span class=\"meta\">{s}</span>\
         <span class=\"meta\" id=\"updated\"></span></header>\n<main>\n{main}</main>\
         <script>{SCRIPT}</script></body></html>\n",
        t = esc(title),
        s = esc(subtitle),
    )
}

/// A table cell: its HTML (already escaped) and a class.
pub struct Cell {
    pub html: String,
    pub class: &'static str,
}

impl Cell {
    pub fn text(s: impl AsRef<str>) -> Cell {
        Cell {
            html: esc(s.as_ref()),
            class: "",
        }
    }

    pub fn num(n: impl std::fmt::Display) -> Cell {
        Cell {
            html: esc(&n.to_string()),
            class: "num",
        }
    }

    /// A host state as a coloured badge (`class` names the colour).
    pub fn state(label: &str, class: &'static str) -> Cell {
        Cell {
            html: format!("<span class=\"st {class}\">{}</span>", esc(label)),
            class: "",
        }
    }

    pub fn raw(html: String) -> Cell {
        Cell { html, class: "" }
    }
}

/// A table with an id (for tests and links), a header row and rows.
pub fn table(id: &str, headers: &[&str], rows: &[Vec<Cell>]) -> String {
    let mut o = format!("<table id=\"{}\"><thead><tr>", esc(id));
    for h in headers {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    o.push_str("</tr></thead><tbody>\n");
    for r in rows {
        o.push_str("<tr>");
        for c in r {
            if c.class.is_empty() {
                let _ = write!(o, "<td>{}</td>", c.html);
            } else {
                let _ = write!(o, "<td class=\"{}\">{}</td>", c.class, c.html);
            }
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table>\n");
    o
}

/// "12:34:56" (UTC) from Unix seconds.
pub fn clock(unix: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        unix / 3600 % 24,
        unix / 60 % 60,
        unix % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_builds() {
        assert_eq!(
            esc("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
        let t = table(
            "h",
            &["host", "state"],
            &[vec![Cell::num(2), Cell::state("LIVE", "LIVE")]],
        );
        assert!(t.contains(
            "<tr><td class=\"num\">2</td><td><span class=\"st LIVE\">LIVE</span></td></tr>"
        ));
        let p = page("a<b", "sub", 3, "<p>x</p>");
        assert!(p.contains("<title>a&lt;b</title>"));
        assert!(p.contains("<main>\n<p>x</p></main>"));
        assert!(p.contains("<noscript><meta http-equiv=\"refresh\" content=\"3\"></noscript>"));
        assert_eq!(clock(1_795_432_665), "11:17:45");
    }
}
