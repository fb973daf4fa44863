//! Language runtimes recognised in the files a target maps, by what the
//! files define (symbols and version data), never by their names: CPython
//! so far, statically linked into its executable (Debian's python3) or in
//! a shared libpython (pyenv's builds, programs that embed Python).
pub mod cpython;
pub mod python_frames;

use std::{collections::HashMap, path::Path};

use crate::model::aspace::FileId;

/// A runtime found in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    /// "CPython".
    pub name: &'static str,
    /// "3.11.2", or why it is not known.
    pub version: String,
    /// The file that holds it, as the target's mappings name it.
    pub file: String,
    /// Where the version was read.
    pub source: String,
    /// What memtrace does with the runtime's own frames.
    pub frames: String,
    /// A CPython whose frames memtrace reads: where, and how.
    pub cpython: Option<CPython>,
}

/// A CPython memtrace can walk: its version's layout, and where its
/// `_PyRuntime` lies from the start of the file's image (the address the
/// file's offset 0 is mapped at, in a process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CPython {
    pub layout: &'static cpython::Layout,
    pub runtime_from_start: u64,
}

/// The runtimes found so far, by the file that holds them. Each mapped file
/// is looked at once (the session calls this for every new file).
#[derive(Default)]
pub struct Runtimes {
    found: HashMap<FileId, Runtime>,
}

impl Runtimes {
    /// A file a process maps, seen for the first time; `open` is where
    /// memtrace can read it (the target's root).
    pub fn consider(&mut self, id: FileId, path: &str, open: &Path) {
        if let Some(runtime) = cpython::detect(open, path) {
            self.found.insert(id, runtime);
        }
    }

    /// The runtime among `files` (those a process maps), if any.
    pub fn of<'a>(&self, mut files: impl Iterator<Item = &'a FileId>) -> Option<&Runtime> {
        files.find_map(|id| self.found.get(id))
    }
}
