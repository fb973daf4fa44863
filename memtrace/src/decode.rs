//! Decoding of the ring buffer's raw records into typed events.
use memtrace_common::{
    event::{self, EventBody, EventHeader, EventKind, RangeOp, Record},
    HeapTotals,
};

use crate::model::aspace::FileId;

/// x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
const PF_WRITE: u64 = 1 << 1;
const PF_INSTR: u64 = 1 << 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The program break after a `brk` call.
    Brk {
        ts_ns: u64,
        tid: u32,
        brk: u64,
    },
    /// `--events`: an allocation entered the live map.
    Alloc {
        ts_ns: u64,
        tid: u32,
        address: u64,
        size: u64,
        stack_id: u64,
        phase_seq: u32,
    },
    /// `--events`: a free; `size` 0 and `stack_id` 0 for an address never seen allocated.
    Free {
        ts_ns: u64,
        tid: u32,
        address: u64,
        size: u64,
        stack_id: u64,
    },
    Mmap {
        ts_ns: u64,
        tid: u32,
        /// Mapped address, or a negative errno when the call failed.
        result: i64,
        len: u64,
        prot: u64,
        flags: u64,
        fd: i32,
        offset: u64,
        /// An anonymous mapping's creator stack (key in STACKS; 0: none).
        stack_id: u64,
    },
    Munmap {
        ts_ns: u64,
        tid: u32,
        addr: u64,
        len: u64,
        result: i64,
    },
    PageFault {
        ts_ns: u64,
        tid: u32,
        address: u64,
        ip: u64,
        access: FaultAccess,
        /// Taken in kernel mode on a user address (the kernel copying into
        /// or out of the target's memory for it: read(), write(), ...).
        kernel_mode: bool,
    },
    Exec {
        ts_ns: u64,
        tid: u32,
    },
    /// A phase marker: `memtrace_phase_begin(name)` or `memtrace_phase_end(name)`.
    Phase {
        ts_ns: u64,
        tid: u32,
        begin: bool,
        name: String,
        /// The marker's sequence number: allocations made after it carry it.
        seq: u32,
        /// The `--phase-fn` function (1, 2, ...; 0: a marker function, named by `name`).
        function: u32,
        /// The kernel could not read the name (page not resident): its
        /// address in the target, to read from /proc/PID/mem.
        name_at: Option<u64>,
    },
    /// The allocator totals right after the phase marker `seq`: the
    /// scope's and the marking process's own.
    HeapMark {
        ts_ns: u64,
        tid: u32,
        seq: u32,
        totals: HeapTotals,
        process: HeapTotals,
    },
    /// munmap or madvise entered on [addr, addr + len).
    RangeEnter {
        ts_ns: u64,
        tid: u32,
        addr: u64,
        len: u64,
        op: RangeOp,
    },
    Madvise {
        ts_ns: u64,
        tid: u32,
        addr: u64,
        len: u64,
        behavior: u64,
        result: i64,
    },
    /// The kernel's identity of the file a new mapping maps (read from the
    /// task's fd table at sys_exit_mmap), sent just before its Mmap event.
    MmapFile {
        ts_ns: u64,
        tid: u32,
        result: i64,
        file: FileId,
        /// The fd is a character device (its mmap may map a file of its own).
        char_device: bool,
    },
    /// The mapped file's path within its filesystem, read in the kernel at
    /// sys_exit_mmap (sent just before its MmapFile event): "/a/b/name".
    MmapPath {
        ts_ns: u64,
        tid: u32,
        result: i64,
        path: String,
        /// Every component was read, up to the filesystem's root.
        complete: bool,
    },
    Mremap {
        ts_ns: u64,
        tid: u32,
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        /// New address, or a negative errno.
        result: i64,
    },
    /// A new value of one of the target's RSS counters (kernel truth).
    RssStat {
        ts_ns: u64,
        /// 0 when another task (reclaim) changed the target's counter.
        tid: u32,
        member: RssMember,
        bytes: u64,
    },
    /// The page cache was asked for page `index` of `file` on a fault.
    FilemapFault {
        ts_ns: u64,
        tid: u32,
        file: FileId,
        index: u64,
    },
    /// Fault-around mapped pages `first..=last` of `file` (those that were ready).
    FilemapMapPages {
        ts_ns: u64,
        tid: u32,
        file: FileId,
        first: u64,
        last: u64,
    },
    /// `pages` pages at `index` of `file` entered the page cache for the target (read from disk).
    PageCacheAdd {
        ts_ns: u64,
        tid: u32,
        file: FileId,
        index: u64,
        pages: u64,
    },
    /// `pages` pages at `index` of a file the target maps left the page cache.
    PageCacheDelete {
        ts_ns: u64,
        tid: u32,
        file: FileId,
        index: u64,
        pages: u64,
    },
    /// The process forked `child`, which is traced from its first instruction.
    ProcessFork {
        ts_ns: u64,
        tid: u32,
        child: u32,
    },
    /// A running process of the traced cgroup joined the scope.
    ProcessJoin {
        ts_ns: u64,
        tid: u32,
    },
    /// The process's last thread exited: its heap totals then.
    ProcessExit {
        ts_ns: u64,
        tid: u32,
        totals: HeapTotals,
    },
}

