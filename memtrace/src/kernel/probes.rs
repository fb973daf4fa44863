//! Loading memtrace's eBPF object into the kernel and attaching its programs
//! to the target. Dropping `Probes` detaches and unloads everything.
use anyhow::{Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        raw_trace_point::RawTracePointLinkId, trace_point::TracePointLinkId, RawTracePoint, TracePoint, UProbe,
    },
    Ebpf, EbpfLoader,
};
use memtrace_common::{
    AllocKey, Counter, FileKey, HeapTotals, KernelOffsets, LiveAlloc, StackFrames, StackStats, TracedProcess,
    TracepointOffsets, PHASE_SEQ_USER, TRACED_HOLDABLE,
};

use std::{
    collections::{BTreeMap, HashMap as StdHashMap, HashSet},
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use super::{
    batch,
    uprobe_events::{InheritedUprobe, UprobeEvents},
};
use crate::{
    model::aspace::FileId,
    model::heap_marks::LiveAllocation,
    uprobes::alloc_symbols::{self, Shape},
    uprobes::allocator::Allocator,
    uprobes::placement::{self, Library, Placement},
    warnings::Warnings,
};

/// The object built by build.rs from memtrace-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace.bpf.o"));

/// (program name in the object, tracepoint category, tracepoint name).
const TRACEPOINTS: [(&str, &str, &str); 19] = [
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("sys_enter_mmap", "syscalls", "sys_enter_mmap"),
    ("sys_exit_mmap", "syscalls", "sys_exit_mmap"),
    ("sys_enter_munmap", "syscalls", "sys_enter_munmap"),
    ("sys_exit_munmap", "syscalls", "sys_exit_munmap"),
    ("sys_enter_madvise", "syscalls", "sys_enter_madvise"),
    ("sys_exit_madvise", "syscalls", "sys_exit_madvise"),
    ("sys_enter_mremap", "syscalls", "sys_enter_mremap"),
    ("sys_exit_mremap", "syscalls", "sys_exit_mremap"),
    ("sys_enter_brk", "syscalls", "sys_enter_brk"),
    ("sys_exit_brk", "syscalls", "sys_exit_brk"),
    ("page_fault_user", "exceptions", "page_fault_user"),
    ("page_fault_kernel", "exceptions", "page_fault_kernel"),
    ("rss_stat", "kmem", "rss_stat"),
    ("mm_filemap_fault", "filemap", "mm_filemap_fault"),
    ("mm_filemap_map_pages", "filemap", "mm_filemap_map_pages"),
    ("mm_filemap_add_to_page_cache", "filemap", "mm_filemap_add_to_page_cache"),
    ("mm_filemap_delete_from_page_cache", "filemap", "mm_filemap_delete_from_page_cache"),
];

const ALLOC_EXIT: &str = "alloc_exit";

/// The allocators found and their probes, or why the heap is not traced.
pub type HeapSetup = std::result::Result<Vec<(crate::uprobes::allocator::Allocator, Vec<HeapProbe>)>, HeapUntraced>;

/// Why the heap is not traced; its text is the trace's `heap.status`
/// after "not traced: ".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeapUntraced {
    /// No allocator was found to probe (no glibc mapped, a bad `--alloc-lib`).
    NoAllocator(String),
    /// Allocators were found, and attaching failed for each: "path: why".
    ProbesFailed(Vec<String>),
}

impl std::fmt::Display for HeapUntraced {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            HeapUntraced::NoAllocator(why) => f.write_str(why),
            HeapUntraced::ProbesFailed(each) => f.write_str(&each.join("; ")),
        }
    }
}

/// One allocator function as memtrace probed it (for `--explain-probes`
/// and the trace).
#[derive(Clone, Debug)]
pub struct HeapProbe {
    pub function: String,
    pub library: PathBuf,
    /// Address of the function in the library (ELF virtual address).
    pub address: u64,
    /// Where the entry probe (and the return probe) sit, and why.
    pub placement: Option<Placement>,
    /// "attached", or why not.
    pub status: String,
}

/// The in-kernel counters (summed over CPUs), read as `counters[Counter::RingbufDrops]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters([u64; Counter::COUNT]);

impl From<[u64; Counter::COUNT]> for KernelCounters {
    fn from(slots: [u64; Counter::COUNT]) -> Self {
        KernelCounters(slots)
    }
}

impl std::ops::Index<Counter> for KernelCounters {
    type Output = u64;

    fn index(&self, counter: Counter) -> &u64 {
        &self.0[counter as usize]
    }
}

/// How a process runs a site: since when its forks copy it, and the
/// process it was opened for (whose probe must outlive every copy: the
/// copies run the program linked to it).
#[derive(Clone, Copy, Debug)]
struct Coverage {
    since: u64,
    owner: u32,
}

