//! The conntrack table (nearly) full: new connections fail.

use super::{Change, Evidence, Observation, Place, Rule, Scene, Severity, counted};
use crate::model::tunables::{NF_CONNTRACK_BUCKETS, NF_CONNTRACK_MAX};

/// Usage at which a full table is critical rather than a warning.
pub const CRITICAL_USAGE: f64 = 0.95;

/// Entries over limit, when both are known.
pub fn usage(entries: u64, max: Option<u64>) -> Option<f64> {
    max.filter(|m| *m > 0).map(|m| entries as f64 / m as f64)
}

/// The table is over `tuning.conntrack_threshold`, dropping or evicting: grow
/// `nf_conntrack_max` and its hash with it.
pub static CONNTRACK_FULL: Rule = Rule {
    name: "conntrack_full",
    problem: "conntrack table full: new connections fail",
    evidence_name: "conntrack drops",
    sysctls: &[&NF_CONNTRACK_MAX, &NF_CONNTRACK_BUCKETS],
    evidence: |netns, snapshot, config| {
        let ct = snapshot.workload(netns)?.conntrack.as_ref()?;
        Some(Evidence {
            pressure: usage(ct.entries, snapshot.conntrack_max)
                .is_some_and(|u| u >= config.conntrack_threshold),
            ..counted(&ct.drop)
        })
    },
    observe,
    when_ineffective: "entries keep up with the limit, so connections are not being released \
                       (a leak, or long timeouts such as nf_conntrack_tcp_timeout_established): \
                       find who holds them with `conntrack -L` before raising again",
};

fn observe(scene: &Scene<'_>) -> Option<Observation> {
    let w = scene.workload;
    let ct = w.conntrack.as_ref()?;
    let max = scene.snapshot.conntrack_max?;
    let usage = usage(ct.entries, Some(max))?;
    let dropping = ct.drop.per_second > 0.0 || ct.early_drop.per_second > 0.0;
    if usage < scene.config.conntrack_threshold && !dropping {
        return None;
    }
    let guide = NF_CONNTRACK_MAX
        .guide
        .and_then(|g| g.parse::<u64>().ok())
        .unwrap_or(0);
    let proposed = (max * 2).max(guide);
    Some(Observation {
        rule: &CONNTRACK_FULL,
        netns: w.netns,
        severity: if usage >= CRITICAL_USAGE || ct.drop.per_second > 0.0 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        evidence: format!(
            "{}: {} of {max} conntrack entries ({:.0} %), {:.1} packets/s dropped and {:.1} \
             entries/s evicted because the table was full",
            scene.who(),
            ct.entries,
            usage * 100.0,
            ct.drop.per_second,
            ct.early_drop.per_second
        ),
        fix: format!(
            "raise {} (now {max}), e.g. `sysctl -w {}={proposed}`, and grow the hash with it \
             ({} = max / 4); check short-lived connection churn",
            NF_CONNTRACK_MAX.name, NF_CONNTRACK_MAX.name, NF_CONNTRACK_BUCKETS.name
        ),
        changes: vec![
            Change::raise(&NF_CONNTRACK_MAX, Place::Node),
            Change::raise(&NF_CONNTRACK_BUCKETS, Place::Node),
        ],
    })
}
