//! Phases marked by the target (`memtrace_phase_begin/end`): a stack of open
//! phases, and for each finished one what changed while it ran, computed as
//! the difference of two snapshots of the running totals.
use std::collections::BTreeMap;

use crate::model::aspace::FileId;

/// One file's measured byte counts (running totals, or gains in a phase).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileCounts {
    pub loaded: u64,
    pub fault_around: u64,
    pub read_from_disk: u64,
    pub unloaded: u64,
}

impl FileCounts {
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

#[derive(Debug, Default)]
pub struct Phases {
    /// Open phases: name, start time, begin marker's sequence number, totals then.
    stack: Vec<(String, u64, u32, Totals)>,
    pub done: Vec<PhaseRecord>,
    /// End markers with no matching begin.
    pub unmatched_ends: u64,
}

impl Phases {
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
            done: Vec::new(),
            unmatched_ends: 0,
        }
    }

    /// The begin markers' numbers of the open phases.
    pub fn open_seqs(&self) -> impl Iterator<Item = u32> + '_ {
        self.stack.iter().map(|(_, _, seq, _)| *seq)
    }

    /// Closes whatever is still open when tracing stops.
    pub fn finish(&mut self, ts_ns: u64, totals: &Totals) {
        while !self.stack.is_empty() {
            self.close(ts_ns, None, totals);
        }
        self.done.sort_by_key(|p| (p.start_ns, p.depth));
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
        self.done.push(PhaseRecord {
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
        });
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
        p.finish(10, &totals(50, 5));
        let paths: Vec<_> = p.done.iter().map(|r| (r.path.as_str(), r.depth)).collect();
        assert_eq!(paths, [("search", 0), ("search/batch", 1), ("search/batch/score", 2)]);
        assert!(p.done.iter().all(|r| r.end_ns == 9 && r.end_seq == Some(4) && !r.open));
    }

    #[test]
    fn stray_ends_are_counted_and_open_phases_are_closed_at_stop() {
        let mut p = Phases::default();
        p.end("never-begun", 1, 1, &Totals::default());
        p.begin("serve".into(), 2, 2, Totals::default());
        p.finish(7, &totals(8, 1));
        assert_eq!(p.unmatched_ends, 1);
        assert!(p.done[0].open && p.done[0].end_seq.is_none());
        assert_eq!(p.done[0].end_ns, 7);
    }
}
