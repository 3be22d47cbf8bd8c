//! A [`Snapshot`]: two Samples turned into what people read — cumulative totals
//! and per-second rates per workload, with drop reasons named — as plain data that
//! the exporter, the JSON API and the UI share.
//!
//! Rates are `(now - before) / elapsed`, saturating at zero: a counter that went
//! backwards (a reused namespace inode, a map entry evicted) reads as no activity,
//! never as a huge number.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    config::Mode,
    drop_reasons::DropReasons,
    identity::{self, Workload},
    probes::{Report, events::LostEvents},
    procfs::ConntrackStats,
    sample::{NetnsSample, Sample},
};

/// Version of the JSON served at `/api/v1/snapshot`; bumped on breaking changes.
pub const SNAPSHOT_VERSION: u32 = 1;

/// A cumulative counter and its rate over the last interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Figure {
    pub total: u64,
    pub per_second: f64,
}

impl Figure {
    fn new(now: u64, before: Option<u64>, elapsed: f64) -> Self {
        let per_second = match before {
            Some(b) if elapsed > 0.0 => now.saturating_sub(b) as f64 / elapsed,
            _ => 0.0,
        };
        Self {
            total: now,
            per_second,
        }
    }
}

/// Conntrack in one namespace.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct ConntrackFigures {
    pub entries: u64,
    pub insert_failed: Figure,
    pub drop: Figure,
    pub early_drop: Figure,
}

/// Traffic of a pod's interface, from the pod's point of view.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct InterfaceFigures {
    /// Host-side interface name.
    pub name: String,
    pub rx_bytes: Figure,
    pub tx_bytes: Figure,
    pub rx_packets: Figure,
    pub tx_packets: Figure,
    pub tc_drops: Figure,
}

/// Everything about one workload (network namespace).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct WorkloadFigures {
    pub netns: u32,
    #[serde(flatten)]
    pub workload: Workload,
    pub process: Option<String>,
    pub retransmit_segments: Figure,
    pub retransmits: Figure,
    pub retransmit_failures: Figure,
    /// TCP segments sent (`OutSegs`), for the retransmission rate.
    pub out_segments: Figure,
    pub drops: Figure,
    pub drops_by_reason: BTreeMap<String, Figure>,
    pub listen_overflows: Figure,
    pub listen_drops: Figure,
    pub syn_queue_full_drops: Figure,
    pub connect_eaddrnotavail: Figure,
    pub conntrack: Option<ConntrackFigures>,
    pub tcp_time_wait: Option<u64>,
    pub tcp_in_use: Option<u64>,
    pub interface: Option<InterfaceFigures>,
}

impl WorkloadFigures {
    /// `workload` in `netns` with every figure at zero.
    pub fn new(netns: u32, workload: Workload) -> Self {
        Self {
            netns,
            workload,
            process: None,
            retransmit_segments: Figure::default(),
            retransmits: Figure::default(),
            retransmit_failures: Figure::default(),
            out_segments: Figure::default(),
            drops: Figure::default(),
            drops_by_reason: BTreeMap::new(),
            listen_overflows: Figure::default(),
            listen_drops: Figure::default(),
            syn_queue_full_drops: Figure::default(),
            connect_eaddrnotavail: Figure::default(),
            conntrack: None,
            tcp_time_wait: None,
            tcp_in_use: None,
            interface: None,
        }
    }

    /// The drop reason with the highest rate (then total), if any drop was seen.
    pub fn top_drop_reason(&self) -> Option<(&str, &Figure)> {
        self.drops_by_reason
            .iter()
            .max_by(|a, b| {
                a.1.per_second
                    .total_cmp(&b.1.per_second)
                    .then(a.1.total.cmp(&b.1.total))
            })
            .map(|(name, f)| (name.as_str(), f))
    }
}

/// A listening socket whose accept queue overflowed (fentry/kprobe variants).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Listener {
    pub netns: u32,
    pub port: u16,
    pub overflows: Figure,
    pub backlog: u32,
    pub max_backlog: u32,
}

/// Node-wide rates, for the header of the UI and for the tuner.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Totals {
    pub retransmit_segments_per_second: f64,
    pub drops_per_second: f64,
    pub listen_overflows_per_second: f64,
    pub syn_queue_full_drops_per_second: f64,
    /// `CPU_BACKLOG` drops: the per-CPU input queue (netdev_max_backlog) was full.
    pub backlog_drops_per_second: f64,
    /// `SOCKET_RCVBUFF` drops: a socket's receive buffer was full.
    pub receive_buffer_drops_per_second: f64,
    pub connect_eaddrnotavail_per_second: f64,
    /// The node's (host namespace's) conntrack table.
    pub conntrack_entries: Option<u64>,
}

