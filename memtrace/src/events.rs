//! Decoding of the ring buffer's raw records into typed events.
use memtrace_common::{RawEvent, EVENT_EXEC, EVENT_MMAP, EVENT_MUNMAP, EVENT_PAGE_FAULT};

/// x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
const PF_WRITE: u64 = 1 << 1;
const PF_INSTR: u64 = 1 << 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
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
            EVENT_MUNMAP => Event::Munmap {
                ts_ns,
                tid,
                addr: a[0],
                len: a[1],
                result: a[2] as i64,
            },
            EVENT_PAGE_FAULT => Event::PageFault {
                ts_ns,
                tid,
                address: a[0],
                ip: a[1],
                access: FaultAccess::from_error_code(a[2]),
            },
            EVENT_EXEC => Event::Exec { ts_ns, tid },
            other => return Err(DecodeError::Kind(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u32, args: [u64; 6]) -> RawEvent {
        RawEvent {
            kind,
            tid: 7,
            ts_ns: 99,
            args,
        }
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
            Event::Mmap {
                ts_ns: 99,
                tid: 7,
                result: -12,
                len: 4096,
                prot: 3,
                flags: 0x22,
                fd: -1,
                offset: 0
            }
        );
    }

    #[test]
    fn decodes_munmap_and_exec() {
        let r = raw(EVENT_MUNMAP, [0x7000, 8192, 0, 0, 0, 0]);
        assert_eq!(
            Event::decode(&bytes(&r)).unwrap(),
            Event::Munmap {
                ts_ns: 99,
                tid: 7,
                addr: 0x7000,
                len: 8192,
                result: 0
            }
        );
        assert_eq!(
            Event::decode(&bytes(&raw(EVENT_EXEC, [0; 6]))).unwrap(),
            Event::Exec { ts_ns: 99, tid: 7 }
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
            Event::PageFault {
                address: 0xdead000,
                ip: 0x401000,
                access: FaultAccess::Write,
                ..
            }
        ));
    }

    #[test]
    fn rejects_short_records_and_unknown_kinds() {
        assert_eq!(Event::decode(&[0u8; 10]), Err(DecodeError::Size(10)));
        assert_eq!(
            Event::decode(&bytes(&raw(77, [0; 6]))),
            Err(DecodeError::Kind(77))
        );
    }
}
