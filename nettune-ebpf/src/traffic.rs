//! Per-interface traffic on pods' host-side interfaces (tc: TCX or clsact).
//!
//! One hash lookup per packet and no insert: the agent creates the entry for an
//! interface before attaching, so a packet on an interface we do not watch (or no
//! longer watch) costs a failed lookup and nothing else. The programs never change
//! the verdict (`TC_ACT_UNSPEC` / `TCX_NEXT`: let the next program decide).

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    macros::{classifier, map},
    maps::PerCpuHashMap,
    programs::TcContext,
};
use nettune_common::{IfaceTraffic, traffic::MAX_IFACES};

#[map]
static IFACE_TRAFFIC: PerCpuHashMap<u32, IfaceTraffic> =
    PerCpuHashMap::with_max_entries(MAX_IFACES, 0);

/// `TC_ACT_UNSPEC` for clsact, `TCX_NEXT` for TCX: both -1, "carry on".
const NEXT: i32 = -1;

#[classifier]
pub fn pod_ingress(ctx: TcContext) -> i32 {
    count(&ctx, true);
    NEXT
}

#[classifier]
pub fn pod_egress(ctx: TcContext) -> i32 {
    count(&ctx, false);
    NEXT
}

#[inline(always)]
fn count(ctx: &TcContext, ingress: bool) {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context of a tc program is a valid __sk_buff.
    let ifindex = unsafe { (*skb).ifindex };
    let Some(traffic) = IFACE_TRAFFIC.get_ptr_mut(&ifindex) else {
        return;
    };
    // SAFETY: this CPU's value of a per-CPU map entry; no other writer runs here.
    let traffic = unsafe { &mut *traffic };
    let bytes = u64::from(ctx.len());
    if ingress {
        traffic.ingress_packets += 1;
        traffic.ingress_bytes += bytes;
    } else {
        traffic.egress_packets += 1;
        traffic.egress_bytes += bytes;
    }
}
