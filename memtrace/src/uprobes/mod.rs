//! Where user-space probes go: which allocator a target uses and its
//! symbols, the cheapest instruction to probe in each allocator function,
//! `--phase-fn` functions, libraries that export phase markers and the
//! marker library memtrace ships. Reads ELF files (and /proc through
//! `procfs`); attaches nothing itself.
pub mod alloc_symbols;
pub mod allocator;
pub mod marker_library;
pub mod marker_libs;
pub mod phase_fn;
pub mod placement;
