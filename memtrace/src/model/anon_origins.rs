//! Anonymous memory by origin: the kernel's anonymous RSS counter
//! (`kmem:rss_stat`, MM_ANONPAGES) is exact; each change of it is
//! attributed to the place the changing thread was working on, as file
//! pages are (see `loading`): the mapping of its last page fault, or the
//! range it is unmapping. A place is an anonymous mapping and who made it
//! (the stack of its mmap), the brk heap, the main stack, or a private file
//! mapping whose pages were copied on write.
use std::collections::{BTreeMap, HashMap};

use super::aspace::{AnonOrigin, FileId, Region};

/// Changes kept per site for group peaks (a 10-minute run sampled every
/// 100 ms has 6,000 samples; past this they are merged pairwise).
const MAX_SERIES: usize = 4096;

/// Where an anonymous page lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// An anonymous mapping, by its origin.
    Mapping(AnonOrigin),
    /// The brk heap (`[heap]`).
    Brk,
    /// The main thread's stack (`[stack]`).
    Stack,
    /// A private mapping of this file: its pages copied on write (a
    /// library's data and relocations, a MAP_PRIVATE file written to).
    FileCopy(FileId),
    /// The kernel's pseudo mappings ([vdso], [vvar], ...), SysV shared memory.
    Other,
}

impl Site {
    /// The place a region's anonymous pages are counted at.
    pub fn of(region: &Region) -> Site {
        match region {
            Region::Anon(origin) => Site::Mapping(*origin),
            Region::Heap => Site::Brk,
            Region::Stack => Site::Stack,
            Region::File(id) => Site::FileCopy(*id),
            Region::Special(_) => Site::Other,
        }
    }
}

/// One site's anonymous memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteUsage {
    /// Anonymous pages resident now by this accounting (measured).
    pub rss_bytes: u64,
    /// The most it held at once.
    pub peak_rss_bytes: u64,
    /// mmap calls that made mappings of this origin.
    pub mappings: u64,
    /// Bytes those calls mapped (virtual).
    pub mapped_bytes: u64,
}

/// What a thread is doing, for attributing its next anonymous RSS change.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Context {
    /// Handling a page fault there (None: outside every known mapping).
    Fault(Option<Site>),
    /// Unmapping, advising or moving a range holding these, in address order.
    Range(Vec<Site>),
}

#[derive(Debug, Default)]
pub struct AnonOrigins {
    pub sites: BTreeMap<Site, SiteUsage>,
    context: HashMap<u32, Context>,
    /// Changes no site could be named for (a kernel thread's, khugepaged's;
    /// a decrease larger than the site held).
    pub unattributed_increase_bytes: u64,
    pub unattributed_decrease_bytes: u64,
    /// Anonymous pages given back as the process tore its memory down.
    pub released_at_exit_bytes: u64,
    /// mmaps of anonymous memory whose stack was lost (STACKS full, an
    /// unreadable stack).
    pub stacks_lost: u64,
    exiting: bool,
    /// Each site's resident bytes at the timeline's samples, when they
    /// changed since its previous entry: (sample index, bytes). A group of
    /// sites' peak is the highest sum at a sample (see `group_peak`).
    series: HashMap<Site, Vec<(u32, u64)>>,
    samples: u32,
}

impl AnonOrigins {
    /// A child forked now: nothing of its own yet (its copied pages are its
    /// baseline, as the RSS counters are).
    pub fn forked() -> AnonOrigins {
        AnonOrigins::default()
    }

    /// An anonymous mapping was made (`stack_id` 0: its stack was lost).
    pub fn on_mmap(&mut self, origin: AnonOrigin, bytes: u64) {
        if matches!(origin, AnonOrigin::Mmap { stack_id: 0, .. }) {
            self.stacks_lost += 1;
        }
        let usage = self.sites.entry(Site::Mapping(origin)).or_default();
        usage.mappings += 1;
        usage.mapped_bytes += bytes;
    }

