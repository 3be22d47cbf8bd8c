//! TCP retransmits per network namespace, from `tcp_retransmit_skb`.
//!
//! Two variants of one program; the agent attaches the first that works:
//! 1. `tp_btf/tcp_retransmit_skb`: typed arguments, no tracefs needed, cheapest.
//! 2. `tracepoint/tcp/tcp_retransmit_skb`: the classic tracepoint.
//!
//! Since Linux 6.12 the tracepoint also fires for failed attempts and carries `err`;
//! those go to `failed`, so `segments` stays comparable with the `RetransSegs` MIB
//! counter (`/proc/net/snmp`), which counts segments handed to the device.

use aya_ebpf::{
    macros::{btf_tracepoint, map, tracepoint},
    maps::PerCpuHashMap,
    programs::{BtfTracePointContext, TracePointContext},
};
use nettune_common::{KernelOffsets, MAX_NETNS, ProbeError, RetransmitCounters, offsets::ABSENT};

use crate::{
    counters, errors,
    kernel::{self, BtfLoad, Memory, ProbeRead},
};

#[map]
static RETRANSMITS: PerCpuHashMap<u32, RetransmitCounters> =
    PerCpuHashMap::with_max_entries(MAX_NETNS, 0);

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_btf(ctx: BtfTracePointContext) -> i32 {
    let off = kernel::offsets();
    let sk: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    // The verifier rejects reading an argument the tracepoint does not have; the
    // branch is pruned on kernels where the agent wrote 2 here.
    let err: i32 = if off.tp_btf_retransmit_args >= 3 && off.tp_btf_retransmit_args != ABSENT {
        ctx.arg(2)
    } else {
        0
    };
    errors::check(&ctx, record::<BtfLoad>(sk, skb, err, off));
    0
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_tp(ctx: TracePointContext) -> u32 {
    errors::check(&ctx, try_tracepoint(&ctx));
    0
}

fn try_tracepoint(ctx: &TracePointContext) -> Result<(), ProbeError> {
    let off = kernel::offsets();
    // SAFETY: the offsets come from this kernel's format file for this tracepoint.
    let (sk, skb) = unsafe {
        (
            ctx.read_at::<*const u8>(off.tp_retransmit_skaddr as usize),
            ctx.read_at::<*const u8>(off.tp_retransmit_skbaddr as usize),
        )
    };
    let (Ok(sk), Ok(skb)) = (sk, skb) else {
        return Err(ProbeError::TracepointRead);
    };
    let err = if off.tp_retransmit_err == ABSENT {
        0
    } else {
        // SAFETY: as above; the field exists when the agent wrote its offset.
        unsafe { ctx.read_at::<i32>(off.tp_retransmit_err as usize) }
            .map_err(|_| ProbeError::TracepointRead)?
    };
    record::<ProbeRead>(sk, skb, err, off)
}

#[inline(always)]
fn record<M: Memory>(
    sk: *const u8,
    skb: *const u8,
    err: i32,
    off: &KernelOffsets,
) -> Result<(), ProbeError> {
    let netns = kernel::netns_of_sock::<M>(sk, off)?;
    let counters = counters::entry(&RETRANSMITS, &netns, &RetransmitCounters::default())?;
    // SAFETY: this CPU's value of a per-CPU map entry; no other writer runs here.
    let counters = unsafe { &mut *counters };
    if err != 0 {
        counters.failed += 1;
        return Ok(());
    }
    let segments = kernel::tcp_skb_segments::<M>(skb, off)?;
    counters.retransmits += 1;
    counters.segments += segments;
    Ok(())
}
