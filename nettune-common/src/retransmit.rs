//! TCP retransmits, per network namespace and per flow.
//!
//! Fed by the `tcp_retransmit_skb` tracepoint (BTF variant, classic fallback). Both
//! maps are LRU per-CPU hashes: a busy netns never contends on a shared counter, and
//! more namespaces or flows than the bound evict the coldest instead of failing.

/// Per-netns counters: `u32` netns inode → [`RetransmitCounters`].
pub const RETRANSMITS_MAP: &str = "RETRANSMITS";
/// Per-flow counters: [`FlowKey`] → retransmitted segments (`u64`).
pub const RETRANSMIT_FLOWS_MAP: &str = "RETRANSMIT_FLOWS";
/// Bound of the per-flow map.
pub const MAX_FLOWS: u32 = 8192;

/// Counters for one network namespace on one CPU (the agent sums the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransmitCounters {
    /// Retransmitted skbs that were handed to the device (`err == 0`).
    pub retransmits: u64,
    /// Segments in those skbs (`tcp_skb_pcount`): what `RetransSegs` counts.
    pub segments: u64,
    /// Retransmit attempts the kernel reported as failed (`err != 0`; kernels 6.12+).
    pub failed: u64,
}

impl RetransmitCounters {
    /// Adds another CPU's (or another sample's) counters, saturating.
    #[must_use]
    pub const fn saturating_add(self, other: Self) -> Self {
        Self {
            retransmits: self.retransmits.saturating_add(other.retransmits),
            segments: self.segments.saturating_add(other.segments),
            failed: self.failed.saturating_add(other.failed),
        }
    }

    /// Counters accumulated since `earlier` (counters never go backwards; a reset
    /// map entry yields zero rather than a wrapped huge number).
    #[must_use]
    pub const fn saturating_sub(self, earlier: Self) -> Self {
        Self {
            retransmits: self.retransmits.saturating_sub(earlier.retransmits),
            segments: self.segments.saturating_sub(earlier.segments),
            failed: self.failed.saturating_sub(earlier.failed),
        }
    }
}

/// A TCP flow as seen from the retransmitting socket. IPv4 addresses are stored
/// as IPv4-mapped IPv6 (`::ffff:a.b.c.d`) so one key type serves both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub netns: u32,
    /// Local port, host order.
    pub sport: u16,
    /// Remote port, host order.
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
