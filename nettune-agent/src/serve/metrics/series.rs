//! From a published Snapshot to series: which figure of a workload, interface,
//! listener or managed sysctl feeds which metric.
//!
//! Per-workload series are listed once, in [`WORKLOAD_SERIES`] and
//! [`INTERFACE_SERIES`]; a workload folded under `pod="_other"` (beyond
//! `agent.max_pod_series`, marked by [`Snapshot::fold`]) feeds the same series
//! with the `_other` labels, summed, so `_other` can never miss a series the
//! others have.

use std::collections::BTreeMap;

use super::{
    catalog::{self, Metric},
    conversations,
    families::Families,
    labels::{
        BudgetedMap, Build, Decision, DemotionReason, Effect, EventKind, IdentitySource, Labels,
        Listener as ListenerLabels, LostCause, Mode as ModeLabel, NoLabels, NodeInfo, OTHER, Pod,
        PodInterface, ProbeError, Program, Reason, SignalVariant, SysctlTarget, SysctlWriter,
    },
};
use crate::model::{
    snapshot::{InterfaceFigures, Listener, Published, Snapshot, WorkloadFigures},
    tuning::{Demotion, Mode, Target, TuningState},
};

/// Listener series a workload keeps (its busiest sockets'); the rest are summed
/// under `port="_other"`.
pub const LISTENERS_PER_WORKLOAD: usize = 16;

