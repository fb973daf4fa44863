//! The process tree section: one line per traced process, indented under
//! its parent, with its main figures (the rest are in `processes[]`).
use std::fmt::Write;

use super::{bytes, signed_bytes, thousands};
use crate::trace::{ProcessEntry, Trace};

/// Lines printed before the rest is left to the JSON.
const MAX_LINES: usize = 40;

pub fn render(o: &mut String, t: &Trace) {
    let folded = t.processes_folded.as_ref();
    if t.processes.len() < 2 && folded.is_none() {
        return;
    }
    let _ = writeln!(
        o,
        "Process tree: {} processes traced; the figures below cover all of them [measured: eBPF, per process]",
        thousands((t.processes.len() as u64).saturating_add(folded.map_or(0, |f| f.processes)))
    );
    let _ = writeln!(
        o,
        "  {:<32} {:>12} {:>12} {:>10} {:>9}  exit",
        "PID command", "files loaded", "heap live", "allocs", "faults"
    );
    let mut lines = 0;
    // Each entry once (by index): a saved trace may repeat a PID or make a
    // process its own ancestor, which would otherwise recurse forever.
    let mut walked = vec![false; t.processes.len()];
    let is_root = |p: &ProcessEntry| p.parent.is_none_or(|pp| !t.processes.iter().any(|q| q.pid == pp));
    for (i, _) in t.processes.iter().enumerate().filter(|(_, p)| is_root(p)) {
        walk(o, t, i, 0, &mut lines, &mut walked);
    }
    // Processes in a cycle of parents have no root above them: listed too.
    for i in 0..t.processes.len() {
        walk(o, t, i, 0, &mut lines, &mut walked);
    }
    if lines > MAX_LINES {
        let _ = writeln!(o, "  ... {} more processes in the JSON trace (processes[])", lines - MAX_LINES);
    }
    if let Some(f) = folded {
        render_folded(o, f);
    }
    let _ = writeln!(o);
    render_shared_files(o, t);
    render_top_processes(o, t);
}

/// Processes given a few lines of their own: those with the most bytes
/// (files loaded plus live heap).
const DETAILED: usize = 3;

/// The processes that matter most, each with its top files and its
/// largest leak candidate (the rest of every process is in `processes[]`).
fn render_top_processes(o: &mut String, t: &Trace) {
    let weight = |p: &ProcessEntry| {
        p.file_totals.measured_loaded_bytes.saturating_add(p.heap.as_ref().map_or(0, |h| h.live_bytes.max(0) as u64))
    };
    let mut ranked: Vec<&ProcessEntry> = t.processes.iter().filter(|p| weight(p) > 0).collect();
    ranked.sort_by_key(|p| std::cmp::Reverse(weight(p)));
    if ranked.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "The {} processes with the most bytes (files loaded + live heap) [measured: eBPF; smaps: kernel truth at each one's exit stop or when tracing stopped]",
        ranked.len().min(DETAILED)
    );
    for p in ranked.into_iter().take(DETAILED) {
        let command: String = p.command.chars().take(60).collect();
        let heap = p.heap.as_ref().map_or_else(
            || "heap not traced".to_string(),
            |h| format!("heap live {} in {} allocations", signed_bytes(h.live_bytes), thousands(h.live_allocations)),
        );
        let _ = writeln!(
            o,
            "  PID {} {command}: files loaded {}, {heap}, faults {}",
            p.pid,
            bytes(p.file_totals.measured_loaded_bytes),
            thousands(p.counters.page_faults_seen)
        );
        let mut files: Vec<_> = p.files.iter().filter(|f| f.measured_loaded_bytes > 0).collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.measured_loaded_bytes));
        for f in files.iter().take(3) {
            let smaps = f.kernel_rss_bytes.map_or_else(|| "-".to_string(), bytes);
            let _ = writeln!(o, "    {:>10} loaded, smaps {:>10}  {}", bytes(f.measured_loaded_bytes), smaps, f.path);
        }
        if let Some(l) = p.leaks.first() {
            let top = l.stack.first().map_or_else(|| "(no stack)".to_string(), crate::symbolize::describe);
            let _ = writeln!(
                o,
                "    largest leak candidate: {} in {} allocations from {top}, phase {}",
                bytes(l.bytes),
                thousands(l.count),
                l.phase
            );
        }
    }
    let _ = writeln!(o);
}

