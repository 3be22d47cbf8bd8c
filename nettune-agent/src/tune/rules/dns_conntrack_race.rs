//! The conntrack insertion race behind "5-second DNS timeouts": a pod's resolver
//! sends its A and AAAA queries from one socket at once; both packets create the
//! same conntrack entry on two CPUs, one insertion fails and its packet is
//! dropped, and the resolver waits its timeout (glibc: 5 s) before asking again.
//! The evidence is the join: the pod's DNS unanswered or sent again, with
//! conntrack insertions failing (or clashes resolved) in its namespace or on the
//! node, where a Service's DNAT entries live. Advice only: no sysctl closes it.

use super::{Observation, Rule, Scene, Severity};
use crate::model::{
    snapshot::{ConntrackFigures, WorkloadFigures},
    workload::WorkloadKind,
};

/// Unanswered or repeated DNS queries joined with conntrack insert failures.
pub static DNS_CONNTRACK_RACE: Rule = Rule {
    name: "dns_conntrack_race",
    problem: "DNS lookups that take 5 s: the conntrack insertion race on parallel A/AAAA queries",
    evidence_name: "conntrack insertions failed",
    sysctls: &[],
    evidence: |netns, snapshot, _| {
        let ct = snapshot.workload(netns)?.conntrack.as_ref()?;
        Some(super::counted(&ct.insert_failed))
    },
    observe,
    when_ineffective: "",
};

/// Where a namespace's conntrack races show: its own table, and the node's.
fn races<'a>(
    workload: &'a WorkloadFigures,
    node: Option<&'a WorkloadFigures>,
) -> impl Iterator<Item = (&'a str, &'a ConntrackFigures)> {
    let own = workload.conntrack.as_ref().map(|c| ("its namespace", c));
    let node = node
        .filter(|n| n.netns != workload.netns)
        .and_then(|n| n.conntrack.as_ref())
        .map(|c| ("the node", c));
    own.into_iter().chain(node)
}

fn observe(scene: &Scene<'_>) -> Option<Observation> {
    let w = scene.workload;
    let dns = &w.conversations.as_ref()?.dns;
    if dns.unanswered.total == 0 && dns.retries.total == 0 {
        return None;
    }
    let node = scene
        .snapshot
        .workloads
        .iter()
        .find(|n| n.workload.kind == WorkloadKind::Node);
    let racing: Vec<String> = races(w, node)
        .filter(|(_, ct)| ct.insert_failed.total > 0 || ct.clash_resolve.total > 0)
        .map(|(place, ct)| {
            format!(
                "{place}: {} conntrack insertions failed, {} clashes resolved",
                ct.insert_failed.total, ct.clash_resolve.total
            )
        })
        .collect();
    if racing.is_empty() {
        return None;
    }
    let now = races(w, node).any(|(_, ct)| ct.insert_failed.per_second > 0.0);
    Some(Observation {
        rule: &DNS_CONNTRACK_RACE,
        netns: w.netns,
        severity: if now {
            Severity::Critical
        } else {
            Severity::Warning
        },
        evidence: format!(
            "{}: {} DNS queries unanswered and {} sent again (glibc resends after its 5 s \
             timeout); {}",
            scene.who(),
            dns.unanswered.total,
            dns.retries.total,
            racing.join("; ")
        ),
        fix: "run NodeLocal DNSCache (queries to a link-local cache, no DNAT race; TCP \
              upstream); or in the pod's dnsConfig `options: [{name: single-request-reopen}]` \
              (A and AAAA from different sockets) or `[{name: use-vc}]` (DNS over TCP); musl \
              (Alpine) resolvers ignore both options: use the cache"
            .to_owned(),
        changes: Vec::new(),
    })
}
