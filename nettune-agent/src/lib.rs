//! nettune's agent library: everything the `nettune` binary does, as modules that
//! tests can drive directly.
//!
//! Data flows one way (docs/design.md): [`probes`] load and attach the eBPF
//! programs, choosing per signal the best variant this kernel supports, using
//! offsets from [`btf`] and [`tracefs`] resolved by [`layout`]; callers read the
//! maps through [`probes::Probes`].

pub mod btf;
pub mod layout;
pub mod probes;
pub mod procfs;
pub mod tracefs;
