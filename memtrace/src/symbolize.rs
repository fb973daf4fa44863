//! Stack addresses to function, file:line (where debug info exists) and
//! module + file offset (always, from /proc/PID/maps), with blazesym. Must
//! run while the target is alive: the addresses mean something only in its
//! address space (memtrace reads them at the exit stop or before detaching).
use std::collections::HashMap;

use blazesym::symbolize::{
    source::{Elf, Source},
    Input, Symbolized, Symbolizer,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Frame {
    /// Absolute address in the target (a return address, except at the top).
    pub address: u64,
    /// Demangled function name; null when no symbol covers the address.
    pub function: Option<String>,
    /// Source file and line, from DWARF debug info when the module has it.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The mapped file the address lies in, and its offset in that file.
    pub module: Option<String>,
    pub offset: Option<u64>,
}

/// One file mapping of the target: [start, end) at `offset` in `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: String,
}

thread_local! {
    /// One symbolizer for the whole session: it keeps each file's parsed
    /// symbols and DWARF, so the processes of a tree (41 for a pyenv shim
    /// running python) decompress glibc's debug sections once, not each.
    static SYMBOLIZER: Symbolizer = Symbolizer::new();
}

/// The file to read a target's mapped `path` from: the path itself when it
/// is the same file the target sees (the symbolizer's cache is by path, so
/// every process of a tree shares it), else the target's own through its
/// root (a container's), or the path once the target is gone.
fn source_path(pid: u32, path: &str) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let theirs = crate::procfs::in_target_root(pid, std::path::Path::new(path));
    match (std::fs::metadata(path), std::fs::metadata(&theirs)) {
        (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()) => std::path::PathBuf::from(path),
        _ => theirs,
    }
}

/// An address and the file offset of its call.
type AddressOffset = (u64, u64);

/// Symbolizes every stack; frames come back in the same order. Python
/// frames (CPython's, read in eBPF after the native ones) are resolved from
/// the target's code objects with `python`'s layout and put among the
/// native frames where the interpreter ran them.
pub fn symbolize(
    pid: u32,
    stacks: &[Vec<u64>],
    saved: &[FileMapping],
    python: Option<&'static crate::runtime::cpython::Layout>,
) -> Vec<Vec<Frame>> {
    use crate::runtime::python_frames::{self, Resolver};
    let (native, words): (Vec<Vec<u64>>, Vec<Vec<u64>>) = stacks
        .iter()
        .map(|s| {
            let (py, native): (Vec<u64>, Vec<u64>) = s.iter().partition(|w| python_frames::is_python(**w));
            (native, py)
        })
        .unzip();
    let symbolized = symbolize_native(pid, &native, saved);
    if words.iter().all(Vec::is_empty) {
        return symbolized;
    }
    let mut resolver = python.map(|layout| Resolver::new(pid, layout));
    symbolized
        .into_iter()
        .zip(words)
        .map(|(frames, words)| {
            let py = words
                .into_iter()
                .map(|w| {
                    let word = python_frames::decode(w);
                    let frame = match resolver.as_mut() {
                        Some(r) => r.frame(word),
                        None => {
                            Frame { address: word.code, module: Some(python_frames::MODULE.into()), ..Frame::default() }
                        }
                    };
                    (frame, word.entry)
                })
                .collect();
            python_frames::interleave(frames, py)
        })
        .collect()
}

