//! What the pods' conversations look like to people: DNS as a client (answers by
//! code, latency, what was never answered), TCP handshakes (answered, refused,
//! timed out) and resets, ICMP errors — per pod, per DNS server, and per remote
//! the pods failed to reach. Built from two Samples like the rest of the
//! [`Snapshot`](super::snapshot::Snapshot).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use nettune_common::{
    Conversations, DnsCounters,
    traffic::{DNS_LATENCY_BOUNDS_NS, DNS_RCODES, ICMP_KINDS},
};
use serde::{Deserialize, Serialize};

use super::{
    counter::CounterRate,
    sample::{DnsServerSample, InterfaceSample, RemoteSample},
};

/// Remotes the Snapshot lists (the most failed-against first).
pub const REMOTES_SHOWN: usize = 16;

/// DNS servers the Snapshot lists (the most asked first).
pub const DNS_SERVERS_SHOWN: usize = 16;

/// DNS response latencies, as a cumulative histogram.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// `(upper bound in seconds, responses at or under it)`, bounds ascending;
    /// every response is under +Inf, i.e. `count`.
    pub buckets: Vec<(f64, u64)>,
    /// Responses timed (those matching a query nettune saw sent).
    pub count: u64,
    /// Their latencies' sum, in seconds.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    fn of(d: &DnsCounters) -> Self {
        let mut cumulative = 0;
        let buckets = DNS_LATENCY_BOUNDS_NS
            .iter()
            .zip(d.latency_buckets)
            .map(|(bound, n)| {
                cumulative += n;
                (*bound as f64 / 1e9, cumulative)
            })
            .collect();
        Self {
            buckets,
            count: d.latency_buckets.iter().sum(),
            sum_seconds: d.latency_sum_ns as f64 / 1e9,
        }
    }

    /// The mean latency in seconds, if anything was timed.
    pub fn mean_seconds(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_seconds / self.count as f64)
    }

    /// Adds another histogram of the same bounds (to sum workloads).
    pub fn add(&mut self, other: &Self) {
        if self.buckets.is_empty() {
            self.buckets.clone_from(&other.buckets);
        } else {
            for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
                mine.1 += theirs.1;
            }
        }
        self.count += other.count;
        self.sum_seconds += other.sum_seconds;
    }
}

/// DNS as a client: a pod's, or every pod's towards one server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsFigures {
    /// Queries sent (a retry is not a new query).
    pub queries: CounterRate,
    /// The same query sent again while unanswered.
    pub retries: CounterRate,
    /// Queries no response came for within `dns.timeout_seconds`.
    pub unanswered: CounterRate,
    /// Responses with the TC bit: the answer did not fit in UDP.
    pub truncated: CounterRate,
    /// Responses by code name (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, …; `OTHER`),
    /// codes seen only.
    pub responses: BTreeMap<String, CounterRate>,
    /// Latency of the responses that matched a query.
    pub latency: LatencyHistogram,
}

impl DnsFigures {
    fn new(
        now: &DnsCounters,
        unanswered: u64,
        before: Option<(&DnsCounters, u64)>,
        elapsed: f64,
    ) -> Self {
        let rate =
            |f: fn(&DnsCounters) -> u64| CounterRate::new(f(now), before.map(|b| f(b.0)), elapsed);
        let responses = DNS_RCODES
            .iter()
            .enumerate()
            .filter(|(i, _)| now.rcodes[*i] > 0)
            .map(|(i, name)| {
                let prev = before.map(|b| b.0.rcodes[i]);
                (
                    (*name).to_owned(),
                    CounterRate::new(now.rcodes[i], prev, elapsed),
                )
            })
            .collect();
        Self {
            queries: rate(|d| d.queries),
            retries: rate(|d| d.retries),
            unanswered: CounterRate::new(unanswered, before.map(|b| b.1), elapsed),
            truncated: rate(|d| d.truncated),
            responses,
            latency: LatencyHistogram::of(now),
        }
    }

    /// Responses of every code.
    pub fn responses_total(&self) -> CounterRate {
        let mut all = CounterRate::default();
        for r in self.responses.values() {
            all.add(r);
        }
        all
    }

    /// Responses that said the name could not be resolved by the server
    /// (`SERVFAIL`, `REFUSED`, …: every code but `NOERROR` and `NXDOMAIN`,
    /// which are answers).
    pub fn failures(&self) -> CounterRate {
        let mut failed = CounterRate::default();
        for (code, r) in &self.responses {
            if code != "NOERROR" && code != "NXDOMAIN" {
                failed.add(r);
            }
        }
        failed
    }

    /// Adds another pod's figures (to sum workloads).
    pub fn add(&mut self, other: &Self) {
        self.queries.add(&other.queries);
        self.retries.add(&other.retries);
        self.unanswered.add(&other.unanswered);
        self.truncated.add(&other.truncated);
        for (code, r) in &other.responses {
            self.responses.entry(code.clone()).or_default().add(r);
        }
        self.latency.add(&other.latency);
    }
}

