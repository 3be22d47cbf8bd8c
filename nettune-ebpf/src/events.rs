//! Urgent events through one ring buffer, rate-limited per CPU and kind.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use nettune_common::{
    Event, EventKind,
    events::{EVENT_MIN_INTERVAL_NS, EVENTS_RING_BYTES},
};

use crate::counters;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Slot 0: lost because the ring was full; slot 1: suppressed by the rate limit.
#[map]
static EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Time of the last event sent, per CPU, indexed by [`EventKind`] value.
#[map]
static LAST_EVENT_NS: PerCpuArray<u64> = PerCpuArray::with_max_entries(4, 0);

/// Sends an event unless one of the same kind left this CPU less than
/// `EVENT_MIN_INTERVAL_NS` ago. Never blocks: a full ring counts as lost.
#[inline(always)]
pub fn emit(kind: EventKind, netns: u32, ifindex: u32, port: u32) {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(last) = LAST_EVENT_NS.get_ptr_mut(kind as u32) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array; no concurrent writer.
    let last = unsafe { &mut *last };
    if *last != 0 && now.wrapping_sub(*last) < EVENT_MIN_INTERVAL_NS {
        counters::bump_slot(&EVENTS_LOST, 1);
        return;
    }
    *last = now;
    let event = Event {
        kind: kind as u32,
        netns,
        ifindex,
        port,
        timestamp_ns: now,
    };
    if EVENTS.output(&event, 0).is_err() {
        counters::bump_slot(&EVENTS_LOST, 0);
    }
}
