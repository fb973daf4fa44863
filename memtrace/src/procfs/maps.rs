//! Reading the target's mappings from /proc/PID/maps (kernel truth) into
//! regions and file identities for the address-space model.
use std::path::{Path, PathBuf};

use procfs::process::{MMapPath, MemoryMap, Process};

use crate::{
    model::aspace::{AnonOrigin, FileId, Region},
    model::stats::FileInfo,
    symbolize::FileMapping,
};

/// A mapping of a named file, with its offset (for symbolization).
fn file_mapping(map: &MemoryMap) -> Option<FileMapping> {
    match &map.pathname {
        MMapPath::Path(p) => Some(FileMapping {
            start: map.address.0,
            end: map.address.1,
            offset: map.offset,
            path: p.display().to_string(),
        }),
        _ => None,
    }
}

/// The target's file mappings now (empty when it is gone).
pub fn file_mappings(pid: u32) -> Vec<FileMapping> {
    Process::new(pid as i32)
        .and_then(|p| p.maps())
        .map(|maps| maps.iter().filter_map(file_mapping).collect())
        .unwrap_or_default()
}

pub(super) fn region_of(map: &MemoryMap) -> Region {
    match &map.pathname {
        MMapPath::Path(_) => {
            Region::File(FileId { major: map.dev.0 as u32, minor: map.dev.1 as u32, inode: map.inode })
        }
        MMapPath::Heap => Region::Heap,
        MMapPath::Stack | MMapPath::TStack(_) => Region::Stack,
        MMapPath::Anonymous => Region::Anon(AnonOrigin::Unseen),
        MMapPath::Vdso => Region::Special("[vdso]".into()),
        MMapPath::Vvar => Region::Special("[vvar]".into()),
        MMapPath::Vsyscall => Region::Special("[vsyscall]".into()),
        MMapPath::Vsys(key) => Region::Special(format!("[SYSV{key:08x}]")),
        MMapPath::Rollup => Region::Special("[rollup]".into()),
        MMapPath::Other(name) => Region::Special(format!("[{}]", name.trim_matches(['[', ']']))),
    }
}

fn file_info(pid: u32, map: &MemoryMap, id: FileId) -> Option<FileInfo> {
    let MMapPath::Path(path) = &map.pathname else {
        return None;
    };
    // map_files/ reaches the mapped file itself, even deleted or in another
    // mount namespace, so its size is the real one.
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", map.address.0, map.address.1);
    let size_bytes = std::fs::metadata(link).ok().map(|m| m.len());
    Some(FileInfo { id, path: path.to_string_lossy().into_owned(), size_bytes })
}

/// The target's mappings at one instant (kernel truth).
pub struct Snapshot {
    /// (start, end, region) of every mapping.
    pub vmas: Vec<(u64, u64, Region)>,
    /// The files among them.
    pub files: Vec<FileInfo>,
    /// The file mappings with their offsets.
    pub mappings: Vec<FileMapping>,
}

/// Where memtrace can open a file the target names `path`: through the
/// target's root directory, so that for a target in another mount namespace
/// (a container) memtrace reads and probes the target's file, not whatever
/// the host has at that path. The path itself when the target is gone.
pub fn in_target_root(pid: u32, path: &Path) -> PathBuf {
    let via_root = PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path));
    if via_root.exists() {
        via_root
    } else {
        path.to_path_buf()
    }
}

/// The exact file behind the target's first mapping of `path`:
/// /proc/PID/map_files/START-END, a link the kernel resolves to the mapped
/// inode even in another mount namespace, or after the file was replaced
/// on disk (a library upgraded under a running server, which maps then
/// name "PATH (deleted)").
pub fn mapped_file_link(pid: u32, path: &Path) -> Option<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let range = maps.lines().find(|l| l.split_whitespace().nth(5).is_some_and(|p| Path::new(p) == path))?;
    let link = PathBuf::from(format!("/proc/{pid}/map_files/{}", range.split_whitespace().next()?));
    link.exists().then_some(link)
}

/// An executable mapping of a file: the code an unwind table covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecFileMapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub id: FileId,
    /// /proc/PID/map_files/START-END: the mapped file itself (see [`mapped_file_link`]).
    pub link: PathBuf,
    pub path: String,
}

/// The target's executable file mappings now, sorted by address (empty
/// when it is gone).
pub fn exec_file_mappings(pid: u32) -> Vec<ExecFileMapping> {
    let Ok(maps) = Process::new(pid as i32).and_then(|p| p.maps()) else { return Vec::new() };
    maps.iter()
        .filter(|m| m.perms.contains(procfs::process::MMPermissions::EXECUTE))
        .filter_map(|m| {
            let MMapPath::Path(path) = &m.pathname else { return None };
            let Region::File(id) = region_of(m) else { return None };
            Some(ExecFileMapping {
                start: m.address.0,
                end: m.address.1,
                offset: m.offset,
                id,
                link: PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.address.0, m.address.1)),
                path: path.display().to_string(),
            })
        })
        .collect()
}

/// All mappings of `pid`, plus the files among them. None when the maps
/// cannot be read or are empty: a process that is exiting (or a zombie)
/// has dropped its address space, and that empty view must not replace
/// what memtrace last saw (leak stacks are symbolized with it).
pub fn snapshot(pid: u32) -> Option<Snapshot> {
    let maps = Process::new(pid as i32).ok()?.maps().ok()?;
    if maps.0.is_empty() {
        return None;
    }
    let mut vmas = Vec::new();
    let mut files: Vec<FileInfo> = Vec::new();
    let mut mappings = Vec::new();
    for map in maps.iter() {
        mappings.extend(file_mapping(map));
        let region = region_of(map);
        if let Region::File(id) = region {
            if !files.iter().any(|f| f.id == id) {
                files.extend(file_info(pid, map, id));
            }
        }
        vmas.push((map.address.0, map.address.1, region));
    }
    Some(Snapshot { vmas, files, mappings })
}

/// The file mapped at `addr` in `pid`, if the mapping is still there.
pub fn file_at(pid: u32, addr: u64) -> Option<FileInfo> {
    let maps = Process::new(pid as i32).ok()?.maps().ok()?;
    let map = maps.iter().find(|m| m.address.0 <= addr && addr < m.address.1)?;
    match region_of(map) {
        Region::File(id) => file_info(pid, map, id),
        _ => None,
    }
}

/// The program break's start (`start_brk` in /proc/PID/stat) and its
/// current end (the end of the `[heap]` mapping; none before the first growth).
pub fn brk_range(pid: u32) -> Option<(u64, Option<u64>)> {
    let process = Process::new(pid as i32).ok()?;
    let start = process.stat().ok()?.start_brk?;
    let end = process.maps().ok()?.iter().find(|m| m.pathname == MMapPath::Heap).map(|m| m.address.1);
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exited_process_has_no_snapshot_but_a_live_one_does() {
        assert!(snapshot(std::process::id()).is_some_and(|s| !s.mappings.is_empty()));
        // An unreaped child is a zombie: /proc/PID/maps reads as empty.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let stat = format!("/proc/{}/stat", child.id());
        while !std::fs::read_to_string(&stat).unwrap().contains(") Z ") {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(snapshot(child.id()).is_none());
        child.wait().unwrap();
    }
}
