//! The allocator functions memtrace knows, by exported symbol, and the
//! argument shape each one shares with a glibc function. The eBPF side has
//! one entry program per shape (where the size and old pointer sit), so
//! any allocator whose functions fit these shapes is traced by the same
//! programs: glibc, jemalloc (plain, `je_` and Rust's `_rjem_` prefixes),
//! mimalloc (`mi_`) and gperftools' tcmalloc (`tc_`).

/// Where an allocation function takes its size (and old pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `f(size, ...)`: malloc, mallocx(size, flags), mi_malloc_aligned(size, align), tc_new(size).
    Malloc,
    /// `f(count, size, ...)`: calloc, mi_calloc_aligned(count, size, align).
    Calloc,
    /// `f(ptr, size, ...)`: realloc, rallocx(ptr, size, flags), mi_realloc_aligned(ptr, size, align).
    Realloc,
    /// `f(align, size)`: aligned_alloc, memalign.
    Memalign,
    /// `f(void **out, align, size)`.
    PosixMemalign,
    /// `f(size)` rounded to pages: valloc, pvalloc.
    Valloc,
    /// `f(ptr, ...)`: free, dallocx(ptr, flags), sdallocx(ptr, size, flags), mi_free_size(ptr, size).
    Free,
}

impl Shape {
    /// The eBPF entry program for this shape.
    pub fn program(self) -> &'static str {
        match self {
            Shape::Malloc => "malloc_enter",
            Shape::Calloc => "calloc_enter",
            Shape::Realloc => "realloc_enter",
            Shape::Memalign => "memalign_enter",
            Shape::PosixMemalign => "posix_memalign_enter",
            Shape::Valloc => "valloc_enter",
            Shape::Free => "free_enter",
        }
    }

    /// The argument registers its entry program reads (indices into
    /// probe_site's register table: rdi 7, rsi 6, rdx 2). The probe may be
    /// placed after instructions that write other registers.
    pub fn reads(self) -> &'static [usize] {
        const RDI: usize = 7;
        const RSI: usize = 6;
        const RDX: usize = 2;
        match self {
            Shape::Malloc | Shape::Valloc | Shape::Free => &[RDI],
            Shape::Calloc | Shape::Realloc => &[RDI, RSI],
            Shape::Memalign => &[RSI],
            Shape::PosixMemalign => &[RDI, RDX],
        }
    }

    /// Whether the return is probed too (everything but the frees).
    pub fn returns(self) -> bool {
        self != Shape::Free
    }

    /// Every shape's entry program, for loading them all up front.
    pub const PROGRAMS: [&'static str; 7] = [
        "malloc_enter",
        "calloc_enter",
        "realloc_enter",
        "memalign_enter",
        "posix_memalign_enter",
        "valloc_enter",
        "free_enter",
    ];
}

use Shape::*;

/// The C standard and POSIX names: glibc, and any allocator that replaces
/// them (a jemalloc or tcmalloc preloaded, a malloc linked statically).
pub const STANDARD: &[(&str, Shape)] = &[
    ("malloc", Malloc),
    ("calloc", Calloc),
    ("realloc", Realloc),
    ("aligned_alloc", Memalign),
    ("memalign", Memalign),
    ("posix_memalign", PosixMemalign),
    ("valloc", Valloc),
    ("pvalloc", Valloc),
    ("free", Free),
];

/// jemalloc's non-standard API; also under the `je_` and `_rjem_` prefixes.
const JEMALLOC_EXTRA: &[(&str, Shape)] =
    &[("mallocx", Malloc), ("rallocx", Realloc), ("dallocx", Free), ("sdallocx", Free)];
const JEMALLOC_PREFIXES: [&str; 2] = ["je_", "_rjem_"];