/// The traced process a record belongs to (its header's `pid`; 0 for an
/// eviction by another task of a file some traced process maps).
pub fn pid_of(bytes: &[u8]) -> Option<u32> {
    header(bytes).ok().map(|h| h.pid)
}

/// The kernel's mm counters (include/linux/mm_types_task.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RssMember {
    File,
    Anon,
    Swap,
    Shmem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAccess {
    Read,
    Write,
    Exec,
}

impl FaultAccess {
    pub fn from_error_code(code: u64) -> Self {
        if code & PF_INSTR != 0 {
            FaultAccess::Exec
        } else if code & PF_WRITE != 0 {
            FaultAccess::Write
        } else {
            FaultAccess::Read
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Size(usize),
    Kind(u32),
    /// A field out of its range (a path deeper than its slots).
    Field(&'static str),
}

/// An MmapPath event's names as a path within the filesystem,
/// outermost first; whether it is whole.
fn fs_path(e: &event::MmapPathEvent) -> Result<(String, bool), DecodeError> {
    let names = e.names.get(..e.depth as usize).ok_or(DecodeError::Field("MmapPath.depth"))?;
    let mut path = String::new();
    for name in names.iter().rev() {
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        path.push('/');
        path.push_str(&String::from_utf8_lossy(&name[..end]));
    }
    Ok((path, e.complete != 0 && !names.is_empty()))
}

fn file(s_dev: u32, ino: u64) -> FileId {
    FileId::from_kernel_dev(s_dev, ino)
}

/// Pages in a folio of this order (capped: a corrupt order must not overflow).
fn folio_pages(order: u32) -> u64 {
    1 << order.min(20)
}

/// The header every record starts with.
fn header(bytes: &[u8]) -> Result<EventHeader, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Size(bytes.len()));
    }
    // SAFETY: EventHeader is repr(C) integers without padding (any bytes are
    // a value); the length was checked, and read_unaligned copes with the
    // ring buffer's 8-byte alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

/// The body of a record whose header names `B`'s kind; a record shorter than
/// `Record<B>` is malformed (never read past its end).
fn body<B: EventBody>(bytes: &[u8]) -> Result<B, DecodeError> {
    if bytes.len() < size_of::<Record<B>>() {
        return Err(DecodeError::Size(bytes.len()));
    }
    // SAFETY: EventBody guarantees any bytes are a value of B (and the header
    // has no padding either); the length was checked, as above.
    let record: Record<B> = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    Ok(record.body)
}

impl Event {
    /// Decodes one ring-buffer record: the header's kind says which body
    /// follows. Unknown kinds and records too short for their kind are errors
    /// (the session counts them as malformed).
    ///
    /// Long on purpose: one arm per event kind, each a field-by-field copy
    /// from the wire body to the variant; kept in one match so the whole
    /// mapping from the wire to `Event` reads as one table.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let EventHeader { kind, tid, ts_ns, .. } = header(bytes)?;
        let kind = EventKind::from_u32(kind).ok_or(DecodeError::Kind(kind))?;
        Ok(match kind {
            EventKind::Mmap => {
                let e: event::MmapEvent = body(bytes)?;
                Event::Mmap {
                    ts_ns,
                    tid,
                    result: e.result,
                    len: e.len,
                    prot: e.prot,
                    flags: e.flags,
                    fd: e.fd as i32,
                    offset: e.offset,
                    stack_id: e.stack_id,
                }
            }
            EventKind::Munmap => {
                let e: event::MunmapEvent = body(bytes)?;
                Event::Munmap { ts_ns, tid, addr: e.addr, len: e.len, result: e.result }
            }
            EventKind::PageFault => {
                let e: event::PageFaultEvent = body(bytes)?;
                Event::PageFault {
                    ts_ns,
                    tid,
                    address: e.address,
                    ip: e.ip,
                    access: FaultAccess::from_error_code(e.error_code),
                    // x86 error code bit 2: the fault came from user mode.
                    kernel_mode: e.error_code & 4 == 0,
                }
            }
            EventKind::Exec => {
                let event::ExecEvent {} = body(bytes)?;
                Event::Exec { ts_ns, tid }
            }
            EventKind::Brk => {
                let e: event::BrkEvent = body(bytes)?;
                Event::Brk { ts_ns, tid, brk: e.brk }
            }
            EventKind::Alloc => {
                let e: event::AllocEvent = body(bytes)?;
                Event::Alloc {
                    ts_ns,
                    tid,
                    address: e.address,
                    size: e.size,
                    stack_id: e.stack_id,
                    phase_seq: e.phase_seq,
                }
            }
            EventKind::Free => {
                let e: event::FreeEvent = body(bytes)?;
                Event::Free { ts_ns, tid, address: e.address, size: e.size, stack_id: e.stack_id }
            }
            EventKind::Phase => {
                let e: event::PhaseEvent = body(bytes)?;
                let name_at = (e.name_at_pointer != 0).then_some(e.name_ptr);
                let name = if name_at.is_some() {
                    String::new()
                } else {
                    let len = e.name.iter().position(|&b| b == 0).unwrap_or(e.name.len());
                    printable(&e.name[..len])
                };
                Event::Phase { ts_ns, tid, begin: e.begin != 0, name, name_at, seq: e.seq, function: e.function }
            }
            EventKind::RangeEnter => {
                let e: event::RangeEnterEvent = body(bytes)?;
                let op = match e.op {
                    0 => RangeOp::Munmap,
                    1 => RangeOp::Madvise,
                    2 => RangeOp::Mremap,
                    3 => RangeOp::Brk,
                    _ => return Err(DecodeError::Kind(kind as u32)),
                };
                Event::RangeEnter { ts_ns, tid, addr: e.addr, len: e.len, op }
            }
            EventKind::HeapMark => {
                let e: event::HeapMarkEvent = body(bytes)?;
                Event::HeapMark { ts_ns, tid, seq: e.seq, totals: e.totals, process: e.process }
            }
            EventKind::Madvise => {
                let e: event::MadviseEvent = body(bytes)?;
                Event::Madvise { ts_ns, tid, addr: e.addr, len: e.len, behavior: e.behavior, result: e.result }
            }
            EventKind::MmapFile => {
                let e: event::MmapFileEvent = body(bytes)?;
                Event::MmapFile {
                    ts_ns,
                    tid,
                    result: e.result,
                    file: file(e.s_dev, e.ino),
                    char_device: e.char_device != 0,
                }
            }
            EventKind::MmapPath => {
                let e: event::MmapPathEvent = body(bytes)?;
                let (path, complete) = fs_path(&e)?;
                Event::MmapPath { ts_ns, tid, result: e.result, path, complete }
            }
            EventKind::Mremap => {
                let e: event::MremapEvent = body(bytes)?;
                Event::Mremap {
                    ts_ns,
                    tid,
                    old_addr: e.old_addr,
                    old_len: e.old_len,
                    new_len: e.new_len,
                    flags: e.flags,
                    result: e.result,
                }
            }
            EventKind::RssStat => {
                let e: event::RssStatEvent = body(bytes)?;
                let member = match e.member {
                    0 => RssMember::File,
                    1 => RssMember::Anon,
                    2 => RssMember::Swap,
                    3 => RssMember::Shmem,
                    _ => return Err(DecodeError::Kind(kind as u32)),
                };
                Event::RssStat { ts_ns, tid, member, bytes: e.bytes }
            }
            EventKind::FilemapFault => {
                let e: event::FilemapFaultEvent = body(bytes)?;
                Event::FilemapFault { ts_ns, tid, file: file(e.s_dev, e.ino), index: e.index }
            }
            EventKind::FilemapMapPages => {
                let e: event::FilemapMapPagesEvent = body(bytes)?;
                Event::FilemapMapPages { ts_ns, tid, file: file(e.s_dev, e.ino), first: e.first, last: e.last }
            }
            EventKind::PageCacheAdd => {
                let e: event::PageCacheAddEvent = body(bytes)?;
                Event::PageCacheAdd {
                    ts_ns,
                    tid,
                    file: file(e.s_dev, e.ino),
                    index: e.index,
                    pages: folio_pages(e.order),
                }
            }
            EventKind::ProcessFork => {
                let e: event::ProcessForkEvent = body(bytes)?;
                Event::ProcessFork { ts_ns, tid, child: e.child }
            }
            EventKind::ProcessJoin => {
                let _: event::ProcessJoinEvent = body(bytes)?;
                Event::ProcessJoin { ts_ns, tid }
            }
            EventKind::ProcessExit => {
                let e: event::ProcessExitEvent = body(bytes)?;
                Event::ProcessExit { ts_ns, tid, totals: e.totals }
            }
            EventKind::PageCacheDelete => {
                let e: event::PageCacheDeleteEvent = body(bytes)?;
                Event::PageCacheDelete {
                    ts_ns,
                    tid,
                    file: file(e.s_dev, e.ino),
                    index: e.index,
                    pages: folio_pages(e.order),
                }
            }
        })
    }
}

