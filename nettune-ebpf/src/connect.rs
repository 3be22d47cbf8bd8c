//! connect() calls that fail with `EADDRNOTAVAIL`: the namespace ran out of
//! ephemeral ports (`ip_local_port_range`), usually with many sockets in TIME_WAIT.
//!
//! The classic `syscalls/sys_exit_connect` tracepoint; the first test is on the
//! return value, so the common case costs one comparison.

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::PerCpuHashMap,
    programs::TracePointContext,
};
use nettune_common::{MAX_NETNS, ProbeError};

use crate::{counters, errors, kernel};

#[map]
static CONNECT_EADDRNOTAVAIL: PerCpuHashMap<u32, u64> =
    PerCpuHashMap::with_max_entries(MAX_NETNS, 0);

const EADDRNOTAVAIL: i64 = 99;

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    errors::check(&ctx, try_sys_exit_connect(&ctx));
    0
}

fn try_sys_exit_connect(ctx: &TracePointContext) -> Result<(), ProbeError> {
    let off = kernel::offsets();
    // SAFETY: offset of `ret` from this kernel's format file.
    let ret: i64 = unsafe { ctx.read_at(off.tp_connect_ret as usize) }
        .map_err(|_| ProbeError::TracepointRead)?;
    if ret != -EADDRNOTAVAIL {
        return Ok(());
    }
    let netns = kernel::netns_of_current_task(off)?;
    counters::add(&CONNECT_EADDRNOTAVAIL, &netns, 1)
}
