//! Faults the kernel takes on the target's memory for it (read() copying
//! into a buffer): counted apart, and with them memtrace's count matches
//! the kernel's own.
use std::process::Command;

use crate::common::*;

#[test]
fn faults_taken_in_kernel_mode_for_the_target_are_counted_and_match_the_kernel() {
    let _root = require_root();
    let dir = scratch("kernel_faults");
    let bin = dir.join("read_into");
    let out = run(Command::new("cc").args(["-g", "-O2", "-o"]).arg(&bin).arg(root_dir().join("tests/c/read_into.c")));
    assert!(out.status.success(), "cc: {}", describe(&out));
    let file = dir.join("data");
    // Written once before tracing, so the traced run only reads it.
    assert!(run(Command::new(&bin).arg(&file)).status.success());
    let traced = Memtrace::run().json(dir.join("trace.json")).target([&bin, &file]).traced();
    let (c, kernel) = (&traced.trace.counters, traced.trace.kernel.as_ref().expect("the kernel's count"));
    // The 2,048 pages of the buffer, each first touched by read()'s copy.
    assert!(c.page_faults_kernel_mode >= 2048, "{c:#?}");
    assert!(c.page_faults < 2048, "the program itself touches few pages: {c:#?}");
    // The kernel also counts faults taken through get_user_pages (execve
    // copying the arguments), which raise no fault tracepoint: ours may be
    // a little lower (27 of 2,132 here), never higher. Without the
    // kernel-mode faults it would be 54 of 2,132.
    let measured = c.page_faults + c.page_faults_kernel_mode;
    let counted = kernel.minor_faults + kernel.major_faults;
    assert!(
        measured <= counted && (counted - measured) * 50 <= counted,
        "measured {measured} against {counted}: {c:#?}"
    );
    assert!(traced.report().contains("in kernel mode"), "{}", traced.report());
}
