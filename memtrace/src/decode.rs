//! Decoding of the ring buffer's raw records into typed events.
use memtrace_common::{
    RawEvent, EVENT_ALLOC, EVENT_BRK, EVENT_EXEC, EVENT_FILEMAP_FAULT, EVENT_FILEMAP_MAP_PAGES, EVENT_FREE,
    EVENT_HEAP_MARK, EVENT_MADVISE, EVENT_MMAP, EVENT_MMAP_FILE, EVENT_MREMAP, EVENT_MUNMAP, EVENT_PAGE_CACHE_ADD,
    EVENT_PAGE_CACHE_DELETE, EVENT_PAGE_FAULT, EVENT_PHASE, EVENT_RANGE_ENTER, EVENT_RSS_STAT, PHASE_NAME_AT_POINTER,
    RANGE_OP_MUNMAP,
};

use crate::model::aspace::FileId;

/// Allocator totals at one instant, as the eBPF side keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapCounts {
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub allocs: u64,
    pub frees: u64,
    pub unknown_frees: u64,
}

impl HeapCounts {
    /// Live heap bytes (allocator view): allocated minus known frees.
    pub fn live_bytes(&self) -> i64 {
        self.allocated_bytes as i64 - self.freed_bytes as i64
    }
}

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
    /// The allocator totals right after the phase marker `seq`.
    HeapMark {
        ts_ns: u64,
        tid: u32,
        seq: u32,
        totals: HeapCounts,
    },
    /// munmap or madvise entered on [addr, addr + len).
    RangeEnter {
        ts_ns: u64,
        tid: u32,
        addr: u64,
        len: u64,
        munmap: bool,
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
}

fn file(s_dev: u64, ino: u64) -> FileId {
    FileId::from_kernel_dev(s_dev as u32, ino)
}