/// One uprobe site: a program at an offset of a file (by device and inode).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Site {
    program: &'static str,
    dev: u64,
    ino: u64,
    offset: u64,
}

pub struct Probes {
    ebpf: Ebpf,
    pub attached: Vec<String>,
    fork_link: Option<RawTracePointLinkId>,
    /// Links in attach order: (program name, link id).
    tracepoint_links: Vec<(&'static str, TracePointLinkId)>,
    /// Uprobes by the process they were opened for (its children inherit them).
    uprobes: Vec<(u32, InheritedUprobe)>,
    uprobe_events: UprobeEvents,
    /// The probe sites each traced process runs: those opened for it and
    /// those it inherited at its fork. A site is attached for a process
    /// only when it is not there already (twice would count every call twice).
    covered: StdHashMap<u32, StdHashMap<Site, Coverage>>,
    /// Processes that ended (their probes go once no copy is running).
    ended: HashSet<u32>,
    /// The phase markers' file offsets in each executable file looked at
    /// (None: it defines none), by identity: a tree running one program
    /// a thousand times reads (and parses) it once.
    marker_sites: StdHashMap<FileIdentity, Option<Vec<MarkerSite>>>,
    /// Each traced process's dummy perf event (see `own_context`).
    contexts: StdHashMap<u32, std::os::fd::OwnedFd>,
    /// Phase boundaries made from userspace so far (`memtrace mark`).
    user_phase_marks: u32,
    /// `--probe-at-entry`: allocator probes on the first instruction.
    pub probe_at_entry: bool,
}

fn kernel_offsets() -> Result<KernelOffsets> {
    let btf = crate::kernel::btf::Btf::from_sys_fs()?;
    Ok(KernelOffsets {
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_max_fds: btf.member_offset("fdtable", "max_fds")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        file_f_inode: btf.member_offset("file", "f_inode")?,
        inode_i_ino: btf.member_offset("inode", "i_ino")?,
        inode_i_sb: btf.member_offset("inode", "i_sb")?,
        super_block_s_dev: btf.member_offset("super_block", "s_dev")?,
        file_f_path_dentry: btf.member_offset("file", "f_path")? + btf.member_offset("path", "dentry")?,
        dentry_d_parent: btf.member_offset("dentry", "d_parent")?,
        dentry_d_name_name: btf.member_offset("dentry", "d_name")? + btf.member_offset("qstr", "name")?,
        inode_i_mode: btf.member_offset("inode", "i_mode")?,
        task_pid: btf.member_offset("task_struct", "pid")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_exit_signal: btf.member_offset("task_struct", "exit_signal")?,
        // Optional: without them, walks through a running uretprobed call
        // end at its trampoline (as before).
        task_utask: btf.member_offset("task_struct", "utask").unwrap_or(0),
        utask_return_instances: btf.member_offset("uprobe_task", "return_instances").unwrap_or(0),
        ri_stack: btf.member_offset("return_instance", "stack").unwrap_or(0),
        ri_orig_ret_vaddr: btf.member_offset("return_instance", "orig_ret_vaddr").unwrap_or(0),
        ri_next: btf.member_offset("return_instance", "next").unwrap_or(0),
        _pad: 0,
    })
}

/// What the eBPF programs are told at load time.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// The phase-marker probes hold the target's main thread (run mode
    /// only, where memtrace is its ptrace tracer): `--phase-truth`.
    pub hold_at_markers: bool,
    /// Each mapping of a file's code holds the main thread until its
    /// unwind table is loaded (run mode, `--unwind dwarf`).
    pub hold_at_code: bool,
    /// Stream every allocation and free (`--events`).
    pub heap_events: bool,
    /// Children of traced processes are traced too (the fork program).
    pub follow_forks: bool,
    /// memtrace is the first process's ptrace tracer (run mode): eBPF may
    /// hold it (and the children ptrace's fork options trace with it).
    pub holdable: bool,
    /// `--cgroup`: the cgroup v2 id whose every process is in the scope (0: none).
    pub cgroup: u64,
    /// Map sizes: `--ring-buffer-kib`, `--max-live-allocs`, `--max-stacks`.
    pub sizes: MapSizes,
}

/// The sizes of the maps a busy target can fill (each exhaustion is
/// counted: ring-buffer drops, dropped allocations, allocations without stack).
#[derive(Clone, Copy, Debug)]
pub struct MapSizes {
    pub ring_bytes: u32,
    pub live_allocs: u32,
    pub stacks: u32,
}

impl Default for MapSizes {
    /// The sizes the eBPF object declares (the command line's defaults).
    fn default() -> MapSizes {
        MapSizes {
            ring_bytes: 16 << 20,
            live_allocs: memtrace_common::DEFAULT_MAX_LIVE_ALLOCS,
            stacks: memtrace_common::DEFAULT_MAX_STACKS,
        }
    }
}

