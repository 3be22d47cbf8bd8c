//! A pod's TCP connections refused or timing out: a Service without ready
//! endpoints, a port nothing listens on, a policy or a full queue dropping SYNs.
//! Advice only: the remotes that fail most are named, for the operator to look at.

use super::{Observation, Rule, Scene, Severity};
use crate::model::snapshot::Snapshot;

/// Share of a pod's connection attempts failing above which it is a finding.
pub const FAILURE_SHARE: f64 = 0.05;

/// Handshakes refused or timed out.
pub static CONNECT_FAILURES: Rule = Rule {
    name: "connect_failures",
    problem: "connections to a Service time out or are refused",
    evidence_name: "TCP handshakes timed out",
    sysctls: &[],
    evidence: |netns, snapshot, _| {
        let c = &snapshot.workload(netns)?.conversations.as_ref()?.connects;
        Some(super::counted(&c.timed_out))
    },
    observe,
    when_ineffective: "",
};

/// The remotes failing most, as text.
fn worst_remotes(snapshot: &Snapshot) -> String {
    snapshot
        .connect_failures
        .iter()
        .take(3)
        .map(|r| {
            format!(
                "{} ({} refused, {} timed out)",
                r.remote, r.refused.total, r.timed_out.total
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn observe(scene: &Scene<'_>) -> Option<Observation> {
    let c = &scene.workload.conversations.as_ref()?.connects;
    let failing = c.refused.per_second + c.timed_out.per_second;
    if failing <= 0.0 || failing < FAILURE_SHARE * c.attempts.per_second {
        return None;
    }
    let mut evidence = format!(
        "{}: {:.1} connects/s, {:.1}/s refused and {:.1}/s timed out ({} and {} in all), {} \
         SYNs sent again",
        scene.who(),
        c.attempts.per_second,
        c.refused.per_second,
        c.timed_out.per_second,
        c.refused.total,
        c.timed_out.total,
        c.syn_retransmits.total
    );
    let remotes = worst_remotes(scene.snapshot);
    if !remotes.is_empty() {
        evidence.push_str(&format!("; failing most (all pods): {remotes}"));
    }
    Some(Observation {
        rule: &CONNECT_FAILURES,
        netns: scene.workload.netns,
        severity: if c.timed_out.per_second > 0.0 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        evidence,
        fix: "refused: nothing listens there — a Service whose targetPort does not match the \
              container, or a server not started (`kubectl get endpoints`); timed out: SYNs \
              dropped on the way — a NetworkPolicy, a Service with no ready endpoints, a \
              firewall, or the server's listen queue overflowing (see listen overflows and \
              conntrack on its node)"
            .to_owned(),
        changes: Vec::new(),
    })
}
