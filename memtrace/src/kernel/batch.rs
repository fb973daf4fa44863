//! `BPF_MAP_UPDATE_BATCH`, which aya does not wrap: many keys of a map
//! written in one syscall (an unwind table's rows; the tables themselves
//! into the map of maps, where each update waits for an RCU grace period).
use anyhow::Result;

/// Writes `values` at `keys` of the array `map` in one BPF_MAP_UPDATE_BATCH.
pub fn update<V>(map: &aya::maps::MapFd, keys: &[u32], rows: &[V]) -> Result<()> {
    use std::os::fd::{AsFd, AsRawFd};
    anyhow::ensure!(keys.len() == rows.len(), "{} keys for {} values", keys.len(), rows.len());
    /// `union bpf_attr`'s member for the batch commands.
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: rows.as_ptr() as u64,
        count: rows.len() as u32,
        map_fd: map.as_fd().as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: `attr` points at keys and values that live across the call,
    // `count` of each; the kernel reads them and writes back `count`.
    let ret = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_BATCH, &raw mut attr, std::mem::size_of::<BatchAttr>() as u32)
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    anyhow::ensure!(attr.count as usize == rows.len(), "the map took {} of {} rows", attr.count, rows.len());
    Ok(())
}
