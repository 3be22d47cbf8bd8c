//! A [`Sample`]: every raw counter nettune reads in one tick, per network
//! namespace, per interface, per listener and per flow.
//!
//! Counters are cumulative, as the kernel keeps them; rates come from two Samples.
//! This is where the kernel maps and the per-namespace procfs files meet, so
//! that everything downstream reads one structure whatever variant attached.

use std::collections::BTreeMap;

use nettune_common::{FlowKey, IfaceTraffic, ListenKey, ListenOverflow, RetransmitCounters};

use crate::{
    netns::Namespace,
    probes::{LoadError, Probes, events::LostEvents},
    procfs::{ConntrackStats, Mib, TcpSockstat},
};

/// The listen-queue counters of one namespace's `/proc/net/netstat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenCounters {
    /// `ListenOverflows`: the accept queue was full.
    pub overflows: u64,
    /// `ListenDrops`: every SYN or handshake completion a listener dropped.
    pub drops: u64,
    /// `TCPReqQFullDrop`: the SYN queue was full (and syncookies were off).
    pub syn_queue_full: u64,
}

/// Everything about one network namespace in one tick.
#[derive(Clone, Debug, Default)]
pub struct NetnsSample {
    /// Who the namespace is, when it is still on the node.
    pub namespace: Option<Namespace>,
    pub retransmits: RetransmitCounters,
    /// Dropped packets by (ifindex in this namespace, drop reason).
    pub drops: BTreeMap<(u32, u32), u64>,
    pub listen: Option<ListenCounters>,
    pub conntrack: Option<ConntrackStats>,
    pub tcp_sockets: Option<TcpSockstat>,
    /// `RetransSegs` of `/proc/net/snmp`.
    pub retrans_segs: Option<u64>,
    /// `OutSegs` of `/proc/net/snmp`: the denominator of the retransmission rate.
    pub out_segs: Option<u64>,
    /// connect() failures with EADDRNOTAVAIL.
    pub connect_eaddrnotavail: u64,
}

/// A watched host-side interface (a pod's veth, seen from the node).
#[derive(Clone, Debug, Default)]
pub struct InterfaceSample {
    pub name: String,
    pub traffic: IfaceTraffic,
    /// Packets dropped by tc on this interface (`TC_INGRESS` + `TC_EGRESS`).
    pub tc_drops: u64,
}

/// One tick's raw counters.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// By namespace inode. Namespace 0 holds drops nothing could attribute.
    pub netns: BTreeMap<u32, NetnsSample>,
    /// Watched host-side interfaces by host ifindex.
    pub interfaces: BTreeMap<u32, InterfaceSample>,
    pub listeners: BTreeMap<ListenKey, ListenOverflow>,
    pub flows: BTreeMap<FlowKey, u64>,
    /// `net.netfilter.nf_conntrack_max` (one limit for all namespaces).
    pub conntrack_max: Option<u64>,
    /// The programs' own errors, by kind.
    pub probe_errors: Vec<(&'static str, u64)>,
    pub lost_events: LostEvents,
}

const NET_FILES: [&str; 4] = ["netstat", "snmp", "stat/nf_conntrack", "sockstat"];

impl Sample {
    /// Reads the maps of `probes` and the procfs files of every namespace in
    /// `namespaces`.
    pub fn collect(
        probes: &Probes,
        namespaces: &BTreeMap<u32, Namespace>,
    ) -> Result<Self, LoadError> {
        let mut sample = Self {
            interfaces: probes
                .interface_traffic()?
                .into_iter()
                .map(|(ifindex, (name, traffic))| {
                    let sample = InterfaceSample {
                        name,
                        traffic,
                        tc_drops: 0,
                    };
                    (ifindex, sample)
                })
                .collect(),
            listeners: probes.listen_overflows()?,
            flows: probes.retransmit_flows()?,
            conntrack_max: std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            probe_errors: probes
                .probe_errors()?
                .into_iter()
                .map(|(e, n)| (e.name(), n))
                .collect(),
            lost_events: probes.lost_events()?,
            ..Self::default()
        };
        for (inode, ns) in namespaces {
            let entry = sample.netns.entry(*inode).or_default();
            entry.namespace = Some(ns.clone());
            read_procfs(ns, entry);
        }
        for (netns, counters) in probes.retransmits()? {
            sample.netns.entry(netns).or_default().retransmits = counters;
        }
        let tc_reasons = ["TC_INGRESS", "TC_EGRESS"].map(|r| probes.drop_reasons().value(r));
        let host = crate::netns::own_inode().unwrap_or(0);
        for (key, count) in probes.drops()? {
            if key.netns == host
                && tc_reasons.contains(&Some(key.reason))
                && let Some(iface) = sample.interfaces.get_mut(&key.ifindex)
            {
                iface.tc_drops += count;
            }

            *sample
                .netns
                .entry(key.netns)
                .or_default()
                .drops
                .entry((key.ifindex, key.reason))
                .or_default() += count;
        }
        for (netns, count) in probes.connect_eaddrnotavail()? {
            sample.netns.entry(netns).or_default().connect_eaddrnotavail = count;
        }
        Ok(sample)
    }
}

fn read_procfs(ns: &Namespace, into: &mut NetnsSample) {
    let [netstat, snmp, conntrack, sockstat] =
        match <[_; 4]>::try_from(ns.read_net_files(&NET_FILES)) {
            Ok(files) => files,
            Err(_) => return,
        };
    let counter = |mib: &Mib, group: &str, name: &str| {
        mib.get(group, name)
            .ok()
            .and_then(|v| u64::try_from(v).ok())
    };
    if let Ok(text) = netstat {
        let mib = Mib::parse("netstat", &text);
        into.listen = Some(ListenCounters {
            overflows: counter(&mib, "TcpExt", "ListenOverflows").unwrap_or(0),
            drops: counter(&mib, "TcpExt", "ListenDrops").unwrap_or(0),
            syn_queue_full: counter(&mib, "TcpExt", "TCPReqQFullDrop").unwrap_or(0),
        });
    }
    if let Ok(text) = snmp {
        let mib = Mib::parse("snmp", &text);
        into.retrans_segs = counter(&mib, "Tcp", "RetransSegs");
        into.out_segs = counter(&mib, "Tcp", "OutSegs");
    }

    into.conntrack = conntrack.ok().and_then(|t| ConntrackStats::parse(&t));
    into.tcp_sockets = sockstat.ok().and_then(|t| TcpSockstat::parse(&t));
}
