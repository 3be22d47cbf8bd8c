//! The series of the pods' conversations: per pod (DNS, handshakes, resets,
//! ICMP errors; folded under `pod="_other"` like every per-pod series), per DNS
//! server and per remote that handshakes failed against (the Snapshot's
//! shortlists, [`crate::model::conversations`]).
//!
//! A pod without DNS, handshake or ICMP activity has none of these series: each
//! group appears with its first query, handshake or error.

use super::{
    catalog,
    families::Families,
    labels::{Pod, RemoteResult, Server, ServerRcode},
    series::{nonzero, put},
};
use crate::model::{
    conversations::{ConversationFigures, DnsFigures},
    snapshot::Snapshot,
};

/// A workload's conversation series, its own or (`folded`) its share of `_other`'s.
pub(super) fn workload(f: &mut Families, folded: bool, pod: &Pod, c: &ConversationFigures) {
    let d = &c.dns;
    if d.queries.total > 0 || !d.responses.is_empty() {
        put(
            f,
            folded,
            &catalog::DNS_QUERIES,
            pod.clone(),
            d.queries.total as f64,
        );
        for (rcode, r) in &d.responses {
            let labels = pod.clone().with_rcode(rcode);
            put(f, folded, &catalog::DNS_RESPONSES, labels, r.total as f64);
        }
        put(
            f,
            folded,
            &catalog::DNS_UNANSWERED,
            pod.clone(),
            d.unanswered.total as f64,
        );
        put(
            f,
            folded,
            &catalog::DNS_RETRIES,
            pod.clone(),
            d.retries.total as f64,
        );
        if let Some(v) = nonzero(d.truncated.total) {
            put(f, folded, &catalog::DNS_TRUNCATED, pod.clone(), v);
        }
        if folded {
            f.add_histogram_to_sum(&catalog::DNS_LATENCY, pod.clone(), &d.latency);
        } else {
            f.add_histogram(&catalog::DNS_LATENCY, pod.clone(), &d.latency);
        }
    }
    let k = &c.connects;
    if k.attempts.total > 0 {
        for (result, n) in [
            ("answered", k.answered.total),
            ("refused", k.refused.total),
            ("timed_out", k.timed_out.total),
        ] {
            let labels = pod.clone().with_result(result);
            put(f, folded, &catalog::TCP_CONNECTS, labels, n as f64);
        }
        let retransmits = k.syn_retransmits.total as f64;
        put(
            f,
            folded,
            &catalog::TCP_SYN_RETRANSMITS,
            pod.clone(),
            retransmits,
        );
    }
    for (direction, n) in [
        ("sent", c.resets_sent.total),
        ("received", c.resets_received.total),
    ] {
        if let Some(v) = nonzero(n) {
            let labels = pod.clone().with_direction(direction);
            put(f, folded, &catalog::TCP_RESETS, labels, v);
        }
    }
    for (direction, kinds) in [("received", &c.icmp.received), ("sent", &c.icmp.sent)] {
        for (kind, r) in kinds {
            let labels = pod.clone().with_icmp(direction, kind);
            put(f, folded, &catalog::ICMP_ERRORS, labels, r.total as f64);
        }
    }
}

/// One DNS server's series.
fn server(f: &mut Families, server: &str, d: &DnsFigures) {
    let labels = || Server {
        server: server.to_owned(),
    };
    f.add(
        &catalog::DNS_SERVER_QUERIES,
        labels(),
        d.queries.total as f64,
    );
    for (rcode, r) in &d.responses {
        let labels = ServerRcode {
            server: server.to_owned(),
            rcode: rcode.clone(),
        };
        f.add(&catalog::DNS_SERVER_RESPONSES, labels, r.total as f64);
    }
    let unanswered = d.unanswered.total as f64;
    f.add(&catalog::DNS_SERVER_UNANSWERED, labels(), unanswered);
    f.add_histogram(&catalog::DNS_SERVER_LATENCY, labels(), &d.latency);
}

