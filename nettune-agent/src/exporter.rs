//! Prometheus metrics, rendered from the latest [`Snapshot`] at each scrape.
//!
//! Rendering from the Snapshot (rather than keeping long-lived metric objects)
//! makes the series of a departed pod disappear on the first scrape after it goes:
//! nothing has to remember to delete them. Counters are the kernel's own
//! cumulative counts, so they only go up while a workload exists.
//!
//! Every metric is declared once in [`METRICS`] (name, type, labels, help); the
//! README's metric list is that table, and a test checks that rendering uses no
//! name outside it.

use std::collections::HashMap;

use prometheus::{
    Encoder as _, TextEncoder,
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

use crate::snapshot::{Figure, Snapshot, WorkloadFigures};

/// Name, type, labels and help of every metric nettune exports.
pub const METRICS: &[(&str, &str, &str, &str)] = &[
    (
        "nettune_build_info",
        "gauge",
        "version, kernel",
        "Always 1; labels name the agent version and the running kernel.",
    ),
    (
        "nettune_probe_attached",
        "gauge",
        "signal, variant",
        "1 for the variant attached for a signal, 0 for variants tried and skipped.",
    ),
    (
        "nettune_probe_errors_total",
        "counter",
        "error",
        "Errors the eBPF programs met (failed kernel reads, full maps).",
    ),
    (
        "nettune_events_lost_total",
        "counter",
        "cause",
        "Urgent events not delivered: ring buffer full, or rate-limited in the kernel.",
    ),
    (
        "nettune_collection_duration_seconds",
        "gauge",
        "",
        "Time the last collection took.",
    ),
    (
        "nettune_workloads",
        "gauge",
        "",
        "Network namespaces tracked.",
    ),
    (
        "nettune_workloads_folded",
        "gauge",
        "",
        "Workloads beyond agent.max_pod_series, summed under pod=\"_other\".",
    ),
    (
        "nettune_conntrack_limit",
        "gauge",
        "",
        "net.netfilter.nf_conntrack_max.",
    ),
    (
        "nettune_unattributed_drops_total",
        "counter",
        "reason",
        "Dropped packets that could not be attributed to a namespace.",
    ),
    (
        "nettune_tcp_retransmit_segments_total",
        "counter",
        "namespace, pod",
        "TCP segments retransmitted (RetransSegs).",
    ),
    (
        "nettune_tcp_retransmits_total",
        "counter",
        "namespace, pod",
        "Retransmitted TCP skbs.",
    ),
    (
        "nettune_tcp_retransmit_failures_total",
        "counter",
        "namespace, pod",
        "Retransmit attempts the kernel reported as failed.",
    ),
    (
        "nettune_tcp_out_segments_total",
        "counter",
        "namespace, pod",
        "TCP segments sent (OutSegs): the denominator of the retransmission rate.",
    ),
    (
        "nettune_drops_total",
        "counter",
        "namespace, pod, reason",
        "Packets dropped by the kernel, by drop reason (enum skb_drop_reason).",
    ),
    (
        "nettune_listen_overflows_total",
        "counter",
        "namespace, pod",
        "Connections refused because an accept queue was full (ListenOverflows).",
    ),
    (
        "nettune_listen_drops_total",
        "counter",
        "namespace, pod",
        "SYNs and handshakes dropped by listeners (ListenDrops).",
    ),
    (
        "nettune_syn_queue_full_drops_total",
        "counter",
        "namespace, pod",
        "SYNs dropped because the SYN queue was full (TCPReqQFullDrop).",
    ),
    (
        "nettune_connect_eaddrnotavail_total",
        "counter",
        "namespace, pod",
        "connect() calls that failed for lack of an ephemeral port.",
    ),
    (
        "nettune_conntrack_entries",
        "gauge",
        "namespace, pod",
        "Connections tracked in the namespace's conntrack table.",
    ),
    (
        "nettune_conntrack_insert_failed_total",
        "counter",
        "namespace, pod",
        "Conntrack insertions that failed.",
    ),
    (
        "nettune_conntrack_drops_total",
        "counter",
        "namespace, pod",
        "Packets dropped because the conntrack table was full.",
    ),
    (
        "nettune_conntrack_early_drops_total",
        "counter",
        "namespace, pod",
        "Entries evicted early to make room.",
    ),
    (
        "nettune_tcp_time_wait_sockets",
        "gauge",
        "namespace, pod",
        "TCP sockets in TIME_WAIT.",
    ),
    (
        "nettune_pod_receive_bytes_total",
        "counter",
        "namespace, pod, interface",
        "Bytes the pod received through its veth.",
    ),
    (
        "nettune_pod_transmit_bytes_total",
        "counter",
        "namespace, pod, interface",
        "Bytes the pod sent through its veth.",
    ),
    (
        "nettune_pod_receive_packets_total",
        "counter",
        "namespace, pod, interface",
        "Packets the pod received through its veth.",
    ),
    (
        "nettune_pod_transmit_packets_total",
        "counter",
        "namespace, pod, interface",
        "Packets the pod sent through its veth.",
    ),
    (
        "nettune_pod_tc_drops_total",
        "counter",
        "namespace, pod, interface",
        "Packets dropped by tc on the pod's host-side interface.",
    ),
    (
        "nettune_listen_socket_overflows_total",
        "counter",
        "namespace, pod, port",
        "Accept-queue overflows per listening socket (fentry/kprobe variants only).",
    ),
    (
        "nettune_tuning_mode",
        "gauge",
        "mode",
        "1 for the tuner's mode (observe, advise, enforce).",
    ),
    (
        "nettune_tuning_decisions_total",
        "counter",
        "sysctl, action, result",
        "Tuning decisions by outcome: applied, advised, refused (a guardrail), stood_down, failed.",
    ),
    (
        "nettune_sysctl_value",
        "gauge",
        "sysctl, target",
        "Current value of a sysctl nettune manages (port ranges: their width; buffer triples: the maximum).",
    ),
    (
        "nettune_sysctl_original_value",
        "gauge",
        "sysctl, target",
        "The value found before nettune first changed it (what rollback restores).",
    ),
    (
        "nettune_sysctl_ceiling",
        "gauge",
        "sysctl, target",
        "The most nettune will raise the sysctl to.",
    ),
    (
        "nettune_tuning_stood_down",
        "gauge",
        "sysctl, target",
        "1 when someone else changed a managed value and nettune stopped managing it.",
    ),
];

/// Metric families under construction, in declaration order.
#[derive(Default)]
struct Families {
    families: Vec<MetricFamily>,
    index: HashMap<&'static str, usize>,
}

impl Families {
    fn add(&mut self, name: &'static str, labels: &[(&str, &str)], value: f64) {
        let at = *self.index.entry(name).or_insert_with(|| {
            let (_, kind, _, help) = METRICS
                .iter()
                .find(|m| m.0 == name)
                .copied()
                .unwrap_or((name, "gauge", "", ""));
            let mut family = MetricFamily::default();
            family.set_name(name.to_owned());
            family.set_help(help.to_owned());
            family.set_field_type(if kind == "counter" {
                MetricType::COUNTER
            } else {
                MetricType::GAUGE
            });
            self.families.push(family);
            self.families.len() - 1
        });
        let family = &mut self.families[at];
        let mut metric = Metric::default();
        metric.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut pair = LabelPair::default();
                    pair.set_name((*k).to_owned());
                    pair.set_value((*v).to_owned());
                    pair
                })
                .collect(),
        );
        if family.get_field_type() == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            metric.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            metric.set_gauge(g);
        }
        family.mut_metric().push(metric);
    }
}

