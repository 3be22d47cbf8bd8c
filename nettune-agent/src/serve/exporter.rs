//! Prometheus metrics, rendered from each published Snapshot.
//!
//! The exporter is a `prometheus` [`Collector`] registered in a [`Registry`]: every
//! metric is declared once in [`METRICS`] (name, type, labels, help) and gets a
//! [`Desc`] at start-up, so a name or label the Prometheus data model rejects fails
//! there, not at scrape time. [`Exporter::render`] runs once per published
//! Snapshot (by the collection thread) and returns the text as [`Bytes`] that
//! every scrape shares: a scrape never renders, clones a Snapshot or waits for a
//! collection.
//!
//! Rendering from the latest Snapshot (rather than keeping long-lived metric
//! objects) makes a departed pod's series disappear on the first scrape after it
//! goes: nothing has to remember to delete them. Counters are the kernel's own
//! cumulative counts, so they only go up while a workload exists.
//!
//! Per-workload series are listed once, in [`WORKLOAD_SERIES`] and
//! [`INTERFACE_SERIES`]; the `_other` workload that sums pods beyond
//! `agent.max_pod_series` is built from the same lists, so it can never miss a
//! series the others have.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use prometheus::{
    Encoder as _, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

use crate::model::{
    snapshot::{InterfaceFigures, Listener, Published, Snapshot, WorkloadFigures},
    tuning::{Mode, Target, TuningState},
    workload::WorkloadKind,
};

/// One metric nettune exports.
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    /// Its name (`nettune_` prefix, counters end in `_total`).
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: MetricType,
    /// Its labels, in order.
    pub labels: &'static [&'static str],
    /// What it means.
    pub help: &'static str,
}

/// Labels of the per-listener series. Sockets sharing all of them (a
/// `SO_REUSEPORT` group) are summed into one series.
const LISTENER_LABELS: [&str; 5] = ["namespace", "pod", "address", "port", "process"];

/// Listener series a workload keeps (its busiest sockets'); the rest are summed
/// under `port="_other"`.
pub const LISTENERS_PER_WORKLOAD: usize = 16;

