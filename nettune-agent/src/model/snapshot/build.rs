//! [`Snapshot::build`]: two Samples and a [`Context`] turned into figures, with no I/O.

use std::collections::BTreeMap;

use crate::model::{
    conversations::{self, ConversationFigures},
    counter::CounterRate,
    drop_reasons::DropReasons,
    probes::Report,
    sample::{ConntrackCounters, InterfaceSample, ListenerSample, NetFiles, NetnsSample, Sample},
    tuning::Mode,
    workload::{IdentitySource, Workload, WorkloadKind},
};

use super::{
    ConntrackFigures, InterfaceFigures, Listener, SNAPSHOT_VERSION, Snapshot, Totals,
    WorkloadFigures,
};

/// What the Snapshot needs besides the Samples.
pub struct Context<'a> {
    /// When the Sample was taken, in Unix seconds.
    pub taken_at_unix_seconds: f64,
    /// The node's name.
    pub node: &'a str,
    /// The kernel release.
    pub kernel: &'a str,
    /// The tuner's mode.
    pub mode: Mode,
    /// Seconds since the agent started.
    pub uptime_seconds: f64,
    /// How long reading the kernel took.
    pub collection_seconds: f64,
    /// What the probes attached.
    pub report: &'a Report,
    /// This kernel's drop reason names.
    pub reasons: &'a DropReasons,
    /// Whether the sources of pod names answer.
    pub identity_sources: &'a [IdentitySource],
}

/// Drops of a namespace: the total and by reason name.
fn drop_figures(
    now: &NetnsSample,
    before: Option<&NetnsSample>,
    elapsed: f64,
    reasons: &DropReasons,
) -> (CounterRate, BTreeMap<String, CounterRate>) {
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
            (reasons.name(*r), CounterRate::new(*n, prev, elapsed))
        })
        .collect();
    let total = now_by.values().sum();
    let prev_total = before_by.map(|b| b.values().sum());
    (CounterRate::new(total, prev_total, elapsed), named)
}

/// The pod's view of its host-side interface.
fn interface_figures(
    now: &InterfaceSample,
    before: Option<&InterfaceSample>,
    elapsed: f64,
) -> InterfaceFigures {
    let rate = |g: fn(&InterfaceSample) -> u64| CounterRate::new(g(now), before.map(g), elapsed);
    // The host side transmits what the pod receives.
    InterfaceFigures {
        name: now.name.clone(),
        rx_bytes: rate(|i| i.counters.tx_bytes),
        tx_bytes: rate(|i| i.counters.rx_bytes),
        rx_packets: rate(|i| i.counters.tx_packets),
        tx_packets: rate(|i| i.counters.rx_packets),
        rx_drops: rate(|i| i.counters.tx_dropped),
        tx_drops: rate(|i| i.counters.rx_dropped),
        errors: rate(|i| i.counters.rx_errors + i.counters.tx_errors),
        tc_drops: rate(|i| i.tc_drops),
    }
}

/// One namespace's figures against its previous Sample.
fn workload_figures(
    inode: u32,
    ns: &NetnsSample,
    prev: Option<&NetnsSample>,
    (interface, conversations): (Option<InterfaceFigures>, Option<ConversationFigures>),
    elapsed: f64,
    reasons: &DropReasons,
) -> WorkloadFigures {
    let (drops, drops_by_reason) = drop_figures(ns, prev, elapsed, reasons);
    let rate = |f: fn(&NetnsSample) -> u64| CounterRate::new(f(ns), prev.map(f), elapsed);
    // The `/proc/net` figures move between two reads of the files, which need
    // not be the last two ticks.
    let (files_before, files_elapsed) = match &ns.files_before {
        Some((files, seconds)) => (Some(*files), *seconds),
        None => (prev.map(NetnsSample::files), elapsed),
    };
    let files = ns.files();
    let file_rate = |f: fn(&NetFiles) -> u64| {
        CounterRate::new(f(&files), files_before.as_ref().map(f), files_elapsed)
    };
    let conntrack = ns.conntrack.map(|c| {
        let p = files_before.and_then(|f| f.conntrack);
        let rate = |g: fn(&ConntrackCounters) -> u64| {
            CounterRate::new(g(&c), p.as_ref().map(g), files_elapsed)
        };
        ConntrackFigures {
            entries: c.entries,
            insert_failed: rate(|s| s.insert_failed),
            drop: rate(|s| s.drop),
            early_drop: rate(|s| s.early_drop),
            clash_resolve: rate(|s| s.clash_resolve),
            chain_too_long: rate(|s| s.chain_too_long),
        }
    });
    WorkloadFigures {
        netns: inode,
        workload: ns
            .workload
            .clone()
            .unwrap_or_else(|| Workload::departed(inode)),
        process: ns.process.clone(),
        retransmit_segments: rate(|s| s.retransmits.segments),
        retransmits: rate(|s| s.retransmits.retransmits),
        retransmit_failures: rate(|s| s.retransmits.failed),
        out_segments: file_rate(|s| s.out_segs.unwrap_or(0)),
        drops,
        drops_by_reason,
        listen_overflows: file_rate(|s| s.listen.map_or(0, |l| l.overflows)),
        listen_drops: file_rate(|s| s.listen.map_or(0, |l| l.drops)),
        syn_queue_full_drops: file_rate(|s| s.listen.map_or(0, |l| l.syn_queue_full)),
        connect_eaddrnotavail: rate(|s| s.connect_eaddrnotavail),
        conntrack,
        tcp_time_wait: ns.tcp_sockets.map(|t| t.time_wait),
        tcp_in_use: ns.tcp_sockets.map(|t| t.in_use),
        interface,
        conversations,
        netns_sysctls: ns.netns_sysctls,
        folded: false,
    }
}