    pub fn on_fault(&mut self, tid: u32, site: Option<Site>) {
        self.context.insert(tid, Context::Fault(site));
    }

    pub fn on_range_enter(&mut self, tid: u32, sites: Vec<Site>) {
        self.context.insert(tid, Context::Range(sites));
    }

    pub fn on_range_exit(&mut self, tid: u32) {
        self.context.remove(&tid);
    }

    /// The process is stopped at its exit: every later decrease is its teardown.
    pub fn on_exit(&mut self) {
        self.exiting = true;
        self.context.clear();
    }

    /// A new image: the old one's pages are gone with its address space.
    pub fn on_exec(&mut self) {
        self.context.clear();
        for usage in self.sites.values_mut() {
            usage.rss_bytes = 0;
        }
    }

    /// The process has ended: only the figures stay.
    pub fn compact(&mut self) {
        self.context = HashMap::new();
    }

    /// The anonymous RSS counter changed by `delta` bytes on thread `tid`.
    pub fn on_rss(&mut self, tid: u32, delta: i64) {
        if delta == 0 {
            return;
        }
        if self.exiting && delta < 0 {
            self.released_at_exit_bytes += delta.unsigned_abs();
            return;
        }
        let sites: &[Site] = match self.context.get(&tid) {
            Some(Context::Fault(Some(site))) => std::slice::from_ref(site),
            Some(Context::Range(sites)) => sites,
            _ => &[],
        };
        if delta > 0 {
            match sites.first() {
                Some(site) => {
                    let usage = self.sites.entry(*site).or_default();
                    usage.rss_bytes += delta as u64;
                    usage.peak_rss_bytes = usage.peak_rss_bytes.max(usage.rss_bytes);
                }
                None => self.unattributed_increase_bytes += delta as u64,
            }
            return;
        }
        // A range is torn down in address order: its sites give back their
        // pages in that order.
        let mut left = delta.unsigned_abs();
        for site in sites {
            let Some(usage) = self.sites.get_mut(site) else { continue };
            let taken = usage.rss_bytes.min(left);
            usage.rss_bytes -= taken;
            left -= taken;
            if left == 0 {
                break;
            }
        }
        self.unattributed_decrease_bytes += left;
    }

    /// A timeline sample: the sites whose bytes changed since their last entry.
    pub fn sample(&mut self) {
        for (site, usage) in &self.sites {
            let series = self.series.entry(*site).or_default();
            if series.last().is_none_or(|(_, b)| *b != usage.rss_bytes) {
                series.push((self.samples, usage.rss_bytes));
                if series.len() >= MAX_SERIES {
                    // Coarser, never lower: pairs of changes become their larger.
                    let halved = series.chunks(2).map(|c| (c[0].0, c.iter().map(|e| e.1).max().unwrap_or(0))).collect();
                    *series = halved;
                }
            }
        }
        self.samples += 1;
    }

    /// The highest sum of these sites' bytes at one timeline sample or now,
    /// and never below the largest of their own exact peaks.
    pub fn group_peak(&self, sites: &[Site]) -> u64 {
        let mut at: BTreeMap<u32, Vec<(usize, u64)>> = BTreeMap::new();
        for (i, site) in sites.iter().enumerate() {
            for &(sample, bytes) in self.series.get(site).map_or(&[][..], Vec::as_slice) {
                at.entry(sample).or_default().push((i, bytes));
            }
        }
        let mut current = vec![0u64; sites.len()];
        let mut peak = 0;
        for changes in at.values() {
            for &(i, bytes) in changes {
                current[i] = bytes;
            }
            peak = peak.max(current.iter().sum());
        }
        let now: u64 = sites.iter().filter_map(|s| self.sites.get(s)).map(|u| u.rss_bytes).sum();
        let largest_own = sites.iter().filter_map(|s| self.sites.get(s)).map(|u| u.peak_rss_bytes).max().unwrap_or(0);
        peak.max(now).max(largest_own)
    }