impl Probes {
    pub fn attach(pid: u32, offsets: &TracepointOffsets, load: LoadOptions, warnings: &mut Warnings) -> Result<Probes> {
        // Offsets sys_exit_mmap needs to name a mapping's file from the fd
        // table; without them memtrace names files from /proc only.
        let kernel_offsets = kernel_offsets();
        let mut ebpf = EbpfLoader::new()
            .override_global("FOLLOW", &u32::from(load.follow_forks), true)
            .override_global("CGROUP", &load.cgroup, true)
            .override_global("OFFSETS", offsets, true)
            .override_global("PHASE_STOP", &u32::from(load.hold_at_markers), true)
            .override_global("CODE_STOP", &u32::from(load.hold_at_code), true)
            .override_global("HEAP_EVENTS", &u32::from(load.heap_events), true)
            .override_global("KERNEL_OFFSETS", kernel_offsets.as_ref().unwrap_or(&KernelOffsets::default()), true)
            .map_max_entries("EVENTS", load.sizes.ring_bytes)
            .map_max_entries("LIVE_ALLOCS", load.sizes.live_allocs)
            .map_max_entries("STACKS", load.sizes.stacks)
            // One more: the per-stack statistics of "no stack" (id 0).
            .map_max_entries("STACK_STATS", load.sizes.stacks + 1)
            .load(OBJECT)
            .context("loading memtrace's eBPF object into the kernel")?;
        let mut attached = Vec::new();
        // In scope before any program is attached: nothing of it is missed.
        let flags = if load.holdable { TRACED_HOLDABLE } else { 0 };
        let mut traced: HashMap<_, u32, TracedProcess> =
            HashMap::try_from(ebpf.map_mut("TRACED").context("eBPF object lacks map TRACED")?)?;
        traced.insert(pid, TracedProcess { flags, ..TracedProcess::default() }, 0).context("writing TRACED")?;
        let mut tracepoint_links = Vec::new();
        let fork: &mut RawTracePoint = ebpf
            .program_mut("sched_process_fork")
            .context("eBPF object lacks program sched_process_fork")?
            .try_into()?;
        fork.load().context("verifier rejected sched_process_fork")?;
        let fork_link = fork.attach("sched_process_fork").context("attaching to raw tracepoint sched_process_fork")?;
        attached.push("raw tracepoint sched_process_fork".to_string());
        for (program, category, name) in TRACEPOINTS {
            let tp: &mut TracePoint = ebpf
                .program_mut(program)
                .with_context(|| format!("eBPF object lacks program {program}"))?
                .try_into()?;
            tp.load().with_context(|| format!("verifier rejected {program}"))?;
            let link =
                tp.attach(category, name).with_context(|| format!("attaching to tracepoint {category}:{name}"))?;
            tracepoint_links.push((program, link));
            attached.push(format!("tracepoint {category}:{name}"));
        }
        if let Err(e) = &kernel_offsets {
            warnings.warn(format!("mapped files will be named from /proc only (no kernel BTF offsets): {e:#}"));
        }
        Ok(Probes {
            ebpf,
            attached,
            fork_link: Some(fork_link),
            tracepoint_links,
            uprobes: Vec::new(),
            uprobe_events: UprobeEvents::new(&super::tracefs::ensure_mounted()?, load.follow_forks)?,
            covered: StdHashMap::new(),
            ended: HashSet::new(),
            marker_sites: StdHashMap::new(),
            contexts: StdHashMap::new(),
            user_phase_marks: 0,
            probe_at_entry: false,
        })
    }

    /// Adds a running process to the kernel's scope (`--children`): its
    /// events are traced from now on, and what it forks.
    pub fn trace_process(&mut self, pid: u32) -> Result<()> {
        let mut traced: HashMap<_, u32, TracedProcess> =
            HashMap::try_from(self.ebpf.map_mut("TRACED").context("eBPF object lacks map TRACED")?)?;
        traced.insert(pid, TracedProcess::default(), 0).with_context(|| format!("adding PID {pid} to TRACED"))
    }

    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("eBPF object lacks map EVENTS")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Attaches to `memtrace_phase_begin`/`memtrace_phase_end` in `binary`
    /// (the target's executable, or a library it maps) for process `pid`. Returns false when the
    /// binary has no such symbols: phases are optional.
    pub fn attach_phase_markers(&mut self, pid: u32, binary: &Path) -> Result<bool> {
        let meta = std::fs::metadata(binary).with_context(|| format!("reading {}", binary.display()))?;
        let identity = FileIdentity::of(&meta);
        let offsets = match self.marker_sites.get(&identity) {
            Some(known) => known.clone(),
            None => {
                let found = marker_offsets(binary)?;
                self.marker_sites.insert(identity, found.clone());
                found
            }
        };
        // The binary does not define the markers: phases are optional.
        let Some(offsets) = offsets else { return Ok(false) };
        for (program, symbol, offset) in offsets {
            if self
                .attach_site(pid, program, binary, offset, 0)
                .with_context(|| format!("attaching a uprobe to {symbol} in {}", binary.display()))?
            {
                self.attached.push(format!("uprobe {symbol}"));
            }
        }
        Ok(true)
    }

