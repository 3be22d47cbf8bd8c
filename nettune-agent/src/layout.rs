//! Resolving [`KernelOffsets`] for the running kernel.
//!
//! Struct offsets come from BTF; classic tracepoint record offsets from tracefs.
//! They are resolved in groups ([`Need`]), each of which can be missing on its own
//! (no BTF, no tracefs, a field renamed on some kernel): the result records why, so
//! the probe chains skip exactly the variants that need a missing group, and say so.

use std::collections::BTreeMap;

use nettune_common::{KernelOffsets, offsets::ABSENT};

use crate::{
    btf::{Btf, BtfError},
    drop_reasons::DropReasons,
    tracefs::{Tracefs, TracefsError},
};

/// A group of offsets that a program variant needs as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// socket → netns (`sock_net`, `net_inum`).
    SockNetns,
    /// socket addresses and ports.
    SockFlow,
    /// listener queue length and limit.
    Listener,
    /// skb → device/socket → netns, ifindex.
    SkbLocation,
    /// skb → TCP segment count.
    SkbSegments,
    /// current task → netns.
    TaskNetns,
    /// `tcp/tcp_retransmit_skb` record layout.
    TpRetransmit,
    /// `skb/kfree_skb` record layout.
    TpKfreeSkb,
    /// `syscalls/sys_exit_connect` record layout.
    TpConnect,
    /// BTF tracepoint argument counts.
    TpBtfArgs,
}

/// Offsets for this kernel, the drop reason names, and what could not be resolved.
#[derive(Debug)]
pub struct Layout {
    pub offsets: KernelOffsets,
    pub drop_reasons: DropReasons,
    problems: BTreeMap<Need, String>,
}

impl Layout {
    /// Resolves every offset it can from `btf` and `tracefs`.
    pub fn resolve(btf: Result<&Btf, &BtfError>, tracefs: Result<&Tracefs, &TracefsError>) -> Self {
        let mut layout = Self {
            offsets: KernelOffsets::UNKNOWN,
            drop_reasons: DropReasons::resolve(btf.ok(), tracefs.ok()),
            problems: BTreeMap::new(),
        };
        let o = &mut layout.offsets;
        let mut problems = BTreeMap::new();
        resolve_group(btf, o, &mut problems, &BTF_GROUPS);
        resolve_group(tracefs, o, &mut problems, &TRACEFS_GROUPS);
        o.reason_netfilter_drop = layout
            .drop_reasons
            .value("NETFILTER_DROP")
            .unwrap_or(ABSENT);
        layout.problems = problems;
        layout
    }

    /// `Ok` if every group in `needs` was resolved, else the first problem.
    pub fn require(&self, needs: &[Need]) -> Result<(), String> {
        match needs
            .iter()
            .find_map(|n| self.problems.get(n).map(|p| (n, p)))
        {
            Some((need, problem)) => Err(format!("kernel layout unknown ({need:?}): {problem}")),
            None => Ok(()),
        }
    }
}

/// A group's resolver: fills its offsets from a source, or says why it cannot.
type Resolver<S, E> = fn(&S, &mut KernelOffsets) -> Result<(), E>;

const BTF_GROUPS: [(Need, Resolver<Btf, BtfError>); 7] = [
    (Need::SockNetns, sock_netns),
    (Need::SockFlow, sock_flow),
    (Need::Listener, listener),
    (Need::SkbLocation, skb_location),
    (Need::SkbSegments, skb_segments),
    (Need::TaskNetns, task_netns),
    (Need::TpBtfArgs, tp_btf_args),
];

const TRACEFS_GROUPS: [(Need, Resolver<Tracefs, TracefsError>); 3] = [
    (Need::TpRetransmit, tp_retransmit),
    (Need::TpKfreeSkb, tp_kfree_skb),
    (Need::TpConnect, tp_connect),
];

