//! `nettune diagnose`: the guide's diagnostics, automated, mapped to its "common
//! problems" table with the concrete fix for this node.
//!
//! It needs no eBPF: everything comes from procfs (the kernel's own counters), so
//! it runs anywhere, as root or not, in about the time of one measurement interval.
//! [`Readings::gather`] does the I/O, through [`System`] and the same per-namespace
//! reader the agent uses; [`findings`] is a pure function of the readings,
//! unit-tested with hand-built ones.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use crate::{
    collect::{identity, sample},
    model::sample::{ConntrackCounters, NetnsSample, TcpSockets},
    sys::{System, procfs},
};

/// What diagnose measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Readings {
    /// Seconds between the two readings the deltas come from.
    pub interval_seconds: f64,
    /// `net.netfilter.nf_conntrack_max`.
    pub conntrack_max: Option<u64>,
    /// Conntrack per namespace (label → stats), where conntrack is in use.
    pub conntrack: BTreeMap<String, ConntrackCounters>,
    /// Host namespace TCP sockets (TIME_WAIT, in use).
    pub tcp: Option<TcpSockets>,
    /// The host's ephemeral port range.
    pub ip_local_port_range: Option<(u64, u64)>,
    /// Segments retransmitted in the interval (host namespace).
    pub retrans_segs: u64,
    /// Segments sent in the interval (host namespace).
    pub out_segs: u64,
    /// Accept-queue overflows in the interval (host namespace).
    pub listen_overflows: u64,
    /// Accept-queue overflows since boot (host namespace).
    pub listen_overflows_total: u64,
    /// Packets dropped in the interval because a CPU's input backlog was full
    /// (softnet_stat, all CPUs).
    pub softnet_dropped: u64,
    /// The same since boot.
    pub softnet_dropped_total: u64,
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Hurting some traffic now, or about to.
    Warning,
    /// Failing connections now.
    Critical,
}

/// One problem, with the evidence and the fix.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// A stable identifier, e.g. `conntrack_table_full`.
    pub id: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The guide's "common problems" row this belongs to.
    pub problem: &'static str,
    /// The figures that show it.
    pub evidence: String,
    /// What to do, with this node's values.
    pub fix: String,
}

/// The host namespace's counters at one moment.
struct Counters {
    host: NetnsSample,
    softnet: u64,
}

fn counters(system: &impl System) -> Counters {
    let mut host = NetnsSample::default();
    if let Some(ns) = system.namespaces().values().find(|ns| ns.is_host) {
        sample::read_netns_files(system, ns, &mut host);
    }
    Counters {
        host,
        softnet: system
            .read_proc("net/softnet_stat")
            .map_or(0, |t| procfs::softnet_dropped(&t)),
    }
}

impl Readings {
    /// Measures this node over `interval`.
    pub fn gather(system: &impl System, interval: Duration) -> Self {
        let before = counters(system);
        std::thread::sleep(interval);
        let after = counters(system);
        let mut conntrack = BTreeMap::new();
        for ns in system.namespaces().values() {
            let mut counts = NetnsSample::default();
            sample::read_netns_files(system, ns, &mut counts);
            if let Some(stats) = counts.conntrack
                && (stats.entries > 0 || stats.drop > 0 || ns.is_host)
            {
                conntrack.insert(identity::identify(system, ns, None).display_name(), stats);
            }
        }
        let delta = |f: fn(&NetnsSample) -> Option<u64>| {
            f(&after.host)
                .unwrap_or(0)
                .saturating_sub(f(&before.host).unwrap_or(0))
        };
        let overflows = |s: &NetnsSample| s.listen.map(|l| l.overflows);
        Self {
            interval_seconds: interval.as_secs_f64(),
            conntrack_max: system
                .read_proc(sample::CONNTRACK_MAX)
                .ok()
                .and_then(|t| procfs::number(&t)),
            conntrack,
            tcp: after.host.tcp_sockets,
            ip_local_port_range: system
                .read_proc("sys/net/ipv4/ip_local_port_range")
                .ok()
                .and_then(|s| {
                    let mut it = s.split_whitespace().filter_map(|v| v.parse().ok());
                    Some((it.next()?, it.next()?))
                }),
            retrans_segs: delta(|s| s.retrans_segs),
            out_segs: delta(|s| s.out_segs),
            listen_overflows: delta(overflows),
            listen_overflows_total: overflows(&after.host).unwrap_or(0),
            softnet_dropped: after.softnet.saturating_sub(before.softnet),
            softnet_dropped_total: after.softnet,
        }
    }
}

