//! Packet drops by kernel drop reason, per network namespace and interface.
//!
//! Fed by the `kfree_skb` tracepoint. The reason is the kernel's
//! `enum skb_drop_reason` value; its names differ between kernels, so the agent
//! reads them from BTF and never from a table compiled in here.

/// [`DropKey`] → dropped packets (`u64`), per-CPU hash.
pub const DROPS_MAP: &str = "DROPS";
/// Bound of [`DROPS_MAP`].
pub const MAX_DROP_KEYS: u32 = 16384;

/// Where and why packets were dropped. `netns` is the namespace of the device the
/// packet was on, else of its socket, else 0 (unknown); `ifindex` is 0 when the
/// packet had no device. Keyed by (netns, ifindex) because ifindex values repeat
/// across namespaces.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    pub netns: u32,
    pub ifindex: u32,
    pub reason: u32,
    pub _pad: u32,
}
