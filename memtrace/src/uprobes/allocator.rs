//! Which allocators to probe: the glibc the target maps, unless the
//! executable defines malloc itself; an allocator statically linked into the
//! executable (mimalloc, jemalloc, tcmalloc functions in its symbol table);
//! and every library named with `--alloc-lib`.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::{procfs, uprobes::alloc_symbols, uprobes::placement::Library, warnings::Warnings};

/// A library (or executable) whose allocator functions memtrace probes.
#[derive(Clone, Debug)]
pub struct Allocator {
    /// As the target names it (its maps file).
    pub path: PathBuf,
    /// Where memtrace reads and probes it: the mapped file itself in
    /// attach mode (see procfs::mapped_file_link), else `path`.
    pub open_path: PathBuf,
    /// How it was found, for the report.
    pub how: String,
    /// Linked into the executable: its code shares the file with the
    /// program's, so a free's caller cannot tell the two apart.
    pub in_executable: bool,
}

/// `binary` is the target's executable; in run mode the target has not
/// exec'd yet, so its libc cannot be read from its maps: memtrace's own
/// libc (the system's) is probed, and the trace says whether the target
/// mapped that file. `extra` are the `--alloc-lib` libraries (checked with
/// [`check_alloc_lib`] already).
pub fn find(
    pid: u32,
    binary: &Path,
    run_mode: bool,
    extra: &[PathBuf],
    warnings: &mut Warnings,
) -> Result<Vec<Allocator>> {
    let mut found = Vec::new();
    let mut exe_has_malloc = false;
    if let Some((own, defines_malloc)) = in_executable(binary) {
        exe_has_malloc = defines_malloc;
        found.push(own);
    }
    if !exe_has_malloc {
        let (maps, how) = if run_mode {
            ("/proc/self/maps".to_string(), "the system's glibc (memtrace's own; the target maps it after exec)")
        } else {
            (format!("/proc/{pid}/maps"), "the glibc the target maps (/proc/PID/maps)")
        };
        let text = std::fs::read_to_string(&maps)?;
        match libc_in_maps(&text) {
            Some(path) => {
                let replaced = text.lines().any(|l| {
                    l.ends_with(" (deleted)") && l.split_whitespace().nth(5).is_some_and(|p| Path::new(p) == path)
                });
                let how = if replaced {
                    format!("{how}; replaced on disk since it was mapped (\"(deleted)\"): the mapped file is probed")
                } else {
                    how.to_string()
                };
                found.push(Allocator { open_path: opened(pid, &path, run_mode), path, how, in_executable: false })
            }
            None if found.is_empty() && extra.is_empty() => {
                bail!("no glibc (libc.so.6) in {maps}: the heap is not traced")
            }
            None => {}
        }
    }
    for path in extra {
        // The name the target's maps will show (a symlink such as libfoo.so -> libfoo.so.2 resolved).
        let path = &std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let how = if run_mode {
            "--alloc-lib (the trace says whether the target mapped it)".to_string()
        } else {
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            if maps_file(&maps, path) {
                "--alloc-lib, mapped by the target".to_string()
            } else {
                warnings.warn(format!(
                    "PID {pid} does not map {} (yet): its allocator probes fire only once it is loaded",
                    path.display()
                ));
                "--alloc-lib, not mapped by the target when memtrace attached".to_string()
            }
        };
        found.push(Allocator { open_path: opened(pid, path, run_mode), path: path.clone(), how, in_executable: false });
    }
    Ok(found)
}

/// The glibc this process (memtrace's tests) maps, as `find` sees it.
#[cfg(test)]
pub fn own_glibc() -> PathBuf {
    let found = find(std::process::id(), Path::new("/proc/self/exe"), true, &[], &mut Warnings::default()).unwrap();
    found[0].path.clone()
}

/// Where memtrace opens and probes a library the target maps at `path`.
/// In attach mode, the target may see another file at that path than
/// memtrace does (a container's own glibc), or the file may have been
/// replaced since it was mapped: probing memtrace's file would leave the
/// target's calls unseen, so the mapped file itself is used.
fn opened(pid: u32, path: &Path, run_mode: bool) -> PathBuf {
    if run_mode {
        return path.to_path_buf(); // the child shares memtrace's files
    }
    procfs::mapped_file_link(pid, path).unwrap_or_else(|| procfs::in_target_root(pid, path))
}

