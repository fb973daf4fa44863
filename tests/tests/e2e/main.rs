//! memtrace's end-to-end tests: the real memtrace binary, real eBPF (as
//! root), against the bundled workload and other real programs. One test
//! binary; a module per concern, helpers and the command builders in `common`.
mod common;

mod address_reuse;
mod anon;
mod attach_loading;
mod attach_mode;
mod bad_input;
mod binaries;
mod chrome_trace;
mod file_loading;
mod heap;
mod heap_allocators;
mod html_report;
mod kernel_faults;
mod kill;
mod live_view;
mod mapping_cases;
mod mark;
mod phase_fn;
mod process_tree;
mod python;
mod report_cmd;
mod run_mode;
mod schema;
mod security;
mod signals;
mod storm;
mod timeline;
mod unwind;
