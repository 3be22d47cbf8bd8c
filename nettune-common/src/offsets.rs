//! Kernel struct layout handed to the programs before load.
//!
//! The programs never hard-code where a field lives in `struct sock` or `struct
//! sk_buff`: those offsets change between kernel versions and configs. The agent
//! reads them from the running kernel's BTF (`/sys/kernel/btf/vmlinux`) and from the
//! tracepoint format files, fills this struct and writes it into the object's
//! read-only global `OFFSETS` before load. The verifier then sees them as constants.

/// Name of the global in the eBPF object that holds [`KernelOffsets`].
pub const OFFSETS_GLOBAL: &str = "OFFSETS";

/// Byte offsets of the kernel fields the programs read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct sock` → `__sk_common.skc_net.net` (a `struct net *`).
    pub sock_net: u32,
    /// `struct net` → `ns.inum`: the namespace's inode number, as in `/proc/<pid>/ns/net`.
    pub net_inum: u32,
    /// `struct sk_buff` → `cb` plus `struct tcp_skb_cb` → `tcp_gso_segs` (a `u16`):
    /// how many segments a TCP skb carries (`tcp_skb_pcount()`).
    pub skb_tcp_gso_segs: u32,
    /// Classic tracepoint `tcp/tcp_retransmit_skb`: offset of `skaddr` in the record.
    pub tp_retransmit_skaddr: u32,
    /// Classic tracepoint `tcp/tcp_retransmit_skb`: offset of `skbaddr` in the record.
    pub tp_retransmit_skbaddr: u32,
    /// Classic tracepoint `tcp/tcp_retransmit_skb`: offset of `err`, or [`ABSENT`].
    pub tp_retransmit_err: u32,
    /// Number of arguments of the `tcp_retransmit_skb` BTF tracepoint (2 before the
    /// `err` argument was added, 3 after).
    pub tp_btf_retransmit_args: u32,
    /// Explicit padding: keeps the size a multiple of 8 on both sides.
    pub _pad: u32,
}

/// Marks a field that the running kernel does not have.
pub const ABSENT: u32 = u32::MAX;
