//! A [`Snapshot`]: two Samples turned into what people read — cumulative totals
//! and per-second rates per workload, with drop reasons named — as plain data that
//! the exporter, the JSON API, the UI and the tuner share.
//!
//! [`Snapshot::build`] is a pure function of two Samples and a [`Context`]: no I/O
//! (the caller reads the clock), so every rate and total is unit-tested from
//! hand-built Samples.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    context::NodeContext,
    conversations::{self, ConversationFigures, DnsServerFigures, RemoteFigures},
    counter::CounterRate,
    drop_reasons::DropReasons,
    probes::Report,
    sample::{
        Attribution, ConntrackCounters, InterfaceSample, ListenerSample, LostEvents, NetFiles,
        NetnsSample, NetnsSysctls, ProgramStats, ReceivedEvents, Sample,
    },
    tuning::{Demotion, Mode, TuningState},
    workload::{IdentitySource, Workload, WorkloadKind},
};

/// Version of the JSON served at `/api/v1/snapshot`; bumped on breaking changes.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Conntrack in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConntrackFigures {
    /// Connections tracked now.
    pub entries: u64,
    /// Insertions that failed.
    pub insert_failed: CounterRate,
    /// Packets dropped because the table was full.
    pub drop: CounterRate,
    /// Entries evicted early to make room.
    pub early_drop: CounterRate,
    /// Insert clashes the kernel resolved (two packets of one new flow raced,
    /// e.g. a pod's A and AAAA queries from one socket).
    #[serde(default)]
    pub clash_resolve: CounterRate,
    /// Lookups that gave up on a too long hash chain.
    #[serde(default)]
    pub chain_too_long: CounterRate,
}

/// Traffic of a pod's interface, from the pod's point of view (the host-side
/// veth's own counters, turned around: what it transmits, the pod receives).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceFigures {
    /// Host-side interface name.
    pub name: String,
    /// Bytes the pod received.
    pub rx_bytes: CounterRate,
    /// Bytes the pod sent.
    pub tx_bytes: CounterRate,
    /// Packets the pod received.
    pub rx_packets: CounterRate,
    /// Packets the pod sent.
    pub tx_packets: CounterRate,
    /// Packets towards the pod the veth dropped (e.g. the pod's side was down
    /// or its backlog full).
    #[serde(default)]
    pub rx_drops: CounterRate,
    /// Packets from the pod the host side dropped.
    #[serde(default)]
    pub tx_drops: CounterRate,
    /// Errors either way.
    #[serde(default)]
    pub errors: CounterRate,
    /// Packets dropped by tc on the host side.
    pub tc_drops: CounterRate,
}

/// Everything about one workload (network namespace).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadFigures {
    /// The namespace inode.
    pub netns: u32,
    /// Who owns the namespace.
    #[serde(flatten)]
    pub workload: Workload,
    /// The command of the lowest pid inside, if any.
    pub process: Option<String>,
    /// TCP segments retransmitted (`RetransSegs`).
    pub retransmit_segments: CounterRate,
    /// Retransmitted TCP skbs.
    pub retransmits: CounterRate,
    /// Retransmit attempts the kernel reported as failed.
    pub retransmit_failures: CounterRate,
    /// TCP segments sent (`OutSegs`), for the retransmission rate.
    pub out_segments: CounterRate,
    /// Packets dropped, every reason.
    pub drops: CounterRate,
    /// Packets dropped, by reason name.
    pub drops_by_reason: BTreeMap<String, CounterRate>,
    /// Accept-queue overflows (`ListenOverflows`).
    pub listen_overflows: CounterRate,
    /// SYNs and handshakes listeners dropped (`ListenDrops`).
    pub listen_drops: CounterRate,
    /// SYNs dropped on a full SYN queue (`TCPReqQFullDrop`).
    pub syn_queue_full_drops: CounterRate,
    /// connect() calls that failed with `EADDRNOTAVAIL`.
    pub connect_eaddrnotavail: CounterRate,
    /// The namespace's conntrack table, where conntrack is loaded.
    pub conntrack: Option<ConntrackFigures>,
    /// TCP sockets in TIME_WAIT.
    pub tcp_time_wait: Option<u64>,
    /// TCP sockets in use.
    pub tcp_in_use: Option<u64>,
    /// The pod's veth, as seen from the host.
    pub interface: Option<InterfaceFigures>,
    /// Its DNS, handshakes, resets and ICMP errors, once the tc programs watch
    /// its veth.
    #[serde(default)]
    pub conversations: Option<ConversationFigures>,
    /// The sysctls bounding its listen queues, when its listeners were looked at.
    pub netns_sysctls: Option<NetnsSysctls>,
    /// Beyond `agent.max_pod_series`: summed under `pod="_other"` in the
    /// metrics and left out of the JSON API (see [`Snapshot::fold`]).
    #[serde(skip)]
    pub folded: bool,
}

