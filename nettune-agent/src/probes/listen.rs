//! The listen-overflow signal: accept queues that were full when a connection came.
//!
//! Chain: fentry on `tcp_conn_request` and `tcp_v{4,6}_syn_recv_sock` (per listener:
//! port, queue length, limit), then kprobes on the same functions, then the
//! `ListenOverflows` / `ListenDrops` / `TCPReqQFullDrop` counters of each
//! namespace's `/proc/net/netstat`, which every kernel has.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    programs::{FEntry, KProbe},
};
use nettune_common::{
    ListenCall, ListenKey, ListenOverflow, ListenRequest,
    listen::{LISTEN_CALLS_MAP, LISTEN_OVERFLOWS_MAP},
};

use crate::model::probes::{SignalStatus, Variant};

use super::{
    LoadError, Probes,
    chain::{AttachContext, Attempt, attach_chain, attach_tracepoint, error_chain, program},
    maps,
    offsets::OffsetGroup,
};

/// Signal name in reports and metrics.
pub const SIGNAL: &str = "listen_overflow";
/// The signal of the backlogs applications ask `listen()` for.
pub const BACKLOG_SIGNAL: &str = "listen_backlog";

/// `syscalls/sys_enter_listen`: syscall tracepoints have no BTF variant.
const BACKLOG_CHAIN: [(Variant, Attempt); 1] = [(Variant::Tracepoint, |ebpf, context| {
    // Without the task offsets (no BTF) the agent finds the namespace in /proc.
    context.offsets.require(&[OffsetGroup::TpListen])?;
    attach_tracepoint(
        ebpf,
        context,
        "sys_enter_listen",
        "syscalls",
        "sys_enter_listen",
    )
})];

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
    attach_one: impl Fn(&mut Ebpf, &str, &str) -> Result<(), String>,
    unload: impl Fn(&mut Ebpf, &str),
) -> Result<(), String> {
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

fn attach_fentry(ebpf: &mut Ebpf, context: &AttachContext) -> Result<(), String> {
    context
        .offsets
        .require(&[OffsetGroup::Listener, OffsetGroup::SockNetns])?;
    let btf = context.aya_btf.as_ref().map_err(Clone::clone)?;
    all_or_none(
        ebpf,
        &FENTRY_PROGRAMS,
        |ebpf, name, function| {
            let p: &mut FEntry = program(ebpf, name)?;
            p.load(function, btf)
                .map_err(|e| format!("load {function}: {}{}", error_chain(&e), hint(&e)))?;
            p.attach()
                .map(drop)
                .map_err(|e| format!("attach {function}: {}{}", error_chain(&e), hint(&e)))
        },
        |ebpf, name| {
            if let Ok(p) = program::<FEntry>(ebpf, name) {
                let _ = p.unload();
            }
        },
    )
}

fn attach_kprobes(ebpf: &mut Ebpf, context: &AttachContext) -> Result<(), String> {
    context
        .offsets
        .require(&[OffsetGroup::Listener, OffsetGroup::SockNetns])?;
    all_or_none(
        ebpf,
        &KPROBE_TARGETS,
        |ebpf, name, function| {
            let p: &mut KProbe = program(ebpf, name)?;
            if p.fd().is_err() {
                p.load().map_err(|e| format!("load: {}", error_chain(&e)))?;
            }
            p.attach(function, 0)
                .map(drop)
                .map_err(|e| format!("attach {function}: {}{}", error_chain(&e), hint(&e)))
        },
        |ebpf, name| {
            if let Ok(p) = program::<KProbe>(ebpf, name) {
                let _ = p.unload();
            }
        },
    )
}

/// What a kernel's refusal usually means, for the report.
fn hint(e: &dyn std::error::Error) -> &'static str {
    let text = error_chain(e);
    if text.contains("kprobe/type") {
        " (this kernel has no kprobe support: CONFIG_KPROBES is off)"
    } else if text.contains("Operation not permitted") {
        " (the kernel refused the program before verification: BPF trampolines are \
         disabled or restricted here)"
    } else if text.contains("os error 524") {
        " (ENOTSUPP: this kernel will not build a BPF trampoline for this function, \
         as Debian 12's 6.1 does for tcp_v{4,6}_syn_recv_sock)"
    } else {
        ""
    }
}

impl Probes {
    /// Overflows per listening socket (fentry/kprobe variants only; empty under
    /// the procfs variant). Per-CPU values are merged: counts summed, the queue
    /// length and limit of the busiest CPU kept.
    pub(super) fn listen_overflows(
        &self,
    ) -> Result<BTreeMap<ListenKey, ListenOverflow>, LoadError> {
        maps::per_cpu_hash(&self.ebpf, LISTEN_OVERFLOWS_MAP, |a: ListenOverflow, b| {
            ListenOverflow {
                overflows: a.overflows.saturating_add(b.overflows),
                backlog: a.backlog.max(b.backlog),
                max_backlog: a.max_backlog.max(b.max_backlog),
            }
        })
    }

    /// What each recent `listen()` call asked for, by (process, descriptor).
    pub(super) fn listen_calls(&self) -> Result<BTreeMap<ListenCall, ListenRequest>, LoadError> {
        maps::hash_entries(&self.ebpf, LISTEN_CALLS_MAP)
    }
}