/// The TCP handshakes a pod started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectFigures {
    /// SYNs sent (retransmissions not counted).
    pub attempts: CounterRate,
    /// Answered with a SYN-ACK.
    pub answered: CounterRate,
    /// Refused with an RST (nothing listening, or a firewall's reject).
    pub refused: CounterRate,
    /// Neither within `tcp.handshake_timeout_seconds`.
    pub timed_out: CounterRate,
    /// SYNs sent again while waiting.
    pub syn_retransmits: CounterRate,
}

/// ICMP errors a pod sent or received, by kind ([`ICMP_KINDS`]; kinds seen only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IcmpFigures {
    /// Errors the pod received (an unreachable peer, a too small MTU on the path).
    pub received: BTreeMap<String, CounterRate>,
    /// Errors the pod sent (e.g. port unreachable for a UDP datagram to a closed port).
    pub sent: BTreeMap<String, CounterRate>,
    /// The smallest MTU a "fragmentation needed" / "packet too big" it received
    /// reported.
    pub smallest_mtu: Option<u64>,
}

/// A pod's conversations, as the tc programs on its veth saw them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationFigures {
    /// DNS, as a client.
    pub dns: DnsFigures,
    /// Handshakes it started.
    pub connects: ConnectFigures,
    /// RSTs it sent.
    pub resets_sent: CounterRate,
    /// RSTs it received (but those refusing its handshakes).
    pub resets_received: CounterRate,
    /// ICMP errors.
    pub icmp: IcmpFigures,
}

fn icmp_kinds(
    now: &[u64; 7],
    before: Option<&[u64; 7]>,
    elapsed: f64,
) -> BTreeMap<String, CounterRate> {
    ICMP_KINDS
        .iter()
        .enumerate()
        .filter(|(i, _)| now[*i] > 0)
        .map(|(i, kind)| {
            let rate = CounterRate::new(now[i], before.map(|b| b[i]), elapsed);
            ((*kind).to_owned(), rate)
        })
        .collect()
}

impl ConversationFigures {
    /// The figures of an interface's pod, if the programs watch it.
    pub fn of(
        now: &InterfaceSample,
        before: Option<&InterfaceSample>,
        elapsed: f64,
    ) -> Option<Self> {
        let c = now.conversations.as_ref()?;
        // An interface the programs only just watch has nothing to rate against.
        let b = before.and_then(|b| Some((b.conversations.as_ref()?, b)));
        let rate =
            |f: fn(&Conversations) -> u64| CounterRate::new(f(c), b.map(|(p, _)| f(p)), elapsed);
        Some(Self {
            dns: DnsFigures::new(
                &c.dns,
                now.dns_unanswered,
                b.map(|(p, s)| (&p.dns, s.dns_unanswered)),
                elapsed,
            ),
            connects: ConnectFigures {
                attempts: rate(|c| c.connect_attempts),
                answered: rate(|c| c.connects_answered),
                refused: rate(|c| c.connects_refused),
                timed_out: CounterRate::new(
                    now.connects_timed_out,
                    b.map(|(_, s)| s.connects_timed_out),
                    elapsed,
                ),
                syn_retransmits: rate(|c| c.syn_retransmits),
            },
            resets_sent: rate(|c| c.resets_sent),
            resets_received: rate(|c| c.resets_received),
            icmp: IcmpFigures {
                received: icmp_kinds(&c.icmp_received, b.map(|(p, _)| &p.icmp_received), elapsed),
                sent: icmp_kinds(&c.icmp_sent, b.map(|(p, _)| &p.icmp_sent), elapsed),
                smallest_mtu: (c.smallest_mtu > 0).then_some(c.smallest_mtu),
            },
        })
    }
}

/// DNS towards one server, every pod together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnsServerFigures {
    /// The server's address.
    pub server: IpAddr,
    /// What the pods asked it and what it answered.
    pub dns: DnsFigures,
}

/// One of [`DNS_SERVERS_SHOWN`] servers the pods asked most, most asked first.
pub fn dns_servers(
    now: &BTreeMap<IpAddr, DnsServerSample>,
    before: Option<&BTreeMap<IpAddr, DnsServerSample>>,
    elapsed: f64,
) -> Vec<DnsServerFigures> {
    let mut servers: Vec<DnsServerFigures> = now
        .iter()
        .map(|(server, s)| {
            let prev = before
                .and_then(|b| b.get(server))
                .map(|p| (&p.counters, p.unanswered));
            DnsServerFigures {
                server: *server,
                dns: DnsFigures::new(&s.counters, s.unanswered, prev, elapsed),
            }
        })
        .collect();
    servers.sort_by(|a, b| {
        b.dns
            .queries
            .total
            .cmp(&a.dns.queries.total)
            .then(a.server.cmp(&b.server))
    });
    servers.truncate(DNS_SERVERS_SHOWN);
    servers
}

