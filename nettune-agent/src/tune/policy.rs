//! Tuning rules: a pure function from a Snapshot and the config to proposals.
//!
//! Each rule names the sysctl it manages, where (the node, or a pod's namespace
//! when that pod is opted in), and the evidence: the figures that triggered it.
//! Whether and how far a proposal goes is the guardrails' business.

use super::{
    TuningConfig,
    tunables::{
        IP_LOCAL_PORT_RANGE, IP_LOCAL_RESERVED_PORTS, NETDEV_MAX_BACKLOG, NF_CONNTRACK_BUCKETS,
        NF_CONNTRACK_MAX, RMEM_MAX, SOMAXCONN, TCP_MAX_SYN_BACKLOG, TCP_RMEM, TCP_TW_REUSE,
        Tunable,
    },
};
use crate::model::{
    snapshot::{Snapshot, WorkloadFigures},
    tuning::Target,
    workload::WorkloadKind,
};

/// A rule's wish: raise `sysctl` at `target` (None: the workload is not opted in).
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The rule (scenario) that fired, e.g. `listen_overflows`.
    pub rule: &'static str,
    /// The sysctl to change.
    pub sysctl: &'static Tunable,
    /// Where; `None` when the workload's namespace is not opted in.
    pub target: Option<Target>,
    /// Who it is for, for people (`node`, a pod).
    pub workload: String,
    /// The figures that triggered the rule.
    pub evidence: String,
}

/// Where a per-namespace sysctl of `w` is tuned: the node's own, or an opted-in
/// pod's (listed in `tuning.pod_netns`, or annotated `nettune.io/tune-netns`).
fn target_of(w: &WorkloadFigures, config: &TuningConfig) -> Option<Target> {
    let opted_in = w.workload.tune_netns || config.pod_netns.iter().any(|n| w.workload.is_named(n));
    if w.workload.kind == WorkloadKind::Node {
        Some(Target::Node)
    } else if opted_in {
        Some(Target::Netns {
            inode: w.netns,
            label: w.workload.display_name(),
        })
    } else {
        None
    }
}

/// Every proposal the Snapshot justifies (at most one per sysctl and place).
pub fn propose(snapshot: &Snapshot, config: &TuningConfig) -> Vec<Proposal> {
    let mut out: Vec<Proposal> = Vec::new();
    let mut push = |rule,
                    sysctl: &'static Tunable,
                    target: Option<Target>,
                    workload: &str,
                    evidence: String| {
        let duplicate = out
            .iter()
            .any(|p| p.sysctl.name == sysctl.name && p.target == target && p.workload == workload);
        if !duplicate {
            out.push(Proposal {
                rule,
                sysctl,
                target,
                workload: workload.to_owned(),
                evidence,
            });
        }
    };
    for w in &snapshot.workloads {
        let target = target_of(w, config);
        let who = w.workload.display_name();
        let who = who.as_str();
        if w.listen_overflows.per_second > 0.0 {
            let ports: Vec<String> = snapshot
                .listeners
                .iter()
                .filter(|l| l.netns == w.netns)
                .map(|l| format!("port {} (queue {}/{})", l.port, l.backlog, l.max_backlog))
                .collect();
            let listener = if ports.is_empty() {
                w.process
                    .as_ref()
                    .map_or_else(String::new, |p| format!(" in {p}"))
            } else {
                format!(" on {}", ports.join(", "))
            };
            push(
                "listen_overflows",
                &SOMAXCONN,
                target.clone(),
                who,
                format!(
                    "{:.1} listen overflows/s in {who}{listener}; the application's own listen() \
                     backlog caps the queue too — raise it as well",
                    w.listen_overflows.per_second
                ),
            );
        }
        if w.syn_queue_full_drops.per_second > 0.0 {
            push(
                "syn_queue_full",
                &TCP_MAX_SYN_BACKLOG,
                target.clone(),
                who,
                format!(
                    "{:.1} SYNs/s dropped on a full SYN queue in {who}",
                    w.syn_queue_full_drops.per_second
                ),
            );
        }
        if w.connect_eaddrnotavail.per_second > 0.0 {
            let evidence = format!(
                "{:.1} connect()/s failed with EADDRNOTAVAIL in {who} ({} sockets in TIME_WAIT)",
                w.connect_eaddrnotavail.per_second,
                w.tcp_time_wait.unwrap_or(0)
            );
            if target == Some(Target::Node) {
                push(
                    "port_exhaustion",
                    &IP_LOCAL_RESERVED_PORTS,
                    target.clone(),
                    who,
                    evidence.clone(),
                );
            }
            push(
                "port_exhaustion",
                &IP_LOCAL_PORT_RANGE,
                target.clone(),
                who,
                evidence.clone(),
            );
            push(
                "port_exhaustion",
                &TCP_TW_REUSE,
                target.clone(),
                who,
                evidence,
            );
        }
        if let Some(f) = w
            .drops_by_reason
            .get("SOCKET_RCVBUFF")
            .filter(|f| f.per_second > 0.0)
        {
            let evidence = format!(
                "{:.1} packets/s dropped on full receive buffers in {who}",
                f.per_second
            );
            push(
                "receive_buffer_drops",
                &RMEM_MAX,
                Some(Target::Node),
                "node",
                evidence.clone(),
            );
            push(
                "receive_buffer_drops",
                &TCP_RMEM,
                target.clone(),
                who,
                evidence,
            );
        }
        if let (Some(ct), Some(max)) = (&w.conntrack, snapshot.conntrack_max.filter(|m| *m > 0)) {
            let usage = ct.entries as f64 / max as f64;
            if usage >= config.conntrack_threshold || ct.drop.per_second > 0.0 {
                let evidence = format!(
                    "conntrack in {who}: {} of {max} entries ({:.0} %), {:.1} drops/s",
                    ct.entries,
                    usage * 100.0,
                    ct.drop.per_second
                );
                push(
                    "conntrack_full",
                    &NF_CONNTRACK_MAX,
                    Some(Target::Node),
                    "node",
                    evidence.clone(),
                );
                push(
                    "conntrack_full",
                    &NF_CONNTRACK_BUCKETS,
                    Some(Target::Node),
                    "node",
                    evidence,
                );
            }
        }
    }
    if snapshot.totals.backlog_drops_per_second > 0.0 {
        push(
            "backlog_drops",
            &NETDEV_MAX_BACKLOG,
            Some(Target::Node),
            "node",
            format!(
                "{:.1} packets/s dropped on full per-CPU input backlogs (CPU_BACKLOG)",
                snapshot.totals.backlog_drops_per_second
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests;
