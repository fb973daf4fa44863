//! The pure aggregators: plain data structures fed with decoded events and
//! /proc snapshots by the session, and by unit tests with recorded ones.
//! Nothing here talks to the kernel or reads /proc.
pub mod anon_origins;
pub mod aspace;
pub mod estimates;
pub mod growth;
pub mod heap_marks;
pub mod kernel_heap;
pub mod loading;
pub mod pageset;
pub mod phases;
pub mod stats;
pub mod timeline;
