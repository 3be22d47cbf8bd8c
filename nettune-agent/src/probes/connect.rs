//! The port-exhaustion signal: connect() failing with `EADDRNOTAVAIL`, per netns.
//!
//! Chain: the classic `syscalls/sys_exit_connect` tracepoint (syscall tracepoints
//! have no BTF variant), then procfs: each namespace's TIME_WAIT count from
//! `/proc/net/sockstat`, the usual cause, which every kernel has.

use std::collections::BTreeMap;

use aya::Ebpf;
use nettune_common::netns_counters::CONNECT_EADDRNOTAVAIL_MAP;

use crate::model::probes::{SignalStatus, Variant};

use super::{
    LoadError, Probes,
    chain::{AttachContext, Attempt, attach_chain, attach_tracepoint},
    maps,
    offsets::OffsetGroup,
};

/// Signal name in reports and metrics.
pub const SIGNAL: &str = "connect_eaddrnotavail";

const CHAIN: [(Variant, Attempt); 2] = [
    (Variant::Tracepoint, |ebpf, context| {
        context
            .offsets
            .require(&[OffsetGroup::TaskNetns, OffsetGroup::TpConnect])?;
        attach_tracepoint(
            ebpf,
            context,
            "sys_exit_connect",
            "syscalls",
            "sys_exit_connect",
        )
    }),
    (Variant::Procfs, |_, _| Ok(())),
];

pub(super) fn attach(ebpf: &mut Ebpf, context: &AttachContext) -> SignalStatus {
    attach_chain(ebpf, context, SIGNAL, &CHAIN)
}

impl Probes {
    /// connect() calls that failed with EADDRNOTAVAIL, per netns inode.
    pub(super) fn connect_eaddrnotavail(&self) -> Result<BTreeMap<u32, u64>, LoadError> {
        maps::per_cpu_counts(&self.ebpf, CONNECT_EADDRNOTAVAIL_MAP)
    }
}
