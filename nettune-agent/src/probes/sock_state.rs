//! `tp_btf/inet_sock_set_state`: one program for two signals that would
//! otherwise need syscall tracepoints — the backlog a listener asked for
//! ([`super::listen`]) and connects failing for lack of a local port
//! ([`super::connect`]). It runs on TCP state changes only; loaded once, by
//! whichever signal asks first.

use std::collections::BTreeMap;

use aya::Ebpf;
use nettune_common::{ListenOrigin, ListenSocket, listen::LISTEN_ORIGINS_MAP};

use super::{
    MapReadError, Probes,
    chain::{AttachContext, AttachError, attach_tp_btf},
    maps,
    offsets::OffsetGroup,
};

/// The program's name in the object.
const PROGRAM: &str = "inet_sock_set_state";

/// Loads and attaches the program (once; a second call finds it attached).
pub(super) fn attach(ebpf: &mut Ebpf, context: &AttachContext) -> Result<(), AttachError> {
    context.offsets.require(&[
        OffsetGroup::SockNetns,
        OffsetGroup::Listener,
        OffsetGroup::SockState,
    ])?;
    attach_tp_btf(ebpf, context, PROGRAM, "inet_sock_set_state")
}

impl Probes {
    /// How the sockets that started listening lately did, by (netns, inode).
    pub(super) fn listen_origins(
        &self,
    ) -> Result<BTreeMap<ListenSocket, ListenOrigin>, MapReadError> {
        maps::hash_entries(&self.ebpf, LISTEN_ORIGINS_MAP)
    }
}
