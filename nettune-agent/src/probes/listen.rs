//! Two listener signals.
//!
//! - `listen_overflow`, accept queues that were full when a connection came.
//!   Chain: fentry on `tcp_conn_request` and `tcp_v{4,6}_syn_recv_sock` (per
//!   listener: port, queue length, limit), then kprobes on the same functions,
//!   then the `ListenOverflows` / `ListenDrops` / `TCPReqQFullDrop` counters of
//!   each namespace's `/proc/net/netstat`, which every kernel has.
//! - `listen_backlog`, what each listener asked `listen()` for: `sock_diag`
//!   and the somaxconn history. A listener that appears between two looks at
//!   its namespace, while somaxconn read the same at both, got
//!   min(asked, somaxconn): a limit below it is what it asked for (the
//!   collector's `listeners` infers it, and finds the owning process in
//!   `/proc`). No tracepoint by default: `sys_enter_listen` would send every
//!   system call on the node through the kernel's slow path, and
//!   `inet_sock_set_state` runs on every TCP state change (it records
//!   listeners too while [`super::connect`] has it attached).

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    programs::{FEntry, KProbe},
};
use nettune_common::{ListenKey, ListenOverflow, listen::LISTEN_OVERFLOWS_MAP};

use crate::model::probes::{SignalStatus, Variant};

use super::{
    MapReadError, Probes,
    chain::{AttachContext, AttachError, Attempt, attach_chain, attach_error, load_error, program},
    maps,
    offsets::OffsetGroup,
};

/// Signal name in reports and metrics.
pub const SIGNAL: &str = "listen_overflow";
/// The signal of the backlogs applications ask `listen()` for.
pub const BACKLOG_SIGNAL: &str = "listen_backlog";

const BACKLOG_CHAIN: [(Variant, Attempt); 1] = [(Variant::SockDiag, |_, _| Ok(()))];

const FENTRY_PROGRAMS: [Target; 3] = [
    ("tcp_conn_request_fentry", "tcp_conn_request", true),
    ("tcp_v4_syn_recv_sock_fentry", "tcp_v4_syn_recv_sock", true),
    ("tcp_v6_syn_recv_sock_fentry", "tcp_v6_syn_recv_sock", false),
];
const KPROBE_TARGETS: [Target; 3] = [
    ("tcp_conn_request_kprobe", "tcp_conn_request", true),
    ("tcp_syn_recv_sock_kprobe", "tcp_v4_syn_recv_sock", true),
    ("tcp_syn_recv_sock_kprobe", "tcp_v6_syn_recv_sock", false),
];

const CHAIN: [(Variant, Attempt); 3] = [
    (Variant::Fentry, attach_fentry),
    (Variant::Kprobe, attach_kprobes),
    (Variant::Procfs, |_, _| Ok(())),
];

pub(super) fn attach(ebpf: &mut Ebpf, context: &AttachContext) -> SignalStatus {
    attach_chain(ebpf, context, SIGNAL, &CHAIN)
}

pub(super) fn attach_backlogs(ebpf: &mut Ebpf, context: &AttachContext) -> SignalStatus {
    attach_chain(ebpf, context, BACKLOG_SIGNAL, &BACKLOG_CHAIN)
}

/// A program attached to a kernel function: (program, function, required). The
/// IPv6 function is absent when IPv6 is a module that is not loaded, which does
/// not make the variant useless.
type Target = (&'static str, &'static str, bool);

/// Attaches every target with `attach_one`; if a required one fails, unloads all
/// of them with `unload` (never leave half a variant attached behind a fallback)
/// and returns the error.
fn all_or_none(
    ebpf: &mut Ebpf,
    targets: &[Target],
    attach_one: impl Fn(&mut Ebpf, &'static str, &str) -> Result<(), AttachError>,
    unload: impl Fn(&mut Ebpf, &'static str),
) -> Result<(), AttachError> {
    let result = targets.iter().try_for_each(|&(name, function, required)| {
        match attach_one(ebpf, name, function) {
            Err(e) if required => Err(e),
            _ => Ok(()),
        }
    });
    if result.is_err() {
        for (name, _, _) in targets {
            unload(ebpf, name);
        }
    }
    result
}

fn attach_fentry(ebpf: &mut Ebpf, context: &AttachContext) -> Result<(), AttachError> {
    context
        .offsets
        .require(&[OffsetGroup::Listener, OffsetGroup::SockNetns])?;
    let btf = context.btf()?;
    all_or_none(
        ebpf,
        &FENTRY_PROGRAMS,
        |ebpf, name, function| {
            let p: &mut FEntry = program(ebpf, name)?;
            p.load(function, btf).map_err(load_error(function))?;
            p.attach().map(drop).map_err(attach_error(function))
        },
        |ebpf, name| {
            if let Ok(p) = program::<FEntry>(ebpf, name) {
                let _ = p.unload();
            }
        },
    )
}

fn attach_kprobes(ebpf: &mut Ebpf, context: &AttachContext) -> Result<(), AttachError> {
    context
        .offsets
        .require(&[OffsetGroup::Listener, OffsetGroup::SockNetns])?;
    all_or_none(
        ebpf,
        &KPROBE_TARGETS,
        |ebpf, name, function| {
            let p: &mut KProbe = program(ebpf, name)?;
            if p.fd().is_err() {
                p.load().map_err(load_error(function))?;
            }
            p.attach(function, 0)
                .map(drop)
                .map_err(attach_error(function))
        },
        |ebpf, name| {
            if let Ok(p) = program::<KProbe>(ebpf, name) {
                let _ = p.unload();
            }
        },
    )
}

impl Probes {
    /// Overflows per listening socket (fentry/kprobe variants only; empty under
    /// the procfs variant). Per-CPU values are merged: counts summed, the queue
    /// length and limit of the busiest CPU kept.
    pub(super) fn listen_overflows(
        &self,
    ) -> Result<BTreeMap<ListenKey, ListenOverflow>, MapReadError> {
        maps::per_cpu_hash(&self.ebpf, LISTEN_OVERFLOWS_MAP, |a: ListenOverflow, b| {
            ListenOverflow {
                overflows: a.overflows.saturating_add(b.overflows),
                backlog: a.backlog.max(b.backlog),
                max_backlog: a.max_backlog.max(b.max_backlog),
            }
        })
    }
}
