//! Urgent events through one ring buffer, rate-limited per kind, node-wide.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use nettune_common::{
    Event, EventKind,
    events::{EVENT_MIN_INTERVAL_NS, EVENTS_RING_BYTES},
};

use crate::counters;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// 1 unless the agent turned urgent events off before load (`agent.wake_on_events
/// = false`). Read-only and frozen: the verifier drops the event code when 0.
#[unsafe(no_mangle)]
static URGENT_EVENTS: u32 = 1;

/// Slot 0: lost because the ring was full; slot 1: suppressed by the rate limit.
#[map]
static EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Time of the last event sent, indexed by [`EventKind`] value. Shared by all
/// CPUs: it is read by every event but written only when one is sent, so its
/// cache line stays shared and reading it is cheap.
#[map]
static LAST_EVENT_NS: Array<u64> = Array::with_max_entries(4, 0);

/// Sends an event unless one of the same kind left less than
/// `EVENT_MIN_INTERVAL_NS` ago. Never blocks: a full ring counts as lost.
#[inline(always)]
pub fn emit(kind: EventKind, netns: u32, ifindex: u32, port: u32) {
    // SAFETY: a static, valid for the program's life; read volatilely so that the
    // compiler does not fold in the initialiser the loader replaces.
    if unsafe { core::ptr::read_volatile(&raw const URGENT_EVENTS) } == 0 {
        return;
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(last) = LAST_EVENT_NS.get_ptr_mut(kind as u32) else {
        return;
    };
    // SAFETY: a valid 8-byte slot; other CPUs may read or write it at the same
    // time, and an aligned u64 access is never torn. A lost race sends one extra
    // event, which the rate limit tolerates.
    let last_sent = unsafe { core::ptr::read_volatile(last) };
    if last_sent != 0 && now.wrapping_sub(last_sent) < EVENT_MIN_INTERVAL_NS {
        counters::bump_slot(&EVENTS_LOST, 1);
        return;
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(last, now) };
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
