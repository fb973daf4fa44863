//! The search phase: brute-force dot products over a subset of batches.

use anyhow::Result;

use crate::arrow_file::{as_bytes, embedding_values, MappedArrow};
use crate::pages::PageSet;

/// How many best rows the search keeps.
pub const TOP_K: usize = 10;

/// Indices of the batches to scan: `k = round(touch × n)` batches (at least
/// one when `touch > 0`), spread evenly over `0..n`. Batch `i` is chosen when
/// `floor(i·k/n)` steps to a new value, so the choice is deterministic and the
/// touched pages are scattered over the file instead of forming one prefix
/// (which readahead would make look sequential).
pub fn choose_batches(n: usize, touch: f64) -> Vec<usize> {
    if n == 0 || touch <= 0.0 {
        return Vec::new();
    }
    let k = ((touch * n as f64).round() as usize).clamp(1, n);
    (0..n).filter(|&i| i == 0 || (i * k) / n != ((i - 1) * k) / n).collect()
}

/// The query vector (deterministic, like the data).
pub fn query(dim: usize) -> Vec<f32> {
    (0..dim).map(|j| ((j * 7919 % 257) as f32 / 128.0) - 1.0).collect()
}

#[derive(Debug, Default)]
pub struct SearchResult {
    pub rows_scanned: u64,
    /// Best rows first: (global row number, score).
    pub top: Vec<(u64, f32)>,
}

/// Scans every row of the chosen batches' `embedding` values — and nothing
/// else of the file — adding exactly those values buffers' byte ranges to
/// `pages`.
pub fn search(
    mapped: &MappedArrow,
    chosen: &[usize],
    rows_per_batch: usize,
    dim: usize,
    pages: &mut PageSet,
    page_size: u64,
) -> Result<SearchResult> {
    let q = query(dim);
    let mut result = SearchResult { rows_scanned: 0, top: Vec::with_capacity(TOP_K + 1) };
    for &b in chosen {
        let values = embedding_values(&mapped.batches[b])?;
        let bytes = as_bytes(values);
        pages.add_range(mapped.file_offset(bytes)?, bytes.len() as u64, page_size);
        for (r, row) in values.chunks_exact(dim).enumerate() {
            let score: f32 = row.iter().zip(&q).map(|(a, b)| a * b).sum();
            insert_top(&mut result.top, ((b * rows_per_batch + r) as u64, score));
            result.rows_scanned += 1;
        }
    }
    Ok(result)
}

/// Keeps `top` sorted by descending score (ties: lower row first), at most
/// TOP_K long.
fn insert_top(top: &mut Vec<(u64, f32)>, cand: (u64, f32)) {
    if top.len() == TOP_K && cand.1 <= top[TOP_K - 1].1 {
        return;
    }
    let pos = top.partition_point(|&(_, s)| s >= cand.1);
    top.insert(pos, cand);
    top.truncate(TOP_K);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_round_touch_times_n_spread_out() {
        assert_eq!(choose_batches(10, 0.0), Vec::<usize>::new());
        assert_eq!(choose_batches(0, 0.5), Vec::<usize>::new());
        assert_eq!(choose_batches(10, 1.0), (0..10).collect::<Vec<_>>());
        assert_eq!(choose_batches(10, 0.5), vec![0, 2, 4, 6, 8]);
        assert_eq!(choose_batches(10, 0.3), vec![0, 4, 7]);
        // Tiny but positive touch still scans one batch.
        assert_eq!(choose_batches(10, 0.01), vec![0]);
        for n in 1..200 {
            for t in [0.1, 0.25, 0.3, 0.5, 0.77, 0.99] {
                let k = ((t * n as f64).round() as usize).clamp(1, n);
                let c = choose_batches(n, t);
                assert_eq!(c.len(), k, "n={n} t={t}");
                assert!(c.windows(2).all(|w| w[0] < w[1]));
                assert!(*c.last().unwrap() < n);
            }
        }
    }

    #[test]
    fn top_k_keeps_best_sorted() {
        let mut top = Vec::new();
        for i in 0..100u64 {
            insert_top(&mut top, (i, ((i * 37) % 101) as f32));
        }
        assert_eq!(top.len(), TOP_K);
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(top[0].1, 100.0);
    }
}
