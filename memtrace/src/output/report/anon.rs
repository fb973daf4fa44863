//! The report's anonymous memory part: resident bytes by origin, measured
//! beside the kernel's, each origin with the stack that made most of it.
use std::fmt::Write;

use crate::{
    output::report::{bytes, signed_bytes},
    symbolize::describe,
    trace::Trace,
};

const ORIGINS_SHOWN: usize = 10;
/// Frames shown for an origin's top stack (all are in the JSON).
const FRAMES_SHOWN: usize = 6;

pub fn render_anon(o: &mut String, t: &Trace) {
    let Some(a) = &t.anon else { return };
    let _ = writeln!(
        o,
        "Anonymous memory by origin [measured: eBPF rss_stat changes attributed by fault address, mappings by their mmap's stack; kernel: {}]",
        a.truth
    );
    let _ = writeln!(
        o,
        "  anonymous RSS growth {} [kernel truth: rss_stat]; attributed now {}; not attributable +{}/-{}",
        signed_bytes(a.kernel_growth_bytes),
        bytes(a.attributed_bytes),
        bytes(a.unattributed_increase_bytes),
        bytes(a.unattributed_decrease_bytes)
    );
    let _ = writeln!(o, "  {:>10} {:>10} {:>10} {:>7}  origin", "resident", "peak", "smaps", "mmaps");
    for origin in a.origins.iter().take(ORIGINS_SHOWN) {
        let kernel = origin.kernel_anon_bytes.map_or_else(|| "-".to_string(), bytes);
        let _ = writeln!(
            o,
            "  {:>10} {:>10} {:>10} {:>7}  {}",
            bytes(origin.rss_bytes),
            bytes(origin.peak_rss_bytes),
            kernel,
            origin.mappings,
            origin.origin
        );
        if !origin.stack.is_empty() {
            let more = if origin.stacks > 1 { format!(" (1 of {} stacks)", origin.stacks) } else { String::new() };
            let _ = writeln!(o, "      made by{more}:");
            for f in origin.stack.iter().take(FRAMES_SHOWN) {
                let _ = writeln!(o, "        {}", describe(f));
            }
        }
    }
    let more = (a.origins.len().saturating_sub(ORIGINS_SHOWN) as u64).saturating_add(a.origins_not_listed);
    if more > 0 {
        let _ = writeln!(o, "  ... {more} more origins in the JSON trace");
    }
    if a.stacks_lost > 0 {
        let _ = writeln!(o, "  {} anonymous mmaps without a stack (the stack map was full)", a.stacks_lost);
    }
    let _ = writeln!(o);
}
