//! Urgent events: rare conditions worth waking the agent for before the next tick.
//!
//! Sent through one ring buffer, never per packet, and only while the agent has
//! armed the event's kind ([`EVENTS_ARMED_MAP`]): a program that sends one
//! disarms the kind, and the agent arms it again when another wake-up could
//! change a decision (see the agent's `daemon`). Whether a kind is armed is the
//! first thing a program asks, so a disarmed kind costs one array load. Events
//! not sent (not armed, or the ring full) are counted in the `EVENTS_LOST`
//! per-CPU array.

/// The ring buffer.
pub const EVENTS_MAP: &str = "EVENTS";
/// Per-CPU array: slot 0 counts events dropped because the ring buffer was full,
/// slot 1 those not sent because their kind was not armed.
pub const EVENTS_LOST_MAP: &str = "EVENTS_LOST";
/// Array indexed by [`EventKind`] value: 1 while the agent wants that kind.
pub const EVENTS_ARMED_MAP: &str = "EVENTS_ARMED";
/// Slots of [`EVENTS_ARMED_MAP`] (the largest [`EventKind`] value + 1).
pub const EVENT_KINDS: u32 = 3;
/// A `u32` global: 0 turns urgent events off (the programs send none, so they
/// pay no wake-ups; the agent then collects on its tick only).
pub const URGENT_EVENTS_GLOBAL: &str = "URGENT_EVENTS";
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 64 * 1024;
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
