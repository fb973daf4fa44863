//! User stacks through code without frame pointers: the caller's stack
//! pointer, return address and rbp found with the unwind rows userspace
//! compiled from each mapped file's `.eh_frame` (one array per file in
//! UNWIND_TABLES, per mapping UNWIND_MAPPINGS). Code without a table is stepped over with its frame
//! pointer, so stacks mixing both kinds of code stay whole.
use aya_ebpf::{
    bindings::pt_regs,
    btf_maps::{self, ArrayOfMaps},
    cty::c_void,
    helpers::{bpf_get_current_task, bpf_probe_read_user, generated::bpf_loop},
    macros::{btf_map, map},
    maps::{Array, HashMap, PerCpuArray},
};
use memtrace_common::{
    stack_cut_key, unwind_cache_key, unwind_cache_slot, CachedRow, CfaBase, ExecMapping, ExecMappings, RbpRule,
    StackCut, UnwindRow, BPF_F_INNER_MAP, MAX_EXEC_MAPPINGS, MAX_TRACED, STACK_CUTS_MAX, UNWIND_CACHE_SLOTS,
    UNWIND_DEPTH, UNWIND_MAPPING_SLOTS, UNWIND_TABLES_MAX,
};

use crate::{
    heap::STACK_SCRATCH,
    mmap_file::{field, KERNEL_OFFSETS},
    regs::{frame_pointer, instruction_pointer, stack_pointer},
};

/// One table per loaded file: an array of its rows, created by userspace
/// with as many entries as the file has rows (BPF_F_INNER_MAP lets them
/// differ from the template's one), so a large library fits and memory is
/// what the files need.
#[btf_map]
static UNWIND_TABLES: ArrayOfMaps<
    btf_maps::Array<UnwindRow, 1, { BPF_F_INNER_MAP as usize }>,
    { UNWIND_TABLES_MAX as usize },
> = ArrayOfMaps::new();

/// Executable file mapping lists, one per address-space layout, rewritten
/// by userspace whenever a process's code mappings change. A forked child
/// shares its parent's slot until it maps code of its own (userspace then
/// gives it one).
#[map]
static UNWIND_MAPPINGS: Array<ExecMappings> = Array::with_max_entries(UNWIND_MAPPING_SLOTS, 0);

/// Each traced process's slot in UNWIND_MAPPINGS (none: frame pointers).
#[map]
static UNWIND_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACED, 0);

/// A new child walks with its parent's mapping list (same code, same addresses).
#[inline(always)]
pub fn inherit(parent: u32, child: u32) {
    // SAFETY: read-only lookup of a plain value.
    if let Some(&slot) = unsafe { UNWIND_SLOTS.get(parent) } {
        let _ = UNWIND_SLOTS.insert(child, slot, 0);
    }
}

/// A process that exited walks no more.
#[inline(always)]
pub fn forget(pid: u32) {
    let _ = UNWIND_SLOTS.remove(pid);
}

/// The row in force at code addresses walked lately, per CPU, direct-mapped
/// by `unwind_cache_slot`: one array lookup per frame instead of the two
/// searches (an LRU hash map instead cost ~100 ns a frame more).
#[map]
static UNWIND_CACHE: PerCpuArray<CachedRow> = PerCpuArray::with_max_entries(UNWIND_CACHE_SLOTS, 0);

/// Stacks cut short, by the module of the last frame reached and the reason
/// (`stack_cut_key`): "no unwind table in libfoo.so" names what to fix.
#[map]
static STACK_CUTS: HashMap<u64, u64> = HashMap::with_max_entries(STACK_CUTS_MAX, 0);

/// Binary-search steps that cover MAX_EXEC_MAPPINGS (2^9 > 256) and
/// UNWIND_TABLE_ROWS_MAX (2^23) entries (a search ends as soon as its
/// range is empty: a small table takes few steps).
const MAPPING_STEPS: u32 = 9;
const ROW_STEPS: u32 = 24;

/// How a walk ended: `Walk::end` holds this, or a `StackCut`.
const COMPLETE: u32 = 0;

