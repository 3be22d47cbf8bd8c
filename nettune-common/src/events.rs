//! Urgent events: rare conditions worth waking the agent for before the next tick.
//!
//! Sent through one ring buffer, never per packet, and only while the agent has
//! armed the event's kind: a program that sends one disarms the kind on its CPU,
//! and the agent arms it again when another wake-up could change a decision (see
//! the agent's `daemon`), except from the namespaces it made quiet (their events
//! woke a collection in vain). Everything a program asks before it sends, and the
//! counts of what it did not send, sit in one 64-byte [`UrgentSlot`] per CPU
//! ([`URGENT_MAP`]): an occurrence that sends nothing touches that one cache line
//! — with a map each (armed kinds, quiet namespaces, counts) it cost kfree_skb
//! under netfilter loss more than the rest of the program.

/// The ring buffer.
pub const EVENTS_MAP: &str = "EVENTS";
/// A one-entry array, memory-mapped by the agent (`BPF_F_MMAPABLE`), whose value
/// is one [`UrgentSlot`] per CPU ([`URGENT_CPUS`] of them).
pub const URGENT_MAP: &str = "URGENT";
/// CPUs with a slot: a CPU past them sends and counts nothing.
pub const URGENT_CPUS: usize = 512;
/// Namespaces a slot holds as quiet; past them, the agent backs off every kind
/// instead.
pub const QUIET_NAMESPACES: usize = 10;
/// `BPF_F_MMAPABLE` (`include/uapi/linux/bpf.h`).
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// One CPU's urgent-event state: the agent writes `armed` and the quiet
/// namespaces, the CPU's programs write `armed` (to disarm) and the counts.
/// Every field is written whole by one side at a time, so neither undoes the
/// other's write.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UrgentSlot {
    /// Indexed by [`EventKind`] value: 1 while the agent wants that kind.
    pub armed: [u8; 4],
    /// How many of `quiet` are in use.
    pub quiet_len: u32,
    /// Events not sent: their kind not armed on this CPU, or their namespace quiet.
    pub not_sent: u64,
    /// Events lost because the ring buffer was full.
    pub ring_full: u64,
    /// Namespaces (inode) whose events are not sent, even armed.
    pub quiet: [u32; QUIET_NAMESPACES],
}

/// The value of [`URGENT_MAP`]'s one entry.
pub type UrgentSlots = [UrgentSlot; URGENT_CPUS];

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
