//! `memtrace report TRACE.json [--chrome-trace] [--html]` on arbitrary bytes:
//! the saved trace is read back, and when it is one, each renderer runs on it
//! in memory. Bad input must get one clear line (an `Err`), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::{output, trace};

fuzz_target!(|data: &[u8]| {
    let Ok(t) = trace::parse_json(data, "fuzz.json") else {
        return;
    };
    let _ = output::report::render(&t);
    let _ = output::chrome_trace::from_trace(&t).to_string();
    let _ = output::html::render(&t);
});
