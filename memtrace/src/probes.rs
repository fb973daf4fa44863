//! Loading memtrace's eBPF object into the kernel and attaching its programs
//! to the target. Dropping `Probes` detaches and unloads everything.
use anyhow::{Context, Result};
use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        trace_point::TracePointLinkId,
        uprobe::{UProbeLinkId, UProbeScope},
        TracePoint, UProbe,
    },
    Ebpf, EbpfLoader,
};
use memtrace_common::{FileKey, KernelOffsets, TracepointOffsets, NUM_COUNTERS};

use std::{num::NonZeroU32, path::Path};

use crate::aspace::FileId;

/// The object built by build.rs from memtrace-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace.bpf.o"));

/// (program name in the object, tracepoint category, tracepoint name).
const TRACEPOINTS: [(&str, &str, &str); 15] = [
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sys_enter_mmap", "syscalls", "sys_enter_mmap"),
    ("sys_exit_mmap", "syscalls", "sys_exit_mmap"),
    ("sys_enter_munmap", "syscalls", "sys_enter_munmap"),
    ("sys_exit_munmap", "syscalls", "sys_exit_munmap"),
    ("sys_enter_madvise", "syscalls", "sys_enter_madvise"),
    ("sys_exit_madvise", "syscalls", "sys_exit_madvise"),
    ("sys_enter_mremap", "syscalls", "sys_enter_mremap"),
    ("sys_exit_mremap", "syscalls", "sys_exit_mremap"),
    ("page_fault_user", "exceptions", "page_fault_user"),
    ("rss_stat", "kmem", "rss_stat"),
    ("mm_filemap_fault", "filemap", "mm_filemap_fault"),
    ("mm_filemap_map_pages", "filemap", "mm_filemap_map_pages"),
    ("mm_filemap_add_to_page_cache", "filemap", "mm_filemap_add_to_page_cache"),
    ("mm_filemap_delete_from_page_cache", "filemap", "mm_filemap_delete_from_page_cache"),
];

pub struct Probes {
    ebpf: Ebpf,
    pub attached: Vec<String>,
    /// Links in attach order: (program name, link id).
    tracepoint_links: Vec<(&'static str, TracePointLinkId)>,
    uprobe_links: Vec<(&'static str, UProbeLinkId)>,
}

fn kernel_offsets() -> Result<KernelOffsets> {
    let btf = crate::btf::Btf::from_sys_fs()?;
    Ok(KernelOffsets {
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_max_fds: btf.member_offset("fdtable", "max_fds")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        file_f_inode: btf.member_offset("file", "f_inode")?,
        inode_i_ino: btf.member_offset("inode", "i_ino")?,
        inode_i_sb: btf.member_offset("inode", "i_sb")?,
        super_block_s_dev: btf.member_offset("super_block", "s_dev")?,
    })
}

impl Probes {
    /// `phase_stop`: the phase-marker probes stop the target's main thread
    /// (run mode only, where memtrace is its ptrace tracer).
    pub fn attach(tgid: u32, offsets: &TracepointOffsets, phase_stop: bool) -> Result<Probes> {
        // Offsets sys_exit_mmap needs to name a mapping's file from the fd
        // table; without them memtrace names files from /proc only.
        let kernel_offsets = kernel_offsets();
        let mut ebpf = EbpfLoader::new()
            .override_global("TARGET_TGID", &tgid, true)
            .override_global("OFFSETS", offsets, true)
            .override_global("PHASE_STOP", &u32::from(phase_stop), true)
            .override_global("KERNEL_OFFSETS", kernel_offsets.as_ref().unwrap_or(&KernelOffsets::default()), true)
            .load(OBJECT)
            .context("loading memtrace's eBPF object into the kernel")?;
        let mut attached = Vec::new();
        let mut tracepoint_links = Vec::new();
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
            eprintln!("memtrace: warning: mapped files will be named from /proc only (no kernel BTF offsets): {e:#}");
        }
        Ok(Probes { ebpf, attached, tracepoint_links, uprobe_links: Vec::new() })
    }

    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("eBPF object lacks map EVENTS")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Attaches to `memtrace_phase_begin`/`memtrace_phase_end` in `binary`
    /// (the target's executable) for process `pid`. Returns false when the
    /// binary has no such symbols: phases are optional.
    pub fn attach_phase_markers(&mut self, pid: u32, binary: &Path) -> Result<bool> {
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).context("PID 0")?);
        for (program, symbol) in [("phase_begin", "memtrace_phase_begin"), ("phase_end", "memtrace_phase_end")] {
            let probe: &mut UProbe =
                self.ebpf.program_mut(program).context("eBPF object lacks phase programs")?.try_into()?;
            probe.load().with_context(|| format!("verifier rejected {program}"))?;
            match probe.attach(symbol, binary, scope) {
                Ok(link) => self.uprobe_links.push((program, link)),
                Err(e) => {
                    let text = format!("{e:#}");
                    if text.contains("symbol") || text.contains("not found") {
                        return Ok(false);
                    }
                    return Err(e).with_context(|| format!("attaching a uprobe to {symbol} in {}", binary.display()));
                }
            }
            self.attached.push(format!("uprobe {symbol}"));
        }
        Ok(true)
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
        for (program, id) in std::mem::take(&mut self.tracepoint_links) {
            if let Some(Ok(tp)) = self.ebpf.program_mut(program).map(<&mut TracePoint>::try_from) {
                if let Ok(link) = tp.take_link(id) {
                    links.push(Box::new(link));
                }
            }
        }
        for (program, id) in std::mem::take(&mut self.uprobe_links) {
            if let Some(Ok(up)) = self.ebpf.program_mut(program).map(<&mut UProbe>::try_from) {
                if let Ok(link) = up.take_link(id) {
                    links.push(Box::new(link));
                }
            }
        }
        std::thread::scope(|s| {
            for link in links {
                s.spawn(move || drop(link));
            }
        });
        drop(self.ebpf);
    }

    /// The in-kernel counters summed over CPUs, indexed by `COUNTER_*`.
    pub fn counters(&self) -> Result<[u64; NUM_COUNTERS as usize]> {
        let map = self.ebpf.map("COUNTERS").context("eBPF object lacks map COUNTERS")?;
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        let mut out = [0u64; NUM_COUNTERS as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = array.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }
}