    /// Loads a uprobe program once.
    fn uprobe_program(&mut self, program: &'static str) -> Result<&mut UProbe> {
        let probe: &mut UProbe =
            self.ebpf.program_mut(program).with_context(|| format!("eBPF object lacks {program}"))?.try_into()?;
        if probe.fd().is_err() {
            probe.load().with_context(|| format!("verifier rejected {program}"))?;
        }
        Ok(probe)
    }

    /// Attaches `program` at `offset` of `file` for process `pid` and what
    /// it creates from now on, unless it runs that site already (opened
    /// for it, or inherited from its parent): returns whether it attached.
    fn attach_site(&mut self, pid: u32, program: &'static str, file: &Path, offset: u64, cookie: u64) -> Result<bool> {
        let meta = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
        let site = Site { program, dev: meta.dev(), ino: meta.ino(), offset };
        if self.covered.get(&pid).is_some_and(|sites| sites.contains_key(&site)) {
            return Ok(false);
        }
        let ret = program == ALLOC_EXIT || program == "phase_fn_exit";
        let fd = self.uprobe_program(program)?.fd()?.as_fd().try_clone_to_owned()?;
        // Every thread of it: a child forked by any of them inherits the probe.
        let threads = crate::procfs::thread_ids(pid).unwrap_or_else(|_| vec![pid]);
        let probe = self.uprobe_events.attach(fd.as_fd(), file, offset, ret, &threads, cookie)?;
        // Forks from now on copy it (the fork tracepoint's time is later).
        let since = crate::session::monotonic_ns();
        self.uprobes.push((pid, probe));
        self.covered.entry(pid).or_default().insert(site, Coverage { since, owner: pid });
        Ok(true)
    }

    /// Gives process `pid` a perf event context of its own (see
    /// `uprobe_events::own_context`), before it runs when it is held.
    pub fn own_context(&mut self, pid: u32) {
        if !self.uprobe_events.inherit {
            return;
        }
        match super::uprobe_events::own_context(pid) {
            Ok(fd) => {
                self.contexts.insert(pid, fd);
            }
            // Ended already (a short-lived child), or exiting now (the
            // kernel refuses an exiting task with ESRCH while /proc still
            // shows it running): nothing of it left to keep apart.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) || crate::warnings::has_ended(pid) => {}
            Err(e) => eprintln!("memtrace: warning: PID {pid}: a perf event of its own: {e}"),
        }
    }

    /// A child forked at `fork_ns` runs every probe its parent ran then
    /// (the kernel copied them at the fork, when inheriting is on):
    /// recorded so none is attached twice, and none is taken for copied
    /// that was attached to the parent after the fork.
    pub fn inherit_probes(&mut self, parent: u32, child: u32, fork_ns: u64) {
        if !self.uprobe_events.inherit {
            return;
        }
        let Some(sites) = self.covered.get(&parent) else { return };
        let copied: Vec<(Site, Coverage)> = sites
            .iter()
            .filter(|(_, c)| fork_ns > c.since)
            .map(|(s, c)| (s.clone(), Coverage { since: fork_ns, owner: c.owner }))
            .collect();
        self.covered.entry(child).or_default().extend(copied);
    }

    /// Attaches `--phase-fn` functions: entry and return probes, each with
    /// the function's index (1, 2, ...) as its cookie.
    pub fn attach_phase_fns(&mut self, pid: u32, fns: &[crate::uprobes::phase_fn::PhaseFn]) -> Result<()> {
        for (i, f) in fns.iter().enumerate() {
            let lib = Library::open(&f.path)?;
            let code = lib.function(&f.symbol)?.with_context(|| format!("{} not in {}", f.symbol, f.path.display()))?;
            let offset = lib.file_offset(code.address).with_context(|| format!("{} outside its segments", f.symbol))?;
            let mut attached = false;
            for program in ["phase_fn_enter", "phase_fn_exit"] {
                attached |= self
                    .attach_site(pid, program, &f.path, offset, i as u64 + 1)
                    .with_context(|| format!("attaching to {} in {}", f.symbol, f.path.display()))?;
            }
            if attached {
                self.attached.push(format!("uprobe+uretprobe {} (phase {})", f.symbol, f.name));
            }
        }
        Ok(())
    }

