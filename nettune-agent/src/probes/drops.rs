//! The drop signal: packets freed by `kfree_skb`, per (netns, interface, reason),
//! and the conntrack signal that reads the per-namespace conntrack statistics.
//!
//! Chain: `tp_btf/kfree_skb`, then `tracepoint/skb/kfree_skb`. CPU_BACKLOG
//! (netdev backlog full), SOCKET_RCVBUFF (receive buffer full), NO_SOCKET,
//! TC_INGRESS/TC_EGRESS and NETFILTER_DROP are all reasons of this one signal.

use std::collections::BTreeMap;

use aya::Ebpf;
use nettune_common::{DropKey, drops::DROPS_MAP};

use crate::model::probes::{SignalStatus, Skipped, Variant};

use super::{
    MapReadError, Probes,
    chain::{AttachContext, Attempt, attach_chain, attach_tp_btf, attach_tracepoint},
    maps,
    offsets::OffsetGroup,
};

/// Signal name in reports and metrics.
pub const SIGNAL: &str = "drops";
/// The conntrack signal's name.
pub const CONNTRACK_SIGNAL: &str = "conntrack";

const CHAIN: [(Variant, Attempt); 2] = [
    (Variant::TpBtf, |ebpf, context| {
        context.offsets.require(&[
            OffsetGroup::SkbLocation,
            OffsetGroup::SockNetns,
            OffsetGroup::TpBtfArgs,
        ])?;
        attach_tp_btf(ebpf, context, "kfree_skb_btf", "kfree_skb")
    }),
    // Without BTF the struct offsets are unknown: the program still counts drops
    // per reason, under namespace 0 and ifindex 0 (see the load warnings).
    (Variant::Tracepoint, |ebpf, context| {
        context.offsets.require(&[OffsetGroup::TpKfreeSkb])?;
        attach_tracepoint(ebpf, context, "kfree_skb_tp", "skb", "kfree_skb")
    }),
];

pub(super) fn attach(ebpf: &mut Ebpf, context: &AttachContext) -> SignalStatus {
    attach_chain(ebpf, context, SIGNAL, &CHAIN)
}

/// Conntrack is read from each namespace's `/proc/net/stat/nf_conntrack`; it is
/// available when the kernel has conntrack at all.
pub(super) fn conntrack_status() -> SignalStatus {
    let path = "/proc/net/stat/nf_conntrack";
    let mut status = SignalStatus {
        signal: CONNTRACK_SIGNAL.to_owned(),
        attached: None,
        skipped: Vec::new(),
        on_demand: None,
    };
    match std::fs::metadata(path) {
        Ok(_) => status.attached = Some(Variant::Procfs),
        Err(e) => status.skipped.push(Skipped {
            variant: Variant::Procfs,
            reason: format!("{path}: {e} (kernel without nf_conntrack)"),
        }),
    }
    status
}

impl Probes {
    /// Drops per (netns, ifindex, reason), summed over CPUs.
    pub(super) fn drops(&self) -> Result<BTreeMap<DropKey, u64>, MapReadError> {
        maps::per_cpu_counts(&self.ebpf, DROPS_MAP)
    }
}
