//! Reading kernel structs through offsets resolved at start-up from BTF.
//!
//! The agent fills `OFFSETS` (a read-only global) before load; since the map behind
//! it is frozen, the verifier knows the values and prunes branches on them (e.g. a
//! tracepoint argument or struct field this kernel lacks is never read).

use aya_ebpf::helpers::bpf_probe_read_kernel;
use nettune_common::{KernelOffsets, ProbeError, offsets::ABSENT};

#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets::UNKNOWN;

/// The offsets the agent wrote for this kernel.
///
/// Only the pointer is read volatilely: that stops the compiler from folding in
/// the initialiser (the loader replaces it before load), while each field is
/// loaded where it is used. Copying the whole struct with one volatile read
/// cost every event some forty loads and spills.
#[inline(always)]
pub fn offsets() -> &'static KernelOffsets {
    let ptr: *const KernelOffsets = &raw const OFFSETS;
    // SAFETY: `ptr` points at the static OFFSETS, valid for the program's life.
    unsafe { &*core::ptr::read_volatile(&raw const ptr) }
}

/// How a program reads a kernel struct's field.
pub trait Memory {
    /// Reads a `T` at `base + offset`; an ABSENT offset is an error.
    fn read<T>(base: *const u8, offset: u32) -> Result<T, ProbeError>;
}

/// Through `bpf_probe_read_kernel`: works on any kernel address, including one
/// that arrived as a plain number (classic tracepoint fields, kprobe registers).
pub struct ProbeRead;

impl Memory for ProbeRead {
    #[inline(always)]
    fn read<T>(base: *const u8, offset: u32) -> Result<T, ProbeError> {
        // SAFETY: bpf_probe_read_kernel never faults: a bad address makes it return
        // an error, which we report as a KernelRead error.
        unsafe { bpf_probe_read_kernel(field::<T>(base, offset)?) }
            .map_err(|_| ProbeError::KernelRead)
    }
}

/// Plain loads, for pointers the verifier knows the BTF type of (`tp_btf`
/// arguments, and pointer fields loaded from them). The verifier checks each load
/// against the kernel's BTF (the offset is a constant to it: it comes from the
/// frozen `OFFSETS`) and turns it into a load that reads 0 instead of faulting —
/// a memory access, where a helper call costs some 20 ns. Never use it on a
/// pointer that arrived as a number: the verifier would refuse the program.
pub struct BtfLoad;

impl Memory for BtfLoad {
    #[inline(always)]
    fn read<T>(base: *const u8, offset: u32) -> Result<T, ProbeError> {
        // SAFETY: the verifier only accepts this load at an offset where the
        // kernel's BTF has a field of this size, and a faulting address reads 0.
        Ok(unsafe { core::ptr::read_volatile(field::<T>(base, offset)?) })
    }
}

/// The address of the field at `offset` in `base`; an error for a field this
/// kernel lacks (ABSENT), which is then never read.
#[inline(always)]
fn field<T>(base: *const u8, offset: u32) -> Result<*const T, ProbeError> {
    if offset == ABSENT {
        return Err(ProbeError::KernelRead);
    }
    Ok(base.wrapping_add(offset as usize).cast::<T>())
}

/// Reads a `T` at `base + offset` in kernel memory with `bpf_probe_read_kernel`.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Result<T, ProbeError> {
    ProbeRead::read(base, offset)
}

/// The inode number of a `struct net`.
#[inline(always)]
pub fn netns_of_net<M: Memory>(net: *const u8, off: &KernelOffsets) -> Result<u32, ProbeError> {
    M::read(net, off.net_inum)
}

/// The inode number of the network namespace a socket belongs to.
#[inline(always)]
pub fn netns_of_sock<M: Memory>(sk: *const u8, off: &KernelOffsets) -> Result<u32, ProbeError> {
    let net: *const u8 = M::read(sk, off.sock_net)?;
    netns_of_net::<M>(net, off)
}

/// How many TCP segments an skb carries (`tcp_skb_pcount`), at least 1.
#[inline(always)]
pub fn tcp_skb_segments<M: Memory>(skb: *const u8, off: &KernelOffsets) -> Result<u64, ProbeError> {
    let segs: u16 = M::read(skb, off.skb_tcp_gso_segs)?;
    Ok(u64::from(segs).max(1))
}

/// Where a dropped skb was: (netns, ifindex) of its device; without a device, the
/// netns of its socket (or of `rx_sk`, the receiving socket the kernel names on
/// 6.12+) and ifindex 0; (0, 0) when nothing tells.
#[inline(always)]
pub fn locate_skb<M: Memory>(skb: *const u8, rx_sk: *const u8, off: &KernelOffsets) -> (u32, u32) {
    if let Ok(dev) = M::read::<*const u8>(skb, off.skb_dev)
        && !dev.is_null()
    {
        let netns =
            M::read::<*const u8>(dev, off.dev_net).and_then(|net| netns_of_net::<M>(net, off));
        let ifindex = M::read::<i32>(dev, off.dev_ifindex);
        if let (Ok(netns), Ok(ifindex)) = (netns, ifindex) {
            return (netns, ifindex as u32);
        }
    }
    let sk = match M::read::<*const u8>(skb, off.skb_sk) {
        Ok(sk) if !sk.is_null() => sk,
        _ => rx_sk,
    };
    if !sk.is_null()
        && let Ok(netns) = netns_of_sock::<M>(sk, off)
    {
        return (netns, 0);
    }
    (0, 0)
}
