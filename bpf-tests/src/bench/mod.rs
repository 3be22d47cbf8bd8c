//! Shared pieces of `cargo xtask bench` (the sections live in
//! `bpf-tests/benches/bench/`, one file each).
//!
//! Every figure is measured next to a reference in the same run — bpftrace on the
//! same tracepoint, an empty classifier on the same interfaces, the same traffic
//! without the agent, node_exporter on the same machine — and repeated, so a busy
//! or slow machine moves both sides and the ratio still means something. Results
//! go to `target/nettune-bench/<section>.json` ([`report::Section`]), and
//! `docs/benchmarks.md` is rendered from those files only ([`report::render`]).
//!
//! Everything a benchmark creates — namespaces, processes, nftables tables (inside
//! its namespaces), sysctls — is undone by a guard's `Drop`, as in the kernel
//! tests; traffic goes only between the benchmark's own namespaces, bounded in
//! count and time.

pub mod agent;
pub mod bpf_stats;
pub mod load;
pub mod nft;
pub mod pods;
pub mod process;
pub mod report;
pub mod stats;
