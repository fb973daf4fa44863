//! Keeps the eBPF unwinder's tables in step with the traced processes: each
//! executable file one maps is compiled once (by file identity) into a
//! table of its own in UNWIND_TABLES, shared by every process; each
//! process's mappings (with their load bias) are written into a slot of
//! UNWIND_MAPPINGS whenever /proc shows them changed. A forked child
//! shares its parent's slot until its mappings differ.
use std::{collections::HashMap, time::Instant};

use memtrace_common::{
    ExecMapping, ExecMappings, MAX_EXEC_MAPPINGS, UNWIND_MAPPING_SLOTS, UNWIND_TABLES_MAX, UNWIND_TABLE_ROWS_MAX,
};

use crate::{
    kernel::probes::Probes,
    model::aspace::FileId,
    procfs::{self, ExecFileMapping},
    unwind::{self, Segment},
    warnings::Warnings,
};

/// A process's mapping list in UNWIND_MAPPINGS.
#[derive(Clone)]
struct Written {
    slot: u32,
    entries: Vec<ExecMapping>,
}

/// One file's table in UNWIND_TABLES and its segments (for the bias).
struct LoadedFile {
    table: u32,
    /// 0: no table (none in the file, unreadable, or UNWIND_TABLES full).
    rows: u32,
    segments: Vec<Segment>,
}

pub struct UnwindTables {
    /// `--unwind dwarf`: otherwise nothing is loaded.
    enabled: bool,
    files: HashMap<FileId, LoadedFile>,
    /// Tables loaded so far (the next free index in UNWIND_TABLES).
    tables: u32,
    /// Each process's slot in UNWIND_MAPPINGS and the mappings last written
    /// there (not rewritten when unchanged).
    written: HashMap<u32, Written>,
    /// Mapping lists written so far: each gets a new generation (the eBPF
    /// row cache is keyed by it), unique across processes.
    generation: u64,
    pub stats: crate::trace::UnwindStats,
    /// Each mapping start written, with its file: names the modules of STACK_CUTS.
    modules: HashMap<u64, String>,
    too_many_warned: bool,
    slots_warned: bool,
}

impl UnwindTables {
    pub fn new(how: crate::cli::Unwind) -> UnwindTables {
        let enabled = how == crate::cli::Unwind::Dwarf;
        let method = if enabled { "dwarf" } else { "fp" };
        UnwindTables {
            enabled,
            files: HashMap::new(),
            tables: 0,
            written: HashMap::new(),
            generation: 0,
            stats: crate::trace::UnwindStats { method: method.into(), ..Default::default() },
            modules: HashMap::new(),
            too_many_warned: false,
            slots_warned: false,
        }
    }

    /// A forked child walks with its parent's list (the eBPF fork program
    /// gave it the parent's slot).
    pub fn inherit(&mut self, parent: u32, child: u32) {
        if let Some(w) = self.written.get(&parent).cloned() {
            self.written.insert(child, w);
        }
    }

    /// A process that exited: its slot is free once no other uses it.
    pub fn forget(&mut self, pid: u32) {
        self.written.remove(&pid);
    }

    /// The target was held for `held` while its tables were brought up to date.
    pub fn held(&mut self, held: std::time::Duration) {
        if !self.enabled {
            return;
        }
        self.stats.holds += 1;
        self.stats.held_ms += held.as_secs_f64() * 1e3;
    }

    /// Reads the stacks the unwinder cut short into `stats.cuts`, named by module.
    pub fn collect_cuts(&mut self, probes: &Probes) {
        let Ok(cuts) = probes.stack_cuts() else { return };
        self.stats.cuts = name_cuts(&cuts, &self.modules);
    }

