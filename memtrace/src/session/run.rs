//! The event loop: one `select!` over the target, the ring buffer, the
//! control socket, the clocks and signals. Each arm is one call; what it
//! does lives in a method below.
use std::time::Duration;

use anyhow::Result;
use memtrace_common::Counter;

use super::{
    setup::LIVE_REFRESH,
    stop::Moment,
    target::{ChildStop, HeldStop, Stop, TargetEvent},
    Session,
};
use crate::{output::live::Status as LiveStatus, target::control::Mark};

/// How often the ring buffer is drained when no event asked for a wakeup
/// (frequent events do not wake userspace: see the eBPF side).
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// Records read per wake-up of the ring buffer before the loop looks at
/// its other work again (a few milliseconds' worth).
const DRAIN_SLICE: u64 = 8192;

/// Drain ticks between re-reads of the attached target's fault counters.
const STAT_FAULTS_TICKS: u64 = 100;

impl Session {
    /// Traces until the target exits, the duration elapses or a signal
    /// stops it.
    pub(super) async fn run_until_stop(&mut self) -> Result<Stop> {
        let duration = self.opts.duration.map(|d| tokio::time::Instant::now() + d);
        let mut live_tick = tokio::time::interval_at(tokio::time::Instant::now() + LIVE_REFRESH, LIVE_REFRESH);
        let mut sample_tick = tokio::time::interval(self.opts.interval);
        sample_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
        let mut ticks = 0u64;
        let stop = loop {
            let deadline = self.target.deadline(duration);
            tokio::select! {
                event = self.target.next() => match event {
                    TargetEvent::Stopped(held) => self.on_child_stop(held),
                    TargetEvent::Ended(pid, exit) => self.on_process_end(pid, exit),
                    TargetEvent::Exited(exit) => {
                        if let Some(exit) = exit {
                            self.on_process_end(self.pid, exit);
                        }
                        break Stop::Exited(exit);
                    }
                },
                Some(mark) = self.marks.recv() => self.on_mark(mark),
                _ = live_tick.tick(), if self.live.is_some() => self.show_live(),
                _ = sample_tick.tick() => self.sample_timeline(),
                guard = self.ring.readable_mut() => {
                    let mut guard = guard?;
                    // A slice at a time: under a storm the ring refills as
                    // fast as it is read, and the other branches (stop,
                    // signals, samples) must still run between slices.
                    if self.consumer.drain_at_most(guard.get_inner_mut(), DRAIN_SLICE) {
                        guard.clear_ready();
                    }
                    self.watch_new_files();
                }
                _ = sleep_until(deadline) => break self.target.deadline_stop(self.opts.duration),
                _ = drain_tick.tick() => {
                    ticks += 1;
                    self.on_drain_tick(ticks);
                }
                sig = self.signals.recv() => if let Some(stop) = self.target.on_signal(sig) {
                    break stop;
                },
            }
        };
        if let Some(view) = &mut self.live {
            eprint!("{}", view.clear());
        }
        Ok(stop)
    }

