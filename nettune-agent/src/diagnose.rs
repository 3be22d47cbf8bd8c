//! `nettune diagnose`: the guide's diagnostics, automated, mapped to its "common
//! problems" table with the concrete fix for this node.
//!
//! It needs no eBPF: everything comes from procfs (the kernel's own counters) and
//! `sock_diag` (listening sockets), so it runs anywhere, as root or not (then it
//! sees the host namespace only), in about the time of one measurement interval.
//! [`Readings::gather`] does the I/O, through [`System`] and the same per-namespace
//! reader the agent uses; [`findings`] is a pure function of the readings,
//! unit-tested with hand-built ones.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use crate::{
    collect::{identity, sample},
    model::sample::{ConntrackCounters, NetnsSample, TcpSockets},
    sys::{Namespace, System, procfs},
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
    /// Accept-queue overflows in the interval, by namespace (where any).
    pub listen_overflows: BTreeMap<String, u64>,
    /// Listening sockets of the host namespace and of every namespace whose
    /// accept queues overflowed in the interval.
    pub listeners: Vec<ListenerReading>,
    /// Packets dropped in the interval because a CPU's input backlog was full
    /// (softnet_stat, all CPUs).
    pub softnet_dropped: u64,
    /// The same since boot.
    pub softnet_dropped_total: u64,
}

/// A listening socket as diagnose saw it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ListenerReading {
    /// Its namespace, for people.
    pub namespace: String,
    /// Local address and port.
    pub address: String,
    /// Local port.
    pub port: u16,
    /// Connections waiting to be accepted.
    pub queue: u32,
    /// The queue's limit: min(listen() backlog, somaxconn when it listened).
    pub limit: u32,
    /// `net.core.somaxconn` in its namespace now.
    pub somaxconn: Option<u32>,
}

impl ListenerReading {
    /// Whether its own `listen()` backlog, not somaxconn, sets its limit.
    fn self_limited(&self) -> bool {
        self.somaxconn.is_some_and(|s| self.limit < s)
    }

    fn at_limit(&self) -> bool {
        self.queue >= self.limit
    }
}

/// The two facts about accept queues that make raising somaxconn futile so
/// often, as `diagnose` prints them under the listeners.
pub const LISTEN_FACTS: &str = "\
A listener's accept queue holds min(the backlog its application passed to listen(), \
net.core.somaxconn): raising somaxconn does nothing for a socket whose own backlog is \
smaller (nginx asks for 511, Java for 50). And the limit is fixed when listen() is called: \
a socket already listening keeps its limit until the application listens again (a restart).";

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

/// Every namespace's counters at one moment.
struct Counters {
    host: NetnsSample,
    netns: BTreeMap<u32, NetnsSample>,
    softnet: u64,
}

fn counters(system: &impl System, namespaces: &BTreeMap<u32, Namespace>) -> Counters {
    let mut netns = BTreeMap::new();
    let mut host = NetnsSample::default();
    for ns in namespaces.values() {
        let mut counts = NetnsSample::default();
        sample::read_netns_files(system, ns, &mut counts);
        if ns.is_host {
            host = counts.clone();
        }
        netns.insert(ns.inode, counts);
    }
    Counters {
        host,
        netns,
        softnet: system
            .read_proc("net/softnet_stat")
            .map_or(0, |t| procfs::softnet_dropped(&t)),
    }
}

/// The listening sockets of `ns`, labelled `who`.
fn listeners_of(system: &impl System, ns: &Namespace, who: &str) -> Vec<ListenerReading> {
    let Ok(scan) = system.scan_listeners(ns) else {
        return Vec::new();
    };
    let mut out: Vec<ListenerReading> = scan
        .sockets
        .iter()
        .map(|s| ListenerReading {
            namespace: who.to_owned(),
            address: std::net::SocketAddr::new(s.address, s.port).to_string(),
            port: s.port,
            queue: s.queue,
            limit: s.limit,
            somaxconn: scan.sysctls.somaxconn,
        })
        .collect();
    out.sort_by_key(|l| (l.port, l.address.clone()));
    out
}

