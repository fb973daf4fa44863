//! Reading the heap from the kernel maps: totals, and at stop the live
//! allocations grouped into leak candidates with symbolized stacks. Runs
//! while the target is alive (its exit stop, or before detaching).
use anyhow::Result;
use memtrace_common::HeapTotals;

use crate::{
    events::HeapCounts,
    heap::{leak_groups, HeapMarks},
    probes::Probes,
    symbolize::{self, FileMapping},
    trace::Leak,
};

/// Leak groups symbolized and kept in the trace; the rest are counted.
pub const MAX_LEAK_GROUPS: usize = 50;

pub fn counts(t: &HeapTotals) -> HeapCounts {
    HeapCounts {
        allocated_bytes: t.allocated_bytes,
        freed_bytes: t.freed_bytes,
        allocs: t.allocs,
        frees: t.frees,
        unknown_frees: t.unknown_frees,
    }
}

/// The heap when tracing stopped.
pub struct HeapAtStop {
    pub totals: HeapTotals,
    pub live_allocations: u64,
    pub leaks: Vec<Leak>,
    /// Leak groups beyond MAX_LEAK_GROUPS (not symbolized).
    pub more_leak_groups: usize,
}

/// `made_by_ns`: only allocations made at or before it are candidates
/// (now minus --leak-age; now when every live allocation counts).
pub fn at_stop(
    probes: &Probes,
    pid: u32,
    now_ns: u64,
    made_by_ns: u64,
    marks: &HeapMarks,
    saved_mappings: &[FileMapping],
) -> Result<HeapAtStop> {
    let totals = probes.heap_totals()?;
    let live = probes.live_allocations()?;
    let mut groups = leak_groups(&live, made_by_ns, marks);
    let more_leak_groups = groups.len().saturating_sub(MAX_LEAK_GROUPS);
    groups.truncate(MAX_LEAK_GROUPS);
    let stacks: Vec<Vec<u64>> = groups
        .iter()
        .map(|g| if g.stack_id == 0 { vec![] } else { probes.stack(g.stack_id).unwrap_or_default() })
        .collect();
    let frames = symbolize::symbolize(pid, &stacks, saved_mappings);
    let leaks = groups
        .into_iter()
        .zip(frames)
        .map(|(g, stack)| Leak {
            bytes: g.bytes,
            count: g.count,
            oldest_age_s: now_ns.saturating_sub(g.oldest_ts_ns) as f64 / 1e9,
            phase: g.phase,
            stack_id: g.stack_id,
            stack,
        })
        .collect();
    let leaks = merge_same_source(leaks);
    Ok(HeapAtStop { totals, live_allocations: live.len() as u64, leaks, more_leak_groups })
}

/// Merges groups whose stacks read the same (function, file and line of
/// every frame) in the same phase: a loop the compiler unrolled calls from
/// two addresses that are one line of source. Keeps the larger group's
/// stack; stays sorted by bytes.
fn merge_same_source(leaks: Vec<Leak>) -> Vec<Leak> {
    let key = |l: &Leak| {
        let frames: Vec<String> = l.stack.iter().map(symbolize::describe).collect();
        (l.phase.clone(), frames)
    };
    let mut out: Vec<Leak> = Vec::with_capacity(leaks.len());
    for l in leaks {
        // Stacks that did not symbolize stay apart (their text is addresses).
        let symbolized = !l.stack.is_empty() && l.stack.iter().all(|f| f.function.is_some());
        match out.iter_mut().find(|o| symbolized && key(o) == key(&l)) {
            Some(o) => {
                o.bytes += l.bytes;
                o.count += l.count;
                o.oldest_age_s = o.oldest_age_s.max(l.oldest_age_s);
            }
            None => out.push(l),
        }
    }
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.count.cmp(&a.count)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::Frame;

    fn leak(bytes: u64, phase: &str, address: u64, function: Option<&str>) -> Leak {
        let frame = Frame { address, function: function.map(Into::into), line: Some(3), ..Frame::default() };
        Leak { bytes, count: 1, oldest_age_s: bytes as f64, phase: phase.into(), stack_id: address, stack: vec![frame] }
    }

    #[test]
    fn groups_that_read_the_same_are_merged_others_not() {
        let merged = merge_same_source(vec![
            leak(100, "leak", 0x10, Some("insert")),
            leak(50, "leak", 0x20, Some("insert")), // same source line, other address
            leak(70, "load", 0x30, Some("insert")), // other phase
            leak(60, "leak", 0x40, None),           // not symbolized
            leak(60, "leak", 0x40, None),
        ]);
        let summary: Vec<_> = merged.iter().map(|l| (l.bytes, l.count, l.phase.as_str(), l.stack_id)).collect();
        assert_eq!(
            summary,
            [(150, 2, "leak", 0x10), (70, 1, "load", 0x30), (60, 1, "leak", 0x40), (60, 1, "leak", 0x40)]
        );
        assert_eq!(merged[0].oldest_age_s, 100.0);
    }
}
