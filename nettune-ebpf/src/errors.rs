//! Per-CPU error counters: one slot per [`ProbeError`], exported by the agent as
//! `nettune_probe_errors_total{error=...}`.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use nettune_common::ProbeError;

#[map]
static PROBE_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ProbeError::COUNT, 0);

/// Counts one occurrence of `error` on this CPU.
#[inline(always)]
pub fn count(error: ProbeError) {
    if let Some(slot) = PROBE_ERRORS.get_ptr_mut(error as u32) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array; programs do not
        // preempt each other on one CPU, so no other writer can race this increment.
        unsafe { *slot = (*slot).wrapping_add(1) };
    }
}
