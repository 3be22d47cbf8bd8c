//! A path whose MTU is smaller than a pod's packets: the network answers with
//! ICMP "fragmentation needed" (IPv6: "packet too big"), the pod's TCP lowers its
//! segment size if the ICMP gets through — and hangs on large transfers where a
//! firewall filters it (a PMTU blackhole). Advice only.

use super::{Observation, Rule, Scene, Severity};
use crate::model::{snapshot::WorkloadFigures, tunables::TCP_MTU_PROBING, workload::WorkloadKind};

/// The ICMP kind counted for "fragmentation needed" / "packet too big".
pub const FRAG_NEEDED: &str = "frag_needed";

/// Frag-needed / packet-too-big errors reaching a pod.
pub static PATH_MTU: Rule = Rule {
    name: "path_mtu",
    problem: "large transfers hang or stall: a path MTU smaller than the pod's",
    evidence_name: "ICMP fragmentation-needed errors received",
    sysctls: &[],
    evidence: |netns, snapshot, _| {
        let icmp = &snapshot.workload(netns)?.conversations.as_ref()?.icmp;
        icmp.received.get(FRAG_NEEDED).map(super::counted)
    },
    observe,
    when_ineffective: "",
};

/// The node's drops whose reason says a packet was too big or its fragments lost.
fn size_drops(node: Option<&WorkloadFigures>) -> Vec<String> {
    node.map(|n| {
        n.drops_by_reason
            .iter()
            .filter(|(reason, c)| {
                (reason.starts_with("PKT_TOO_BIG") || reason.starts_with("FRAG")) && c.total > 0
            })
            .map(|(reason, c)| format!("{reason} {}", c.total))
            .collect()
    })
    .unwrap_or_default()
}

fn observe(scene: &Scene<'_>) -> Option<Observation> {
    let icmp = &scene.workload.conversations.as_ref()?.icmp;
    let needed = icmp.received.get(FRAG_NEEDED)?;
    if needed.total == 0 {
        return None;
    }
    let mtu = icmp
        .smallest_mtu
        .map_or_else(|| "not given".to_owned(), |m| m.to_string());
    let mut evidence = format!(
        "{}: {} ICMP fragmentation-needed / packet-too-big errors received ({:.1}/s); the \
         smallest MTU reported: {mtu}",
        scene.who(),
        needed.total,
        needed.per_second
    );
    let node = scene
        .snapshot
        .workloads
        .iter()
        .find(|n| n.workload.kind == WorkloadKind::Node);
    let drops = size_drops(node);
    if !drops.is_empty() {
        evidence.push_str(&format!("; the node dropped {}", drops.join(", ")));
    }
    Some(Observation {
        rule: &PATH_MTU,
        netns: scene.workload.netns,
        severity: Severity::Warning,
        evidence,
        fix: format!(
            "set the pod network's MTU to at most {mtu} (the CNI's `mtu`, which must be the \
             uplink's MTU less the encapsulation's overhead: VXLAN 50, Geneve 50+, WireGuard \
             60/80); where ICMP may be filtered on the path, `{}={}` lets TCP find the MTU \
             without it",
            TCP_MTU_PROBING.name,
            TCP_MTU_PROBING.guide.unwrap_or("1")
        ),
        changes: Vec::new(),
    })
}
