//! User stacks through code without frame pointers: the caller's stack
//! pointer, return address and rbp found with the unwind rows userspace
//! compiled from each mapped file's `.eh_frame` (UNWIND_ROWS, per mapping
//! UNWIND_MAPPINGS). Code without a table is stepped over with its frame
//! pointer, so stacks mixing both kinds of code stay whole.
use aya_ebpf::{
    bindings::pt_regs,
    cty::c_void,
    helpers::{bpf_probe_read_user, generated::bpf_loop},
    macros::map,
    maps::Array,
};
use memtrace_common::{
    CfaBase, ExecMapping, ExecMappings, RbpRule, UnwindRow, MAX_EXEC_MAPPINGS, UNWIND_DEPTH, UNWIND_ROWS_MAX,
};

use crate::{
    heap::STACK_SCRATCH,
    regs::{frame_pointer, instruction_pointer, stack_pointer},
};

/// Every loaded file's rows, one file after another (userspace appends).
#[map]
static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(UNWIND_ROWS_MAX, 0);

/// The target's executable file mappings, rewritten by userspace whenever
/// they change.
#[map]
static UNWIND_MAPPINGS: Array<ExecMappings> = Array::with_max_entries(1, 0);

/// Binary-search steps that cover MAX_EXEC_MAPPINGS (2^9 > 256) and
/// UNWIND_ROWS_MAX (2^20 > 2^19) entries.
const MAPPING_STEPS: u32 = 9;
const ROW_STEPS: u32 = 20;

/// How a walk ended.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum End {
    /// At the outermost frame, a zero return address or a zero frame pointer.
    Complete,
    /// In code without a table, where the frame-pointer step failed.
    NoTable,
    /// At a rule the unwinder does not follow.
    Unsupported,
    /// A saved return address or rbp could not be read.
    Unreadable,
    /// After UNWIND_DEPTH frames.
    Depth,
}

/// One binary search in progress: the first index in [lo, hi) whose key is
/// above `key` is what it converges to. Each search is a bpf_loop of its
/// own: as a plain loop, the verifier follows both branches of every step
/// (2^20 paths for the rows) and passed its limit of 1,000,000 instructions.
struct Search {
    lo: u32,
    hi: u32,
    key: u64,
}

/// bpf_loop callback: one step of the search for the mapping holding `key`.
#[inline(never)]
extern "C" fn mapping_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Search` that `mapping_of` passed.
    let s = unsafe { &mut *ctx.cast::<Search>() };
    if s.lo >= s.hi {
        return 1;
    }
    let mid = s.lo + (s.hi - s.lo) / 2;
    let Some(m) = UNWIND_MAPPINGS.get(0) else { return 1 };
    let Some(e) = m.entries.get(mid as usize) else { return 1 };
    if e.start <= s.key {
        s.lo = mid + 1;
    } else {
        s.hi = mid;
    }
    0
}

/// bpf_loop callback: one step of the search for the row in force at `key`.
#[inline(never)]
extern "C" fn row_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Search` that `row_at` passed.
    let s = unsafe { &mut *ctx.cast::<Search>() };
    if s.lo >= s.hi {
        return 1;
    }
    let mid = s.lo + (s.hi - s.lo) / 2;
    let Some(r) = UNWIND_ROWS.get(mid) else { return 1 };
    if r.pc <= s.key {
        s.lo = mid + 1;
    } else {
        s.hi = mid;
    }
    0
}

/// The mapping holding `ip`: the last one starting at or below it.
#[inline(always)]
fn mapping_of(m: &ExecMappings, ip: u64) -> Option<ExecMapping> {
    let mut s = Search { lo: 0, hi: (m.count as u32).min(MAX_EXEC_MAPPINGS as u32), key: ip };
    // SAFETY: a callback with bpf_loop's signature; `s` outlives the call.
    unsafe { bpf_loop(MAPPING_STEPS + 1, mapping_step as *mut c_void, (&raw mut s).cast(), 0) };
    let e = *m.entries.get((s.lo as usize).checked_sub(1)?)?;
    (ip < e.end).then_some(e)
}

/// The row in force at file address `pc` among rows [first, first + rows).
#[inline(always)]
fn row_at(first: u32, rows: u32, pc: u64) -> Option<UnwindRow> {
    let mut s = Search { lo: first, hi: first.saturating_add(rows), key: pc };
    // SAFETY: as above.
    unsafe { bpf_loop(ROW_STEPS + 1, row_step as *mut c_void, (&raw mut s).cast(), 0) };
    if s.lo <= first {
        return None;
    }
    UNWIND_ROWS.get(s.lo - 1).copied()
}

