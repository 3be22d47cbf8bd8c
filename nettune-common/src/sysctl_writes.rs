//! Writes to `net.*` sysctls, seen by a `cgroup/sysctl` program on the root
//! cgroup: who wrote which sysctl, how often, and the last value written.

/// [`SysctlWriter`] → [`SysctlWrite`], an LRU hash.
pub const SYSCTL_WRITES_MAP: &str = "SYSCTL_WRITES";

/// `[u8; SYSCTL_NAME_LEN]` (a sysctl's name as [`SysctlWriter::name`]) → the
/// lowest value (`u64`) a writer other than nettune may write: `tuning.guard`.
pub const SYSCTL_GUARDS_MAP: &str = "SYSCTL_GUARDS";

/// Sysctls guarded at most.
pub const MAX_SYSCTL_GUARDS: u32 = 64;

/// `u32` global: the agent's process id, whose writes (and those of any
/// process in its cgroup, e.g. `nettune rollback` run in its container) a
/// guard lets through.
pub const AGENT_TGID_GLOBAL: &str = "AGENT_TGID";

/// Writers remembered (per sysctl and command); the least recent go first.
pub const MAX_SYSCTL_WRITERS: u32 = 512;

/// Bytes of a sysctl's name kept (`net/netfilter/nf_conntrack_buckets` is 35).
pub const SYSCTL_NAME_LEN: usize = 64;

/// Bytes of a written value kept (`4096 87380 16777216` is 19).
pub const SYSCTL_VALUE_LEN: usize = 32;

/// One writer of one sysctl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SysctlWriter {
    /// The sysctl's name as the kernel gives it (`net/core/somaxconn`), NUL-padded.
    pub name: [u8; SYSCTL_NAME_LEN],
    /// The writing task's command (`comm`), NUL-padded.
    pub comm: [u8; 16],
}

/// What a writer did, last.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysctlWrite {
    /// Writes seen.
    pub count: u64,
    /// The cgroup of the last write (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// The process (thread group) of the last write.
    pub tgid: u32,
    /// Bytes of `value` the kernel gave.
    pub value_len: u32,
    /// The last value written, as written (text), NUL-padded.
    pub value: [u8; SYSCTL_VALUE_LEN],
    /// Writes a guard refused (each also counted in `count`).
    pub refused: u64,
}
