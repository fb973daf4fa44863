//! The build phase: grow the heap by a target amount with real structures.

use std::collections::HashMap;

use crate::arrow_file::id_of_row;
use crate::phases::PhaseCtx;

/// Result buffers are allocated in chunks of this many bytes (the last one
/// smaller), like a program keeping per-query score arrays.
const CHUNK_BYTES: usize = 4 << 20;

/// What the build phase keeps alive until teardown.
#[derive(Debug, Default)]
pub struct Built {
    /// id → global row number.
    pub index: HashMap<i64, usize>,
    pub buffers: Vec<Vec<f32>>,
}

/// Grows the heap until the global allocator's net growth since the phase
/// began (as seen by `ctx`) reaches `target` bytes.
///
/// At most half the target goes to the hash index (so a small target with a
/// big file still works: the index then covers only the first rows); the rest
/// is `Vec<f32>` buffers sized from the live counter, so the growth lands on
/// the target to within a few bytes. Ids come from the generator's formula,
/// not from the file: reading the id column would touch file pages that the
/// truth does not account to this phase.
pub fn build(ctx: &PhaseCtx, target: u64, total_rows: usize) -> Built {
    let growth = |ctx: &PhaseCtx| ctx.heap_so_far().growth().max(0) as u64;

    // Size the index by trial: hashbrown's table size is a power-of-two
    // bucket count plus control bytes, so measure rather than guess, and
    // scale down proportionally when it is too big.
    let mut rows = total_rows;
    let mut index = loop {
        let m: HashMap<i64, usize> = HashMap::with_capacity(rows);
        let used = growth(ctx);
        if used <= target / 2 || rows == 0 {
            break m;
        }
        drop(m);
        let scaled = (rows as f64 * (target / 2) as f64 / used as f64) as usize;
        rows = scaled.min(rows - 1);
    };
    for row in 0..rows {
        index.insert(id_of_row(row as u64), row);
    }

    // Every buffer but the last is a full chunk, so this capacity is never
    // exceeded and the outer vector does not reallocate mid-way.
    let mut buffers: Vec<Vec<f32>> = Vec::with_capacity((target as usize).div_ceil(CHUNK_BYTES) + 1);
    loop {
        let remaining = target.saturating_sub(growth(ctx)) as usize;
        let n = remaining.min(CHUNK_BYTES) / size_of::<f32>();
        if n == 0 {
            break;
        }
        // Fill every value so the memory is really used (resident), as a
        // result buffer would be.
        let base = buffers.len() as f32;
        let mut v = Vec::with_capacity(n);
        v.extend((0..n).map(|i| base + i as f32 * 0.5));
        buffers.push(v);
    }
    Built { index, buffers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_index_and_buffers() {
        let b = build(&PhaseCtx::starting_now(), 8 << 20, 10_000);
        assert_eq!(b.index.len(), 10_000);
        assert_eq!(b.index[&1234], 1234);
        assert!(!b.buffers.is_empty());
        // Index capped at about half of a small target.
        let b = build(&PhaseCtx::starting_now(), 64 << 10, 1_000_000);
        assert!(b.index.len() < 1_000_000);
    }
}
