//! Which allocator to probe: a malloc defined in the executable itself
//! (statically linked), else the glibc the target maps.
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::probe_site::Library;

/// The library (or executable) whose malloc family memtrace probes.
#[derive(Clone, Debug)]
pub struct Allocator {
    pub path: PathBuf,
    /// How it was found, for the report.
    pub how: String,
}

/// `binary` is the target's executable; in run mode the target has not
/// exec'd yet, so its libc cannot be read from its maps: memtrace's own
/// libc (the system's) is probed, and the trace says whether the target
/// mapped that file.
pub fn find(pid: u32, binary: &Path, run_mode: bool) -> Result<Allocator> {
    if let Ok(exe) = Library::open(binary) {
        if matches!(exe.function("malloc"), Ok(Some(_))) {
            return Ok(Allocator {
                path: binary.to_path_buf(),
                how: "malloc is defined in the executable itself (statically linked)".into(),
            });
        }
    }
    let (maps, how) = if run_mode {
        ("/proc/self/maps".to_string(), "the system's glibc (memtrace's own; the target maps it after exec)")
    } else {
        (format!("/proc/{pid}/maps"), "the glibc the target maps (/proc/PID/maps)")
    };
    let text = std::fs::read_to_string(&maps)?;
    match libc_in_maps(&text) {
        Some(path) => Ok(Allocator { path, how: how.into() }),
        None => bail!("no glibc (libc.so.6) in {maps}: the heap is not traced"),
    }
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
        let a = find(std::process::id(), Path::new("/proc/self/exe"), true).unwrap();
        assert!(a.path.ends_with("libc.so.6"), "{a:?}");
    }
}