const MIMALLOC: &[(&str, Shape)] = &[
    ("mi_malloc", Malloc),
    ("mi_zalloc", Malloc),
    ("mi_malloc_small", Malloc),
    ("mi_malloc_aligned", Malloc),
    ("mi_zalloc_aligned", Malloc),
    ("mi_calloc", Calloc),
    ("mi_mallocn", Calloc),
    ("mi_calloc_aligned", Calloc),
    ("mi_realloc", Realloc),
    ("mi_realloc_aligned", Realloc),
    ("mi_aligned_alloc", Memalign),
    ("mi_memalign", Memalign),
    ("mi_posix_memalign", PosixMemalign),
    ("mi_valloc", Valloc),
    ("mi_pvalloc", Valloc),
    ("mi_free", Free),
    ("mi_free_size", Free),
    ("mi_free_aligned", Free),
    ("mi_free_size_aligned", Free),
];

const TCMALLOC: &[(&str, Shape)] = &[
    ("tc_malloc", Malloc),
    ("tc_new", Malloc),
    ("tc_newarray", Malloc),
    ("tc_new_nothrow", Malloc),
    ("tc_newarray_nothrow", Malloc),
    ("tc_calloc", Calloc),
    ("tc_realloc", Realloc),
    ("tc_memalign", Memalign),
    ("tc_posix_memalign", PosixMemalign),
    ("tc_valloc", Valloc),
    ("tc_pvalloc", Valloc),
    ("tc_free", Free),
    ("tc_free_sized", Free),
    ("tc_delete", Free),
    ("tc_deletearray", Free),
    ("tc_delete_sized", Free),
    ("tc_deletearray_sized", Free),
];

/// Every allocator function memtrace probes when a library defines it, the
/// standard names first (so an alias such as tcmalloc's `malloc` = `tc_malloc`
/// is reported under the standard name).
pub fn known() -> Vec<(String, Shape)> {
    let mut all: Vec<(String, Shape)> = STANDARD.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    all.extend(JEMALLOC_EXTRA.iter().map(|(n, s)| (n.to_string(), *s)));
    for prefix in JEMALLOC_PREFIXES {
        for (n, s) in STANDARD.iter().chain(JEMALLOC_EXTRA) {
            all.push((format!("{prefix}{n}"), *s));
        }
    }
    all.extend(MIMALLOC.iter().chain(TCMALLOC).map(|(n, s)| (n.to_string(), *s)));
    all
}

/// Whether `name` is one of the non-glibc allocators' own functions (what
/// marks an executable as carrying a statically linked allocator).
pub fn is_non_standard(name: &str) -> bool {
    !STANDARD.iter().any(|(n, _)| *n == name) && known().iter().any(|(n, _)| n == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(name: &str) -> Option<Shape> {
        known().into_iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    #[test]
    fn each_family_maps_to_the_glibc_shape_with_the_same_argument_layout() {
        assert_eq!(shape("malloc"), Some(Malloc));
        assert_eq!(shape("_rjem_mallocx"), Some(Malloc));
        assert_eq!(shape("_rjem_sdallocx"), Some(Free));
        assert_eq!(shape("je_rallocx"), Some(Realloc));
        assert_eq!(shape("mi_malloc_aligned"), Some(Malloc), "size first, alignment second");
        assert_eq!(shape("mi_realloc_aligned"), Some(Realloc));
        assert_eq!(shape("mi_aligned_alloc"), Some(Memalign));
        assert_eq!(shape("tc_posix_memalign"), Some(PosixMemalign));
        assert_eq!(shape("tc_delete_sized"), Some(Free));
        assert_eq!(shape("operator_new"), None);
    }

    #[test]
    fn names_are_unique_and_standard_ones_come_first() {
        let all = known();
        let mut names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(&names[..STANDARD.len()], STANDARD.iter().map(|(n, _)| *n).collect::<Vec<_>>().as_slice());
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }

    #[test]
    fn only_other_allocators_functions_mark_a_static_allocator() {
        assert!(is_non_standard("mi_free"));
        assert!(is_non_standard("_rjem_mallocx"));
        assert!(!is_non_standard("malloc"));
        assert!(!is_non_standard("memcpy"));
    }
}