/// One tick, ready to show.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub agent_version: String,
    pub node: String,
    pub kernel: String,
    pub mode: Mode,
    pub taken_at_unix_seconds: f64,
    pub uptime_seconds: f64,
    /// Seconds between the two samples the rates come from.
    pub elapsed_seconds: f64,
    /// How long reading the kernel took.
    pub collection_seconds: f64,
    pub conntrack_max: Option<u64>,
    pub totals: Totals,
    pub workloads: Vec<WorkloadFigures>,
    pub listeners: Vec<Listener>,
    /// Drops the kernel side could not attribute to a namespace, by reason.
    pub unattributed_drops: BTreeMap<String, Figure>,
    pub probes: Report,
    pub probe_errors: BTreeMap<String, u64>,
    pub lost_events: LostEvents,
    /// The tuner's decisions and managed values (absent in observe mode).
    pub tuning: Option<crate::tuning::tuner::TuningState>,
}

/// What the Snapshot needs besides the Samples.
pub struct Context<'a> {
    pub node: &'a str,
    pub kernel: &'a str,
    pub mode: Mode,
    pub uptime_seconds: f64,
    pub collection_seconds: f64,
    pub report: &'a Report,
    pub reasons: &'a DropReasons,
    /// Host-side interface ifindex → the namespace of its peer (the pod).
    pub peers: &'a BTreeMap<u32, u32>,
}

fn drop_figures(
    now: &NetnsSample,
    before: Option<&NetnsSample>,
    elapsed: f64,
    reasons: &DropReasons,
) -> (Figure, BTreeMap<String, Figure>) {
    let by_reason = |s: &NetnsSample| {
        let mut out: BTreeMap<u32, u64> = BTreeMap::new();
        for ((_, reason), n) in &s.drops {
            *out.entry(*reason).or_default() += n;
        }
        out
    };
    let now_by = by_reason(now);
    let before_by = before.map(by_reason);
    let named = now_by
        .iter()
        .map(|(r, n)| {
            let prev = before_by.as_ref().map(|b| b.get(r).copied().unwrap_or(0));
            (reasons.name(*r), Figure::new(*n, prev, elapsed))
        })
        .collect();
    let total = now_by.values().sum();
    let prev_total = before_by.map(|b| b.values().sum());
    (Figure::new(total, prev_total, elapsed), named)
}

