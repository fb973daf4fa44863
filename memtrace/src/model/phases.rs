//! Phases marked by the target (`memtrace_phase_begin/end`): a stack of open
//! phases, and for each finished one what changed while it ran, computed as
//! the difference of two snapshots of the running totals. The first
//! `max_listed` finished phases are kept one by one; later ones are summed
//! by path (a server marking a phase per request keeps bounded memory).
use std::collections::{BTreeMap, VecDeque};

use memtrace_common::HeapTotals;

use crate::model::{aspace::FileId, heap_marks::HeapMarks};

/// Phases listed one by one unless told otherwise (`--max-phases`).
pub const DEFAULT_MAX_LISTED: usize = 1000;

/// Phases past the cap wait this many closes for their markers' heap
/// totals (which follow the marker events in the ring) before they are
/// folded without them.
const AWAITING_MAX: usize = 64;

/// One file's measured byte counts (running totals, or gains in a phase).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileCounts {
    pub loaded: u64,
    pub fault_around: u64,
    pub read_from_disk: u64,
    pub unloaded: u64,
}

impl FileCounts {
    fn add(&mut self, o: &FileCounts) {
        self.loaded += o.loaded;
        self.fault_around += o.fault_around;
        self.read_from_disk += o.read_from_disk;
        self.unloaded += o.unloaded;
    }

    fn since(&self, before: &FileCounts) -> FileCounts {
        FileCounts {
            loaded: self.loaded.saturating_sub(before.loaded),
            fault_around: self.fault_around.saturating_sub(before.fault_around),
            read_from_disk: self.read_from_disk.saturating_sub(before.read_from_disk),
            unloaded: self.unloaded.saturating_sub(before.unloaded),
        }
    }
}

/// Running totals at one instant (fed by the session from its aggregators).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub files: BTreeMap<FileId, FileCounts>,
    pub page_faults: u64,
    pub anon_rss: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseRecord {
    pub name: String,
    /// Names of the enclosing phases and this one, joined with "/".
    pub path: String,
    pub depth: usize,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Sequence numbers of its begin and end markers (end None: closed at stop).
    pub start_seq: u32,
    pub end_seq: Option<u32>,
    /// Still running when tracing stopped (closed at the stop time).
    pub open: bool,
    /// Per file: what changed in the phase (files with no change left out).
    pub files: BTreeMap<FileId, FileCounts>,
    pub page_faults: u64,
    pub anon_rss_growth: i64,
}

/// The finished phases of one path past the listed ones, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FoldedPhase {
    pub name: String,
    pub path: String,
    pub depth: usize,
    /// How many were folded.
    pub count: u64,
    pub first_start_ns: u64,
    pub last_end_ns: u64,
    /// Their durations, summed.
    pub total_ns: u64,
    pub files: BTreeMap<FileId, FileCounts>,
    pub page_faults: u64,
    pub anon_rss_growth: i64,
    /// Live-heap growth summed over those whose markers' heap totals
    /// arrived (`heap_growth_of`), and how many those were.
    pub heap_growth: i64,
    pub heap_growth_of: u64,
}

#[derive(Debug)]
pub struct Phases {
    /// Open phases: name, start time, begin marker's sequence number, totals then.
    stack: Vec<(String, u64, u32, Totals)>,
    /// The first `max_listed` finished phases.
    pub done: Vec<PhaseRecord>,
    /// Later ones, waiting for their heap totals to be folded.
    awaiting: VecDeque<PhaseRecord>,
    /// Later ones, summed by path.
    pub folded: BTreeMap<String, FoldedPhase>,
    max_listed: usize,
    /// End markers with no matching begin.
    pub unmatched_ends: u64,
}

impl Default for Phases {
    fn default() -> Phases {
        Phases::new(DEFAULT_MAX_LISTED)
    }
}

impl Phases {
    pub fn new(max_listed: usize) -> Phases {
        Phases {
            stack: Vec::new(),
            done: Vec::new(),
            awaiting: VecDeque::new(),
            folded: BTreeMap::new(),
            max_listed,
            unmatched_ends: 0,
        }
    }