/// Every metric nettune exports. The README's metric table is this list (a test
/// keeps the two in step).
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        name: "nettune_build_info",
        kind: MetricType::GAUGE,
        labels: &["version", "kernel"],
        help: "Always 1; labels name the agent version and the running kernel.",
    },
    MetricDef {
        name: "nettune_probe_attached",
        kind: MetricType::GAUGE,
        labels: &["signal", "variant"],
        help: "1 for the variant attached for a signal, 0 for variants tried and skipped.",
    },
    MetricDef {
        name: "nettune_probe_errors_total",
        kind: MetricType::COUNTER,
        labels: &["error"],
        help: "Errors the eBPF programs met (failed kernel reads, full maps).",
    },
    MetricDef {
        name: "nettune_events_lost_total",
        kind: MetricType::COUNTER,
        labels: &["cause"],
        help: "Urgent events not delivered: ring buffer full, or rate-limited in the kernel.",
    },
    MetricDef {
        name: "nettune_events_received_total",
        kind: MetricType::COUNTER,
        labels: &["kind"],
        help: "Urgent events the agent received from the kernel (each may wake a collection).",
    },
    MetricDef {
        name: "nettune_event_collections_suppressed_total",
        kind: MetricType::COUNTER,
        labels: &[],
        help: "Urgent-event wake-ups that did not collect: too close to the previous collection (agent.min_event_interval_seconds).",
    },
    MetricDef {
        name: "nettune_collection_duration_seconds",
        kind: MetricType::GAUGE,
        labels: &[],
        help: "Time the last collection took.",
    },
    MetricDef {
        name: "nettune_workloads",
        kind: MetricType::GAUGE,
        labels: &[],
        help: "Network namespaces tracked.",
    },
    MetricDef {
        name: "nettune_workloads_folded",
        kind: MetricType::GAUGE,
        labels: &[],
        help: "Workloads beyond agent.max_pod_series, summed under pod=\"_other\".",
    },
    MetricDef {
        name: "nettune_identity_source",
        kind: MetricType::GAUGE,
        labels: &["source"],
        help: "1 while a source of pod names answers (cri: the container runtime), 0 while it does not.",
    },
    MetricDef {
        name: "nettune_conntrack_limit",
        kind: MetricType::GAUGE,
        labels: &[],
        help: "net.netfilter.nf_conntrack_max.",
    },
    MetricDef {
        name: "nettune_unattributed_drops_total",
        kind: MetricType::COUNTER,
        labels: &["reason"],
        help: "Dropped packets that could not be attributed to a namespace.",
    },
    MetricDef {
        name: "nettune_tcp_retransmit_segments_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod"],
        help: "TCP segments retransmitted (RetransSegs).",
    },
    MetricDef {
        name: "nettune_tcp_retransmits_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod"],
        help: "Retransmitted TCP skbs.",
    },
    MetricDef {
        name: "nettune_tcp_retransmit_failures_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod"],
        help: "Retransmit attempts the kernel reported as failed.",
    },
    MetricDef {
        name: "nettune_tcp_out_segments_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod"],
        help: "TCP segments sent (OutSegs): the denominator of the retransmission rate.",
    },
    MetricDef {
        name: "nettune_drops_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod", "reason"],
        help: "Packets dropped by the kernel, by drop reason (enum skb_drop_reason).",
    },
    MetricDef {
        name: "nettune_listen_overflows_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod"],
        help: "Connections refused because an accept queue was full (ListenOverflows).",
    },
    MetricDef {
        name: "nettune_listen_drops_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod"],
        help: "SYNs and handshakes dropped by listeners (ListenDrops).",
    },
    MetricDef {
        name: "nettune_syn_queue_full_drops_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod"],
        help: "SYNs dropped because the SYN queue was full (TCPReqQFullDrop).",
    },
    MetricDef {
        name: "nettune_connect_eaddrnotavail_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod"],
        help: "connect() calls that failed for lack of an ephemeral port.",
    },
    MetricDef {
        name: "nettune_conntrack_entries",
        kind: MetricType::GAUGE,
        labels: &["namespace", "pod"],
        help: "Connections tracked in the namespace's conntrack table.",
    },
    MetricDef {
        name: "nettune_conntrack_insert_failed_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod"],
        help: "Conntrack insertions that failed.",
    },
    MetricDef {
        name: "nettune_conntrack_drops_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod"],
        help: "Packets dropped because the conntrack table was full.",
    },
    MetricDef {
        name: "nettune_conntrack_early_drops_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod"],
        help: "Entries evicted early to make room.",
    },
    MetricDef {
        name: "nettune_tcp_time_wait_sockets",
        kind: MetricType::GAUGE,
        labels: &["namespace", "pod"],
        help: "TCP sockets in TIME_WAIT.",
    },
    MetricDef {
        name: "nettune_pod_receive_bytes_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod", "interface"],
        help: "Bytes the pod received through its veth.",
    },
    MetricDef {
        name: "nettune_pod_transmit_bytes_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod", "interface"],
        help: "Bytes the pod sent through its veth.",
    },
    MetricDef {
        name: "nettune_pod_receive_packets_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod", "interface"],
        help: "Packets the pod received through its veth.",
    },
    MetricDef {
        name: "nettune_pod_transmit_packets_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod", "interface"],
        help: "Packets the pod sent through its veth.",
    },
    MetricDef {
        name: "nettune_pod_tc_drops_total",
        kind: MetricType::COUNTER,
        labels: &["namespace", "pod", "interface"],
        help: "Packets dropped by tc on the pod's host-side interface.",
    },
    MetricDef {
        name: "nettune_listen_backlog_requested",
        kind: MetricType::GAUGE,
        labels: &LISTENER_LABELS,
        help: "The backlog the application passed to listen() (absent when it listened before nettune started).",
    },
    MetricDef {
        name: "nettune_listen_backlog_limit",
        kind: MetricType::GAUGE,
        labels: &LISTENER_LABELS,
        help: "The accept queue's limit: min(listen() backlog, somaxconn when it listened).",
    },
    MetricDef {
        name: "nettune_listen_queue_length",
        kind: MetricType::GAUGE,
        labels: &LISTENER_LABELS,
        help: "Connections waiting to be accepted, when the listener was last looked at.",
    },
    MetricDef {
        name: "nettune_listen_socket_overflows_total",
        kind: MetricType::COUNTER,
        labels: &LISTENER_LABELS,
        help: "Accept-queue overflows per listening socket (exact under fentry/kprobe, else the namespace's count split among listeners at their limit).",
    },
    MetricDef {
        name: "nettune_tuning_mode",
        kind: MetricType::GAUGE,
        labels: &["mode"],
        help: "1 for the tuner's mode (observe, advise, enforce).",
    },
    MetricDef {
        name: "nettune_tuning_decisions_total",
        kind: MetricType::COUNTER,
        labels: &["sysctl", "action", "result"],
        help: "Tuning decisions by outcome: applied, advised, refused (a guardrail), futile (raising would not help), stood_down, failed.",
    },
    MetricDef {
        name: "nettune_tuning_effect_total",
        kind: MetricType::COUNTER,
        labels: &["sysctl", "verdict"],
        help: "Applied changes by verdict on their evidence: no_effect_yet, effective, ineffective.",
    },
    MetricDef {
        name: "nettune_sysctl_value",
        kind: MetricType::GAUGE,
        labels: &["sysctl", "target"],
        help: "Current value of a sysctl nettune manages (port ranges: their width; buffer triples: the maximum).",
    },
    MetricDef {
        name: "nettune_sysctl_original_value",
        kind: MetricType::GAUGE,
        labels: &["sysctl", "target"],
        help: "The value found before nettune first changed it (what rollback restores).",
    },
    MetricDef {
        name: "nettune_sysctl_ceiling",
        kind: MetricType::GAUGE,
        labels: &["sysctl", "target"],
        help: "The most nettune will raise the sysctl to.",
    },
    MetricDef {
        name: "nettune_tuning_stood_down",
        kind: MetricType::GAUGE,
        labels: &["sysctl", "target"],
        help: "1 when someone else changed a managed value and nettune stopped managing it.",
    },
];

