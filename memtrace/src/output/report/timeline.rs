//! The report's timeline part: a few evenly spaced samples of the
//! timeline (all of them are in the JSON trace).
use std::fmt::Write;

use crate::{
    output::report::{bytes, signed_bytes, thousands},
    trace::Trace,
};

/// Rows shown in the text report.
const ROWS: usize = 10;

/// Minor and major faults of these samples together; None when none of
/// them has a count (the process was gone).
fn fault_sum(samples: &[crate::model::timeline::Sample]) -> Option<u64> {
    samples
        .iter()
        .filter_map(|s| s.minor_faults.map(|m| m.saturating_add(s.major_faults.unwrap_or(0))))
        .fold(None, |sum, f| Some(sum.unwrap_or(0u64).saturating_add(f)))
}

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
    let last = tl.samples.len() - 1;
    let shown: Vec<usize> = (0..tl.samples.len()).filter(|i| i % step == 0 || *i == last).collect();
    let mut from = 0;
    for i in shown {
        let s = &tl.samples[i];
        // A row stands for the samples since the previous row: its faults
        // are theirs together (each sample counts since the one before).
        let faults = fault_sum(&tl.samples[from..=i]);
        from = i + 1;
        let top =
            s.files_loaded_bytes.first().map_or_else(String::new, |f| format!("{} {}", bytes(f.loaded_bytes), f.path));
        let _ = writeln!(
            o,
            "  {:>8.2} {:>10} {:>10} {:>10} {:>8}  {:<20} {top}",
            s.t_s,
            bytes(s.rss_file_bytes),
            bytes(s.rss_anon_bytes),
            s.heap_live_bytes.map_or_else(|| "-".into(), signed_bytes),
            faults.map_or_else(|| "-".into(), thousands),
            if s.phase.is_empty() { "-" } else { &s.phase },
        );
    }
    let _ = writeln!(o);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::timeline::Sample;

    #[test]
    fn a_row_standing_for_several_samples_carries_their_faults_together() {
        let mut t = crate::trace::tests::sample();
        t.timeline.interval_s = 0.1;
        t.timeline.samples = (0..100)
            .map(|i| Sample {
                t_s: i as f64 / 10.0,
                minor_faults: Some(10),
                major_faults: Some(1),
                ..Sample::default()
            })
            .collect();
        let mut o = String::new();
        render_timeline(&mut o, &t);
        let faults: Vec<u64> = o
            .lines()
            .skip(2)
            .filter(|l| !l.trim().is_empty())
            // The faults column: after "  " and t s (8), three 10-wide columns, each after a space.
            .map(|l| l[44..52].trim().replace(',', "").parse().unwrap())
            .collect();
        // Ten rows of ten samples each (the first row stands for sample 0 only).
        assert_eq!(faults.iter().sum::<u64>(), 100 * 11, "{o}");
        assert_eq!(faults[1], 10 * 11, "{o}");
        let gone: Vec<Sample> = (0..3).map(|_| Sample { minor_faults: None, ..Sample::default() }).collect();
        assert_eq!(fault_sum(&gone), None);
    }
}
