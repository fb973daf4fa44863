//! The file behind a new mapping, read in the kernel from the calling task's
//! fd table while mmap still holds the fd: a mapping moved or dropped before
//! userspace looks at /proc is still named by device and inode.
//!
//! (fexit on vm_mmap_pgoff would hand over the `struct file *` directly, but
//! BPF trampolines are refused on the machines memtrace is tested on.)
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    Global,
};
use memtrace_common::{event::MmapPathEvent, KernelOffsets, PATH_DEPTH_MAX, PATH_NAME_MAX};

/// Struct member offsets from the kernel's BTF, written by the loader; all
/// zero when BTF could not be read, which disables the lookup.
#[no_mangle]
pub(crate) static KERNEL_OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    task_files: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_f_inode: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    super_block_s_dev: 0,
    file_f_path_dentry: 0,
    dentry_d_parent: 0,
    dentry_d_name_name: 0,
    inode_i_mode: 0,
    task_pid: 0,
    task_tgid: 0,
    task_exit_signal: 0,
    task_utask: 0,
    utask_return_instances: 0,
    ri_stack: 0,
    ri_orig_ret_vaddr: 0,
    ri_next: 0,
    _pad: 0,
});

#[inline(always)]
pub(crate) unsafe fn field<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY (caller): base is a kernel pointer to a struct with this member;
    // bpf_probe_read_kernel fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize).cast::<T>()).ok() }
}

/// The `struct file` open as `fd` in the current task.
#[inline(always)]
pub fn file_of_fd(fd: u64) -> Option<*const u8> {
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
        field::<*const u8>(fd_array, (fd * 8) as u32)
    }
}

/// A file's identity: (s_dev, inode, whether it is a character device).
#[inline(always)]
pub fn identity(file: *const u8) -> Option<(u32, u64, bool)> {
    const S_IFMT: u16 = 0o170000;
    const S_IFCHR: u16 = 0o020000;
    let off = KERNEL_OFFSETS.load();
    // SAFETY: as above.
    unsafe {
        let inode = field::<*const u8>(file, off.file_f_inode)?;
        let ino = field::<u64>(inode, off.inode_i_ino)?;
        let sb = field::<*const u8>(inode, off.inode_i_sb)?;
        let dev = field::<u32>(sb, off.super_block_s_dev)?;
        let mode = field::<u16>(inode, off.inode_i_mode).unwrap_or(0);
        Some((dev, ino, mode & S_IFMT == S_IFCHR))
    }
}

/// Writes the file's dentry names, innermost first, into `event` (whose
/// `result` the caller sets); false when not even the file's own name
/// could be read.
#[inline(always)]
pub fn fill_path(file: *const u8, event: &mut MmapPathEvent) -> bool {
    let off = KERNEL_OFFSETS.load();
    event.depth = 0;
    event.complete = 0;
    if off.file_f_path_dentry == 0 {
        return false;
    }
    // SAFETY: as above; names are read with the bounded string helper.
    unsafe {
        let Some(mut dentry) = field::<*const u8>(file, off.file_f_path_dentry) else { return false };
        for i in 0..PATH_DEPTH_MAX {
            let Some(parent) = field::<*const u8>(dentry, off.dentry_d_parent) else { return i > 0 };
            if parent == dentry {
                // The filesystem's root (its own name, "/", is not a component).
                event.complete = 1;
                return i > 0;
            }
            let Some(name) = field::<*const u8>(dentry, off.dentry_d_name_name) else { return i > 0 };
            let Some(slot) = event.names.get_mut(i) else { return i > 0 };
            match bpf_probe_read_kernel_str_bytes(name, slot) {
                // A name that filled its slot may have been cut: the path is not whole.
                Ok(read) if read.len() < PATH_NAME_MAX - 1 => {}
                _ => return i > 0,
            }
            event.depth = i as u32 + 1;
            dentry = parent;
        }
        // Deeper than PATH_DEPTH_MAX: incomplete.
        true
    }
}