/// A workload's series: the metric and its value (`None`: not exported for this
/// workload, e.g. no conntrack in its namespace). Labels: `namespace`, `pod`.
type WorkloadSeries = (&'static str, fn(&WorkloadFigures) -> Option<f64>);

/// Every per-workload series but drops by reason and interface traffic.
pub const WORKLOAD_SERIES: &[WorkloadSeries] = &[
    ("nettune_tcp_retransmit_segments_total", |w| {
        Some(w.retransmit_segments.total as f64)
    }),
    ("nettune_tcp_retransmits_total", |w| {
        Some(w.retransmits.total as f64)
    }),
    ("nettune_tcp_retransmit_failures_total", |w| {
        Some(w.retransmit_failures.total as f64)
    }),
    ("nettune_tcp_out_segments_total", |w| {
        Some(w.out_segments.total as f64)
    }),
    ("nettune_listen_overflows_total", |w| {
        Some(w.listen_overflows.total as f64)
    }),
    ("nettune_listen_drops_total", |w| {
        Some(w.listen_drops.total as f64)
    }),
    ("nettune_syn_queue_full_drops_total", |w| {
        Some(w.syn_queue_full_drops.total as f64)
    }),
    ("nettune_connect_eaddrnotavail_total", |w| {
        Some(w.connect_eaddrnotavail.total as f64)
    }),
    ("nettune_conntrack_entries", |w| {
        w.conntrack.as_ref().map(|c| c.entries as f64)
    }),
    ("nettune_conntrack_insert_failed_total", |w| {
        w.conntrack.as_ref().map(|c| c.insert_failed.total as f64)
    }),
    ("nettune_conntrack_drops_total", |w| {
        w.conntrack.as_ref().map(|c| c.drop.total as f64)
    }),
    ("nettune_conntrack_early_drops_total", |w| {
        w.conntrack.as_ref().map(|c| c.early_drop.total as f64)
    }),
    ("nettune_tcp_time_wait_sockets", |w| {
        w.tcp_time_wait.map(|t| t as f64)
    }),
];

/// A pod interface's series. Labels: `namespace`, `pod`, `interface`.
type InterfaceSeries = (&'static str, fn(&InterfaceFigures) -> f64);

/// Every per-interface series.
pub const INTERFACE_SERIES: &[InterfaceSeries] = &[
    ("nettune_pod_receive_bytes_total", |i| {
        i.rx_bytes.total as f64
    }),
    ("nettune_pod_transmit_bytes_total", |i| {
        i.tx_bytes.total as f64
    }),
    ("nettune_pod_receive_packets_total", |i| {
        i.rx_packets.total as f64
    }),
    ("nettune_pod_transmit_packets_total", |i| {
        i.tx_packets.total as f64
    }),
    ("nettune_pod_tc_drops_total", |i| i.tc_drops.total as f64),
];

/// The `pod` label of workloads summed beyond `agent.max_pod_series`.
pub const OTHER: &str = "_other";

/// Metric families under construction, in declaration order.
struct Families {
    families: Vec<MetricFamily>,
    index: HashMap<&'static str, usize>,
}

impl Families {
    fn new() -> Self {
        let families = METRICS
            .iter()
            .map(|m| {
                let mut family = MetricFamily::default();
                family.set_name(m.name.to_owned());
                family.set_help(m.help.to_owned());
                family.set_field_type(m.kind);
                family
            })
            .collect();
        let index = METRICS
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name, i))
            .collect();
        Self { families, index }
    }

    /// Adds one series of `name` with the declared labels set to `values`.
    fn add(&mut self, name: &str, values: &[&str], value: f64) {
        let Some(&at) = self.index.get(name) else {
            debug_assert!(false, "undeclared metric {name}");
            return;
        };
        let def = &METRICS[at];
        debug_assert_eq!(def.labels.len(), values.len(), "labels of {name}");
        let mut metric = Metric::default();
        metric.set_label(
            def.labels
                .iter()
                .zip(values)
                .map(|(k, v)| {
                    let mut pair = LabelPair::default();
                    pair.set_name((*k).to_owned());
                    pair.set_value((*v).to_owned());
                    pair
                })
                .collect(),
        );
        if def.kind == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            metric.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            metric.set_gauge(g);
        }
        self.families[at].mut_metric().push(metric);
    }
}