    /// A traced process is held at a ptrace stop until `resume`.
    fn on_child_stop(&mut self, HeldStop { pid, stop, since, resume }: HeldStop) {
        match stop {
            ChildStop::Exit => {
                if pid == self.pid {
                    self.target.refresh_stat_faults(self.pid);
                    self.capture(pid, Moment::ExitStop);
                } else {
                    self.capture_at_exit_stop(pid);
                }
                if let Some(p) = self.consumer.process_mut(pid) {
                    p.loading.on_exit();
                    p.anon.on_exit();
                }
            }
            ChildStop::Held => {
                // memtrace's eBPF held it: at a phase marker (--phase-truth),
                // or after it mapped a file's code (whose unwind table goes in now).
                self.consumer.drain(self.ring.get_mut());
                self.watch_new_files();
                if !(self.phase_truth && pid == self.pid && self.boundary_truth()) {
                    // From the stop itself: a drain before this one may have
                    // loaded the table while the process waited here.
                    self.unwind.held(since.elapsed());
                }
            }
            ChildStop::Exec => {
                // The exec event is in the ring: draining it reads the new
                // image's mappings, so its markers, its own allocator and the
                // unwind tables of it and its loader are in before its first
                // instruction.
                // A new image: the old one's interpreter is gone (the new
                // one's is found with its files, below).
                if self.python.remove(&pid).is_some() {
                    self.probes.clear_python(pid);
                }
                self.consumer.drain(self.ring.get_mut());
                self.watch_new_files();
                if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
                    self.attach_exec_allocator(pid, &exe);
                    if pid != self.pid {
                        let _ = self.probes.attach_phase_markers(pid, &crate::procfs::in_target_root(pid, &exe));
                    }
                }
                self.unwind.held(since.elapsed());
            }
            ChildStop::Forked => {
                // Its fork event is in the ring (sent before the child was
                // woken): draining it makes its model, and its probes go in
                // before its first instruction.
                self.consumer.drain(self.ring.get_mut());
                self.watch_new_files();
            }
        }
        let _ = resume.send(());
    }

    /// A traced process ended (its tracer saw the exit status).
    fn on_process_end(&mut self, pid: u32, exit: crate::target::child::ChildExit) {
        self.consumer.drain(self.ring.get_mut());
        if let Some(p) = self.consumer.process_mut(pid) {
            p.exit = Some(exit);
        }
        self.unwind.forget(pid);
        if pid != self.pid {
            self.retirer.retire(self.probes.take_process_links(pid));
        }
    }

    /// A `memtrace mark` from the control socket: a phase boundary now,
    /// after the events already in the ring.
    fn on_mark(&mut self, mark: Mark) {
        self.consumer.drain(self.ring.get_mut());
        let seq = self.probes.next_phase_seq();
        if let Ok(t) = self.probes.heap_totals() {
            self.consumer.heap_marks.on_totals(seq, t);
        }
        let alive: Vec<u32> = self.consumer.alive().map(|p| p.pid).collect();
        for pid in alive {
            if let Some(t) = self.probes.process_heap_totals(pid) {
                if let Some(p) = self.consumer.process_mut(pid) {
                    p.heap_marks.on_totals(seq, t);
                }
            }
        }
        self.consumer.phase(None, mark.begin, mark.name, mark.ts_ns, seq);
    }

    fn on_drain_tick(&mut self, ticks: u64) {
        self.consumer.drain(self.ring.get_mut());
        self.watch_new_files();
        if self.heap.is_ok() {
            self.sampler.tick(&self.probes);
        }
        if ticks.is_multiple_of(STAT_FAULTS_TICKS) {
            self.target.refresh_stat_faults(self.pid);
        }
        if ticks.is_multiple_of(super::harvest::HARVEST_TICKS) {
            self.harvest_ended();
        }
    }

    /// The heap totals now, when the heap is traced.
    fn heap_now(&self) -> Option<memtrace_common::HeapTotals> {
        self.heap.is_ok().then(|| self.probes.heap_totals().ok()).flatten()
    }

    fn sample_timeline(&mut self) {
        self.consumer.drain(self.ring.get_mut());
        let reading = self.consumer.reading(self.clock.elapsed().as_secs_f64(), self.heap_now().as_ref());
        self.timeline.record(reading);
        // Anonymous origins' groups get their peaks from these samples.
        for p in self.consumer.processes.values_mut().filter(|p| p.alive()) {
            p.anon.sample();
        }
    }

    fn show_live(&mut self) {
        self.consumer.drain(self.ring.get_mut());
        let r = self.consumer.reading(self.clock.elapsed().as_secs_f64(), self.heap_now().as_ref());
        let status = LiveStatus {
            elapsed_s: r.t_s,
            phase: r.phase,
            rss_file: r.rss_file,
            rss_anon: r.rss_anon,
            rss_shmem: r.rss_shmem,
            heap_live: r.heap_live,
            faults_total: self.consumer.faults_seen(),
            ringbuf_drops: self.probes.counters().map_or(0, |c| c[Counter::RingbufDrops]),
            top_files: r.files.into_iter().map(|f| (f.path, f.loaded_bytes)).collect(),
            processes_running: r.processes,
            processes_traced: self.consumer.processes.len() as u32,
        };
        if let Some(view) = &mut self.live {
            eprint!("{}", view.render(&status));
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
