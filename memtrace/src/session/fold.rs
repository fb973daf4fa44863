//! Folding ended processes into one summed entry (`--max-processes`): a
//! tree of thousands of short processes (a shell loop, a task runner)
//! keeps a bounded trace, and memtrace bounded memory, while every figure
//! of every process still counts in the scope's sums.
use std::collections::BTreeMap;

use crate::trace::{FileEntry, FileTotals, FoldedProcesses, KernelFaults, ProcessEntry, FOLDED_COMMANDS};

/// Adds an ended process's entry (assembled as for the trace) to `into`.
pub fn fold_into(into: &mut FoldedProcesses, e: &ProcessEntry) {
    if into.processes == 0 {
        into.first_started_s = e.started_s;
    }
    into.processes += 1;
    into.first_started_s = into.first_started_s.min(e.started_s);
    into.last_ended_s = into.last_ended_s.max(e.ended_s.unwrap_or(e.started_s));
    let command = if into.commands.contains_key(&e.command) || into.commands.len() < FOLDED_COMMANDS {
        e.command.clone()
    } else {
        "(other commands)".to_string()
    };
    *into.commands.entry(command).or_default() += 1;
    super::assemble::add_counters(&mut into.counters, &e.counters);
    if let Some(k) = &e.kernel {
        let sum = into.kernel.get_or_insert_with(|| KernelFaults {
            source: "/proc/PID/stat of each folded process that had one, summed".into(),
            minor_faults: 0,
            major_faults: 0,
        });
        sum.minor_faults += k.minor_faults;
        sum.major_faults += k.major_faults;
    }
    for r in &e.regions {
        match into.regions.iter_mut().find(|have| have.region == r.region) {
            Some(have) => {
                let (f, g) = (&mut have.faults, &r.faults);
                (f.total, f.read, f.write, f.exec) =
                    (f.total + g.total, f.read + g.read, f.write + g.write, f.exec + g.exec);
            }
            None => into.regions.push(r.clone()),
        }
    }
    if let Some(h) = &e.heap {
        let sum = into.heap.get_or_insert_with(|| crate::trace::ProcessHeap {
            read_at: "each folded process's at its end, summed".into(),
            ..Default::default()
        });
        sum.live_bytes += h.live_bytes;
        sum.live_allocations += h.live_allocations;
        let (t, o) = (&mut sum.totals, &h.totals);
        (t.allocs, t.frees, t.allocated_bytes, t.freed_bytes) = (
            t.allocs + o.allocs,
            t.frees + o.frees,
            t.allocated_bytes + o.allocated_bytes,
            t.freed_bytes + o.freed_bytes,
        );
    }
    if let Some(a) = &e.anon {
        into.anon.get_or_insert_with(Default::default).add(a, super::anon_at_stop::MAX_ORIGINS);
    }
    into.leak_bytes += e.leaks.iter().map(|l| l.bytes).sum::<u64>();
    into.leak_allocations += e.leaks.iter().map(|l| l.count).sum::<u64>();
    let mut files: BTreeMap<(u32, u32, u64), FileEntry> =
        std::mem::take(&mut into.files).into_iter().map(|f| ((f.device_major, f.device_minor, f.inode), f)).collect();
    for f in &e.files {
        match files.entry((f.device_major, f.device_minor, f.inode)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(f.clone());
            }
            std::collections::btree_map::Entry::Occupied(mut o) => super::assemble::merge_file(o.get_mut(), f),
        }
    }
    into.files = files.into_values().collect();
    into.file_totals = FileTotals::of(&into.files);
}

/// The folded processes as one entry among the listed ones, for the
/// scope's sums over processes (files, regions, kernel counts, heap).
pub fn as_entry(f: &FoldedProcesses) -> ProcessEntry {
    ProcessEntry {
        pid: 0,
        parent: None,
        command: format!("({} processes folded)", f.processes),
        started_s: f.first_started_s,
        ended_s: Some(f.last_ended_s),
        exit_code: None,
        exit_signal: None,
        final_truth: String::new(),
        counters: f.counters.clone(),
        kernel: f.kernel.clone(),
        regions: f.regions.clone(),
        rss: None,
        heap: f.heap.clone(),
        leaks: Vec::new(),
        leak_groups_not_listed: 0,
        phases: Vec::new(),
        phases_folded: Vec::new(),
        runtime: None,
        anon: f.anon.clone(),
        files: f.files.clone(),
        file_totals: f.file_totals.clone(),
    }
}
