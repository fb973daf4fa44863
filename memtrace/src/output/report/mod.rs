//! The human-readable report, rendered from a `Trace` (never from events), so
//! a live run and a saved trace print the same thing.
mod anon;
pub mod heap;
mod processes;
pub mod timeline;

use std::fmt::Write;

use crate::trace::Trace;

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

pub fn render(t: &Trace) -> String {
    let mut o = String::new();
    let c = &t.counters;
    let exit = match (t.target.exit_code, t.target.exit_signal) {
        (_, Some(sig)) => format!(", killed by signal {sig}"),
        (Some(code), None) => format!(", exit code {code}"),
        _ => String::new(),
    };
    let _ = writeln!(o, "memtrace report: PID {} ({}), {} mode", t.target.pid, t.target.command, t.mode);
    let _ = writeln!(o, "  started {}, traced {:.2} s, stopped: {}{exit}", t.started_at, t.duration_s, t.stop_reason);
    if let Some(r) = &t.runtime {
        let _ = writeln!(o, "  runtime: {} {} [the target's files: {}]", r.name, r.version, r.source);
        let _ = writeln!(o, "    {} frames: {}", r.name, r.frames);
    }
    let _ = writeln!(o);
    processes::render(&mut o, t);
    let _ = writeln!(o, "Page faults and mmap calls [measured: eBPF]{}", covers(t));
    let _ = writeln!(
        o,
        "  page faults      {:>12}   (read {}, write {}, exec {})",
        thousands(c.page_faults),
        thousands(c.page_faults_read),
        thousands(c.page_faults_write),
        thousands(c.page_faults_exec)
    );
    if c.page_faults_kernel_mode > 0 {
        let _ = writeln!(
            o,
            "  + in kernel mode {:>12}   (on the target's memory, e.g. read() copying into it; together {})",
            thousands(c.page_faults_kernel_mode),
            thousands(c.page_faults.saturating_add(c.page_faults_kernel_mode))
        );
    }
    for (label, k) in [("kernel's count", &t.kernel), ("wait4's count", &t.kernel_wait4)] {
        if let Some(k) = k {
            let _ = writeln!(
                o,
                "  {label:<16} {:>12}   (minor {}, major {}) [kernel truth: {}]",
                thousands(k.minor_faults.saturating_add(k.major_faults)),
                thousands(k.minor_faults),
                thousands(k.major_faults),
                k.source
            );
        }
    }
    let _ = writeln!(o, "  mmap calls       {:>12}   ({} failed)", thousands(c.mmap_calls), thousands(c.mmap_failed));
    let _ =
        writeln!(o, "  munmap calls     {:>12}   ({} failed)", thousands(c.munmap_calls), thousands(c.munmap_failed));
    let _ =
        writeln!(o, "  madvise calls    {:>12}   ({} failed)", thousands(c.madvise_calls), thousands(c.madvise_failed));
    let _ =
        writeln!(o, "  mremap calls     {:>12}   ({} failed)", thousands(c.mremap_calls), thousands(c.mremap_failed));
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Faults by mapping [measured: eBPF fault addresses, mappings from mmap events + /proc/PID/maps]{}",
        covers(t)
    );
    let _ = writeln!(o, "  {:>10} {:>10} {:>10}  mapping", "faults", "read", "write");
    let mut rows: Vec<(String, crate::model::stats::FaultCounts)> =
        t.files.iter().map(|f| (f.path.clone(), f.page_faults)).collect();
    rows.extend(t.regions.iter().filter(|r| r.region != "file").map(|r| (r.region.clone(), r.faults)));
    rows.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(&b.0)));
    for (name, f) in rows.iter().filter(|(_, f)| f.total > 0).take(12) {
        let _ =
            writeln!(o, "  {:>10} {:>10} {:>10}  {name}", thousands(f.total), thousands(f.read), thousands(f.write));
    }
    let quiet = rows.iter().filter(|(_, f)| f.total > 0).count().saturating_sub(12);
    if quiet > 0 {
        let _ = writeln!(o, "  ... {quiet} more mappings in the JSON trace");
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Mapped files [size: kernel truth (stat); mapped: measured (mmap events + /proc/PID/maps)]{}",
        covers(t)
    );
    let _ = writeln!(o, "  {:>10} {:>10} {:>6} {:>10}  path", "size", "mapped", "mmaps", "faults");
    let mut files: Vec<_> = t.files.iter().collect();
    files.sort_by(|a, b| b.mapped_bytes.cmp(&a.mapped_bytes).then(a.path.cmp(&b.path)));
    for f in files.iter().take(15) {
        let size = f.size_bytes.map_or_else(|| "?".to_string(), bytes);
        let _ = writeln!(
            o,
            "  {:>10} {:>10} {:>6} {:>10}  {}",
            size,
            bytes(f.mapped_bytes),
            f.mmap_calls,
            thousands(f.page_faults.total),
            f.path
        );
    }
    if files.len() > 15 {
        let _ = writeln!(o, "  ... {} more files in the JSON trace", files.len() - 15);
    }
    let _ = writeln!(o);
    render_loading(&mut o, t);
    render_phases(&mut o, t);
    crate::output::report::timeline::render_timeline(&mut o, t);
    crate::output::report::heap::render_heap(&mut o, t);
    crate::output::report::anon::render_anon(&mut o, t);
    // Saturating, as every sum of a trace's figures here: a saved trace can
    // hold any u64, and a sum past it must not panic (or wrap to "nothing lost").
    let lost = [c.ringbuf_drops, c.syscalls_lost, c.malformed_events, c.eviction_watch_full]
        .into_iter()
        .fold(0u64, u64::saturating_add);
    let _ = writeln!(
        o,
        "Losses: ring-buffer drops {}, syscalls lost {}, files not watched for eviction {}, malformed events {}, faults outside known mappings {}, unidentified file mappings {}, file RSS changes with no file named +{}/-{}{}",
        thousands(c.ringbuf_drops),
        thousands(c.syscalls_lost),
        thousands(c.eviction_watch_full),
        thousands(c.malformed_events),
        thousands(c.unattributed_faults),
        thousands(c.unresolved_file_mappings),
        bytes(c.unattributed_file_loaded_bytes),
        bytes(c.unattributed_file_unloaded_bytes),
        match (lost, c.ringbuf_drops) {
            (0, _) => " (nothing lost)",
            (_, 0) => " (per-mapping figures are incomplete)",
            _ => " (per-mapping figures are incomplete; a larger --ring-buffer-kib keeps more)",
        }
    );
    if let Some(m) = &t.memtrace {
        let _ = writeln!(
            o,
            "memtrace itself [kernel truth: getrusage]: peak RSS {}, CPU {:.2} s user + {:.2} s system; {} ring-buffer records read ({}/s)",
            bytes(m.peak_rss_bytes),
            m.cpu_user_s,
            m.cpu_system_s,
            thousands(m.ring_records),
            thousands(m.ring_records_per_s.round() as u64)
        );
    }
    for w in &t.warnings {
        let _ = writeln!(o, "Warning during the run: {w}");
    }
    without_control_characters(o)
}