    /// Re-reads the target's executable mappings; compiles and loads the
    /// tables of files not seen before; rewrites the mapping list if it changed.
    pub fn refresh(&mut self, pid: u32, probes: &mut Probes, warnings: &mut Warnings) {
        if !self.enabled {
            return;
        }
        let maps = procfs::exec_file_mappings(pid);
        if maps.is_empty() {
            return; // gone or exiting: keep what the unwinder has
        }
        // New files first, loaded together: each update of UNWIND_TABLES
        // waits for the kernel's RCU grace period (5-15 ms here), once per
        // batch rather than once per file.
        let mut new: Vec<&ExecFileMapping> = Vec::new();
        for m in &maps {
            if !self.files.contains_key(&m.id) && !new.iter().any(|n| n.id == m.id) {
                new.push(m);
            }
        }
        if !new.is_empty() {
            self.load(&new, probes, warnings);
        }
        let mut entries = Vec::new();
        for m in &maps {
            let Some(file) = self.files.get(&m.id) else { continue };
            // Without a bias the rows cannot be placed: frame pointers there.
            let bias = unwind::bias(&file.segments, m.start, m.offset);
            let rows = if bias.is_some() { file.rows } else { 0 };
            entries.push(ExecMapping { start: m.start, end: m.end, bias: bias.unwrap_or(0), table: file.table, rows });
            self.modules.insert(m.start, m.path.clone());
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
        let own = self.written.get(&pid).filter(|w| !self.written.iter().any(|(p, o)| *p != pid && o.slot == w.slot));
        let slot = match (self.written.get(&pid), own) {
            (Some(w), _) if w.entries == entries => return,
            (_, Some(w)) => w.slot,
            // None yet, or shared with the parent it was forked from: a slot of its own.
            _ => match (0..UNWIND_MAPPING_SLOTS).find(|s| !self.written.values().any(|w| w.slot == *s)) {
                Some(free) => free,
                None => {
                    if !self.slots_warned {
                        self.slots_warned = true;
                        warnings.warn(format!(
                            "more than {UNWIND_MAPPING_SLOTS} processes with different code traced at once: \
                             stacks of the others are walked with frame pointers"
                        ));
                    }
                    return;
                }
            },
        };
        self.generation += 1;
        let mut value = ExecMappings {
            count: entries.len() as u64,
            generation: self.generation,
            entries: [ExecMapping::default(); MAX_EXEC_MAPPINGS],
        };
        value.entries[..entries.len()].copy_from_slice(&entries);
        match probes.set_exec_mappings(pid, slot, &value) {
            Ok(()) => {
                self.written.insert(pid, Written { slot, entries });
            }
            Err(e) => warnings.warn(format!("stacks will be walked with frame pointers only: {e:#}")),
        }
    }

    /// Compiles the files' tables and loads them into the kernel in one
    /// batch; records each file (with no table where it has none or it
    /// could not be loaded: frame pointers there).
    fn load(&mut self, files: &[&ExecFileMapping], probes: &mut Probes, warnings: &mut Warnings) {
        let began = Instant::now();
        let mut compiled = Vec::new();
        for (m, (segments, table)) in files.iter().zip(compile_all(files)) {
            let table = match table {
                Ok(t) => t,
                Err(Missing::Table) => {
                    self.stats.files_without_table.push(m.path.clone());
                    self.files.insert(m.id, LoadedFile { table: 0, rows: 0, segments });
                    continue;
                }
                Err(Missing::Room(why)) => {
                    self.not_loaded(m, segments, &why, warnings);
                    continue;
                }
            };
            let slot = self.tables + compiled.len() as u32;
            if slot >= UNWIND_TABLES_MAX {
                self.not_loaded(m, segments, &format!("UNWIND_TABLES is full ({UNWIND_TABLES_MAX} files)"), warnings);
                continue;
            }
            compiled.push((m, segments, slot, table));
        }
        if compiled.is_empty() {
            return;
        }
        let tables: Vec<(u32, &[memtrace_common::UnwindRow])> =
            compiled.iter().map(|(_, _, slot, t)| (*slot, &t.rows[..])).collect();
        match probes.load_unwind_tables(&tables) {
            Ok(bytes) => {
                self.tables += compiled.len() as u32;
                self.stats.files += compiled.len() as u64;
                self.stats.map_bytes += bytes;
                for (m, segments, slot, table) in compiled {
                    self.stats.rows += table.rows.len() as u64;
                    self.files.insert(m.id, LoadedFile { table: slot, rows: table.rows.len() as u32, segments });
                }
            }
            Err(e) => {
                for (m, segments, _, _) in compiled {
                    self.not_loaded(m, segments, &format!("{e:#}"), warnings);
                }
            }
        }
        self.stats.build_ms += began.elapsed().as_secs_f64() * 1e3;
    }

    fn not_loaded(&mut self, m: &ExecFileMapping, segments: Vec<Segment>, why: &str, warnings: &mut Warnings) {
        warnings.warn(format!(
            "the unwind table of {} was not loaded: {why}; stacks through it are walked with frame pointers",
            m.path
        ));
        self.stats.files_not_loaded.push(m.path.clone());
        self.files.insert(m.id, LoadedFile { table: 0, rows: 0, segments });
    }
}

/// Why a file gets no table.
enum Missing {
    /// It has no unwind information, is unreadable or no ELF file.
    Table,
    /// Its table is too large for the eBPF search.
    Room(String),
}

/// Compiles the files' tables on as many threads as there are CPUs (an
/// attach to a Python process with a few dozen extension modules, or an
/// exec's executable and loader, is several files at once).
fn compile_all(files: &[&ExecFileMapping]) -> Vec<(Vec<Segment>, Result<unwind::UnwindTable, Missing>)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = Vec::with_capacity(files.len());
    for chunk in files.chunks(threads) {
        std::thread::scope(|scope| {
            let running: Vec<_> = chunk.iter().map(|m| scope.spawn(|| compile(m))).collect();
            for handle in running {
                // A panic in the compiler is that file's problem only: no table.
                out.push(handle.join().unwrap_or_else(|_| (Vec::new(), Err(Missing::Table))));
            }
        });
    }
    out
}

