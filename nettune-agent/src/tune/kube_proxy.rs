//! What kube-proxy will set on this node: when it starts it writes
//! `nf_conntrack_max` from `conntrack.maxPerCore` × CPUs (at least
//! `conntrack.min`) and the conntrack TCP timeouts from its
//! `tcpEstablishedTimeout`/`tcpCloseWaitTimeout`, in every mode (iptables,
//! ipvs, nftables). `nettune audit` shows those values next to the node's and
//! to the most nettune would raise them to, so an operator sees the fight
//! before it happens (kube-proxy before Kubernetes 1.37 can lower a raised
//! `nf_conntrack_max`).

use serde::Serialize;

use crate::{
    model::{
        tunables::{self, NF_CONNTRACK_MAX, Tunable},
        tuning::Target,
        value::Value,
    },
    sys::System,
    tune::{actuator::Actuator, guardrails::Limits},
};

/// kube-proxy's `conntrack` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ConntrackSettings {
    /// `conntrack.maxPerCore` (0: leave `nf_conntrack_max` alone).
    pub max_per_core: u64,
    /// `conntrack.min`.
    pub min: u64,
    /// `conntrack.tcpEstablishedTimeout`, seconds (0: leave it).
    pub tcp_established_timeout: u64,
    /// `conntrack.tcpCloseWaitTimeout`, seconds (0: leave it).
    pub tcp_close_wait_timeout: u64,
}

/// The guide's (and kube-proxy's default) settings: `maxPerCore: 32768`,
/// `min: 131072`, `tcpEstablishedTimeout: 86400s`, `tcpCloseWaitTimeout: 1h`.
pub const GUIDE: ConntrackSettings = ConntrackSettings {
    max_per_core: 32768,
    min: 131_072,
    tcp_established_timeout: 86_400,
    tcp_close_wait_timeout: 3600,
};

/// One sysctl kube-proxy sets: its value on this node, kube-proxy's, and the
/// most nettune would raise it to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubeProxyRow {
    /// The sysctl.
    pub sysctl: &'static str,
    /// Its value now (`None`: unreadable).
    pub current: Option<String>,
    /// What kube-proxy with `settings` will write when it starts.
    pub kube_proxy: u64,
    /// The most nettune would raise it to (its ceiling), for sysctls nettune
    /// raises.
    pub nettune_ceiling: Option<u64>,
    /// kube-proxy would lower the value now, at its next start.
    pub lowers: bool,
    /// What to set in kube-proxy's configuration to leave it alone.
    pub fix: &'static str,
}

/// What kube-proxy with `settings` will set on a node with `cpus` CPUs.
pub fn expected(
    settings: &ConntrackSettings,
    cpus: u64,
) -> Vec<(&'static Tunable, u64, &'static str)> {
    let mut rows = Vec::new();
    if settings.max_per_core > 0 {
        let max = settings.max_per_core.saturating_mul(cpus).max(settings.min);
        rows.push((&NF_CONNTRACK_MAX, max, "conntrack.maxPerCore: 0"));
    }
    for (name, seconds, fix) in [
        (
            "net.netfilter.nf_conntrack_tcp_timeout_established",
            settings.tcp_established_timeout,
            "conntrack.tcpEstablishedTimeout: 0s",
        ),
        (
            "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
            settings.tcp_close_wait_timeout,
            "conntrack.tcpCloseWaitTimeout: 0s",
        ),
    ] {
        if seconds > 0
            && let Ok(spec) = tunables::lookup(name)
        {
            rows.push((spec, seconds, fix));
        }
    }
    rows
}

/// [`expected`] next to the node's values and nettune's ceilings.
pub fn audit<S: System>(
    actuator: &Actuator<S>,
    limits: &Limits<'_>,
    settings: &ConntrackSettings,
    cpus: u64,
) -> Vec<KubeProxyRow> {
    expected(settings, cpus)
        .into_iter()
        .map(|(spec, kube_proxy, fix)| {
            let current = actuator.read(&Target::Node, spec).ok();
            let lowers = matches!(current, Some(Value::Int(now)) if now > kube_proxy);
            KubeProxyRow {
                sysctl: spec.name,
                current: current.map(|v| v.to_string()),
                kube_proxy,
                nettune_ceiling: (spec.name == NF_CONNTRACK_MAX.name)
                    .then(|| limits.ceiling(spec, &Target::Node)),
                lowers,
                fix,
            }
        })
        .collect()
}

/// CPUs as kube-proxy counts them (Go's `runtime.NumCPU`: the CPUs it may run
/// on), from `/proc/cpuinfo`'s processors; at least 1.
pub fn cpus(system: &impl System) -> u64 {
    let listed = system
        .read_proc("cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    u64::try_from(listed).unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guides_settings_on_eight_cpus_set_the_minimum_and_the_timeouts() {
        let rows = expected(&GUIDE, 8);
        let by_name: Vec<(&str, u64)> = rows.iter().map(|(s, v, _)| (s.name, *v)).collect();
        // 32768 × 8 = 262144 > 131072.
        assert_eq!(
            by_name,
            [
                ("net.netfilter.nf_conntrack_max", 262_144),
                ("net.netfilter.nf_conntrack_tcp_timeout_established", 86_400),
                ("net.netfilter.nf_conntrack_tcp_timeout_close_wait", 3600),
            ]
        );
        // Two CPUs: the minimum wins.
        assert_eq!(expected(&GUIDE, 2)[0].1, 131_072);
        // maxPerCore 0: kube-proxy leaves nf_conntrack_max alone.
        let leaves = ConntrackSettings {
            max_per_core: 0,
            ..GUIDE
        };
        assert!(
            expected(&leaves, 8)
                .iter()
                .all(|(s, ..)| s.name != "net.netfilter.nf_conntrack_max")
        );
    }
}