/// Paths and names come from the target (a file it created, a name it
/// passed): no control character of theirs reaches the reader's terminal.
fn without_control_characters(o: String) -> String {
    if !o.chars().any(|c| c.is_control() && c != '\n') {
        return o;
    }
    o.chars().map(|c| if c.is_control() && c != '\n' { '?' } else { c }).collect()
}

fn percent(err: i64, reference: u64) -> String {
    if reference == 0 {
        return "n/a".into();
    }
    format!("{:+.1} %", err as f64 * 100.0 / reference as f64)
}

pub fn signed_bytes(v: i64) -> String {
    if v < 0 {
        format!("-{}", bytes(v.unsigned_abs()))
    } else {
        format!("+{}", bytes(v as u64))
    }
}

/// Nesting levels shown as indentation (phases, the process tree).
pub(super) const MAX_INDENT: usize = 8;

/// Phases from the target's markers, with what each loaded.
fn render_phases(o: &mut String, t: &Trace) {
    if t.phases.is_empty() {
        let _ = writeln!(o, "Phases: {}", t.phase_markers);
        let _ = writeln!(o);
        return;
    }
    let _ = writeln!(
        o,
        "Phases [measured: memtrace_phase_begin/end, --phase-fn functions, memtrace mark; figures gained during each phase; heap: allocator view]"
    );
    let _ = writeln!(o, "  kernel truth at boundaries: {}", t.phase_truth);
    for f in &t.phase_functions {
        let _ = writeln!(o, "  --phase-fn: {f}");
    }
    let _ = writeln!(
        o,
        "  {:<24} {:>9} {:>9} {:>10} {:>10} {:>10}  file loaded most",
        "phase", "start s", "ms", "faults", "anon RSS", "heap"
    );
    for p in t.phases.iter().take(30) {
        let top = p.files.iter().max_by_key(|f| f.measured_loaded_bytes);
        let top = top.map_or_else(String::new, |f| {
            let truth = f.kernel_rss_change_bytes.map_or_else(String::new, |k| {
                format!(
                    " (RSS change: measured {}, smaps {})",
                    signed_bytes(f.measured_rss_change_bytes),
                    signed_bytes(k)
                )
            });
            format!("{} {}{truth}", bytes(f.measured_loaded_bytes), f.path)
        });
        let anon = signed_bytes(p.anon_rss_growth_bytes);
        // Indented by depth up to MAX_INDENT levels (a damaged trace's depth
        // can be any usize: no `repeat` of that many).
        let name = format!("{}{}{}", "  ".repeat(p.depth.min(MAX_INDENT)), p.name, if p.open { " (open)" } else { "" });
        let _ = writeln!(
            o,
            "  {:<24} {:>9.3} {:>9.1} {:>10} {:>10} {:>10}  {}",
            name,
            p.start_s,
            p.duration_s * 1e3,
            thousands(p.page_faults),
            anon,
            p.heap_growth_bytes.map_or_else(|| "-".into(), signed_bytes),
            top
        );
    }
    if t.phases.len() > 30 {
        let _ = writeln!(o, "  ... {} more phases in the JSON trace", t.phases.len() - 30);
    }
    render_folded_phases(o, t);
    let _ = writeln!(o);
}

