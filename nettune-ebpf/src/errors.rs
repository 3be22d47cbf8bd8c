//! Per-CPU error counters: one slot per [`ProbeError`], which the agent sums and
//! exports, so a broken offset or a full map is visible instead of silently lost.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use nettune_common::ProbeError;

use crate::counters;

#[map]
static PROBE_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ProbeError::COUNT, 0);

/// Counts one occurrence of `error` on this CPU.
#[inline(always)]
pub fn count(error: ProbeError) {
    counters::bump_slot(&PROBE_ERRORS, error as u32);
}

/// Counts the error of a failed `try_*` function.
#[inline(always)]
pub fn check(result: Result<(), ProbeError>) {
    if let Err(e) = result {
        count(e);
    }
}
