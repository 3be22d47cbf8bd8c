//! Packets dropped before the stack: a CPU's input backlog
//! (`netdev_max_backlog`) was full — counted by `softnet_stat` and, with eBPF,
//! as `CPU_BACKLOG` drops.

use super::{Change, Evidence, Observation, Place, Rule, Scene, Severity};
use crate::model::{snapshot::Snapshot, tunables::NETDEV_MAX_BACKLOG};

/// The node's backlog drops: the larger of the two counts of the same event.
fn backlog_drops(snapshot: &Snapshot) -> Evidence {
    let by_reason = snapshot
        .workloads
        .iter()
        .filter_map(|w| w.drops_by_reason.get("CPU_BACKLOG"))
        .chain(snapshot.unattributed_drops.get("CPU_BACKLOG"))
        .fold(Evidence::default(), |mut e, c| {
            e.total += c.total;
            e
        });
    let by_reason = Evidence {
        per_second: snapshot.totals.backlog_drops_per_second,
        ..by_reason
    };
    match &snapshot.softnet_dropped {
        Some(s) if s.per_second >= by_reason.per_second => Evidence {
            total: s.total,
            per_second: s.per_second,
            pressure: false,
        },
        _ => by_reason,
    }
}

/// Per-CPU input queues overflow: raise `netdev_max_backlog` (node-wide).
pub static BACKLOG_DROPS: Rule = Rule {
    name: "backlog_drops",
    problem: "packets dropped before the stack: the per-CPU input backlog is full",
    evidence_name: "input-backlog drops",
    sysctls: &[&NETDEV_MAX_BACKLOG],
    evidence: |_, snapshot, _| Some(backlog_drops(snapshot)),
    observe,
    when_ineffective: "the CPU taking the packets is saturated: spread the load (RSS, RPS) \
                       rather than queue more",
};

fn observe(scene: &Scene<'_>) -> Option<Observation> {
    if !scene.is_node() {
        return None;
    }
    let drops = backlog_drops(scene.snapshot);
    if drops.per_second <= 0.0 {
        return None;
    }
    Some(Observation {
        rule: &BACKLOG_DROPS,
        netns: scene.workload.netns,
        severity: Severity::Warning,
        evidence: format!(
            "{:.1} packets/s dropped on full per-CPU input backlogs ({} since boot)",
            drops.per_second, drops.total
        ),
        fix: format!(
            "raise {} (guide: {}) and check RPS/IRQ spreading",
            NETDEV_MAX_BACKLOG.name,
            NETDEV_MAX_BACKLOG.guide.unwrap_or("more")
        ),
        changes: vec![Change::raise(&NETDEV_MAX_BACKLOG, Place::Node)],
    })
}
