//! Test-only packet loss: a tc classifier that drops a configured share of IPv4 TCP
//! packets. This kernel has no netem, and retransmits only follow loss on the
//! receiver's ingress (a drop on the sender's own egress is reported back to TCP as
//! a local congestion signal, not retransmitted as lost), so tests attach this to
//! the receiving end of a veth pair inside a test namespace.
#![no_std]
#![no_main]

mod runtime;

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::bpf_get_prandom_u32,
    macros::{classifier, map},
    maps::PerCpuArray,
    programs::TcContext,
};

/// Drop probability in units of 1/10000 (e.g. 500 = 5 %), set by the test at load.
#[unsafe(no_mangle)]
static LOSS_PER_10K: u32 = 0;

/// Slot 0: TCP packets seen; slot 1: TCP packets dropped (per CPU; the test sums).
#[map]
static LOSS_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;

#[classifier]
fn loss(ctx: TcContext) -> i32 {
    // Ethernet header: EtherType at byte 12 (network order); IPv4 protocol at 14 + 9.
    let is_tcp = matches!(ctx.load::<u16>(12), Ok(t) if u16::from_be(t) == ETH_P_IP)
        && matches!(ctx.load::<u8>(23), Ok(IPPROTO_TCP));
    if !is_tcp {
        return NEXT;
    }
    bump(0);
    // SAFETY: a plain static read; volatile keeps the loader-written value.
    let loss = unsafe { core::ptr::read_volatile(&raw const LOSS_PER_10K) };
    // SAFETY: bpf_get_prandom_u32 has no preconditions.
    if unsafe { bpf_get_prandom_u32() } % 10_000 < loss {
        bump(1);
        return TC_ACT_SHOT;
    }
    NEXT
}

/// `TC_ACT_UNSPEC` / `TCX_NEXT`: let the next program (e.g. nettune's, on clsact,
/// which runs after every TCX program) see the packet. `TC_ACT_OK` would be
/// `TCX_PASS`, which ends tc processing and would hide packets from it.
const NEXT: i32 = -1;

fn bump(slot: u32) {
    if let Some(p) = LOSS_STATS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a per-CPU array; nothing else writes it meanwhile.
        unsafe { *p += 1 };
    }
}