/// Sums of the workloads folded under `_other`.
#[derive(Default)]
struct Folded {
    workloads: usize,
    series: Vec<Option<f64>>,
    drops: BTreeMap<String, f64>,
    interface: Option<Vec<f64>>,
}

impl Folded {
    fn add(&mut self, w: &WorkloadFigures) {
        self.workloads += 1;
        self.series.resize(WORKLOAD_SERIES.len(), None);
        for (sum, (_, get)) in self.series.iter_mut().zip(WORKLOAD_SERIES) {
            if let Some(v) = get(w) {
                *sum = Some(sum.unwrap_or(0.0) + v);
            }
        }
        for (reason, f) in &w.drops_by_reason {
            *self.drops.entry(reason.clone()).or_default() += f.total as f64;
        }
        if let Some(i) = &w.interface {
            let sums = self
                .interface
                .get_or_insert_with(|| vec![0.0; INTERFACE_SERIES.len()]);
            for (sum, (_, get)) in sums.iter_mut().zip(INTERFACE_SERIES) {
                *sum += get(i);
            }
        }
    }

    fn emit(&self, f: &mut Families) {
        if self.workloads == 0 {
            return;
        }
        for ((name, _), value) in WORKLOAD_SERIES.iter().zip(&self.series) {
            if let Some(v) = value {
                f.add(name, &["", OTHER], *v);
            }
        }
        for (reason, v) in &self.drops {
            f.add("nettune_drops_total", &["", OTHER, reason], *v);
        }
        if let Some(sums) = &self.interface {
            for ((name, _), v) in INTERFACE_SERIES.iter().zip(sums) {
                f.add(name, &["", OTHER, OTHER], *v);
            }
        }
    }
}

fn workload_metrics(f: &mut Families, w: &WorkloadFigures) {
    let (ns, pod) = (w.workload.namespace.as_str(), w.workload.pod.as_str());
    for (name, get) in WORKLOAD_SERIES {
        if let Some(v) = get(w) {
            f.add(name, &[ns, pod], v);
        }
    }
    for (reason, fig) in &w.drops_by_reason {
        f.add("nettune_drops_total", &[ns, pod, reason], fig.total as f64);
    }
    if let Some(i) = &w.interface {
        for (name, get) in INTERFACE_SERIES {
            f.add(name, &[ns, pod, i.name.as_str()], get(i));
        }
    }
}

/// The workloads' series: the node and the first `cap` pods by name keep their
/// own, the rest are summed under `pod="_other"`. Returns the namespaces that
/// kept their own series.
fn workloads_metrics(f: &mut Families, snapshot: &Snapshot, cap: usize) -> BTreeSet<u32> {
    let mut folded = Folded::default();
    let mut kept = BTreeSet::new();
    let mut pods = 0;
    for w in &snapshot.workloads {
        let is_node = w.workload.kind == WorkloadKind::Node;
        if is_node || pods < cap {
            pods += usize::from(!is_node);
            kept.insert(w.netns);
            workload_metrics(f, w);
        } else {
            folded.add(w);
        }
    }
    folded.emit(f);
    f.add("nettune_workloads_folded", &[], folded.workloads as f64);
    kept
}

