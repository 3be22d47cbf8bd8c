//! Urgent events: rare conditions worth waking the agent for before the next tick.
//!
//! Sent through one ring buffer, never per packet: each kind is rate-limited in the
//! kernel (about one per node per [`EVENT_MIN_INTERVAL_NS`]); events the limit or a
//! full buffer suppressed are counted in the `EVENTS_LOST` per-CPU array.

/// The ring buffer.
pub const EVENTS_MAP: &str = "EVENTS";
/// Per-CPU array: slot 0 counts events dropped because the ring buffer was full,
/// slot 1 those suppressed by the rate limit.
pub const EVENTS_LOST_MAP: &str = "EVENTS_LOST";
/// A `u32` global: 0 turns urgent events off (the programs send none, so they
/// pay no wake-ups; the agent then collects on its tick only).
pub const URGENT_EVENTS_GLOBAL: &str = "URGENT_EVENTS";
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 64 * 1024;
/// Minimum spacing of events of one kind, node-wide (CPUs racing past the check at
/// the same moment may each send one).
///
/// An event's only use is to wake a collection, which the agent allows at most
/// once per `agent.min_event_interval_seconds` (default 0.1 s): more events would
/// be thrown away after costing the kernel a ring-buffer wake-up each — measured
/// at tens of microseconds on a virtual machine, where it is an interrupt to self.
pub const EVENT_MIN_INTERVAL_NS: u64 = 100_000_000;

/// What happened.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A packet was dropped by netfilter (`NETFILTER_DROP`): conntrack table full
    /// or a firewall rule.
    NetfilterDrop = 1,
    /// A listener's accept queue overflowed (fentry/kprobe variants only).
    ListenOverflow = 2,
}

/// One urgent event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// An [`EventKind`] value.
    pub kind: u32,
    pub netns: u32,
    /// Interface (drops) or 0.
    pub ifindex: u32,
    /// Local port (listen overflows) or 0.
    pub port: u32,
    pub timestamp_ns: u64,
}
