//! `nettune diagnose`: the guide's diagnostics, automated, mapped to its "common
//! problems" table with the concrete fix for this node.
//!
//! It needs no eBPF: everything comes from procfs (the kernel's own counters), so
//! it runs anywhere, as root or not, in about the time of one measurement interval.
//! [`Readings::gather`] does the I/O; [`findings`] is a pure function of the
//! readings, unit-tested with hand-built ones.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use crate::{
    netns,
    procfs::{ConntrackStats, Mib, TcpSockstat},
};

/// What diagnose measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Readings {
    pub interval_seconds: f64,
    pub conntrack_max: Option<u64>,
    /// Conntrack per namespace (label → stats), where conntrack is in use.
    pub conntrack: BTreeMap<String, ConntrackStats>,
    /// Host namespace TCP sockets (TIME_WAIT, in use).
    pub tcp: Option<TcpSockstat>,
    pub ip_local_port_range: Option<(u64, u64)>,
    /// Deltas over the interval, host namespace.
    pub retrans_segs: u64,
    pub out_segs: u64,
    pub listen_overflows: u64,
    pub listen_overflows_total: u64,
    /// Packets dropped because a CPU's input backlog was full (softnet_stat, all CPUs).
    pub softnet_dropped: u64,
    pub softnet_dropped_total: u64,
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One problem, with the evidence and the fix.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    /// The guide's "common problems" row this belongs to.
    pub problem: &'static str,
    pub evidence: String,
    pub fix: String,
}

/// Sum of the second column (dropped) of `/proc/net/softnet_stat`, one hex row per CPU.
pub fn softnet_dropped(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .sum()
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

struct Counters {
    retrans: u64,
    out: u64,
    overflows: u64,
    softnet: u64,
}

fn counters() -> Counters {
    let snmp = read("/proc/net/snmp")
        .map(|t| Mib::parse("snmp", &t))
        .unwrap_or_default();
    let netstat = read("/proc/net/netstat")
        .map(|t| Mib::parse("netstat", &t))
        .unwrap_or_default();
    let get = |m: &Mib, g, n| {
        m.get(g, n)
            .ok()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0)
    };
    Counters {
        retrans: get(&snmp, "Tcp", "RetransSegs"),
        out: get(&snmp, "Tcp", "OutSegs"),
        overflows: get(&netstat, "TcpExt", "ListenOverflows"),
        softnet: read("/proc/net/softnet_stat").map_or(0, |t| softnet_dropped(&t)),
    }
}

impl Readings {
    /// Measures this node over `interval`.
    pub fn gather(interval: Duration) -> Self {
        let before = counters();
        std::thread::sleep(interval);
        let after = counters();
        let mut conntrack = BTreeMap::new();
        for ns in netns::discover().values() {
            if let Some(Ok(text)) = ns.read_net_files(&["stat/nf_conntrack"]).pop()
                && let Some(stats) = ConntrackStats::parse(&text)
                && (stats.entries > 0 || stats.drop > 0 || ns.is_host)
            {
                conntrack.insert(crate::identity::identify(ns).pod, stats);
            }
        }
        Self {
            interval_seconds: interval.as_secs_f64(),
            conntrack_max: read("/proc/sys/net/netfilter/nf_conntrack_max")
                .and_then(|s| s.trim().parse().ok()),
            conntrack,
            tcp: read("/proc/net/sockstat").and_then(|t| TcpSockstat::parse(&t)),
            ip_local_port_range: read("/proc/sys/net/ipv4/ip_local_port_range").and_then(|s| {
                let mut it = s.split_whitespace().filter_map(|v| v.parse().ok());
                Some((it.next()?, it.next()?))
            }),
            retrans_segs: after.retrans.saturating_sub(before.retrans),
            out_segs: after.out.saturating_sub(before.out),
            listen_overflows: after.overflows.saturating_sub(before.overflows),
            listen_overflows_total: after.overflows,
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
            ConntrackStats {
                entries: 100,
                drop: 7,
                ..ConntrackStats::default()
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
            tcp: Some(TcpSockstat {
                inuse: 10,
                time_wait: 100,
            }),
            ip_local_port_range: Some((32768, 60999)),
            out_segs: 10_000,
            retrans_segs: 10,
            ..Readings::default()
        };
        r.conntrack.insert(
            "node".into(),
            ConntrackStats {
                entries: 1000,
                ..ConntrackStats::default()
            },
        );
        assert!(findings(&r).is_empty());
    }

    #[test]
    fn each_signal_maps_to_its_problem() {
        let r = Readings {
            tcp: Some(TcpSockstat {
                inuse: 10,
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

    #[test]
    fn softnet_sums_the_dropped_column() {
        assert_eq!(
            softnet_dropped("00000010 00000002 00000000\n00000020 0000000a 00000001\n"),
            12
        );
    }
}
