//! nettune's agent library: everything the `nettune` binary does, as modules that
//! tests can drive directly.
//!
//! Data flows one way (docs/design.md): [`probes`] load and attach the eBPF
//! programs, choosing per signal the best variant this kernel supports, with
//! offsets from [`btf`] and [`tracefs`] resolved by [`layout`]; [`sample`] reads
//! their maps and each namespace's procfs counters ([`netns`], [`procfs`]) into a
//! [`sample::Sample`] of raw counters.

pub mod btf;
pub mod collector;

pub mod config;
pub mod daemon;
pub mod diagnose;

pub mod drop_reasons;
pub mod exporter;
pub mod http_client;

pub mod identity;

pub mod layout;
pub mod netlink;
pub mod netns;
pub mod probes;
pub mod procfs;
pub mod sample;
pub mod server;

pub mod snapshot;

pub mod sysctl;

pub mod top;
pub mod tracefs;

pub mod tuning;