/// A name the target wrote (a phase name read from its memory), as text
/// that is safe to print: invalid UTF-8 replaced, control characters
/// (a terminal's escape sequences, newlines) written as `\u{..}` escapes,
/// so a hostile target cannot drive the terminal of the root who reads
/// the report or break its lines.
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .flat_map(|c| if c.is_control() { c.escape_unicode().collect::<Vec<_>>() } else { vec![c] })
        .collect()
}

#[cfg(test)]
mod tests {
    use memtrace_common::{event::*, PHASE_NAME_MAX};

    use super::*;

    /// The bytes of a whole record: header (tid 7 of process 5, at 99 ns) and body.
    fn bytes<B: EventBody>(body: B) -> Vec<u8> {
        let r = Record { header: EventHeader { kind: B::KIND as u32, tid: 7, ts_ns: 99, pid: 5, _pad: 0 }, body };
        let p = (&r as *const Record<B>).cast::<u8>();
        // SAFETY: Record<B> has no padding (EventBody's contract): all bytes are initialised.
        unsafe { std::slice::from_raw_parts(p, size_of::<Record<B>>()) }.to_vec()
    }

    fn phase(begin: u32, seq: u32, function: u32, name: &[u8]) -> PhaseEvent {
        let mut e = PhaseEvent { name_ptr: 0, seq, function, begin, name_at_pointer: 0, name: [0; PHASE_NAME_MAX] };
        e.name[..name.len()].copy_from_slice(name);
        e
    }

