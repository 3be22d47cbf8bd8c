//! Packet drops by kernel drop reason, per (netns, interface), from `kfree_skb`.
//!
//! Variants: `tp_btf/kfree_skb` (typed arguments), then the classic
//! `tracepoint/skb/kfree_skb`. Reason values are the running kernel's
//! `enum skb_drop_reason`; the agent names them from BTF. A `NETFILTER_DROP` is also
//! sent as an urgent event (conntrack table full, or a firewall dropping).

use aya_ebpf::{
    macros::{btf_tracepoint, map, tracepoint},
    maps::PerCpuHashMap,
    programs::{BtfTracePointContext, TracePointContext},
};
use nettune_common::{
    BudgetedMap, DropKey, EventKind, KernelOffsets, ProbeError, budget::FOLDED_IFINDEX,
    drops::MAX_DROP_KEYS, offsets::ABSENT,
};

use crate::{
    counters, errors, events,
    kernel::{self, BtfLoad, Memory, ProbeRead},
};

#[map]
static DROPS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(MAX_DROP_KEYS, 0);

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    let off = kernel::offsets();
    let skb: *const u8 = ctx.arg(0);
    let args = off.tp_btf_kfree_skb_args;
    // Arguments the kernel lacks are never read: the verifier prunes on `args`.
    let reason: u64 = if args >= 3 && args != ABSENT {
        ctx.arg(2)
    } else {
        0
    };
    let rx_sk: *const u8 = if args >= 4 && args != ABSENT {
        ctx.arg(3)
    } else {
        core::ptr::null()
    };
    errors::check(&ctx, record::<BtfLoad>(skb, reason as u32, rx_sk, off));
    0
}

#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn kfree_skb_tp(ctx: TracePointContext) -> u32 {
    errors::check(&ctx, try_tracepoint(&ctx));
    0
}

fn try_tracepoint(ctx: &TracePointContext) -> Result<(), ProbeError> {
    let off = kernel::offsets();
    // SAFETY: offsets from this kernel's format file for skb/kfree_skb; fields the
    // kernel lacks are ABSENT and not read.
    unsafe {
        let skb: *const u8 = ctx
            .read_at(off.tp_kfree_skb_skbaddr as usize)
            .map_err(|_| ProbeError::TracepointRead)?;
        let reason: u32 = if off.tp_kfree_skb_reason == ABSENT {
            0
        } else {
            ctx.read_at(off.tp_kfree_skb_reason as usize)
                .map_err(|_| ProbeError::TracepointRead)?
        };
        let rx_sk: *const u8 = if off.tp_kfree_skb_rx_sk == ABSENT {
            core::ptr::null()
        } else {
            ctx.read_at(off.tp_kfree_skb_rx_sk as usize)
                .map_err(|_| ProbeError::TracepointRead)?
        };
        record::<ProbeRead>(skb, reason, rx_sk, off)
    }
}

#[inline(always)]
fn record<M: Memory>(
    skb: *const u8,
    reason: u32,
    rx_sk: *const u8,
    off: &KernelOffsets,
) -> Result<(), ProbeError> {
    // `SKB_CONSUMED` (6.2+) and `SKB_NOT_DROPPED_YET` are not drops; their values
    // come from this kernel's BTF. Before drop reasons (5.17) every reason reads 0
    // and the agent leaves both ABSENT: everything counts.
    if reason == off.reason_consumed || reason == off.reason_not_dropped_yet {
        return Ok(());
    }
    let (netns, ifindex) = kernel::locate_skb::<M>(skb, rx_sk, off);
    let key = DropKey {
        netns,
        ifindex,
        reason,
        _pad: 0,
    };
    let folded = DropKey {
        ifindex: FOLDED_IFINDEX,
        ..key
    };
    let count = counters::entry_within(&DROPS, &key, &folded, &0, netns, BudgetedMap::Drops)?;
    // SAFETY: this CPU's value of a per-CPU map entry; no other writer runs here.
    unsafe { *count = (*count).wrapping_add(1) };
    if reason == off.reason_netfilter_drop && !tracked::<M>(skb, off) {
        events::emit(EventKind::NetfilterDrop, netns, ifindex, 0);
    }
    Ok(())
}

/// Whether the dropped packet had a conntrack entry: then a full table did not
/// refuse it (`nf_conntrack_in` drops a packet it cannot track before attaching
/// an entry), so a firewall rule did, and that is no news for the tuner. One load,
/// decided before any event is built.
#[inline(always)]
fn tracked<M: Memory>(skb: *const u8, off: &KernelOffsets) -> bool {
    off.skb_nfct != ABSENT && M::read::<u64>(skb, off.skb_nfct).is_ok_and(|ct| ct != 0)
}
