//! Processes that ended while tracing goes on: their probes retired, their
//! heap read (leak candidates symbolized with their saved mappings) and
//! removed from the kernel maps, their models cut down to their figures.
//! A tree of thousands of short processes (a shell loop, a pool) otherwise
//! keeps every one in memtrace and in the kernel maps to the end: the maps
//! fill, later processes' allocations are lost, and the stop walks the
//! live map once per process.
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use super::{
    assemble, fold,
    stop::{Moment, StopCapture},
    Session,
};

/// Drain ticks (10 ms) between looks at the processes that ended.
pub const HARVEST_TICKS: u64 = 10;

/// The live map's walk costs two syscalls per entry, the running
/// processes' included: at most this share of memtrace's time goes to it.
const WALK_SHARE: u32 = 20;

/// Walks of the live map at most this often (a tree of short processes
/// must not fill it between two walks).
const WALK_EVERY_AT_LEAST: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct Harvest {
    /// Ended processes whose heap is still in the kernel maps, and how
    /// many live allocations they left there (from their exit events).
    pending: BTreeSet<u32>,
    pending_live: u64,
    /// When the live map was last walked, and how long that took.
    last_walk: Option<(Instant, Duration)>,
    /// Ended processes harvested so far.
    pub processes: u64,
    /// Those folded into one entry past `--max-processes`.
    pub folded: Option<crate::trace::FoldedProcesses>,
}

impl Harvest {
    /// The next walk is due: WALK_SHARE times as long as the last took
    /// after it, and no sooner than WALK_EVERY_AT_LEAST; or at once when
    /// what the ended processes left fills a quarter of the live map
    /// (`capacity`): a full map loses the running processes' allocations.
    fn walk_due(&self, capacity: u32) -> bool {
        self.pending_live >= u64::from(capacity) / 4
            || self.last_walk.is_none_or(|(at, took)| at.elapsed() >= (took * WALK_SHARE).max(WALK_EVERY_AT_LEAST))
    }
}

impl Session {
    /// Retires what the processes that ended since the last call hold, and
    /// (when the walk is due) reads and removes their heaps.
    pub(super) fn harvest_ended(&mut self) {
        for pid in self.consumer.take_ended() {
            // The first process's end stops the session: the stop reads it.
            if pid == self.pid {
                continue;
            }
            self.retirer.retire(self.probes.take_process_links(pid));
            self.unwind.forget(pid);
            if self.heap.is_ok() {
                if self.harvest.pending.insert(pid) {
                    let left = self.consumer.processes.get(&pid).and_then(|p| p.ended).map(|e| e.heap);
                    self.harvest.pending_live += left.map_or(0, |h| h.allocs.saturating_sub(h.frees));
                }
            } else {
                self.forget_process(pid);
            }
        }
        if self.harvest.pending.is_empty() || !self.harvest.walk_due(self.opts.map_sizes.live_allocs) {
            return;
        }
        self.harvest.pending_live = 0;
        // Timed: the walk and the removals (what grows with the maps), not
        // the symbolizing of leak groups (once per process, however big the maps).
        let started = Instant::now();
        let pending = std::mem::take(&mut self.harvest.pending);
        let pids = pending.iter().copied().collect();
        let heaps = self.live_heaps(&pids);
        let mut took = started.elapsed();
        for &pid in &pending {
            if self.captures.contains_key(&pid) {
                self.fill_heap(pid, &heaps);
            } else {
                self.capture_with(pid, Moment::AfterExit, Some(&heaps));
            }
        }
        if let Ok((live, _)) = &heaps {
            let removing = Instant::now();
            let allocs: Vec<_> = live.values().flatten().copied().collect();
            match self.probes.forget_heaps(&pids, &allocs, self.consumer.events.is_some()) {
                Ok(stacks) => self.sampler.forget(&stacks),
                Err(e) => {
                    self.warnings.warn(format!("could not remove ended processes' heaps from the kernel maps: {e:#}"))
                }
            }
            took += removing.elapsed();
        }
        for pid in pending {
            self.forget_process(pid);
        }
        self.harvest.last_walk = Some((Instant::now(), took));
    }

    /// Cuts an ended process's model down to its figures; past
    /// `--max-processes` listed, folds it into the summed entry.
    fn forget_process(&mut self, pid: u32) {
        let Some(p) = self.consumer.process_mut(pid) else { return };
        p.compact();
        self.harvest.processes += 1;
        if self.consumer.processes.len() <= self.opts.max_processes {
            return;
        }
        let Some(model) = self.consumer.take_ended_model(pid) else { return };
        let capture = self.captures.remove(&pid).unwrap_or_else(StopCapture::none);
        let start_truth = self.start_truths.remove(&pid);
        let entry = assemble::process_entry(&model, &capture, start_truth.as_ref(), self.start_ns);
        fold::fold_into(self.harvest.folded.get_or_insert_with(Default::default), &entry);
    }
}
