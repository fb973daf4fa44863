//! Anonymous memory by origin at stop: each site's bytes (measured), the
//! kernel's (smaps "Anonymous", split by pagemap where one mapping holds
//! several sites), the creators' stacks symbolized, and the sites grouped
//! by what made them ("pymalloc arenas", "thread stacks", ...). Runs while
//! the target is alive (its exit stop, or before detaching).
use std::collections::{BTreeMap, HashMap};

use crate::{
    kernel::probes::Probes,
    model::{
        anon_origins::{AnonOrigins, Site, SiteUsage},
        aspace::{AnonOrigin, FileId},
        stats::TraceStats,
    },
    procfs,
    symbolize::{self, describe, FileMapping, Frame},
    trace::{AnonMemory, AnonOriginEntry},
};

/// Origins listed in the trace; the others are counted.
pub(crate) const MAX_ORIGINS: usize = 30;

/// What the stop needs to know about one process.
pub struct AnonContext<'a> {
    pub pid: u32,
    pub anon: &'a AnonOrigins,
    pub stats: &'a TraceStats,
    /// Its anonymous RSS growth while traced (kernel truth, rss_stat).
    pub kernel_growth_bytes: i64,
    /// Its /proc still shows its mappings (the kernel truth can be read).
    pub alive: bool,
    pub saved_mappings: &'a [FileMapping],
    pub python: Option<&'static crate::runtime::cpython::Layout>,
    /// The CPython interpreter's file, when it is one (pymalloc's arenas
    /// are the mmaps its own code makes).
    pub interpreter: Option<&'a str>,
}

/// The kernel's anonymous bytes by site: smaps per mapping, split by
/// pagemap between the sites the model has in one mapping.
fn kernel_by_site(pid: u32, stats: &TraceStats) -> Result<HashMap<Site, u64>, String> {
    let vmas = procfs::anon_smaps(pid).map_err(|e| format!("could not read /proc/{pid}/smaps: {e}"))?;
    let model: Vec<(u64, u64, Site)> = stats.mappings().map(|(s, e, r)| (s, e, Site::of(r))).collect();
    let mut out: HashMap<Site, u64> = HashMap::new();
    for vma in vmas {
        let pieces: Vec<&(u64, u64, Site)> = model.iter().filter(|(s, e, _)| *s < vma.end && *e > vma.start).collect();
        let distinct = |p: &[&(u64, u64, Site)]| p.windows(2).any(|w| w[0].2 != w[1].2);
        match pieces.as_slice() {
            [] => *out.entry(Site::Other).or_default() += vma.anon_bytes,
            [one, ..] if !distinct(&pieces) => *out.entry(one.2).or_default() += vma.anon_bytes,
            _ => {
                // Several origins in one mapping (the kernel merged
                // neighbours): its bytes split as its pages are present.
                let present: Vec<(Site, u64)> = pieces
                    .iter()
                    .map(|(s, e, site)| {
                        let bytes = procfs::private_present_bytes(pid, (*s).max(vma.start), (*e).min(vma.end));
                        (*site, bytes.unwrap_or(0))
                    })
                    .collect();
                let total: u64 = present.iter().map(|p| p.1).sum();
                let mut left = vma.anon_bytes;
                for (i, (site, bytes)) in present.iter().enumerate() {
                    let share = if i + 1 == present.len() {
                        left
                    } else if total == 0 {
                        0
                    } else {
                        ((vma.anon_bytes as u128 * *bytes as u128) / total as u128) as u64 & !4095
                    };
                    let share = share.min(left);
                    left -= share;
                    *out.entry(*site).or_default() += share;
                }
            }
        }
    }
    Ok(out)
}

/// glibc's mmap wrappers: the frame the syscall returns into, never the creator.
const MMAP_WRAPPERS: [&str; 5] = ["mmap", "mmap64", "__mmap", "__mmap64", "__GI___mmap64"];

