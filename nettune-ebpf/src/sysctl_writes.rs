//! Who writes the node's `net.*` sysctls: a `cgroup/sysctl` program on the root
//! cgroup sees every write through `/proc/sys` by any process on the node (a pod's
//! included), before the kernel applies it. It records the sysctl, the writer's
//! command, process and cgroup, and the value, and lets the write through: it
//! observes, it never refuses.
//!
//! Reads are let through at once (the first field tells); names outside `net/`
//! cost the name's copy and a compare.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_sysctl_get_name, bpf_sysctl_get_new_value},
    },
    macros::{cgroup_sysctl, map},
    maps::LruHashMap,
    programs::SysctlContext,
};
use nettune_common::{
    SysctlWrite, SysctlWriter,
    sysctl_writes::{MAX_SYSCTL_WRITERS, SYSCTL_NAME_LEN, SYSCTL_VALUE_LEN},
};

#[map]
static SYSCTL_WRITES: LruHashMap<SysctlWriter, SysctlWrite> =
    LruHashMap::with_max_entries(MAX_SYSCTL_WRITERS, 0);

/// Let the access through.
const ALLOW: i32 = 1;

#[cgroup_sysctl]
pub fn sysctl_writes(ctx: SysctlContext) -> i32 {
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
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        value_len: 0,
        value: [0; SYSCTL_VALUE_LEN],
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
    if let Some(seen) = SYSCTL_WRITES.get_ptr_mut(&key) {
        // SAFETY: a value of the map, valid while the program runs; a race with
        // another write of the same sysctl by the same command loses a count.
        unsafe {
            write.count = (*seen).count.saturating_add(1);
            *seen = write;
        }
    } else {
        let _ = SYSCTL_WRITES.insert(&key, &write, 0);
    }
    ALLOW
}
