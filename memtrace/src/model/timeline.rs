//! The trace's timeline: a sample every `--interval` of the kernel's RSS
//! split, the live heap, each file's loaded bytes, the faults and allocator
//! calls since the previous sample, and the phase in force. Memory stays
//! bounded however long the trace: when `MAX_SAMPLES` are held, every
//! other one is dropped and the interval doubles (an hour at 100 ms ends
//! as 2,250 samples 1.6 s apart).
use serde::{Deserialize, Serialize};

/// Samples held before the timeline thins itself out.
pub const MAX_SAMPLES: usize = 4096;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default)]
pub struct Sample {
    /// Seconds since tracing started.
    pub t_s: f64,
    /// The phase path in force ("" outside every phase).
    pub phase: String,
    /// Traced processes running (1 unless the target forks).
    pub processes: u32,
    /// The RSS counters of the traced processes running, summed (kernel
    /// truth, rss_stat).
    pub rss_file_bytes: u64,
    pub rss_anon_bytes: u64,
    pub rss_shmem_bytes: u64,
    /// Live heap, allocator view (measured; null without heap probes).
    pub heap_live_bytes: Option<i64>,
    /// The program break above its start, and anonymous bytes mapped minus
    /// unmapped since tracing began (measured: syscall tracepoints).
    pub brk_heap_bytes: u64,
    pub anon_mapped_net_bytes: i64,
    /// Allocator calls since the previous sample (measured).
    pub allocs: u64,
    pub frees: u64,
    /// Faults since the previous sample (kernel truth, /proc/PID/stat;
    /// null once the process is gone).
    pub minor_faults: Option<u64>,
    pub major_faults: Option<u64>,
    /// Bytes each file has had loaded so far (measured), files with any.
    pub files_loaded_bytes: Vec<FileLoaded>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct FileLoaded {
    pub path: String,
    pub loaded_bytes: u64,
}

/// What the session knows at a sampling instant (cumulative counters; the
/// timeline turns them into per-interval figures).
#[derive(Clone, Debug, Default)]
pub struct Reading {
    pub t_s: f64,
    pub phase: String,
    pub rss_file: u64,
    pub rss_anon: u64,
    pub rss_shmem: u64,
    pub heap_live: Option<i64>,
    pub brk_heap: u64,
    pub anon_mapped_net: i64,
    pub allocs_total: u64,
    pub frees_total: u64,
    /// (minor, major) for the processes' lifetimes (those running).
    pub faults_total: Option<(u64, u64)>,
    /// Traced processes running.
    pub processes: u32,
    pub files: Vec<FileLoaded>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Timeline {
    /// Seconds between the samples kept (doubles each time it thins out).
    pub interval_s: f64,
    /// Samples dropped to keep memory bounded.
    pub thinned_samples: u64,
    pub samples: Vec<Sample>,
}

/// Cumulative (allocs, frees, faults (minor, major)) at the last kept sample.
type Totals = (u64, u64, Option<(u64, u64)>);

#[derive(Debug)]
pub struct Sampler {
    pub timeline: Timeline,
    /// Keep one reading in `stride` (1, 2, 4, ... after thinning).
    stride: u64,
    readings: u64,
    last: Option<Totals>,
    max_samples: usize,
}

impl Sampler {
    pub fn new(interval_s: f64) -> Sampler {
        Sampler::with_capacity(interval_s, MAX_SAMPLES)
    }

    fn with_capacity(interval_s: f64, max_samples: usize) -> Sampler {
        Sampler {
            timeline: Timeline { interval_s, thinned_samples: 0, samples: Vec::new() },
            stride: 1,
            readings: 0,
            last: None,
            max_samples: max_samples.max(2),
        }
    }