/// The malloc family and glibc's malloc internals (when it has symbols).
const MALLOC: [&str; 24] = [
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "memalign",
    "aligned_alloc",
    "posix_memalign",
    "valloc",
    "pvalloc",
    "__libc_malloc",
    "__libc_calloc",
    "__libc_realloc",
    "__libc_memalign",
    "__libc_valloc",
    "__libc_pvalloc",
    "__posix_memalign",
    "_int_malloc",
    "_int_realloc",
    "_int_memalign",
    "sysmalloc",
    "new_heap",
    "alloc_new_heap",
    "_int_new_arena",
    "arena_get2",
];

/// What made a mapping, from its creator stack (innermost frame first):
/// the first frame, innermost out, that a known creator's rule matches;
/// else the innermost frame outside the mmap wrappers.
fn function(f: &Frame) -> &str {
    f.function.as_deref().unwrap_or("")
}

fn label(frames: &[Frame], interpreter: Option<&str>) -> String {
    let python = |f: &Frame| f.module.as_deref() == Some(crate::runtime::python_frames::MODULE);
    let native: Vec<&Frame> = frames.iter().filter(|f| !python(f)).collect();
    for f in &native {
        let name = function(f);
        if MMAP_WRAPPERS.contains(&name) {
            continue;
        }
        if MALLOC.contains(&name) {
            return "malloc heap: mmap'd chunks and arenas".into();
        }
        if name == "_PyObject_ArenaMmap" || name == "new_arena" {
            return "pymalloc arenas".into();
        }
        // glibc's pthread_create is __pthread_create_2_1 in its debug info.
        if name.starts_with("pthread_create") || name.starts_with("__pthread_create") || name == "allocate_stack" {
            return "thread stacks".into();
        }
        if name.starts_with("runtime.sys") || name == "runtime.mmap" {
            return "Go runtime".into();
        }
        if name.contains("pages_map") || name.contains("extent_alloc_mmap") {
            return "jemalloc".into();
        }
        if name.starts_with("_mi_os_") || name.starts_with("_mi_prim_") || name.starts_with("mi_os_") {
            return "mimalloc".into();
        }
        if name.starts_with("TCMalloc_SystemAlloc") || name.starts_with("tcmalloc::") {
            return "tcmalloc".into();
        }
        let module = f.module.as_deref().unwrap_or("");
        if module.contains("/ld-linux") || module.contains("/ld-musl") {
            return "dynamic loader (.bss, TLS)".into();
        }
    }
    // The interpreter's own code calling mmap with no allocator in between:
    // CPython maps only pymalloc's arenas itself (its C functions for them
    // are static: a distribution's stripped build has no names for them).
    let creator = native.iter().find(|f| !MMAP_WRAPPERS.contains(&function(f)) && !is_libc(f));
    if let (Some(f), Some(interpreter)) = (creator, interpreter) {
        if f.module.as_deref() == Some(interpreter) {
            return "pymalloc arenas".into();
        }
    }
    let innermost_python = frames.iter().find(|f| python(f)).map(describe);
    match (creator.map(|f| describe(f)), innermost_python) {
        (Some(c), Some(p)) => format!("mmap from {c} <- {p}"),
        (Some(c), None) => format!("mmap from {c}"),
        (None, Some(p)) => format!("mmap from {p}"),
        (None, None) => "mmap (no frames)".into(),
    }
}

fn is_libc(f: &Frame) -> bool {
    let module = f.module.as_deref().unwrap_or("");
    let base = module.rsplit('/').next().unwrap_or(module);
    base.starts_with("libc.so") || base.starts_with("libc-")
}