impl WorkloadFigures {
    /// `workload` in `netns` with every figure at zero.
    pub fn new(netns: u32, workload: Workload) -> Self {
        Self {
            netns,
            workload,
            process: None,
            retransmit_segments: CounterRate::default(),
            retransmits: CounterRate::default(),
            retransmit_failures: CounterRate::default(),
            out_segments: CounterRate::default(),
            drops: CounterRate::default(),
            drops_by_reason: BTreeMap::new(),
            listen_overflows: CounterRate::default(),
            listen_drops: CounterRate::default(),
            syn_queue_full_drops: CounterRate::default(),
            connect_eaddrnotavail: CounterRate::default(),
            conntrack: None,
            tcp_time_wait: None,
            tcp_in_use: None,
            interface: None,
            conversations: None,
            netns_sysctls: None,
            folded: false,
        }
    }

    /// The drop reason with the highest rate (then total), if any drop was seen.
    pub fn top_drop_reason(&self) -> Option<(&str, &CounterRate)> {
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

/// A listening TCP socket: what the application asked `listen()` for, the
/// limit it got, how full its accept queue is, and its overflows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    /// The listener's namespace inode.
    pub netns: u32,
    /// Local address.
    pub address: std::net::IpAddr,
    /// Local port.
    pub port: u16,
    /// The socket's inode.
    pub inode: u32,
    /// The process that called `listen()`, when seen.
    pub process: Option<String>,
    /// The backlog the application asked for, when known (its limit was below
    /// the somaxconn of the moment it listened).
    pub requested_backlog: Option<u32>,
    /// The somaxconn that capped what it asked for (it asked for at least this),
    /// when nettune saw it listen with its limit at somaxconn.
    #[serde(default)]
    pub capped_by_somaxconn: Option<u32>,
    /// The accept queue's limit (`min(requested, somaxconn)` at `listen()` time).
    pub limit: u32,
    /// Connections waiting to be accepted when last looked at.
    pub queue: u32,
    /// Times a connection found the accept queue full.
    pub overflows: CounterRate,
    /// How `overflows` was counted.
    pub attribution: Attribution,
}

impl Listener {
    /// What it asked `listen()` for, for people: `511`, `≥4096` (somaxconn
    /// capped it), or `None` when unknown.
    pub fn asked(&self) -> Option<String> {
        match (self.requested_backlog, self.capped_by_somaxconn) {
            (Some(r), _) => Some(r.to_string()),
            (None, Some(s)) => Some(format!("≥{s}")),
            (None, None) => None,
        }
    }
}

/// Node-wide rates, for the header of the UI and for the tuner.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Retransmitted segments per second, every namespace.
    pub retransmit_segments_per_second: f64,
    /// Drops per second, every namespace and the unattributed.
    pub drops_per_second: f64,
    /// Accept-queue overflows per second.
    pub listen_overflows_per_second: f64,
    /// SYNs dropped on full SYN queues per second.
    pub syn_queue_full_drops_per_second: f64,
    /// `CPU_BACKLOG` drops: the per-CPU input queue (netdev_max_backlog) was full.
    pub backlog_drops_per_second: f64,
    /// `SOCKET_RCVBUFF` drops: a socket's receive buffer was full.
    pub receive_buffer_drops_per_second: f64,
    /// connect() calls failing with `EADDRNOTAVAIL` per second.
    pub connect_eaddrnotavail_per_second: f64,
    /// The node's (host namespace's) conntrack table.
    pub conntrack_entries: Option<u64>,
    /// DNS queries the pods sent per second.
    #[serde(default)]
    pub dns_queries_per_second: f64,
    /// DNS queries per second that got no response in time.
    #[serde(default)]
    pub dns_unanswered_per_second: f64,
    /// Handshakes per second the pods' peers refused or left unanswered.
    #[serde(default)]
    pub connect_failures_per_second: f64,
}

/// One tick, ready to show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The agent's version.
    pub agent_version: String,
    /// The node's name.
    pub node: String,
    /// The running kernel's release.
    pub kernel: String,
    /// The tuner's mode.
    pub mode: Mode,
    /// When the Sample was taken, in Unix seconds.
    pub taken_at_unix_seconds: f64,
    /// Seconds since the agent started.
    pub uptime_seconds: f64,
    /// Seconds between the two samples the rates come from.
    pub elapsed_seconds: f64,
    /// How long reading the kernel took.
    pub collection_seconds: f64,
    /// `net.netfilter.nf_conntrack_max`.
    pub conntrack_max: Option<u64>,
    /// Packets dropped on full per-CPU input backlogs, all CPUs (`softnet_stat`).
    #[serde(default)]
    pub softnet_dropped: Option<CounterRate>,
    /// Node-wide rates.
    pub totals: Totals,
    /// One entry per namespace, the node first, then by kind and name.
    pub workloads: Vec<WorkloadFigures>,
    /// Workloads beyond `agent.max_pod_series` (see [`Snapshot::fold`]).
    #[serde(default)]
    pub workloads_folded: usize,
    /// Listening sockets of the namespaces looked at (see `collect::listeners`).
    pub listeners: Vec<Listener>,
    /// Drops the kernel side could not attribute to a namespace, by reason.
    pub unattributed_drops: BTreeMap<String, CounterRate>,
    /// The DNS servers the pods asked most (see `model::conversations`).
    #[serde(default)]
    pub dns_servers: Vec<DnsServerFigures>,
    /// The remotes the pods' handshakes failed against most.
    #[serde(default)]
    pub connect_failures: Vec<RemoteFigures>,
    /// The cluster around the node (Service proxy, CNI, encapsulation, MTUs,
    /// idle timeouts), when it has been read.
    #[serde(default)]
    pub context: Option<NodeContext>,
    /// What the probes attached.
    pub probes: Report,
    /// The programs' own errors, by kind.
    pub probe_errors: BTreeMap<String, u64>,
    /// Urgent events lost so far.
    pub lost_events: LostEvents,
    /// Each program's runs and run time, by name (`agent.program_stats`).
    #[serde(default)]
    pub program_stats: BTreeMap<String, ProgramStats>,
    /// Who wrote the node's `net.*` sysctls (the `sysctl_writers` probe).
    #[serde(default)]
    pub sysctl_writers: Vec<super::sysctl_writers::SysctlWriterFigures>,
    /// Whether the sources of pod names answer (the container runtime).
    #[serde(default)]
    pub identity_sources: Vec<IdentitySource>,
}

