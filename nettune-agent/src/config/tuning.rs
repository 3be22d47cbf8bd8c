//! `[tuning]`: the tuner's settings.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Serialize;

use crate::model::{tuning::Mode, value};

/// The tuner's settings (`[tuning]` in the config file).
#[derive(Clone, Debug, Serialize)]
pub struct TuningConfig {
    /// What the tuner may do.
    pub mode: Mode,
    /// Where the journal of original values lives.
    pub state_dir: PathBuf,
    /// The `/proc/sys` sysctls are read and written through: the node's,
    /// mounted where a container's own read-only one is not in the way.
    pub proc_sys: PathBuf,
    /// Per-sysctl bounds, by dotted name; names must be in the table.
    pub limits: BTreeMap<String, Limit>,
    /// Sysctls nettune must leave alone (owned by the CNI or the admin).
    pub exclude: Vec<String>,
    /// Node-wide sysctls whose lowering below nettune's value by another
    /// writer the kernel refuses (`EPERM`), while nettune manages them.
    pub guard: Vec<String>,
    /// Workloads whose own namespace nettune may tune — by `pod` label,
    /// `namespace/name` or pod UID (e.g. `shop/web-1`, `netns:<name>`); pods can
    /// also opt in with the annotation `nettune.io/tune-netns: "true"`. Others
    /// only get advice.
    pub pod_netns: Vec<String>,
    /// Seconds between two changes of one sysctl in one place.
    pub cooldown_seconds: u64,
    /// Seconds a change's evidence is watched, once the change can act, before
    /// it is judged effective or ineffective.
    pub verdict_seconds: u64,
    /// Most changes of one sysctl in one place per hour.
    pub max_changes_per_hour: u64,
    /// Largest factor one change may grow a value by.
    pub max_step: f64,
    /// Conntrack usage (entries / limit) that triggers raising the limit.
    pub conntrack_threshold: f64,
    /// Share of RAM the conntrack table may take at most.
    pub conntrack_memory_percent: f64,
    /// The lowest port `ip_local_port_range` may start at.
    pub lowest_ephemeral_port: u64,
    /// Ports reserved (`ip_local_reserved_ports`) before nettune widens the
    /// ephemeral range, so outgoing connections cannot take them: the kubelet,
    /// kube-proxy, node-exporter, the NodePort range, and (added by the agent)
    /// its own ports. Items like `9100` or `30000-32767`.
    pub reserved_ports: Vec<String>,
}

/// Ports a node's services listen on that outgoing connections must not take:
/// node-exporter 9100, the kubelet 10250, kube-proxy's health 10256, the NodePort
/// range.
pub const NODE_PORTS: [&str; 4] = ["9100", "10250", "10256", "30000-32767"];

impl TuningConfig {
    /// [`Self::reserved_ports`] as one list (items that do not parse are left out;
    /// the config loader refuses them).
    pub fn protected_ports(&self) -> value::PortList {
        self.reserved_ports
            .iter()
            .filter_map(|p| value::PortList::parse(p))
            .fold(value::PortList::default(), |a, b| a.union(&b))
    }
}

impl Default for TuningConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Observe,
            state_dir: PathBuf::from("/var/lib/nettune"),
            proc_sys: PathBuf::from("/proc/sys"),
            limits: BTreeMap::new(),
            exclude: Vec::new(),
            guard: Vec::new(),
            pod_netns: Vec::new(),
            cooldown_seconds: 300,
            verdict_seconds: 60,
            max_changes_per_hour: 4,
            max_step: 2.0,
            conntrack_threshold: 0.8,
            conntrack_memory_percent: 5.0,
            lowest_ephemeral_port: 1024,
            reserved_ports: NODE_PORTS.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
}

/// Bounds for one sysctl, on its strength scale (for multi-value sysctls they
/// apply to the value the tuner raises, e.g. the max of `tcp_rmem`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Limit {
    /// The least nettune raises it to.
    pub floor: Option<u64>,
    /// The most nettune raises it to.
    pub ceiling: Option<u64>,
}
