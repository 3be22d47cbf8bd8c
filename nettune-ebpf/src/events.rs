//! Urgent events through one ring buffer, sent only while the agent has armed
//! their kind.
//!
//! Each event costs the kernel a ring-buffer wake-up — on a virtual machine an
//! interrupt to self, tens of microseconds — and its only use is to wake a
//! collection that could change a decision. So the agent arms a kind when an
//! early collection could matter (the tuner enforces, and the last urgent
//! collection was not in vain); the program that sends one disarms it; every
//! other occurrence costs one array load and a per-CPU count.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use nettune_common::{
    Event, EventKind,
    events::{EVENT_KINDS, EVENTS_QUIET_ENTRIES, EVENTS_RING_BYTES, quiet_key},
};

use crate::counters;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// 1 unless the agent turned urgent events off before load (`agent.wake_on_events
/// = false`). Read-only and frozen: the verifier drops the event code when 0.
#[unsafe(no_mangle)]
static URGENT_EVENTS: u32 = 1;

/// Slot 0: lost because the ring was full; slot 1: not sent, the kind not armed.
#[map]
static EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Indexed by [`EventKind`] value: 1 while the agent wants that kind. Read by
/// every occurrence, written only by the agent and by the program that sends, so
/// its cache line stays shared and reading it is cheap.
#[map]
static EVENTS_ARMED: Array<u32> = Array::with_max_entries(EVENT_KINDS, 0);

/// Namespaces whose events of a kind the agent does not want for now (key
/// `quiet_key(kind, netns)`): looked up only once the kind is armed.
#[map]
static EVENTS_QUIET: HashMap<u64, u8> = HashMap::with_max_entries(EVENTS_QUIET_ENTRIES, 0);

/// Sends an event if its kind is armed and its namespace not quiet, and disarms
/// the kind. Never blocks: a full ring counts as lost.
#[inline(always)]
pub fn emit(kind: EventKind, netns: u32, ifindex: u32, port: u32) {
    // SAFETY: a static, valid for the program's life; read volatilely so that the
    // compiler does not fold in the initialiser the loader replaces.
    if unsafe { core::ptr::read_volatile(&raw const URGENT_EVENTS) } == 0 {
        return;
    }
    let Some(armed) = EVENTS_ARMED.get_ptr_mut(kind as u32) else {
        return;
    };
    // SAFETY: a valid 4-byte slot; other CPUs may read or write it at the same
    // time, and an aligned u32 access is never torn. CPUs racing past the check
    // each send one event, which the agent's collection gap absorbs. The quiet
    // lookup's value is not used, only whether there is one.
    if unsafe { core::ptr::read_volatile(armed) } == 0
        || unsafe { EVENTS_QUIET.get(&quiet_key(kind as u32, netns)) }.is_some()
    {
        counters::bump_slot(&EVENTS_LOST, 1);
        return;
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(armed, 0) };
    let event = Event {
        kind: kind as u32,
        netns,
        ifindex,
        port,
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
    };
    if EVENTS.output(&event, 0).is_err() {
        counters::bump_slot(&EVENTS_LOST, 0);
    }
}
