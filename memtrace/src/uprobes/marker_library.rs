//! The phase-marker library memtrace ships: two empty exported functions,
//! `memtrace_phase_begin/end(const char *name)` (python/memtrace/_markers.c),
//! for programs that cannot define them in their own code. The Python
//! module loads it with ctypes.
//!
//! In run mode memtrace writes it to a directory only root may write to and
//! anyone may read, names it to the command in `MEMTRACE_MARKER_LIB`, and
//! probes it for the command before its first instruction: the kernel puts
//! a uprobe into every later mapping of the file by a process it filters
//! for, so the first phase the program marks, right after loading the
//! library, is seen. (A library found only in the mmap event would be
//! probed too late for it.)
use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// The variable that names the library to the command memtrace runs.
pub const ENV: &str = "MEMTRACE_MARKER_LIB";
/// Where memtrace writes it. Not the control socket's directory, which is
/// root's alone: the traced program, maybe an ordinary user's, maps this file.
pub const DIR: &str = "/run/memtrace-markers";
const NAME: &str = "libmemtrace-markers.so";

/// The library, built from python/memtrace/_markers.c by build.rs.
static LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libmemtrace-markers.so"));

/// Writes the library into [`DIR`] unless it is there already, byte for
/// byte (its inode then stays the one other memtraces probe); returns its path.
pub fn install() -> Result<PathBuf> {
    install_in(Path::new(DIR))
}

fn install_in(dir: &Path) -> Result<PathBuf> {
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    // Others run code from this directory: it must be ours alone to write.
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        bail!("{} is not a directory that only uid {euid} may write to: remove it and run again", dir.display());
    }
    if meta.mode() & 0o005 != 0o005 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let path = dir.join(NAME);
    if std::fs::read(&path).is_ok_and(|bytes| bytes == LIBRARY) {
        return Ok(path);
    }
    // Written aside and renamed: a program mapping the old file keeps it whole.
    let aside = dir.join(format!(".{NAME}.{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&aside)?;
        file.write_all(LIBRARY)?;
        file.sync_all()?;
        std::fs::rename(&aside, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&aside);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("memtrace-marker-lib-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_library_exports_both_markers_at_distinct_addresses() {
        let dir = scratch("exports");
        let path = install_in(&dir).unwrap();
        let lib = crate::uprobes::placement::Library::open(&path).unwrap();
        let begin = lib.function("memtrace_phase_begin").unwrap().expect("begin exported").address;
        let end = lib.function("memtrace_phase_end").unwrap().expect("end exported").address;
        assert_ne!(begin, end, "folded into one function: begin and end would be one probe");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o644, "any user's program may map it");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_identical_library_is_kept_and_a_different_one_replaced() {
        let dir = scratch("replace");
        let path = install_in(&dir).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(std::fs::metadata(install_in(&dir).unwrap()).unwrap().ino(), inode, "probed inode kept");
        std::fs::write(&path, b"an older library").unwrap();
        install_in(&dir).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), LIBRARY);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_others_may_write_to_is_refused() {
        let dir = scratch("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = install_in(&dir).unwrap_err().to_string();
        assert!(err.contains("only uid") && err.contains("remove it"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