    /// Resident bytes by this accounting, over every site.
    pub fn attributed_bytes(&self) -> u64 {
        self.sites.values().map(|u| u.rss_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARENA: Site = Site::Mapping(AnonOrigin::Mmap { pid: 7, stack_id: 11 });
    const STACKS: Site = Site::Mapping(AnonOrigin::Mmap { pid: 7, stack_id: 12 });

    #[test]
    fn a_fault_s_increase_goes_to_its_site_and_a_range_gives_back_in_order() {
        let mut a = AnonOrigins::default();
        a.on_mmap(AnonOrigin::Mmap { pid: 7, stack_id: 11 }, 1 << 20);
        a.on_fault(1, Some(ARENA));
        a.on_rss(1, 8192);
        a.on_fault(2, Some(STACKS));
        a.on_rss(2, 4096);
        a.on_fault(1, Some(Site::Brk));
        a.on_rss(1, 4096);
        assert_eq!(a.sites[&ARENA].rss_bytes, 8192);
        assert_eq!(a.sites[&ARENA].mappings, 1);
        assert_eq!(a.sites[&STACKS].rss_bytes, 4096);
        assert_eq!(a.attributed_bytes(), 16384);
        // munmap over both: the arena's pages first, then the stack's.
        a.on_range_enter(1, vec![ARENA, STACKS]);
        a.on_rss(1, -10240);
        a.on_range_exit(1);
        assert_eq!(a.sites[&ARENA].rss_bytes, 0);
        assert_eq!(a.sites[&STACKS].rss_bytes, 2048);
        assert_eq!(a.sites[&ARENA].peak_rss_bytes, 8192);
        assert_eq!(a.unattributed_decrease_bytes, 0);
    }

    #[test]
    fn what_cannot_be_named_is_counted_not_guessed() {
        let mut a = AnonOrigins::default();
        a.on_rss(3, 4096); // a thread never seen faulting
        a.on_fault(1, None);
        a.on_rss(1, 4096); // outside every mapping
        a.on_fault(1, Some(ARENA));
        a.on_rss(1, 4096);
        a.on_rss(1, -8192); // more than the arena held
        assert_eq!(a.unattributed_increase_bytes, 8192);
        assert_eq!(a.unattributed_decrease_bytes, 4096);
        a.on_exit();
        a.on_rss(1, -4096);
        assert_eq!(a.released_at_exit_bytes, 4096);
        a.on_mmap(AnonOrigin::Mmap { pid: 7, stack_id: 0 }, 4096);
        assert_eq!(a.stacks_lost, 1);
    }

    #[test]
    fn a_group_s_peak_is_its_highest_sum_at_a_sample() {
        let mut a = AnonOrigins::default();
        a.on_fault(1, Some(ARENA));
        a.on_rss(1, 3 << 20);
        a.on_fault(2, Some(STACKS));
        a.on_rss(2, 1 << 20);
        a.sample(); // 3 + 1
        a.on_fault(1, Some(ARENA));
        a.on_rss(1, -(3 << 20));
        a.on_fault(2, Some(STACKS));
        a.on_rss(2, 1 << 20);
        a.sample(); // 0 + 2
        assert_eq!(a.group_peak(&[ARENA, STACKS]), 4 << 20);
        assert_eq!(a.group_peak(&[STACKS]), 2 << 20);
        // Between samples: the site's own exact peak still shows.
        a.on_fault(1, Some(ARENA));
        a.on_rss(1, 5 << 20);
        a.on_rss(1, -(5 << 20));
        assert_eq!(a.group_peak(&[ARENA]), 5 << 20);
    }

    #[test]
    fn regions_name_their_sites() {
        let file = FileId { major: 8, minor: 1, inode: 3 };
        assert_eq!(Site::of(&Region::File(file)), Site::FileCopy(file));
        assert_eq!(Site::of(&Region::Heap), Site::Brk);
        assert_eq!(Site::of(&Region::Anon(AnonOrigin::Unseen)), Site::Mapping(AnonOrigin::Unseen));
        assert_eq!(Site::of(&Region::Special("[vdso]".into())), Site::Other);
    }
}
