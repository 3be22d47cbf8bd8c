//! The port-exhaustion signal: connect() failing with `EADDRNOTAVAIL`, per netns.
//!
//! Chain: the classic `syscalls/sys_exit_connect` tracepoint (syscall tracepoints
//! have no BTF variant), then procfs: each namespace's TIME_WAIT count from
//! `/proc/net/sockstat`, the usual cause, which every kernel has.

use std::collections::BTreeMap;

use aya::Ebpf;
use nettune_common::netns_counters::CONNECT_EADDRNOTAVAIL_MAP;

use super::{
    LoadError, Probes, SignalStatus, Variant,
    chain::{Attempt, Env, attach_chain, attach_tracepoint},
    maps,
};
use crate::layout::Need;

/// Signal name in reports and metrics.
pub const SIGNAL: &str = "connect_eaddrnotavail";

const CHAIN: [(Variant, Attempt); 2] = [
    (Variant::Tracepoint, |ebpf, env| {
        env.layout.require(&[Need::TaskNetns, Need::TpConnect])?;
        attach_tracepoint(
            ebpf,
            env,
            "sys_exit_connect",
            "syscalls",
            "sys_exit_connect",
        )
    }),
    (Variant::Procfs, |_, _| Ok(())),
];

pub(super) fn attach(ebpf: &mut Ebpf, env: &Env) -> SignalStatus {
    attach_chain(ebpf, env, SIGNAL, &CHAIN)
}

impl Probes {
    /// connect() calls that failed with EADDRNOTAVAIL, per netns inode.
    pub fn connect_eaddrnotavail(&self) -> Result<BTreeMap<u32, u64>, LoadError> {
        maps::per_cpu_counts(&self.ebpf, CONNECT_EADDRNOTAVAIL_MAP)
    }
}
