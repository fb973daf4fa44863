//! Anonymous memory by origin: every change of the kernel's anonymous RSS
//! counter attributed to the mapping it happened in, each anonymous
//! mapping known by the stack of its mmap. Checked against smaps (read by
//! memtrace at the exit stop, pages intact: the programs end with _exit)
//! and against what the programs report of themselves.
use memtrace::trace::{AnonMemory, AnonOriginEntry, Trace};

use crate::common::*;

const PYTHON: &str = "/usr/bin/python3";

fn anon(trace: &Trace) -> &AnonMemory {
    trace.anon.as_ref().expect("anonymous memory by origin in the trace")
}

fn origin<'a>(a: &'a AnonMemory, name: &str) -> &'a AnonOriginEntry {
    a.origins.iter().find(|o| o.origin == name).unwrap_or_else(|| panic!("no origin {name}: {:#?}", a.origins))
}

fn within(measured: u64, reference: u64, fraction: f64) -> bool {
    (measured as f64 - reference as f64).abs() <= reference as f64 * fraction
}

fn has_frame(o: &AnonOriginEntry, function: &str) -> bool {
    o.stack.iter().any(|f| f.function.as_deref() == Some(function))
}

/// The figures must add up: what the origins hold plus what could not be
/// attributed is the kernel's growth.
fn assert_accounted(a: &AnonMemory) {
    let listed: u64 = a.origins.iter().map(|o| o.rss_bytes).sum();
    assert!(listed <= a.attributed_bytes, "{a:#?}");
    let net = a.attributed_bytes as i64 + a.unattributed_increase_bytes as i64
        - a.unattributed_decrease_bytes as i64
        - a.released_at_exit_bytes as i64;
    assert_eq!(net, a.kernel_growth_bytes, "{a:#?}");
}

/// A C program built without frame pointers (as release builds are): its
/// own mmap, a large malloc, four thread stacks and the brk heap, each
/// named, each equal to the kernel's count of its pages.
#[test]
fn a_c_program_s_anonymous_memory_is_named_by_who_mapped_it() {
    let _root = require_root();
    let dir = scratch("anon_c");
    let bin = dir.join("anon_origins");
    cc_no_frame_pointers(&[
        "-o".as_ref(),
        bin.as_ref(),
        root_dir().join("tests/c/anon_origins.c").as_ref(),
        "-lpthread".as_ref(),
    ]);
    let traced = Memtrace::run().json(dir.join("trace.json")).target([&bin]).traced();
    let a = anon(&traced.trace);
    assert!(a.truth.starts_with("smaps"), "{}", a.truth);
    assert_accounted(a);

    let buffer = origin(a, "mmap from map_buffer (c/anon_origins.c:19)");
    assert_eq!((buffer.rss_bytes, buffer.kernel_anon_bytes, buffer.mappings), (24 << 20, Some(24 << 20), 1));
    assert!(has_frame(buffer, "map_buffer") && has_frame(buffer, "main"), "{buffer:#?}");

    // glibc serves a 12 MiB malloc with an mmap of its own (a page more for its header).
    let malloc = origin(a, "malloc heap: mmap'd chunks and arenas");
    assert!(within(malloc.rss_bytes, 12 << 20, 0.01), "{malloc:#?}");
    assert_eq!(Some(malloc.rss_bytes), malloc.kernel_anon_bytes, "{malloc:#?}");
    // Through malloc, still running when it called mmap (its return
    // address is the kernel's uretprobe trampoline): the walk reaches main.
    assert!(has_frame(malloc, "main"), "{malloc:#?}");

    // Four threads, each 1 MiB deep into its stack (plus the pages glibc
    // and the thread's start touch).
    let stacks = origin(a, "thread stacks");
    assert_eq!(stacks.mappings, 4, "{stacks:#?}");
    assert!(stacks.rss_bytes >= 4 << 20 && stacks.rss_bytes <= (4 << 20) + 4 * (64 << 10), "{stacks:#?}");
    assert_eq!(Some(stacks.rss_bytes), stacks.kernel_anon_bytes, "{stacks:#?}");

    // 4,096 blocks of 1,000 bytes from the main arena.
    let brk = origin(a, "malloc heap: brk ([heap])");
    assert!(brk.rss_bytes >= 4096 * 1000 && brk.rss_bytes < 5 << 20, "{brk:#?}");
    assert_eq!(Some(brk.rss_bytes), brk.kernel_anon_bytes, "{brk:#?}");

    assert_eq!(&a.origins[0].origin, &buffer.origin, "largest first");
    let report = traced.report();
    assert!(report.contains("Anonymous memory by origin") && report.contains("thread stacks"), "{report}");
}

/// What the Python program printed of its own anonymous RSS (kB), after
/// minus before building its objects.
fn printed_growth(out: &str) -> u64 {
    let value = |key: &str| -> u64 {
        let field =
            out.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap_or_else(|| panic!("{key} in {out}"));
        field.parse().unwrap()
    };
    (value("anon_kib_after=") - value("anon_kib_before=")) << 10
}

/// Many small Python objects: pymalloc's arenas are the largest origin,
/// within 2 % of the anonymous RSS growth the kernel reports (rss_stat)
/// and of its count of the arenas' pages (smaps), and hold what the
/// program itself saw its anonymous RSS grow by; the stack that made them names the
/// Python function. 3,000,000 objects (about 290 MiB) keep the
/// interpreter's own start (a few MiB of its data and relocations) under
/// 2 % of the growth. In Debian's python3 (CPython in the executable) and in
/// a program embedding Debian's libpython3.11.
#[test]
fn pymalloc_s_arenas_are_the_largest_origin_of_many_small_objects() {
    let _root = require_root();
    let dir = scratch("anon_python");
    let script = root_dir().join("tests/python/anon/small_objects.py");
    let embed = build_embed_python(&dir);
    let run_script = format!(
        "import runpy, sys; sys.argv = ['small_objects.py', '3000000', '--hold']; runpy.run_path({:?}, run_name='__main__')",
        script.display().to_string()
    );
    for (name, argv) in [
        ("python3", vec![PYTHON.to_string(), script.display().to_string(), "3000000".into(), "--hold".into()]),
        ("embedded", vec![embed.display().to_string(), run_script]),
    ] {
        let traced = Memtrace::run().json(dir.join(format!("{name}.json"))).target(&argv).traced();
        let grown = printed_growth(&traced.report());
        let a = anon(&traced.trace);
        assert_accounted(a);
        let arenas = &a.origins[0];
        assert_eq!(arenas.origin, "pymalloc arenas", "{name}: {:#?}", a.origins);
        // The program saw its objects' growth; the arenas also hold what
        // the interpreter's start made (its imports: a few MiB at most).
        let rss = arenas.rss_bytes;
        assert!(
            rss as f64 >= grown as f64 * 0.98 && rss <= grown + (4 << 20),
            "{name}: {rss} vs the program's {grown}"
        );
        let kernel = arenas.kernel_anon_bytes.expect("smaps at the exit stop");
        assert!(within(arenas.rss_bytes, kernel, 0.02), "{name}: {arenas:#?}");
        assert!(within(arenas.rss_bytes, a.kernel_growth_bytes as u64, 0.02), "{name}: {a:#?}");
        let python: Vec<_> = arenas.stack.iter().filter(|f| f.module.as_deref() == Some("[python]")).collect();
        assert!(
            python.iter().any(|f| f.function.as_deref() == Some("build")
                && f.file.as_deref().is_some_and(|p| p.ends_with("small_objects.py"))),
            "{name}: {:#?}",
            arenas.stack
        );
    }
}
