//! Phase markers exported by a library the target maps (not only by its
//! executable): each newly mapped file that is an ELF object defining
//! `memtrace_phase_begin` gets the marker probes too. A library mapped
//! while tracing is probed when memtrace reads its mmap event: markers it
//! calls before that are not seen.
use std::{
    io::Read,
    path::{Path, PathBuf},
};

use crate::{probe_site::Library, probes::Probes};

pub struct MarkerLibs {
    pid: u32,
    /// The executable (probed at the start), as its mappings name it.
    exe: PathBuf,
    /// Libraries whose markers were attached.
    pub attached: Vec<String>,
}

/// Whether the file starts with the ELF magic (data files are not read further).
fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"\x7fELF"
}

impl MarkerLibs {
    pub fn new(pid: u32, exe: &Path) -> MarkerLibs {
        MarkerLibs { pid, exe: std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf()), attached: Vec::new() }
    }

    /// A file the target maps, seen for the first time.
    pub fn consider(&mut self, probes: &mut Probes, path: &str) {
        let path = Path::new(path);
        if path == self.exe || !path.is_absolute() || !is_elf(path) {
            return;
        }
        let exports = Library::open(path).and_then(|l| l.function("memtrace_phase_begin")).is_ok_and(|f| f.is_some());
        if !exports {
            return;
        }
        match probes.attach_phase_markers(self.pid, path) {
            Ok(true) => self.attached.push(path.display().to_string()),
            Ok(false) => {}
            Err(e) => eprintln!("memtrace: warning: phase markers in {} will not be seen: {e:#}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_elf_files_are_read() {
        assert!(is_elf(Path::new("/proc/self/exe")));
        assert!(!is_elf(Path::new("/etc/hostname")));
        assert!(!is_elf(Path::new("/nonexistent")));
    }
}
