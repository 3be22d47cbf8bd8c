//! TCP retransmits, per network namespace.
//!
//! Fed by the `tcp_retransmit_skb` tracepoint (BTF variant, classic fallback). The
//! map is a per-CPU hash: a busy netns never contends on a shared counter. More
//! namespaces than the bound fail to insert, counted as `map_update` errors (an
//! LRU map would evict a namespace's counts silently); the agent removes the
//! entries of namespaces that are gone.

/// Per-netns counters: `u32` netns inode → [`RetransmitCounters`].
pub const RETRANSMITS_MAP: &str = "RETRANSMITS";

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
