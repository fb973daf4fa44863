//! A malloc/free loop for the heap-probe benchmark: `PAIRS` calls of
//! malloc(64) each followed by free, through libc (so the allocator
//! uprobes fire), timed with CLOCK_MONOTONIC around the loop only. Prints
//! `ns_per_pair N` on stdout. With `DEPTH`, the loop runs that many calls
//! deeper (one frame each), so stack walks have that many more frames.
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().ok());
    let (Some(Some(pairs)), depth) = (args.next(), args.next().unwrap_or(Some(0))) else {
        eprintln!("usage: memtrace-mallocloop PAIRS [DEPTH]");
        std::process::exit(2)
    };
    let Some(depth) = depth else {
        eprintln!("memtrace-mallocloop: DEPTH must be a number");
        std::process::exit(2)
    };
    let ns = nested(depth, pairs);
    println!("ns_per_pair {:.1}", ns / pairs as f64);
}

/// Calls itself `depth` times, then times the loop; returns its nanoseconds.
#[inline(never)]
fn nested(depth: u64, pairs: u64) -> f64 {
    if depth > 0 {
        // black_box: no tail call, so each level keeps its frame.
        return std::hint::black_box(nested(depth - 1, pairs));
    }
    let start = Instant::now();
    for _ in 0..pairs {
        // SAFETY: malloc/free of a block we own; black_box keeps the pair.
        unsafe {
            let p = std::hint::black_box(libc::malloc(64));
            libc::free(p);
        }
    }
    start.elapsed().as_nanos() as f64
}