impl Readings {
    /// Measures this node over `interval`.
    pub fn gather(system: &impl System, interval: Duration) -> Self {
        let namespaces = system.namespaces();
        let before = counters(system, &namespaces);
        std::thread::sleep(interval);
        let after = counters(system, &namespaces);
        let mut conntrack = BTreeMap::new();
        let mut listen_overflows = BTreeMap::new();
        let mut listeners = Vec::new();
        for ns in namespaces.values() {
            let Some(counts) = after.netns.get(&ns.inode) else {
                continue;
            };
            let who = identity::identify(system, ns, None).display_name();
            if let Some(stats) = counts.conntrack
                && (stats.entries > 0 || stats.drop > 0 || ns.is_host)
            {
                conntrack.insert(who.clone(), stats);
            }
            let overflows =
                |c: Option<&NetnsSample>| c.and_then(|c| c.listen).map_or(0, |l| l.overflows);
            let moved =
                overflows(Some(counts)).saturating_sub(overflows(before.netns.get(&ns.inode)));
            if moved > 0 {
                listen_overflows.insert(who.clone(), moved);
            }
            if moved > 0 || ns.is_host {
                listeners.extend(listeners_of(system, ns, &who));
            }
        }
        let delta = |f: fn(&NetnsSample) -> Option<u64>| {
            f(&after.host)
                .unwrap_or(0)
                .saturating_sub(f(&before.host).unwrap_or(0))
        };
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
            listen_overflows,
            listeners,
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
    for (who, n) in &r.listen_overflows {
        let theirs: Vec<&ListenerReading> =
            r.listeners.iter().filter(|l| &l.namespace == who).collect();
        out.push(Finding {
            id: "listen_overflows",
            severity: Severity::Warning,
            problem: "connection timeouts: accept queues overflow",
            evidence: format!(
                "{who}: {n} listen overflows in {:.0} s{}",
                r.interval_seconds,
                full_queues(&theirs)
            ),
            fix: listen_fix(&theirs),
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

/// `; full: port 8080 (queue 9 of 8)` for the listeners at their limit.
fn full_queues(listeners: &[&ListenerReading]) -> String {
    let full: Vec<String> = listeners
        .iter()
        .filter(|l| l.at_limit())
        .map(|l| format!("{} (queue {} of {})", l.address, l.queue, l.limit))
        .collect();
    if full.is_empty() {
        String::new()
    } else {
        format!("; full: {}", full.join(", "))
    }
}

/// The fix for overflows in a namespace, from its listeners at their limit.
fn listen_fix(listeners: &[&ListenerReading]) -> String {
    let full: Vec<&&ListenerReading> = listeners.iter().filter(|l| l.at_limit()).collect();
    let (own, capped): (Vec<&&ListenerReading>, Vec<&&ListenerReading>) =
        full.iter().partition(|l| l.self_limited());
    let somaxconn = full
        .iter()
        .find_map(|l| l.somaxconn)
        .map_or_else(|| "?".to_owned(), |s| s.to_string());
    let mut fix = Vec::new();
    if !own.is_empty() {
        let which: Vec<String> = own
            .iter()
            .map(|l| format!("{} has limit {}", l.address, l.limit))
            .collect();
        fix.push(format!(
            "{} while somaxconn is {somaxconn}: the application's own listen() backlog is the \
             cap, so raising somaxconn changes nothing — raise the backlog (nginx `listen … \
             backlog=N`, Java `new ServerSocket(port, N)`) up to {somaxconn} and restart it",
            which.join(", ")
        ));
    }
    if !capped.is_empty() {
        let which: Vec<String> = capped.iter().map(|l| l.address.clone()).collect();
        fix.push(format!(
            "{} sit at somaxconn ({somaxconn}): raise net.core.somaxconn (node 32768, pods 65535) \
             and make sure the application asks for as much — and restart it: a socket keeps \
             its limit until the application listens again",
            which.join(", ")
        ));
    }
    if fix.is_empty() {
        fix.push(
            "no listener was at its limit when looked at: watch `ss -lnt` (Recv-Q is the queue, \
             Send-Q its limit) or run `nettune top` (l: listeners); the limit is min(listen() \
             backlog, somaxconn) and is fixed until the application listens again"
                .into(),
        );
    }
    fix.join("; ")
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
            listen_overflows: [("node".to_owned(), 3)].into_iter().collect(),
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

#[cfg(test)]
mod listen_tests {
    use super::*;

    fn listener(port: u16, queue: u32, limit: u32, somaxconn: u32) -> ListenerReading {
        ListenerReading {
            namespace: "netns:web".into(),
            address: format!("0.0.0.0:{port}"),
            port,
            queue,
            limit,
            somaxconn: Some(somaxconn),
        }
    }

    fn overflowing(listeners: Vec<ListenerReading>) -> Finding {
        let r = Readings {
            interval_seconds: 1.0,
            listen_overflows: [("netns:web".to_owned(), 40)].into_iter().collect(),
            listeners,
            ..Readings::default()
        };
        findings(&r).remove(0)
    }

    #[test]
    fn a_listener_whose_own_backlog_is_the_cap_is_told_to_raise_it_not_somaxconn() {
        let f = overflowing(vec![listener(8080, 9, 8, 4096), listener(22, 0, 128, 4096)]);
        assert_eq!(
            f.evidence,
            "netns:web: 40 listen overflows in 1 s; full: 0.0.0.0:8080 (queue 9 of 8)"
        );
        assert!(
            f.fix
                .contains("0.0.0.0:8080 has limit 8 while somaxconn is 4096")
                && f.fix.contains("raising somaxconn changes nothing"),
            "{}",
            f.fix
        );
    }

    #[test]
    fn a_listener_at_somaxconn_is_told_to_raise_it_and_listen_again() {
        let f = overflowing(vec![listener(80, 129, 128, 128)]);
        assert!(
            f.fix
                .contains("sit at somaxconn (128): raise net.core.somaxconn")
                && f.fix.contains("until the application listens again"),
            "{}",
            f.fix
        );
    }

    #[test]
    fn without_a_full_listener_the_fix_says_where_to_look() {
        let f = overflowing(vec![listener(80, 0, 128, 4096)]);
        assert!(f.fix.contains("no listener was at its limit"), "{}", f.fix);
    }
}