/// What the agent publishes each tick: the Snapshot and, beside it, the tuner's
/// state (the model does not depend on the tuner; the daemon puts them together).
/// Served as one JSON object at `/api/v1/snapshot`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// The tick's figures.
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// The tuner's decisions and managed values (absent without a tuner).
    pub tuning: Option<TuningState>,
    /// Why `mode` is milder than the config's; absent when it is the config's.
    #[serde(default)]
    pub mode_demoted: Option<Demotion>,
    /// Diagnostics the eBPF programs logged (aya-log, rate-limited in the
    /// kernel) and the agent forwarded to its own log, so far.
    #[serde(default)]
    pub kernel_log_records: u64,
    /// Whether `/run/netns` showed entries that are not namespace mounts: it
    /// does not receive the node's later mounts (no `HostToContainer`
    /// propagation from a shared mount).
    #[serde(default)]
    pub run_netns_unpropagated: bool,
    /// Event-triggered collections skipped because they came too close to the
    /// previous one (`agent.min_event_interval_seconds`), so far.
    #[serde(default)]
    pub event_collections_suppressed: u64,
    /// Urgent events received from the kernel so far (those not delivered are
    /// in the Snapshot's `lost_events`).
    #[serde(default)]
    pub events_received: ReceivedEvents,
}

/// Which pods (by namespace) have their own entries and which are folded,
/// carried from one Snapshot to the next ([`Snapshot::fold_stable`]).
#[derive(Clone, Debug, Default)]
pub struct Folding {
    own: BTreeSet<u32>,
    folded: BTreeSet<u32>,
}

impl Snapshot {
    /// Decides which workloads keep their own entries — the node and the first
    /// `max_pods` pods, in the Snapshot's order — and marks the others
    /// [`WorkloadFigures::folded`]: the metrics sum them under `pod="_other"`, the
    /// JSON API leaves them out ([`Self::without_folded`]). The one place the cap
    /// is decided, so both outputs agree.
    pub fn fold(&mut self, max_pods: usize) {
        self.fold_stable(max_pods, &mut Folding::default());
    }

    /// [`Self::fold`], stable from one Snapshot to the next: a pod keeps its own
    /// entries, or stays folded, until its namespace goes; newcomers take the
    /// places free then, in the Snapshot's order. A pod moving in or out of
    /// `_other` as names sort would lower `_other`'s counters.
    pub fn fold_stable(&mut self, max_pods: usize, folding: &mut Folding) {
        let is_pod = |w: &WorkloadFigures| w.workload.kind != WorkloadKind::Node;
        let present: BTreeSet<u32> = self
            .workloads
            .iter()
            .filter(|w| is_pod(w))
            .map(|w| w.netns)
            .collect();
        folding.own.retain(|n| present.contains(n));
        folding.folded.retain(|n| present.contains(n));
        for w in &mut self.workloads {
            w.folded = is_pod(w)
                && !folding.own.contains(&w.netns)
                && (folding.folded.contains(&w.netns) || folding.own.len() >= max_pods);
            if is_pod(w) {
                if w.folded {
                    folding.folded.insert(w.netns);
                } else {
                    folding.own.insert(w.netns);
                }
            }
        }
        self.workloads_folded = self.workloads.iter().filter(|w| w.folded).count();
    }

    /// This Snapshot without its folded workloads and their listeners (counted in
    /// [`Self::workloads_folded`]). Totals still count every workload.
    #[must_use]
    pub fn without_folded(mut self) -> Self {
        let kept: BTreeSet<u32> = self
            .workloads
            .iter()
            .filter(|w| !w.folded)
            .map(|w| w.netns)
            .collect();
        self.workloads.retain(|w| !w.folded);
        self.listeners.retain(|l| kept.contains(&l.netns));
        self
    }
}

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
        lost_events: LostEvents::default(),
        program_stats: BTreeMap::new(),
        sysctl_writers: Vec::new(),
        identity_sources: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
