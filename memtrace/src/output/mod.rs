//! Everything memtrace writes for people and tools, rendered from a
//! `Trace` (never from events): the text report, the Chrome/Perfetto
//! trace, the HTML page; plus the two streams written while tracing, the
//! live view and the `--events` log.
pub mod chrome_trace;
pub mod events_log;
pub mod html;
pub mod live;
pub mod report;