/// The node-wide series: DNS servers and the remotes handshakes failed against.
pub(super) fn node(f: &mut Families, snapshot: &Snapshot) {
    for s in &snapshot.dns_servers {
        server(f, &s.server.to_string(), &s.dns);
    }
    for r in &snapshot.connect_failures {
        for (result, n) in [
            ("refused", r.refused.total),
            ("timed_out", r.timed_out.total),
        ] {
            if let Some(v) = nonzero(n) {
                let labels = RemoteResult {
                    remote: r.remote.to_string(),
                    result: result.to_owned(),
                };
                f.add(&catalog::TCP_CONNECT_FAILURES_BY_REMOTE, labels, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nettune_common::{Conversations, DnsCounters, RetransmitCounters};

    use super::super::{
        Exporter,
        tests::{publish, series, with_context},
    };
    use crate::model::{
        sample::{
            ConntrackCounters, InterfaceSample, LinkCounters, ListenCounters, NetnsSample, Sample,
            TcpSockets,
        },
        snapshot::Snapshot,
        workload::{Workload, WorkloadKind},
    };

    /// Everything a pod can show at once: retransmits, a drop reason, listen
    /// overflows, port exhaustion, conntrack trouble, a busy veth, DNS with
    /// answers, NXDOMAIN, truncation, retries and silence, handshakes answered,
    /// refused and timed out, resets both ways, a "fragmentation needed".
    fn busy(netns: u32, ifindex: u32, name: &str) -> (NetnsSample, InterfaceSample) {
        let ns = NetnsSample {
            workload: Some(Workload::new(WorkloadKind::NamedNetns, name.to_owned())),
            retransmits: RetransmitCounters {
                retransmits: 3,
                segments: 4,
                failed: 1,
            },
            drops: [((2, 3), 5)].into(),
            listen: Some(ListenCounters {
                overflows: 1,
                drops: 2,
                syn_queue_full: 1,
            }),
            conntrack: Some(ConntrackCounters {
                entries: 10,
                insert_failed: 1,
                drop: 1,
                early_drop: 1,
                clash_resolve: 2,
                chain_too_long: 1,
            }),
            tcp_sockets: Some(TcpSockets {
                in_use: 3,
                time_wait: 2,
            }),
            retrans_segs: Some(4),
            out_segs: Some(100),
            connect_eaddrnotavail: 1,
            ..NetnsSample::default()
        };
        let mut dns = DnsCounters {
            queries: 10,
            retries: 2,
            responses: 8,
            truncated: 1,
            latency_buckets: [5, 2, 1],
            latency_sum_ns: 2_000_000_000,
            ..DnsCounters::default()
        };
        dns.rcodes[0] = 6;
        dns.rcodes[3] = 2;
        let mut conversations = Conversations {
            dns,
            connect_attempts: 6,
            connects_answered: 3,
            connects_refused: 1,
            syn_retransmits: 4,
            resets_sent: 1,
            resets_received: 1,
            smallest_mtu: 1400,
            ..Conversations::default()
        };
        conversations.icmp_received[3] = 2;
        let iface = InterfaceSample {
            name: format!("veth{ifindex}"),
            counters: LinkCounters {
                rx_packets: 10,
                tx_packets: 10,
                rx_bytes: 1000,
                tx_bytes: 1000,
                // A veth counts no errors (veth_get_stats64 fills drops only).
                rx_errors: 0,
                tx_errors: 0,
                rx_dropped: 1,
                tx_dropped: 1,
            },
            tc_drops: 1,
            peer_netns: Some(netns),
            conversations: Some(conversations),
            dns_unanswered: 2,
            connects_timed_out: 2,
        };
        (ns, iface)
    }

    /// `/metrics` of the node and `pods` busy pods, at most `cap` of them with
    /// series of their own.
    fn render_busy(pods: u32, cap: usize) -> String {
        let mut sample = Sample::default();
        sample.netns.insert(
            1,
            NetnsSample {
                workload: Some(Workload::node()),
                ..NetnsSample::default()
            },
        );
        for i in 1..=pods {
            let (ns, iface) = busy(i + 1, 100 + i, &format!("netns:p{i:03}"));
            sample.netns.insert(i + 1, ns);
            sample.interfaces.insert(100 + i, iface);
        }
        let mut snapshot = with_context(&[], |ctx| Snapshot::build(&sample, None, 1.0, ctx));
        snapshot.fold(cap);
        let published = publish(snapshot);
        String::from_utf8(Exporter::new().render(&published).to_vec()).unwrap()
    }

    fn series_of<'a>(text: &'a str, pod: &str) -> Vec<&'a str> {
        let label = format!("pod=\"{pod}\"");
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&label))
            .collect()
    }

    #[test]
    fn a_pod_with_every_signal_active_stays_under_forty_series() {
        let text = render_busy(1, 10);
        let own = series_of(&text, "netns:p001");
        assert!(own.len() < 40, "{} series:\n{}", own.len(), own.join("\n"));
        // What a person debugging DNS at 3 a.m. looks for is among them.
        for expected in [
            r#"nettune_dns_queries_total{namespace="",pod="netns:p001"} 10"#,
            r#"nettune_dns_unanswered_total{namespace="",pod="netns:p001"} 2"#,
            r#"nettune_dns_responses_total{namespace="",pod="netns:p001",rcode="NXDOMAIN"} 2"#,
            r#"nettune_dns_latency_seconds_bucket{namespace="",pod="netns:p001",le="0.01"} 5"#,
            r#"nettune_dns_latency_seconds_bucket{namespace="",pod="netns:p001",le="+Inf"} 8"#,
            r#"nettune_dns_latency_seconds_sum{namespace="",pod="netns:p001"} 2"#,
            r#"nettune_tcp_connects_total{namespace="",pod="netns:p001",result="timed_out"} 2"#,
            r#"nettune_icmp_errors_total{namespace="",pod="netns:p001",direction="received",kind="frag_needed"} 2"#,
        ] {
            assert!(
                own.contains(&expected),
                "missing {expected}:\n{}",
                own.join("\n")
            );
        }
    }

    #[test]
    fn a_quiet_pod_has_no_conversation_series() {
        let mut sample_text = render_busy(0, 10);
        sample_text.retain(|c| c != '\r');
        for name in [
            "nettune_dns_",
            "nettune_tcp_connects",
            "nettune_icmp_",
            "nettune_tcp_resets",
        ] {
            assert!(
                !sample_text.lines().any(|l| l.starts_with(name)),
                "{name} without activity"
            );
        }
    }

    #[test]
    fn folded_pods_sum_their_conversations_and_latency_under_other() {
        let text = render_busy(3, 1);
        assert_eq!(
            series(&text, "nettune_dns_unanswered_total"),
            [
                r#"nettune_dns_unanswered_total{namespace="",pod="_other"} 4"#,
                r#"nettune_dns_unanswered_total{namespace="",pod="netns:p001"} 2"#,
            ]
        );
        assert!(
            text.contains(
                r#"nettune_dns_latency_seconds_bucket{namespace="",pod="_other",le="1"} 14"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"nettune_dns_latency_seconds_count{namespace="",pod="_other"} 16"#)
        );
        // Everything the pod has, `_other` has.
        let name = |l: &str| l.split('{').next().unwrap().to_owned();
        let own: std::collections::BTreeSet<String> = series_of(&text, "netns:p001")
            .into_iter()
            .map(name)
            .collect();
        let other: std::collections::BTreeSet<String> =
            series_of(&text, "_other").into_iter().map(name).collect();
        assert_eq!(own, other);
    }
}