    #[test]
    fn decodes_a_failed_mmap_with_negative_errno_and_fd() {
        let r = MmapEvent { result: -12, len: 4096, prot: 3, flags: 0x22, fd: -1, offset: 0, stack_id: 0 };
        assert_eq!(
            Event::decode(&bytes(r)).unwrap(),
            Event::Mmap {
                ts_ns: 99,
                tid: 7,
                result: -12,
                len: 4096,
                prot: 3,
                flags: 0x22,
                fd: -1,
                offset: 0,
                stack_id: 0
            }
        );
    }

    #[test]
    fn process_events_decode_and_every_record_names_its_process() {
        let fork = bytes(ProcessForkEvent { child: 4243, _pad: 0 });
        assert_eq!(pid_of(&fork), Some(5));
        assert_eq!(Event::decode(&fork).unwrap(), Event::ProcessFork { ts_ns: 99, tid: 7, child: 4243 });
        let totals = HeapTotals { allocs: 3, frees: 1, ..Default::default() };
        assert_eq!(
            Event::decode(&bytes(ProcessExitEvent { totals })).unwrap(),
            Event::ProcessExit { ts_ns: 99, tid: 7, totals }
        );
        assert_eq!(pid_of(&[0; 8]), None, "too short for a header");
    }

    #[test]
    fn decodes_munmap_and_exec() {
        let r = MunmapEvent { addr: 0x7000, len: 8192, result: 0 };
        assert_eq!(
            Event::decode(&bytes(r)).unwrap(),
            Event::Munmap { ts_ns: 99, tid: 7, addr: 0x7000, len: 8192, result: 0 }
        );
        assert_eq!(Event::decode(&bytes(ExecEvent {})).unwrap(), Event::Exec { ts_ns: 99, tid: 7 });
    }