/// Phases past `--max-phases`, one line per path (the largest counts first).
fn render_folded_phases(o: &mut String, t: &Trace) {
    if t.phases_folded.is_empty() {
        return;
    }
    let n = t.phases_folded.iter().fold(0u64, |n, f| n.saturating_add(f.count));
    let _ = writeln!(
        o,
        "  + {} more finished phases, past --max-phases, summed by path (phases_folded in the JSON):",
        thousands(n)
    );
    let mut folded: Vec<_> = t.phases_folded.iter().collect();
    folded.sort_by_key(|f| std::cmp::Reverse(f.count));
    for f in folded.iter().take(10) {
        let top = f.files.iter().max_by_key(|f| f.measured_loaded_bytes);
        let top = top.map_or_else(String::new, |f| format!("{} {}", bytes(f.measured_loaded_bytes), f.path));
        let name = format!("{} x{}", f.path, thousands(f.count));
        let _ = writeln!(
            o,
            "    {:<22} {:>9} {:>9.1} {:>10} {:>10} {:>10}  {}",
            name,
            "",
            f.total_duration_s * 1e3,
            thousands(f.page_faults),
            signed_bytes(f.anon_rss_growth_bytes),
            f.heap_growth_bytes.map_or_else(|| "-".into(), signed_bytes),
            top
        );
    }
    if folded.len() > 10 {
        let _ = writeln!(o, "    ... {} more paths in the JSON trace", folded.len() - 10);
    }
}