    pub fn begin(&mut self, name: String, ts_ns: u64, seq: u32, totals: Totals) {
        self.stack.push((name, ts_ns, seq, totals));
    }

    /// Ends the innermost open phase called `name`, and any phase opened
    /// inside it that was never ended.
    pub fn end(&mut self, name: &str, ts_ns: u64, seq: u32, totals: &Totals) {
        let Some(pos) = self.stack.iter().rposition(|(n, _, _, _)| n == name) else {
            self.unmatched_ends += 1;
            return;
        };
        while self.stack.len() > pos {
            self.close(ts_ns, Some(seq), totals);
        }
    }

    /// A forked child's: the phases open in the parent, open in the child
    /// too, measured from the child's own `totals` at its birth.
    pub fn forked(&self, totals: &Totals) -> Phases {
        Phases {
            stack: self.stack.iter().map(|(n, ts, seq, _)| (n.clone(), *ts, *seq, totals.clone())).collect(),
            ..Phases::new(self.max_listed)
        }
    }

    /// The begin markers' numbers of the open phases.
    pub fn open_seqs(&self) -> impl Iterator<Item = u32> + '_ {
        self.stack.iter().map(|(_, _, seq, _)| *seq)
    }

    /// Closes whatever is still open when tracing stops (listed, however
    /// many are: at most the nesting depth), and folds every phase past
    /// the listed ones.
    pub fn finish(&mut self, ts_ns: u64, totals: &Totals, marks: &mut HeapMarks) {
        while !self.stack.is_empty() {
            self.close(ts_ns, None, totals);
        }
        self.fold_awaiting(marks, 0);
        self.done.sort_by_key(|p| (p.start_ns, p.depth));
    }

    /// Folds the phases past the listed ones whose heap totals have
    /// arrived, and the oldest beyond `AWAITING_MAX` without them; their
    /// markers' totals are then forgotten.
    pub fn fold_ready(&mut self, marks: &mut HeapMarks) {
        self.fold_awaiting(marks, AWAITING_MAX);
    }

    /// Folds awaiting phases, keeping at most `keep` of those still
    /// without heap totals (the newest; 0 folds them all).
    fn fold_awaiting(&mut self, marks: &mut HeapMarks, keep: usize) {
        // Only phases ended by a marker wait here (see `close`).
        let growth = |r: &PhaseRecord, marks: &HeapMarks| {
            r.end_seq.and_then(|end| marks.growth(r.start_seq, Some(end), &HeapTotals::default()))
        };
        let mut pending = std::mem::take(&mut self.awaiting);
        let mut over = pending.iter().filter(|r| growth(r, marks).is_none()).count().saturating_sub(keep);
        let mut waiting = VecDeque::new();
        while let Some(r) = pending.pop_front() {
            let g = growth(&r, marks);
            if g.is_none() {
                if over == 0 {
                    waiting.push_back(r);
                    continue;
                }
                over -= 1;
            }
            // An end marker closes every phase left open inside the one it
            // ends: its totals stay while another of them needs them.
            let shared = |seq: Option<u32>| {
                seq.is_some()
                    && (pending.iter().chain(&waiting).any(|o| o.end_seq == seq)
                        || self.done.last().is_some_and(|o| o.end_seq == seq))
            };
            marks.forget(r.start_seq);
            if let Some(end) = r.end_seq.filter(|_| !shared(r.end_seq)) {
                marks.forget(end);
            }
            self.fold(r, g);
        }
        self.awaiting = waiting;
    }

    fn fold(&mut self, r: PhaseRecord, heap_growth: Option<i64>) {
        let f = self.folded.entry(r.path.clone()).or_insert_with(|| FoldedPhase {
            name: r.name.clone(),
            path: r.path.clone(),
            depth: r.depth,
            first_start_ns: r.start_ns,
            ..Default::default()
        });
        f.count += 1;
        f.first_start_ns = f.first_start_ns.min(r.start_ns);
        f.last_end_ns = f.last_end_ns.max(r.end_ns);
        f.total_ns += r.end_ns.saturating_sub(r.start_ns);
        for (id, c) in &r.files {
            f.files.entry(*id).or_default().add(c);
        }
        f.page_faults += r.page_faults;
        f.anon_rss_growth += r.anon_rss_growth;
        if let Some(g) = heap_growth {
            f.heap_growth += g;
            f.heap_growth_of += 1;
        }
    }

    pub fn current_path(&self) -> String {
        self.stack.iter().map(|(n, _, _, _)| n.as_str()).collect::<Vec<_>>().join("/")
    }

    /// Closes the innermost phase at its end marker `end_seq`, or at the
    /// stop (None: it is still open).
    fn close(&mut self, ts_ns: u64, end_seq: Option<u32>, now: &Totals) {
        let path = self.current_path();
        let (name, start_ns, start_seq, before) = self.stack.pop().expect("caller checked");
        let mut files = BTreeMap::new();
        for (id, n) in &now.files {
            let d = n.since(&before.files.get(id).copied().unwrap_or_default());
            if d != FileCounts::default() {
                files.insert(*id, d);
            }
        }
        let record = PhaseRecord {
            name,
            path,
            depth: self.stack.len(),
            start_ns,
            end_ns: ts_ns,
            start_seq,
            end_seq,
            open: end_seq.is_none(),
            files,
            page_faults: now.page_faults.saturating_sub(before.page_faults),
            anon_rss_growth: now.anon_rss as i64 - before.anon_rss as i64,
        };
        if self.done.len() < self.max_listed || end_seq.is_none() {
            self.done.push(record);
        } else {
            self.awaiting.push_back(record);
        }
    }

    /// Finished phases past the listed ones (folded or about to be).
    pub fn not_listed(&self) -> u64 {
        self.folded.values().map(|f| f.count).sum::<u64>() + self.awaiting.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FileId = FileId { major: 8, minor: 1, inode: 5 };

    fn totals(loaded: u64, faults: u64) -> Totals {
        let counts = FileCounts { loaded, fault_around: loaded / 2, read_from_disk: 0, unloaded: loaded / 4 };
        Totals { files: [(A, counts)].into(), page_faults: faults, anon_rss: faults * 4096 }
    }

    #[test]
    fn a_phase_gets_what_changed_while_it_ran() {
        let mut p = Phases::default();
        p.begin("load".into(), 10, 1, totals(100, 1));
        p.end("load", 20, 2, &totals(300, 4));
        let r = &p.done[0];
        assert_eq!((r.name.as_str(), r.start_ns, r.end_ns, r.open), ("load", 10, 20, false));
        assert_eq!((r.start_seq, r.end_seq), (1, Some(2)));
        assert_eq!(r.files[&A], FileCounts { loaded: 200, fault_around: 100, read_from_disk: 0, unloaded: 50 });
        assert_eq!((r.page_faults, r.anon_rss_growth), (3, 3 * 4096));
    }

    #[test]
    fn nested_phases_have_paths_and_unended_inner_phases_close_with_the_outer() {
        let mut p = Phases::default();
        p.begin("search".into(), 0, 1, totals(0, 0));
        p.begin("batch".into(), 1, 2, totals(0, 0));
        p.begin("score".into(), 2, 3, totals(0, 0));
        assert_eq!(p.current_path(), "search/batch/score");
        p.end("search", 9, 4, &totals(50, 5)); // batch and score never ended
        p.finish(10, &totals(50, 5), &mut HeapMarks::default());
        let paths: Vec<_> = p.done.iter().map(|r| (r.path.as_str(), r.depth)).collect();
        assert_eq!(paths, [("search", 0), ("search/batch", 1), ("search/batch/score", 2)]);
        assert!(p.done.iter().all(|r| r.end_ns == 9 && r.end_seq == Some(4) && !r.open));
    }

    fn heap(live: u64) -> HeapTotals {
        HeapTotals { allocated_bytes: live, ..Default::default() }
    }

    #[test]
    fn phases_past_the_cap_are_summed_by_path_with_their_heap_growth() {
        let (mut p, mut marks) = (Phases::new(2), HeapMarks::default());
        let mut seq = 0;
        for i in 0..5u64 {
            seq += 2;
            p.begin("request".into(), i * 10, seq - 1, totals(i * 100, i));
            marks.on_totals(seq - 1, heap(i * 1000));
            p.end("request", i * 10 + 4, seq, &totals(i * 100 + 100, i + 3));
            p.fold_ready(&mut marks);
            marks.on_totals(seq, heap(i * 1000 + 64));
            p.fold_ready(&mut marks);
        }
        p.begin("drain".into(), 60, 11, totals(500, 5));
        p.finish(70, &totals(500, 5), &mut marks);
        let listed: Vec<_> = p.done.iter().map(|r| (r.path.as_str(), r.start_ns)).collect();
        assert_eq!(listed, [("request", 0), ("request", 10), ("drain", 60)], "the first two, and the open one");
        let f = &p.folded["request"];
        assert_eq!((f.count, f.first_start_ns, f.last_end_ns, f.total_ns), (3, 20, 44, 12));
        assert_eq!(f.files[&A], FileCounts { loaded: 300, fault_around: 150, read_from_disk: 0, unloaded: 75 });
        assert_eq!((f.page_faults, f.heap_growth, f.heap_growth_of), (9, 3 * 64, 3));
        assert_eq!(p.not_listed(), 3);
        // The folded phases' marker totals are gone; the listed ones' stay.
        assert_eq!(marks.totals_held(), 4, "markers 1-4 of the listed phases; 11 never had totals");
        assert_eq!(marks.growth(1, Some(2), &HeapTotals::default()), Some(64));
        assert_eq!(marks.peak_at_markers(), Some(4064), "the forgotten markers' peak stays");
    }

    #[test]
    fn without_heap_totals_phases_past_the_cap_fold_after_a_short_wait() {
        let (mut p, mut marks) = (Phases::new(1), HeapMarks::default());
        for i in 0..(AWAITING_MAX as u32 + 11) {
            p.begin("step".into(), u64::from(i), 2 * i + 1, Totals::default());
            p.end("step", u64::from(i), 2 * i + 2, &Totals::default());
            p.fold_ready(&mut marks);
        }
        assert_eq!(p.folded["step"].count, 10, "all but the listed one and the waiting ones");
        assert_eq!(p.not_listed(), AWAITING_MAX as u64 + 10);
        p.finish(100, &Totals::default(), &mut marks);
        let f = &p.folded["step"];
        assert_eq!((f.count, f.heap_growth_of), (AWAITING_MAX as u64 + 10, 0));
    }

    #[test]
    fn an_end_marker_shared_with_a_listed_phase_keeps_its_totals() {
        let (mut p, mut marks) = (Phases::new(1), HeapMarks::default());
        p.begin("outer".into(), 0, 1, Totals::default());
        p.begin("inner".into(), 1, 2, Totals::default());
        for seq in 1..=3 {
            marks.on_totals(seq, heap(u64::from(seq) * 10));
        }
        p.end("outer", 5, 3, &Totals::default()); // inner listed, outer folded
        p.fold_ready(&mut marks);
        assert_eq!(p.done[0].path, "outer/inner");
        assert_eq!(p.folded["outer"].heap_growth, 20);
        assert_eq!(marks.growth(2, Some(3), &HeapTotals::default()), Some(10), "marker 3 kept for inner");
    }

    #[test]
    fn stray_ends_are_counted_and_open_phases_are_closed_at_stop() {
        let mut p = Phases::default();
        p.end("never-begun", 1, 1, &Totals::default());
        p.begin("serve".into(), 2, 2, Totals::default());
        p.finish(7, &totals(8, 1), &mut HeapMarks::default());
        assert_eq!(p.unmatched_ends, 1);
        assert!(p.done[0].open && p.done[0].end_seq.is_none());
        assert_eq!(p.done[0].end_ns, 7);
    }
}