/// A remote the pods' handshakes failed against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteFigures {
    /// Its address and port (a Service's cluster IP, a pod, an outside host).
    pub remote: SocketAddr,
    /// Handshakes it refused with an RST.
    pub refused: CounterRate,
    /// Handshakes that got no answer in time.
    pub timed_out: CounterRate,
}

/// The [`REMOTES_SHOWN`] remotes with the most failed handshakes, the most
/// failing now first (then the most failed so far).
pub fn connect_failures(
    now: &BTreeMap<SocketAddr, RemoteSample>,
    before: Option<&BTreeMap<SocketAddr, RemoteSample>>,
    elapsed: f64,
) -> Vec<RemoteFigures> {
    let mut remotes: Vec<RemoteFigures> = now
        .iter()
        .map(|(remote, r)| {
            let prev = before.and_then(|b| b.get(remote));
            RemoteFigures {
                remote: *remote,
                refused: CounterRate::new(r.refused, prev.map(|p| p.refused), elapsed),
                timed_out: CounterRate::new(r.timed_out, prev.map(|p| p.timed_out), elapsed),
            }
        })
        .collect();
    let key = |r: &RemoteFigures| {
        (
            r.refused.per_second + r.timed_out.per_second,
            r.refused.total + r.timed_out.total,
        )
    };
    remotes.sort_by(|a, b| {
        let (ra, ta) = key(a);
        let (rb, tb) = key(b);
        rb.total_cmp(&ra)
            .then(tb.cmp(&ta))
            .then(a.remote.cmp(&b.remote))
    });
    remotes.truncate(REMOTES_SHOWN);
    remotes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(queries: u64, nxdomain: u64, fast: u64) -> DnsCounters {
        let mut d = DnsCounters {
            queries,
            responses: nxdomain + fast,
            ..DnsCounters::default()
        };
        d.rcodes[0] = fast;
        d.rcodes[3] = nxdomain;
        d.latency_buckets[0] = fast;
        d.latency_buckets[1] = nxdomain;
        d.latency_sum_ns = fast * 1_000_000 + nxdomain * 100_000_000;
        d
    }

    #[test]
    fn dns_figures_name_codes_seen_and_build_a_cumulative_histogram() {
        let f = DnsFigures::new(&dns(10, 2, 6), 2, Some((&dns(4, 0, 2), 1)), 2.0);
        assert_eq!(f.queries.per_second, 3.0);
        assert_eq!(f.unanswered.per_second, 0.5);
        assert_eq!(
            f.responses.keys().collect::<Vec<_>>(),
            ["NOERROR", "NXDOMAIN"]
        );
        assert_eq!(f.responses_total().total, 8);
        assert_eq!(f.failures().total, 0, "NXDOMAIN is an answer");
        assert_eq!(f.latency.buckets, [(0.01, 6), (1.0, 8)]);
        assert_eq!(f.latency.count, 8);
        assert!((f.latency.mean_seconds().unwrap() - 0.206 / 8.0).abs() < 1e-9);
        let mut sum = f.clone();
        sum.add(&f);
        assert_eq!(sum.latency.buckets[1], (1.0, 16));
        assert_eq!(sum.responses["NXDOMAIN"].total, 4);
    }

    #[test]
    fn an_interface_just_watched_has_totals_and_no_rates() {
        let now = InterfaceSample {
            conversations: Some(Conversations {
                connect_attempts: 5,
                connects_refused: 1,
                smallest_mtu: 1400,
                icmp_received: [0, 0, 0, 2, 0, 0, 0],
                ..Conversations::default()
            }),
            connects_timed_out: 1,
            ..InterfaceSample::default()
        };
        let before = InterfaceSample::default();
        let f = ConversationFigures::of(&now, Some(&before), 1.0).unwrap();
        assert_eq!(
            (f.connects.attempts.total, f.connects.attempts.per_second),
            (5, 0.0)
        );
        assert_eq!(f.connects.timed_out.total, 1);
        assert_eq!(f.icmp.received["frag_needed"].total, 2);
        assert_eq!(f.icmp.smallest_mtu, Some(1400));
        assert!(ConversationFigures::of(&before, None, 1.0).is_none());
    }

    #[test]
    fn remotes_failing_now_come_first_and_at_most_sixteen_are_shown() {
        let now: BTreeMap<SocketAddr, RemoteSample> = (0..20u8)
            .map(|i| {
                let remote = SocketAddr::from(([10, 96, 0, i], 80));
                (
                    remote,
                    RemoteSample {
                        refused: u64::from(i),
                        timed_out: 0,
                    },
                )
            })
            .collect();
        let mut before = now.clone();
        before
            .get_mut(&SocketAddr::from(([10, 96, 0, 1], 80)))
            .unwrap()
            .refused = 0;
        let shown = connect_failures(&now, Some(&before), 1.0);
        assert_eq!(shown.len(), REMOTES_SHOWN);
        assert_eq!(shown[0].remote, SocketAddr::from(([10, 96, 0, 1], 80)));
        assert_eq!(shown[1].remote, SocketAddr::from(([10, 96, 0, 19], 80)));
    }
}
