//! Accept-queue overflows per listening socket (how each socket started
//! listening is [`crate::sock_state`]'s).
//!
//! The kernel checks `sk_acceptq_is_full(listener)` in `tcp_conn_request` (a SYN
//! arrives) and in `tcp_v{4,6}_syn_recv_sock` (the handshake's last ACK arrives);
//! either way a full queue counts `ListenOverflows` and drops. Probing both
//! functions on entry with the same test sees each overflow with the listener's
//! port, queue length and limit. Variants: fentry (trampolines), then kprobe. Where
//! neither exists (this project's CI kernel), the agent uses each namespace's
//! `ListenOverflows` counter instead.

use aya_ebpf::{
    macros::{fentry, kprobe, map},
    maps::PerCpuHashMap,
    programs::{FEntryContext, ProbeContext},
};
use nettune_common::{
    BudgetedMap, EventKind, ListenKey, ListenOverflow, ProbeError, budget::FOLDED_PORT,
    listen::MAX_LISTENERS,
};

use crate::{counters, errors, events, kernel};

#[map]
static LISTEN_OVERFLOWS: PerCpuHashMap<ListenKey, ListenOverflow> =
    PerCpuHashMap::with_max_entries(MAX_LISTENERS, 0);

// tcp_conn_request(rsk_ops, af_ops, sk, skb): the listener is argument 2.
#[fentry(function = "tcp_conn_request")]
pub fn tcp_conn_request_fentry(ctx: FEntryContext) -> i32 {
    errors::check(&ctx, check_listener(ctx.arg(2)));
    0
}

// tcp_v4_syn_recv_sock(sk, skb, req, dst, req_unhash, own_req): listener is argument 0.
#[fentry(function = "tcp_v4_syn_recv_sock")]
pub fn tcp_v4_syn_recv_sock_fentry(ctx: FEntryContext) -> i32 {
    errors::check(&ctx, check_listener(ctx.arg(0)));
    0
}

#[fentry(function = "tcp_v6_syn_recv_sock")]
pub fn tcp_v6_syn_recv_sock_fentry(ctx: FEntryContext) -> i32 {
    errors::check(&ctx, check_listener(ctx.arg(0)));
    0
}

#[kprobe]
pub fn tcp_conn_request_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(2) {
        errors::check(&ctx, check_listener(sk));
    }
    0
}

#[kprobe]
pub fn tcp_syn_recv_sock_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(0) {
        errors::check(&ctx, check_listener(sk));
    }
    0
}

#[inline(always)]
fn check_listener(sk: *const u8) -> Result<(), ProbeError> {
    let off = kernel::offsets();
    let backlog: u32 = kernel::read(sk, off.sock_ack_backlog)?;
    let max_backlog: u32 = kernel::read(sk, off.sock_max_ack_backlog)?;
    // sk_acceptq_is_full(): the kernel's own test.
    if backlog <= max_backlog {
        return Ok(());
    }
    let netns = kernel::netns_of_sock::<kernel::ProbeRead>(sk, off)?;
    let port: u16 = kernel::read(sk, off.sock_num)?;
    let key = ListenKey {
        netns,
        port,
        _pad: 0,
    };
    let folded = ListenKey {
        port: FOLDED_PORT,
        ..key
    };
    let stats = counters::entry_within(
        &LISTEN_OVERFLOWS,
        &key,
        &folded,
        &ListenOverflow::default(),
        netns,
        BudgetedMap::ListenOverflows,
    )?;
    // SAFETY: this CPU's value of a per-CPU map entry; no other writer runs here.
    let stats = unsafe { &mut *stats };
    stats.overflows += 1;
    stats.backlog = backlog;
    stats.max_backlog = max_backlog;
    events::emit(EventKind::ListenOverflow, netns, 0, u32::from(port));
    Ok(())
}
