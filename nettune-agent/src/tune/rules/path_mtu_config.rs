//! The pods' MTU larger than what the node's uplink carries once the CNI's
//! encapsulation is added: every full-size packet between nodes is fragmented,
//! or dropped where DF is set — large transfers stall while small requests work.
//! Advice only: the MTU is the CNI's setting.

use super::{Observation, Rule, Scene, Severity, pmtu::FRAG_NEEDED};

/// Pods' veth MTU above the uplink's MTU less the encapsulation overhead.
pub static POD_MTU: Rule = Rule {
    name: "pod_mtu",
    problem: "large transfers between nodes stall: the pods' MTU exceeds the uplink's less the encapsulation",
    evidence_name: "bytes the pods' MTU exceeds the path's",
    sysctls: &[],
    evidence: |_, snapshot, _| {
        let c = snapshot.context.as_ref()?;
        let excess = c.pod_mtu?.saturating_sub(c.path_mtu()?);
        Some(super::Evidence {
            total: u64::from(excess),
            per_second: 0.0,
            pressure: excess > 0,
        })
    },
    observe,
    when_ineffective: "",
};

fn observe(scene: &Scene<'_>) -> Option<Observation> {
    if !scene.is_node() {
        return None;
    }
    let c = scene.snapshot.context.as_ref()?;
    let (uplink, uplink_mtu) = c.uplink.as_ref()?;
    let (pod_mtu, path_mtu) = (c.pod_mtu?, c.path_mtu()?);
    if pod_mtu <= path_mtu {
        return None;
    }
    let frag_needed: u64 = scene
        .snapshot
        .workloads
        .iter()
        .filter_map(|w| w.conversations.as_ref()?.icmp.received.get(FRAG_NEEDED))
        .map(|c| c.total)
        .sum();
    Some(Observation {
        rule: &POD_MTU,
        netns: scene.workload.netns,
        severity: Severity::Warning,
        evidence: format!(
            "pods' interfaces have MTU {pod_mtu}; {uplink} carries {uplink_mtu}, less {} bytes \
             of {} ({}): {path_mtu} fits; pods received {frag_needed} fragmentation-needed \
             errors",
            c.overhead_bytes, c.encapsulation, c.cni
        ),
        fix: format!(
            "set the CNI's MTU to {path_mtu} (Calico: `veth_mtu`; Cilium: `--mtu`; Flannel: \
             the MTU it derives from the uplink, check `/run/flannel/subnet.env`), or raise the \
             uplink's MTU if the network carries it (jumbo frames)"
        ),
        changes: Vec::new(),
    })
}
