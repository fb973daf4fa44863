//! Kernel truth read from /proc/PID: mappings (maps), per-file resident
//! bytes (smaps, pagemap), fault and RSS counters (stat, status) and the
//! target's memory (mem). Small functions returning plain values; may use
//! `model` types, nothing above them.
mod maps;
mod mem;
mod paths;
mod resident;
mod status;

pub use maps::{
    brk_range, exec_file_mappings, file_at, file_mappings, in_target_root, mapped_file_link, snapshot, ExecFileMapping,
    Snapshot,
};
pub use mem::read_c_string;
pub use paths::resolve as resolve_file;
pub use resident::{
    anon_smaps, file_pagemap, file_rss, file_smaps, private_present_bytes, AnonVma, FilePages, SmapsFile,
};
pub use status::{
    command_line, descendants, kernel_faults, own_cost, parent_of, rss_counters, thread_group, thread_ids,
};
