//! memtrace: per-file mmap loading, heap growth, phases and leaks of a
//! process, measured with eBPF. The binary (`main.rs`) is a thin CLI over
//! this library; the tests deserialize the typed [`trace::Trace`].
//!
//! The folders are the pipeline, in the order data flows:
//!
//! ```text
//! kernel/   load the eBPF object, attach, read its maps      ─┐
//! uprobes/  where the user-space probes go (allocators, phases)│ set-up
//! unwind/   .eh_frame compiled into unwind rows for the eBPF side│
//! target/   the traced process: spawned and held, or attached  │
//! runtime/  language runtimes in the target's files (CPython) ─┘
//! decode    ring-buffer records -> typed events               ─┐
//! procfs/   kernel truth: maps, smaps, pagemap, stat, mem      │ run
//! model/    pure aggregators fed by events                     │
//! session/  the loop, the stop capture, assembling the Trace  ─┘
//! trace/    the Trace type, its schema, atomic write and read  ─┐ out
//! output/   report, Chrome trace, HTML, live view, events log ─┘
//! ```
//!
//! Dependencies point down this list's "layers": `model` and `trace` use
//! no kernel and no /proc (unit tests feed them); `output` reads only a
//! `Trace` (and the live view's status); only `session` ties them together.
pub mod cli;
pub mod decode;
pub mod kernel;
pub mod model;
pub mod output;
pub mod procfs;
pub mod runtime;
pub mod session;
pub mod symbolize;
pub mod target;
pub mod trace;
pub mod unwind;
pub mod uprobes;
pub mod warnings;
