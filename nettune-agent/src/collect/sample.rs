//! Turning the probes' readings and each namespace's procfs files into one
//! [`Sample`].
//!
//! This is where the kernel maps and the per-namespace counter files meet, so that
//! everything downstream reads one structure whatever variant attached. A file
//! that cannot be read (the namespace went away mid-tick, conntrack is not
//! loaded) leaves its part of the Sample empty; it never fails the tick.

use std::collections::{BTreeMap, BTreeSet};

use nettune_common::{BudgetedMap, budget};

use crate::{
    model::{
        drop_reasons::DropReasons,
        sample::{InterfaceSample, LinkCounters, NetnsSample, Sample},
        workload::Workload,
    },
    probes::ProbeReadings,
    sys::{Link, Namespace, System, procfs},
};

/// The per-namespace files every tick reads, in the order [`read_netns_files`]
/// expects them.
const NET_FILES: [&str; 4] = ["netstat", "snmp", "stat/nf_conntrack", "sockstat"];

/// `nf_conntrack_max` under `/proc`.
pub const CONNTRACK_MAX: &str = "sys/net/netfilter/nf_conntrack_max";
/// Per-CPU input queue statistics under `/proc`.
pub const SOFTNET_STAT: &str = "net/softnet_stat";

/// Reads `ns`'s counter files into `into`.
pub fn read_netns_files(system: &impl System, ns: &Namespace, into: &mut NetnsSample) {
    parse_netns_files(system.read_net_files(ns, &NET_FILES), into);
}

/// Each of `namespaces`' files, as [`read_netns_files`] reads one's, in one pass.
pub fn read_netns_files_of(system: &impl System, namespaces: &[&Namespace]) -> Vec<NetnsSample> {
    system
        .read_net_files_of(namespaces, &NET_FILES)
        .into_iter()
        .map(|texts| {
            let mut sample = NetnsSample::default();
            parse_netns_files(texts, &mut sample);
            sample
        })
        .collect()
}

/// Fills `into` from the texts of [`NET_FILES`], in order (a failed read leaves
/// its figures unknown).
fn parse_netns_files(texts: Vec<std::io::Result<String>>, into: &mut NetnsSample) {
    let mut files = texts.into_iter();
    let mut next = || files.next().and_then(Result::ok);
    let (netstat, snmp, conntrack, sockstat) = (next(), next(), next(), next());
    into.listen = netstat.map(|t| procfs::listen_counters(&procfs::Mib::parse("netstat", &t)));
    if let Some(text) = snmp {
        let mib = procfs::Mib::parse("snmp", &text);
        into.retrans_segs = mib.count("Tcp", "RetransSegs");
        into.out_segs = mib.count("Tcp", "OutSegs");
        into.active_opens = mib.count("Tcp", "ActiveOpens");
    }
    into.conntrack = conntrack.as_deref().and_then(procfs::conntrack);
    into.tcp_sockets = sockstat.as_deref().and_then(procfs::tcp_sockets);
}

/// Drops from `readings` everything about the namespaces in `left_out` (pods
/// annotated `nettune.io/ignore`).
pub fn leave_out(readings: &mut ProbeReadings, left_out: &BTreeSet<u32>) {
    if left_out.is_empty() {
        return;
    }
    readings.retransmits.retain(|ns, _| !left_out.contains(ns));
    readings.drops.retain(|k, _| !left_out.contains(&k.netns));
    readings
        .listen_overflows
        .retain(|k, _| !left_out.contains(&k.netns));
    readings
        .listen_origins
        .retain(|k, _| !left_out.contains(&k.netns));
    readings
        .connect_eaddrnotavail
        .retain(|ns, _| !left_out.contains(ns));
}

/// The node's pods' interfaces this tick: the host-side veths and their own
/// counters (`link_stats`, by ifindex), with the namespace of each one's other
/// end (`peers`).
pub struct PodInterfaces<'a> {
    /// The host-side veths (pods left out excluded).
    pub veths: &'a [&'a Link],
    /// Every host interface's counters.
    pub link_stats: &'a BTreeMap<u32, LinkCounters>,
    /// Host-side ifindex → the namespace of the veth's peer.
    pub peers: &'a BTreeMap<u32, u32>,
}