/// One listener series: sums over the sockets that share its labels.
#[derive(Default)]
struct ListenerSums {
    requested: Option<u32>,
    limit: f64,
    queue: f64,
    overflows: f64,
}

/// Per-listener series. Listeners of workloads not in `kept` are summed under
/// `pod="_other"`, and a workload's listeners beyond its busiest
/// [`LISTENERS_PER_WORKLOAD`] under `port="_other"`.
fn listener_metrics(f: &mut Families, snapshot: &Snapshot, kept: &BTreeSet<u32>) {
    let mut by_workload: BTreeMap<u32, Vec<&Listener>> = BTreeMap::new();
    for l in &snapshot.listeners {
        by_workload.entry(l.netns).or_default().push(l);
    }
    let mut series: BTreeMap<[String; 5], ListenerSums> = BTreeMap::new();
    for (netns, mut listeners) in by_workload {
        let owner = snapshot
            .workload(netns)
            .filter(|_| kept.contains(&netns))
            .map(|w| (w.workload.namespace.clone(), w.workload.pod.clone()));
        listeners.sort_by(|a, b| {
            b.overflows
                .total
                .cmp(&a.overflows.total)
                .then(b.queue.cmp(&a.queue))
                .then(a.port.cmp(&b.port))
        });
        let mut own: BTreeSet<[String; 5]> = BTreeSet::new();
        for l in listeners {
            let key = match &owner {
                Some((ns, pod)) => {
                    let key = [
                        ns.clone(),
                        pod.clone(),
                        l.address.to_string(),
                        l.port.to_string(),
                        l.process.clone().unwrap_or_default(),
                    ];
                    if own.contains(&key) || own.len() < LISTENERS_PER_WORKLOAD {
                        own.insert(key.clone());
                        key
                    } else {
                        [
                            ns.clone(),
                            pod.clone(),
                            String::new(),
                            OTHER.into(),
                            String::new(),
                        ]
                    }
                }
                None => [
                    String::new(),
                    OTHER.into(),
                    String::new(),
                    OTHER.into(),
                    String::new(),
                ],
            };
            let folded = key[3] == OTHER;
            let sums = series.entry(key).or_default();
            sums.limit += f64::from(l.limit);
            sums.queue += f64::from(l.queue);
            sums.overflows += l.overflows.total as f64;
            if !folded {
                sums.requested = sums.requested.max(l.requested_backlog);
            }
        }
    }
    for (labels, sums) in &series {
        let labels = labels.each_ref().map(String::as_str);
        if let Some(r) = sums.requested {
            f.add("nettune_listen_backlog_requested", &labels, f64::from(r));
        }
        f.add("nettune_listen_backlog_limit", &labels, sums.limit);
        f.add("nettune_listen_queue_length", &labels, sums.queue);
        f.add(
            "nettune_listen_socket_overflows_total",
            &labels,
            sums.overflows,
        );
    }
}

fn tuning_metrics(f: &mut Families, mode: Mode, tuning: &TuningState) {
    for m in Mode::ALL {
        f.add(
            "nettune_tuning_mode",
            &[m.name()],
            if m == mode { 1.0 } else { 0.0 },
        );
    }
    for c in &tuning.counts {
        f.add(
            "nettune_tuning_decisions_total",
            &[&c.sysctl, &c.action, &c.result],
            c.count as f64,
        );
    }
    for c in &tuning.effect_counts {
        f.add(
            "nettune_tuning_effect_total",
            &[&c.sysctl, &c.verdict],
            c.count as f64,
        );
    }
    for m in &tuning.managed {
        let target = match &m.target {
            Target::Node => "node",
            Target::Netns { label, .. } => label.as_str(),
        };
        let labels = [m.sysctl.as_str(), target];
        if let Some(v) = m.current_room {
            f.add("nettune_sysctl_value", &labels, v as f64);
        }
        if let Some(v) = m.original_room {
            f.add("nettune_sysctl_original_value", &labels, v as f64);
        }
        f.add("nettune_sysctl_ceiling", &labels, m.ceiling as f64);
        f.add(
            "nettune_tuning_stood_down",
            &labels,
            if m.stood_down { 1.0 } else { 0.0 },
        );
    }
}