/// Files mapped by several processes: what `top` adds up (the processes'
/// Rss), their Pss, and the pages the machine really keeps (each page of
/// the file once).
fn render_shared_files(o: &mut String, t: &Trace) {
    let mapped_by = |f: &crate::trace::FileEntry| {
        t.processes
            .iter()
            .filter(|p| {
                p.files
                    .iter()
                    .any(|g| (g.device_major, g.device_minor, g.inode) == (f.device_major, f.device_minor, f.inode))
            })
            .count()
    };
    let mut shared: Vec<_> = t
        .files
        .iter()
        .filter_map(|f| Some((f, f.kernel_distinct_resident_bytes?, mapped_by(f))))
        .filter(|(_, distinct, n)| *n > 1 && *distinct > 0)
        .collect();
    if shared.is_empty() {
        return;
    }
    shared.sort_by(|a, b| b.0.kernel_rss_bytes.cmp(&a.0.kernel_rss_bytes).then(a.0.path.cmp(&b.0.path)));
    let _ = writeln!(
        o,
        "Files shared across the tree [kernel truth: smaps and pagemap, each process read at its exit stop or when tracing stopped]"
    );
    let _ = writeln!(o, "  {:>9} {:>12} {:>12} {:>12}  path", "processes", "sum of Rss", "sum of Pss", "distinct");
    for (f, distinct, n) in shared.iter().take(8) {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), bytes);
        let _ = writeln!(
            o,
            "  {n:>9} {:>12} {:>12} {:>12}  {}",
            opt(f.kernel_rss_bytes),
            opt(f.kernel_pss_bytes),
            bytes(*distinct),
            f.path
        );
    }
    if shared.len() > 8 {
        let _ = writeln!(o, "  ... {} more shared files in the JSON trace", shared.len() - 8);
    }
    let _ = writeln!(
        o,
        "  distinct: the file's pages resident in any of them, each counted once (what the machine spends); sum of Rss: what top adds up"
    );
    let _ = writeln!(o);
}

/// The ended processes summed into one entry (`--max-processes`).
fn render_folded(o: &mut String, f: &crate::trace::FoldedProcesses) {
    let (live, allocs) =
        f.heap.as_ref().map_or(("-".into(), "-".into()), |h| (signed_bytes(h.live_bytes), thousands(h.totals.allocs)));
    let _ = writeln!(
        o,
        "  {:<32} {:>12} {:>12} {:>10} {:>9}",
        format!("+ {} more that ended, folded", thousands(f.processes)),
        bytes(f.file_totals.measured_loaded_bytes),
        live,
        allocs,
        thousands(f.counters.page_faults_seen),
    );
    let mut commands: Vec<(&String, &u64)> = f.commands.iter().collect();
    commands.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
    let named: Vec<String> = commands
        .iter()
        .take(3)
        .map(|(c, n)| format!("{} x {}", thousands(**n), c.chars().take(60).collect::<String>()))
        .collect();
    let _ = writeln!(
        o,
        "    (past --max-processes listed; read whole at their ends, summed in processes_folded: {}{})",
        named.join(", "),
        if commands.len() > 3 { ", ..." } else { "" }
    );
}

fn walk(o: &mut String, t: &Trace, i: usize, depth: usize, lines: &mut usize, walked: &mut [bool]) {
    if std::mem::replace(&mut walked[i], true) {
        return;
    }
    let p = &t.processes[i];
    *lines += 1;
    if *lines <= MAX_LINES {
        let indent = depth.min(super::MAX_INDENT);
        let command: String = p.command.chars().take(30usize.saturating_sub(2 * indent)).collect();
        let name = format!("{}{} {}", "  ".repeat(indent), p.pid, command);
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
    for (child, _) in t.processes.iter().enumerate().filter(|(_, c)| c.parent == Some(p.pid)) {
        walk(o, t, child, depth + 1, lines, walked);
    }
}
