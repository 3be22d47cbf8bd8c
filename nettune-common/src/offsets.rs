//! Kernel struct layout handed to the programs before load.
//!
//! The programs never hard-code where a field lives in `struct sock` or `struct
//! sk_buff`: those offsets change between kernel versions and configs. The agent
//! reads them from the running kernel's BTF (`/sys/kernel/btf/vmlinux`) and from the
//! tracepoint format files, fills this struct and writes it into the object's
//! read-only global `OFFSETS` before load. The verifier then sees them as constants
//! and prunes branches on them (e.g. a field the kernel lacks is never read).

/// Name of the global in the eBPF object that holds [`KernelOffsets`].
pub const OFFSETS_GLOBAL: &str = "OFFSETS";

/// Marks a field (or tracepoint argument) that the running kernel does not have.
pub const ABSENT: u32 = u32::MAX;

/// Byte offsets of the kernel fields the programs read, and a few kernel constants.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    // struct sock (fields of __sk_common are given from the start of struct sock)
    /// `__sk_common.skc_net.net`: the socket's `struct net *`.
    pub sock_net: u32,
    /// `__sk_common.skc_num`: local port, host order (u16).
    pub sock_num: u32,
    /// `sk_ack_backlog`: connections waiting in the accept queue (u32).
    pub sock_ack_backlog: u32,
    /// `sk_max_ack_backlog`: the accept queue's limit (u32).
    pub sock_max_ack_backlog: u32,
    /// `sk_socket`: the socket's `struct socket *`.
    pub sock_socket: u32,
    /// `struct tcp_sock` → `segs_out` (u32): segments the socket ever sent.
    pub tcp_segs_out: u32,
    /// `struct socket` → its inode's `i_ino`: `socket_alloc.vfs_inode` (the inode
    /// follows the socket in one allocation) plus `inode.i_ino` (unsigned long).
    pub socket_ino: u32,

    // struct net, struct net_device, struct sk_buff, task
    /// `struct net` → `ns.inum`: the namespace's inode number, as in `/proc/<pid>/ns/net`.
    pub net_inum: u32,
    /// `struct net` → `core.sysctl_somaxconn` (int): the namespace's somaxconn.
    pub net_somaxconn: u32,
    /// `struct net_device` → `ifindex` (i32).
    pub dev_ifindex: u32,
    /// `struct net_device` → `nd_net.net`.
    pub dev_net: u32,
    /// `struct sk_buff` → `dev`.
    pub skb_dev: u32,
    /// `struct sk_buff` → `sk`.
    pub skb_sk: u32,
    /// `struct sk_buff` → `_nfct` (unsigned long): the packet's conntrack entry;
    /// [`ABSENT`] without conntrack.
    pub skb_nfct: u32,
    /// `struct sk_buff` → `cb` plus `struct tcp_skb_cb` → `tcp_gso_segs` (u16):
    /// how many segments a TCP skb carries (`tcp_skb_pcount()`).
    pub skb_tcp_gso_segs: u32,

    // Classic tracepoint records (from tracefs format files)
    /// `tcp/tcp_retransmit_skb`: `skaddr`.
    pub tp_retransmit_skaddr: u32,
    /// `tcp/tcp_retransmit_skb`: `skbaddr`.
    pub tp_retransmit_skbaddr: u32,
    /// `tcp/tcp_retransmit_skb`: `err` (6.12+), or [`ABSENT`].
    pub tp_retransmit_err: u32,
    /// `skb/kfree_skb`: `skbaddr`.
    pub tp_kfree_skb_skbaddr: u32,
    /// `skb/kfree_skb`: `reason` (5.17+), or [`ABSENT`].
    pub tp_kfree_skb_reason: u32,
    /// `skb/kfree_skb`: `rx_sk` (6.12+), or [`ABSENT`].
    pub tp_kfree_skb_rx_sk: u32,

    // BTF tracepoint argument counts (excluding the leading context pointer)
    /// `tcp_retransmit_skb`: 2, or 3 with `err`.
    pub tp_btf_retransmit_args: u32,
    /// `kfree_skb`: 3 (skb, location, reason), or 4 with `rx_sk`.
    pub tp_btf_kfree_skb_args: u32,
    /// `inet_sock_set_state`: 3 (sk, oldstate, newstate).
    pub tp_btf_sock_state_args: u32,

    // Kernel constants
    /// `SKB_DROP_REASON_NETFILTER_DROP` on this kernel, or [`ABSENT`].
    pub reason_netfilter_drop: u32,
    /// `SKB_NOT_DROPPED_YET` on this kernel, or [`ABSENT`]: not a drop.
    pub reason_not_dropped_yet: u32,
    /// `SKB_CONSUMED` on this kernel (6.2+), or [`ABSENT`]: not a drop. Before
    /// 6.2 the value 1 is `NOT_SPECIFIED`, a real drop: never hard-code it.
    pub reason_consumed: u32,
}

impl KernelOffsets {
    /// Every offset unknown: what the programs see when nothing could be resolved.
    pub const UNKNOWN: Self = Self {
        sock_net: ABSENT,
        sock_num: ABSENT,
        sock_ack_backlog: ABSENT,
        sock_max_ack_backlog: ABSENT,
        sock_socket: ABSENT,
        tcp_segs_out: ABSENT,
        socket_ino: ABSENT,
        net_inum: ABSENT,
        net_somaxconn: ABSENT,
        dev_ifindex: ABSENT,
        dev_net: ABSENT,
        skb_dev: ABSENT,
        skb_sk: ABSENT,
        skb_nfct: ABSENT,
        skb_tcp_gso_segs: ABSENT,
        tp_retransmit_skaddr: ABSENT,
        tp_retransmit_skbaddr: ABSENT,
        tp_retransmit_err: ABSENT,
        tp_kfree_skb_skbaddr: ABSENT,
        tp_kfree_skb_reason: ABSENT,
        tp_kfree_skb_rx_sk: ABSENT,
        tp_btf_retransmit_args: ABSENT,
        tp_btf_kfree_skb_args: ABSENT,
        tp_btf_sock_state_args: ABSENT,
        reason_netfilter_drop: ABSENT,
        reason_not_dropped_yet: ABSENT,
        reason_consumed: ABSENT,
    };
}

impl Default for KernelOffsets {
    fn default() -> Self {
        Self::UNKNOWN
    }
}
