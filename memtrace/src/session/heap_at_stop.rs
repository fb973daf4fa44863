//! Reading the heap from the kernel maps: totals, and at stop the live
//! allocations grouped into leak candidates with symbolized stacks. Runs
//! while the target is alive (its exit stop, or before detaching).
use anyhow::Result;
use memtrace_common::HeapTotals;

use crate::{
    kernel::probes::Probes,
    model::growth::Suspect,
    model::heap_marks::{leak_groups, HeapMarks, LiveAllocation},
    symbolize::{self, FileMapping},
    trace::{GrowthSuspect, Leak},
};

/// Leak groups symbolized and kept in the trace; the rest are counted.
pub const MAX_LEAK_GROUPS: usize = 50;

/// The heap when tracing stopped.
pub struct HeapAtStop {
    pub totals: HeapTotals,
    /// Allocator calls entered and not returned at the stop.
    pub open_calls: u64,
    pub live_allocations: u64,
    /// Live allocations made before the target's latest execve: that
    /// image's heap is gone (count, bytes), so they are neither live nor leaks.
    pub released_by_exec: (u64, u64),
    pub leaks: Vec<Leak>,
    /// Leak groups beyond MAX_LEAK_GROUPS (not symbolized).
    pub more_leak_groups: usize,
    pub growth_suspects: Vec<GrowthSuspect>,
}

/// Growth suspects symbolized and kept in the trace.
pub const MAX_GROWTH_SUSPECTS: usize = 10;

/// What the stop needs to know about the session.
pub struct StopContext<'a> {
    /// The process whose heap this is.
    pub pid: u32,
    /// Its allocator totals.
    pub totals: HeapTotals,
    pub now_ns: u64,
    /// Only allocations made at or before it are leak candidates (now minus
    /// --leak-age; now when every live allocation counts).
    pub made_by_ns: u64,
    /// The target's latest execve: allocations before it died with the old image.
    pub last_exec_ns: u64,
    pub marks: &'a HeapMarks,
    /// The target's mappings at the latest /proc read (if it is gone).
    pub saved_mappings: &'a [FileMapping],
    /// Its CPython's layout, when its stacks carry Python frames.
    pub python: Option<&'static crate::runtime::cpython::Layout>,
    /// Its interpreter's file, when its groups are merged by their Python
    /// frames (see merge_interpreter_internals).
    pub interpreter: Option<&'a str>,
    /// Its allocations in the live map (read for every process at once).
    pub live: &'a [LiveAllocation],
    /// Allocator calls entered and not returned, the whole scope's.
    pub open_calls: u64,
}

/// Reads the totals and the live map, groups the leak candidates and
/// symbolizes their stacks and the growth suspects' (`window_s` long).
pub fn at_stop(probes: &Probes, ctx: &StopContext, mut suspects: Vec<Suspect>, window_s: f64) -> Result<HeapAtStop> {
    let StopContext {
        pid,
        totals,
        now_ns,
        made_by_ns,
        last_exec_ns,
        marks,
        saved_mappings,
        python,
        interpreter,
        live,
        open_calls,
    } = *ctx;
    let (live, before_exec): (Vec<_>, Vec<_>) =
        live.iter().filter(|a| a.pid == pid).cloned().partition(|a| a.ts_ns >= last_exec_ns);
    let released_by_exec = (before_exec.len() as u64, before_exec.iter().map(|a| a.size).sum());
    let mut groups = leak_groups(&live, made_by_ns, marks);
    let more_leak_groups = groups.len().saturating_sub(MAX_LEAK_GROUPS);
    groups.truncate(MAX_LEAK_GROUPS);
    suspects.truncate(MAX_GROWTH_SUSPECTS);
    // One symbolization pass for the leak groups' and the suspects' stacks.
    let stack_ids = groups.iter().map(|g| g.stack_id).chain(suspects.iter().map(|s| s.stack_id));
    let stacks: Vec<Vec<u64>> =
        stack_ids.map(|id| if id == 0 { vec![] } else { probes.stack(id).unwrap_or_default() }).collect();
    let mut frames = symbolize::symbolize(pid, &stacks, saved_mappings, python);
    let suspect_frames = frames.split_off(groups.len());
    let growth_suspects = suspects
        .into_iter()
        .zip(suspect_frames)
        .map(|(s, stack)| GrowthSuspect {
            stack_id: s.stack_id,
            live_bytes: s.live_bytes,
            live_count: s.live_count,
            growth_bytes: s.growth_bytes,
            window_s,
            stack,
        })
        .collect();
    let leaks = groups
        .into_iter()
        .zip(frames)
        .map(|(g, stack)| Leak {
            bytes: g.bytes,
            count: g.count,
            oldest_age_s: now_ns.saturating_sub(g.oldest_ts_ns) as f64 / 1e9,
            phase: g.phase,
            pid,
            stack_id: g.stack_id,
            stack,
        })
        .collect();
    let leaks = merge_same_source(leaks);
    // A Python program: stacks that differ only in the interpreter's own
    // C frames (specialised bytecode, another call path into the same
    // Python code) are one group.
    let leaks = match interpreter {
        Some(file) => merge_interpreter_internals(leaks, file),
        None => leaks,
    };
    Ok(HeapAtStop {
        totals,
        open_calls,
        live_allocations: live.len() as u64,
        released_by_exec,
        leaks,
        more_leak_groups,
        growth_suspects,
    })
}