/// The problems the readings show, worst first.
pub fn findings(r: &Readings) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(max) = r.conntrack_max.filter(|m| *m > 0) {
        for (who, ct) in &r.conntrack {
            let usage = ct.entries as f64 / max as f64;
            if usage >= 0.8 || ct.drop > 0 || ct.early_drop > 0 {
                let proposed = (max * 2).max(1_048_576);
                out.push(Finding {
                    id: "conntrack_table_full",
                    severity: if usage >= 0.95 || ct.drop > 0 {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    problem: "conntrack table full: new connections fail",
                    evidence: format!(
                        "{who}: {} of {max} conntrack entries ({:.0} %), {} packets dropped and {} \
                         entries evicted because the table was full",
                        ct.entries,
                        usage * 100.0,
                        ct.drop,
                        ct.early_drop
                    ),
                    fix: format!(
                        "raise net.netfilter.nf_conntrack_max (now {max}), e.g. `sysctl -w \
                         net.netfilter.nf_conntrack_max={proposed}`, and grow the hash with it \
                         (nf_conntrack_buckets = max / 4); check short-lived connection churn"
                    ),
                });
            }
        }
    }
    if r.listen_overflows > 0 {
        out.push(Finding {
            id: "listen_overflows",
            severity: Severity::Warning,
            problem: "connection timeouts: accept queues overflow",
            evidence: format!(
                "{} listen overflows in {:.0} s ({} since boot)",
                r.listen_overflows, r.interval_seconds, r.listen_overflows_total
            ),
            fix: "raise net.core.somaxconn (node 32768, pods 65535) and the application's own \
                  listen() backlog — the queue is the smaller of the two; `ss -lnt` shows \
                  Recv-Q/Send-Q per listener"
                .into(),
        });
    }
    if r.softnet_dropped > 0 {
        out.push(Finding {
            id: "backlog_drops",
            severity: Severity::Warning,
            problem: "packets dropped before the stack: the per-CPU input backlog is full",
            evidence: format!(
                "{} backlog drops in {:.0} s (softnet_stat; {} since boot)",
                r.softnet_dropped, r.interval_seconds, r.softnet_dropped_total
            ),
            fix: "raise net.core.netdev_max_backlog (guide: 16384) and check RPS/IRQ spreading"
                .into(),
        });
    }
    if r.out_segs >= 1000 {
        let rate = r.retrans_segs as f64 / r.out_segs as f64;
        if rate > 0.01 {
            out.push(Finding {
                id: "tcp_retransmissions",
                severity: Severity::Warning,
                problem: "low pod bandwidth, slow requests: TCP retransmission rate above 1 %",
                evidence: format!(
                    "{} of {} segments retransmitted in {:.0} s ({:.1} %)",
                    r.retrans_segs,
                    r.out_segs,
                    r.interval_seconds,
                    rate * 100.0
                ),
                fix: "look for loss: interface errors and drops (`nettune top`, `ip -s link`), \
                      an MTU mismatch in the CNI, or an overloaded path"
                    .into(),
            });
        }
    }
    if let (Some(tcp), Some((low, high))) = (r.tcp, r.ip_local_port_range) {
        let ports = high.saturating_sub(low) + 1;
        if tcp.time_wait as f64 > ports as f64 * 0.5 {
            out.push(Finding {
                id: "ephemeral_ports",
                severity: Severity::Warning,
                problem: "intermittent connection failures: ephemeral ports running out",
                evidence: format!(
                    "{} sockets in TIME_WAIT for {ports} local ports ({low}-{high})",
                    tcp.time_wait
                ),
                fix: "set net.ipv4.tcp_tw_reuse=1 and widen net.ipv4.ip_local_port_range (guide: \
                      1024 65535, after reserving the NodePort range in \
                      ip_local_reserved_ports); prefer keepalive connections"
                    .into(),
            });
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_conntrack_table_is_critical_with_the_fix() {
        let mut r = Readings {
            conntrack_max: Some(100),
            ..Readings::default()
        };
        r.conntrack.insert(
            "netns:test".into(),
            ConntrackCounters {
                entries: 100,
                drop: 7,
                ..ConntrackCounters::default()
            },
        );
        let f = findings(&r);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].id, f[0].severity),
            ("conntrack_table_full", Severity::Critical)
        );
        assert!(
            f[0].evidence
                .starts_with("netns:test: 100 of 100 conntrack entries (100 %), 7 packets dropped")
        );
        assert!(
            f[0].fix
                .contains("sysctl -w net.netfilter.nf_conntrack_max=1048576")
        );
    }

    #[test]
    fn a_quiet_node_has_no_findings() {
        let mut r = Readings {
            conntrack_max: Some(262_144),
            tcp: Some(TcpSockets {
                in_use: 10,
                time_wait: 100,
            }),
            ip_local_port_range: Some((32768, 60999)),
            out_segs: 10_000,
            retrans_segs: 10,
            ..Readings::default()
        };
        r.conntrack.insert(
            "node".into(),
            ConntrackCounters {
                entries: 1000,
                ..ConntrackCounters::default()
            },
        );
        assert!(findings(&r).is_empty());
    }

    #[test]
    fn each_signal_maps_to_its_problem() {
        let r = Readings {
            tcp: Some(TcpSockets {
                in_use: 10,
                time_wait: 20_000,
            }),
            ip_local_port_range: Some((32768, 60999)),
            out_segs: 10_000,
            retrans_segs: 500,
            listen_overflows: 3,
            softnet_dropped: 9,
            ..Readings::default()
        };
        let ids: Vec<&str> = findings(&r).iter().map(|f| f.id).collect();
        assert_eq!(
            ids,
            [
                "listen_overflows",
                "backlog_drops",
                "tcp_retransmissions",
                "ephemeral_ports"
            ]
        );
    }
}