    /// Attaches the heap probes to the allocator functions `library` (where
    /// memtrace opens the file the target calls `named`) defines
    /// (glibc's libc.so.6, or another allocator: see alloc_symbols), for
    /// process `pid`. Each entry probe sits where the kernel can emulate the
    /// probed instruction (see probe_site); the return probe sits at the same
    /// place. An alias of a function already probed (same address) is
    /// probed once. Returns the functions found, probed or not.
    pub fn attach_allocator(&mut self, pid: u32, allocator: &Allocator) -> Result<Vec<HeapProbe>> {
        let (library, named) = (allocator.open_path.as_path(), allocator.path.as_path());
        let lib = Library::open(library)?;
        for program in Shape::PROGRAMS.into_iter().chain([ALLOC_EXIT]) {
            self.uprobe_program(program)?;
        }
        let known = alloc_symbols::known();
        let names: Vec<&str> = known.iter().map(|(n, _)| n.as_str()).collect();
        let mut report: Vec<HeapProbe> = Vec::new();
        for (symbol, code) in lib.functions(&names)? {
            let shape = known.iter().find(|(n, _)| *n == symbol).map(|(_, s)| *s).context("known symbol")?;
            let mut entry = HeapProbe {
                function: symbol.clone(),
                library: named.to_path_buf(),
                address: code.address,
                placement: None,
                status: String::new(),
            };
            if let Some(same) = report.iter().find(|r| r.address == code.address && r.placement.is_some()) {
                entry.status = format!("same code as {} (an alias): probed once", same.function);
                report.push(entry);
                continue;
            }
            let placement = if self.probe_at_entry {
                placement::at_entry(&code.code)
            } else {
                placement::place(&code.code, shape.reads())
            };
            // A free tells its allocator's own calls from the program's by
            // where its caller is: the cookie locates the allocator's code
            // relative to the probe (see called_from_allocator in eBPF).
            let probed = code.address + placement.offset;
            let cookie = (!allocator.in_executable)
                .then(|| lib.code_segment(probed))
                .flatten()
                .filter(|(start, len)| probed - start <= u32::MAX as u64 && *len <= u32::MAX as u64)
                .map_or(0, |(start, len)| (len << 32) | (probed - start));
            let offset = lib.file_offset(probed).with_context(|| format!("{symbol} outside the file's segments"))?;
            let mut attach = |program: &'static str| -> Result<bool> {
                self.attach_site(pid, program, library, offset, cookie)
                    .with_context(|| format!("attaching to {symbol}+{} in {}", placement.offset, named.display()))
            };
            attach(shape.program())?;
            if shape.returns() {
                attach(ALLOC_EXIT)?;
            }
            self.attached.push(format!("uprobe {symbol}+{}", placement.offset));
            entry.status = if shape.returns() { "attached (entry and return)" } else { "attached (entry)" }.into();
            entry.placement = Some(placement);
            report.push(entry);
        }
        Ok(report)
    }

    /// Takes the uprobe links of process `pid` (it has ended: they can fire
    /// no more) for the caller to drop: the kernel takes tens of ms to
    /// unregister each, one at a time, so the session drops them on a
    /// thread of their own while tracing goes on.
    pub fn take_process_links(&mut self, pid: u32) -> super::retire::Links {
        self.covered.remove(&pid);
        self.contexts.remove(&pid);
        self.ended.insert(pid);
        // Probes opened for an ended process that no running one copied.
        let in_use: HashSet<u32> = self.covered.values().flat_map(|sites| sites.values().map(|c| c.owner)).collect();
        let (theirs, ours): (Vec<_>, Vec<_>) = std::mem::take(&mut self.uprobes)
            .into_iter()
            .partition(|(owner, _)| self.ended.contains(owner) && !in_use.contains(owner));
        self.uprobes = ours;
        theirs.into_iter().map(|(_, probe)| Box::new(probe) as Box<dyn Send>).collect()
    }

    /// Asks the kernel side to report page-cache evictions of this file.
    pub fn watch_file(&mut self, id: FileId) -> Result<()> {
        let map = self.ebpf.map_mut("WATCHED_FILES").context("eBPF object lacks map WATCHED_FILES")?;
        let mut files: HashMap<_, FileKey, u8> = HashMap::try_from(map)?;
        let key = FileKey { ino: id.inode, s_dev: id.kernel_dev(), _pad: 0 };
        files.insert(key, 1, 0).context("WATCHED_FILES is full")?;
        Ok(())
    }

    /// Detaches every program. Each detach waits for the kernel to quiesce
    /// the tracepoint (tens of ms for syscall tracepoints here); doing them
    /// one after another took about a second, so they run in parallel.
    pub fn detach(mut self) {
        let mut links: Vec<Box<dyn Send>> = Vec::new();
        if let Some(id) = self.fork_link.take() {
            if let Some(Ok(tp)) = self.ebpf.program_mut("sched_process_fork").map(<&mut RawTracePoint>::try_from) {
                if let Ok(link) = tp.take_link(id) {
                    links.push(Box::new(link));
                }
            }
        }
        for (program, id) in std::mem::take(&mut self.tracepoint_links) {
            if let Some(Ok(tp)) = self.ebpf.program_mut(program).map(<&mut TracePoint>::try_from) {
                if let Ok(link) = tp.take_link(id) {
                    links.push(Box::new(link));
                }
            }
        }
        for (_, probe) in std::mem::take(&mut self.uprobes) {
            links.push(Box::new(probe));
        }
        std::thread::scope(|s| {
            for link in links {
                s.spawn(move || drop(link));
            }
        });
        drop(self.ebpf);
    }

    /// Loads files' unwind tables as UNWIND_TABLES[slot]: each an array of
    /// its own, sized to its rows and filled with one `BPF_MAP_UPDATE_BATCH`
    /// (one update per row took 128 ms for the demo's 60,724 rows), then
    /// all placed in UNWIND_TABLES with one more: the kernel waits for an
    /// RCU grace period after each update of a map of maps (5-15 ms here),
    /// once per call this way. Returns the bytes of map memory they take.
    pub fn load_unwind_tables(&mut self, tables: &[(u32, &[memtrace_common::UnwindRow])]) -> Result<u64> {
        use std::os::fd::{AsFd, AsRawFd};

        use memtrace_common::{UnwindRow, BPF_F_INNER_MAP};
        const BPF_MAP_TYPE_ARRAY: u32 = 2;
        let mut maps = Vec::with_capacity(tables.len());
        let mut bytes = 0;
        for (_, rows) in tables {
            let len = u32::try_from(rows.len()).ok().filter(|n| *n > 0).context("an unwind table of no rows")?;
            let definition = aya_obj::Map::new_from_params(
                BPF_MAP_TYPE_ARRAY,
                4,
                std::mem::size_of::<UnwindRow>() as u32,
                len,
                BPF_F_INNER_MAP,
            );
            let table = MapData::create(definition, "unwind_table", None).context("creating an unwind table map")?;
            batch::update(table.fd(), &(0..len).collect::<Vec<u32>>(), rows)
                .context("writing an unwind table (BPF_MAP_UPDATE_BATCH)")?;
            bytes += u64::from(len) * std::mem::size_of::<UnwindRow>() as u64;
            maps.push(table);
        }
        let slots: Vec<u32> = tables.iter().map(|(slot, _)| *slot).collect();
        let fds: Vec<u32> = maps.iter().map(|m| m.fd().as_fd().as_raw_fd() as u32).collect();
        let Some(aya::maps::Map::ArrayOfMaps(outer)) = self.ebpf.map("UNWIND_TABLES") else {
            anyhow::bail!("eBPF object lacks map UNWIND_TABLES");
        };
        // The outer map holds its own references: the fds may close after.
        batch::update(outer.fd(), &slots, &fds).context("writing UNWIND_TABLES (BPF_MAP_UPDATE_BATCH)")?;
        Ok(bytes)
    }

    /// Writes a mapping list the eBPF unwinder searches (UNWIND_MAPPINGS[slot])
    /// and makes it process `pid`'s.
    pub fn set_exec_mappings(&mut self, pid: u32, slot: u32, mappings: &memtrace_common::ExecMappings) -> Result<()> {
        let map = self.ebpf.map_mut("UNWIND_MAPPINGS").context("eBPF object lacks map UNWIND_MAPPINGS")?;
        let mut array: Array<_, memtrace_common::ExecMappings> = Array::try_from(map)?;
        array.set(slot, mappings, 0).context("writing UNWIND_MAPPINGS")?;
        let map = self.ebpf.map_mut("UNWIND_SLOTS").context("eBPF object lacks map UNWIND_SLOTS")?;
        let mut slots: HashMap<_, u32, u32> = HashMap::try_from(map)?;
        slots.insert(pid, slot, 0).context("writing UNWIND_SLOTS")?;
        Ok(())
    }

    /// Makes process `pid` a CPython whose frames the allocator probes read.
    pub fn set_python(&mut self, pid: u32, python: &memtrace_common::PythonProcess) -> Result<()> {
        let map = self.ebpf.map_mut("PYTHON_PROCS").context("eBPF object lacks map PYTHON_PROCS")?;
        let mut procs: HashMap<_, u32, memtrace_common::PythonProcess> = HashMap::try_from(map)?;
        procs.insert(pid, python, 0).context("writing PYTHON_PROCS")
    }

    /// Process `pid` no longer runs that CPython (it called execve).
    pub fn clear_python(&mut self, pid: u32) {
        if let Some(map) = self.ebpf.map_mut("PYTHON_PROCS") {
            if let Ok(mut procs) = HashMap::<_, u32, memtrace_common::PythonProcess>::try_from(map) {
                let _ = procs.remove(&pid);
            }
        }
    }

    /// Process `pid`'s slot in UNWIND_MAPPINGS (a forked child's is its parent's).
    pub fn unwind_slot(&self, pid: u32) -> Option<u32> {
        let map = self.ebpf.map("UNWIND_SLOTS")?;
        HashMap::<_, u32, u32>::try_from(map).ok()?.get(&pid, 0).ok()
    }

    /// The allocator totals of the whole scope now.
    pub fn heap_totals(&self) -> Result<HeapTotals> {
        let map = self.ebpf.map("HEAP_TOTALS").context("eBPF object lacks map HEAP_TOTALS")?;
        Ok(Array::<_, HeapTotals>::try_from(map)?.get(&0, 0)?)
    }

    /// Process `pid`'s own allocator totals now (None once it has exited:
    /// its last totals came with its exit event).
    pub fn process_heap_totals(&self, pid: u32) -> Option<HeapTotals> {
        let map = self.ebpf.map("TRACED")?;
        HashMap::<_, u32, TracedProcess>::try_from(map).ok()?.get(&pid, 0).ok().map(|p| p.heap)
    }

    /// Allocator calls entered and not yet returned, one at most per thread
    /// (ALLOC_PENDING): in flight now, or never to return.
    pub fn open_alloc_calls(&self) -> Result<u64> {
        let map = self.ebpf.map("ALLOC_PENDING").context("eBPF object lacks map ALLOC_PENDING")?;
        let pending: HashMap<_, u32, memtrace_common::PendingAlloc> = HashMap::try_from(map)?;
        Ok(pending.keys().filter(|k| k.is_ok()).count() as u64)
    }

    /// The allocations the live map holds now of the processes `of` takes,
    /// by process: one walk of the map for all of them (a walk costs two
    /// syscalls per entry, whoever it belongs to).
    pub fn live_allocations(&self, of: impl Fn(u32) -> bool) -> Result<BTreeMap<u32, Vec<LiveAllocation>>> {
        let map = self.ebpf.map("LIVE_ALLOCS").context("eBPF object lacks map LIVE_ALLOCS")?;
        let live: HashMap<_, AllocKey, LiveAlloc> = HashMap::try_from(map)?;
        let mut out: BTreeMap<u32, Vec<LiveAllocation>> = BTreeMap::new();
        // An entry freed while we iterate may end the walk early or be
        // skipped: the target is stopped (exit stop) or the count is a snapshot anyway.
        for entry in live.iter() {
            let (key, a) = entry?;
            if of(key.pid) {
                out.entry(key.pid).or_default().push(LiveAllocation {
                    pid: key.pid,
                    address: key.address,
                    size: a.size,
                    ts_ns: a.ts_ns,
                    stack_id: a.stack_id,
                    phase_seq: a.phase_seq,
                });
            }
        }
        Ok(out)
    }

    /// Removes what the kernel maps hold of processes that have ended and
    /// whose heap was read: their live allocations (`allocs`), their
    /// stacks' counters and, unless `keep_frames` (the `--events` log
    /// names stacks by id at the end), their stacks. A stack's id hashes
    /// its process, so no running process shares one. Without this a tree
    /// of short processes fills the maps (and the next one's allocations
    /// are lost). Returns the ids of the stacks removed.
    pub fn forget_heaps(
        &mut self,
        ended: &HashSet<u32>,
        allocs: &[LiveAllocation],
        keep_frames: bool,
    ) -> Result<Vec<u64>> {
        let map = self.ebpf.map_mut("LIVE_ALLOCS").context("eBPF object lacks map LIVE_ALLOCS")?;
        let mut live: HashMap<_, AllocKey, LiveAlloc> = HashMap::try_from(map)?;
        for a in allocs {
            // Gone already (a free raced the walk) is as good.
            let _ = live.remove(&AllocKey { address: a.address, pid: a.pid, _pad: 0 });
        }
        let map = self.ebpf.map_mut("STACK_STATS").context("eBPF object lacks map STACK_STATS")?;
        let mut stats: HashMap<_, u64, StackStats> = HashMap::try_from(map)?;
        let theirs: Vec<u64> =
            stats.iter().filter_map(|e| e.ok()).filter(|(_, s)| ended.contains(&s.pid)).map(|(id, _)| id).collect();
        for id in &theirs {
            let _ = stats.remove(id);
        }
        if !keep_frames {
            let map = self.ebpf.map_mut("STACKS").context("eBPF object lacks map STACKS")?;
            let mut stacks: HashMap<_, u64, StackFrames> = HashMap::try_from(map)?;
            for id in &theirs {
                let _ = stacks.remove(id);
            }
        }
        Ok(theirs)
    }

    /// Every allocation stack's counters now. STACK_STATS counts live bytes
    /// with wrapping adds; a stack whose frees were seen before its
    /// allocations (impossible by construction) would read huge: clamp to 0.
    pub fn stack_stats(&self) -> Result<Vec<(u64, StackStats)>> {
        let map = self.ebpf.map("STACK_STATS").context("eBPF object lacks map STACK_STATS")?;
        let stats: HashMap<_, u64, StackStats> = HashMap::try_from(map)?;
        let mut out = Vec::new();
        for entry in stats.iter() {
            let (id, mut s) = entry?;
            if s.live_bytes > i64::MAX as u64 {
                s.live_bytes = 0;
            }
            out.push((id, s));
        }
        Ok(out)
    }

    /// Takes the next phase sequence number for a mark made in userspace
    /// (`memtrace mark`). Its numbers have PHASE_SEQ_USER set, so an eBPF
    /// marker at the same instant never takes the same one. The kernel does
    /// not learn it: allocations after it are placed in its phase by time
    /// (`HeapMarks::phase_of`).
    pub fn next_phase_seq(&mut self) -> u32 {
        self.user_phase_marks += 1;
        PHASE_SEQ_USER | self.user_phase_marks
    }

    /// The user stack with this id, innermost frame first.
    pub fn stack(&self, id: u64) -> Result<Vec<u64>> {
        let map = self.ebpf.map("STACKS").context("eBPF object lacks map STACKS")?;
        let stacks: HashMap<_, u64, StackFrames> = HashMap::try_from(map)?;
        let s = stacks.get(&id, 0)?;
        Ok(s.ips[..(s.len as usize).min(s.ips.len())].to_vec())
    }

    /// The in-kernel counters summed over CPUs.
    pub fn counters(&self) -> Result<KernelCounters> {
        let map = self.ebpf.map("COUNTERS").context("eBPF object lacks map COUNTERS")?;
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        let mut out = KernelCounters::default();
        for counter in Counter::ALL {
            out.0[counter as usize] = array.get(&(counter as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// Stacks the eBPF unwinder cut short: (STACK_CUTS key, stacks).
    pub fn stack_cuts(&self) -> Result<Vec<(u64, u64)>> {
        let map = self.ebpf.map("STACK_CUTS").context("eBPF object lacks map STACK_CUTS")?;
        let cuts: HashMap<_, u64, u64> = HashMap::try_from(map)?;
        Ok(cuts.iter().filter_map(|entry| entry.ok()).collect())
    }
}

/// A phase marker's probe: (eBPF program, symbol, file offset).
type MarkerSite = (&'static str, &'static str, u64);

/// A file as the kernel knows it, and its version: the same path may hold
/// another build later (a rebuilt binary), which gets its own entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> FileIdentity {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// The file offsets of `binary`'s phase markers (program, symbol, offset),
/// or None when it does not define both.
fn marker_offsets(binary: &Path) -> Result<Option<Vec<MarkerSite>>> {
    let lib = Library::open(binary)?;
    let markers = [("phase_begin", "memtrace_phase_begin"), ("phase_end", "memtrace_phase_end")];
    let mut offsets = Vec::new();
    for (program, symbol) in markers {
        let Some(code) = lib.function(symbol)? else { return Ok(None) };
        let offset = lib.file_offset(code.address).with_context(|| format!("{symbol} outside the file's segments"))?;
        offsets.push((program, symbol, offset));
    }
    Ok(Some(offsets))
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection, ObjectSymbol};

    /// The instructions of one program of the embedded eBPF object.
    fn program(name: &str) -> Vec<[u8; 8]> {
        let elf = object::File::parse(super::OBJECT).unwrap();
        let sym = elf.symbols().find(|s| s.name() == Ok(name)).unwrap_or_else(|| panic!("no program {name}"));
        let section = elf.section_by_index(sym.section_index().unwrap()).unwrap();
        let data = section.data().unwrap();
        let start = sym.address() as usize;
        data[start..start + sym.size() as usize].chunks_exact(8).map(|i| i.try_into().unwrap()).collect()
    }

    #[test]
    fn phase_numbers_are_taken_with_an_atomic_fetch_and_add() {
        // BPF_STX | BPF_DW | BPF_ATOMIC with imm = BPF_ADD | BPF_FETCH. A
        // plain atomic add (imm 0) leaves its operand in the register, and
        // every marker would get the same number (LLVM emits that one for
        // a Relaxed fetch_add: see next_phase_seq in the eBPF crate).
        const FETCH_ADD: i32 = 0x01;
        for name in ["phase_begin", "phase_end", "phase_fn_enter", "phase_fn_exit"] {
            let insns = program(name);
            let found =
                insns.iter().any(|i| i[0] == 0xdb && i32::from_le_bytes(i[4..8].try_into().unwrap()) == FETCH_ADD);
            assert!(found, "{name} takes its phase number without BPF_FETCH");
        }
    }
}