    /// One reading, taken every interval. Per-interval counts run from the
    /// previous kept sample, so thinning loses no calls or faults.
    pub fn record(&mut self, r: Reading) {
        self.readings += 1;
        if !(self.readings - 1).is_multiple_of(self.stride) {
            return;
        }
        let (allocs0, frees0, faults0) = self.last.unwrap_or((r.allocs_total, r.frees_total, r.faults_total));
        let faults = match (r.faults_total, faults0) {
            (Some((mi, ma)), Some((mi0, ma0))) => (Some(mi.saturating_sub(mi0)), Some(ma.saturating_sub(ma0))),
            _ => (None, None),
        };
        self.last = Some((r.allocs_total, r.frees_total, r.faults_total.or(faults0)));
        self.timeline.samples.push(Sample {
            t_s: r.t_s,
            phase: r.phase,
            processes: r.processes,
            rss_file_bytes: r.rss_file,
            rss_anon_bytes: r.rss_anon,
            rss_shmem_bytes: r.rss_shmem,
            heap_live_bytes: r.heap_live,
            brk_heap_bytes: r.brk_heap,
            anon_mapped_net_bytes: r.anon_mapped_net,
            allocs: r.allocs_total.saturating_sub(allocs0),
            frees: r.frees_total.saturating_sub(frees0),
            minor_faults: faults.0,
            major_faults: faults.1,
            files_loaded_bytes: r.files,
        });
        if self.timeline.samples.len() >= self.max_samples {
            self.thin();
        }
    }

    /// Drops every other sample (never the latest), folding its
    /// per-interval counts into the next one kept, and halves the rate from
    /// now on.
    fn thin(&mut self) {
        let old = std::mem::take(&mut self.timeline.samples);
        let last = old.len() - 1;
        let mut carry: Option<Sample> = None;
        for (i, mut s) in old.into_iter().enumerate() {
            if i % 2 == 1 && i != last {
                carry = Some(s);
                continue;
            }
            if let Some(dropped) = carry.take() {
                s.allocs += dropped.allocs;
                s.frees += dropped.frees;
                s.minor_faults = add(s.minor_faults, dropped.minor_faults);
                s.major_faults = add(s.major_faults, dropped.major_faults);
                self.timeline.thinned_samples += 1;
            }
            self.timeline.samples.push(s);
        }
        self.stride *= 2;
        self.timeline.interval_s *= 2.0;
    }
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(t: u64) -> Reading {
        Reading {
            t_s: t as f64,
            allocs_total: 10 * t,
            frees_total: 5 * t,
            faults_total: Some((100 * t, t)),
            ..Reading::default()
        }
    }

    #[test]
    fn counts_are_per_interval() {
        let mut s = Sampler::new(0.1);
        for t in 0..3 {
            s.record(reading(t));
        }
        let allocs: Vec<u64> = s.timeline.samples.iter().map(|x| x.allocs).collect();
        assert_eq!(allocs, [0, 10, 10]);
        assert_eq!(s.timeline.samples[2].minor_faults, Some(100));
    }

    #[test]
    fn a_long_trace_stays_bounded_and_loses_no_counts() {
        let mut s = Sampler::with_capacity(0.1, 8);
        for t in 0..1000 {
            s.record(reading(t));
        }
        let tl = &s.timeline;
        assert!(tl.samples.len() < 8, "{}", tl.samples.len());
        assert!(tl.interval_s > 0.1 * 100.0, "the interval grew: {}", tl.interval_s);
        // Samples stay in time order, evenly thinned.
        assert!(tl.samples.windows(2).all(|w| w[0].t_s < w[1].t_s));
        // Every call up to the last kept sample is counted exactly once.
        let last_t = tl.samples.last().unwrap().t_s as u64;
        let allocs: u64 = tl.samples.iter().map(|x| x.allocs).sum();
        assert_eq!(allocs, 10 * last_t);
        let minor: u64 = tl.samples.iter().filter_map(|x| x.minor_faults).sum();
        assert_eq!(minor, 100 * last_t);
    }

    #[test]
    fn faults_are_null_once_the_process_is_gone() {
        let mut s = Sampler::new(0.1);
        s.record(reading(1));
        s.record(Reading { faults_total: None, ..reading(2) });
        s.record(reading(3));
        let minor: Vec<Option<u64>> = s.timeline.samples.iter().map(|x| x.minor_faults).collect();
        assert_eq!(minor, [Some(0), None, Some(200)]);
    }
}
