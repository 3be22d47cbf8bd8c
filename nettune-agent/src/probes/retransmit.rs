//! The TCP retransmit signal: per-netns retransmitted skbs, segments and failures.
//!
//! Chain: `tp_btf/tcp_retransmit_skb`, then `tracepoint/tcp/tcp_retransmit_skb`.
//! Both need struct offsets from BTF (socket → netns, skb → segments); the classic
//! one also needs the record layout from tracefs.

use std::collections::BTreeMap;

use aya::Ebpf;
use nettune_common::{RetransmitCounters, retransmit::RETRANSMITS_MAP};

use super::{
    MapReadError, Probes,
    chain::{AttachContext, Attempt, attach_chain, attach_tp_btf, attach_tracepoint},
    maps,
    offsets::OffsetGroup,
};
use crate::model::probes::{SignalStatus, Variant};

/// Signal name in reports and metrics.
pub const SIGNAL: &str = "tcp_retransmit";

const NEEDS: &[OffsetGroup] = &[OffsetGroup::SockNetns, OffsetGroup::SkbSegments];

const CHAIN: [(Variant, Attempt); 2] = [
    (Variant::TpBtf, |ebpf, context| {
        context.offsets.require(NEEDS)?;
        context.offsets.require(&[OffsetGroup::TpBtfArgs])?;
        attach_tp_btf(
            ebpf,
            context,
            "tcp_retransmit_skb_btf",
            "tcp_retransmit_skb",
        )
    }),
    (Variant::Tracepoint, |ebpf, context| {
        context.offsets.require(NEEDS)?;
        context.offsets.require(&[OffsetGroup::TpRetransmit])?;
        attach_tracepoint(
            ebpf,
            context,
            "tcp_retransmit_skb_tp",
            "tcp",
            "tcp_retransmit_skb",
        )
    }),
];

pub(super) fn attach(ebpf: &mut Ebpf, context: &AttachContext) -> SignalStatus {
    attach_chain(ebpf, context, SIGNAL, &CHAIN)
}

impl Probes {
    /// Retransmit counters per netns inode, summed over CPUs.
    pub(super) fn retransmits(&self) -> Result<BTreeMap<u32, RetransmitCounters>, MapReadError> {
        maps::per_cpu_hash(
            &self.ebpf,
            RETRANSMITS_MAP,
            RetransmitCounters::saturating_add,
        )
    }
}
