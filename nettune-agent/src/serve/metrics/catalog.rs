//! Every metric nettune exports, declared once: its name, its type, its labels
//! (a [`Labels`] struct) and its help text. A series can only be added for a
//! metric declared here, with that metric's label struct; [`ALL`] (the registry's
//! descriptions and the README's metric table, which a test keeps in step) is
//! generated from the same declarations.

use std::marker::PhantomData;

use super::labels::{
    BudgetedMap, Build, Decision, DemotionReason, Effect, EventKind, IdentitySource, Labels,
    Listener, LostCause, Mode, NoLabels, NodeInfo, Pod, PodDirection, PodIcmp, PodInterface,
    PodRcode, PodReason, PodResult, ProbeError, Program, Reason, RemoteResult, Server, ServerRcode,
    SignalVariant, SysctlTarget, SysctlWriter,
};

/// Counter, gauge or histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up while the thing it counts exists (names end in `_total`).
    Counter,
    /// A value at one moment.
    Gauge,
    /// Cumulative buckets, a count and a sum (`_bucket`, `_count`, `_sum`).
    Histogram,
}

impl Kind {
    /// The name in the README's table and in `# TYPE` lines.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A metric whose series carry the labels `L`.
#[derive(Debug)]
pub struct Metric<L> {
    /// Its name (`nettune_` prefix, counters end in `_total`).
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// What it means.
    pub help: &'static str,
    labels: PhantomData<fn() -> L>,
}

/// A metric without its label type: what the registry and the docs need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDesc {
    /// See [`Metric::name`].
    pub name: &'static str,
    /// See [`Metric::kind`].
    pub kind: Kind,
    /// The label names, in order.
    pub labels: &'static [&'static str],
    /// See [`Metric::help`].
    pub help: &'static str,
}

impl<L: Labels> Metric<L> {
    const fn new(kind: Kind, name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind,
            help,
            labels: PhantomData,
        }
    }

    /// The description of this metric.
    pub const fn describe(&self) -> MetricDesc {
        MetricDesc {
            name: self.name,
            kind: self.kind,
            labels: L::NAMES,
            help: self.help,
        }
    }
}

/// The README's table of metrics, one row per metric of [`ALL`].
pub fn markdown_table() -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for m in ALL {
        let labels = if m.labels.is_empty() {
            "—".to_owned()
        } else {
            m.labels.join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {labels} | {} |\n",
            m.name,
            m.kind.name(),
            m.help
        ));
    }
    out
}

/// Declares each metric as a constant and lists them all in [`ALL`].
macro_rules! catalog {
    ($($id:ident: $kind:ident<$labels:ty> = $name:literal, $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $id: Metric<$labels> = Metric::new(Kind::$kind, $name, $help);
        )*

        /// Every metric nettune exports, in the order `/metrics` renders them.
        pub const ALL: &[MetricDesc] = &[$($id.describe()),*];
    };
}

