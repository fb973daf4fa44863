//! `memtrace report TRACE.json --html OUT.html`: one self-contained HTML
//! file (no network): the trace as JSON, Chart.js (assets/chartjs, MIT) and
//! the page's script (assets/report.js) inline, in the
//! markup of assets/report.html. It plots the timeline with
//! the phases shaded, tabulates the estimates against the measured figures
//! per file, and draws the leak stacks as a flame graph.
use std::path::Path;

use anyhow::{Context, Result};

use crate::trace::Trace;

const CHART_JS: &str = include_str!("../../assets/chartjs/chart.min.js");
const REPORT_JS: &str = include_str!("../../assets/report.js");
/// The page's markup and style; `{{name}}` marks where `render` fills in.
const PAGE: &str = include_str!("../../assets/report.html");

/// Text safe inside <script>: no "</" can close the element early.
fn script_safe(s: &str) -> String {
    s.replace("</", "<\\/")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn render(t: &Trace) -> Result<String> {
    let json = serde_json::to_string(t)?;
    let title = escape(&format!("memtrace: PID {} ({})", t.target.pid, t.target.command));
    Ok(fill(
        PAGE,
        &[
            ("title", &title),
            ("mode", &t.mode.to_string()),
            ("started", &escape(&t.started_at)),
            ("duration", &format!("{:.2}", t.duration_s)),
            ("stop", &escape(&t.stop_reason)),
            ("leak_rule", &escape(&t.leak_rule)),
            ("chart", &script_safe(CHART_JS)),
            ("json", &script_safe(&json)),
            ("app", &script_safe(REPORT_JS)),
        ],
    ))
}

/// The template with each `{{name}}` replaced by its value, in one pass:
/// a value is never scanned for placeholders (a command line may contain
/// "{{json}}"). An unknown name is a bug in the template: kept as is, and
/// the unit test below fails on it.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}").and_then(|close| Some((close, values.iter().find(|(k, _)| *k == &after[..close])?))) {
            Some((close, (_, value))) => {
                out.push_str(value);
                rest = &after[close + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Writes the page whole or not at all.
pub fn write(path: &Path, t: &Trace) -> Result<()> {
    let page = render(t)?;
    crate::trace::write_atomically("--html", path, |file| {
        use std::io::Write;
        file.write_all(page.as_bytes()).with_context(|| format!("--html {}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::tests::sample;

    #[test]
    fn the_page_is_self_contained_and_no_text_closes_a_script_early() {
        let mut t = sample();
        t.target.command = "evil </script><b>".into();
        let html = render(&t).unwrap();
        assert!(html.contains("Chart.js v3.9.1") && html.contains("const TRACE = {"));
        assert!(!html.contains("</script><b>"), "the command is escaped everywhere");
        assert_eq!(html.matches("</script>").count(), 3, "only the three script elements close");
        assert!(!html.contains("<script src"), "no external script");
        assert!(!html.contains("{{"), "every placeholder of the template is filled");
    }

    #[test]
    fn values_are_not_scanned_for_placeholders() {
        let filled = fill("<h1>{{title}}</h1><p>{{unknown}}", &[("title", "{{title}} x")]);
        assert_eq!(filled, "<h1>{{title}} x</h1><p>{{unknown}}");
    }
}
