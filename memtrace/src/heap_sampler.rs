//! The heap over time: every 100 ms the allocator totals beside the
//! kernel's view (anon RSS, the break, anonymous mappings), and every
//! 500 ms each allocation stack's live bytes for the growth suspects.
use crate::{growth::GrowthTracker, heap_capture, kernel_heap::KernelHeap, probes::Probes, trace::HeapSample};

/// Drain ticks (10 ms) per timeline sample.
const TIMELINE_TICKS: u64 = 10;
/// Drain ticks per growth sample: walking the per-stack map costs two
/// syscalls per stack, so it runs less often than the totals.
pub const GROWTH_TICKS: u64 = 50;

pub struct HeapSampler {
    pub timeline: Vec<HeapSample>,
    pub growth: GrowthTracker,
    ticks: u64,
    /// The per-stack map could not be read: why (reported once).
    pub growth_error: Option<String>,
}

impl HeapSampler {
    pub fn new(growth_window: usize) -> HeapSampler {
        HeapSampler { timeline: Vec::new(), growth: GrowthTracker::new(growth_window), ticks: 0, growth_error: None }
    }

    /// Seconds between growth samples.
    pub fn growth_interval_s() -> f64 {
        GROWTH_TICKS as f64 * 0.010
    }

    /// Called on every drain tick.
    pub fn tick(&mut self, probes: &Probes, t_s: f64, anon_rss_bytes: u64, kernel: &KernelHeap) {
        self.ticks += 1;
        if self.ticks.is_multiple_of(TIMELINE_TICKS) {
            if let Ok(t) = probes.heap_totals() {
                self.timeline.push(HeapSample {
                    t_s,
                    live_bytes: heap_capture::counts(&t).live_bytes(),
                    anon_rss_bytes,
                    brk_heap_bytes: kernel.brk_bytes(),
                    anon_mapped_net_bytes: kernel.anon_net_bytes(),
                });
            }
        }
        if self.ticks.is_multiple_of(GROWTH_TICKS) && self.growth_error.is_none() {
            match probes.stack_stats() {
                Ok(stats) => self.growth.sample(stats.into_iter().map(|(id, s)| (id, s.live_bytes, s.live_count))),
                Err(e) => self.growth_error = Some(format!("{e:#}")),
            }
        }
    }
}
