//! Per-CPU error counters: one slot per [`ProbeError`], which the agent sums and
//! exports, so a broken offset or a full map is visible instead of silently lost.
//!
//! The first error of each kind on a CPU, and then at most one every
//! [`LOG_EVERY_NS`], is also logged through aya-log: the agent forwards it to its
//! own log, so an operator sees *why* `nettune_probe_errors_total` moves. The
//! log call sits behind the error and the rate limit, never on the normal path.

use aya_ebpf::{EbpfContext, helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray};
use aya_log_ebpf::warn;
use nettune_common::ProbeError;

use crate::counters;

#[map]
static PROBE_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ProbeError::COUNT, 0);

/// When each error kind was last logged, per CPU.
#[map]
static LAST_ERROR_LOG_NS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ProbeError::COUNT, 0);

/// Least time between two logs of one error kind on one CPU.
const LOG_EVERY_NS: u64 = 10_000_000_000;

/// Counts one occurrence of `error` on this CPU, and logs it if it is the first
/// in a while.
#[inline(always)]
pub fn count<C: EbpfContext>(ctx: &C, error: ProbeError) {
    counters::bump_slot(&PROBE_ERRORS, error as u32);
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(last) = LAST_ERROR_LOG_NS.get_ptr_mut(error as u32) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array; no concurrent writer.
    let last = unsafe { &mut *last };
    if *last != 0 && now.wrapping_sub(*last) < LOG_EVERY_NS {
        return;
    }
    *last = now;
    match error {
        ProbeError::KernelRead => warn!(
            ctx,
            "reading a kernel struct failed (wrong BTF offsets?): counted in nettune_probe_errors_total"
        ),
        ProbeError::MapUpdate => warn!(
            ctx,
            "a map update failed (map full?): counted in nettune_probe_errors_total"
        ),
        ProbeError::TracepointRead => warn!(
            ctx,
            "reading the tracepoint record failed: counted in nettune_probe_errors_total"
        ),
    }
}

/// Counts (and rarely logs) the error of a failed `try_*` function.
#[inline(always)]
pub fn check<C: EbpfContext>(ctx: &C, result: Result<(), ProbeError>) {
    if let Err(e) = result {
        count(ctx, e);
    }
}
