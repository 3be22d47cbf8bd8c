//! The TCP retransmit signal: per-netns retransmitted skbs, segments and failures,
//! and retransmitted segments per flow.
//!
//! Chain: `tp_btf/tcp_retransmit_skb`, then `tracepoint/tcp/tcp_retransmit_skb`.
//! Both need struct offsets from BTF (socket → netns, skb → segments); the classic
//! one also needs the record layout from tracefs.

use std::collections::BTreeMap;

use aya::Ebpf;
use nettune_common::{
    FlowKey, RetransmitCounters,
    retransmit::{RETRANSMIT_FLOWS_MAP, RETRANSMITS_MAP},
};

use super::{
    LoadError, Probes, SignalStatus, Variant,
    chain::{Attempt, Env, attach_chain, attach_tp_btf, attach_tracepoint},
    maps,
};
use crate::layout::Need;

/// Signal name in reports and metrics.
pub const SIGNAL: &str = "tcp_retransmit";

const NEEDS: &[Need] = &[Need::SockNetns, Need::SockFlow, Need::SkbSegments];

const CHAIN: [(Variant, Attempt); 2] = [
    (Variant::TpBtf, |ebpf, env| {
        env.layout.require(NEEDS)?;
        env.layout.require(&[Need::TpBtfArgs])?;
        attach_tp_btf(ebpf, env, "tcp_retransmit_skb_btf", "tcp_retransmit_skb")
    }),
    (Variant::Tracepoint, |ebpf, env| {
        env.layout.require(NEEDS)?;
        env.layout.require(&[Need::TpRetransmit])?;
        attach_tracepoint(
            ebpf,
            env,
            "tcp_retransmit_skb_tp",
            "tcp",
            "tcp_retransmit_skb",
        )
    }),
];

pub(super) fn attach(ebpf: &mut Ebpf, env: &Env) -> SignalStatus {
    attach_chain(ebpf, env, SIGNAL, &CHAIN)
}

impl Probes {
    /// Retransmit counters per netns inode, summed over CPUs.
    pub fn retransmits(&self) -> Result<BTreeMap<u32, RetransmitCounters>, LoadError> {
        maps::per_cpu_hash(
            &self.ebpf,
            RETRANSMITS_MAP,
            RetransmitCounters::saturating_add,
        )
    }

    /// Retransmitted segments per flow, summed over CPUs.
    pub fn retransmit_flows(&self) -> Result<BTreeMap<FlowKey, u64>, LoadError> {
        maps::per_cpu_counts(&self.ebpf, RETRANSMIT_FLOWS_MAP)
    }
}
