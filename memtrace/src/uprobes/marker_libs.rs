//! Phase markers exported by a library the target maps (not only by its
//! executable): each newly mapped file that is an ELF object defining
//! `memtrace_phase_begin` gets the marker probes too. A library mapped
//! while tracing is probed when memtrace reads its mmap event: markers it
//! calls before that are not seen, except in the library memtrace ships
//! (see marker_library), which is probed before the command starts.
use std::{
    io::Read,
    path::{Path, PathBuf},
};

use crate::{kernel::probes::Probes, warnings::Warnings};

pub struct MarkerLibs {
    pid: u32,
    /// The executable (probed at the start), as its mappings name it.
    exe: PathBuf,
    /// Libraries whose markers are probed in every traced process: those
    /// found mapped, and the shipped one, probed before anyone maps it.
    probed: Vec<String>,
    /// Libraries the target mapped whose markers are probed (the report's).
    pub attached: Vec<String>,
}

/// Whether the ELF file at `path` defines the function `name`. Reads only
/// its headers and symbol tables (a lazy cache over the file): this runs on
/// the event loop for every library the target maps, some of them large.
fn defines(path: &Path, name: &str) -> bool {
    use object::{Object, ObjectSymbol};
    let Ok(file) = std::fs::File::open(path) else { return false };
    let cache = object::read::ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else { return false };
    let found = elf
        .dynamic_symbols()
        .chain(elf.symbols())
        .any(|s| s.is_definition() && s.kind() == object::SymbolKind::Text && s.name() == Ok(name));
    found
}

/// Whether the file starts with the ELF magic (data files are not read further).
pub fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"\x7fELF"
}

impl MarkerLibs {
    pub fn new(pid: u32, exe: &Path) -> MarkerLibs {
        let exe = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
        MarkerLibs { pid, exe, probed: Vec::new(), attached: Vec::new() }
    }

    /// Probes `library` for the target before it maps it: the kernel puts
    /// the probes in at the mmap, so no marker call is missed.
    pub fn arm(&mut self, probes: &mut Probes, library: &Path, warnings: &mut Warnings) {
        match probes.attach_phase_markers(self.pid, library) {
            Ok(true) => self.probed.push(library.display().to_string()),
            Ok(false) => warnings.warn(format!("{} exports no phase markers", library.display())),
            Err(e) => warnings.warn(format!("phase markers in {} will not be seen: {e:#}", library.display())),
        }
    }

    /// A file the target maps, seen for the first time.
    pub fn consider(&mut self, probes: &mut Probes, path: &str, warnings: &mut Warnings) {
        let path = Path::new(path);
        if path == self.exe || !path.is_absolute() {
            return;
        }
        let name = path.display().to_string();
        if self.probed.contains(&name) {
            if !self.attached.contains(&name) {
                self.attached.push(name); // armed before it was mapped
            }
            return;
        }
        // The target's file, also when it lives in another mount namespace.
        let open = crate::procfs::in_target_root(self.pid, path);
        if !is_elf(&open) || !defines(&open, "memtrace_phase_begin") {
            return;
        }
        match probes.attach_phase_markers(self.pid, &open) {
            Ok(true) => {
                self.probed.push(name.clone());
                self.attached.push(name);
            }
            Ok(false) => {}
            Err(e) => warnings.warn(format!("phase markers in {} will not be seen: {e:#}", path.display())),
        }
    }
}

impl MarkerLibs {
    /// A process forked from the traced one: the libraries' markers are
    /// probed for it too.
    pub fn attach_to(&self, pid: u32, probes: &mut Probes, warnings: &mut Warnings) {
        for path in &self.probed {
            let open = crate::procfs::in_target_root(pid, Path::new(path));
            if let Err(e) = probes.attach_phase_markers(pid, &open) {
                warnings.warn_for(pid, format!("phase markers in {path} will not be seen in PID {pid}: {e:#}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_found_without_reading_the_whole_file() {
        let libc = crate::uprobes::allocator::own_glibc();
        assert!(defines(&libc, "malloc"));
        assert!(!defines(&libc, "memtrace_phase_begin"));
        assert!(!defines(Path::new("/etc/hostname"), "malloc"));
    }

    #[test]
    fn only_elf_files_are_read() {
        assert!(is_elf(Path::new("/proc/self/exe")));
        assert!(!is_elf(Path::new("/etc/hostname")));
        assert!(!is_elf(Path::new("/nonexistent")));
    }
}
