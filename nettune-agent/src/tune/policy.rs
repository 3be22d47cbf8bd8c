//! Tuning rules: a pure function from a Snapshot and the config to proposals.
//!
//! Each rule names the sysctl it manages, where (the node, or a pod's namespace
//! when that pod is opted in), the evidence (the figures that triggered it), and
//! its [`Plan`]: raise, or — when the evidence shows raising cannot help — the
//! advice to give instead. Whether and how far a raise goes is the guardrails'
//! business; whether it helped is [`super::verify`]'s, against the figure
//! [`Rule::evidence`] names.

mod accept_queue;

use super::{
    TuningConfig,
    tunables::{
        IP_LOCAL_PORT_RANGE, IP_LOCAL_RESERVED_PORTS, NETDEV_MAX_BACKLOG, NF_CONNTRACK_BUCKETS,
        NF_CONNTRACK_MAX, RMEM_MAX, TCP_RMEM, TCP_TW_REUSE, Tunable,
    },
};
use crate::model::{
    snapshot::{Snapshot, WorkloadFigures},
    tuning::Target,
    workload::WorkloadKind,
};
pub use accept_queue::WaitingListener;

/// The scenarios the tuner reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Accept queues overflow (`ListenOverflows`).
    ListenOverflows,
    /// SYNs dropped on full SYN queues (`TCPReqQFullDrop`).
    SynQueueFull,
    /// `connect()` fails with `EADDRNOTAVAIL`.
    PortExhaustion,
    /// Packets dropped on full socket receive buffers (`SOCKET_RCVBUFF`).
    ReceiveBufferDrops,
    /// The conntrack table is (nearly) full or dropping.
    ConntrackFull,
    /// Packets dropped on full per-CPU input queues (`CPU_BACKLOG`).
    BacklogDrops,
    /// A static profile (`nettune apply`), not a reaction to evidence.
    Profile,
}

/// A rule's figure at one moment: how much of the bad thing happened so far,
/// and whether the table it watches is still under pressure.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evidence {
    /// The cumulative count (overflows, drops, failed connects).
    pub total: u64,
    /// Its rate in the Snapshot.
    pub per_second: f64,
    /// A fill level still over its threshold (conntrack).
    pub pressure: bool,
}

impl Rule {
    /// The name in decisions, logs and the journal.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ListenOverflows => "listen_overflows",
            Self::SynQueueFull => "syn_queue_full",
            Self::PortExhaustion => "port_exhaustion",
            Self::ReceiveBufferDrops => "receive_buffer_drops",
            Self::ConntrackFull => "conntrack_full",
            Self::BacklogDrops => "backlog_drops",
            Self::Profile => "profile",
        }
    }

    /// What the evidence counts, for people.
    pub const fn evidence_name(self) -> &'static str {
        match self {
            Self::ListenOverflows => "listen overflows",
            Self::SynQueueFull => "SYN-queue drops",
            Self::PortExhaustion => "EADDRNOTAVAIL connects",
            Self::ReceiveBufferDrops => "receive-buffer drops",
            Self::ConntrackFull => "conntrack drops",
            Self::BacklogDrops => "input-backlog drops",
            Self::Profile => "nothing",
        }
    }

    /// The evidence of this rule in namespace `netns` (node-wide rules ignore
    /// it); `None` when the namespace is gone, or the rule watches nothing.
    pub fn evidence(
        self,
        netns: u32,
        snapshot: &Snapshot,
        config: &TuningConfig,
    ) -> Option<Evidence> {
        let of = |c: &crate::model::counter::CounterRate| Evidence {
            total: c.total,
            per_second: c.per_second,
            pressure: false,
        };
        if self == Self::BacklogDrops {
            let rates = snapshot
                .workloads
                .iter()
                .filter_map(|w| w.drops_by_reason.get("CPU_BACKLOG"))
                .chain(snapshot.unattributed_drops.get("CPU_BACKLOG"));
            return Some(rates.fold(Evidence::default(), |mut e, c| {
                e.total += c.total;
                e.per_second += c.per_second;
                e
            }));
        }
        let w = snapshot.workload(netns)?;
        Some(match self {
            Self::ListenOverflows => of(&w.listen_overflows),
            Self::SynQueueFull => of(&w.syn_queue_full_drops),
            Self::PortExhaustion => of(&w.connect_eaddrnotavail),
            Self::ReceiveBufferDrops => w
                .drops_by_reason
                .get("SOCKET_RCVBUFF")
                .map_or_else(Evidence::default, of),
            Self::ConntrackFull => {
                let ct = w.conntrack.as_ref()?;
                Evidence {
                    pressure: conntrack_usage(ct.entries, snapshot.conntrack_max)
                        .is_some_and(|u| u >= config.conntrack_threshold),
                    ..of(&ct.drop)
                }
            }
            Self::BacklogDrops | Self::Profile => return None,
        })
    }

    /// What to look at when a raise did not reduce the evidence.
    pub const fn when_ineffective(self) -> &'static str {
        match self {
            Self::ListenOverflows => {
                "the application does not accept connections as fast as they come: look at its \
                 accept loop and worker count"
            }
            Self::SynQueueFull => {
                "a SYN flood or a listener that does not keep up: turn net.ipv4.tcp_syncookies \
                 on and raise the listener's backlog"
            }
            Self::PortExhaustion => {
                "connections are opened faster than ports come back: reuse them (keep-alive, \
                 pooling) or spread them over more destination addresses"
            }
            Self::ReceiveBufferDrops => {
                "the application does not read its sockets fast enough: bigger buffers only \
                 delay the drops"
            }
            Self::ConntrackFull => {
                "entries keep up with the limit, so connections are not being released (a leak, \
                 or long timeouts such as nf_conntrack_tcp_timeout_established): find who holds \
                 them with `conntrack -L` before raising again"
            }
            Self::BacklogDrops => {
                "the CPU taking the packets is saturated: spread the load (RSS, RPS) rather than \
                 queue more"
            }
            Self::Profile => "",
        }
    }
}

