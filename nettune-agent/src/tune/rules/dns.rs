//! A pod's DNS failing or slow: queries with no answer within `dns.timeout_seconds`,
//! servers answering SERVFAIL or REFUSED, answers that take over a second. Advice
//! only: no sysctl makes a DNS server answer.

use super::{Observation, Rule, Scene, Severity};
use crate::model::{
    conversations::{DnsFigures, DnsServerFigures},
    snapshot::Snapshot,
};

/// Share of answered queries slower than the histogram's middle bound (1 s)
/// above which DNS is slow.
pub const SLOW_SHARE: f64 = 0.05;
/// Answered queries, at least, before the slow share means anything.
pub const MIN_ANSWERED: u64 = 20;
/// Share of responses that are failures (SERVFAIL, REFUSED, …) worth a finding.
pub const FAILURE_SHARE: f64 = 0.05;

/// DNS queries unanswered, failed or slow.
pub static DNS_FAILURES: Rule = Rule {
    name: "dns_failures",
    problem: "DNS slow or failing: queries time out, servers fail, lookups take seconds",
    evidence_name: "unanswered DNS queries",
    sysctls: &[],
    evidence: |netns, snapshot, _| {
        let dns = &snapshot.workload(netns)?.conversations.as_ref()?.dns;
        Some(super::counted(&dns.unanswered))
    },
    observe,
    when_ineffective: "",
};

/// Answered queries slower than 1 s and all answered queries, cumulative.
fn slow(dns: &DnsFigures) -> (u64, u64) {
    let beyond_second = dns
        .latency
        .buckets
        .iter()
        .find(|(bound, _)| (*bound - 1.0).abs() < 1e-9)
        .map_or(0, |(_, upto)| dns.latency.count.saturating_sub(*upto));
    (beyond_second, dns.latency.count)
}

/// The servers that left queries unanswered or failed them, worst first, as text.
fn failing_servers(snapshot: &Snapshot) -> String {
    let mut servers: Vec<&DnsServerFigures> = snapshot
        .dns_servers
        .iter()
        .filter(|s| s.dns.unanswered.total > 0 || s.dns.failures().total > 0)
        .collect();
    servers.sort_by_key(|s| std::cmp::Reverse(s.dns.unanswered.total + s.dns.failures().total));
    servers
        .iter()
        .take(3)
        .map(|s| {
            format!(
                "{} ({} unanswered, {} failed of {} queries)",
                s.server,
                s.dns.unanswered.total,
                s.dns.failures().total,
                s.dns.queries.total
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn observe(scene: &Scene<'_>) -> Option<Observation> {
    let dns = &scene.workload.conversations.as_ref()?.dns;
    let responses = dns.responses_total();
    let failures = dns.failures();
    let (slow, answered) = slow(dns);
    let unanswered = dns.unanswered.per_second > 0.0;
    let failing = failures.per_second > 0.0
        && failures.per_second >= FAILURE_SHARE * responses.per_second.max(f64::MIN_POSITIVE);
    let is_slow = answered >= MIN_ANSWERED && slow as f64 >= SLOW_SHARE * answered as f64;
    if !unanswered && !failing && !is_slow {
        return None;
    }
    let mut parts = vec![format!(
        "{}: {:.1} DNS queries/s, {:.1} unanswered/s ({} in all)",
        scene.who(),
        dns.queries.per_second,
        dns.unanswered.per_second,
        dns.unanswered.total
    )];
    if failures.total > 0 {
        let codes: Vec<String> = dns
            .responses
            .iter()
            .filter(|(code, r)| *code != "NOERROR" && *code != "NXDOMAIN" && r.total > 0)
            .map(|(code, r)| format!("{code} {}", r.total))
            .collect();
        parts.push(format!("failed responses: {}", codes.join(", ")));
    }
    if dns.retries.total > 0 {
        parts.push(format!("{} queries sent again", dns.retries.total));
    }
    if answered > 0 {
        parts.push(format!(
            "{slow} of {answered} answers took over 1 s, mean {:.1} ms",
            dns.latency.mean_seconds().unwrap_or(0.0) * 1000.0
        ));
    }
    let servers = failing_servers(scene.snapshot);
    if !servers.is_empty() {
        parts.push(format!("servers: {servers}"));
    }
    Some(Observation {
        rule: &DNS_FAILURES,
        netns: scene.workload.netns,
        severity: if unanswered || failing {
            Severity::Critical
        } else {
            Severity::Warning
        },
        evidence: parts.join("; "),
        fix: "check the DNS servers named above (CoreDNS: its pods' readiness, CPU and \
              `kubectl -n kube-system logs -l k8s-app=kube-dns`); run NodeLocal DNSCache so \
              pods ask a cache on their node; cut search-domain queries with a lower ndots \
              (`dnsConfig.options: [{name: ndots, value: \"2\"}]`, many NXDOMAIN answers show \
              them); answers slower than 1 s are usually a lost query sent again"
            .to_owned(),
        changes: Vec::new(),
    })
}