/// Which processes a section's figures cover, said after its title when
/// there are several ("" for one process).
pub(super) fn covers(t: &Trace) -> String {
    match t.processes.len() {
        0 | 1 => String::new(),
        n => format!(" (all {n} processes, summed)"),
    }
}

/// Per-file loading and the estimated-vs-measured comparison.
fn render_loading(o: &mut String, t: &Trace) {
    let mut files: Vec<_> =
        t.files.iter().filter(|f| f.measured_loaded_bytes > 0 || f.kernel_rss_bytes.unwrap_or(0) > 0).collect();
    files.sort_by(|a, b| b.measured_loaded_bytes.cmp(&a.measured_loaded_bytes).then(a.path.cmp(&b.path)));
    files.truncate(8);
    if files.is_empty() {
        return;
    }
    let _ =
        writeln!(o, "File loading [measured: eBPF rss_stat + filemap tracepoints; smaps: kernel truth]{}", covers(t));
    let _ = writeln!(
        o,
        "  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  path",
        "size", "at start", "loaded", "via f-a", "from disk", "evicted", "smaps now"
    );
    for f in &files {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), bytes);
        let _ = writeln!(
            o,
            "  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
            opt(f.size_bytes),
            opt(f.resident_at_start_bytes),
            bytes(f.measured_loaded_bytes),
            bytes(f.fault_around_bytes),
            bytes(f.read_from_disk_bytes),
            bytes(f.evicted_bytes),
            opt(f.kernel_rss_bytes),
            f.path
        );
    }
    let ft = &t.file_totals;
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), bytes);
    let _ = writeln!(
        o,
        "  total over {} files: loaded {}, via fault-around {}, from disk {}, evicted {}; at stop smaps {}, pagemap {}",
        ft.files,
        bytes(ft.measured_loaded_bytes),
        bytes(ft.fault_around_bytes),
        bytes(ft.read_from_disk_bytes),
        bytes(ft.evicted_bytes),
        opt(ft.kernel_rss_bytes),
        opt(ft.kernel_pagemap_bytes)
    );
    let _ = writeln!(o, "  kernel truth at stop: {}", t.final_truth);
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Estimated vs measured [estimate: naive monitors; actual: smaps at stop if still mapped, else measured peak]"
    );
    let _ = writeln!(o, "  {:>10} {:>22} {:>22} {:>22}  path", "actual", "fixed 80 %", "RSS growth", "capped growth");
    for f in &files {
        let e = &f.estimates;
        let actual = match e.reference.as_str() {
            "kernel_rss_bytes" => f.kernel_rss_bytes.unwrap_or(0),
            _ => f.peak_resident_bytes,
        };
        let cell = |v: u64, err: i64| format!("{} ({})", bytes(v), percent(err, actual));
        let _ = writeln!(
            o,
            "  {:>10} {:>22} {:>22} {:>22}  {}",
            bytes(actual),
            cell(e.fixed_ratio_bytes, e.fixed_ratio_error_bytes),
            cell(e.rss_growth_bytes, e.rss_growth_error_bytes),
            cell(e.capped_growth_bytes, e.capped_growth_error_bytes),
            f.path
        );
    }
    let _ = writeln!(o);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(256 * 1024 * 1024), "256.0 MiB");
        assert_eq!(percent(-50, 200), "-25.0 %");
        assert_eq!(percent(5, 0), "n/a");
    }

    #[test]
    fn the_runs_warnings_close_the_report() {
        let mut t = crate::trace::tests::sample();
        assert!(!render(&t).contains("Warning"));
        t.warnings = vec!["evictions of /data/x will not be seen: WATCHED_FILES is full".into()];
        let report = render(&t);
        assert!(
            report
                .trim_end()
                .ends_with("Warning during the run: evictions of /data/x will not be seen: WATCHED_FILES is full"),
            "{report}"
        );
    }
}