/// The allocator an executable carries itself, if any, and whether it
/// defines `malloc` (then it replaces glibc's): malloc statically linked,
/// or a non-glibc allocator's functions (a Rust `#[global_allocator]`).
pub fn in_executable(binary: &Path) -> Option<(Allocator, bool)> {
    let exe = Library::open(binary).ok()?;
    if matches!(exe.function("malloc"), Ok(Some(_))) {
        let how = "malloc is defined in the executable itself (statically linked)".into();
        return Some((
            Allocator { path: binary.to_path_buf(), open_path: binary.to_path_buf(), how, in_executable: true },
            true,
        ));
    }
    let own = own_allocator_functions(&exe);
    if own.is_empty() {
        return None;
    }
    let how = format!("the executable carries its own allocator ({}, statically linked)", own.join(", "));
    Some((Allocator { path: binary.to_path_buf(), open_path: binary.to_path_buf(), how, in_executable: true }, false))
}

/// Checks an `--alloc-lib` argument before tracing starts: an ELF file that
/// defines at least one allocator function memtrace knows. Returns their names.
pub fn check_alloc_lib(path: &Path) -> Result<Vec<String>> {
    let lib = Library::open(path).with_context(|| format!("--alloc-lib {}", path.display()))?;
    let names = alloc_symbols::known();
    let wanted: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
    let defined: Vec<String> = lib.functions(&wanted)?.into_iter().map(|(n, _)| n).collect();
    if defined.is_empty() {
        bail!(
            "--alloc-lib {}: it defines none of the allocator functions memtrace knows (malloc/free and the \
             jemalloc, je_/_rjem_, mi_ and tc_ families); pass the allocator's shared library, e.g. \
             /usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
            path.display()
        );
    }
    Ok(defined)
}

/// The non-glibc allocator functions an executable defines (a mimalloc or
/// jemalloc linked in statically, e.g. a Rust `#[global_allocator]`).
fn own_allocator_functions(exe: &Library) -> Vec<String> {
    let names = alloc_symbols::known();
    let wanted: Vec<&str> =
        names.iter().map(|(n, _)| n.as_str()).filter(|n| alloc_symbols::is_non_standard(n)).collect();
    exe.functions(&wanted).map(|f| f.into_iter().map(|(n, _)| n).collect()).unwrap_or_default()
}

/// Whether a maps file's text maps `path` (compared after resolving links).
fn maps_file(maps: &str, path: &Path) -> bool {
    let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    maps.lines().filter_map(|l| l.split_whitespace().nth(5)).any(|p| Path::new(p) == want)
}

/// The glibc mapped according to a maps file's text.
fn libc_in_maps(maps: &str) -> Option<PathBuf> {
    maps.lines().filter_map(|l| l.split_whitespace().nth(5)).map(PathBuf::from).find(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name == "libc.so.6" || (name.starts_with("libc-") && name.ends_with(".so"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_glibc_among_the_mappings() {
        let maps = "\
5581a000-5581b000 r--p 00000000 fe:01 123 /usr/bin/cat
7f00-7f10 r--p 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libcap.so.2
7f10-7f20 r-xp 00028000 fe:01 789 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffc-7ffd rw-p 00000000 00:00 0 [stack]";
        assert_eq!(libc_in_maps(maps), Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6")));
        assert_eq!(libc_in_maps("7f00-7f10 r--p 00000000 fe:01 456 /usr/lib/libcrypto.so.3"), None);
    }

    #[test]
    fn memtrace_itself_uses_the_system_glibc() {
        let a = find(std::process::id(), Path::new("/proc/self/exe"), true, &[], &mut Warnings::default()).unwrap();
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(a[0].path.ends_with("libc.so.6"), "{a:?}");
    }

    #[test]
    fn an_alloc_lib_without_allocator_functions_is_refused_with_the_fix() {
        let e = check_alloc_lib(Path::new("/proc/self/exe")).unwrap_err();
        assert!(format!("{e:#}").contains("defines none of the allocator functions"), "{e:#}");
        let e = check_alloc_lib(Path::new("/nonexistent/libx.so")).unwrap_err();
        assert!(format!("{e:#}").contains("--alloc-lib /nonexistent/libx.so"), "{e:#}");
        let libc = find(std::process::id(), Path::new("/proc/self/exe"), true, &[], &mut Warnings::default())
            .unwrap()
            .remove(0)
            .path;
        let defined = check_alloc_lib(&libc).unwrap();
        assert!(defined.iter().any(|n| n == "malloc") && defined.iter().any(|n| n == "free"), "{defined:?}");
    }
}
