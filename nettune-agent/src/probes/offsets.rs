//! Resolving [`KernelOffsets`] and drop reason names for the running kernel.
//!
//! Struct offsets come from BTF; classic tracepoint record offsets from tracefs.
//! They are resolved in groups ([`OffsetGroup`]), each of which can be missing on
//! its own (no BTF, no tracefs, a field renamed on some kernel): the result records
//! why, so the probe chains skip exactly the variants that need a missing group,
//! and say so. Drop reason names come from BTF's `enum skb_drop_reason`, else from
//! the `skb/kfree_skb` tracefs format.

use std::collections::BTreeMap;

use nettune_common::{KernelOffsets, offsets::ABSENT};

use crate::{
    model::drop_reasons::DropReasons,
    sys::{
        btf::{Btf, BtfError},
        tracefs::{self, Tracefs, TracefsError},
    },
};

/// A group of offsets that a program variant needs as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OffsetGroup {
    /// socket → netns (`sock_net`, `net_inum`).
    SockNetns,
    /// listener queue length and limit.
    Listener,
    /// skb → device/socket → netns, ifindex.
    SkbLocation,
    /// skb → TCP segment count.
    SkbSegments,
    /// A TCP socket's state changes (`inet_sock_set_state`): socket → inode,
    /// netns → somaxconn, and the tracepoint's arguments.
    SockState,
    /// `tcp/tcp_retransmit_skb` record layout.
    TpRetransmit,
    /// `skb/kfree_skb` record layout.
    TpKfreeSkb,
    /// BTF tracepoint argument counts.
    TpBtfArgs,
}

/// A group of offsets a variant needs could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel layout unknown ({group:?}): {problem}")]
pub struct MissingOffsets {
    /// The group.
    pub group: OffsetGroup,
    /// Why (the BTF or tracefs error).
    pub problem: String,
}

/// Offsets for this kernel, the drop reason names, and what could not be resolved.
#[derive(Debug)]
pub struct ResolvedOffsets {
    /// What the programs get in their `OFFSETS` global.
    pub offsets: KernelOffsets,
    /// This kernel's drop reason names.
    pub drop_reasons: DropReasons,
    problems: BTreeMap<OffsetGroup, String>,
}

/// The drop reason names from `btf`, else from `tracefs`.
fn drop_reasons(btf: Option<&Btf>, tracefs: Option<&Tracefs>) -> DropReasons {
    if let Some(names) = btf.and_then(|b| b.enum_variants("skb_drop_reason").ok()) {
        return DropReasons::from_enum(&names);
    }
    tracefs
        .and_then(|t| t.format_text("skb", "kfree_skb").ok())
        .and_then(|text| tracefs::parse_print_symbolic(&text))
        .map_or_else(DropReasons::default, DropReasons::from_tracefs)
}

impl ResolvedOffsets {
    /// Resolves every offset it can from `btf` and `tracefs`.
    pub fn resolve(btf: Result<&Btf, &BtfError>, tracefs: Result<&Tracefs, &TracefsError>) -> Self {
        let mut layout = Self {
            offsets: KernelOffsets::UNKNOWN,
            drop_reasons: drop_reasons(btf.ok(), tracefs.ok()),
            problems: BTreeMap::new(),
        };
        let o = &mut layout.offsets;
        let mut problems = BTreeMap::new();
        resolve_group(btf, o, &mut problems, &BTF_GROUPS);
        resolve_group(tracefs, o, &mut problems, &TRACEFS_GROUPS);
        let reasons = &layout.drop_reasons;
        o.reason_netfilter_drop = reasons.value("NETFILTER_DROP").unwrap_or(ABSENT);
        (o.reason_not_dropped_yet, o.reason_consumed) = not_drops(reasons);
        layout.problems = problems;
        layout
    }

