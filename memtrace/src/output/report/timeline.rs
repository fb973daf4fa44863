//! The report's timeline part: a few evenly spaced samples of the
//! timeline (all of them are in the JSON trace).
use std::fmt::Write;

use crate::{
    output::report::{bytes, signed_bytes, thousands},
    trace::Trace,
};

/// Rows shown in the text report.
const ROWS: usize = 10;

pub fn render_timeline(o: &mut String, t: &Trace) {
    let tl = &t.timeline;
    if tl.samples.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "Timeline [kernel truth: rss_stat RSS, /proc/PID/stat faults; measured: heap, file loaded]: {} samples every {:.0} ms{}",
        thousands(tl.samples.len() as u64),
        tl.interval_s * 1e3,
        if tl.thinned_samples > 0 {
            format!(" ({} thinned out to stay bounded)", thousands(tl.thinned_samples))
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        o,
        "  {:>8} {:>10} {:>10} {:>10} {:>8}  {:<20} most loaded file",
        "t s", "file RSS", "anon RSS", "heap", "faults", "phase"
    );
    let step = tl.samples.len().div_ceil(ROWS).max(1);
    let shown = tl.samples.iter().enumerate().filter(|(i, _)| i % step == 0 || *i == tl.samples.len() - 1);
    for (_, s) in shown {
        let top =
            s.files_loaded_bytes.first().map_or_else(String::new, |f| format!("{} {}", bytes(f.loaded_bytes), f.path));
        let _ = writeln!(
            o,
            "  {:>8.2} {:>10} {:>10} {:>10} {:>8}  {:<20} {top}",
            s.t_s,
            bytes(s.rss_file_bytes),
            bytes(s.rss_anon_bytes),
            s.heap_live_bytes.map_or_else(|| "-".into(), signed_bytes),
            s.minor_faults.map_or_else(|| "-".into(), |m| thousands(m + s.major_faults.unwrap_or(0))),
            if s.phase.is_empty() { "-" } else { &s.phase },
        );
    }
    let _ = writeln!(o);
}