/// Sums `b` into `a` (for workloads folded under `_other`).
fn fold_into(a: &mut WorkloadFigures, b: &WorkloadFigures) {
    let add = |x: &mut Figure, y: &Figure| x.total += y.total;
    add(&mut a.retransmit_segments, &b.retransmit_segments);
    add(&mut a.retransmits, &b.retransmits);
    add(&mut a.retransmit_failures, &b.retransmit_failures);
    add(&mut a.listen_overflows, &b.listen_overflows);
    add(&mut a.listen_drops, &b.listen_drops);
    add(&mut a.syn_queue_full_drops, &b.syn_queue_full_drops);
    add(&mut a.connect_eaddrnotavail, &b.connect_eaddrnotavail);
    for (reason, f) in &b.drops_by_reason {
        a.drops_by_reason.entry(reason.clone()).or_default().total += f.total;
    }
}

/// The workloads to export: the first `cap` pods by name keep their own series,
/// the rest are summed into one `_other` workload. Returns (workloads, folded).
fn capped(snapshot: &Snapshot, cap: usize) -> (Vec<WorkloadFigures>, usize) {
    let mut out: Vec<WorkloadFigures> = Vec::new();
    let mut other: Option<WorkloadFigures> = None;
    let mut folded = 0;
    let mut pods = 0;
    for w in &snapshot.workloads {
        let is_node = w.workload.kind == crate::identity::Kind::Node;
        if is_node || pods < cap {
            pods += usize::from(!is_node);
            out.push(w.clone());
            continue;
        }
        folded += 1;
        match &mut other {
            Some(o) => fold_into(o, w),
            None => {
                let mut o = w.clone();
                o.workload.pod = "_other".into();
                o.workload.namespace = String::new();
                o.conntrack = None;
                o.tcp_time_wait = None;
                o.interface = None;
                other = Some(o);
            }
        }
    }
    out.extend(other);
    (out, folded)
}

