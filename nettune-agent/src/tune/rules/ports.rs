//! Ephemeral ports running out: `connect()` failing with `EADDRNOTAVAIL`, or
//! TIME_WAIT sockets filling most of the port range.

use super::{Change, Observation, Place, Rule, Scene, Severity, counted};
use crate::model::tunables::{IP_LOCAL_PORT_RANGE, IP_LOCAL_RESERVED_PORTS, TCP_TW_REUSE};

/// The share of the ephemeral range in TIME_WAIT that warns before connects fail.
pub const TIME_WAIT_SHARE: f64 = 0.5;

/// Connects fail for lack of a local port: reserve the node's service ports,
/// then widen the range and reuse TIME_WAIT sockets.
pub static PORT_EXHAUSTION: Rule = Rule {
    name: "port_exhaustion",
    problem: "intermittent connection failures: ephemeral ports running out",
    evidence_name: "EADDRNOTAVAIL connects",
    sysctls: &[
        &IP_LOCAL_RESERVED_PORTS,
        &IP_LOCAL_PORT_RANGE,
        &TCP_TW_REUSE,
    ],
    evidence: |netns, snapshot, _| Some(counted(&snapshot.workload(netns)?.connect_eaddrnotavail)),
    observe,
    when_ineffective: "connections are opened faster than ports come back: reuse them \
                       (keep-alive, pooling) or spread them over more destination addresses",
};

fn observe(scene: &Scene<'_>) -> Option<Observation> {
    let w = scene.workload;
    let time_wait = w.tcp_time_wait.unwrap_or(0);
    let range = w.netns_sysctls.and_then(|s| s.ephemeral_ports);
    let width = range.map(|(low, high)| u64::from(high.saturating_sub(low)) + 1);
    let crowded = width.is_some_and(|width| time_wait as f64 > width as f64 * TIME_WAIT_SHARE);
    let failing = w.connect_eaddrnotavail.per_second > 0.0;
    if !failing && !crowded {
        return None;
    }
    let mut evidence = Vec::new();
    if failing {
        evidence.push(format!(
            "{:.1} connect()/s failed with EADDRNOTAVAIL in {}",
            w.connect_eaddrnotavail.per_second,
            scene.who()
        ));
    }
    match (range, width) {
        (Some((low, high)), Some(width)) => evidence.push(format!(
            "{time_wait} sockets in TIME_WAIT for {width} local ports ({low}-{high})"
        )),
        _ => evidence.push(format!("{time_wait} sockets in TIME_WAIT")),
    }
    let mut changes = Vec::new();
    if failing {
        // Reserved first, in the node and in a pod alike: what listens there
        // (and on the node the configured service ports) must not become
        // ephemeral when the range widens.
        changes.push(Change::raise(&IP_LOCAL_RESERVED_PORTS, Place::Workload));
        changes.push(Change::raise(&IP_LOCAL_PORT_RANGE, Place::Workload));
        changes.push(Change::raise(&TCP_TW_REUSE, Place::Workload));
    }
    Some(Observation {
        rule: &PORT_EXHAUSTION,
        netns: w.netns,
        severity: if failing {
            Severity::Critical
        } else {
            Severity::Warning
        },
        evidence: evidence.join("; "),
        fix: format!(
            "set {}={} and widen {} (guide: {}), after reserving the node's service ports and \
             the NodePort range in {}; prefer keepalive connections",
            TCP_TW_REUSE.name,
            TCP_TW_REUSE.guide.unwrap_or("1"),
            IP_LOCAL_PORT_RANGE.name,
            IP_LOCAL_PORT_RANGE.guide.unwrap_or("wider"),
            IP_LOCAL_RESERVED_PORTS.name
        ),
        changes,
    })
}