/// Every family of `published`, with at most `max_pod_series` pods keeping their
/// own series.
fn families(published: &Published, max_pod_series: usize) -> Vec<MetricFamily> {
    let snapshot = &published.snapshot;
    let mut f = Families::new();
    f.add(
        "nettune_build_info",
        &[&snapshot.agent_version, &snapshot.kernel],
        1.0,
    );
    for s in &snapshot.probes.signals {
        if let Some(v) = s.attached {
            f.add("nettune_probe_attached", &[&s.signal, v.name()], 1.0);
        }
        for k in &s.skipped {
            f.add(
                "nettune_probe_attached",
                &[&s.signal, k.variant.name()],
                0.0,
            );
        }
    }
    for (error, n) in &snapshot.probe_errors {
        f.add("nettune_probe_errors_total", &[error], *n as f64);
    }
    let lost = snapshot.lost_events;
    f.add(
        "nettune_events_lost_total",
        &["ring_full"],
        lost.ring_full as f64,
    );
    f.add(
        "nettune_events_lost_total",
        &["rate_limited"],
        lost.rate_limited as f64,
    );
    f.add(
        "nettune_collection_duration_seconds",
        &[],
        snapshot.collection_seconds,
    );
    f.add("nettune_workloads", &[], snapshot.workloads.len() as f64);
    for source in &snapshot.identity_sources {
        f.add(
            "nettune_identity_source",
            &[&source.source],
            if source.up { 1.0 } else { 0.0 },
        );
    }
    if let Some(max) = snapshot.conntrack_max {
        f.add("nettune_conntrack_limit", &[], max as f64);
    }
    for (reason, fig) in &snapshot.unattributed_drops {
        f.add(
            "nettune_unattributed_drops_total",
            &[reason],
            fig.total as f64,
        );
    }
    let kept = workloads_metrics(&mut f, snapshot, max_pod_series);
    listener_metrics(&mut f, snapshot, &kept);
    f.add(
        "nettune_event_collections_suppressed_total",
        &[],
        published.event_collections_suppressed as f64,
    );
    let received = published.events_received;
    for (kind, n) in [
        ("netfilter_drop", received.netfilter_drop),
        ("listen_overflow", received.listen_overflow),
        ("other", received.other),
    ] {
        f.add("nettune_events_received_total", &[kind], n as f64);
    }
    if let Some(tuning) = &published.tuning {
        tuning_metrics(&mut f, snapshot.mode, tuning);
    }
    f.families
}

/// The collector: the latest published Snapshot as metric families.
struct SnapshotMetrics {
    descs: Vec<Desc>,
    max_pod_series: usize,
    latest: Mutex<Option<Arc<Published>>>,
}

impl Collector for SnapshotMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let latest = self
            .latest
            .lock()
            .map(|l| l.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        latest.map_or_else(Vec::new, |p| families(&p, self.max_pod_series))
    }
}

/// Lets the registry own a handle while the exporter keeps one to publish into.
struct Registered(Arc<SnapshotMetrics>);

impl Collector for Registered {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

/// The registry with nettune's collector in it.
pub struct Exporter {
    registry: Registry,
    metrics: Arc<SnapshotMetrics>,
}

impl Exporter {
    /// An exporter that keeps at most `max_pod_series` pods' own series.
    ///
    /// # Panics
    /// If [`METRICS`] holds a name or label Prometheus rejects (a test renders
    /// every metric, so this cannot ship).
    pub fn new(max_pod_series: usize) -> Self {
        let descs = METRICS
            .iter()
            .map(|m| {
                Desc::new(
                    m.name.to_owned(),
                    m.help.to_owned(),
                    m.labels.iter().map(|l| (*l).to_owned()).collect(),
                    HashMap::new(),
                )
                .unwrap_or_else(|e| panic!("metric {}: {e}", m.name))
            })
            .collect();
        let metrics = Arc::new(SnapshotMetrics {
            descs,
            max_pod_series,
            latest: Mutex::new(None),
        });
        let registry = Registry::new();
        registry
            .register(Box::new(Registered(metrics.clone())))
            .unwrap_or_else(|e| panic!("registering nettune's metrics: {e}"));
        Self { registry, metrics }
    }

    /// The Prometheus text exposition of `published`.
    pub fn render(&self, published: Arc<Published>) -> Bytes {
        match self.metrics.latest.lock() {
            Ok(mut l) => *l = Some(published),
            Err(e) => *e.into_inner() = Some(published),
        }
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return Bytes::from(format!("# encoding failed: {e}\n"));
        }
        Bytes::from(buf)
    }
}

#[cfg(test)]
mod tests;
