//! `memtrace report TRACE.json --html OUT.html`: one self-contained HTML
//! file (no network): the trace as JSON, Chart.js (assets/chartjs, MIT) and
//! the page's script (assets/report.js) inline. It plots the timeline with
//! the phases shaded, tabulates the estimates against the measured figures
//! per file, and draws the leak stacks as a flame graph.
use std::path::Path;

use anyhow::{Context, Result};

use crate::trace::Trace;

const CHART_JS: &str = include_str!("../../assets/chartjs/chart.min.js");
const REPORT_JS: &str = include_str!("../../assets/report.js");

/// Text safe inside <script>: no "</" can close the element early.
fn script_safe(s: &str) -> String {
    s.replace("</", "<\\/")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn render(t: &Trace) -> Result<String> {
    let json = serde_json::to_string(t)?;
    let title = format!("memtrace: PID {} ({})", t.target.pid, t.target.command);
    Ok(format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.3em; }} h2 {{ font-size: 1.1em; margin-top: 1.6em; }}
.note {{ color: #666; font-size: 0.9em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.chart {{ position: relative; height: 360px; max-width: 1200px; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="note">{mode} mode, started {started}, traced {duration:.2} s, stopped: {stop}. Every figure names its source: measured (eBPF), kernel truth (rss_stat, smaps) or estimate.</p>
<h2>Memory over time</h2>
<p class="note" id="timeline-note">RSS split from the kernel's rss_stat counters, live heap from the allocator probes; phases shaded.</p>
<div class="chart"><canvas id="timeline"></canvas></div>
<h2>Mapped files: estimates against measurement</h2>
<p class="note">"loaded" is what the kernel mapped into the process (measured); "resident at end" is smaps (kernel truth); the estimates are what monitors guess.</p>
<table id="files"></table>
<h2>Leak candidates</h2>
<p class="note" id="flame-note">{leak_rule}; stacks merged from the outermost frame (bottom) up, widths in bytes.</p>
<div class="chart"><canvas id="flame"></canvas></div>
<script>{chart}</script>
<script>const TRACE = {json};</script>
<script>{app}</script>
</body>
</html>
"#,
        title = escape(&title),
        mode = t.mode,
        started = escape(&t.started_at),
        duration = t.duration_s,
        stop = escape(&t.stop_reason),
        leak_rule = escape(&t.leak_rule),
        chart = script_safe(CHART_JS),
        json = script_safe(&json),
        app = script_safe(REPORT_JS),
    ))
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
    }
}
