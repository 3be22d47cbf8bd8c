//! The port-exhaustion signal: connects that failed before a local port was
//! found (`EADDRNOTAVAIL`), per netns.
//!
//! Chain: `tp_btf/inet_sock_set_state` ([`super::sock_state`]: a socket that
//! goes from SYN_SENT to CLOSE without a local port), then procfs: each
//! namespace's TIME_WAIT count from `/proc/net/sockstat`, the usual cause, which
//! every kernel has. No syscall tracepoint: attaching one would send every system
//! call on the node through the kernel's slow path.
//!
//! The tracepoint variant is **on demand**: loaded at start, attached only while
//! some namespace's ephemeral ports are crowded (the collector's
//! `port_watch` decides, the report says so): every TCP state change on the
//! node pays its dispatch while it is attached, and a connect can only fail
//! this way once every port of its range is held.

use std::collections::BTreeMap;

use aya::Ebpf;
use nettune_common::connect::CONNECT_EADDRNOTAVAIL_MAP;

use crate::model::probes::{SignalStatus, Variant};

use super::{
    MapReadError, Probes,
    chain::{AttachContext, Attempt, attach_chain},
    maps, sock_state,
};

/// Signal name in reports and metrics.
pub const SIGNAL: &str = "connect_eaddrnotavail";

/// When the tracepoint variant runs, as the report says it.
pub const ON_DEMAND: &str = "only while a namespace's TCP sockets hold half its ephemeral ports \
                             (with tcp_tw_reuse = 1, only the last second's TIME_WAIT count): \
                             every TCP state change on the node pays it";

const CHAIN: [(Variant, Attempt); 2] = [
    (Variant::TpBtf, sock_state::load),
    (Variant::Procfs, |_, _| Ok(())),
];

pub(super) fn attach(ebpf: &mut Ebpf, context: &AttachContext) -> SignalStatus {
    let mut status = attach_chain(ebpf, context, SIGNAL, &CHAIN);
    if status.attached == Some(Variant::TpBtf) {
        status.on_demand = Some(ON_DEMAND.to_owned());
    }
    status
}

impl Probes {
    /// Connects that failed for lack of a local port, per netns inode.
    pub(super) fn connect_eaddrnotavail(&self) -> Result<BTreeMap<u32, u64>, MapReadError> {
        maps::per_cpu_counts(&self.ebpf, CONNECT_EADDRNOTAVAIL_MAP)
    }
}
