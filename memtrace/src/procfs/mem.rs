//! Reading the target's memory (/proc/PID/mem).

/// A NUL-terminated string of at most `max` bytes at `addr` in the target
/// (/proc/PID/mem: the pages are faulted in as needed, unlike in eBPF).
pub fn read_c_string(pid: u32, addr: u64, max: usize) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; max];
    let n = mem.read_at(&mut buf, addr).ok()?;
    let end = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
    Some(crate::decode::printable(&buf[..end]))
}