impl Event {
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        if bytes.len() < size_of::<RawEvent>() {
            return Err(DecodeError::Size(bytes.len()));
        }
        // SAFETY: RawEvent is repr(C) plain integers; the length was checked
        // and read_unaligned copes with the ring buffer's 8-byte alignment.
        let raw: RawEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Self::from_raw(&raw)
    }

    pub fn from_raw(raw: &RawEvent) -> Result<Event, DecodeError> {
        let (ts_ns, tid, a) = (raw.ts_ns, raw.tid, raw.args);
        Ok(match raw.kind {
            EVENT_MMAP => Event::Mmap {
                ts_ns,
                tid,
                result: a[0] as i64,
                len: a[1],
                prot: a[2],
                flags: a[3],
                fd: a[4] as i64 as i32,
                offset: a[5],
            },
            EVENT_MUNMAP => Event::Munmap { ts_ns, tid, addr: a[0], len: a[1], result: a[2] as i64 },
            EVENT_PAGE_FAULT => {
                Event::PageFault { ts_ns, tid, address: a[0], ip: a[1], access: FaultAccess::from_error_code(a[2]) }
            }
            EVENT_EXEC => Event::Exec { ts_ns, tid },
            EVENT_BRK => Event::Brk { ts_ns, tid, brk: a[0] },
            EVENT_ALLOC => {
                Event::Alloc { ts_ns, tid, address: a[0], size: a[1], stack_id: a[2], phase_seq: a[3] as u32 }
            }
            EVENT_FREE => Event::Free { ts_ns, tid, address: a[0], size: a[1], stack_id: a[2] },
            EVENT_PHASE => {
                let bytes: Vec<u8> = a[1..].iter().flat_map(|w| w.to_le_bytes()).collect();
                let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                let name = String::from_utf8_lossy(&bytes[..len]).into_owned();
                let (begin, seq, function) = (a[0] & 1 == 1, (a[0] >> 1) as u32, (a[0] >> 40) as u32);
                let name_at = (a[0] & PHASE_NAME_AT_POINTER != 0).then_some(a[1]);
                let name = if name_at.is_some() { String::new() } else { name };
                Event::Phase { ts_ns, tid, begin, name, name_at, seq, function }
            }
            EVENT_RANGE_ENTER => {
                Event::RangeEnter { ts_ns, tid, addr: a[0], len: a[1], munmap: a[2] == RANGE_OP_MUNMAP }
            }
            EVENT_HEAP_MARK => Event::HeapMark {
                ts_ns,
                tid,
                seq: a[5] as u32,
                totals: HeapCounts {
                    allocated_bytes: a[0],
                    freed_bytes: a[1],
                    allocs: a[2],
                    frees: a[3],
                    unknown_frees: a[4],
                },
            },
            EVENT_MADVISE => Event::Madvise { ts_ns, tid, addr: a[0], len: a[1], behavior: a[2], result: a[3] as i64 },
            EVENT_MMAP_FILE => Event::MmapFile { ts_ns, tid, result: a[0] as i64, file: file(a[1], a[2]) },
            EVENT_MREMAP => Event::Mremap {
                ts_ns,
                tid,
                old_addr: a[0],
                old_len: a[1],
                new_len: a[2],
                flags: a[3],
                result: a[4] as i64,
            },
            EVENT_RSS_STAT => Event::RssStat {
                ts_ns,
                tid,
                member: match a[0] {
                    0 => RssMember::File,
                    1 => RssMember::Anon,
                    2 => RssMember::Swap,
                    3 => RssMember::Shmem,
                    _ => return Err(DecodeError::Kind(raw.kind)),
                },
                bytes: a[1],
            },
            EVENT_FILEMAP_FAULT => Event::FilemapFault { ts_ns, tid, file: file(a[0], a[1]), index: a[2] },
            EVENT_FILEMAP_MAP_PAGES => {
                Event::FilemapMapPages { ts_ns, tid, file: file(a[0], a[1]), first: a[2], last: a[3] }
            }
            EVENT_PAGE_CACHE_ADD => {
                Event::PageCacheAdd { ts_ns, tid, file: file(a[0], a[1]), index: a[2], pages: 1 << a[3].min(20) }
            }
            EVENT_PAGE_CACHE_DELETE => {
                Event::PageCacheDelete { ts_ns, tid, file: file(a[0], a[1]), index: a[2], pages: 1 << a[3].min(20) }
            }
            other => return Err(DecodeError::Kind(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u32, args: [u64; 6]) -> RawEvent {
        RawEvent { kind, tid: 7, ts_ns: 99, args }
    }

    fn bytes(r: &RawEvent) -> Vec<u8> {
        let p = (r as *const RawEvent).cast::<u8>();
        unsafe { std::slice::from_raw_parts(p, size_of::<RawEvent>()) }.to_vec()
    }

    #[test]
    fn decodes_a_failed_mmap_with_negative_errno_and_fd() {
        let r = raw(EVENT_MMAP, [(-12i64) as u64, 4096, 3, 0x22, u64::MAX, 0]);
        assert_eq!(
            Event::decode(&bytes(&r)).unwrap(),
            Event::Mmap { ts_ns: 99, tid: 7, result: -12, len: 4096, prot: 3, flags: 0x22, fd: -1, offset: 0 }
        );
    }

    #[test]
    fn decodes_munmap_and_exec() {
        let r = raw(EVENT_MUNMAP, [0x7000, 8192, 0, 0, 0, 0]);
        assert_eq!(
            Event::decode(&bytes(&r)).unwrap(),
            Event::Munmap { ts_ns: 99, tid: 7, addr: 0x7000, len: 8192, result: 0 }
        );
        assert_eq!(Event::decode(&bytes(&raw(EVENT_EXEC, [0; 6]))).unwrap(), Event::Exec { ts_ns: 99, tid: 7 });
    }

    #[test]
    fn decodes_brk_and_the_allocation_stream() {
        let r = raw(EVENT_BRK, [0x5555_6000, 0, 0, 0, 0, 0]);
        assert_eq!(Event::decode(&bytes(&r)).unwrap(), Event::Brk { ts_ns: 99, tid: 7, brk: 0x5555_6000 });
        let r = raw(EVENT_ALLOC, [0x1000, 64, 0xabc, 3, 0, 0]);
        assert_eq!(
            Event::decode(&bytes(&r)).unwrap(),
            Event::Alloc { ts_ns: 99, tid: 7, address: 0x1000, size: 64, stack_id: 0xabc, phase_seq: 3 }
        );
        let r = raw(EVENT_FREE, [0x1000, 0, 0, 0, 0, 0]);
        assert_eq!(
            Event::decode(&bytes(&r)).unwrap(),
            Event::Free { ts_ns: 99, tid: 7, address: 0x1000, size: 0, stack_id: 0 }
        );
    }

    #[test]
    fn fault_access_follows_x86_error_code_bits() {
        assert_eq!(FaultAccess::from_error_code(0x4), FaultAccess::Read); // user read, not present
        assert_eq!(FaultAccess::from_error_code(0x6), FaultAccess::Write);
        assert_eq!(FaultAccess::from_error_code(0x7), FaultAccess::Write); // protection (COW)
        assert_eq!(FaultAccess::from_error_code(0x14), FaultAccess::Exec);
        let r = raw(EVENT_PAGE_FAULT, [0xdead000, 0x401000, 0x6, 0, 0, 0]);
        assert!(matches!(
            Event::decode(&bytes(&r)).unwrap(),
            Event::PageFault { address: 0xdead000, ip: 0x401000, access: FaultAccess::Write, .. }
        ));
    }

    #[test]
    fn decodes_page_cache_events_with_kernel_dev_and_folio_order() {
        let r = raw(EVENT_PAGE_CACHE_ADD, [(254 << 20) | 3, 42, 100, 4, 0, 0]);
        assert_eq!(
            Event::decode(&bytes(&r)).unwrap(),
            Event::PageCacheAdd {
                ts_ns: 99,
                tid: 7,
                file: FileId { major: 254, minor: 3, inode: 42 },
                index: 100,
                pages: 16
            }
        );
        let r = raw(EVENT_RSS_STAT, [1, 8192, 1, 5, 0, 0]);
        assert!(matches!(
            Event::decode(&bytes(&r)).unwrap(),
            Event::RssStat { member: RssMember::Anon, bytes: 8192, .. }
        ));
    }

    #[test]
    fn decodes_phase_names_up_to_their_nul() {
        let mut args = [1u64 | 5 << 1, 0, 0, 0, 0, 0];
        args[1] = u64::from_le_bytes(*b"search\0x");
        assert_eq!(
            Event::decode(&bytes(&raw(EVENT_PHASE, args))).unwrap(),
            Event::Phase { ts_ns: 99, tid: 7, begin: true, name: "search".into(), seq: 5, function: 0, name_at: None }
        );
        // A --phase-fn boundary: the function's index above the sequence number.
        assert_eq!(
            Event::decode(&bytes(&raw(EVENT_PHASE, [7 << 1 | 2 << 40, 0, 0, 0, 0, 0]))).unwrap(),
            Event::Phase { ts_ns: 99, tid: 7, begin: false, name: String::new(), seq: 7, function: 2, name_at: None }
        );
        // A name the kernel could not read: its address instead.
        assert_eq!(
            Event::decode(&bytes(&raw(EVENT_PHASE, [1 | 3 << 1 | 1 << 36, 0x5555_0000, 0, 0, 0, 0]))).unwrap(),
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
        let mark = Event::decode(&bytes(&raw(EVENT_HEAP_MARK, [100, 40, 3, 2, 1, 5]))).unwrap();
        let totals = HeapCounts { allocated_bytes: 100, freed_bytes: 40, allocs: 3, frees: 2, unknown_frees: 1 };
        assert_eq!(mark, Event::HeapMark { ts_ns: 99, tid: 7, seq: 5, totals });
    }

    #[test]
    fn rejects_short_records_and_unknown_kinds() {
        assert_eq!(Event::decode(&[0u8; 10]), Err(DecodeError::Size(10)));
        assert_eq!(Event::decode(&bytes(&raw(77, [0; 6]))), Err(DecodeError::Kind(77)));
    }
}