    /// `Ok` if every group in `needs` was resolved, else the first problem.
    pub fn require(&self, needs: &[OffsetGroup]) -> Result<(), MissingOffsets> {
        match needs
            .iter()
            .find_map(|n| self.problems.get(n).map(|p| (n, p)))
        {
            Some((group, problem)) => Err(MissingOffsets {
                group: *group,
                problem: problem.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// A group's resolver: fills its offsets from a source, or says why it cannot.
type Resolver<S, E> = fn(&S, &mut KernelOffsets) -> Result<(), E>;

const BTF_GROUPS: [(OffsetGroup, Resolver<Btf, BtfError>); 6] = [
    (OffsetGroup::SockNetns, sock_netns),
    (OffsetGroup::Listener, listener),
    (OffsetGroup::SkbLocation, skb_location),
    (OffsetGroup::SkbSegments, skb_segments),
    (OffsetGroup::SockState, sock_state),
    (OffsetGroup::TpBtfArgs, tp_btf_args),
];

const TRACEFS_GROUPS: [(OffsetGroup, Resolver<Tracefs, TracefsError>); 2] = [
    (OffsetGroup::TpRetransmit, tp_retransmit),
    (OffsetGroup::TpKfreeSkb, tp_kfree_skb),
];

/// The values of `SKB_NOT_DROPPED_YET` and `SKB_CONSUMED` (both "not a drop"), or
/// [`ABSENT`] where this kernel has no such name. On kernels without drop reasons
/// (before 5.17) both stay ABSENT, so every freed skb counts.
fn not_drops(reasons: &DropReasons) -> (u32, u32) {
    let value = |name| reasons.value(name).unwrap_or(ABSENT);
    (value("SKB_NOT_DROPPED_YET"), value("SKB_CONSUMED"))
}

/// Runs each group's resolver on `source`; a missing source is every group's problem.
fn resolve_group<S, E: std::fmt::Display, F: std::fmt::Display>(
    source: Result<&S, &E>,
    offsets: &mut KernelOffsets,
    problems: &mut BTreeMap<OffsetGroup, String>,
    groups: &[(OffsetGroup, Resolver<S, F>)],
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

fn listener(btf: &Btf, o: &mut KernelOffsets) -> Result<(), BtfError> {
    o.sock_ack_backlog = btf.member_offset("sock", &["sk_ack_backlog"])?;
    o.sock_max_ack_backlog = btf.member_offset("sock", &["sk_max_ack_backlog"])?;
    o.sock_num = btf.member_offset("sock", &["__sk_common", "skc_num"])?;
    Ok(())
}

fn skb_location(btf: &Btf, o: &mut KernelOffsets) -> Result<(), BtfError> {
    o.skb_dev = btf.member_offset("sk_buff", &["dev"])?;
    o.skb_sk = btf.member_offset("sk_buff", &["sk"])?;
    // Only with CONFIG_NF_CONNTRACK; without it, no drop has a conntrack entry.
    o.skb_nfct = btf.member_offset("sk_buff", &["_nfct"]).unwrap_or(ABSENT);
    o.dev_ifindex = btf.member_offset("net_device", &["ifindex"])?;
    o.dev_net = btf.member_offset("net_device", &["nd_net", "net"])?;
    Ok(())
}

fn skb_segments(btf: &Btf, o: &mut KernelOffsets) -> Result<(), BtfError> {
    o.skb_tcp_gso_segs = btf.member_offset("sk_buff", &["cb"])?
        + btf.member_offset("tcp_skb_cb", &["tcp_gso_segs"])?;
    Ok(())
}

fn sock_state(btf: &Btf, o: &mut KernelOffsets) -> Result<(), BtfError> {
    o.sock_socket = btf.member_offset("sock", &["sk_socket"])?;
    o.tcp_segs_out = btf.member_offset("tcp_sock", &["segs_out"])?;
    // SOCK_INODE(): the inode follows the socket in `struct socket_alloc`.
    o.socket_ino = btf.member_offset("socket_alloc", &["vfs_inode"])?
        - btf.member_offset("socket_alloc", &["socket"])?
        + btf.member_offset("inode", &["i_ino"])?;
    o.net_somaxconn = btf.member_offset("net", &["core", "sysctl_somaxconn"])?;
    o.tp_btf_sock_state_args = btf.tracepoint_arg_count("inet_sock_set_state")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn missing_sources_are_reported_per_need() {
        let btf_err = Btf::from_file(Path::new("/nonexistent/btf")).err().unwrap();
        let tracefs = Tracefs::at("/nonexistent/tracefs");
        let layout = ResolvedOffsets::resolve(Err(&btf_err), Ok(&tracefs));
        let err = layout.require(&[OffsetGroup::SockNetns]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/btf"), "{err}");
        let err = layout.require(&[OffsetGroup::TpKfreeSkb]).unwrap_err();
        assert!(
            err.to_string().contains("cannot read tracepoint format"),
            "{err}"
        );
        assert_eq!(layout.offsets.tp_retransmit_err, ABSENT);
        assert_eq!(layout.offsets.reason_netfilter_drop, ABSENT);
        assert!(layout.require(&[]).is_ok());
    }

    #[test]
    fn not_a_drop_follows_each_kernels_enum() {
        let enum_of = |names: &[(&str, i64)]| {
            DropReasons::from_enum(
                &names
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), *v))
                    .collect::<Vec<_>>(),
            )
        };
        // 5.18 – 6.1: value 1 is NOT_SPECIFIED, a real drop.
        let v6_1 = enum_of(&[
            ("SKB_NOT_DROPPED_YET", 0),
            ("SKB_DROP_REASON_NOT_SPECIFIED", 1),
        ]);
        assert_eq!(not_drops(&v6_1), (0, ABSENT));
        // 6.2+: value 1 is SKB_CONSUMED.
        let v6_2 = enum_of(&[
            ("SKB_NOT_DROPPED_YET", 0),
            ("SKB_CONSUMED", 1),
            ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
        ]);
        assert_eq!(not_drops(&v6_2), (0, 1));
        // No drop reasons (5.10): nothing is excluded.
        assert_eq!(not_drops(&DropReasons::default()), (ABSENT, ABSENT));
    }
}
