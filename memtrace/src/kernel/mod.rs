//! The kernel side of memtrace: preflight checks, tracefs formats and BTF
//! offsets read at start, loading the eBPF object, attaching its programs
//! and reading its maps. May depend on `uprobes` (where probes go) and
//! `model` types; never on `session` or `output`.
mod batch;
pub mod btf;
pub mod detacher;
pub mod preflight;
pub mod probes;
pub mod retire;
pub mod tracefs;
pub mod uprobe_events;
