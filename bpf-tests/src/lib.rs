//! Support for nettune's kernel tests: a harness that reports skips honestly,
//! network namespaces that clean up after themselves, real traffic, and test-only
//! eBPF programs and the kernel's netem qdisc (packet loss).
//!
//! # Where tests go
//! One file per agent signal in `tests/kernel/`, named after the program module it
//! tests in `nettune-ebpf/src/` (e.g. `retransmit.rs` ↔ `retransmit.rs`), each
//! exporting a `TESTS` list that `tests/kernel/main.rs` registers.
//!
//! # Rules every test follows
//! - It needs root and kernel features: it calls [`harness::require`] first, which
//!   skips with a reason, or fails when `NETTUNE_REQUIRE_FEATURES` names the feature.
//! - Traffic stays inside namespaces the test created ([`netns::Netns`]), in
//!   bounded loops ([`traffic`]).
//! - Everything it creates is removed by a guard's `Drop`, even on panic.

pub mod agent_process;
pub mod bench;
pub mod bpftrace;
pub mod classifier;
pub mod containerd;
pub mod daemonset;
pub mod dns;
pub mod harness;
pub mod host;
pub mod loss;
pub mod netem;
pub mod netns;
pub mod oci;
pub mod podman;
pub mod probes;
pub mod prometheus;
pub mod scenarios;
pub mod sockets;
pub mod sysctl_guard;
pub mod tmux;
pub mod traffic;
