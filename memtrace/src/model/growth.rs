//! Growth suspects: allocation stacks whose live bytes grew in every one of
//! the last K samples. A leak that is still being fed shows up here while
//! the program runs, before anything is "alive at the end".
use std::collections::{HashMap, VecDeque};

/// One stack's recent growth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspect {
    pub stack_id: u64,
    pub live_bytes: u64,
    pub live_count: u64,
    /// Growth of live bytes over the window (last sample minus first).
    pub growth_bytes: u64,
}

/// The last `window + 1` samples of every allocation stack's live bytes.
/// Memory is bounded by the number of stacks (the kernel map's size) times
/// the window.
#[derive(Debug)]
pub struct GrowthTracker {
    window: usize,
    /// stack id -> (live bytes per sample, oldest first; live count now).
    history: HashMap<u64, (VecDeque<u64>, u64)>,
    pub samples: u64,
}

impl GrowthTracker {
    pub fn new(window: usize) -> GrowthTracker {
        GrowthTracker { window: window.max(1), history: HashMap::new(), samples: 0 }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// One sample of every stack's (id, live bytes, live count). A stack
    /// missing from a sample counts as 0 live bytes (it had none yet).
    pub fn sample(&mut self, stacks: impl IntoIterator<Item = (u64, u64, u64)>) {
        self.samples += 1;
        let keep = self.window + 1;
        let samples = self.samples;
        for (id, live_bytes, live_count) in stacks {
            let (values, count) = self.history.entry(id).or_insert_with(|| {
                // Seen for the first time: earlier samples had nothing from it.
                let earlier = (samples - 1).min(keep as u64 - 1) as usize;
                (std::iter::repeat_n(0, earlier).collect(), 0)
            });
            values.push_back(live_bytes);
            *count = live_count;
        }
        // Stacks absent from this sample (the map can only grow, but be safe).
        for (values, _) in self.history.values_mut() {
            if values.len() < (samples.min(keep as u64)) as usize {
                values.push_back(0);
            }
            while values.len() > keep {
                values.pop_front();
            }
        }
    }

    /// Drops these stacks' history (their process ended and was read).
    pub fn forget(&mut self, stacks: &[u64]) {
        for id in stacks {
            self.history.remove(id);
        }
    }

    /// Stacks whose live bytes rose in each of the last `window` intervals,
    /// most growth first.
    pub fn suspects(&self) -> Vec<Suspect> {
        let mut out: Vec<Suspect> = self
            .history
            .iter()
            .filter(|(_, (v, _))| v.len() == self.window + 1 && v.iter().zip(v.iter().skip(1)).all(|(a, b)| b > a))
            .map(|(id, (v, count))| Suspect {
                stack_id: *id,
                live_bytes: *v.back().unwrap_or(&0),
                live_count: *count,
                growth_bytes: v.back().unwrap_or(&0) - v.front().unwrap_or(&0),
            })
            .collect();
        out.sort_by(|a, b| b.growth_bytes.cmp(&a.growth_bytes).then(a.stack_id.cmp(&b.stack_id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stacks_growing_in_every_interval_of_the_window_are_suspects() {
        let mut g = GrowthTracker::new(3);
        // stack 1 grows steadily; 2 grows then stalls; 3 is flat.
        for (i, two) in [10, 20, 30, 30].into_iter().enumerate() {
            let i = i as u64;
            g.sample([(1, 100 * (i + 1), i + 1), (2, two, 1), (3, 50, 1)]);
        }
        let s = g.suspects();
        assert_eq!(s, vec![Suspect { stack_id: 1, live_bytes: 400, live_count: 4, growth_bytes: 300 }]);
    }

    #[test]
    fn too_few_samples_make_no_suspect() {
        let mut g = GrowthTracker::new(3);
        g.sample([(1, 1, 1)]);
        g.sample([(1, 2, 2)]);
        g.sample([(1, 3, 3)]);
        assert!(g.suspects().is_empty(), "3 samples are 2 intervals, the window is 3");
        g.sample([(1, 4, 4)]);
        assert_eq!(g.suspects().len(), 1);
    }

    #[test]
    fn a_stack_first_seen_late_started_from_zero() {
        let mut g = GrowthTracker::new(2);
        g.sample([(1, 5, 1)]);
        g.sample([(1, 5, 1), (2, 10, 1)]);
        g.sample([(1, 5, 1), (2, 20, 2)]);
        let s = g.suspects();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].stack_id, s[0].growth_bytes), (2, 20));
    }

    #[test]
    fn history_stays_within_the_window() {
        let mut g = GrowthTracker::new(2);
        for i in 0..100 {
            g.sample([(1, i, 1)]);
        }
        assert_eq!(g.history[&1].0.len(), 3);
        assert_eq!(g.suspects()[0].growth_bytes, 2);
    }
}