/// A site with no stack: its origin's name and kind.
fn label_site(site: &Site, file_path: impl Fn(&FileId) -> String) -> (String, &'static str) {
    match site {
        Site::Brk => ("malloc heap: brk ([heap])".into(), "brk"),
        Site::Stack => ("main thread stack ([stack])".into(), "stack"),
        Site::FileCopy(id) => (format!("private copies of {}", file_path(id)), "file_copy"),
        Site::Other => ("other ([vdso], SysV shared memory, unknown)".into(), "other"),
        Site::Mapping(AnonOrigin::Unseen) => ("mapped before tracing (no stack)".into(), "unseen"),
        Site::Mapping(AnonOrigin::Mmap { stack_id: 0, .. }) => ("mmap (stack lost)".into(), "mmap"),
        Site::Mapping(AnonOrigin::Mmap { .. }) => ("mmap".into(), "mmap"),
    }
}

/// One origin while it is being summed.
#[derive(Default)]
struct Group {
    kind: &'static str,
    sites: Vec<Site>,
    rss: u64,
    kernel: u64,
    mappings: u64,
    mapped: u64,
    stacks: u64,
    top: Option<(u64, Vec<Frame>)>,
}

/// Process `ctx.pid`'s anonymous memory by origin.
pub fn at_stop(probes: &Probes, ctx: &AnonContext) -> AnonMemory {
    let anon = ctx.anon;
    let (kernel, truth) = match ctx.alive.then(|| kernel_by_site(ctx.pid, ctx.stats)) {
        Some(Ok(k)) => (Some(k), "smaps Anonymous when tracing stopped, split by pagemap".to_string()),
        Some(Err(e)) => (None, e),
        None => (None, "none: the process was gone before its smaps could be read".into()),
    };
    // Every site that held anything, by the events or by the kernel.
    let mut sites: BTreeMap<Site, SiteUsage> = anon
        .sites
        .iter()
        .filter(|(_, u)| u.peak_rss_bytes > 0 || u.rss_bytes > 0)
        .map(|(s, u)| (*s, u.clone()))
        .collect();
    for site in kernel.iter().flat_map(|k| k.keys()) {
        sites.entry(*site).or_default();
    }
    let with_stack: Vec<(Site, u64)> = sites
        .keys()
        .filter_map(|s| match s {
            Site::Mapping(AnonOrigin::Mmap { stack_id, .. }) if *stack_id != 0 => Some((*s, *stack_id)),
            _ => None,
        })
        .collect();
    let words: Vec<Vec<u64>> = with_stack.iter().map(|(_, id)| probes.stack(*id).unwrap_or_default()).collect();
    let frames: HashMap<Site, Vec<Frame>> = with_stack
        .iter()
        .map(|(s, _)| *s)
        .zip(symbolize::symbolize(ctx.pid, &words, ctx.saved_mappings, ctx.python))
        .collect();
    let file_path = |id: &FileId| ctx.stats.files.get(id).map_or_else(|| id.placeholder_name(), |f| f.path.clone());
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for (site, usage) in &sites {
        let (name, kind) = match frames.get(site) {
            Some(f) if !f.is_empty() => (label(f, ctx.interpreter), "mmap"),
            _ => label_site(site, file_path),
        };
        let g = groups.entry(name).or_default();
        g.kind = kind;
        g.sites.push(*site);
        g.rss += usage.rss_bytes;
        g.kernel += kernel.as_ref().and_then(|k| k.get(site)).copied().unwrap_or(0);
        g.mappings += usage.mappings;
        g.mapped += usage.mapped_bytes;
        if let Some(f) = frames.get(site) {
            g.stacks += 1;
            if g.top.as_ref().is_none_or(|(rss, _)| usage.rss_bytes > *rss) {
                // From mmap's caller on: the wrapper itself says nothing.
                let from_caller = f.iter().skip_while(|f| MMAP_WRAPPERS.contains(&function(f))).cloned().collect();
                g.top = Some((usage.rss_bytes, from_caller));
            }
        }
    }
    let origins: Vec<AnonOriginEntry> = groups
        .into_iter()
        .map(|(origin, g)| {
            let (stack_rss_bytes, stack) = g.top.unwrap_or_default();
            AnonOriginEntry {
                origin,
                kind: g.kind.into(),
                rss_bytes: g.rss,
                peak_rss_bytes: anon.group_peak(&g.sites),
                kernel_anon_bytes: kernel.is_some().then_some(g.kernel),
                mappings: g.mappings,
                mapped_bytes: g.mapped,
                stacks: g.stacks,
                stack,
                stack_rss_bytes,
            }
        })
        .collect();
    let mut memory = AnonMemory {
        kernel_growth_bytes: ctx.kernel_growth_bytes,
        attributed_bytes: anon.attributed_bytes(),
        unattributed_increase_bytes: anon.unattributed_increase_bytes,
        unattributed_decrease_bytes: anon.unattributed_decrease_bytes,
        released_at_exit_bytes: anon.released_at_exit_bytes,
        stacks_lost: anon.stacks_lost,
        truth,
        origins: Vec::new(),
        origins_not_listed: 0,
    };
    // Sorted and bounded as every sum of them is.
    memory.add(&AnonMemory { origins, ..AnonMemory::default() }, MAX_ORIGINS);
    memory
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            function: (!function.is_empty()).then(|| function.to_string()),
            module: Some(module.into()),
            offset: Some(0x1234),
            ..Frame::default()
        }
    }

    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

    #[test]
    fn known_creators_are_named_by_any_frame_innermost_first() {
        // Debian's stripped libc: malloc's internals have no names, malloc has.
        let malloc =
            [frame("mmap64", LIBC), frame("", LIBC), frame("", LIBC), frame("malloc", LIBC), frame("main", "/a")];
        assert_eq!(label(&malloc, None), "malloc heap: mmap'd chunks and arenas");
        let thread = [frame("mmap64", LIBC), frame("pthread_create@@GLIBC_2.34", LIBC), frame("main", "/a")];
        assert_eq!(label(&thread, None), "thread stacks");
        let go = [frame("runtime.sysMmap", "/srv/app"), frame("runtime.sysReserveOS", "/srv/app")];
        assert_eq!(label(&go, None), "Go runtime");
        let own = [frame("mmap64", LIBC), frame("map_buffer", "/a"), frame("main", "/a")];
        assert_eq!(label(&own, None), "mmap from map_buffer");
    }

    #[test]
    fn the_interpreter_s_own_mmaps_are_pymalloc_s_arenas() {
        let py = "/usr/bin/python3.11";
        let arena = [frame("mmap64", LIBC), frame("", py), frame("", py), frame("PyObject_Malloc", py)];
        assert_eq!(label(&arena, Some(py)), "pymalloc arenas");
        // A large object goes through malloc first: malloc's, not pymalloc's.
        let large = [frame("mmap64", LIBC), frame("", LIBC), frame("malloc", LIBC), frame("", py)];
        assert_eq!(label(&large, Some(py)), "malloc heap: mmap'd chunks and arenas");
        // Not an interpreter: just who called mmap.
        assert_eq!(label(&arena, None), "mmap from bin/python3.11+0x1234");
        let named = [frame("mmap64", LIBC), frame("_PyObject_ArenaMmap", py)];
        assert_eq!(label(&named, None), "pymalloc arenas");
    }

    #[test]
    fn sites_without_stacks_say_what_they_are() {
        let path = |_: &FileId| "/usr/lib/libfoo.so".to_string();
        let file = FileId { major: 8, minor: 1, inode: 3 };
        assert_eq!(label_site(&Site::Brk, path).1, "brk");
        assert_eq!(label_site(&Site::FileCopy(file), path).0, "private copies of /usr/lib/libfoo.so");
        assert_eq!(label_site(&Site::Mapping(AnonOrigin::Unseen), path).1, "unseen");
        assert_eq!(label_site(&Site::Mapping(AnonOrigin::Mmap { pid: 1, stack_id: 0 }), path).0, "mmap (stack lost)");
    }
}