/// What a rule concluded from the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Raise the sysctl (within the guardrails).
    Raise,
    /// Raising it cannot help; the advice says what would.
    Futile(String),
    /// Not enough evidence yet to decide; the reason says what is missing.
    Hold(String),
}

/// A rule's wish: raise `sysctl` at `target` (None: the workload is not opted in).
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The rule (scenario) that fired.
    pub rule: Rule,
    /// The sysctl to change.
    pub sysctl: &'static Tunable,
    /// Where; `None` when the workload's namespace is not opted in.
    pub target: Option<Target>,
    /// Who it is for, for people (`node`, a pod).
    pub workload: String,
    /// The namespace the evidence comes from.
    pub netns: u32,
    /// The figures that triggered the rule.
    pub evidence: String,
    /// Raise, or why not.
    pub plan: Plan,
    /// Listeners that keep their old limit until they listen again (a
    /// somaxconn raise changes nothing for them before that).
    pub waiting: Vec<WaitingListener>,
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

/// Entries over limit, when both are known.
fn conntrack_usage(entries: u64, max: Option<u64>) -> Option<f64> {
    max.filter(|m| *m > 0).map(|m| entries as f64 / m as f64)
}

/// Proposals under construction: at most one per sysctl, place and workload.
struct Proposals(Vec<Proposal>);

impl Proposals {
    fn push(&mut self, p: Proposal) {
        let duplicate = self.0.iter().any(|q| {
            q.sysctl.name == p.sysctl.name && q.target == p.target && q.workload == p.workload
        });
        if !duplicate {
            self.0.push(p);
        }
    }
}

/// Every proposal the Snapshot justifies (at most one per sysctl and place).
pub fn propose(snapshot: &Snapshot, config: &TuningConfig) -> Vec<Proposal> {
    let mut out = Proposals(Vec::new());
    let node = snapshot
        .workloads
        .iter()
        .find(|w| w.workload.kind == WorkloadKind::Node);
    for w in &snapshot.workloads {
        let target = target_of(w, config);
        let who = w.workload.display_name();
        let who = who.as_str();
        if w.listen_overflows.per_second > 0.0 {
            out.push(accept_queue::listen_overflows(snapshot, w, target.clone()));
        }
        if w.syn_queue_full_drops.per_second > 0.0 {
            out.push(accept_queue::syn_queue_full(snapshot, w, target.clone()));
        }
        if w.connect_eaddrnotavail.per_second > 0.0 {
            let evidence = format!(
                "{:.1} connect()/s failed with EADDRNOTAVAIL in {who} ({} sockets in TIME_WAIT)",
                w.connect_eaddrnotavail.per_second,
                w.tcp_time_wait.unwrap_or(0)
            );
            let rule = Rule::PortExhaustion;
            if target == Some(Target::Node) {
                let reserve = &IP_LOCAL_RESERVED_PORTS;
                out.push(proposal_for(
                    w,
                    rule,
                    reserve,
                    target.clone(),
                    evidence.clone(),
                ));
            }
            for sysctl in [&IP_LOCAL_PORT_RANGE, &TCP_TW_REUSE] {
                out.push(proposal_for(
                    w,
                    rule,
                    sysctl,
                    target.clone(),
                    evidence.clone(),
                ));
            }
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
            let rule = Rule::ReceiveBufferDrops;
            // rmem_max is node-wide: tuned for the node, whoever dropped.
            if let Some(node) = node {
                out.push(Proposal {
                    netns: w.netns,
                    ..proposal_for(node, rule, &RMEM_MAX, Some(Target::Node), evidence.clone())
                });
            }
            out.push(proposal_for(w, rule, &TCP_RMEM, target.clone(), evidence));
        }
        if let Some(ct) = &w.conntrack
            && let Some(usage) = conntrack_usage(ct.entries, snapshot.conntrack_max)
            && (usage >= config.conntrack_threshold || ct.drop.per_second > 0.0)
        {
            let evidence = format!(
                "conntrack in {who}: {} of {} entries ({:.0} %), {:.1} drops/s",
                ct.entries,
                snapshot.conntrack_max.unwrap_or(0),
                usage * 100.0,
                ct.drop.per_second
            );
            for sysctl in [&NF_CONNTRACK_MAX, &NF_CONNTRACK_BUCKETS] {
                out.push(Proposal {
                    netns: w.netns,
                    workload: "node".into(),
                    ..proposal_for(
                        w,
                        Rule::ConntrackFull,
                        sysctl,
                        Some(Target::Node),
                        evidence.clone(),
                    )
                });
            }
        }
    }
    if snapshot.totals.backlog_drops_per_second > 0.0
        && let Some(node) = node
    {
        let evidence = format!(
            "{:.1} packets/s dropped on full per-CPU input backlogs (CPU_BACKLOG)",
            snapshot.totals.backlog_drops_per_second
        );
        out.push(proposal_for(
            node,
            Rule::BacklogDrops,
            &NETDEV_MAX_BACKLOG,
            Some(Target::Node),
            evidence,
        ));
    }
    out.0
}

/// A plain raise for workload `w`.
fn proposal_for(
    w: &WorkloadFigures,
    rule: Rule,
    sysctl: &'static Tunable,
    target: Option<Target>,
    evidence: String,
) -> Proposal {
    Proposal {
        rule,
        sysctl,
        target,
        workload: w.workload.pod.clone(),
        netns: w.netns,
        evidence,
        plan: Plan::Raise,
        waiting: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
