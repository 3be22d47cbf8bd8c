//! A [`Snapshot`]: two Samples turned into what people read — cumulative totals
//! and per-second rates per workload, with drop reasons named — as plain data that
//! the exporter, the JSON API, the UI and the tuner share.
//!
//! [`Snapshot::build`] is a pure function of two Samples and a [`Context`]: no I/O
//! (the caller reads the clock), so every rate and total is unit-tested from
//! hand-built Samples.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    context::NodeContext,
    conversations::{ConversationFigures, DnsServerFigures, RemoteFigures},
    counter::CounterRate,
    probes::Report,
    sample::{Attribution, LostEvents, NetnsSysctls, ProgramStats, ReceivedEvents},
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
    /// Pod namespaces past their budget in each shared kernel map, by map name.
    #[serde(default)]
    pub over_budget: BTreeMap<String, u64>,
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

mod build;
mod fold;

pub use build::Context;
#[cfg(test)]
pub(crate) use build::for_tests;
pub use fold::Folding;

#[cfg(test)]
mod tests;
