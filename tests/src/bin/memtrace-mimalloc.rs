//! A Rust target whose global allocator is mimalloc, linked statically
//! (no libc malloc on its heap path): memtrace must find mimalloc's
//! functions in the executable itself. Leaks `BOXES` zeroed 1,000-byte
//! boxes (mi_zalloc_aligned) and one vector grown by pushes
//! (mi_malloc_aligned then mi_realloc_aligned) to `GROWN` bytes; frees
//! everything else. Prints what it leaked as `leaked COUNT BYTES`.
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const BOXES: usize = 200;
const BOX_BYTES: usize = 1000;
const GROWN: usize = 1 << 16;

#[inline(never)]
fn leak_zeroed_boxes() -> usize {
    for _ in 0..BOXES {
        let b: Box<[u8]> = std::hint::black_box(vec![0u8; BOX_BYTES].into_boxed_slice());
        Box::leak(b);
    }
    BOXES * BOX_BYTES
}

#[inline(never)]
fn leak_grown_vector() -> usize {
    let mut v: Vec<u8> = Vec::new();
    for i in 0..GROWN {
        v.push(std::hint::black_box(i as u8));
    }
    let bytes = v.capacity();
    std::mem::forget(v);
    bytes
}

#[inline(never)]
fn churn() {
    for i in 0..10_000usize {
        let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(i % 100 + 1));
        drop(v);
    }
}

fn main() {
    churn();
    let boxes = leak_zeroed_boxes();
    let grown = leak_grown_vector();
    println!("leaked {} {}", BOXES + 1, boxes + grown);
}
