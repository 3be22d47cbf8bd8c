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
/// slot 1 those not sent because their kind was not armed or their namespace
/// quiet ([`EVENTS_QUIET_MAP`]).
pub const EVENTS_LOST_MAP: &str = "EVENTS_LOST";
/// Array indexed by [`EventKind`] value: 1 while the agent wants that kind.
pub const EVENTS_ARMED_MAP: &str = "EVENTS_ARMED";
/// Hash map of namespaces whose events of one kind the agent does not want for
/// now (key [`quiet_key`], value 1): an armed kind is still not sent from them.
/// The agent makes a namespace quiet after its events woke a collection in vain
/// (a firewall that drops untracked packets all day), so that one noisy pod
/// neither pays a wake-up per arming nor keeps the others' events waiting.
pub const EVENTS_QUIET_MAP: &str = "EVENTS_QUIET";
/// Entries of [`EVENTS_QUIET_MAP`]; past it, a namespace is not made quiet and
/// the agent's backoff of every kind applies.
pub const EVENTS_QUIET_ENTRIES: u32 = 1024;

/// The [`EVENTS_QUIET_MAP`] key of `kind` in namespace `netns`.
pub const fn quiet_key(kind: u32, netns: u32) -> u64 {
    ((kind as u64) << 32) | netns as u64
}

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

impl EventKind {
    /// The kind an [`Event::kind`] value names, if any.
    pub const fn from_value(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::NetfilterDrop),
            2 => Some(Self::ListenOverflow),
            _ => None,
        }
    }
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
