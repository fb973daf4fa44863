//! A malloc/free loop for the heap-probe benchmark: `PAIRS` calls of
//! malloc(64) each followed by free, through libc (so the allocator
//! uprobes fire), timed with CLOCK_MONOTONIC around the loop only. Prints
//! `ns_per_pair N` on stdout.
use std::time::Instant;

fn main() {
    let pairs: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: memtrace-mallocloop PAIRS");
        std::process::exit(2)
    });
    let start = Instant::now();
    for _ in 0..pairs {
        // SAFETY: malloc/free of a block we own; black_box keeps the pair.
        unsafe {
            let p = std::hint::black_box(libc::malloc(64));
            libc::free(p);
        }
    }
    let elapsed = start.elapsed();
    println!("ns_per_pair {:.1}", elapsed.as_nanos() as f64 / pairs as f64);
}
