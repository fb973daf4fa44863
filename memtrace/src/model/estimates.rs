//! The naive estimates of "how much of the mapped file is loaded" that
//! monitors use, computed so the report can show how wrong they are.

/// Share of a file the fixed-ratio monitor assumes loaded.
pub const FIXED_RATIO: f64 = 0.8;
/// Cap factor of the "improved" capped-growth estimate.
pub const CAP_FACTOR: f64 = 0.8;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Inputs {
    pub file_size: u64,
    /// Sum of the sizes of every mapped file the monitor knows of.
    pub all_files_size: u64,
    /// Growth of the process's RSS over the trace (file + anon + shmem).
    pub rss_growth: i64,
    /// Growth the monitor attributes to the program itself (anon RSS here).
    pub heap_growth: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimates {
    pub fixed_ratio: u64,
    pub rss_growth: u64,
    pub capped_growth: u64,
}

pub fn estimate(i: Inputs) -> Estimates {
    let share = if i.all_files_size == 0 { 0.0 } else { i.file_size as f64 / i.all_files_size as f64 };
    let growth = i.rss_growth.max(0) as f64;
    Estimates {
        fixed_ratio: (i.file_size as f64 * FIXED_RATIO) as u64,
        rss_growth: ((i.rss_growth - i.heap_growth).max(0) as f64 * share) as u64,
        capped_growth: (growth.min(i.all_files_size as f64 * CAP_FACTOR) * share) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_follow_their_formulas() {
        let e = estimate(Inputs { file_size: 100, all_files_size: 400, rss_growth: 1000, heap_growth: 600 });
        assert_eq!(e.fixed_ratio, 80);
        assert_eq!(e.rss_growth, 100); // (1000 - 600) * 1/4
        assert_eq!(e.capped_growth, 80); // min(1000, 320) * 1/4
    }

    #[test]
    fn shrinking_rss_and_unknown_sizes_do_not_go_negative() {
        let e = estimate(Inputs { file_size: 100, all_files_size: 0, rss_growth: -50, heap_growth: 10 });
        assert_eq!((e.rss_growth, e.capped_growth), (0, 0));
    }
}
