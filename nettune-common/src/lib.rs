//! Types shared by nettune's eBPF programs (kernel side) and the agent (user side).
//!
//! Every type that crosses the kernel/user boundary is defined here once: map keys,
//! map values, event records, the offsets handed to the programs before load, and
//! the indexes of the programs' own error counters. All are `#[repr(C)]` with
//! explicit padding and no `bool`, so both sides agree on the layout byte for byte.
//! The `user` feature adds `aya::Pod` so the agent can use them with aya's maps.
#![no_std]

pub mod drops;
pub mod errors;
pub mod events;
pub mod listen;
pub mod netns_counters;
pub mod offsets;
pub mod retransmit;
pub mod traffic;

pub use drops::DropKey;
pub use errors::ProbeError;
pub use events::{Event, EventKind};
pub use listen::{ListenCall, ListenKey, ListenOverflow, ListenRequest};
pub use offsets::KernelOffsets;
pub use retransmit::RetransmitCounters;
pub use traffic::IfaceTraffic;

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
    RetransmitCounters,
    DropKey,
    ListenCall,
    ListenRequest,
    ListenKey,
    ListenOverflow,
    IfaceTraffic,
    Event,
);