/// One binary search in progress: the first index in [lo, hi) whose key is
/// above `key` is what it converges to. Each search is a bpf_loop of its
/// own: as a plain loop, the verifier follows both branches of every step
/// (2^20 paths for the rows) and passed its limit of 1,000,000 instructions.
struct Search {
    lo: u32,
    hi: u32,
    key: u64,
    /// The mapping search's list in UNWIND_MAPPINGS, or the row search's
    /// table in UNWIND_TABLES.
    index: u32,
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
    let Some(m) = UNWIND_MAPPINGS.get(s.index) else { return 1 };
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
    let Some(r) = UNWIND_TABLES.get_value(s.index, &mid) else { return 1 };
    if r.pc <= s.key {
        s.lo = mid + 1;
    } else {
        s.hi = mid;
    }
    0
}

/// The mapping holding `ip`: the last one starting at or below it.
#[inline(always)]
fn mapping_of(slot: u32, m: &ExecMappings, ip: u64) -> Option<ExecMapping> {
    let mut s = Search { lo: 0, hi: (m.count as u32).min(MAX_EXEC_MAPPINGS as u32), key: ip, index: slot };
    // SAFETY: a callback with bpf_loop's signature; `s` outlives the call.
    unsafe { bpf_loop(MAPPING_STEPS + 1, mapping_step as *mut c_void, (&raw mut s).cast(), 0) };
    let e = *m.entries.get((s.lo as usize).checked_sub(1)?)?;
    (ip < e.end).then_some(e)
}

/// The row in force at file address `pc` in a table of `rows` rows.
#[inline(always)]
fn row_at(table: u32, rows: u32, pc: u64) -> Option<UnwindRow> {
    let mut s = Search { lo: 0, hi: rows, key: pc, index: table };
    // SAFETY: as above.
    unsafe { bpf_loop(ROW_STEPS + 1, row_step as *mut c_void, (&raw mut s).cast(), 0) };
    let last = s.lo.checked_sub(1)?;
    UNWIND_TABLES.get_value(table, &last).copied()
}

/// Two words of the target's stack in one helper call.
#[inline(always)]
fn read_pair(addr: u64) -> Option<[u64; 2]> {
    // SAFETY: reads 16 bytes of the target's memory; a fault returns an error.
    unsafe { bpf_probe_read_user(addr as *const [u64; 2]) }.ok()
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
    /// `COMPLETE` or a `StackCut` once the walk is over, else `RUNNING`.
    end: u32,
    /// The process's mapping list in UNWIND_MAPPINGS.
    slot: u32,
    /// The innermost pending uretprobe return of this thread not yet met
    /// (a kernel `struct return_instance`, 0: none) and the stack slot
    /// whose return address it replaced with its trampoline.
    ri: u64,
    ri_slot: u64,
}

const RUNNING: u32 = u32::MAX;

/// Walks the user stack from `regs` into the per-CPU stack scratch
/// (innermost first); returns the frames written and, for a stack cut
/// short, why (also counted in STACK_CUTS by module). None when no tables
/// are loaded: the caller walks frame pointers instead. `regs` are a
/// return probe's: the caller's registers just after the call returned, so
/// the first frame's row is the one at its own address.
///
/// The frames go through `bpf_loop` (one callback the verifier checks once)
/// rather than a loop in this program: unrolled by the verifier, 64 frames
/// of two binary searches passed its limit of 1,000,000 instructions.
#[inline(always)]
///
/// `REPAIR`: return addresses that a uretprobe replaced with its trampoline
/// are put back (a walk from inside a probed call still running: an mmap
/// inside malloc). Off for the allocation probes' own walks, taken after
/// the probed call returned: the check in every frame would double the
/// callback the verifier checks (alloc_exit passed its 1,000,000 limit).
pub fn walk<const REPAIR: bool>(pid: u32, regs: *const pt_regs) -> Option<(usize, Option<StackCut>)> {
    // SAFETY: read-only lookup of a plain value.
    let slot = *unsafe { UNWIND_SLOTS.get(pid) }?;
    let mappings = UNWIND_MAPPINGS.get(slot)?;
    if mappings.count == 0 {
        return None;
    }
    let mut w = Walk {
        ip: instruction_pointer(regs),
        sp: stack_pointer(regs),
        bp: frame_pointer(regs),
        n: 0,
        end: RUNNING,
        slot,
        ri: 0,
        ri_slot: 0,
    };
    if REPAIR {
        pending_returns(&mut w);
    }
    // SAFETY: `step` has the callback signature bpf_loop expects, and `w`
    // outlives the call.
    unsafe { bpf_loop(UNWIND_DEPTH as u32, step::<REPAIR> as *mut c_void, (&raw mut w).cast(), 0) };
    let cut = match w.end {
        RUNNING if w.ip == 0 => None,
        RUNNING => Some(StackCut::Depth),
        e if e == StackCut::NoTable as u32 => Some(StackCut::NoTable),
        e if e == StackCut::Unsupported as u32 => Some(StackCut::Unsupported),
        e if e == StackCut::Unreadable as u32 => Some(StackCut::Unreadable),
        _ => None,
    };
    if let Some(reason) = cut {
        // The module of the last frame reached: the one without a table,
        // with the rule, or whose stack could not be read.
        let start = mapping_of(slot, mappings, w.ip.wrapping_sub(1)).map_or(0, |e| e.start);
        let key = stack_cut_key(start, reason);
        match STACK_CUTS.get_ptr_mut(key) {
            // SAFETY: a map value pointer, valid for this program run.
            Some(n) => unsafe { *n += 1 },
            None => {
                let _ = STACK_CUTS.insert(key, 1, 0);
            }
        }
    }
    Some((w.n as usize, cut))
}

