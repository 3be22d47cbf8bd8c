//! Who writes the node's `net.*` sysctls: a `cgroup/sysctl` program on the root
//! cgroup sees every write through `/proc/sys` by any process on the node (a pod's
//! included), before the kernel applies it. It records the sysctl, the writer's
//! command, process and cgroup, and the value, and lets the write through — unless
//! the sysctl is guarded (`tuning.guard`, opt-in): then a write by another than
//! nettune that would set it below nettune's value is refused (`EPERM` to the
//! writer) and counted.
//!
//! Reads are let through after one check (is it the agent, whose cgroup the
//! guards exempt, to be learned?); names outside `net/`
//! cost the name's copy and a compare.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_strtoul, bpf_sysctl_get_name, bpf_sysctl_get_new_value},
    },
    macros::{cgroup_sysctl, map},
    maps::{Array, HashMap, LruHashMap},
    programs::SysctlContext,
};
use nettune_common::{
    SysctlWrite, SysctlWriter,
    sysctl_writes::{MAX_SYSCTL_GUARDS, MAX_SYSCTL_WRITERS, SYSCTL_NAME_LEN, SYSCTL_VALUE_LEN},
};

#[map]
static SYSCTL_WRITES: LruHashMap<SysctlWriter, SysctlWrite> =
    LruHashMap::with_max_entries(MAX_SYSCTL_WRITERS, 0);

/// Guarded sysctls (by name) → the lowest value another writer may set.
#[map]
static SYSCTL_GUARDS: HashMap<[u8; SYSCTL_NAME_LEN], u64> =
    HashMap::with_max_entries(MAX_SYSCTL_GUARDS, 0);

/// Slot 0: the agent's cgroup, learned from its first access to a sysctl.
#[map]
static AGENT_CGROUP: Array<u64> = Array::with_max_entries(1, 0);

/// The agent's process (`AGENT_TGID_GLOBAL`), set before load. `static mut`,
/// in `.data`, so that no equal constant is merged into it (see `budget`).
#[unsafe(no_mangle)]
static mut AGENT_TGID: u32 = 0;

/// Let the access through.
const ALLOW: i32 = 1;
/// Refuse it (the writer gets `EPERM`).
const REFUSE: i32 = 0;

#[cgroup_sysctl]
pub fn sysctl_writes(ctx: SysctlContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a static, valid for the program's life, written by no program.
    let agent = unsafe { core::ptr::read_volatile(&raw const AGENT_TGID) };
    if tgid == agent {
        learn_agent_cgroup();
    }
    // SAFETY: the context of a cgroup/sysctl program is a valid bpf_sysctl.
    if unsafe { (*ctx.sysctl).write } == 0 {
        return ALLOW;
    }
    let mut key = SysctlWriter {
        name: [0; SYSCTL_NAME_LEN],
        comm: [0; 16],
    };
    // SAFETY: the buffer is ours and as long as we say; flags 0 asks for the
    // full name (`net/core/somaxconn`). A longer name comes back truncated.
    unsafe {
        bpf_sysctl_get_name(
            ctx.sysctl,
            key.name.as_mut_ptr().cast(),
            SYSCTL_NAME_LEN as u64,
            0,
        )
    };
    if key.name[0] != b'n' || key.name[1] != b'e' || key.name[2] != b't' || key.name[3] != b'/' {
        return ALLOW;
    }
    key.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let mut write = SysctlWrite {
        count: 1,
        // SAFETY: these helpers have no preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid,
        value_len: 0,
        value: [0; SYSCTL_VALUE_LEN],
        refused: 0,
    };
    // SAFETY: as above; the kernel copies at most the buffer's length.
    let n = unsafe {
        bpf_sysctl_get_new_value(
            ctx.sysctl,
            write.value.as_mut_ptr().cast(),
            SYSCTL_VALUE_LEN as u64,
        )
    };
    write.value_len = if n < 0 { 0 } else { n as u32 };
    let refused = tgid != agent && lowers_a_guard(&key.name, &write);
    if refused {
        write.refused = 1;
    }
    if let Some(seen) = SYSCTL_WRITES.get_ptr_mut(&key) {
        // SAFETY: a value of the map, valid while the program runs; a race with
        // another write of the same sysctl by the same command loses a count.
        unsafe {
            write.count = (*seen).count.saturating_add(1);
            write.refused = (*seen).refused.saturating_add(write.refused);
            *seen = write;
        }
    } else {
        let _ = SYSCTL_WRITES.insert(&key, &write, 0);
    }
    if refused { REFUSE } else { ALLOW }
}

/// Remembers the cgroup of the agent's first access to a sysctl: processes in
/// it (the agent's container, `kubectl exec … nettune rollback` too) pass the
/// guards.
#[inline(always)]
fn learn_agent_cgroup() {
    if let Some(slot) = AGENT_CGROUP.get_ptr_mut(0) {
        // SAFETY: the array's one slot, valid while the program runs; only the
        // agent's own accesses write it, always the same value.
        unsafe {
            if *slot == 0 {
                *slot = bpf_get_current_cgroup_id();
            }
        }
    }
}

/// Whether `write` would set the guarded sysctl `name` below its guard, by a
/// process outside the agent's cgroup. A value that does not parse as a number
/// is left to the kernel to refuse or take.
#[inline(always)]
fn lowers_a_guard(name: &[u8; SYSCTL_NAME_LEN], write: &SysctlWrite) -> bool {
    // SAFETY: a value of the map, valid while the program runs.
    let Some(floor) = (unsafe { SYSCTL_GUARDS.get(name) }).copied() else {
        return false;
    };
    if AGENT_CGROUP
        .get(0)
        .is_some_and(|c| *c != 0 && *c == write.cgroup_id)
    {
        return false;
    }
    let mut value: u64 = 0;
    // SAFETY: the buffer is the write's own copy, of the length given; the
    // result goes to a local.
    let parsed = unsafe {
        bpf_strtoul(
            write.value.as_ptr().cast(),
            SYSCTL_VALUE_LEN as u64,
            0,
            &raw mut value,
        )
    };
    parsed > 0 && value < floor
}
