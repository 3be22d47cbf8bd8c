//! The tests themselves, each run on the calling thread (which `nettune check`
//! has moved into the source's network namespace), bounded in count and time:
//! throughput (iperf3, else a built-in stream), TCP connect latency, DNS lookups
//! and HTTP requests.

/// Reports how far a test has come (a progress line on a terminal).
pub trait Progress: Sync {
    /// `done` of `total` steps of `test`.
    fn step(&self, test: &str, done: u64, total: u64);
}

/// No progress shown.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: &str, _: u64, _: u64) {}
}

mod throughput;
pub use throughput::*;
mod latency;
pub use latency::*;
mod ping;
pub use ping::*;
mod lookups;
pub use lookups::*;
mod http;
pub use http::*;

#[cfg(test)]
mod tests;
