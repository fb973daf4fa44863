//! Finding (or mounting) tracefs and reading tracepoint field offsets from
//! its `format` files: Rust eBPF has no CO-RE, so offsets are read at run time.
use std::{
    collections::HashMap,
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use memtrace_common::TracepointOffsets;

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Returns the tracefs mount point, mounting it at /sys/kernel/tracing when
/// nothing is mounted (it is not mounted by default on some distributions).
pub fn ensure_mounted() -> Result<PathBuf> {
    if let Some(found) = CANDIDATES.iter().map(Path::new).find(|p| p.join("events").is_dir()) {
        return Ok(found.to_path_buf());
    }
    let target = Path::new(CANDIDATES[0]);
    let c = |s: &str| CString::new(s).unwrap();
    // SAFETY: plain mount(2) with NUL-terminated strings.
    let rc = unsafe {
        libc::mount(c("tracefs").as_ptr(), c(CANDIDATES[0]).as_ptr(), c("tracefs").as_ptr(), 0, std::ptr::null())
    };
    if rc != 0 || !target.join("events").is_dir() {
        bail!(
            "tracefs is not mounted and mounting it failed ({}): run `mount -t tracefs tracefs /sys/kernel/tracing` (the kernel needs CONFIG_TRACING)",
            std::io::Error::last_os_error()
        );
    }
    Ok(target.to_path_buf())
}

/// Field name -> (offset, size) of one tracepoint format file.
pub fn parse_format(text: &str) -> HashMap<String, (u32, u32)> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let mut decl = None;
        let (mut offset, mut size) = (None, None);
        for part in line.split(';').map(str::trim) {
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d);
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.parse().ok();
            } else if let Some(s) = part.strip_prefix("size:") {
                size = s.parse().ok();
            }
        }
        if let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) {
            // "unsigned long address" or "char comm[16]": the name is the last word.
            let name = decl.rsplit([' ', '*']).next().unwrap_or(decl);
            let name = name.split('[').next().unwrap_or(name);
            fields.insert(name.to_string(), (offset, size));
        }
    }
    fields
}

struct Formats<'a> {
    root: &'a Path,
}

impl Formats<'_> {
    /// Offset of an 8-byte field.
    fn u64_field(&self, event: &str, field: &str) -> Result<u32> {
        self.field(event, field, 8)
    }

    /// Offset of a field the programs read as `size` bytes.
    fn field(&self, event: &str, field: &str, expected: u32) -> Result<u32> {
        let path = self.root.join("events").join(event).join("format");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("cannot read tracepoint format {} (does this kernel have the {event} tracepoint?)", path.display())
        })?;
        let (offset, size) = *parse_format(&text)
            .get(field)
            .ok_or_else(|| anyhow!("tracepoint {event} has no field `{field}` on this kernel"))?;
        if size != expected {
            bail!("tracepoint {event} field `{field}` is {size} bytes on this kernel; memtrace expects {expected}");
        }
        Ok(offset)
    }
}