/// Runs each group's resolver on `source`; a missing source is every group's problem.
fn resolve_group<S, E: std::fmt::Display, F: std::fmt::Display>(
    source: Result<&S, &E>,
    offsets: &mut KernelOffsets,
    problems: &mut BTreeMap<Need, String>,
    groups: &[(Need, Resolver<S, F>)],
) {
    for (need, resolve) in groups {
        let problem = match source {
            Ok(source) => resolve(source, offsets).err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(problem) = problem {
            problems.insert(*need, problem);
        }
    }
}

fn sock_netns(btf: &Btf, o: &mut KernelOffsets) -> Result<(), BtfError> {
    o.sock_net = btf.member_offset("sock", &["__sk_common", "skc_net", "net"])?;
    o.net_inum = btf.member_offset("net", &["ns", "inum"])?;
    Ok(())
}

fn sock_flow(btf: &Btf, o: &mut KernelOffsets) -> Result<(), BtfError> {
    let common = |field: &str| btf.member_offset("sock", &["__sk_common", field]);
    o.sock_family = common("skc_family")?;
    o.sock_num = common("skc_num")?;
    o.sock_dport = common("skc_dport")?;
    o.sock_saddr = common("skc_rcv_saddr")?;
    o.sock_daddr = common("skc_daddr")?;
    // Kernels built without IPv6 have no v6 fields: IPv4 flows still work.
    o.sock_v6_saddr = common("skc_v6_rcv_saddr").unwrap_or(ABSENT);
    o.sock_v6_daddr = common("skc_v6_daddr").unwrap_or(ABSENT);
    Ok(())
}

fn listener(btf: &Btf, o: &mut KernelOffsets) -> Result<(), BtfError> {
    o.sock_ack_backlog = btf.member_offset("sock", &["sk_ack_backlog"])?;
    o.sock_max_ack_backlog = btf.member_offset("sock", &["sk_max_ack_backlog"])?;
    if o.sock_num == ABSENT {
        o.sock_num = btf.member_offset("sock", &["__sk_common", "skc_num"])?;
    }
    Ok(())
}

fn skb_location(btf: &Btf, o: &mut KernelOffsets) -> Result<(), BtfError> {
    o.skb_dev = btf.member_offset("sk_buff", &["dev"])?;
    o.skb_sk = btf.member_offset("sk_buff", &["sk"])?;
    o.dev_ifindex = btf.member_offset("net_device", &["ifindex"])?;
    o.dev_net = btf.member_offset("net_device", &["nd_net", "net"])?;
    Ok(())
}

fn skb_segments(btf: &Btf, o: &mut KernelOffsets) -> Result<(), BtfError> {
    o.skb_tcp_gso_segs = btf.member_offset("sk_buff", &["cb"])?
        + btf.member_offset("tcp_skb_cb", &["tcp_gso_segs"])?;
    Ok(())
}

fn task_netns(btf: &Btf, o: &mut KernelOffsets) -> Result<(), BtfError> {
    o.task_nsproxy = btf.member_offset("task_struct", &["nsproxy"])?;
    o.nsproxy_net = btf.member_offset("nsproxy", &["net_ns"])?;
    Ok(())
}

fn tp_btf_args(btf: &Btf, o: &mut KernelOffsets) -> Result<(), BtfError> {
    o.tp_btf_retransmit_args = btf.tracepoint_arg_count("tcp_retransmit_skb")?;
    o.tp_btf_kfree_skb_args = btf.tracepoint_arg_count("kfree_skb")?;
    Ok(())
}

fn field(t: &Tracefs, category: &str, event: &str, name: &str) -> Result<u32, TracefsError> {
    t.field(category, event, name).map(|f| f.offset)
}

fn optional_field(
    t: &Tracefs,
    category: &str,
    event: &str,
    name: &str,
) -> Result<u32, TracefsError> {
    match t.field(category, event, name) {
        Ok(f) => Ok(f.offset),
        Err(TracefsError::NoField { .. }) => Ok(ABSENT),
        Err(e) => Err(e),
    }
}

fn tp_retransmit(t: &Tracefs, o: &mut KernelOffsets) -> Result<(), TracefsError> {
    o.tp_retransmit_skaddr = field(t, "tcp", "tcp_retransmit_skb", "skaddr")?;
    o.tp_retransmit_skbaddr = field(t, "tcp", "tcp_retransmit_skb", "skbaddr")?;
    // `err` arrived in Linux 6.12; before, the event only fired on success.
    o.tp_retransmit_err = optional_field(t, "tcp", "tcp_retransmit_skb", "err")?;
    Ok(())
}

fn tp_kfree_skb(t: &Tracefs, o: &mut KernelOffsets) -> Result<(), TracefsError> {
    o.tp_kfree_skb_skbaddr = field(t, "skb", "kfree_skb", "skbaddr")?;
    // `reason` arrived in 5.17, `rx_sk` in 6.12.
    o.tp_kfree_skb_reason = optional_field(t, "skb", "kfree_skb", "reason")?;
    o.tp_kfree_skb_rx_sk = optional_field(t, "skb", "kfree_skb", "rx_sk")?;
    Ok(())
}

fn tp_connect(t: &Tracefs, o: &mut KernelOffsets) -> Result<(), TracefsError> {
    o.tp_connect_ret = field(t, "syscalls", "sys_exit_connect", "ret")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn missing_sources_are_reported_per_need() {
        let btf_err = Btf::from_file(Path::new("/nonexistent/btf")).err().unwrap();
        let tracefs = Tracefs::at("/nonexistent/tracefs");
        let layout = Layout::resolve(Err(&btf_err), Ok(&tracefs));
        let err = layout.require(&[Need::SockNetns]).unwrap_err();
        assert!(err.contains("/nonexistent/btf"), "{err}");
        let err = layout.require(&[Need::TpKfreeSkb]).unwrap_err();
        assert!(err.contains("cannot read tracepoint format"), "{err}");
        assert_eq!(layout.offsets.tp_retransmit_err, ABSENT);
        assert_eq!(layout.offsets.reason_netfilter_drop, ABSENT);
        assert!(layout.require(&[]).is_ok());
    }
}
