//! nettune's kernel side: one module per signal, each feeding bounded maps that the
//! agent reads once per tick.
//!
//! Conventions every program here follows (see docs/design.md, "Kernel side"):
//! - the entry point is thin and calls a `try_*` function; a failure is counted in
//!   `PROBE_ERRORS` (see [`errors`]) rather than silently ignored;
//! - kernel struct offsets come from the agent through the `OFFSETS` global
//!   (see [`kernel`]), never from constants compiled for one kernel;
//! - counters live in per-CPU maps, so programs never contend on a cache line.
#![no_std]
#![no_main]
// `atomic_xadd`: see `conversations::add`.
#![expect(
    internal_features,
    reason = "atomic adds on a target without compare-and-swap"
)]
#![feature(core_intrinsics)]

mod budget;
mod conversations;
mod counters;
mod drops;
mod errors;
mod events;
mod kernel;
mod listen;
mod retransmit;
mod sock_state;
mod sysctl_writes;

/// The kernel gives GPL-only helpers (e.g. `bpf_probe_read_kernel`) only to programs
/// whose licence is GPL-compatible; "Dual MIT/GPL" is, and matches our sources.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: eBPF programs cannot unwind or abort; every panic path is removed by
    // the optimiser (indexing is bounds-checked by hand), and the verifier would
    // reject an object in which one survived.
    unsafe { core::hint::unreachable_unchecked() }
}
