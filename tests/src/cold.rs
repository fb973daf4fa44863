//! `--cold`: evict the Arrow file from the page cache before it is mapped.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use memmap2::Mmap;

/// Page-cache residency of a file.
#[derive(Debug, Clone, Copy)]
pub struct Residency {
    pub resident: u64,
    pub total: u64,
}

/// fsyncs `path` (dirty pages cannot be dropped), asks the kernel to drop
/// its cached pages, then counts with mincore how many are still resident.
pub fn make_cold(path: &Path) -> Result<Residency> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    file.sync_all().with_context(|| format!("fsync of {} failed", path.display()))?;
    // SAFETY: plain syscall on an open fd; offset 0 / len 0 means the whole file.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!("posix_fadvise(DONTNEED) failed: {}", std::io::Error::from_raw_os_error(rc));
    }
    resident_pages(&file)
}

/// Counts the file's pages in the page cache with mincore over a temporary
/// mapping, unmapped again before returning. Mapping without touching faults
/// nothing in, so the count is not disturbed by the measurement.
pub fn resident_pages(file: &File) -> Result<Residency> {
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Ok(Residency { resident: 0, total: 0 });
    }
    // SAFETY: read-only mapping that is never dereferenced, only passed to mincore.
    let map = unsafe { Mmap::map(file) }.context("temporary mmap for mincore failed")?;
    let page = crate::page_size() as usize;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `map` is a live, page-aligned mapping of `len` bytes and `vec`
    // has one byte per page of it.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        bail!("mincore failed: {}", std::io::Error::last_os_error());
    }
    drop(map);
    Ok(Residency { resident: vec.iter().filter(|&&b| b & 1 != 0).count() as u64, total: vec.len() as u64 })
}
