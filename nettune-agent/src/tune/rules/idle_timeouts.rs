//! Idle connections killed on the way: TCP keepalive starts later than
//! something on the path forgets an idle connection — conntrack's established
//! timeout, IPVS's (kube-proxy in ipvs mode), or a cloud load balancer's idle
//! timeout (`cluster.lb_idle_timeout_seconds`). The next packet on such a
//! connection meets an RST. Advice only: keepalive is the applications' choice
//! of socket option, and the node's default only applies to sockets asking.

use super::{Observation, Rule, Scene, Severity};
use crate::model::{context::IPVS_TCP_TIMEOUT_SECONDS, snapshot::Snapshot, tunables};

/// Keepalive later than the shortest idle timeout on the path.
pub static IDLE_TIMEOUTS: Rule = Rule {
    name: "idle_timeouts",
    problem: "idle connections reset: keepalive starts after the path forgets the connection",
    evidence_name: "RSTs received on established connections",
    sysctls: &[],
    evidence: |_, snapshot, _| {
        Some(super::Evidence {
            total: resets_received(snapshot),
            per_second: 0.0,
            pressure: false,
        })
    },
    observe,
    when_ineffective: "",
};

/// RSTs the pods received on established connections, all pods.
fn resets_received(snapshot: &Snapshot) -> u64 {
    snapshot
        .workloads
        .iter()
        .filter_map(|w| Some(w.conversations.as_ref()?.resets_received.total))
        .sum()
}

fn observe(scene: &Scene<'_>) -> Option<Observation> {
    if !scene.is_node() {
        return None;
    }
    let c = scene.snapshot.context.as_ref()?;
    let keepalive = c.keepalive_time?;
    let mut timeouts: Vec<(u64, String)> = Vec::new();
    if let Some(t) = c.conntrack_established_timeout {
        timeouts.push((t, "conntrack's established timeout".to_owned()));
    }
    if c.proxy == "kube-proxy-ipvs" {
        timeouts.push((
            IPVS_TCP_TIMEOUT_SECONDS,
            "IPVS's TCP timeout (kube-proxy ipvs mode; its default)".to_owned(),
        ));
    }
    if let Some(t) = c.lb_idle_timeout {
        timeouts.push((t, "the load balancer's idle timeout".to_owned()));
    }
    let (shortest, what) = timeouts.into_iter().min_by_key(|(t, _)| *t)?;
    if keepalive < shortest {
        return None;
    }
    let resets = resets_received(scene.snapshot);
    let guide = |name: &str| {
        tunables::lookup(name)
            .ok()
            .and_then(|t| t.guide)
            .unwrap_or("?")
    };
    Some(Observation {
        rule: &IDLE_TIMEOUTS,
        netns: scene.workload.netns,
        severity: Severity::Warning,
        evidence: format!(
            "tcp_keepalive_time is {keepalive} s, {what} {shortest} s: an idle connection is \
             forgotten before its first keepalive; pods received {resets} RSTs on established \
             connections"
        ),
        fix: format!(
            "set net.ipv4.tcp_keepalive_time below {shortest} (the guide: {}), \
             tcp_keepalive_intvl {} and tcp_keepalive_probes {} — they apply to sockets with \
             SO_KEEPALIVE, so check that the clients enable it (or use their own shorter \
             keepalive, e.g. HTTP/2 pings)",
            guide("net.ipv4.tcp_keepalive_time"),
            guide("net.ipv4.tcp_keepalive_intvl"),
            guide("net.ipv4.tcp_keepalive_probes"),
        ),
        changes: Vec::new(),
    })
}
