//! The heap as the kernel hands it out, from the syscall tracepoints: the
//! program break (glibc's main arena grows through `brk`) and anonymous
//! mappings (large allocations, other arenas, allocators that map memory
//! directly). Memory an allocator takes from the kernel shows here even when
//! its functions are not probed.

/// Plain counters, fed by the session from brk and mmap-family events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelHeap {
    /// Where the break started (`start_brk` of /proc/PID/stat, or the first
    /// `brk` result after exec: glibc's first call is `brk(0)`).
    pub brk_start: Option<u64>,
    pub brk_now: Option<u64>,
    /// Highest break seen.
    pub brk_peak: u64,
    pub brk_calls: u64,
    pub anon_mmap_calls: u64,
    /// Bytes mapped anonymously during the trace (page-rounded lengths).
    pub anon_mapped_bytes: u64,
    /// Bytes of anonymous mappings unmapped during the trace (also those
    /// made before it started).
    pub anon_unmapped_bytes: u64,
}

impl KernelHeap {
    /// A new program image: its break starts at `start_brk` when known.
    pub fn on_exec(&mut self, start_brk: Option<u64>) {
        *self = KernelHeap {
            brk_start: start_brk,
            brk_now: start_brk,
            brk_peak: start_brk.unwrap_or(0),
            anon_mmap_calls: self.anon_mmap_calls,
            anon_mapped_bytes: self.anon_mapped_bytes,
            anon_unmapped_bytes: self.anon_unmapped_bytes,
            brk_calls: self.brk_calls,
        };
    }

    /// A forked child's: the same break, its own calls from zero.
    pub fn forked(&self) -> KernelHeap {
        KernelHeap {
            brk_start: self.brk_start,
            brk_now: self.brk_now,
            brk_peak: self.brk_now.unwrap_or(0),
            ..KernelHeap::default()
        }
    }

    /// Attach mode: the break's start and current end from /proc.
    pub fn set_start(&mut self, start_brk: u64, brk_now: Option<u64>) {
        self.brk_start = Some(start_brk);
        let now = brk_now.unwrap_or(start_brk);
        self.brk_now = Some(now);
        self.brk_peak = self.brk_peak.max(now);
    }

    /// `brk` returned `brk` (the new break, or the old one when refused).
    pub fn on_brk(&mut self, brk: u64) {
        self.brk_calls += 1;
        if self.brk_start.is_none() {
            self.brk_start = Some(brk);
        }
        self.brk_now = Some(brk);
        self.brk_peak = self.brk_peak.max(brk);
    }

    pub fn on_anon_map(&mut self, bytes: u64) {
        self.anon_mmap_calls += 1;
        self.anon_mapped_bytes += bytes;
    }

    pub fn on_anon_unmap(&mut self, bytes: u64) {
        self.anon_unmapped_bytes += bytes;
    }

    /// Bytes between the start of the break and the break now.
    pub fn brk_bytes(&self) -> u64 {
        match (self.brk_start, self.brk_now) {
            (Some(s), Some(n)) => n.saturating_sub(s),
            _ => 0,
        }
    }

    pub fn brk_peak_bytes(&self) -> u64 {
        self.brk_start.map_or(0, |s| self.brk_peak.saturating_sub(s))
    }

    /// Anonymous bytes mapped minus unmapped during the trace.
    pub fn anon_net_bytes(&self) -> i64 {
        self.anon_mapped_bytes as i64 - self.anon_unmapped_bytes as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_break_is_measured_from_its_start() {
        let mut k = KernelHeap::default();
        k.on_brk(0x5000_0000); // brk(0): where it starts
        k.on_brk(0x5002_1000);
        k.on_brk(0x5001_0000); // trimmed
        assert_eq!((k.brk_bytes(), k.brk_peak_bytes(), k.brk_calls), (0x1_0000, 0x2_1000, 3));
    }

    #[test]
    fn exec_restarts_the_break_but_keeps_the_mapping_counts() {
        let mut k = KernelHeap::default();
        k.on_brk(0x1000);
        k.on_brk(0x9000);
        k.on_anon_map(8192);
        k.on_exec(Some(0x7000_0000));
        assert_eq!((k.brk_bytes(), k.brk_peak_bytes()), (0, 0));
        k.on_brk(0x7000_4000);
        assert_eq!(k.brk_bytes(), 0x4000);
        k.on_anon_unmap(12288);
        assert_eq!((k.anon_mmap_calls, k.anon_net_bytes()), (1, -4096));
    }

    #[test]
    fn attach_mode_starts_from_the_heap_it_finds() {
        let mut k = KernelHeap::default();
        k.set_start(0x1000, Some(0x5000));
        assert_eq!(k.brk_bytes(), 0x4000);
        k.on_brk(0x6000);
        assert_eq!((k.brk_bytes(), k.brk_peak_bytes()), (0x5000, 0x5000));
    }
}