impl Snapshot {
    /// Builds the Snapshot of `now`, with rates against `before` over `elapsed`
    /// seconds (no rates without `before`).
    pub fn build(now: &Sample, before: Option<&Sample>, elapsed: f64, ctx: &Context<'_>) -> Self {
        let mut workloads = Vec::new();
        let mut unattributed = BTreeMap::new();
        let by_peer: BTreeMap<u32, u32> = ctx.peers.iter().map(|(i, ns)| (*ns, *i)).collect();
        for (inode, ns) in &now.netns {
            let prev = before.and_then(|b| b.netns.get(inode));
            let (drops, drops_by_reason) = drop_figures(ns, prev, elapsed, ctx.reasons);
            if *inode == 0 {
                unattributed = drops_by_reason;
                continue;
            }
            let fig = |f: &dyn Fn(&NetnsSample) -> u64| Figure::new(f(ns), prev.map(f), elapsed);
            let listen = |f: fn(&crate::sample::ListenCounters) -> u64| {
                move |s: &NetnsSample| s.listen.as_ref().map_or(0, f)
            };
            let conntrack = ns.conntrack.map(|c| {
                let p = prev.and_then(|p| p.conntrack);
                let f =
                    |g: fn(&ConntrackStats) -> u64| Figure::new(g(&c), p.as_ref().map(g), elapsed);
                ConntrackFigures {
                    entries: c.entries,
                    insert_failed: f(|s| s.insert_failed),
                    drop: f(|s| s.drop),
                    early_drop: f(|s| s.early_drop),
                }
            });
            let interface = by_peer.get(inode).and_then(|ifindex| {
                let iface = now.interfaces.get(ifindex)?;
                let p = before.and_then(|b| b.interfaces.get(ifindex));
                let f = |g: fn(&crate::sample::InterfaceSample) -> u64| {
                    Figure::new(g(iface), p.map(g), elapsed)
                };
                // The host side's egress is what the pod receives.
                Some(InterfaceFigures {
                    name: iface.name.clone(),
                    rx_bytes: f(|i| i.traffic.egress_bytes),
                    tx_bytes: f(|i| i.traffic.ingress_bytes),
                    rx_packets: f(|i| i.traffic.egress_packets),
                    tx_packets: f(|i| i.traffic.ingress_packets),
                    tc_drops: f(|i| i.tc_drops),
                })
            });
            workloads.push(WorkloadFigures {
                netns: *inode,
                workload: ns
                    .namespace
                    .as_ref()
                    .map_or_else(|| identity::departed(*inode), identity::identify),
                process: ns.namespace.as_ref().and_then(|n| n.process.clone()),
                retransmit_segments: fig(&|s| s.retransmits.segments),
                retransmits: fig(&|s| s.retransmits.retransmits),
                retransmit_failures: fig(&|s| s.retransmits.failed),
                out_segments: fig(&|s| s.out_segs.unwrap_or(0)),

                drops,
                drops_by_reason,
                listen_overflows: fig(&listen(|l| l.overflows)),
                listen_drops: fig(&listen(|l| l.drops)),
                syn_queue_full_drops: fig(&listen(|l| l.syn_queue_full)),
                connect_eaddrnotavail: fig(&|s| s.connect_eaddrnotavail),
                conntrack,
                tcp_time_wait: ns.tcp_sockets.map(|t| t.time_wait),
                tcp_in_use: ns.tcp_sockets.map(|t| t.inuse),
                interface,
            });
        }
        workloads.sort_by(|a, b| a.workload.cmp(&b.workload).then(a.netns.cmp(&b.netns)));
        let listeners = now
            .listeners
            .iter()
            .map(|(k, v)| Listener {
                netns: k.netns,
                port: k.port,
                overflows: Figure::new(
                    v.overflows,
                    before.and_then(|b| b.listeners.get(k)).map(|p| p.overflows),
                    elapsed,
                ),
                backlog: v.backlog,
                max_backlog: v.max_backlog,
            })
            .collect();
        let totals = totals(&workloads, &unattributed);
        Self {
            version: SNAPSHOT_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            node: ctx.node.to_owned(),
            kernel: ctx.kernel.to_owned(),
            mode: ctx.mode,
            taken_at_unix_seconds: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            uptime_seconds: ctx.uptime_seconds,
            elapsed_seconds: elapsed,
            collection_seconds: ctx.collection_seconds,
            conntrack_max: now.conntrack_max,
            totals,
            workloads,
            listeners,
            unattributed_drops: unattributed,
            probes: ctx.report.clone(),
            probe_errors: now
                .probe_errors
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            lost_events: now.lost_events,
            tuning: None,
        }
    }
}

fn totals(workloads: &[WorkloadFigures], unattributed: &BTreeMap<String, Figure>) -> Totals {
    // `0.0 +`: an empty f64 sum is -0.0, which would print as "-0".
    let sum = |f: fn(&WorkloadFigures) -> f64| 0.0 + workloads.iter().map(f).sum::<f64>();
    let reason = |name: &str| {
        workloads
            .iter()
            .filter_map(|w| w.drops_by_reason.get(name))
            .chain(unattributed.get(name))
            .map(|f| f.per_second)
            .fold(0.0, |a, b| a + b)
    };

    Totals {
        retransmit_segments_per_second: sum(|w| w.retransmit_segments.per_second),
        drops_per_second: sum(|w| w.drops.per_second)
            + unattributed.values().map(|f| f.per_second).sum::<f64>(),
        listen_overflows_per_second: sum(|w| w.listen_overflows.per_second),
        syn_queue_full_drops_per_second: sum(|w| w.syn_queue_full_drops.per_second),
        backlog_drops_per_second: reason("CPU_BACKLOG"),
        receive_buffer_drops_per_second: reason("SOCKET_RCVBUFF"),
        connect_eaddrnotavail_per_second: sum(|w| w.connect_eaddrnotavail.per_second),
        conntrack_entries: workloads
            .iter()
            .find(|w| w.workload.kind == identity::Kind::Node)
            .and_then(|w| w.conntrack.as_ref().map(|c| c.entries)),
    }
}

/// A Snapshot of `workloads` with everything else empty, for other modules' tests.
#[cfg(test)]
pub(crate) fn for_tests(workloads: Vec<WorkloadFigures>) -> Snapshot {
    Snapshot {
        version: SNAPSHOT_VERSION,
        agent_version: "test".into(),
        node: "n".into(),
        kernel: "k".into(),
        mode: Mode::Enforce,
        taken_at_unix_seconds: 0.0,
        uptime_seconds: 0.0,
        elapsed_seconds: 1.0,
        collection_seconds: 0.0,
        conntrack_max: None,
        totals: Totals::default(),
        workloads,
        listeners: Vec::new(),
        unattributed_drops: BTreeMap::new(),
        probes: Report::default(),
        probe_errors: BTreeMap::new(),
        lost_events: LostEvents::default(),
        tuning: None,
    }
}

#[cfg(test)]
mod tests;