/// bpf_loop's callback: one frame. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn step<const REPAIR: bool>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` that `walk` passed.
    let w = unsafe { &mut *ctx.cast::<Walk>() };
    match frame::<REPAIR>(w, index) {
        Some(end) => {
            w.end = end;
            1
        }
        None => 0,
    }
}

/// The row in force at `pc` (`cfa` None where no table covers it), from
/// UNWIND_CACHE or found with the searches and cached.
#[inline(always)]
fn cached_row(list: u32, m: &ExecMappings, pc: u64) -> Option<UnwindRow> {
    let key = unwind_cache_key(pc, m.generation);
    let slot = UNWIND_CACHE.get_ptr_mut(unwind_cache_slot(key))?;
    // SAFETY: this CPU's slot, ours for this program run.
    let cached = unsafe { &mut *slot };
    if cached.key == key {
        return Some(cached.row);
    }
    let none = UnwindRow { pc, cfa_offset: 0, rbp_offset: 0, cfa: CfaBase::None as u8, rbp: 0 };
    let row = mapping_of(list, m, pc)
        .filter(|e| e.rows != 0)
        .and_then(|e| row_at(e.table, e.rows, pc.wrapping_sub(e.bias)))
        .unwrap_or(none);
    *cached = CachedRow { key, row };
    Some(row)
}

