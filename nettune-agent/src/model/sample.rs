//! A [`Sample`]: every raw counter nettune read in one tick, per network
//! namespace, per host-side interface and per listener.
//!
//! Counters are cumulative, as the kernel keeps them; rates come from two Samples
//! ([`crate::model::snapshot`]). [`crate::collect`] fills a Sample from the probes'
//! maps and each namespace's procfs files, so everything downstream reads one
//! structure whatever variant attached.

use std::collections::BTreeMap;

use nettune_common::{Conversations, DnsCounters, RetransmitCounters};
use serde::{Deserialize, Serialize};

use super::workload::Workload;

/// The listen-queue counters of one namespace's `/proc/net/netstat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenCounters {
    /// `ListenOverflows`: the accept queue was full.
    pub overflows: u64,
    /// `ListenDrops`: every SYN or handshake completion a listener dropped.
    pub drops: u64,
    /// `TCPReqQFullDrop`: the SYN queue was full (and syncookies were off).
    pub syn_queue_full: u64,
}

/// One namespace's `/proc/net/stat/nf_conntrack`: the table size and the event
/// counters nettune uses, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackCounters {
    /// Connections tracked in the namespace's table.
    pub entries: u64,
    /// Insertions that failed.
    pub insert_failed: u64,
    /// Packets dropped because the table was full.
    pub drop: u64,
    /// Entries evicted early to make room.
    pub early_drop: u64,
    /// Insert clashes resolved (`clashres`): two packets of one new flow, e.g. a
    /// pod's A and AAAA queries, raced to insert; on kernels that resolve it.
    #[serde(default)]
    pub clash_resolve: u64,
    /// Lookups that gave up on a too long hash chain (`chaintoolong`).
    #[serde(default)]
    pub chain_too_long: u64,
}

/// The TCP line of one namespace's `/proc/net/sockstat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpSockets {
    /// TCP sockets in use.
    pub in_use: u64,
    /// TCP sockets in TIME_WAIT.
    pub time_wait: u64,
}

/// An interface's own counters (`IFLA_STATS_LINK_64`), from the host's point of
/// view: on a pod's host-side veth, `rx` is what the pod sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Packets dropped on receive.
    pub rx_dropped: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
}

/// One program's runs and the time they took, as the kernel counts them
/// (`BPF_ENABLE_STATS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramStats {
    /// Times it ran.
    pub runs: u64,
    /// Nanoseconds those runs took.
    pub run_ns: u64,
}

/// Urgent events the kernel side could not deliver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostEvents {
    /// Lost because the ring buffer was full.
    pub ring_full: u64,
    /// Not sent: the agent had not armed their kind (nothing would have
    /// collected sooner).
    #[serde(alias = "rate_limited")]
    pub not_armed: u64,
}

/// Urgent events the agent received from the ring buffer, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedEvents {
    /// `NETFILTER_DROP` drops.
    pub netfilter_drop: u64,
    /// Accept-queue overflows.
    pub listen_overflow: u64,
    /// Kinds this agent does not know (a newer kernel side).
    pub other: u64,
}

impl ReceivedEvents {
    /// Counts one event of kind value `kind`.
    pub fn count(&mut self, kind: u32) {
        use nettune_common::EventKind;
        let slot = match kind {
            k if k == EventKind::NetfilterDrop as u32 => &mut self.netfilter_drop,
            k if k == EventKind::ListenOverflow as u32 => &mut self.listen_overflow,
            _ => &mut self.other,
        };
        *slot += 1;
    }
}

