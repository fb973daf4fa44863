//! Kernel truth read from /proc/PID: mappings (maps), per-file resident
//! bytes (smaps, pagemap), fault and RSS counters (stat, status) and the
//! target's memory (mem). Small functions returning plain values; the
//! session is their only caller.
mod maps;
pub use maps::*;