fn workload_metrics(f: &mut Families, w: &WorkloadFigures) {
    let ns = w.workload.namespace.as_str();
    let pod = w.workload.pod.as_str();
    let labels = [("namespace", ns), ("pod", pod)];
    let counter = |f: &mut Families, name, fig: &Figure| f.add(name, &labels, fig.total as f64);
    counter(
        f,
        "nettune_tcp_retransmit_segments_total",
        &w.retransmit_segments,
    );
    counter(f, "nettune_tcp_retransmits_total", &w.retransmits);
    counter(
        f,
        "nettune_tcp_retransmit_failures_total",
        &w.retransmit_failures,
    );
    counter(f, "nettune_tcp_out_segments_total", &w.out_segments);
    for (reason, fig) in &w.drops_by_reason {
        f.add(
            "nettune_drops_total",
            &[("namespace", ns), ("pod", pod), ("reason", reason)],
            fig.total as f64,
        );
    }
    counter(f, "nettune_listen_overflows_total", &w.listen_overflows);
    counter(f, "nettune_listen_drops_total", &w.listen_drops);
    counter(
        f,
        "nettune_syn_queue_full_drops_total",
        &w.syn_queue_full_drops,
    );
    counter(
        f,
        "nettune_connect_eaddrnotavail_total",
        &w.connect_eaddrnotavail,
    );
    if let Some(ct) = &w.conntrack {
        f.add("nettune_conntrack_entries", &labels, ct.entries as f64);
        counter(
            f,
            "nettune_conntrack_insert_failed_total",
            &ct.insert_failed,
        );
        counter(f, "nettune_conntrack_drops_total", &ct.drop);
        counter(f, "nettune_conntrack_early_drops_total", &ct.early_drop);
    }
    if let Some(tw) = w.tcp_time_wait {
        f.add("nettune_tcp_time_wait_sockets", &labels, tw as f64);
    }
    if let Some(i) = &w.interface {
        let l = [
            ("namespace", ns),
            ("pod", pod),
            ("interface", i.name.as_str()),
        ];
        for (name, fig) in [
            ("nettune_pod_receive_bytes_total", &i.rx_bytes),
            ("nettune_pod_transmit_bytes_total", &i.tx_bytes),
            ("nettune_pod_receive_packets_total", &i.rx_packets),
            ("nettune_pod_transmit_packets_total", &i.tx_packets),
            ("nettune_pod_tc_drops_total", &i.tc_drops),
        ] {
            f.add(name, &l, fig.total as f64);
        }
    }
}