catalog! {
    BUILD_INFO: Gauge<Build> = "nettune_build_info",
        "Always 1; labels name the agent version and the running kernel.";
    NODE_INFO: Gauge<NodeInfo> = "nettune_node_info",
        "Always 1 once read; labels name the node's Service proxy, CNI, encapsulation and whether NodeLocal DNSCache runs.";
    SYSCTL_GUARD_REFUSALS: Counter<SysctlWriter> = "nettune_sysctl_guard_refusals_total",
        "Writes the kernel refused because they would have set a guarded sysctl (tuning.guard) below nettune's value, by writer.";
    SYSCTL_FOREIGN_WRITES: Counter<SysctlWriter> = "nettune_sysctl_foreign_writes_total",
        "Writes to a net.* sysctl by a process other than nettune, by writer (the cgroup/sysctl probe).";
    NODE_PATH_MTU: Gauge<NoLabels> = "nettune_node_path_mtu_bytes",
        "The largest packet a pod can send across the uplink: its MTU less the encapsulation's overhead.";
    PROBE_ATTACHED: Gauge<SignalVariant> = "nettune_probe_attached",
        "1 for the variant attached for a signal, 0 for variants tried and skipped.";
    PROBE_ERRORS: Counter<ProbeError> = "nettune_probe_errors_total",
        "Errors the eBPF programs met (failed kernel reads, full maps).";
    MAP_NAMESPACES_OVER_BUDGET: Gauge<BudgetedMap> = "nettune_map_namespaces_over_budget",
        "Pod namespaces past their budget of keys in a shared kernel map (probes.drop_keys_per_namespace, probes.listen_keys_per_namespace): their new keys are folded into one, so their counts stay whole without the detail.";
    EVENTS_LOST: Counter<LostCause> = "nettune_events_lost_total",
        "Urgent events not delivered: ring buffer full, or not armed (no early collection could change a decision, or their namespace is quiet: its events woke a collection in vain within the last 10 minutes).";
    EVENTS_RECEIVED: Counter<EventKind> = "nettune_events_received_total",
        "Urgent events the agent received from the kernel (each may wake a collection).";
    EVENT_COLLECTIONS_SUPPRESSED: Counter<NoLabels> = "nettune_event_collections_suppressed_total",
        "Urgent-event wake-ups that did not collect: too close to the previous collection (agent.min_event_interval_seconds).";
    COLLECTION_DURATION: Gauge<NoLabels> = "nettune_collection_duration_seconds",
        "Time the last collection took.";
    WORKLOADS: Gauge<NoLabels> = "nettune_workloads",
        "Network namespaces tracked.";
    WORKLOADS_FOLDED: Gauge<NoLabels> = "nettune_workloads_folded",
        "Workloads beyond agent.max_pod_series, summed under pod=\"_other\".";
    PROGRAM_RUNS: Counter<Program> = "nettune_program_runs_total",
        "Times each of nettune's eBPF programs ran (with agent.program_stats = true).";
    PROGRAM_RUN_SECONDS: Counter<Program> = "nettune_program_run_seconds_total",
        "Time each of nettune's eBPF programs ran for, in the kernel (with agent.program_stats = true).";
    IDENTITY_SOURCE: Gauge<IdentitySource> = "nettune_identity_source",
        "1 while a source of pod names answers (cri: the container runtime), 0 while it does not.";
    CONNTRACK_LIMIT: Gauge<NoLabels> = "nettune_conntrack_limit",
        "net.netfilter.nf_conntrack_max.";
    UNATTRIBUTED_DROPS: Counter<Reason> = "nettune_unattributed_drops_total",
        "Dropped packets that could not be attributed to a namespace.";
    TCP_RETRANSMIT_SEGMENTS: Counter<Pod> = "nettune_tcp_retransmit_segments_total",
        "TCP segments retransmitted (RetransSegs).";
    TCP_RETRANSMIT_FAILURES: Counter<Pod> = "nettune_tcp_retransmit_failures_total",
        "Retransmit attempts the kernel reported as failed.";
    TCP_OUT_SEGMENTS: Counter<Pod> = "nettune_tcp_out_segments_total",
        "TCP segments sent (OutSegs): the denominator of the retransmission rate.";
    DROPS: Counter<PodReason> = "nettune_drops_total",
        "Packets dropped by the kernel, by drop reason (enum skb_drop_reason).";
    LISTEN_OVERFLOWS: Counter<Pod> = "nettune_listen_overflows_total",
        "Connections refused because an accept queue was full (ListenOverflows).";
    LISTEN_DROPS: Counter<Pod> = "nettune_listen_drops_total",
        "SYNs and handshakes dropped by listeners (ListenDrops).";
    SYN_QUEUE_FULL_DROPS: Counter<Pod> = "nettune_syn_queue_full_drops_total",
        "SYNs dropped because the SYN queue was full (TCPReqQFullDrop).";
    CONNECT_EADDRNOTAVAIL: Counter<Pod> = "nettune_connect_eaddrnotavail_total",
        "connect() calls that failed for lack of an ephemeral port.";
    CONNTRACK_ENTRIES: Gauge<Pod> = "nettune_conntrack_entries",
        "Connections tracked in the namespace's conntrack table.";
    CONNTRACK_INSERT_FAILED: Counter<Pod> = "nettune_conntrack_insert_failed_total",
        "Conntrack insertions that failed.";
    CONNTRACK_DROPS: Counter<Pod> = "nettune_conntrack_drops_total",
        "Packets dropped because the conntrack table was full.";
    CONNTRACK_EARLY_DROPS: Counter<Pod> = "nettune_conntrack_early_drops_total",
        "Entries evicted early to make room.";
    CONNTRACK_CLASH_RESOLVES: Counter<Pod> = "nettune_conntrack_clash_resolves_total",
        "Insert clashes the kernel resolved: two packets of one new flow raced (e.g. A and AAAA queries from one socket); exported once non-zero.";
    TCP_TIME_WAIT_SOCKETS: Gauge<Pod> = "nettune_tcp_time_wait_sockets",
        "TCP sockets in TIME_WAIT.";
    POD_RECEIVE_BYTES: Counter<PodInterface> = "nettune_pod_receive_bytes_total",
        "Bytes the pod received through its veth.";
    POD_TRANSMIT_BYTES: Counter<PodInterface> = "nettune_pod_transmit_bytes_total",
        "Bytes the pod sent through its veth.";
    POD_RECEIVE_PACKETS: Counter<PodInterface> = "nettune_pod_receive_packets_total",
        "Packets the pod received through its veth.";
    POD_TRANSMIT_PACKETS: Counter<PodInterface> = "nettune_pod_transmit_packets_total",
        "Packets the pod sent through its veth.";
    POD_RECEIVE_DROPS: Counter<PodInterface> = "nettune_pod_receive_drops_total",
        "Packets towards the pod its veth dropped (the interface's own counter).";
    POD_TRANSMIT_DROPS: Counter<PodInterface> = "nettune_pod_transmit_drops_total",
        "Packets from the pod its veth's host side dropped (the interface's own counter).";
    POD_INTERFACE_ERRORS: Counter<PodInterface> = "nettune_pod_interface_errors_total",
        "Receive and transmit errors of the pod's veth; exported once non-zero.";
    POD_TC_DROPS: Counter<PodInterface> = "nettune_pod_tc_drops_total",
        "Packets dropped by tc on the pod's host-side interface.";
    DNS_QUERIES: Counter<Pod> = "nettune_dns_queries_total",
        "DNS queries the pod sent over UDP (a query sent again is a retry, not a new query).";
    DNS_RESPONSES: Counter<PodRcode> = "nettune_dns_responses_total",
        "DNS responses the pod received, by response code (codes seen only).";
    DNS_UNANSWERED: Counter<Pod> = "nettune_dns_unanswered_total",
        "DNS queries of the pod that no response followed within dns.timeout_seconds.";
    DNS_RETRIES: Counter<Pod> = "nettune_dns_retries_total",
        "DNS queries the pod sent again (same server, port and id) while unanswered.";
    DNS_TRUNCATED: Counter<Pod> = "nettune_dns_truncated_responses_total",
        "DNS responses with the TC bit (the answer did not fit; the client retries over TCP); exported once non-zero.";
    DNS_LATENCY: Histogram<Pod> = "nettune_dns_latency_seconds",
        "Time from a DNS query's first send to its response, for responses to queries nettune saw sent.";
    TCP_CONNECTS: Counter<PodResult> = "nettune_tcp_connects_total",
        "TCP handshakes the pod started, by how they ended: answered (SYN-ACK), refused (RST), timed_out (neither within tcp.handshake_timeout_seconds).";
    TCP_SYN_RETRANSMITS: Counter<Pod> = "nettune_tcp_syn_retransmits_total",
        "SYNs the pod sent again while waiting for an answer.";
    TCP_RESETS: Counter<PodDirection> = "nettune_tcp_resets_total",
        "TCP RSTs the pod sent or received (received: but those refusing its own handshakes); exported once non-zero.";
    ICMP_ERRORS: Counter<PodIcmp> = "nettune_icmp_errors_total",
        "ICMP and ICMPv6 errors the pod sent or received, by kind; exported once non-zero.";
    DNS_SERVER_QUERIES: Counter<Server> = "nettune_dns_server_queries_total",
        "DNS queries the pods sent to a server (the 16 most asked servers).";
    DNS_SERVER_RESPONSES: Counter<ServerRcode> = "nettune_dns_server_responses_total",
        "DNS responses from a server to the pods, by response code.";
    DNS_SERVER_UNANSWERED: Counter<Server> = "nettune_dns_server_unanswered_total",
        "DNS queries to a server that no response followed within dns.timeout_seconds.";
    DNS_SERVER_LATENCY: Histogram<Server> = "nettune_dns_server_latency_seconds",
        "Time from a query's first send to the server's response.";
    TCP_CONNECT_FAILURES_BY_REMOTE: Counter<RemoteResult> = "nettune_tcp_connect_failures_by_remote_total",
        "Handshakes the pods started that a remote refused or left unanswered (the 16 remotes failing most: the Services that time out).";
    LISTEN_BACKLOG_REQUESTED: Gauge<Listener> = "nettune_listen_backlog_requested",
        "The backlog the application passed to listen() (absent when it listened before nettune first looked at its namespace, or at somaxconn).";
    LISTEN_BACKLOG_LIMIT: Gauge<Listener> = "nettune_listen_backlog_limit",
        "The accept queue's limit: min(listen() backlog, somaxconn when it listened).";
    LISTEN_QUEUE_LENGTH: Gauge<Listener> = "nettune_listen_queue_length",
        "Connections waiting to be accepted, when the listener was last looked at.";
    LISTEN_SOCKET_OVERFLOWS: Counter<Listener> = "nettune_listen_socket_overflows_total",
        "Accept-queue overflows per listening socket (exact under fentry/kprobe, else the namespace's count split among listeners at their limit).";
    TUNING_MODE: Gauge<Mode> = "nettune_tuning_mode",
        "1 for the tuner's mode (observe, advise, enforce).";
    TUNING_DEMOTED: Gauge<DemotionReason> = "nettune_tuning_demoted",
        "1 for why the tuner runs milder than configured: proc_sys_read_only (enforce advises), journal_unusable (the journal cannot be read: no tuning until it is fixed; observing goes on).";
    TUNING_DECISIONS: Counter<Decision> = "nettune_tuning_decisions_total",
        "Tuning decisions by outcome: applied, advised, refused (a guardrail), futile (raising would not help), stood_down, failed.";
    TUNING_EFFECT: Counter<Effect> = "nettune_tuning_effect_total",
        "Applied changes by verdict on their evidence: no_effect_yet, effective, ineffective, unknown.";
    SYSCTL_VALUE: Gauge<SysctlTarget> = "nettune_sysctl_value",
        "Current value of a sysctl nettune manages (port ranges: their width; buffer triples: the maximum).";
    SYSCTL_ORIGINAL_VALUE: Gauge<SysctlTarget> = "nettune_sysctl_original_value",
        "The value found before nettune first changed it (what rollback restores).";
    SYSCTL_CEILING: Gauge<SysctlTarget> = "nettune_sysctl_ceiling",
        "The most nettune will raise the sysctl to.";
    TUNING_STOOD_DOWN: Gauge<SysctlTarget> = "nettune_tuning_stood_down",
        "1 when someone else changed a managed value and nettune stopped managing it.";
}
