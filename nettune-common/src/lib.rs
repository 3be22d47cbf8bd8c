//! Types shared by nettune's eBPF programs (kernel side) and the agent (user side).
//!
//! Every type that crosses the kernel/user boundary is defined here once: map keys,
//! map values, event records, the offsets handed to the programs before load, and
//! the indexes of the programs' own error counters. All are `#[repr(C)]` with
//! explicit padding and no `bool`, so both sides agree on the layout byte for byte.
//! The `user` feature adds `aya::Pod` so the agent can use them with aya's maps.
#![no_std]

pub mod budget;
pub mod connect;
pub mod drops;
pub mod errors;
pub mod events;
pub mod listen;
pub mod offsets;
pub mod retransmit;
pub mod sysctl_writes;
pub mod traffic;

pub use budget::{BudgetKey, BudgetedMap};
pub use drops::DropKey;
pub use errors::ProbeError;
pub use events::{Event, EventKind};
pub use listen::{ListenKey, ListenOrigin, ListenOverflow, ListenSocket};
pub use offsets::KernelOffsets;
pub use retransmit::RetransmitCounters;
pub use sysctl_writes::{SysctlWrite, SysctlWriter};
pub use traffic::{Conversations, DnsCounters, DnsQueryKey, HandshakeKey, Pending, Remote};

/// Bound of every per-network-namespace map: far more namespaces than a node runs pods.
pub const MAX_NETNS: u32 = 4096;

/// Implements `aya::Pod` for plain-old-data types (user side only).
#[cfg(feature = "user")]
macro_rules! impl_pod {
    ($($ty:ty),* $(,)?) => {
        $(
            // SAFETY: the type is #[repr(C)], made only of integers, with explicit
            // padding fields, so every bit pattern is a valid value.
            unsafe impl aya::Pod for $ty {}
        )*
    };
}

#[cfg(feature = "user")]
impl_pod!(
    KernelOffsets,
    BudgetKey,
    RetransmitCounters,
    DropKey,
    ListenSocket,
    ListenOrigin,
    ListenKey,
    ListenOverflow,
    Conversations,
    DnsCounters,
    DnsQueryKey,
    HandshakeKey,
    Pending,
    Remote,
    Event,
    SysctlWriter,
    SysctlWrite,
);
