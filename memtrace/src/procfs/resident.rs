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

/// pagemap's bits: the page is present; it is a file page or shared anonymous.
const PRESENT: u64 = 1 << 63;
const FILE_PAGE: u64 = 1 << 61;

/// Calls `each(page, entry)` for every virtual page in [start, end) (page
/// numbers) with its /proc/PID/pagemap entry, read in chunks.
fn pagemap_entries(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    mut each: impl FnMut(u64, u64),
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 8 * 4096];
    let mut page = start;
    while page < end {
        let n = ((end - page) as usize).min(buf.len() / 8);
        let read = pagemap.read_at(&mut buf[..n * 8], page * 8)?;
        if read == 0 {
            break;
        }
        for (i, e) in buf[..read].chunks_exact(8).enumerate() {
            each(page + i as u64, u64::from_le_bytes(e.try_into().expect("8 bytes")));
        }
        page += (read / 8) as u64;
    }
    Ok(())
}

/// Each mapped file's present pages, from /proc/PID/pagemap (one 8-byte
/// entry per virtual page): a second kernel truth, page by page, beside
/// smaps' Rss.
pub fn file_pagemap(pid: u32) -> std::io::Result<HashMap<FileId, FilePages>> {
    let maps = Process::new(pid as i32).map_err(std::io::Error::other)?.maps().map_err(std::io::Error::other)?;
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut out: HashMap<FileId, FilePages> = HashMap::new();
    for map in maps.iter() {
        let Region::File(id) = region_of(map) else { continue };
        let (start, end) = (map.address.0 / 4096, map.address.1 / 4096);
        let first_file_page = map.offset / 4096;
        let entry = out.entry(id).or_default();
        // Consecutive file pages go into the set as one range.
        let mut run: Option<(u64, u64)> = None;
        pagemap_entries(&pagemap, start, end, |page, e| {
            if e & PRESENT == 0 {
                return;
            }
            entry.present_bytes += 4096;
            if e & FILE_PAGE != 0 {
                let index = first_file_page + (page - start);
                run = match run {
                    Some((first, last)) if last + 1 == index => Some((first, index)),
                    Some((first, last)) => {
                        entry.file_pages.insert(first, last);
                        Some((index, index))
                    }
                    None => Some((index, index)),
                };
            }
        })?;
        if let Some((first, last)) = run {
            entry.file_pages.insert(first, last);
        }
    }
    Ok(out)
}

/// One mapping's anonymous pages (smaps "Anonymous": the process's private
/// pages, copied-on-write ones of file mappings included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnonVma {
    pub start: u64,
    pub end: u64,
    pub anon_bytes: u64,
}

/// The mappings holding anonymous pages, from /proc/PID/smaps.
pub fn anon_smaps(pid: u32) -> procfs::ProcResult<Vec<AnonVma>> {
    let mut out = Vec::new();
    for map in Process::new(pid as i32)?.smaps()?.iter() {
        let anon_bytes = map.extension.map.get("Anonymous").copied().unwrap_or(0);
        if anon_bytes > 0 {
            out.push(AnonVma { start: map.address.0, end: map.address.1, anon_bytes });
        }
    }
    Ok(out)
}

/// Private present pages in [start, end) (pagemap: present, not a file page;
/// the shared zero page counts too): how one mapping's anonymous bytes
/// split between the pieces of it the events told apart.
pub fn private_present_bytes(pid: u32, start: u64, end: u64) -> std::io::Result<u64> {
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut bytes = 0;
    pagemap_entries(&pagemap, start / 4096, end.div_ceil(4096), |_, e| {
        if e & PRESENT != 0 && e & FILE_PAGE == 0 {
            bytes += 4096;
        }
    })?;
    Ok(bytes)
}