impl Snapshot {
    /// Builds the Snapshot of `now`, with rates against `before` over `elapsed`
    /// seconds (no rates without `before`).
    pub fn build(now: &Sample, before: Option<&Sample>, elapsed: f64, ctx: &Context<'_>) -> Self {
        let mut workloads = Vec::new();
        let mut unattributed = BTreeMap::new();
        let interface_of: BTreeMap<u32, (u32, &InterfaceSample)> = now
            .interfaces
            .iter()
            .filter_map(|(ifindex, i)| Some((i.peer_netns?, (*ifindex, i))))
            .collect();
        for (inode, ns) in &now.netns {
            let prev = before.and_then(|b| b.netns.get(inode));
            if *inode == 0 {
                unattributed = drop_figures(ns, prev, elapsed, ctx.reasons).1;
                continue;
            }
            let interface = interface_of
                .get(inode)
                .map_or((None, None), |(ifindex, iface)| {
                    let prev_iface = before.and_then(|b| b.interfaces.get(ifindex));
                    (
                        Some(interface_figures(iface, prev_iface, elapsed)),
                        ConversationFigures::of(iface, prev_iface, elapsed),
                    )
                });
            workloads.push(workload_figures(
                *inode,
                ns,
                prev,
                interface,
                elapsed,
                ctx.reasons,
            ));
        }
        workloads.sort_by(|a, b| a.workload.cmp(&b.workload).then(a.netns.cmp(&b.netns)));
        let listeners = now
            .listeners
            .iter()
            .map(|l| {
                let same = |p: &&ListenerSample| p.netns == l.netns && p.inode == l.inode;
                let before = before
                    .and_then(|b| b.listeners.iter().find(same))
                    .map(|p| p.overflows);
                Listener {
                    netns: l.netns,
                    address: l.address,
                    port: l.port,
                    inode: l.inode,
                    process: l.process.clone(),
                    requested_backlog: l.requested,
                    capped_by_somaxconn: l.capped_by,
                    limit: l.limit,
                    queue: l.queue,
                    overflows: CounterRate::new(l.overflows, before, elapsed),
                    attribution: l.attribution,
                }
            })
            .collect();
        Self {
            version: SNAPSHOT_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            node: ctx.node.to_owned(),
            kernel: ctx.kernel.to_owned(),
            mode: ctx.mode,
            taken_at_unix_seconds: ctx.taken_at_unix_seconds,
            uptime_seconds: ctx.uptime_seconds,
            elapsed_seconds: elapsed,
            collection_seconds: ctx.collection_seconds,
            conntrack_max: now.conntrack_max,
            softnet_dropped: now
                .softnet_dropped
                .map(|n| CounterRate::new(n, before.and_then(|b| b.softnet_dropped), elapsed)),
            totals: totals(&workloads, &unattributed),
            workloads,
            workloads_folded: 0,
            listeners,
            unattributed_drops: unattributed,
            dns_servers: conversations::dns_servers(
                &now.dns_servers,
                before.map(|b| &b.dns_servers),
                elapsed,
            ),
            connect_failures: conversations::connect_failures(
                &now.remotes,
                before.map(|b| &b.remotes),
                elapsed,
            ),
            context: None,
            probes: ctx.report.clone(),
            probe_errors: now.probe_errors.clone(),
            lost_events: now.lost_events,
            over_budget: now.over_budget.clone(),
            program_stats: now.program_stats.clone(),
            sysctl_writers: now.sysctl_writers.clone(),
            identity_sources: ctx.identity_sources.to_vec(),
        }
    }

    /// The workload in namespace `netns`, if any.
    pub fn workload(&self, netns: u32) -> Option<&WorkloadFigures> {
        self.workloads.iter().find(|w| w.netns == netns)
    }
}

fn totals(workloads: &[WorkloadFigures], unattributed: &BTreeMap<String, CounterRate>) -> Totals {
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
            .find(|w| w.workload.kind == WorkloadKind::Node)
            .and_then(|w| w.conntrack.as_ref().map(|c| c.entries)),
        dns_queries_per_second: sum(|w| {
            w.conversations
                .as_ref()
                .map_or(0.0, |c| c.dns.queries.per_second)
        }),
        dns_unanswered_per_second: sum(|w| {
            w.conversations
                .as_ref()
                .map_or(0.0, |c| c.dns.unanswered.per_second)
        }),
        connect_failures_per_second: sum(|w| {
            w.conversations.as_ref().map_or(0.0, |c| {
                c.connects.refused.per_second + c.connects.timed_out.per_second
            })
        }),
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
        softnet_dropped: None,
        totals: Totals::default(),
        workloads,
        workloads_folded: 0,
        listeners: Vec::new(),
        unattributed_drops: BTreeMap::new(),
        dns_servers: Vec::new(),
        connect_failures: Vec::new(),
        context: None,
        probes: Report::default(),
        probe_errors: BTreeMap::new(),
        lost_events: crate::model::sample::LostEvents::default(),
        over_budget: BTreeMap::new(),
        program_stats: BTreeMap::new(),
        sysctl_writers: Vec::new(),
        identity_sources: Vec::new(),
    }
}
