//! Reading kernel structs through offsets resolved at start-up from BTF.
//!
//! The agent fills `OFFSETS` (a read-only global) before load; since the map behind
//! it is frozen, the verifier knows the values and prunes branches on them (e.g. a
//! tracepoint argument that does not exist on this kernel is never read).

use aya_ebpf::helpers::bpf_probe_read_kernel;
use nettune_common::{KernelOffsets, ProbeError};

#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    sock_net: 0,
    net_inum: 0,
    skb_tcp_gso_segs: 0,
    tp_retransmit_skaddr: 0,
    tp_retransmit_skbaddr: 0,
    tp_retransmit_err: 0,
    tp_btf_retransmit_args: 0,
    _pad: 0,
};

/// The offsets the agent wrote for this kernel.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: OFFSETS is a plain static; the volatile read stops the compiler from
    // folding in the zero initialiser, which the loader replaces before load.
    unsafe { core::ptr::read_volatile(&raw const OFFSETS) }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
fn read<T>(base: *const u8, offset: u32) -> Result<T, ProbeError> {
    // SAFETY: bpf_probe_read_kernel never faults: a bad address makes it return an
    // error, which we report as a KernelRead error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
        .map_err(|_| ProbeError::KernelRead)
}

/// The inode number of the network namespace a socket belongs to.
#[inline(always)]
pub fn netns_of_sock(sk: *const u8, off: &KernelOffsets) -> Result<u32, ProbeError> {
    let net: *const u8 = read(sk, off.sock_net)?;
    read(net, off.net_inum)
}

/// How many TCP segments an skb carries (`tcp_skb_pcount`), at least 1.
#[inline(always)]
pub fn tcp_skb_segments(skb: *const u8, off: &KernelOffsets) -> Result<u64, ProbeError> {
    let segs: u16 = read(skb, off.skb_tcp_gso_segs)?;
    Ok(u64::from(segs).max(1))
}
