//! TCP retransmitting more than the guide's alert allows: loss on the path.
//! Advice only: no sysctl fixes loss.

use super::{Evidence, Observation, Rule, Scene, Severity};

/// The retransmission rate (retransmitted / sent segments) the guide alerts on.
pub const ALERT_RATE: f64 = 0.01;
/// Segments sent over the measurement, at least, before a rate means anything.
pub const MIN_SEGMENTS: f64 = 1000.0;

/// Retransmissions above the guide's 1 %.
pub static RETRANSMISSIONS: Rule = Rule {
    name: "tcp_retransmissions",
    problem: "low pod bandwidth, slow requests: TCP retransmission rate above 1 %",
    evidence_name: "retransmitted segments",
    sysctls: &[],
    evidence: |netns, snapshot, _| {
        let w = snapshot.workload(netns)?;
        Some(Evidence {
            total: w.retransmit_segments.total,
            per_second: w.retransmit_segments.per_second,
            pressure: false,
        })
    },
    observe,
    when_ineffective: "",
};

fn observe(scene: &Scene<'_>) -> Option<Observation> {
    let w = scene.workload;
    let elapsed = scene.snapshot.elapsed_seconds;
    let sent = w.out_segments.per_second * elapsed;
    if sent < MIN_SEGMENTS || w.out_segments.per_second <= 0.0 {
        return None;
    }
    let rate = w.retransmit_segments.per_second / w.out_segments.per_second;
    if rate <= ALERT_RATE {
        return None;
    }
    Some(Observation {
        rule: &RETRANSMISSIONS,
        netns: w.netns,
        severity: Severity::Warning,
        evidence: format!(
            "{}: {:.0} of {sent:.0} segments retransmitted in {elapsed:.0} s ({:.1} %)",
            scene.who(),
            w.retransmit_segments.per_second * elapsed,
            rate * 100.0
        ),
        fix: "look for loss: interface errors and drops (`nettune top`, `ip -s link`), an MTU \
              mismatch in the CNI, or an overloaded path"
            .to_owned(),
        changes: Vec::new(),
    })
}