/// Native stacks: addresses are turned into (file, offset) with the
/// target's mappings (`saved` when it has exited: the last ones memtrace
/// read), then each file is symbolized from its ELF and DWARF, so a target
/// that is gone still gets names as long as its files are.
fn symbolize_native(pid: u32, stacks: &[Vec<u64>], saved: &[FileMapping]) -> Vec<Vec<Frame>> {
    let live = crate::procfs::file_mappings(pid);
    let maps = if live.is_empty() { saved } else { &live[..] };
    let mut unique: Vec<u64> = stacks.iter().flatten().copied().collect();
    unique.sort_unstable();
    unique.dedup();
    let mut by_address: HashMap<u64, Frame> = HashMap::new();
    // Per file: one of its mappings (to reach it when deleted), and each
    // (address, file offset of the call: return addresses point after it).
    let mut per_file: HashMap<&str, (&FileMapping, Vec<AddressOffset>)> = HashMap::new();
    for &address in &unique {
        let mut frame = Frame { address, ..Frame::default() };
        if let Some(m) = maps.iter().find(|m| m.start <= address && address < m.end) {
            let offset = address - m.start + m.offset;
            (frame.module, frame.offset) = (Some(m.path.clone()), Some(offset));
            per_file.entry(&m.path).or_insert((m, vec![])).1.push((address, offset.saturating_sub(1)));
        }
        by_address.insert(address, frame);
    }
    for (path, (mapping, addrs)) in per_file {
        let offsets: Vec<u64> = addrs.iter().map(|a| a.1).collect();
        let file = match path.strip_suffix(" (deleted)") {
            // Deleted (or replaced) since it was mapped: the mapped file
            // itself, through the target's map_files, while it lives.
            Some(_) => std::path::PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", mapping.start, mapping.end)),
            None => source_path(pid, path),
        };
        SYMBOLIZER.with(|symbolizer| {
            let Ok(symbols) = symbolizer.symbolize(&Source::Elf(Elf::new(file)), Input::FileOffset(&offsets)) else {
                return; // unreadable or not ELF: module + offset only
            };
            for ((address, _), sym) in addrs.iter().zip(symbols) {
                let (Symbolized::Sym(sym), Some(frame)) = (sym, by_address.get_mut(address)) else { continue };
                frame.function = Some(sym.name.to_string());
                if let Some(info) = &sym.code_info {
                    frame.file = Some(match &info.dir {
                        Some(dir) => dir.join(&*info.file).display().to_string(),
                        None => info.file.to_string_lossy().into_owned(),
                    });
                    frame.line = info.line;
                }
            }
        });
    }
    stacks.iter().map(|s| s.iter().map(|a| by_address[a].clone()).collect()).collect()
}

/// One line for a frame: `function (file:line)` or `module+0xoffset`.
pub fn describe(f: &Frame) -> String {
    let place = match (&f.file, f.line) {
        (Some(file), Some(line)) => format!(" ({}:{line})", short_path(file)),
        _ => String::new(),
    };
    match (&f.function, &f.module, f.offset) {
        (Some(func), _, _) => format!("{func}{place}"),
        (None, Some(m), Some(o)) => format!("{}+{o:#x}", short_path(m)),
        _ => format!("{:#x}", f.address),
    }
}

/// The last two components of a path: enough to recognise it in a report.
fn short_path(p: &str) -> &str {
    match p.rmatch_indices('/').nth(1) {
        Some((i, _)) => &p[i + 1..],
        None => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_as_function_and_line_or_module_and_offset() {
        let f = Frame {
            address: 0x1000,
            function: Some("leaky_cache_insert".into()),
            file: Some("/work/main/tests/src/markers.rs".into()),
            line: Some(47),
            module: Some("/work/main/target/release/memtrace-workload".into()),
            offset: Some(0x2000),
        };
        assert_eq!(describe(&f), "leaky_cache_insert (src/markers.rs:47)");
        let f = Frame { function: None, file: None, line: None, ..f };
        assert_eq!(describe(&f), "release/memtrace-workload+0x2000");
        assert_eq!(describe(&Frame { address: 0xabc, ..Frame::default() }), "0xabc");
    }

    #[test]
    fn our_own_stack_symbolizes_to_this_function() {
        #[inline(never)]
        fn here() -> u64 {
            here as *const () as u64
        }
        let addr = here() + 1; // as if a return address inside `here`
        let frames = symbolize(std::process::id(), &[vec![addr]], &[], None);
        // The same from saved mappings, as for a target that has exited.
        let saved = crate::procfs::file_mappings(std::process::id());
        assert_eq!(symbolize(u32::MAX, &[vec![addr]], &saved, None), frames);
        let f = &frames[0][0];
        assert!(f.function.as_deref().unwrap_or("").contains("here"), "{f:?}");
        assert!(f.module.as_deref().unwrap_or("").contains("memtrace"), "{f:?}");
    }
}