/// Everything about one network namespace in one tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetnsSample {
    /// Who owns the namespace; `None` when the kernel's maps name a namespace
    /// that is no longer on the node.
    pub workload: Option<Workload>,
    /// The command of the lowest pid inside, if any.
    pub process: Option<String>,
    /// Retransmit counters from the probes.
    pub retransmits: RetransmitCounters,
    /// Dropped packets by (ifindex in this namespace, drop reason).
    pub drops: BTreeMap<(u32, u32), u64>,
    /// Listen-queue counters (`/proc/net/netstat`).
    pub listen: Option<ListenCounters>,
    /// Conntrack table (`/proc/net/stat/nf_conntrack`).
    pub conntrack: Option<ConntrackCounters>,
    /// TCP sockets (`/proc/net/sockstat`).
    pub tcp_sockets: Option<TcpSockets>,
    /// `RetransSegs` of `/proc/net/snmp`.
    pub retrans_segs: Option<u64>,
    /// `OutSegs` of `/proc/net/snmp`: the denominator of the retransmission rate.
    pub out_segs: Option<u64>,
    /// `ActiveOpens` of `/proc/net/snmp`: connects that sent their SYN.
    pub active_opens: Option<u64>,
    /// connect() failures with `EADDRNOTAVAIL`.
    pub connect_eaddrnotavail: u64,
    /// The listen sysctls, from the last look at the namespace's listeners.
    pub netns_sysctls: Option<NetnsSysctls>,
    /// The `/proc/net` figures of the read before the latest one, and the
    /// seconds between the two reads (quiet namespaces are not read every tick,
    /// see `collect::netfiles`). When set, the Snapshot's rates of those figures
    /// come from it; otherwise from the previous Sample.
    pub files_before: Option<(NetFiles, f64)>,
}

/// A namespace's figures from its `/proc/net` files, as one read gave them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetFiles {
    /// `/proc/net/netstat`'s listen-queue counters.
    pub listen: Option<ListenCounters>,
    /// `/proc/net/stat/nf_conntrack`.
    pub conntrack: Option<ConntrackCounters>,
    /// `/proc/net/sockstat`'s TCP line.
    pub tcp_sockets: Option<TcpSockets>,
    /// `RetransSegs` of `/proc/net/snmp`.
    pub retrans_segs: Option<u64>,
    /// `OutSegs` of `/proc/net/snmp`.
    pub out_segs: Option<u64>,
    /// `ActiveOpens` of `/proc/net/snmp`.
    pub active_opens: Option<u64>,
}

impl NetnsSample {
    /// Its `/proc/net` figures.
    pub fn files(&self) -> NetFiles {
        NetFiles {
            listen: self.listen,
            conntrack: self.conntrack,
            tcp_sockets: self.tcp_sockets,
            retrans_segs: self.retrans_segs,
            out_segs: self.out_segs,
            active_opens: self.active_opens,
        }
    }

    /// Sets its `/proc/net` figures.
    pub fn set_files(&mut self, files: NetFiles) {
        self.listen = files.listen;
        self.conntrack = files.conntrack;
        self.tcp_sockets = files.tcp_sockets;
        self.retrans_segs = files.retrans_segs;
        self.out_segs = files.out_segs;
        self.active_opens = files.active_opens;
    }
}

/// A host-side veth (a pod's interface, seen from the node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceSample {
    /// The host-side interface name.
    pub name: String,
    /// The interface's own counters (`IFLA_STATS64`), from the host's side.
    pub counters: LinkCounters,
    /// Packets dropped by tc on this interface (`TC_INGRESS` + `TC_EGRESS`).
    pub tc_drops: u64,
    /// The namespace of the veth's other end (the pod), when known.
    pub peer_netns: Option<u32>,
    /// What the tc programs saw of the pod's conversations, once they watch it.
    pub conversations: Option<Conversations>,
    /// The pod's DNS queries no response came for within `dns.timeout_seconds`.
    pub dns_unanswered: u64,
    /// The pod's handshakes no answer came for within
    /// `tcp.handshake_timeout_seconds`.
    pub connects_timed_out: u64,
}

/// A DNS server the pods asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsServerSample {
    /// What the tc programs counted for it.
    pub counters: DnsCounters,
    /// Queries to it no response came for within `dns.timeout_seconds`.
    pub unanswered: u64,
}

/// A remote address and port the pods' handshakes failed against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteSample {
    /// Handshakes an RST refused.
    pub refused: u64,
    /// Handshakes no answer came for within `tcp.handshake_timeout_seconds`.
    pub timed_out: u64,
}

