//! Keeps the eBPF unwinder's tables in step with the target: each
//! executable file it maps is compiled once (by file identity) and its rows
//! appended to UNWIND_ROWS; the mappings (with their load bias) are
//! rewritten into UNWIND_MAPPINGS whenever /proc shows them changed.
use std::collections::HashMap;

use memtrace_common::{ExecMapping, ExecMappings, MAX_EXEC_MAPPINGS, UNWIND_ROWS_MAX};

use crate::{
    kernel::probes::Probes,
    model::aspace::FileId,
    procfs::{self, ExecFileMapping},
    unwind::{self, Segment},
    warnings::Warnings,
};

/// One file's place in UNWIND_ROWS and its segments (for the bias).
struct LoadedFile {
    first_row: u32,
    /// 0: no table (none in the file, unreadable, or UNWIND_ROWS full).
    rows: u32,
    segments: Vec<Segment>,
}

#[derive(Default)]
pub struct UnwindTables {
    files: HashMap<FileId, LoadedFile>,
    next_row: u32,
    /// The mappings last written (not rewritten when unchanged).
    written: Vec<ExecMapping>,
    /// Files whose table did not fit in UNWIND_ROWS.
    pub files_not_loaded: u32,
    too_many_warned: bool,
}

impl UnwindTables {
    /// Re-reads the target's executable mappings; compiles and loads the
    /// tables of files not seen before; rewrites the mapping list if it changed.
    pub fn refresh(&mut self, pid: u32, probes: &mut Probes, warnings: &mut Warnings) {
        let maps = procfs::exec_file_mappings(pid);
        if maps.is_empty() {
            return; // gone or exiting: keep what the unwinder has
        }
        let mut entries = Vec::new();
        for m in &maps {
            if !self.files.contains_key(&m.id) {
                let loaded = self.load(m, probes, warnings);
                self.files.insert(m.id, loaded);
            }
            let file = &self.files[&m.id];
            // Without a bias the rows cannot be placed: frame pointers there.
            let bias = unwind::bias(&file.segments, m.start, m.offset);
            let rows = if bias.is_some() { file.rows } else { 0 };
            entries.push(ExecMapping {
                start: m.start,
                end: m.end,
                bias: bias.unwrap_or(0),
                first_row: file.first_row,
                rows,
            });
        }
        entries.sort_by_key(|e| e.start);
        if entries.len() > MAX_EXEC_MAPPINGS {
            if !self.too_many_warned {
                self.too_many_warned = true;
                warnings.warn(format!(
                "the target has {} executable file mappings; stacks are unwound through the first {MAX_EXEC_MAPPINGS} only",
                    entries.len()
                ));
            }
            entries.truncate(MAX_EXEC_MAPPINGS);
        }
        if entries == self.written {
            return;
        }
        let mut value =
            ExecMappings { count: entries.len() as u64, entries: [ExecMapping::default(); MAX_EXEC_MAPPINGS] };
        value.entries[..entries.len()].copy_from_slice(&entries);
        match probes.set_exec_mappings(&value) {
            Ok(()) => self.written = entries,
            Err(e) => warnings.warn(format!("stacks will be walked with frame pointers only: {e:#}")),
        }
    }

    fn load(&mut self, m: &ExecFileMapping, probes: &mut Probes, warnings: &mut Warnings) -> LoadedFile {
        let none = |segments| LoadedFile { first_row: 0, rows: 0, segments };
        // The mapped file itself, even if replaced on disk or in another mount namespace.
        let Ok(data) = std::fs::read(&m.link).or_else(|_| std::fs::read(&m.path)) else { return none(Vec::new()) };
        let Ok(segments) = unwind::segments(&data) else { return none(Vec::new()) };
        // No unwind information (or unreadable): frame pointers there.
        let Ok(table) = unwind::compile(&data) else { return none(segments) };
        let rows = table.rows.len() as u32;
        if UNWIND_ROWS_MAX - self.next_row < rows {
            self.files_not_loaded += 1;
            warnings.warn(format!(
                "the unwind table of {} ({rows} rows) does not fit in UNWIND_ROWS ({} of {UNWIND_ROWS_MAX} rows taken): \
                 stacks through it are walked with frame pointers",
                m.path, self.next_row
            ));
            return none(segments);
        }
        if let Err(e) = probes.write_unwind_rows(self.next_row, &table.rows) {
            warnings.warn(format!("the unwind table of {} could not be loaded: {e:#}", m.path));
            return none(segments);
        }
        let first_row = self.next_row;
        self.next_row += rows;
        LoadedFile { first_row, rows, segments }
    }
}
