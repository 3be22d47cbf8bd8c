//! Listening sockets: how each started listening, and accept-queue overflows per
//! listener (fentry/kprobe variants).
//!
//! When a socket starts listening, the `inet_sock_set_state` program records its
//! limit and the `somaxconn` that capped it, keyed as `sock_diag` names the
//! socket. Where the kernel allows trampolines or kprobes, the programs on
//! `tcp_conn_request` and `tcp_v{4,6}_syn_recv_sock` see the listener at the
//! moment its accept queue is full and record its port, queue length and limit;
//! elsewhere the agent falls back to each namespace's `ListenOverflows` counter.

/// [`ListenSocket`] → [`ListenOrigin`], LRU hash, filled when a socket starts
/// listening (`inet_sock_set_state` to `TCP_LISTEN`).
pub const LISTEN_ORIGINS_MAP: &str = "LISTEN_ORIGINS";
/// Bound of [`LISTEN_ORIGINS_MAP`].
pub const MAX_LISTEN_ORIGINS: u32 = 8192;

/// A listening socket, as `sock_diag` names it: its namespace and inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenSocket {
    /// The socket's network namespace inode.
    pub netns: u32,
    /// The socket's inode (`sock_diag`'s `idiag_inode`, `socket:[N]` in `/proc`).
    pub inode: u32,
}

/// How a socket started listening: its limit and what capped it. The limit is
/// `min(backlog asked for, somaxconn)`; when it is below `somaxconn`, it *is*
/// the backlog the application asked for; when equal, the application asked for
/// at least that much.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenOrigin {
    /// `sk_max_ack_backlog` when it started listening.
    pub limit: u32,
    /// The namespace's `net.core.somaxconn` at that moment.
    pub somaxconn: u32,
    /// The command of the process that called `listen()` (`comm`, NUL-padded).
    pub comm: [u8; 16],
}

/// [`ListenKey`] → [`ListenOverflow`], per-CPU hash.
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
