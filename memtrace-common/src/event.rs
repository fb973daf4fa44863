//! The records of the `EVENTS` ring buffer: a common [`EventHeader`] followed
//! by one body struct per [`EventKind`], each with named fields. The eBPF side
//! reserves exactly a `Record<Body>` for the kind it sends; userspace reads the
//! header, then the body that header's kind names (see memtrace's `decode`).
//!
//! Every body is `#[repr(C)]`, made of `u64`s first and `u32`s in pairs, so no
//! struct has padding: the verifier rejects copies of uninitialised stack bytes
//! into the ring buffer, and userspace may read any byte pattern as a body.

/// What a ring-buffer record holds; `EventHeader::kind` carries it as a `u32`.
/// The values are the wire format: never renumber one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Mmap = 1,
    Munmap = 2,
    PageFault = 3,
    Exec = 4,
    RangeEnter = 5,
    RssStat = 6,
    FilemapFault = 7,
    FilemapMapPages = 8,
    PageCacheAdd = 9,
    PageCacheDelete = 10,
    Madvise = 11,
    Phase = 12,
    Mremap = 13,
    MmapFile = 14,
    HeapMark = 15,
    Brk = 16,
    Alloc = 17,
    Free = 18,
    MmapPath = 19,
    ProcessFork = 20,
    ProcessExit = 21,
    ProcessJoin = 22,
}

impl EventKind {
    /// The kind a header's `kind` field names, or None for a value this
    /// build does not know (counted as a malformed record, never trusted).
    pub const fn from_u32(kind: u32) -> Option<EventKind> {
        use EventKind::*;
        Some(match kind {
            1 => Mmap,
            2 => Munmap,
            3 => PageFault,
            4 => Exec,
            5 => RangeEnter,
            6 => RssStat,
            7 => FilemapFault,
            8 => FilemapMapPages,
            9 => PageCacheAdd,
            10 => PageCacheDelete,
            11 => Madvise,
            12 => Phase,
            13 => Mremap,
            14 => MmapFile,
            15 => HeapMark,
            16 => Brk,
            17 => Alloc,
            18 => Free,
            19 => MmapPath,
            20 => ProcessFork,
            21 => ProcessExit,
            22 => ProcessJoin,
            _ => return None,
        })
    }
}

/// The first 24 bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] as `u32` (a raw integer: userspace must not assume
    /// the kernel side only writes values it knows).
    pub kind: u32,
    /// Kernel thread id (userspace "TID") of the thread that caused the
    /// event; 0 for another task acting on a traced process (reclaim).
    pub tid: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// The traced process (thread group id, userspace "PID") the event
    /// belongs to: with a process tree traced, events are routed by it.
    pub pid: u32,
    pub _pad: u32,
}

/// One ring-buffer record: the header, then the body of `B::KIND`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<B> {
    pub header: EventHeader,
    pub body: B,
}

/// A record body.
///
/// # Safety
///
/// Implementors are `#[repr(C)]`, at most 8-byte aligned (the ring buffer's
/// alignment), made only of integers and integer arrays, with no padding:
/// every byte pattern of `size_of::<Self>()` bytes is a valid value.
pub unsafe trait EventBody: Copy + 'static {
    const KIND: EventKind;
}

