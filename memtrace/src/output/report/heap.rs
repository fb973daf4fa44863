//! The report's heap part: totals, leak candidates with their stacks, and
//! the probe placement (`--explain-probes`).
use std::fmt::Write;

use crate::{
    kernel::probes::{HeapProbe, HeapSetup},
    output::report::{bytes, signed_bytes, thousands},
    symbolize::describe,
    trace::Trace,
    uprobes::allocator::Allocator,
};

/// Frames shown per leak candidate in the text report (all are in the JSON).
const FRAMES_SHOWN: usize = 8;
const LEAKS_SHOWN: usize = 10;

/// How stacks were walked, what the tables cost, and where stacks were cut.
fn render_unwind(o: &mut String, u: &crate::trace::UnwindStats) {
    match u.method.as_str() {
        "dwarf" => {
            let held = if u.holds > 0 {
                format!(
                    "; the target was held {} times, {:.0} ms in all, until each new file's table was in",
                    u.holds, u.held_ms
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                o,
                "  stacks: unwound with .eh_frame tables of {} files ({} rows, {} of map), built in {:.0} ms{held}",
                u.files,
                thousands(u.rows),
                bytes(u.map_bytes),
                u.build_ms
            );
        }
        "fp" => {
            let _ = writeln!(o, "  stacks: frame pointers only (--unwind fp): cut short in code built without them");
        }
        _ => {}
    }
    let mut without: Vec<&str> = u.files_without_table.iter().chain(&u.files_not_loaded).map(String::as_str).collect();
    without.dedup();
    if !without.is_empty() {
        let _ = writeln!(o, "  walked with frame pointers (no unwind table): {}", without.join(", "));
    }
    if !u.cuts.is_empty() {
        let shown: Vec<String> = u
            .cuts
            .iter()
            .take(5)
            .map(|c| {
                let why = match c.reason.as_str() {
                    "no_table" => "no unwind info",
                    "unsupported" => "a rule not followed",
                    "unreadable" => "stack unreadable",
                    "depth" => "depth limit",
                    other => other,
                };
                format!(
                    "{} ({why} in {})",
                    thousands(c.stacks),
                    c.module.as_deref().unwrap_or("code outside any mapped file")
                )
            })
            .collect();
        let more =
            if u.cuts.len() > 5 { format!(", and {} more in the JSON", u.cuts.len() - 5) } else { String::new() };
        let _ = writeln!(o, "  stacks cut short: {}{more}", shown.join(", "));
    }
}

pub fn render_heap(o: &mut String, t: &Trace) {
    let Some(h) = &t.heap else { return };
    let _ = writeln!(
        o,
        "Heap [measured: uprobes on the malloc family; requested bytes, not allocator overhead]{}",
        super::covers(t)
    );
    if h.allocators.is_empty() || h.status != "traced" {
        let _ = writeln!(o, "  {}", h.status);
    }
    for a in &h.allocators {
        let unmapped = if a.mapped { "" } else { "; the target never mapped it, so its allocations were not seen" };
        let _ = writeln!(o, "  allocator: {}: {}{unmapped}", a.path, a.found_by);
    }
    if h.probes.is_empty() {
        let _ = writeln!(o);
        return;
    }
    let _ = writeln!(o, "  read {}", h.read_at);
    let _ = writeln!(
        o,
        "  live {} in {} allocations (peak {}); allocated {} in {} calls, freed {} in {} calls",
        signed_bytes(h.live_bytes),
        thousands(h.live_allocations),
        signed_bytes(h.peak_live_bytes),
        bytes(h.totals.allocated_bytes),
        thousands(h.totals.allocs),
        bytes(h.totals.freed_bytes),
        thousands(h.totals.frees)
    );
    let _ = writeln!(
        o,
        "  not in the figures: unknown frees {} (by the program, of blocks allocated before tracing{}), allocator-internal frees {} (by the allocator's own code, e.g. thread caches at thread exit), dropped allocations {} (live map full: --max-live-allocs), missed frees {}, allocations without stack {} (stack map full: --max-stacks, or no user stack), allocations with a stack cut short {} (no unwind table {}, unsupported rule {}, unreadable stack {}, depth limit {}), calls lost {}, calls never returned {}, calls open at stop {}, failed allocations {}",
        thousands(h.totals.unknown_frees),
        if h.totals.dropped_allocs > 0 { " or dropped" } else { "" },
        thousands(h.totals.internal_frees),
        thousands(h.totals.dropped_allocs),
        thousands(h.totals.missed_frees),
        thousands(h.totals.lost_stacks),
        thousands(
            [
                h.totals.stacks_cut_no_table,
                h.totals.stacks_cut_unsupported,
                h.totals.stacks_cut_unreadable,
                h.totals.stacks_cut_depth
            ]
            .into_iter()
            .fold(0, u64::saturating_add)
        ),
        thousands(h.totals.stacks_cut_no_table),
        thousands(h.totals.stacks_cut_unsupported),
        thousands(h.totals.stacks_cut_unreadable),
        thousands(h.totals.stacks_cut_depth),
        thousands(h.totals.lost_calls),
        thousands(h.totals.abandoned_calls),
        thousands(h.open_calls_at_stop),
        thousands(h.totals.failed_allocs)
    );
    render_unwind(o, &h.unwind);
    if let Some(r) = t.runtime.as_ref().filter(|r| r.name == "CPython") {
        let c = &t.counters;
        let _ = writeln!(
            o,
            "  Python frames: {}; not read for {} allocations (their thread had released the GIL), cut short in {} (a frame unreadable)",
            r.frames,
            thousands(c.python_stacks_other_thread),
            thousands(c.python_stacks_cut)
        );
    }
    if h.released_by_exec_allocs > 0 {
        let _ = writeln!(
            o,
            "  released by execve: {} in {} allocations of the image the target replaced (not live, not leaks)",
            bytes(h.released_by_exec_bytes),
            thousands(h.released_by_exec_allocs)
        );
    }
    let k = &h.kernel;
    let _ = writeln!(
        o,
        "  kernel side [measured: brk and mmap tracepoints]: brk heap {} (peak {}, {} brk calls); anonymous mmap {} in {} calls, unmapped {}",
        bytes(k.brk_heap_bytes),
        bytes(k.brk_heap_peak_bytes),
        thousands(k.brk_calls),
        bytes(k.anon_mapped_bytes),
        thousands(k.anon_mmap_calls),
        bytes(k.anon_unmapped_bytes)
    );
    if let Some(e) = &h.events {
        let _ = writeln!(
            o,
            "  event stream: {} allocations, {} frees and {} stacks written to {}{}",
            thousands(e.allocs),
            thousands(e.frees),
            thousands(e.stacks),
            e.path,
            match (&e.error, t.counters.ringbuf_drops) {
                (Some(err), _) => format!(" (INCOMPLETE: {err})"),
                (None, 0) => String::new(),
                (None, drops) => format!(" (INCOMPLETE: {} ring-buffer drops)", thousands(drops)),
            }
        );
    }
    let slow: Vec<&str> = h.probes.iter().filter(|p| p.emulated == Some(false)).map(|p| p.function.as_str()).collect();
    if !slow.is_empty() {
        let _ =
            writeln!(o, "  slow probes (single-stepped, ~11 µs a call): {} (see --explain-probes)", slow.join(", "));
    }
    let _ = writeln!(o);
    render_leaks(o, t);
    render_growth(o, t);
}

/// Leak candidates with their stacks, the largest first.
fn render_leaks(o: &mut String, t: &Trace) {
    let _ = writeln!(o, "Leak candidates [measured: {}; grouped by allocation stack and phase]", t.leak_rule);
    if t.leaks.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for (i, l) in t.leaks.iter().take(LEAKS_SHOWN).enumerate() {
        // In a process tree, whose leak it is.
        let process = match t.processes.iter().find(|p| p.pid == l.pid) {
            Some(p) if t.processes.len() > 1 => format!(" in PID {} ({})", p.pid, short_command(&p.command)),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "  #{} {} in {} allocations{process}, phase {}, oldest {:.2} s",
            i + 1,
            bytes(l.bytes),
            thousands(l.count),
            l.phase,
            l.oldest_age_s
        );
        if l.stack.is_empty() {
            let _ = writeln!(o, "      (no stack)");
        }
        for f in l.stack.iter().take(FRAMES_SHOWN) {
            let _ = writeln!(o, "      {}", describe(f));
        }
        if l.stack.len() > FRAMES_SHOWN {
            let _ = writeln!(o, "      ... {} more frames in the JSON trace", l.stack.len() - FRAMES_SHOWN);
        }
    }
    if t.leaks.len() > LEAKS_SHOWN {
        let rest = t.leaks[LEAKS_SHOWN..].iter().map(|l| l.bytes).fold(0, u64::saturating_add);
        let _ = writeln!(o, "  ... {} more groups ({}) in the JSON trace", t.leaks.len() - LEAKS_SHOWN, bytes(rest));
    }
    if t.leak_groups_not_listed > 0 {
        let _ = writeln!(
            o,
            "  ... and {} smaller groups not listed here{}",
            thousands(t.leak_groups_not_listed),
            if t.processes.len() > 1 { " (each process's own are in processes[].leaks)" } else { "" }
        );
    }
    let _ = writeln!(o);
}

fn render_growth(o: &mut String, t: &Trace) {
    let _ = writeln!(o, "Growth suspects [measured: {}]", t.growth_rule);
    if t.growth_suspects.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for (i, g) in t.growth_suspects.iter().enumerate() {
        let _ = writeln!(
            o,
            "  #{} +{} in the last {:.1} s, now {} in {} allocations",
            i + 1,
            bytes(g.growth_bytes),
            g.window_s,
            bytes(g.live_bytes),
            thousands(g.live_count)
        );
        for f in g.stack.iter().take(FRAMES_SHOWN) {
            let _ = writeln!(o, "      {}", describe(f));
        }
    }
    let _ = writeln!(o);
}

/// Where each allocator probe sits and why (`--explain-probes`).
pub fn explain_probes(setup: &HeapSetup) -> String {
    let mut o = String::new();
    let setup = match setup {
        Ok(s) => s,
        Err(why) => return format!("memtrace: heap probes: none ({why})\n"),
    };
    for (allocator, probes) in setup {
        explain_library(&mut o, allocator, probes);
    }
    o
}

fn explain_library(o: &mut String, allocator: &Allocator, probes: &[HeapProbe]) {
    let _ = writeln!(o, "memtrace: heap probes in {} ({})", allocator.path.display(), allocator.how);
    for p in probes {
        match &p.placement {
            Some(pl) => {
                let _ = writeln!(
                    o,
                    "  {:<15} {:#x}+{:<3} {}: {}",
                    p.function,
                    p.address,
                    pl.offset,
                    if pl.emulated { "emulated" } else { "SINGLE-STEPPED" },
                    pl.reason
                );
            }
            None => {
                let _ = writeln!(o, "  {:<15} {}", p.function, p.status);
            }
        }
    }
}

/// A command line cut to its program's file name and first argument.
fn short_command(command: &str) -> String {
    let mut words = command.split_whitespace();
    let program = words.next().map_or("", |p| p.rsplit('/').next().unwrap_or(p));
    match words.next() {
        Some(arg) => format!("{program} {}", arg.chars().take(24).collect::<String>()),
        None => program.to_string(),
    }
}