/// A workload's series and its value (`None`: not exported for this workload,
/// e.g. no conntrack in its namespace).
pub type WorkloadSeries = (&'static Metric<Pod>, fn(&WorkloadFigures) -> Option<f64>);

/// Every per-workload series but drops by reason and interface traffic. Two
/// figures of the Snapshot are left to the JSON API to keep a busy pod under
/// 40 series: retransmitted skbs (`retransmit_segments` counts what matters)
/// and conntrack's `chaintoolong` (the kernel counts each in `insert_failed`
/// too).
pub const WORKLOAD_SERIES: &[WorkloadSeries] = &[
    (&catalog::TCP_RETRANSMIT_SEGMENTS, |w| {
        Some(w.retransmit_segments.total as f64)
    }),
    (&catalog::TCP_RETRANSMIT_FAILURES, |w| {
        Some(w.retransmit_failures.total as f64)
    }),
    (&catalog::TCP_OUT_SEGMENTS, |w| {
        Some(w.out_segments.total as f64)
    }),
    (&catalog::LISTEN_OVERFLOWS, |w| {
        Some(w.listen_overflows.total as f64)
    }),
    (&catalog::LISTEN_DROPS, |w| {
        Some(w.listen_drops.total as f64)
    }),
    (&catalog::SYN_QUEUE_FULL_DROPS, |w| {
        Some(w.syn_queue_full_drops.total as f64)
    }),
    (&catalog::CONNECT_EADDRNOTAVAIL, |w| {
        Some(w.connect_eaddrnotavail.total as f64)
    }),
    (&catalog::CONNTRACK_ENTRIES, |w| {
        w.conntrack.as_ref().map(|c| c.entries as f64)
    }),
    (&catalog::CONNTRACK_INSERT_FAILED, |w| {
        w.conntrack.as_ref().map(|c| c.insert_failed.total as f64)
    }),
    (&catalog::CONNTRACK_DROPS, |w| {
        w.conntrack.as_ref().map(|c| c.drop.total as f64)
    }),
    (&catalog::CONNTRACK_EARLY_DROPS, |w| {
        w.conntrack.as_ref().map(|c| c.early_drop.total as f64)
    }),
    (&catalog::CONNTRACK_CLASH_RESOLVES, |w| {
        nonzero(w.conntrack.as_ref()?.clash_resolve.total)
    }),
    (&catalog::TCP_TIME_WAIT_SOCKETS, |w| {
        w.tcp_time_wait.map(|t| t as f64)
    }),
];

/// `n`, for a series exported once its counter is non-zero (rare events: a
/// pod without them has no series for them).
pub fn nonzero(n: u64) -> Option<f64> {
    (n > 0).then_some(n as f64)
}

/// A pod interface's series (`None`: not exported, see [`nonzero`]).
pub type InterfaceSeries = (
    &'static Metric<PodInterface>,
    fn(&InterfaceFigures) -> Option<f64>,
);

/// Every per-interface series.
pub const INTERFACE_SERIES: &[InterfaceSeries] = &[
    (&catalog::POD_RECEIVE_BYTES, |i| {
        Some(i.rx_bytes.total as f64)
    }),
    (&catalog::POD_TRANSMIT_BYTES, |i| {
        Some(i.tx_bytes.total as f64)
    }),
    (&catalog::POD_RECEIVE_PACKETS, |i| {
        Some(i.rx_packets.total as f64)
    }),
    (&catalog::POD_TRANSMIT_PACKETS, |i| {
        Some(i.tx_packets.total as f64)
    }),
    (&catalog::POD_RECEIVE_DROPS, |i| {
        Some(i.rx_drops.total as f64)
    }),
    (&catalog::POD_TRANSMIT_DROPS, |i| {
        Some(i.tx_drops.total as f64)
    }),
    (&catalog::POD_INTERFACE_ERRORS, |i| nonzero(i.errors.total)),
    (&catalog::POD_TC_DROPS, |i| Some(i.tc_drops.total as f64)),
];

/// Adds a workload's series: its own, or (`folded`) its share of `_other`'s.
pub(super) fn put<L: Labels>(
    f: &mut Families,
    folded: bool,
    metric: &Metric<L>,
    labels: L,
    value: f64,
) {
    if folded {
        f.add_to_sum(metric, labels, value);
    } else {
        f.add(metric, labels, value);
    }
}

/// A workload's own series, or its share of `_other`'s.
fn workload(f: &mut Families, w: &WorkloadFigures) {
    let pod = if w.folded {
        Pod::other()
    } else {
        Pod::new(&w.workload.namespace, &w.workload.pod)
    };
    for (metric, get) in WORKLOAD_SERIES {
        if let Some(v) = get(w) {
            put(f, w.folded, metric, pod.clone(), v);
        }
    }
    for (reason, fig) in &w.drops_by_reason {
        let labels = pod.clone().with_reason(reason);
        put(f, w.folded, &catalog::DROPS, labels, fig.total as f64);
    }
    if let Some(i) = &w.interface {
        let interface = if w.folded { OTHER } else { i.name.as_str() };
        for (metric, get) in INTERFACE_SERIES {
            if let Some(v) = get(i) {
                let labels = pod.clone().with_interface(interface);
                put(f, w.folded, metric, labels, v);
            }
        }
    }
    if let Some(c) = &w.conversations {
        conversations::workload(f, w.folded, &pod, c);
    }
}

/// Per-listener series. Listeners of folded workloads are summed under
/// `pod="_other"`, and a workload's listeners beyond its busiest
/// [`LISTENERS_PER_WORKLOAD`] under `port="_other"`.
fn listeners(f: &mut Families, snapshot: &Snapshot) {
    let mut by_workload: BTreeMap<u32, Vec<&Listener>> = BTreeMap::new();
    for l in &snapshot.listeners {
        by_workload.entry(l.netns).or_default().push(l);
    }
    let mut series: BTreeMap<ListenerLabels, ListenerSums> = BTreeMap::new();
    for (netns, mut listeners) in by_workload {
        let owner = snapshot
            .workload(netns)
            .filter(|w| !w.folded)
            .map(|w| Pod::new(&w.workload.namespace, &w.workload.pod));
        listeners.sort_by(|a, b| {
            b.overflows
                .total
                .cmp(&a.overflows.total)
                .then(b.queue.cmp(&a.queue))
                .then(a.port.cmp(&b.port))
        });
        let mut own = 0;
        for l in listeners {
            let (labels, folded) = match &owner {
                Some(pod) => {
                    let labels = ListenerLabels {
                        namespace: pod.namespace.clone(),
                        pod: pod.pod.clone(),
                        address: l.address.to_string(),
                        port: l.port.to_string(),
                        process: l.process.clone().unwrap_or_default(),
                    };
                    if series.contains_key(&labels) || own < LISTENERS_PER_WORKLOAD {
                        own += usize::from(!series.contains_key(&labels));
                        (labels, false)
                    } else {
                        (other_listener(pod.clone()), true)
                    }
                }
                None => (other_listener(Pod::other()), true),
            };
            series.entry(labels).or_default().add(l, folded);
        }
    }
    for (labels, sums) in series {
        // `_other` listeners are sums: their counters never decrease.
        let other = labels.port == OTHER || labels.pod == OTHER;
        if let Some(r) = sums.requested {
            put(
                f,
                other,
                &catalog::LISTEN_BACKLOG_REQUESTED,
                labels.clone(),
                f64::from(r),
            );
        }
        put(
            f,
            other,
            &catalog::LISTEN_BACKLOG_LIMIT,
            labels.clone(),
            sums.limit,
        );
        put(
            f,
            other,
            &catalog::LISTEN_QUEUE_LENGTH,
            labels.clone(),
            sums.queue,
        );
        put(
            f,
            other,
            &catalog::LISTEN_SOCKET_OVERFLOWS,
            labels,
            sums.overflows,
        );
    }
}

/// The labels of `pod`'s listeners beyond its own series.
fn other_listener(pod: Pod) -> ListenerLabels {
    ListenerLabels {
        namespace: pod.namespace,
        pod: pod.pod,
        address: String::new(),
        port: OTHER.to_owned(),
        process: String::new(),
    }
}

/// One listener series: sums over the sockets that share its labels.
#[derive(Default)]
struct ListenerSums {
    requested: Option<u32>,
    limit: f64,
    queue: f64,
    overflows: f64,
}

impl ListenerSums {
    fn add(&mut self, l: &Listener, folded: bool) {
        self.limit += f64::from(l.limit);
        self.queue += f64::from(l.queue);
        self.overflows += l.overflows.total as f64;
        // What one application asked for is not a sum.
        if !folded {
            self.requested = self.requested.max(l.requested_backlog);
        }
    }
}

fn tuning(f: &mut Families, mode: Mode, tuning: &TuningState) {
    for m in Mode::ALL {
        f.add(
            &catalog::TUNING_MODE,
            ModeLabel {
                mode: m.name().into(),
            },
            if m == mode { 1.0 } else { 0.0 },
        );
    }
    for c in &tuning.counts {
        let labels = Decision {
            sysctl: c.sysctl.clone(),
            action: c.action.clone(),
            result: c.result.clone(),
        };
        f.add(&catalog::TUNING_DECISIONS, labels, c.count as f64);
    }
    for c in &tuning.effect_counts {
        let labels = Effect {
            sysctl: c.sysctl.clone(),
            verdict: c.verdict.clone(),
        };
        f.add(&catalog::TUNING_EFFECT, labels, c.count as f64);
    }
    for m in &tuning.managed {
        let target = match &m.target {
            Target::Node => "node",
            Target::Netns { label, .. } => label.as_str(),
        };
        let labels = SysctlTarget::new(&m.sysctl, target);
        if let Some(v) = m.current_room {
            f.add(&catalog::SYSCTL_VALUE, labels.clone(), v as f64);
        }
        if let Some(v) = m.original_room {
            f.add(&catalog::SYSCTL_ORIGINAL_VALUE, labels.clone(), v as f64);
        }
        f.add(&catalog::SYSCTL_CEILING, labels.clone(), m.ceiling as f64);
        let stood_down = if m.stood_down { 1.0 } else { 0.0 };
        f.add(&catalog::TUNING_STOOD_DOWN, labels, stood_down);
    }
}

/// The agent's own series: build, probes, events, collection, identity.
fn agent(f: &mut Families, published: &Published) {
    let snapshot = &published.snapshot;
    let build = Build {
        version: snapshot.agent_version.clone(),
        kernel: snapshot.kernel.clone(),
    };
    f.add(&catalog::BUILD_INFO, build, 1.0);
    for w in snapshot.sysctl_writers.iter().filter(|w| !w.own) {
        let labels = SysctlWriter {
            sysctl: w.sysctl.clone(),
            writer: w.command.clone(),
        };
        if w.refused > 0 {
            f.add(
                &catalog::SYSCTL_GUARD_REFUSALS,
                labels.clone(),
                w.refused as f64,
            );
        }
        f.add(&catalog::SYSCTL_FOREIGN_WRITES, labels, w.writes as f64);
    }
    if let Some(c) = &snapshot.context {
        let info = NodeInfo {
            proxy: c.proxy.clone(),
            cni: c.cni.clone(),
            encapsulation: c.encapsulation.clone(),
            nodelocal_dns: c.nodelocal_dns.to_string(),
        };
        f.add(&catalog::NODE_INFO, info, 1.0);
        if let Some(mtu) = c.path_mtu() {
            f.add(&catalog::NODE_PATH_MTU, NoLabels {}, f64::from(mtu));
        }
    }
    for s in &snapshot.probes.signals {
        let variant = |v: &str| SignalVariant {
            signal: s.signal.clone(),
            variant: v.to_owned(),
        };
        if let Some(v) = s.attached {
            f.add(&catalog::PROBE_ATTACHED, variant(v.name()), 1.0);
        }
        for k in &s.skipped {
            f.add(&catalog::PROBE_ATTACHED, variant(k.variant.name()), 0.0);
        }
    }
    for (error, n) in &snapshot.probe_errors {
        let labels = ProbeError {
            error: error.clone(),
        };
        f.add(&catalog::PROBE_ERRORS, labels, *n as f64);
    }
    for budgeted in nettune_common::BudgetedMap::ALL {
        let over = snapshot
            .over_budget
            .get(budgeted.name())
            .copied()
            .unwrap_or(0);
        let labels = BudgetedMap {
            map: budgeted.name().into(),
        };
        f.add(&catalog::MAP_NAMESPACES_OVER_BUDGET, labels, over as f64);
    }
    let lost = snapshot.lost_events;
    for (cause, n) in [("ring_full", lost.ring_full), ("not_armed", lost.not_armed)] {
        let labels = LostCause {
            cause: cause.into(),
        };
        f.add(&catalog::EVENTS_LOST, labels, n as f64);
    }
    let received = published.events_received;
    for (kind, n) in [
        ("netfilter_drop", received.netfilter_drop),
        ("listen_overflow", received.listen_overflow),
        ("other", received.other),
    ] {
        let labels = EventKind { kind: kind.into() };
        f.add(&catalog::EVENTS_RECEIVED, labels, n as f64);
    }
    f.add(
        &catalog::EVENT_COLLECTIONS_SUPPRESSED,
        NoLabels {},
        published.event_collections_suppressed as f64,
    );
    f.add(
        &catalog::COLLECTION_DURATION,
        NoLabels {},
        snapshot.collection_seconds,
    );
    for (name, stats) in &snapshot.program_stats {
        let labels = || Program {
            program: name.clone(),
        };
        f.add(&catalog::PROGRAM_RUNS, labels(), stats.runs as f64);
        let seconds = stats.run_ns as f64 / 1e9;
        f.add(&catalog::PROGRAM_RUN_SECONDS, labels(), seconds);
    }
    // Every reason, 0 or 1: an alert tells "not demoted" from "not scraped".
    for reason in Demotion::ALL {
        let labels = DemotionReason {
            reason: reason.name().into(),
        };
        let demoted = published.mode_demoted == Some(reason);
        f.add(
            &catalog::TUNING_DEMOTED,
            labels,
            if demoted { 1.0 } else { 0.0 },
        );
    }
    for source in &snapshot.identity_sources {
        let labels = IdentitySource {
            source: source.source.clone(),
        };
        f.add(
            &catalog::IDENTITY_SOURCE,
            labels,
            if source.up { 1.0 } else { 0.0 },
        );
    }
}

/// Every series of `published`.
pub(super) fn render_into(f: &mut Families, published: &Published) {
    let snapshot = &published.snapshot;
    agent(f, published);
    f.add(
        &catalog::WORKLOADS,
        NoLabels {},
        snapshot.workloads.len() as f64,
    );
    let folded = snapshot.workloads.iter().filter(|w| w.folded).count();
    f.add(&catalog::WORKLOADS_FOLDED, NoLabels {}, folded as f64);
    if let Some(max) = snapshot.conntrack_max {
        f.add(&catalog::CONNTRACK_LIMIT, NoLabels {}, max as f64);
    }
    for (reason, fig) in &snapshot.unattributed_drops {
        let labels = Reason {
            reason: reason.clone(),
        };
        f.add(&catalog::UNATTRIBUTED_DROPS, labels, fig.total as f64);
    }
    for w in &snapshot.workloads {
        workload(f, w);
    }
    listeners(f, snapshot);
    conversations::node(f, snapshot);
    if let Some(t) = &published.tuning {
        tuning(f, snapshot.mode, t);
    }
}
