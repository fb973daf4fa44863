//! The heap as the allocator probes saw it: totals at each phase marker,
//! the phase in force after each marker, and leak candidates grouped from
//! the live-allocation map. Plain data: the session feeds it, tests too.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use memtrace_common::{HeapTotals, PHASE_SEQ_USER};

/// Name of the "phase" before the first marker, or outside every phase.
pub const NO_PHASE: &str = "(no phase)";

#[derive(Clone, Debug, Default)]
pub struct HeapMarks {
    /// Allocator totals right after each phase marker, by sequence number
    /// (those of folded phases forgotten).
    at_marker: HashMap<u32, HeapTotals>,
    /// The highest live bytes among the forgotten markers' totals.
    forgotten_peak: Option<i64>,
    /// The phase path in force after each marker (absent: none open), each
    /// distinct path held once.
    phase_after: BTreeMap<u32, Arc<str>>,
    paths: HashSet<Arc<str>>,
    /// When each marker was made (CLOCK_MONOTONIC ns).
    marker_ts: HashMap<u32, u64>,
    /// Marks made in userspace (`memtrace mark`), by time: the kernel
    /// tags an allocation with its own process's latest eBPF marker only,
    /// so a later user mark is found here by the allocation's time.
    user_marks: BTreeMap<u64, u32>,
}

impl HeapMarks {
    pub fn on_marker(&mut self, seq: u32, ts_ns: u64, path_after: String) {
        let path = match self.paths.get(path_after.as_str()) {
            Some(p) => p.clone(),
            None => {
                let p: Arc<str> = path_after.into();
                self.paths.insert(p.clone());
                p
            }
        };
        self.phase_after.insert(seq, path);
        self.marker_ts.insert(seq, ts_ns);
        if seq & PHASE_SEQ_USER != 0 {
            self.user_marks.insert(ts_ns, seq);
        }
    }

    /// A forked child's: the parent's markers name the phases of the
    /// allocations the child makes before its own first marker; at the open
    /// phases' begin markers the child had no heap of its own yet.
    pub fn forked(&self, open: impl Iterator<Item = u32>) -> HeapMarks {
        let mut child = HeapMarks { at_marker: HashMap::new(), forgotten_peak: None, ..self.clone() };
        for seq in open {
            child.at_marker.insert(seq, HeapTotals::default());
        }
        child
    }

    pub fn on_totals(&mut self, seq: u32, totals: HeapTotals) {
        self.at_marker.insert(seq, totals);
    }

    /// Marker `seq`'s totals are needed no more (its phase was folded):
    /// only their live bytes stay, in the peak.
    pub fn forget(&mut self, seq: u32) {
        if let Some(t) = self.at_marker.remove(&seq) {
            self.forgotten_peak = self.forgotten_peak.max(Some(t.live_bytes()));
        }
    }

    /// The highest live bytes at any marker.
    pub fn peak_at_markers(&self) -> Option<i64> {
        self.at_marker.values().map(HeapTotals::live_bytes).max().max(self.forgotten_peak)
    }

    /// Markers whose totals are held.
    pub fn totals_held(&self) -> usize {
        self.at_marker.len()
    }

    /// The phase of an allocation made at `ts_ns` after marker `seq`
    /// (its process's latest eBPF marker), or after a later user mark.
    pub fn phase_of(&self, seq: u32, ts_ns: u64) -> &str {
        let since = self.marker_ts.get(&seq).copied().unwrap_or(0);
        let seq = match self.user_marks.range(since.saturating_add(1)..=ts_ns).next_back() {
            Some((_, &user)) => user,
            None => seq,
        };
        match self.phase_after.get(&seq) {
            Some(path) if !path.is_empty() => path.as_ref(),
            _ => NO_PHASE,
        }
    }

    /// Live-heap growth between two markers; `end` None means the totals at
    /// stop (`last`). None when a marker's totals never arrived.
    pub fn growth(&self, start: u32, end: Option<u32>, last: &HeapTotals) -> Option<i64> {
        let a = self.at_marker.get(&start)?;
        let b = match end {
            Some(seq) => self.at_marker.get(&seq)?,
            None => last,
        };
        Some(b.live_bytes() - a.live_bytes())
    }
}

