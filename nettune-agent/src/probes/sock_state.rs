//! `tp_btf/inet_sock_set_state`: connects failing for lack of a local port
//! ([`super::connect`]), and, while it runs, the backlog each new listener asked
//! for ([`super::listen`] takes those records over its `sock_diag` inference).
//!
//! The tracepoint runs on every TCP state change of every socket on the node —
//! about ten per connection — so even a program that returns at once costs each
//! connection its dispatch (a connect-per-request profile put it at half of all
//! the BPF time nettune added). The program is therefore loaded (verified) at
//! start and attached only while [`Probes::watch_connects`] says a namespace's
//! ephemeral ports are crowded: EADDRNOTAVAIL needs every port of the range held.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    programs::{BtfTracePoint, tp_btf::BtfTracePointLinkId},
};
use nettune_common::{ListenOrigin, ListenSocket, listen::LISTEN_ORIGINS_MAP};

use super::{
    MapReadError, Probes,
    chain::{AttachContext, AttachError, attach_error, load_error, program},
    maps,
    offsets::OffsetGroup,
};

/// The program's name in the object.
const PROGRAM: &str = "inet_sock_set_state";
/// The tracepoint it attaches to.
const EVENT: &str = "inet_sock_set_state";

/// The program's link while it is attached.
pub(super) type Link = BtfTracePointLinkId;

/// Loads (verifies) the program without attaching it; a second call finds it
/// loaded.
pub(super) fn load(ebpf: &mut Ebpf, context: &AttachContext) -> Result<(), AttachError> {
    context.offsets.require(&[
        OffsetGroup::SockNetns,
        OffsetGroup::Listener,
        OffsetGroup::SockState,
    ])?;
    let btf = context.btf()?;
    let p: &mut BtfTracePoint = program(ebpf, PROGRAM)?;
    if p.fd().is_ok() {
        return Ok(());
    }
    p.load(EVENT, btf).map_err(load_error(EVENT))
}

impl Probes {
    /// Attaches the state-change program (`on`) or detaches it; a program that
    /// was never loaded (another variant serves) is left alone. Returns whether
    /// it is attached now.
    pub(super) fn set_sock_state_attached(&mut self, on: bool) -> Result<bool, AttachError> {
        let Ok(p) = program::<BtfTracePoint>(&mut self.ebpf, PROGRAM) else {
            return Ok(false);
        };
        if p.fd().is_err() {
            return Ok(false);
        }
        match (on, self.sock_state_link.take()) {
            (true, None) => {
                self.sock_state_link = Some(p.attach().map_err(attach_error(EVENT))?);
            }
            (false, Some(link)) => p.detach(link).map_err(attach_error(EVENT))?,
            (_, link) => self.sock_state_link = link,
        }
        Ok(self.sock_state_link.is_some())
    }

    /// How the sockets that started listening lately did, by (netns, inode).
    pub(super) fn listen_origins(
        &self,
    ) -> Result<BTreeMap<ListenSocket, ListenOrigin>, MapReadError> {
        maps::hash_entries(&self.ebpf, LISTEN_ORIGINS_MAP)
    }
}