pub fn read_offsets(root: &Path) -> Result<TracepointOffsets> {
    let f = Formats { root };
    // The programs share one set of offsets between tracepoints with the same
    // layout; check that the kernel agrees rather than assume it.
    for (a, b, field) in [
        ("filemap/mm_filemap_fault", "filemap/mm_filemap_map_pages", "i_ino"),
        ("filemap/mm_filemap_fault", "filemap/mm_filemap_map_pages", "s_dev"),
        ("filemap/mm_filemap_fault", "filemap/mm_filemap_map_pages", "index"),
        ("filemap/mm_filemap_add_to_page_cache", "filemap/mm_filemap_delete_from_page_cache", "i_ino"),
        ("filemap/mm_filemap_add_to_page_cache", "filemap/mm_filemap_delete_from_page_cache", "index"),
        ("filemap/mm_filemap_add_to_page_cache", "filemap/mm_filemap_delete_from_page_cache", "s_dev"),
        ("filemap/mm_filemap_add_to_page_cache", "filemap/mm_filemap_delete_from_page_cache", "order"),
        ("syscalls/sys_exit_mmap", "syscalls/sys_exit_munmap", "ret"),
        ("syscalls/sys_exit_mmap", "syscalls/sys_exit_madvise", "ret"),
        ("syscalls/sys_exit_mmap", "syscalls/sys_exit_mremap", "ret"),
        ("syscalls/sys_exit_mmap", "syscalls/sys_exit_brk", "ret"),
        ("exceptions/page_fault_user", "exceptions/page_fault_kernel", "address"),
        ("exceptions/page_fault_user", "exceptions/page_fault_kernel", "ip"),
        ("exceptions/page_fault_user", "exceptions/page_fault_kernel", "error_code"),
    ] {
        let size = if field == "s_dev" {
            4
        } else if field == "order" {
            1
        } else {
            8
        };
        if f.field(a, field, size)? != f.field(b, field, size)? {
            bail!("tracepoints {a} and {b} lay out `{field}` differently on this kernel; memtrace cannot trace it");
        }
    }
    Ok(TracepointOffsets {
        fault_address: f.u64_field("exceptions/page_fault_user", "address")?,
        fault_ip: f.u64_field("exceptions/page_fault_user", "ip")?,
        fault_error_code: f.u64_field("exceptions/page_fault_user", "error_code")?,
        mmap_addr: f.u64_field("syscalls/sys_enter_mmap", "addr")?,
        mmap_len: f.u64_field("syscalls/sys_enter_mmap", "len")?,
        mmap_prot: f.u64_field("syscalls/sys_enter_mmap", "prot")?,
        mmap_flags: f.u64_field("syscalls/sys_enter_mmap", "flags")?,
        mmap_fd: f.u64_field("syscalls/sys_enter_mmap", "fd")?,
        mmap_off: f.u64_field("syscalls/sys_enter_mmap", "off")?,
        munmap_addr: f.u64_field("syscalls/sys_enter_munmap", "addr")?,
        munmap_len: f.u64_field("syscalls/sys_enter_munmap", "len")?,
        madvise_start: f.u64_field("syscalls/sys_enter_madvise", "start")?,
        madvise_len: f.u64_field("syscalls/sys_enter_madvise", "len_in")?,
        madvise_behavior: f.u64_field("syscalls/sys_enter_madvise", "behavior")?,
        mremap_addr: f.u64_field("syscalls/sys_enter_mremap", "addr")?,
        mremap_old_len: f.u64_field("syscalls/sys_enter_mremap", "old_len")?,
        mremap_new_len: f.u64_field("syscalls/sys_enter_mremap", "new_len")?,
        mremap_flags: f.u64_field("syscalls/sys_enter_mremap", "flags")?,
        exit_ret: f.u64_field("syscalls/sys_exit_mmap", "ret")?,
        rss_mm_id: f.field("kmem/rss_stat", "mm_id", 4)?,
        rss_curr: f.field("kmem/rss_stat", "curr", 4)?,
        rss_member: f.field("kmem/rss_stat", "member", 4)?,
        rss_size: f.field("kmem/rss_stat", "size", 8)?,
        fault_ino: f.field("filemap/mm_filemap_fault", "i_ino", 8)?,
        fault_dev: f.field("filemap/mm_filemap_fault", "s_dev", 4)?,
        fault_index: f.field("filemap/mm_filemap_fault", "index", 8)?,
        map_pages_last: f.field("filemap/mm_filemap_map_pages", "last_index", 8)?,
        cache_ino: f.field("filemap/mm_filemap_add_to_page_cache", "i_ino", 8)?,
        cache_index: f.field("filemap/mm_filemap_add_to_page_cache", "index", 8)?,
        cache_dev: f.field("filemap/mm_filemap_add_to_page_cache", "s_dev", 4)?,
        cache_order: f.field("filemap/mm_filemap_add_to_page_cache", "order", 1)?,
        exit_group_dead: f.field("sched/sched_process_exit", "group_dead", 1).unwrap_or(0),
        brk_arg: f.u64_field("syscalls/sys_enter_brk", "brk")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE_FAULT_USER: &str = "name: page_fault_user
ID: 123
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:unsigned long address;\toffset:8;\tsize:8;\tsigned:0;
\tfield:unsigned long ip;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long error_code;\toffset:24;\tsize:8;\tsigned:0;

print fmt: \"address=%ps\"
";

    #[test]
    fn parses_offsets_and_sizes() {
        let f = parse_format(PAGE_FAULT_USER);
        assert_eq!(f["address"], (8, 8));
        assert_eq!(f["error_code"], (24, 8));
        assert_eq!(f["common_pid"], (4, 4));
    }

    #[test]
    fn array_and_pointer_fields_are_named_without_decoration() {
        let f = parse_format("\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:const char *name;\toffset:24;\tsize:8;\tsigned:0;");
        assert_eq!(f["comm"], (8, 16));
        assert_eq!(f["name"], (24, 8));
    }
}