fn tuning_metrics(
    f: &mut Families,
    snapshot: &Snapshot,
    tuning: &crate::tuning::tuner::TuningState,
) {
    use crate::{sysctl, tuning::value};
    for mode in ["observe", "advise", "enforce"] {
        let on = serde_json::to_value(snapshot.mode)
            .ok()
            .and_then(|v| v.as_str().map(|m| m == mode));
        f.add(
            "nettune_tuning_mode",
            &[("mode", mode)],
            if on == Some(true) { 1.0 } else { 0.0 },
        );
    }
    for c in &tuning.counts {
        f.add(
            "nettune_tuning_decisions_total",
            &[
                ("sysctl", &c.sysctl),
                ("action", &c.action),
                ("result", &c.result),
            ],
            c.count as f64,
        );
    }
    for m in &tuning.managed {
        let Ok(spec) = sysctl::lookup(&m.sysctl) else {
            continue;
        };
        let target = match &m.target {
            crate::tuning::io::Target::Node => "node".to_owned(),
            crate::tuning::io::Target::Netns { label, .. } => label.clone(),
        };
        let labels = [("sysctl", m.sysctl.as_str()), ("target", target.as_str())];
        let strength =
            |text: &str| value::Value::parse(spec, text).map(|v| value::strength(spec, &v) as f64);
        if let Some(Ok(v)) = m.current.as_deref().map(strength) {
            f.add("nettune_sysctl_value", &labels, v);
        }
        if let Ok(v) = strength(&m.original) {
            f.add("nettune_sysctl_original_value", &labels, v);
        }
        f.add("nettune_sysctl_ceiling", &labels, m.ceiling as f64);
        f.add(
            "nettune_tuning_stood_down",
            &labels,
            if m.stood_down { 1.0 } else { 0.0 },
        );
    }
}

/// The Prometheus text exposition of `snapshot`, with at most `max_pod_series`
/// pods keeping their own series.
pub fn render(snapshot: &Snapshot, max_pod_series: usize) -> String {
    let mut f = Families::default();
    f.add(
        "nettune_build_info",
        &[
            ("version", snapshot.agent_version.as_str()),
            ("kernel", &snapshot.kernel),
        ],
        1.0,
    );
    for s in &snapshot.probes.signals {
        if let Some(v) = s.attached {
            f.add(
                "nettune_probe_attached",
                &[("signal", s.signal.as_str()), ("variant", &v.to_string())],
                1.0,
            );
        }
        for k in &s.skipped {
            f.add(
                "nettune_probe_attached",
                &[
                    ("signal", s.signal.as_str()),
                    ("variant", &k.variant.to_string()),
                ],
                0.0,
            );
        }
    }
    for (error, n) in &snapshot.probe_errors {
        f.add("nettune_probe_errors_total", &[("error", error)], *n as f64);
    }
    let lost = snapshot.lost_events;
    f.add(
        "nettune_events_lost_total",
        &[("cause", "ring_full")],
        lost.ring_full as f64,
    );
    f.add(
        "nettune_events_lost_total",
        &[("cause", "rate_limited")],
        lost.rate_limited as f64,
    );
    f.add(
        "nettune_collection_duration_seconds",
        &[],
        snapshot.collection_seconds,
    );
    f.add("nettune_workloads", &[], snapshot.workloads.len() as f64);
    if let Some(max) = snapshot.conntrack_max {
        f.add("nettune_conntrack_limit", &[], max as f64);
    }
    for (reason, fig) in &snapshot.unattributed_drops {
        f.add(
            "nettune_unattributed_drops_total",
            &[("reason", reason)],
            fig.total as f64,
        );
    }
    let (workloads, folded) = capped(snapshot, max_pod_series);
    f.add("nettune_workloads_folded", &[], folded as f64);
    for w in &workloads {
        workload_metrics(&mut f, w);
    }
    for l in &snapshot.listeners {
        let owner = snapshot.workloads.iter().find(|w| w.netns == l.netns);
        let (ns, pod) = owner.map_or(("", "unknown"), |w| {
            (w.workload.namespace.as_str(), w.workload.pod.as_str())
        });
        f.add(
            "nettune_listen_socket_overflows_total",
            &[
                ("namespace", ns),
                ("pod", pod),
                ("port", &l.port.to_string()),
            ],
            l.overflows.total as f64,
        );
    }
    if let Some(tuning) = &snapshot.tuning {
        tuning_metrics(&mut f, snapshot, tuning);
    }
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&f.families, &mut buf) {
        return format!("# encoding failed: {e}\n");
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests;