/// One entry of the eBPF live-allocation map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveAllocation {
    /// The process it lives in.
    pub pid: u32,
    pub address: u64,
    pub size: u64,
    pub ts_ns: u64,
    /// 0 when the stack could not be taken.
    pub stack_id: u64,
    pub phase_seq: u32,
}

/// Live allocations from one stack in one phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakGroup {
    pub stack_id: u64,
    pub phase: String,
    pub count: u64,
    pub bytes: u64,
    pub oldest_ts_ns: u64,
}

/// Groups the live allocations made at or before `made_by_ns` by (stack,
/// phase), largest first (ties: more allocations, then older first).
pub fn leak_groups(live: &[LiveAllocation], made_by_ns: u64, marks: &HeapMarks) -> Vec<LeakGroup> {
    let mut groups: HashMap<(u64, &str), LeakGroup> = HashMap::new();
    for a in live.iter().filter(|a| a.ts_ns <= made_by_ns) {
        let phase = marks.phase_of(a.phase_seq, a.ts_ns);
        let g = groups.entry((a.stack_id, phase)).or_insert_with(|| LeakGroup {
            stack_id: a.stack_id,
            phase: phase.to_string(),
            count: 0,
            bytes: 0,
            oldest_ts_ns: u64::MAX,
        });
        g.count += 1;
        g.bytes += a.size;
        g.oldest_ts_ns = g.oldest_ts_ns.min(a.ts_ns);
    }
    let mut out: Vec<LeakGroup> = groups.into_values().collect();
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.count.cmp(&a.count)).then(a.oldest_ts_ns.cmp(&b.oldest_ts_ns)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(allocated: u64, freed: u64) -> HeapTotals {
        HeapTotals { allocated_bytes: allocated, freed_bytes: freed, ..Default::default() }
    }

    #[test]
    fn growth_between_markers_and_up_to_the_stop() {
        let mut m = HeapMarks::default();
        m.on_totals(1, counts(100, 0));
        m.on_totals(2, counts(900, 300));
        assert_eq!(m.growth(1, Some(2), &counts(0, 0)), Some(500));
        assert_eq!(m.growth(2, None, &counts(1000, 1000)), Some(-600));
        assert_eq!(m.growth(3, None, &counts(0, 0)), None, "totals of marker 3 never arrived");
    }

    #[test]
    fn allocations_are_grouped_by_stack_and_phase_largest_first() {
        let mut m = HeapMarks::default();
        m.on_marker(1, 1, "load".into());
        m.on_marker(2, 2, String::new()); // load ended, nothing open
        m.on_marker(3, 3, "leak".into());
        let a = |address, size, ts_ns, stack_id: u64, phase_seq| LiveAllocation {
            pid: 1,
            address,
            size,
            ts_ns,
            stack_id,
            phase_seq,
        };
        let live = [
            a(1, 4096, 50, 7, 3),
            a(2, 4096, 40, 7, 3),
            a(3, 100, 10, 7, 1),
            a(4, 10, 5, 9, 0),
            a(5, 10, 6, 9, 2),
            a(6, 1 << 20, 99, 8, 3), // made after the cutoff
        ];
        let groups = leak_groups(&live, 60, &m);
        let summary: Vec<_> =
            groups.iter().map(|g| (g.stack_id, g.phase.as_str(), g.count, g.bytes, g.oldest_ts_ns)).collect();
        assert_eq!(summary, [(7, "leak", 2, 8192, 40), (7, "load", 1, 100, 10), (9, NO_PHASE, 2, 20, 5)]);
    }

    #[test]
    fn a_user_mark_after_the_processs_own_marker_wins_by_time() {
        let mut m = HeapMarks::default();
        m.on_marker(1, 100, "load".into());
        m.on_marker(PHASE_SEQ_USER | 1, 200, "load/by-hand".into());
        m.on_marker(2, 300, "search".into());
        assert_eq!(m.phase_of(1, 150), "load");
        assert_eq!(m.phase_of(1, 250), "load/by-hand", "marked by hand after the process's marker 1");
        assert_eq!(m.phase_of(2, 350), "search", "the process's marker 2 came after the user mark");
        assert_eq!(m.phase_of(0, 50), NO_PHASE);
        assert_eq!(m.phase_of(0, 250), "load/by-hand");
    }
}
