//! Per-file resident bytes: the kernel truth the measured loading is
//! checked against, smaps Rss and pagemap present pages.
use std::collections::HashMap;

use procfs::process::Process;

use super::maps::region_of;
use crate::model::{
    aspace::{FileId, Region},
    pageset::PageSet,
};

/// smaps figures of one file, summed over its mappings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmapsFile {
    /// "Rss": what `top` adds up across processes.
    pub rss: u64,
    /// "Pss": each page divided by the number of processes mapping it.
    pub pss: u64,
}

/// smaps Rss and Pss of each mapped file, summed over its mappings.
pub fn file_smaps(pid: u32) -> procfs::ProcResult<HashMap<FileId, SmapsFile>> {
    let mut out: HashMap<FileId, SmapsFile> = HashMap::new();
    for map in Process::new(pid as i32)?.smaps()?.iter() {
        if let Region::File(id) = region_of(map) {
            let field = |name: &str| map.extension.map.get(name).copied().unwrap_or(0);
            let e = out.entry(id).or_default();
            e.rss += field("Rss");
            e.pss += field("Pss");
        }
    }
    Ok(out)
}

/// Resident bytes of each mapped file, summed over its mappings (smaps "Rss").
pub fn file_rss(pid: u32) -> procfs::ProcResult<HashMap<FileId, u64>> {
    Ok(file_smaps(pid)?.into_iter().map(|(id, s)| (id, s.rss)).collect())
}

/// One file's mappings as pagemap sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilePages {
    /// Present pages of its mappings (bit 63), private copies included.
    pub present_bytes: u64,
    /// The file's own pages among them (bit 61, "file page or shared
    /// anonymous"), by page index in the file: the same index mapped by two
    /// processes is one page of the page cache, so unions of these sets
    /// count what a process tree really keeps resident.
    pub file_pages: PageSet,
}

/// Each mapped file's present pages, from /proc/PID/pagemap (one 8-byte
/// entry per virtual page): a second kernel truth, page by page, beside
/// smaps' Rss.
pub fn file_pagemap(pid: u32) -> std::io::Result<HashMap<FileId, FilePages>> {
    use std::os::unix::fs::FileExt;
    const PRESENT: u64 = 1 << 63;
    const FILE_PAGE: u64 = 1 << 61;
    let maps = Process::new(pid as i32).map_err(std::io::Error::other)?.maps().map_err(std::io::Error::other)?;
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut out: HashMap<FileId, FilePages> = HashMap::new();
    let mut buf = vec![0u8; 8 * 4096];
    for map in maps.iter() {
        let Region::File(id) = region_of(map) else { continue };
        let (start, end) = (map.address.0 / 4096, map.address.1 / 4096);
        let first_file_page = map.offset / 4096;
        let entry = out.entry(id).or_default();
        // Consecutive file pages go into the set as one range.
        let mut run: Option<(u64, u64)> = None;
        let mut page = start;
        while page < end {
            let n = ((end - page) as usize).min(buf.len() / 8);
            let read = pagemap.read_at(&mut buf[..n * 8], page * 8)?;
            if read == 0 {
                break;
            }
            for (i, e) in buf[..read].chunks_exact(8).enumerate() {
                let e = u64::from_le_bytes(e.try_into().expect("8 bytes"));
                if e & PRESENT == 0 {
                    continue;
                }
                entry.present_bytes += 4096;
                if e & FILE_PAGE != 0 {
                    let index = first_file_page + (page - start) + i as u64;
                    run = match run {
                        Some((first, last)) if last + 1 == index => Some((first, index)),
                        Some((first, last)) => {
                            entry.file_pages.insert(first, last);
                            Some((index, index))
                        }
                        None => Some((index, index)),
                    };
                }
            }
            page += (read / 8) as u64;
        }
        if let Some((first, last)) = run {
            entry.file_pages.insert(first, last);
        }
    }
    Ok(out)
}
