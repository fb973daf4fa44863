//! Each allocation stack's live bytes every 500 ms, for the growth
//! suspects. (The heap over time is part of the trace's timeline.)
use crate::{kernel::probes::Probes, model::growth::GrowthTracker};

/// Drain ticks (10 ms) per growth sample: walking the per-stack map costs
/// two syscalls per stack, so it runs less often than the timeline.
pub const GROWTH_TICKS: u64 = 50;

pub struct HeapSampler {
    pub growth: GrowthTracker,
    /// The process of each stack sampled.
    pids: std::collections::HashMap<u64, u32>,
    ticks: u64,
    /// The per-stack map could not be read: why (reported once).
    pub growth_error: Option<String>,
}

impl HeapSampler {
    pub fn new(growth_window: usize) -> HeapSampler {
        HeapSampler {
            growth: GrowthTracker::new(growth_window),
            pids: Default::default(),
            ticks: 0,
            growth_error: None,
        }
    }

    /// Seconds between growth samples.
    pub fn growth_interval_s() -> f64 {
        GROWTH_TICKS as f64 * 0.010
    }

    /// The growth suspects among process `pid`'s stacks.
    pub fn suspects_of(&self, pid: u32) -> Vec<crate::model::growth::Suspect> {
        let mut suspects = self.growth.suspects();
        suspects.retain(|s| self.pids.get(&s.stack_id) == Some(&pid));
        suspects
    }

    /// Stacks removed from the kernel maps (their process ended): no
    /// longer sampled.
    pub fn forget(&mut self, stacks: &[u64]) {
        for id in stacks {
            self.pids.remove(id);
        }
        self.growth.forget(stacks);
    }

    /// Called on every drain tick.
    pub fn tick(&mut self, probes: &Probes) {
        self.ticks += 1;
        if self.ticks.is_multiple_of(GROWTH_TICKS) && self.growth_error.is_none() {
            match probes.stack_stats() {
                Ok(stats) => {
                    for (id, s) in &stats {
                        self.pids.entry(*id).or_insert(s.pid);
                    }
                    self.growth.sample(stats.into_iter().map(|(id, s)| (id, s.live_bytes, s.live_count)))
                }
                Err(e) => self.growth_error = Some(format!("{e:#}")),
            }
        }
    }
}