/// Merges groups whose stacks read the same (function, file and line of
/// every frame) in the same phase: a loop the compiler unrolled calls from
/// two addresses that are one line of source. Keeps the larger group's
/// stack; stays sorted by bytes.
fn merge_same_source(leaks: Vec<Leak>) -> Vec<Leak> {
    merge_by(leaks, |l| {
        // Stacks that did not symbolize stay apart (their text is addresses).
        let symbolized = !l.stack.is_empty() && l.stack.iter().all(|f| f.function.is_some());
        symbolized.then(|| (l.phase.clone(), l.stack.iter().map(symbolize::describe).collect()))
    })
}

/// Merges groups with Python frames whose stacks read the same once the
/// frames in the interpreter's own file (`interpreter`: the executable or
/// libpython) are left out: the Python frames and the native frames
/// outside the interpreter (a C extension's, the allocator's) decide.
fn merge_interpreter_internals(leaks: Vec<Leak>, interpreter: &str) -> Vec<Leak> {
    merge_by(leaks, |l| {
        let python = l.stack.iter().any(|f| f.module.as_deref() == Some(crate::runtime::python_frames::MODULE));
        python.then(|| {
            let outside = l.stack.iter().filter(|f| f.module.as_deref() != Some(interpreter));
            (l.phase.clone(), outside.map(symbolize::describe).collect())
        })
    })
}

/// Merges groups with the same key (None: a group that stays apart), in
/// the same phase; keeps the larger group's stack; sorted by bytes.
fn merge_by(leaks: Vec<Leak>, key: impl Fn(&Leak) -> Option<(String, Vec<String>)>) -> Vec<Leak> {
    let mut out: Vec<Leak> = Vec::with_capacity(leaks.len());
    for l in leaks {
        let k = key(&l);
        match out.iter_mut().find(|o| k.is_some() && key(o) == k) {
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
        Leak {
            bytes,
            count: 1,
            oldest_age_s: bytes as f64,
            phase: phase.into(),
            pid: 1,
            stack_id: address,
            stack: vec![frame],
        }
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

    #[test]
    fn python_groups_differing_only_in_the_interpreters_frames_are_merged() {
        let frame = |function: &str, module: &str| Frame {
            function: Some(function.into()),
            module: Some(module.into()),
            ..Frame::default()
        };
        let python = |bytes: u64, eval: &str, caller: &str| Leak {
            stack: vec![
                frame("malloc", "/lib/libc.so.6"),
                frame(eval, "/usr/bin/python3.11"),
                frame("insert", crate::runtime::python_frames::MODULE),
                frame(caller, crate::runtime::python_frames::MODULE),
            ],
            ..leak(bytes, "leak", bytes, Some("x"))
        };
        let merged = merge_interpreter_internals(
            vec![
                python(100, "_PyEval_EvalFrameDefault", "load"),
                python(50, "_PyObject_Call", "load"), // other interpreter path, same Python code
                python(30, "_PyEval_EvalFrameDefault", "warm"), // another Python caller
                leak(20, "leak", 0x40, Some("insert")), // native only: left alone
            ],
            "/usr/bin/python3.11",
        );
        let summary: Vec<_> = merged.iter().map(|l| (l.bytes, l.count)).collect();
        assert_eq!(summary, [(150, 2), (30, 1), (20, 1)]);
        assert_eq!(merged[0].stack[1].function.as_deref(), Some("_PyEval_EvalFrameDefault"), "the larger's stack");
    }
}
