//! Small mapping scenarios for memtrace's end-to-end tests, each ending in a
//! pause (prints `ready pid=N`, waits for a line on stdin) so the tracer can
//! read the kernel's smaps while the mappings still exist.
//!
//! usage: memtrace-mapper SCENARIO FILE
//!   twice     map FILE twice; read half of it through one mapping, all through the other
//!   unmap     map FILE, read it all, unmap it, map it again and read the first quarter
//!   dontneed  map FILE, read it all, MADV_DONTNEED the second half
//!   anon      write 32 MiB of anonymous memory, read one page of FILE
//!   deleted   map FILE, delete it, then read it all
//!   memfd     fill a 8 MiB memfd, map it shared and read it all (FILE unused)
//!   mremap    map the first half of FILE, read it, grow the mapping to all of FILE
//!             with mremap (it may move), read the second half
//!   pageout   map FILE, read it all, MADV_PAGEOUT all of it (reclaim)
//!   device    map /dev/zero shared (1 MiB) and write it (FILE unused)
use std::{
    ffi::CString,
    io::{BufRead, Write},
    os::fd::AsRawFd,
    ptr,
};

const PAGE: usize = 4096;

fn fail(msg: &str) -> ! {
    eprintln!("memtrace-mapper: error: {msg}: {}", std::io::Error::last_os_error());
    std::process::exit(1);
}

fn map(fd: i32, len: usize, prot: i32, flags: i32) -> *mut u8 {
    // SAFETY: plain mmap; the result is checked.
    let p = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        fail("mmap");
    }
    p.cast()
}

/// Reads one byte of every page in [from, to) so the kernel must map each.
fn read_pages(base: *mut u8, from: usize, to: usize) -> u64 {
    let mut sum = 0u64;
    for off in (from..to).step_by(PAGE) {
        // SAFETY: inside a live mapping of at least `to` bytes.
        sum += unsafe { ptr::read_volatile(base.add(off)) } as u64;
    }
    sum
}

fn unmap(p: *mut u8, len: usize) {
    // SAFETY: p..p+len is a mapping we made.
    if unsafe { libc::munmap(p.cast(), len) } != 0 {
        fail("munmap");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: memtrace-mapper twice|unmap|dontneed|anon|deleted|memfd|mremap|pageout|device FILE");
        std::process::exit(2);
    }
    let (scenario, path) = (args[1].as_str(), &args[2]);
    let file = std::fs::File::open(path).unwrap_or_else(|e| {
        eprintln!("memtrace-mapper: error: cannot open {path}: {e}");
        std::process::exit(1)
    });
    let len = file.metadata().unwrap().len() as usize;
    let fd = file.as_raw_fd();
    let (r, p) = (libc::PROT_READ, libc::MAP_PRIVATE);
    let mut sum = 0;
    match scenario {
        "twice" => {
            let a = map(fd, len, r, p);
            let b = map(fd, len, r, p);
            sum += read_pages(a, 0, len / 2) + read_pages(b, 0, len);
        }
        "unmap" => {
            let a = map(fd, len, r, p);
            sum += read_pages(a, 0, len);
            unmap(a, len);
            let b = map(fd, len, r, p);
            sum += read_pages(b, 0, len / 4);
        }
        "dontneed" => {
            let a = map(fd, len, r, p);
            sum += read_pages(a, 0, len);
            // SAFETY: the second half of our own mapping.
            if unsafe { libc::madvise(a.add(len / 2).cast(), len / 2, libc::MADV_DONTNEED) } != 0 {
                fail("madvise");
            }
        }
        "anon" => {
            let anon_len = 32 << 20;
            let a = map(-1, anon_len, libc::PROT_READ | libc::PROT_WRITE, p | libc::MAP_ANONYMOUS);
            for off in (0..anon_len).step_by(PAGE) {
                // SAFETY: inside the anonymous mapping.
                unsafe { ptr::write_volatile(a.add(off), 1) };
            }
            let f = map(fd, len, r, p);
            sum += read_pages(f, 0, PAGE);
        }
        "deleted" => {
            let a = map(fd, len, r, p);
            std::fs::remove_file(path).unwrap_or_else(|e| {
                eprintln!("memtrace-mapper: error: cannot delete {path}: {e}");
                std::process::exit(1)
            });
            sum += read_pages(a, 0, len);
        }
        "memfd" => {
            let name = CString::new("memtrace-test").unwrap();
            // SAFETY: memfd_create with a valid name.
            let mfd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
            let mlen = 8 << 20;
            if mfd < 0 || unsafe { libc::ftruncate(mfd, mlen as i64) } != 0 {
                fail("memfd_create/ftruncate");
            }
            let m = map(mfd, mlen, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED);
            for off in (0..mlen).step_by(PAGE) {
                // SAFETY: inside the shared mapping.
                unsafe { ptr::write_volatile(m.add(off), 7) };
            }
            sum += read_pages(m, 0, mlen);
        }
        "mremap" => {
            let a = map(fd, len / 2, r, p);
            sum += read_pages(a, 0, len / 2);
            // SAFETY: growing our own mapping; the kernel may move it.
            let b = unsafe { libc::mremap(a.cast(), len / 2, len, libc::MREMAP_MAYMOVE) };
            if b == libc::MAP_FAILED {
                fail("mremap");
            }
            sum += read_pages(b.cast(), len / 2, len);
        }
        "pageout" => {
            let a = map(fd, len, r, p);
            sum += read_pages(a, 0, len);
            // SAFETY: our own mapping.
            if unsafe { libc::madvise(a.cast(), len, libc::MADV_PAGEOUT) } != 0 {
                fail("madvise(MADV_PAGEOUT)");
            }
        }
        "device" => {
            let zero = std::fs::OpenOptions::new().read(true).write(true).open("/dev/zero").unwrap();
            let dlen = 1 << 20;
            let m = map(zero.as_raw_fd(), dlen, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED);
            for off in (0..dlen).step_by(PAGE) {
                // SAFETY: inside the shared mapping.
                unsafe { ptr::write_volatile(m.add(off), 3) };
            }
        }
        other => {
            eprintln!("memtrace-mapper: error: unknown scenario `{other}`");
            std::process::exit(2);
        }
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready pid={} sum={sum}", std::process::id()).unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}
