//! The file behind a new mapping, read in the kernel from the calling task's
//! fd table while mmap still holds the fd: a mapping moved or dropped before
//! userspace looks at /proc is still named by device and inode.
//!
//! (fexit on vm_mmap_pgoff would hand over the `struct file *` directly, but
//! BPF trampolines are refused on the machines memtrace is tested on.)
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    Global,
};
use memtrace_common::KernelOffsets;

/// Struct member offsets from the kernel's BTF, written by the loader; all
/// zero when BTF could not be read, which disables the lookup.
#[no_mangle]
static KERNEL_OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    task_files: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_f_inode: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    super_block_s_dev: 0,
});

#[inline(always)]
unsafe fn field<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY (caller): base is a kernel pointer to a struct with this member;
    // bpf_probe_read_kernel fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize).cast::<T>()).ok() }
}

/// (s_dev, inode) of the file open as `fd` in the current task.
#[inline(always)]
pub fn file_of_fd(fd: u64) -> Option<(u32, u64)> {
    let off = KERNEL_OFFSETS.load();
    if off.task_files == 0 {
        return None;
    }
    // SAFETY: offsets come from this kernel's BTF; every read is a probe read.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let files = field::<*const u8>(task, off.task_files)?;
        let fdt = field::<*const u8>(files, off.files_fdt)?;
        let max_fds = field::<u32>(fdt, off.fdtable_max_fds)?;
        if fd >= max_fds as u64 {
            return None;
        }
        let fd_array = field::<*const u8>(fdt, off.fdtable_fd)?;
        let file = field::<*const u8>(fd_array, (fd * 8) as u32)?;
        let inode = field::<*const u8>(file, off.file_f_inode)?;
        let ino = field::<u64>(inode, off.inode_i_ino)?;
        let sb = field::<*const u8>(inode, off.inode_i_sb)?;
        let dev = field::<u32>(sb, off.super_block_s_dev)?;
        Some((dev, ino))
    }
}