/// Records frame number `index` (at `w.ip`) and steps to its caller; Some
/// (`COMPLETE` or a `StackCut`) when the walk ends. Every call but the last adds one frame, so the
/// frame's slot is the loop's index: the verifier sees an unknown index it
/// checks once, where a count kept in `w` would be a new constant each
/// round, and each round the callback verified again.
#[inline(always)]
fn frame<const REPAIR: bool>(w: &mut Walk, index: u64) -> Option<u32> {
    let ip = w.ip;
    if ip == 0 {
        return Some(COMPLETE);
    }
    let i = index as usize;
    let Some(scratch) = STACK_SCRATCH.get_ptr_mut(0) else { return Some(COMPLETE) };
    // SAFETY: the per-CPU scratch entry is ours for this program run.
    let Some(slot) = (unsafe { (*scratch).ips.get_mut(i) }) else { return Some(StackCut::Depth as u32) };
    *slot = ip;
    w.n = index + 1;
    let Some(m) = UNWIND_MAPPINGS.get(w.slot) else { return Some(COMPLETE) };
    // A return address points after its call, possibly at the next
    // function's first byte: the call itself is one byte earlier.
    let pc = if i == 0 { ip } else { ip - 1 };
    let row = cached_row(w.slot, m, pc).filter(|r| r.cfa != CfaBase::None as u8);
    let Some(row) = row else {
        // No table here: one frame-pointer step. rbp == 0 is where
        // frame-pointer code ends its chain (`_start` clears it).
        if w.bp == 0 {
            return Some(COMPLETE);
        }
        let Some([next, ra]) = read_pair(w.bp) else {
            return Some(StackCut::NoTable as u32);
        };
        let slot = w.bp.wrapping_add(8);
        (w.sp, w.bp) = (w.bp.wrapping_add(16), next);
        w.ip = if REPAIR { original_return(w, slot, ra) } else { ra };
        return None;
    };
    let offset = row.cfa_offset as i64 as u64;
    let cfa = match row.cfa {
        c if c == CfaBase::Rsp as u8 => w.sp.wrapping_add(offset),
        c if c == CfaBase::Rbp as u8 => w.bp.wrapping_add(offset),
        // The PLT expression: 8 more once the stub has pushed its index.
        c if c == CfaBase::Plt as u8 => w.sp.wrapping_add(if ip & 15 >= 11 { 16 } else { 8 }),
        c if c == CfaBase::Outermost as u8 => return Some(COMPLETE),
        _ => return Some(StackCut::Unsupported as u32),
    };
    let ra = match row.rbp {
        // rbp saved just below the return address (a frame-pointer
        // prologue, the usual case): both in one read.
        r if r == RbpRule::AtCfa as u8 && row.rbp_offset == -16 => {
            let Some([saved, ra]) = read_pair(cfa.wrapping_sub(16)) else {
                return Some(StackCut::Unreadable as u32);
            };
            w.bp = saved;
            ra
        }
        r if r == RbpRule::AtCfa as u8 => {
            let (Some(ra), Some(saved)) =
                (read(cfa.wrapping_sub(8)), read(cfa.wrapping_add(row.rbp_offset as i64 as u64)))
            else {
                return Some(StackCut::Unreadable as u32);
            };
            w.bp = saved;
            ra
        }
        r if r == RbpRule::Unchanged as u8 => {
            let Some(ra) = read(cfa.wrapping_sub(8)) else { return Some(StackCut::Unreadable as u32) };
            ra
        }
        _ => return Some(StackCut::Unsupported as u32),
    };
    w.sp = cfa;
    w.ip = if REPAIR { original_return(w, cfa.wrapping_sub(8), ra) } else { ra };
    None
}

/// The thread's pending uretprobe returns (innermost first), from its
/// `task_struct.utask` (offsets from BTF; none when they are unknown).
#[inline(always)]
fn pending_returns(w: &mut Walk) {
    let off = KERNEL_OFFSETS.load();
    if off.task_utask == 0 || off.ri_stack == 0 {
        return;
    }
    // SAFETY: offsets from this kernel's BTF; every read is a probe read.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let Some(utask) = field::<*const u8>(task, off.task_utask) else { return };
        let Some(ri) = field::<u64>(utask, off.utask_return_instances) else { return };
        load_return(w, ri);
    }
}

#[inline(always)]
fn load_return(w: &mut Walk, ri: u64) {
    let off = KERNEL_OFFSETS.load();
    // SAFETY: a kernel pointer read from the return list; probe reads fail cleanly.
    w.ri_slot = match unsafe { field::<u64>(ri as *const u8, off.ri_stack) } {
        Some(slot) if ri != 0 => slot,
        _ => 0,
    };
    w.ri = if w.ri_slot == 0 { 0 } else { ri };
}

/// The return address read at stack address `slot`: where a uretprobe put
/// its trampoline there (the probed function is still running: malloc
/// calling mmap), the address it replaced, as the kernel keeps it.
#[inline(always)]
fn original_return(w: &mut Walk, slot: u64, ra: u64) -> u64 {
    if w.ri == 0 || slot != w.ri_slot {
        return ra;
    }
    let off = KERNEL_OFFSETS.load();
    let ri = w.ri as *const u8;
    // SAFETY: as in load_return.
    let (original, next) = unsafe { (field::<u64>(ri, off.ri_orig_ret_vaddr), field::<u64>(ri, off.ri_next)) };
    // (A chained return, a probed function tail-calling another, shares the
    // slot: the walk stops repairing there, its next frames are as read.)
    load_return(w, next.unwrap_or(0));
    original.unwrap_or(ra)
}
