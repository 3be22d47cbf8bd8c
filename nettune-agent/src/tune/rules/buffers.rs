//! Packets dropped on full socket receive buffers (`SOCKET_RCVBUFF`).

use super::{Change, Observation, Place, Rule, Scene, Severity, counted};
use crate::model::tunables::{RMEM_MAX, TCP_RMEM};

/// The drop reason this rule watches.
const REASON: &str = "SOCKET_RCVBUFF";

/// Receive buffers overflow: let sockets ask for more (`rmem_max`, node-wide)
/// and give TCP more by default (`tcp_rmem`, per namespace).
pub static RECEIVE_BUFFER_DROPS: Rule = Rule {
    name: "receive_buffer_drops",
    problem: "packet loss on busy sockets: receive buffers full",
    evidence_name: "receive-buffer drops",
    sysctls: &[&RMEM_MAX, &TCP_RMEM],
    evidence: |netns, snapshot, _| {
        let w = snapshot.workload(netns)?;
        Some(
            w.drops_by_reason
                .get(REASON)
                .map_or_else(Default::default, counted),
        )
    },
    observe,
    when_ineffective: "the application does not read its sockets fast enough: bigger buffers \
                       only delay the drops",
};

fn observe(scene: &Scene<'_>) -> Option<Observation> {
    let w = scene.workload;
    let drops = w
        .drops_by_reason
        .get(REASON)
        .filter(|f| f.per_second > 0.0)?;
    Some(Observation {
        rule: &RECEIVE_BUFFER_DROPS,
        netns: w.netns,
        severity: Severity::Warning,
        evidence: format!(
            "{:.1} packets/s dropped on full receive buffers in {}",
            drops.per_second,
            scene.who()
        ),
        fix: format!(
            "raise {} (guide: {}) and {} (guide: {}), and check that the application reads \
             fast enough",
            RMEM_MAX.name,
            RMEM_MAX.guide.unwrap_or("more"),
            TCP_RMEM.name,
            TCP_RMEM.guide.unwrap_or("more")
        ),
        // rmem_max is node-wide: tuned for the node, whoever dropped.
        changes: vec![
            Change::raise(&RMEM_MAX, Place::Node),
            Change::raise(&TCP_RMEM, Place::Workload),
        ],
    })
}