/// Reads a mapped file (the mapped file itself, through map_files, even if
/// replaced on disk or in another mount namespace) and compiles its table.
fn compile(m: &ExecFileMapping) -> (Vec<Segment>, Result<unwind::UnwindTable, Missing>) {
    let Ok(data) = std::fs::read(&m.link).or_else(|_| std::fs::read(&m.path)) else {
        return (Vec::new(), Err(Missing::Table));
    };
    let Ok(segments) = unwind::segments(&data) else { return (Vec::new(), Err(Missing::Table)) };
    let table = match unwind::compile(&data) {
        Ok(t) if t.rows.is_empty() => Err(Missing::Table),
        Ok(t) if t.rows.len() > UNWIND_TABLE_ROWS_MAX as usize => {
            Err(Missing::Room(format!("its {} rows are more than {UNWIND_TABLE_ROWS_MAX}", t.rows.len())))
        }
        Ok(t) => Ok(t),
        Err(_) => Err(Missing::Table),
    };
    (segments, table)
}

/// STACK_CUTS entries as the trace shows them: the module by its mapping
/// start, the reason by name; most stacks first.
fn name_cuts(cuts: &[(u64, u64)], modules: &HashMap<u64, String>) -> Vec<crate::trace::UnwindCut> {
    use memtrace_common::StackCut;
    let mut named: Vec<_> = cuts
        .iter()
        .filter_map(|&(key, stacks)| {
            let (start, reason) = StackCut::from_key(key)?;
            let reason = match reason {
                StackCut::NoTable => "no_table",
                StackCut::Unsupported => "unsupported",
                StackCut::Unreadable => "unreadable",
                StackCut::Depth => "depth",
            };
            let module = (start != 0).then(|| modules.get(&start).cloned()).flatten();
            Some(crate::trace::UnwindCut { module, reason: reason.into(), stacks })
        })
        .collect();
    named.sort_by(|a, b| b.stacks.cmp(&a.stacks).then_with(|| a.module.cmp(&b.module)));
    named
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrace_common::{stack_cut_key, StackCut};

    #[test]
    fn cuts_are_named_by_module_and_reason_most_first() {
        let modules = HashMap::from([(0x7f00_0000_1000, "/usr/lib/libfoo.so".to_string())]);
        let cuts = [
            (stack_cut_key(0x7f00_0000_1000, StackCut::NoTable), 3),
            (stack_cut_key(0, StackCut::NoTable), 5),
            (stack_cut_key(0x7f00_0000_1000, StackCut::Depth), 1),
            (0x7f00_0000_1000, 9), // no reason in the key: not a cut
        ];
        let named = name_cuts(&cuts, &modules);
        let view: Vec<_> = named.iter().map(|c| (c.module.as_deref(), c.reason.as_str(), c.stacks)).collect();
        assert_eq!(
            view,
            [
                (None, "no_table", 5),
                (Some("/usr/lib/libfoo.so"), "no_table", 3),
                (Some("/usr/lib/libfoo.so"), "depth", 1)
            ]
        );
    }
}
