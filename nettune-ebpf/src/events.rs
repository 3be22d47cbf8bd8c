//! Urgent events through one ring buffer, sent only while the agent has armed
//! their kind and not from a namespace it made quiet.
//!
//! Each event costs the kernel a ring-buffer wake-up — on a virtual machine an
//! interrupt to self, tens of microseconds — and its only use is to wake a
//! collection that could change a decision. So the agent arms a kind when an
//! early collection could matter (the tuner enforces, and the last urgent
//! collection was not in vain); the program that sends one disarms it on its CPU;
//! a namespace whose events woke collections in vain is quiet for a while. What
//! the program asks, and what it counts when it sends nothing, is one cache line
//! of its CPU's own ([`UrgentSlot`]).

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, RingBuf},
};
use nettune_common::{
    Event, EventKind,
    events::{
        BPF_F_MMAPABLE, EVENTS_RING_BYTES, QUIET_NAMESPACES, URGENT_CPUS, UrgentSlot, UrgentSlots,
    },
};

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// 1 unless the agent turned urgent events off before load (`agent.wake_on_events
/// = false`). Read-only and frozen: the verifier drops the event code when 0.
#[unsafe(no_mangle)]
static URGENT_EVENTS: u32 = 1;

/// One slot per CPU; the agent maps it into its memory to arm kinds and name
/// quiet namespaces, and reads the counts from there.
#[map]
static URGENT: Array<UrgentSlots> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Whether `netns` is among the slot's quiet namespaces.
#[inline(always)]
fn quiet(slot: *const UrgentSlot, netns: u32) -> bool {
    // SAFETY: a valid slot; the agent may rewrite the list meanwhile, and a
    // torn view costs at most one event sent or not.
    let len = unsafe { core::ptr::read_volatile(&raw const (*slot).quiet_len) } as usize;
    let mut i = 0;
    while i < QUIET_NAMESPACES {
        // SAFETY: as above; `i` is within the array.
        if i < len && unsafe { core::ptr::read_volatile(&raw const (*slot).quiet[i]) } == netns {
            return true;
        }
        i += 1;
    }
    false
}

/// Sends an event if its kind is armed on this CPU and its namespace not quiet,
/// and disarms the kind here. Never blocks: a full ring counts as lost.
#[inline(always)]
pub fn emit(kind: EventKind, netns: u32, ifindex: u32, port: u32) {
    // SAFETY: a static, valid for the program's life; read volatilely so that the
    // compiler does not fold in the initialiser the loader replaces.
    if unsafe { core::ptr::read_volatile(&raw const URGENT_EVENTS) } == 0 {
        return;
    }
    // SAFETY: bpf_get_smp_processor_id has no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() } as usize;
    if cpu >= URGENT_CPUS {
        return;
    }
    let Some(slots) = URGENT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `cpu` is within the slots; only this CPU's programs write its counts
    // and its `armed`, and they do not run at once on one CPU.
    let slot = unsafe { (&raw mut (*slots)[cpu]) };
    let armed = unsafe { &raw mut (*slot).armed[kind as usize & 3] };
    // SAFETY: as above; the agent writes `armed` whole, one byte at a time.
    if unsafe { core::ptr::read_volatile(armed) } == 0 || quiet(slot, netns) {
        // SAFETY: as above.
        unsafe { (*slot).not_sent = (*slot).not_sent.wrapping_add(1) };
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
        // SAFETY: as above.
        unsafe { (*slot).ring_full = (*slot).ring_full.wrapping_add(1) };
    }
}
