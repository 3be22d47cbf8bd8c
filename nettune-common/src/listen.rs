//! Accept-queue overflows per listening socket (fentry/kprobe variants).
//!
//! Where the kernel allows trampolines or kprobes, the programs on
//! `tcp_conn_request` and `tcp_v{4,6}_syn_recv_sock` see the listener at the moment
//! its accept queue is full and record its port, queue length and limit. Elsewhere
//! the agent falls back to each namespace's `ListenOverflows` counter.

/// [`ListenKey`] → [`ListenOverflow`], LRU per-CPU hash.
pub const LISTEN_OVERFLOWS_MAP: &str = "LISTEN_OVERFLOWS";
/// Bound of [`LISTEN_OVERFLOWS_MAP`].
pub const MAX_LISTENERS: u32 = 4096;

/// A listening socket: namespace and local port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenKey {
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}

/// What one CPU saw of one listener's overflows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenOverflow {
    /// Times a connection found the accept queue full.
    pub overflows: u64,
    /// Accept-queue length at the last overflow.
    pub backlog: u32,
    /// The queue's limit (`min(listen() backlog, somaxconn)`) at the last overflow.
    pub max_backlog: u32,
}