macro_rules! bodies {
    ($($(#[$doc:meta])* $name:ident = $kind:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty),* $(,)? })*) => {$(
        $(#[$doc])*
        // No Default: every field, padding included, is set where it is sent.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }
        // SAFETY: the fields above are integers laid out without padding
        // (u64s first, u32s in pairs); checked by the size assertion below.
        unsafe impl EventBody for $name {
            const KIND: EventKind = EventKind::$kind;
        }
        const _: () = assert!(
            core::mem::size_of::<$name>() == 0 $(+ core::mem::size_of::<$ty>())*,
            concat!(stringify!($name), " has padding")
        );
    )*};
}

bodies! {
    /// A finished `mmap`.
    MmapEvent = Mmap {
        /// The mapped address, or -errno.
        result: i64,
        len: u64,
        prot: u64,
        flags: u64,
        /// The syscall's fd argument (-1 for anonymous mappings), as the kernel passed it.
        fd: i64,
        offset: u64,
        /// An anonymous mapping's creator: its user stack's key in STACKS
        /// (0: a file mapping, a failed call, or the stack was lost).
        stack_id: u64,
    }
    /// A finished `munmap`.
    MunmapEvent = Munmap {
        addr: u64,
        len: u64,
        result: i64,
    }
    /// A user-mode page fault.
    PageFaultEvent = PageFault {
        address: u64,
        ip: u64,
        /// The x86 page-fault error code.
        error_code: u64,
    }
    /// The target called `execve` successfully: its address space was replaced.
    ExecEvent = Exec {}
    /// `munmap`, `madvise` or `mremap` entered: the thread's RSS changes until
    /// the matching exit event (MunmapEvent, MadviseEvent, MremapEvent)
    /// belong to this range.
    RangeEnterEvent = RangeEnter {
        addr: u64,
        len: u64,
        /// madvise's behavior (0 for the others).
        behavior: u64,
        /// A [`RangeOp`] as `u32`.
        op: u32,
        _pad: u32,
    }
    /// `kmem:rss_stat` of the target's mm.
    RssStatEvent = RssStat {
        /// The counter's new value in bytes.
        bytes: u64,
        /// 0 file, 1 anon, 2 swap, 3 shmem (include/linux/mm_types_task.h).
        member: u32,
        /// 1 when the target's own thread changed it.
        curr: u32,
        mm_id: u32,
        _pad: u32,
    }
    /// `filemap:mm_filemap_fault`: the page cache was asked for a page on a fault.
    FilemapFaultEvent = FilemapFault {
        ino: u64,
        index: u64,
        /// The kernel's internal dev_t (major << 20 | minor).
        s_dev: u32,
        _pad: u32,
    }
    /// `filemap:mm_filemap_map_pages` (fault-around) mapped pages `first..=last`.
    FilemapMapPagesEvent = FilemapMapPages {
        ino: u64,
        first: u64,
        last: u64,
        s_dev: u32,
        _pad: u32,
    }
    /// `filemap:mm_filemap_add_to_page_cache` in the target's context (a read from disk).
    PageCacheAddEvent = PageCacheAdd {
        ino: u64,
        index: u64,
        s_dev: u32,
        /// Folio order: 1 << order pages.
        order: u32,
    }
    /// `filemap:mm_filemap_delete_from_page_cache` of a watched file (any
    /// context: reclaim runs elsewhere).
    PageCacheDeleteEvent = PageCacheDelete {
        ino: u64,
        index: u64,
        s_dev: u32,
        order: u32,
    }
    /// A finished `madvise`.
    MadviseEvent = Madvise {
        addr: u64,
        len: u64,
        behavior: u64,
        result: i64,
    }
    /// A phase boundary: `memtrace_phase_begin`/`_end`, or a `--phase-fn`
    /// function's entry or outermost return.
    PhaseEvent = Phase {
        /// With `name_at_pointer`: the name's address in the target.
        name_ptr: u64,
        /// The boundary's sequence number (1, 2, ...: the `phase_seq` that
        /// allocations made after it carry).
        seq: u32,
        /// The `--phase-fn` function's index (0: a marker, named by `name`).
        function: u32,
        /// 1 for a begin, 0 for an end.
        begin: u32,
        /// 1 when the name could not be read in the kernel (its page was not
        /// resident): `name_ptr` holds its address instead.
        name_at_pointer: u32,
        /// NUL-terminated (at most PHASE_NAME_MAX bytes including the NUL).
        name: [u8; crate::PHASE_NAME_MAX],
    }
    /// A finished `mremap`.
    MremapEvent = Mremap {
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        /// The new address, or -errno.
        result: i64,
    }
    /// The file behind a new mapping, read in the kernel from the task's fd
    /// table at `sys_exit_mmap`, just before its MmapEvent.
    MmapFileEvent = MmapFile {
        /// The mapped address.
        result: i64,
        ino: u64,
        s_dev: u32,
        /// 1 when the fd is a character device: its mmap handler may map a
        /// file of its own (`/dev/zero` maps a shmem file), which /proc names.
        char_device: u32,
    }
    /// The mapped file's path as the kernel knows it at `sys_exit_mmap`
    /// (just before its MmapFile event): the dentry names from the file up
    /// towards its filesystem's root, innermost first, one per slot
    /// (NUL-terminated). Relative to the filesystem, not to a mount: memtrace
    /// places it under the mount points /proc/PID/mountinfo lists for that
    /// device and checks the result with stat.
    MmapPathEvent = MmapPath {
        /// The mapped address.
        result: i64,
        /// Names captured.
        depth: u32,
        /// 1 when the walk reached the filesystem's root with every name whole.
        complete: u32,
        names: [[u8; crate::PATH_NAME_MAX]; crate::PATH_DEPTH_MAX],
    }
    /// The heap totals right after a phase boundary (same sequence number).
    HeapMarkEvent = HeapMark {
        /// The scope's (every traced process's).
        totals: crate::HeapTotals,
        /// The marking process's own.
        process: crate::HeapTotals,
        seq: u32,
        _pad: u32,
    }
    /// A traced process forked (or cloned without CLONE_THREAD) a child,
    /// which is traced from now on; sent by the parent (header `pid`).
    /// A running process of the traced cgroup (`--cgroup`) met for the
    /// first time (header `pid`): traced from this event on.
    ProcessJoinEvent = ProcessJoin {
        _pad: u64,
    }
    ProcessForkEvent = ProcessFork {
        child: u32,
        _pad: u32,
    }
    /// The last thread of a traced process exited (header `pid`): its heap
    /// totals at that moment; it is no longer traced.
    ProcessExitEvent = ProcessExit {
        totals: crate::HeapTotals,
    }
    /// A finished `brk`.
    BrkEvent = Brk {
        /// The program break after the call (the kernel returns the old
        /// break when it refuses).
        brk: u64,
    }
    /// `--events` only: an allocation recorded in the live map.
    AllocEvent = Alloc {
        address: u64,
        size: u64,
        stack_id: u64,
        phase_seq: u32,
        _pad: u32,
    }
    /// `--events` only: a free (or realloc's release) of a live allocation;
    /// of an unknown address: size 0, stack_id 0.
    FreeEvent = Free {
        address: u64,
        size: u64,
        stack_id: u64,
    }
}

/// What a RangeEnterEvent's range operation is. Values are the wire format.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOp {
    Munmap = 0,
    Madvise = 1,
    Mremap = 2,
    /// `brk` lowering the break (`addr` the break asked for, `len` 0).
    Brk = 3,
}
