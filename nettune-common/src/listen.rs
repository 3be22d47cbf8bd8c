//! Accept-queue overflows per listening socket (fentry/kprobe variants).
//!
//! Where the kernel allows trampolines or kprobes, the programs on
//! `tcp_conn_request` and `tcp_v{4,6}_syn_recv_sock` see the listener at the moment
//! its accept queue is full and record its port, queue length and limit. Elsewhere
//! the agent falls back to each namespace's `ListenOverflows` counter.

/// [`ListenCall`] → [`ListenRequest`], LRU hash, from the
/// `syscalls/sys_enter_listen` tracepoint.
pub const LISTEN_CALLS_MAP: &str = "LISTEN_CALLS";
/// Bound of [`LISTEN_CALLS_MAP`].
pub const MAX_LISTEN_CALLS: u32 = 4096;

/// Who called `listen()` on which descriptor: the agent resolves
/// `/proc/<tgid>/fd/<fd>` to the socket's inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenCall {
    /// The process (thread group) id.
    pub tgid: u32,
    /// The socket's file descriptor in that process.
    pub fd: u32,
}

/// What one `listen()` call asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenRequest {
    /// The backlog passed, as the kernel reads it (an unsigned int).
    pub backlog: u32,
    /// The calling thread's network namespace inode; 0 when the kernel side
    /// could not read it (no BTF offsets), and the agent asks `/proc/<pid>/ns/net`.
    pub netns: u32,
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
