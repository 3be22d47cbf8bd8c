//! TCP state changes (`tp_btf/inet_sock_set_state`), for two signals that would
//! otherwise need syscall tracepoints — and any attached syscall tracepoint sends
//! every system call of every task on the node through the kernel's slow path.
//! This tracepoint runs on TCP state changes only, and the first test is on the
//! two states, so every other change costs two comparisons.
//!
//! - **A socket starts listening** (`→ TCP_LISTEN`, in `inet_csk_listen_start`,
//!   after `sk_max_ack_backlog` is set): its limit, the namespace's `somaxconn`
//!   at that moment and the calling process are recorded, keyed as `sock_diag`
//!   names the socket. A limit below somaxconn is what the application asked
//!   `listen()` for; a limit equal to it means it asked for at least that.
//! - **A connect fails before its SYN was sent** (`TCP_SYN_SENT → TCP_CLOSE` by
//!   a socket that never sent a segment): `tcp_v{4,6}_connect` moves to SYN_SENT,
//!   then `inet_hash_connect` finds no free local port and returns
//!   `-EADDRNOTAVAIL`, and the failure path closes the socket. A refused SYN, a
//!   timeout, an ICMP error or the application closing a connecting socket all
//!   come after the SYN left (`segs_out` ≥ 1). (The local port cannot tell: the
//!   close releases it before the state changes.) Rarer failures in the same
//!   window — no memory for the SYN, a route gone between lookup and send, a
//!   TCP Fast Open socket closed before its first write — count too.

use aya_ebpf::{
    helpers::bpf_get_current_comm,
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use nettune_common::{
    ListenOrigin, ListenSocket, MAX_NETNS, ProbeError, listen::MAX_LISTEN_ORIGINS, offsets::ABSENT,
};

use crate::{
    counters, errors,
    kernel::{self, BtfLoad, Memory, ProbeRead},
};

#[map]
static CONNECT_EADDRNOTAVAIL: PerCpuHashMap<u32, u64> =
    PerCpuHashMap::with_max_entries(MAX_NETNS, 0);

#[map]
static LISTEN_ORIGINS: LruHashMap<ListenSocket, ListenOrigin> =
    LruHashMap::with_max_entries(MAX_LISTEN_ORIGINS, 0);

/// `TCP_SYN_SENT` (`include/net/tcp_states.h`).
const SYN_SENT: i32 = 2;
/// `TCP_CLOSE`.
const CLOSE: i32 = 7;
/// `TCP_LISTEN`.
const LISTEN: i32 = 10;

// inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    if new == LISTEN {
        errors::check(&ctx, record_listener(ctx.arg(0)));
    } else if old == SYN_SENT && new == CLOSE {
        errors::check(&ctx, count_unsent_connect(ctx.arg(0)));
    }
    0
}

#[inline(always)]
fn record_listener(sk: *const u8) -> Result<(), ProbeError> {
    let off = kernel::offsets();
    let netns = kernel::netns_of_sock::<BtfLoad>(sk, off)?;
    let net: *const u8 = BtfLoad::read(sk, off.sock_net)?;
    let somaxconn: i32 = BtfLoad::read(net, off.net_somaxconn)?;
    let limit: u32 = BtfLoad::read(sk, off.sock_max_ack_backlog)?;
    let socket: *const u8 = BtfLoad::read(sk, off.sock_socket)?;
    if socket.is_null() || off.socket_ino == ABSENT {
        return Err(ProbeError::KernelRead);
    }
    // The inode sits beyond `struct socket` in its allocation: not a BTF load.
    let inode: u64 = ProbeRead::read(socket, off.socket_ino)?;
    let key = ListenSocket {
        netns,
        inode: inode as u32,
    };
    let origin = ListenOrigin {
        limit,
        somaxconn: somaxconn as u32,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    LISTEN_ORIGINS
        .insert(&key, &origin, 0)
        .map_err(|_| ProbeError::MapUpdate)
}

#[inline(always)]
fn count_unsent_connect(sk: *const u8) -> Result<(), ProbeError> {
    let off = kernel::offsets();
    // `struct tcp_sock` extends `struct sock`: beyond the BTF type the
    // tracepoint names, so not a BTF load.
    let sent: u32 = ProbeRead::read(sk, off.tcp_segs_out)?;
    if sent != 0 {
        return Ok(());
    }
    let netns = kernel::netns_of_sock::<BtfLoad>(sk, off)?;
    counters::add(&CONNECT_EADDRNOTAVAIL, &netns, 1)
}