/// One tick's Sample: the probes' `readings`, each of `namespaces` with its
/// owner, and the pods' `interfaces`. Conversations are filled by
/// [`super::conversations`], the namespaces' `/proc/net` files by
/// [`super::netfiles`].
pub fn read(
    system: &impl System,
    namespaces: &[(&Namespace, Workload)],
    readings: &mut ProbeReadings,
    interfaces: &PodInterfaces<'_>,
    reasons: &DropReasons,
) -> Sample {
    let mut sample = Sample {
        interfaces: interfaces
            .veths
            .iter()
            .map(|link| {
                let iface = InterfaceSample {
                    name: link.name.clone(),
                    counters: interfaces
                        .link_stats
                        .get(&link.ifindex)
                        .copied()
                        .unwrap_or_default(),
                    peer_netns: interfaces.peers.get(&link.ifindex).copied(),
                    ..InterfaceSample::default()
                };
                (link.ifindex, iface)
            })
            .collect(),
        conntrack_max: system
            .read_proc(CONNTRACK_MAX)
            .ok()
            .and_then(|t| procfs::number(&t)),
        softnet_dropped: system
            .read_proc(SOFTNET_STAT)
            .ok()
            .map(|t| procfs::softnet_dropped(&t)),
        probe_errors: std::mem::take(&mut readings.probe_errors)
            .into_iter()
            .map(|(e, n)| (e.name().to_owned(), n))
            .collect(),
        lost_events: readings.lost_events,
        program_stats: std::mem::take(&mut readings.program_stats),
        sysctl_writers: std::mem::take(&mut readings.sysctl_writers),
        ..Sample::default()
    };
    for (ns, workload) in namespaces {
        let entry = sample.netns.entry(ns.inode).or_default();
        entry.workload = Some(workload.clone());
        entry.process.clone_from(&ns.process);
    }
    for (netns, counters) in std::mem::take(&mut readings.retransmits) {
        sample.netns.entry(netns).or_default().retransmits = counters;
    }
    let tc_reasons = ["TC_INGRESS", "TC_EGRESS"].map(|r| reasons.value(r));
    let host = namespaces
        .iter()
        .find(|(ns, _)| ns.is_host)
        .map(|(ns, _)| ns.inode);
    for (key, count) in std::mem::take(&mut readings.drops) {
        if Some(key.netns) == host
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
    for (netns, count) in std::mem::take(&mut readings.connect_eaddrnotavail) {
        sample.netns.entry(netns).or_default().connect_eaddrnotavail = count;
    }
    sample
}

/// Pod namespaces past their budget in each shared map: those with a folded
/// key (`nettune_common::budget`). Read before the listen overflows are
/// handed to the listener tracker.
pub fn over_budget(readings: &ProbeReadings) -> BTreeMap<String, u64> {
    let drops: BTreeSet<u32> = readings
        .drops
        .keys()
        .filter(|k| k.ifindex == budget::FOLDED_IFINDEX)
        .map(|k| k.netns)
        .collect();
    let listen: BTreeSet<u32> = readings
        .listen_overflows
        .keys()
        .filter(|k| k.port == budget::FOLDED_PORT)
        .map(|k| k.netns)
        .collect();
    [
        (BudgetedMap::Drops, drops),
        (BudgetedMap::ListenOverflows, listen),
    ]
    .into_iter()
    .map(|(map, over)| (map.name().to_owned(), over.len() as u64))
    .collect()
}

#[cfg(test)]
mod tests {
    use nettune_common::{DropKey, ListenKey, ListenOverflow};

    use super::*;

    #[test]
    fn namespaces_with_a_folded_key_are_over_budget_once_each() {
        let mut readings = ProbeReadings::default();
        for (netns, ifindex, reason) in [
            (7, 2, 3),
            (7, budget::FOLDED_IFINDEX, 3),
            (7, budget::FOLDED_IFINDEX, 5),
            (8, 2, 3),
        ] {
            let key = DropKey {
                netns,
                ifindex,
                reason,
                _pad: 0,
            };
            readings.drops.insert(key, 1);
        }
        for (netns, port) in [(9, budget::FOLDED_PORT), (9, 80)] {
            let key = ListenKey {
                netns,
                port,
                _pad: 0,
            };
            readings
                .listen_overflows
                .insert(key, ListenOverflow::default());
        }
        let over = over_budget(&readings);
        assert_eq!(over.get("drops"), Some(&1));
        assert_eq!(over.get("listen_overflows"), Some(&1));
    }
}
