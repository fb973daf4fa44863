//! Per-file resident bytes: the kernel truth the measured loading is
//! checked against, smaps Rss and pagemap present pages.
use std::collections::HashMap;

use procfs::process::Process;

use super::maps::region_of;
use crate::model::aspace::{FileId, Region};

/// Resident bytes of each mapped file, summed over its mappings (smaps "Rss").
pub fn file_rss(pid: u32) -> procfs::ProcResult<HashMap<FileId, u64>> {
    let mut out = HashMap::new();
    for map in Process::new(pid as i32)?.smaps()?.iter() {
        if let Region::File(id) = region_of(map) {
            *out.entry(id).or_insert(0) += map.extension.map.get("Rss").copied().unwrap_or(0);
        }
    }
    Ok(out)
}

/// Bytes of each mapped file whose pages are present in the page tables,
/// from /proc/PID/pagemap (bit 63 of each 8-byte entry): a second kernel
/// truth, page by page, beside smaps' Rss.
pub fn file_pagemap(pid: u32) -> std::io::Result<HashMap<FileId, u64>> {
    use std::os::unix::fs::FileExt;
    const PRESENT: u64 = 1 << 63;
    let maps = Process::new(pid as i32).map_err(std::io::Error::other)?.maps().map_err(std::io::Error::other)?;
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 8 * 4096];
    for map in maps.iter() {
        let Region::File(id) = region_of(map) else { continue };
        let (mut page, end) = (map.address.0 / 4096, map.address.1 / 4096);
        let mut present = 0u64;
        while page < end {
            let n = ((end - page) as usize).min(buf.len() / 8);
            let read = pagemap.read_at(&mut buf[..n * 8], page * 8)?;
            if read == 0 {
                break;
            }
            present += buf[..read]
                .chunks_exact(8)
                .filter(|e| u64::from_le_bytes((*e).try_into().unwrap()) & PRESENT != 0)
                .count() as u64;
            page += (read / 8) as u64;
        }
        *out.entry(id).or_insert(0) += present * 4096;
    }
    Ok(out)
}