    #[test]
    fn decodes_brk_and_the_allocation_stream() {
        let r = BrkEvent { brk: 0x5555_6000 };
        assert_eq!(Event::decode(&bytes(r)).unwrap(), Event::Brk { ts_ns: 99, tid: 7, brk: 0x5555_6000 });
        let r = AllocEvent { address: 0x1000, size: 64, stack_id: 0xabc, phase_seq: 3, _pad: 0 };
        assert_eq!(
            Event::decode(&bytes(r)).unwrap(),
            Event::Alloc { ts_ns: 99, tid: 7, address: 0x1000, size: 64, stack_id: 0xabc, phase_seq: 3 }
        );
        let r = FreeEvent { address: 0x1000, size: 0, stack_id: 0 };
        assert_eq!(
            Event::decode(&bytes(r)).unwrap(),
            Event::Free { ts_ns: 99, tid: 7, address: 0x1000, size: 0, stack_id: 0 }
        );
    }

    #[test]
    fn fault_access_follows_x86_error_code_bits() {
        assert_eq!(FaultAccess::from_error_code(0x4), FaultAccess::Read); // user read, not present
        assert_eq!(FaultAccess::from_error_code(0x6), FaultAccess::Write);
        assert_eq!(FaultAccess::from_error_code(0x7), FaultAccess::Write); // protection (COW)
        assert_eq!(FaultAccess::from_error_code(0x14), FaultAccess::Exec);
        let r = PageFaultEvent { address: 0xdead000, ip: 0x401000, error_code: 0x6 };
        assert!(matches!(
            Event::decode(&bytes(r)).unwrap(),
            Event::PageFault { address: 0xdead000, ip: 0x401000, access: FaultAccess::Write, .. }
        ));
    }

    #[test]
    fn decodes_page_cache_events_with_kernel_dev_and_folio_order() {
        let r = PageCacheAddEvent { ino: 42, index: 100, s_dev: (254 << 20) | 3, order: 4 };
        assert_eq!(
            Event::decode(&bytes(r)).unwrap(),
            Event::PageCacheAdd {
                ts_ns: 99,
                tid: 7,
                file: FileId { major: 254, minor: 3, inode: 42 },
                index: 100,
                pages: 16
            }
        );
        let r = RssStatEvent { bytes: 8192, member: 1, curr: 1, mm_id: 5, _pad: 0 };
        assert!(matches!(
            Event::decode(&bytes(r)).unwrap(),
            Event::RssStat { member: RssMember::Anon, bytes: 8192, .. }
        ));
    }

    #[test]
    fn decodes_range_and_filemap_events() {
        let r = RangeEnterEvent { addr: 0x7000, len: 4096, behavior: 0, op: RangeOp::Munmap as u32, _pad: 0 };
        assert_eq!(
            Event::decode(&bytes(r)).unwrap(),
            Event::RangeEnter { ts_ns: 99, tid: 7, addr: 0x7000, len: 4096, op: RangeOp::Munmap }
        );
        let r = RangeEnterEvent { addr: 0x7000, len: 4096, behavior: 4, op: RangeOp::Madvise as u32, _pad: 0 };
        assert!(matches!(Event::decode(&bytes(r)).unwrap(), Event::RangeEnter { op: RangeOp::Madvise, .. }));
        let file = FileId { major: 254, minor: 1, inode: 9 };
        let r = FilemapMapPagesEvent { ino: 9, first: 16, last: 31, s_dev: (254 << 20) | 1, _pad: 0 };
        assert_eq!(
            Event::decode(&bytes(r)).unwrap(),
            Event::FilemapMapPages { ts_ns: 99, tid: 7, file, first: 16, last: 31 }
        );
        let r = MmapFileEvent { result: 0x7f00_0000, ino: 9, s_dev: (254 << 20) | 1, char_device: 0 };
        assert_eq!(
            Event::decode(&bytes(r)).unwrap(),
            Event::MmapFile { ts_ns: 99, tid: 7, result: 0x7f00_0000, file, char_device: false }
        );
    }

