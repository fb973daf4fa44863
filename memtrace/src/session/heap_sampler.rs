//! Each allocation stack's live bytes every 500 ms, for the growth
//! suspects. (The heap over time is part of the trace's timeline.)
use crate::{kernel::probes::Probes, model::growth::GrowthTracker};

/// Drain ticks (10 ms) per growth sample: walking the per-stack map costs
/// two syscalls per stack, so it runs less often than the timeline.
pub const GROWTH_TICKS: u64 = 50;

pub struct HeapSampler {
    pub growth: GrowthTracker,
    ticks: u64,
    /// The per-stack map could not be read: why (reported once).
    pub growth_error: Option<String>,
}

impl HeapSampler {
    pub fn new(growth_window: usize) -> HeapSampler {
        HeapSampler { growth: GrowthTracker::new(growth_window), ticks: 0, growth_error: None }
    }

    /// Seconds between growth samples.
    pub fn growth_interval_s() -> f64 {
        GROWTH_TICKS as f64 * 0.010
    }

    /// Called on every drain tick.
    pub fn tick(&mut self, probes: &Probes) {
        self.ticks += 1;
        if self.ticks.is_multiple_of(GROWTH_TICKS) && self.growth_error.is_none() {
            match probes.stack_stats() {
                Ok(stats) => self.growth.sample(stats.into_iter().map(|(id, s)| (id, s.live_bytes, s.live_count))),
                Err(e) => self.growth_error = Some(format!("{e:#}")),
            }
        }
    }
}
