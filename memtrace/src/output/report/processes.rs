//! The process tree section: one line per traced process, indented under
//! its parent, with its main figures (the rest are in `processes[]`).
use std::fmt::Write;

use super::{bytes, signed_bytes, thousands};
use crate::trace::{ProcessEntry, Trace};

/// Lines printed before the rest is left to the JSON.
const MAX_LINES: usize = 40;

pub fn render(o: &mut String, t: &Trace) {
    if t.processes.len() < 2 {
        return;
    }
    let _ = writeln!(
        o,
        "Process tree: {} processes traced; the figures below cover all of them [measured: eBPF, per process]",
        t.processes.len()
    );
    let _ = writeln!(
        o,
        "  {:<32} {:>12} {:>12} {:>10} {:>9}  exit",
        "PID command", "files loaded", "heap live", "allocs", "faults"
    );
    let mut lines = 0;
    let roots = t.processes.iter().filter(|p| p.parent.is_none_or(|pp| !t.processes.iter().any(|q| q.pid == pp)));
    for root in roots {
        walk(o, t, root, 0, &mut lines);
    }
    if lines > MAX_LINES {
        let _ = writeln!(o, "  ... {} more processes in the JSON trace (processes[])", lines - MAX_LINES);
    }
    let _ = writeln!(o);
}

fn walk(o: &mut String, t: &Trace, p: &ProcessEntry, depth: usize, lines: &mut usize) {
    *lines += 1;
    if *lines <= MAX_LINES {
        let command: String = p.command.chars().take(30usize.saturating_sub(2 * depth.min(8))).collect();
        let name = format!("{}{} {}", "  ".repeat(depth.min(8)), p.pid, command);
        let (live, allocs) = p
            .heap
            .as_ref()
            .map_or(("-".into(), "-".into()), |h| (signed_bytes(h.live_bytes), thousands(h.totals.allocs)));
        let exit = match (p.exit_code, p.exit_signal, p.ended_s) {
            (_, Some(sig), _) => format!("signal {sig}"),
            (Some(code), None, _) => code.to_string(),
            (None, None, Some(_)) => "ended".into(),
            (None, None, None) => "running".into(),
        };
        let _ = writeln!(
            o,
            "  {name:<32} {:>12} {live:>12} {allocs:>10} {:>9}  {exit}",
            bytes(p.file_totals.measured_loaded_bytes),
            thousands(p.counters.page_faults_seen),
        );
    }
    for child in t.processes.iter().filter(|c| c.parent == Some(p.pid)) {
        walk(o, t, child, depth + 1, lines);
    }
}