    #[test]
    fn a_path_is_its_names_outermost_first_and_incomplete_without_the_root() {
        let mut names = [[0u8; memtrace_common::PATH_NAME_MAX]; memtrace_common::PATH_DEPTH_MAX];
        for (slot, name) in names.iter_mut().zip(["index.faiss", "data", "srv"]) {
            slot[..name.len()].copy_from_slice(name.as_bytes());
        }
        let r = MmapPathEvent { result: 0x7f00_0000, depth: 3, complete: 1, names };
        assert_eq!(
            Event::decode(&bytes(r)).unwrap(),
            Event::MmapPath {
                ts_ns: 99,
                tid: 7,
                result: 0x7f00_0000,
                path: "/srv/data/index.faiss".into(),
                complete: true
            }
        );
        let r = MmapPathEvent { result: 0x7f00_0000, depth: 2, complete: 0, names };
        assert!(matches!(Event::decode(&bytes(r)).unwrap(), Event::MmapPath { complete: false, .. }));
        // A depth past the slots is malformed, not trusted.
        let r = MmapPathEvent { result: 0x7f00_0000, depth: 99, complete: 1, names };
        assert!(Event::decode(&bytes(r)).is_err());
    }

    #[test]
    fn names_from_the_target_print_safely() {
        assert_eq!(printable(b"search"), "search");
        assert_eq!(printable(b"a\x1b[2Jb\nc"), "a\\u{1b}[2Jb\\u{a}c");
        assert_eq!(printable(&[0x66, 0xff, 0x6f]), "f\u{fffd}o");
    }

    #[test]
    fn decodes_phase_names_up_to_their_nul() {
        assert_eq!(
            Event::decode(&bytes(phase(1, 5, 0, b"search\0x"))).unwrap(),
            Event::Phase { ts_ns: 99, tid: 7, begin: true, name: "search".into(), seq: 5, function: 0, name_at: None }
        );
        // A --phase-fn boundary: named by the function's index.
        assert_eq!(
            Event::decode(&bytes(phase(0, 7, 2, b""))).unwrap(),
            Event::Phase { ts_ns: 99, tid: 7, begin: false, name: String::new(), seq: 7, function: 2, name_at: None }
        );
        // A name the kernel could not read: its address instead.
        let mut at = phase(1, 3, 0, b"");
        (at.name_at_pointer, at.name_ptr) = (1, 0x5555_0000);
        assert_eq!(
            Event::decode(&bytes(at)).unwrap(),
            Event::Phase {
                ts_ns: 99,
                tid: 7,
                begin: true,
                name: String::new(),
                seq: 3,
                function: 0,
                name_at: Some(0x5555_0000)
            }
        );
        let totals = HeapTotals {
            allocated_bytes: 100,
            freed_bytes: 40,
            allocs: 3,
            frees: 2,
            unknown_frees: 1,
            ..Default::default()
        };
        let process = HeapTotals { allocs: 2, ..totals };
        let r = HeapMarkEvent { totals, process, seq: 5, _pad: 0 };
        assert_eq!(Event::decode(&bytes(r)).unwrap(), Event::HeapMark { ts_ns: 99, tid: 7, seq: 5, totals, process });
    }

    #[test]
    fn rejects_short_records_and_unknown_kinds() {
        assert_eq!(Event::decode(&[0u8; 10]), Err(DecodeError::Size(10)));
        let mut unknown = bytes(ExecEvent {});
        unknown[..4].copy_from_slice(&77u32.to_le_bytes());
        assert_eq!(Event::decode(&unknown), Err(DecodeError::Kind(77)));
        // A header that names a kind whose body is cut short.
        let mmap = bytes(MmapEvent { result: 0, len: 1, prot: 0, flags: 0, fd: 3, offset: 0, stack_id: 0 });
        assert_eq!(Event::decode(&mmap[..40]), Err(DecodeError::Size(40)));
        // An RSS member the kernel does not have.
        let r = RssStatEvent { bytes: 1, member: 9, curr: 1, mm_id: 5, _pad: 0 };
        assert_eq!(Event::decode(&bytes(r)), Err(DecodeError::Kind(EventKind::RssStat as u32)));
    }
}