/// Sysctls of a namespace the rules need, as set there (read when its
/// listeners are looked at): what bounds its listen queues, and its ephemeral
/// ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsSysctls {
    /// `net.core.somaxconn`: the most any `listen()` backlog is granted.
    pub somaxconn: Option<u32>,
    /// `net.ipv4.tcp_max_syn_backlog`: with syncookies off, SYNs from unproven
    /// peers are dropped once a listener's SYN queue holds ¾ of it.
    pub max_syn_backlog: Option<u32>,
    /// `net.ipv4.tcp_syncookies`: 0 off, 1 when a SYN queue is full, 2 always.
    pub syncookies: Option<u32>,
    /// `net.ipv4.ip_local_port_range`: the ephemeral ports, low and high.
    #[serde(default)]
    pub ephemeral_ports: Option<(u32, u32)>,
    /// `net.ipv4.tcp_tw_reuse`: 1 lets a connect take a TIME_WAIT socket's port
    /// after a second, 2 on loopback only.
    #[serde(default)]
    pub tw_reuse: Option<u32>,
}

/// How a listener's overflows were counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// Per socket, in the kernel (fentry or kprobe on the accept-queue check).
    Exact,
    /// The namespace's `ListenOverflows` delta, split among the listeners found
    /// at their limit when it moved (kernels without fentry and kprobes).
    AtLimit,
    /// None counted yet.
    #[default]
    None,
}

/// A listening TCP socket in one tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSample {
    /// Its namespace inode.
    pub netns: u32,
    /// Local address.
    pub address: std::net::IpAddr,
    /// Local port.
    pub port: u16,
    /// The socket's inode.
    pub inode: u32,
    /// Connections waiting to be accepted when last looked at.
    pub queue: u32,
    /// The accept queue's limit: `min(backlog asked for, somaxconn)` when the
    /// application called `listen()`.
    pub limit: u32,
    /// The backlog the application passed to `listen()`, when known: its limit
    /// was below the somaxconn of the moment it listened.
    pub requested: Option<u32>,
    /// The somaxconn that capped what it asked for, when its limit equalled the
    /// somaxconn of that moment (it asked for at least this).
    pub capped_by: Option<u32>,
    /// The process that called `listen()`, when seen.
    pub process: Option<String>,
    /// Overflows so far (cumulative), counted as `attribution` says.
    pub overflows: u64,
    /// How `overflows` was counted.
    pub attribution: Attribution,
}

/// One tick's raw counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// By namespace inode. Namespace 0 holds drops nothing could attribute.
    pub netns: BTreeMap<u32, NetnsSample>,
    /// Watched host-side interfaces by host ifindex.
    pub interfaces: BTreeMap<u32, InterfaceSample>,
    /// Listening sockets of the namespaces looked at (see `collect::listeners`).
    pub listeners: Vec<ListenerSample>,
    /// `net.netfilter.nf_conntrack_max` (one limit for all namespaces).
    pub conntrack_max: Option<u64>,
    /// Packets dropped because a CPU's input backlog was full, all CPUs
    /// (`/proc/net/softnet_stat`).
    pub softnet_dropped: Option<u64>,
    /// The programs' own errors, by kind.
    pub probe_errors: BTreeMap<String, u64>,
    /// Urgent events lost so far.
    pub lost_events: LostEvents,
    /// Pod namespaces past their budget in each shared kernel map, by map name
    /// (`nettune_common::BudgetedMap::name`).
    pub over_budget: BTreeMap<String, u64>,
    /// Each program's runs and run time, by name (`agent.program_stats`).
    pub program_stats: BTreeMap<String, ProgramStats>,
    /// The DNS servers the pods asked.
    pub dns_servers: BTreeMap<std::net::IpAddr, DnsServerSample>,
    /// The remote addresses the pods' handshakes failed against.
    pub remotes: BTreeMap<std::net::SocketAddr, RemoteSample>,
    /// Who wrote the node's `net.*` sysctls.
    pub sysctl_writers: Vec<super::sysctl_writers::SysctlWriterFigures>,
}