#[inline(always)]
fn read(addr: u64) -> Option<u64> {
    // SAFETY: reads 8 bytes of the target's memory; a fault returns an error.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// One walk in progress: bpf_loop's callback context (scalars only; the
/// callback looks the maps up itself).
struct Walk {
    ip: u64,
    sp: u64,
    bp: u64,
    /// Frames written so far.
    n: u64,
    /// An `End` once the walk is over, else `RUNNING`.
    end: u32,
}

const RUNNING: u32 = u32::MAX;

/// Walks the user stack from `regs` into the per-CPU stack scratch
/// (innermost first); returns the frames written and how the walk ended.
/// None when no tables are loaded: the caller walks frame pointers instead.
/// `regs` are a return probe's: the caller's registers just after the call
/// returned, so the first frame's row is the one at its own address.
///
/// The frames go through `bpf_loop` (one callback the verifier checks once)
/// rather than a loop in this program: unrolled by the verifier, 64 frames
/// of two binary searches passed its limit of 1,000,000 instructions.
#[inline(always)]
pub fn walk(regs: *const pt_regs) -> Option<(usize, End)> {
    if UNWIND_MAPPINGS.get(0)?.count == 0 {
        return None;
    }
    let mut w =
        Walk { ip: instruction_pointer(regs), sp: stack_pointer(regs), bp: frame_pointer(regs), n: 0, end: RUNNING };
    // SAFETY: `step` has the callback signature bpf_loop expects, and `w`
    // outlives the call.
    unsafe { bpf_loop(UNWIND_DEPTH as u32, step as *mut c_void, (&raw mut w).cast(), 0) };
    let end = match w.end {
        RUNNING if w.ip == 0 => End::Complete,
        RUNNING => End::Depth,
        e if e == End::NoTable as u32 => End::NoTable,
        e if e == End::Unsupported as u32 => End::Unsupported,
        e if e == End::Unreadable as u32 => End::Unreadable,
        _ => End::Complete,
    };
    Some((w.n as usize, end))
}

/// bpf_loop's callback: one frame. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` that `walk` passed.
    let w = unsafe { &mut *ctx.cast::<Walk>() };
    match frame(w, index) {
        Some(end) => {
            w.end = end as u32;
            1
        }
        None => 0,
    }
}

/// Records frame number `index` (at `w.ip`) and steps to its caller; Some
/// when the walk ends. Every call but the last adds one frame, so the
/// frame's slot is the loop's index: the verifier sees an unknown index it
/// checks once, where a count kept in `w` would be a new constant each
/// round, and each round the callback verified again.
#[inline(always)]
fn frame(w: &mut Walk, index: u64) -> Option<End> {
    let ip = w.ip;
    if ip == 0 {
        return Some(End::Complete);
    }
    let i = index as usize;
    let Some(scratch) = STACK_SCRATCH.get_ptr_mut(0) else { return Some(End::Complete) };
    // SAFETY: the per-CPU scratch entry is ours for this program run.
    let Some(slot) = (unsafe { (*scratch).ips.get_mut(i) }) else { return Some(End::Depth) };
    *slot = ip;
    w.n = index + 1;
    let Some(m) = UNWIND_MAPPINGS.get(0) else { return Some(End::Complete) };
    // A return address points after its call, possibly at the next
    // function's first byte: the call itself is one byte earlier.
    let pc = if i == 0 { ip } else { ip - 1 };
    let row = mapping_of(m, pc)
        .filter(|e| e.rows != 0)
        .and_then(|e| row_at(e.first_row, e.rows, pc.wrapping_sub(e.bias)))
        .filter(|r| r.cfa != CfaBase::None as u8);
    let Some(row) = row else {
        // No table here: one frame-pointer step. rbp == 0 is where
        // frame-pointer code ends its chain (`_start` clears it).
        if w.bp == 0 {
            return Some(End::Complete);
        }
        let (Some(ra), Some(next)) = (read(w.bp.wrapping_add(8)), read(w.bp)) else {
            return Some(End::NoTable);
        };
        (w.ip, w.sp, w.bp) = (ra, w.bp.wrapping_add(16), next);
        return None;
    };
    let offset = row.cfa_offset as i64 as u64;
    let cfa = match row.cfa {
        c if c == CfaBase::Rsp as u8 => w.sp.wrapping_add(offset),
        c if c == CfaBase::Rbp as u8 => w.bp.wrapping_add(offset),
        // The PLT expression: 8 more once the stub has pushed its index.
        c if c == CfaBase::Plt as u8 => w.sp.wrapping_add(if ip & 15 >= 11 { 16 } else { 8 }),
        c if c == CfaBase::Outermost as u8 => return Some(End::Complete),
        _ => return Some(End::Unsupported),
    };
    let Some(ra) = read(cfa.wrapping_sub(8)) else { return Some(End::Unreadable) };
    match row.rbp {
        r if r == RbpRule::Unchanged as u8 => {}
        r if r == RbpRule::AtCfa as u8 => match read(cfa.wrapping_add(row.rbp_offset as i64 as u64)) {
            Some(saved) => w.bp = saved,
            None => return Some(End::Unreadable),
        },
        _ => return Some(End::Unsupported),
    }
    (w.ip, w.sp) = (ra, cfa);
    None
}
