//! The tuning rules, each declared once — like bpftune's tuners with their
//! `scenarios[]` and `descs[]`: which of the guide's common problems it answers,
//! what its evidence counts and how that is measured, when it fires, which
//! sysctls it may change and how, and what to look at when a change did not help.
//!
//! One [`Rule`] per module. Everything that reasons about a rule reads its
//! declaration: the policy turns [`Observation`]s into proposals
//! ([`super::policy`]), verdicts re-measure its [`Rule::evidence`]
//! ([`super::verify`]), `nettune diagnose` prints its observations as findings
//! with their fix, and the docs list [`ALL`]. Values the guide recommends come
//! from the tunables table ([`crate::model::tunables`]), never from here.

mod accept_queue;
mod backlog;
mod buffers;
mod connect_failures;
mod conntrack;
mod dns;
mod dns_conntrack_race;
mod idle_timeouts;
mod path_mtu_config;
mod pmtu;
mod ports;
mod retransmits;

use std::fmt;

use serde::Serialize;

use crate::{
    config::TuningConfig,
    model::{
        snapshot::{Snapshot, WorkloadFigures},
        tunables::Tunable,
        tuning::Target,
        workload::WorkloadKind,
    },
};
pub use accept_queue::{LISTEN_FACTS, LISTEN_OVERFLOWS, SYN_QUEUE_FULL, WaitingListener};
pub use backlog::BACKLOG_DROPS;
pub use buffers::RECEIVE_BUFFER_DROPS;
pub use connect_failures::CONNECT_FAILURES;
pub use conntrack::CONNTRACK_FULL;
pub use dns::DNS_FAILURES;
pub use dns_conntrack_race::DNS_CONNTRACK_RACE;
pub use idle_timeouts::IDLE_TIMEOUTS;
pub use path_mtu_config::POD_MTU;
pub use pmtu::PATH_MTU;
pub use ports::PORT_EXHAUSTION;
pub use retransmits::RETRANSMISSIONS;

/// A rule's figure at one moment: how much of the bad thing happened so far,
/// and whether the table it watches is still under pressure.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evidence {
    /// The cumulative count (overflows, drops, failed connects).
    pub total: u64,
    /// Its rate in the Snapshot.
    pub per_second: f64,
    /// A fill level still over its threshold (conntrack).
    pub pressure: bool,
}

/// How bad an observation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Hurting some traffic now, or about to.
    Warning,
    /// Failing connections now.
    Critical,
}

/// What a rule concluded about one sysctl.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Raise the sysctl (within the guardrails).
    Raise,
    /// Raising it cannot help; the advice says what would.
    Futile(String),
    /// Not enough evidence yet to decide; the reason says what is missing.
    Hold(String),
}

/// Where a change goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The node (node-wide sysctls, or the host namespace's own).
    Node,
    /// The observed workload's own namespace (the node's, for the node; a pod's
    /// only when that pod is opted in).
    Workload,
}

/// One sysctl change a rule wants.
#[derive(Clone, Debug)]
pub struct Change {
    /// The sysctl.
    pub sysctl: &'static Tunable,
    /// Where.
    pub place: Place,
    /// Raise, or why not.
    pub plan: Plan,
    /// Listeners that keep their old limit until they listen again (a
    /// somaxconn raise changes nothing for them before that).
    pub waiting: Vec<WaitingListener>,
}

impl Change {
    /// A plain raise of `sysctl` at `place`.
    pub fn raise(sysctl: &'static Tunable, place: Place) -> Self {
        Self {
            sysctl,
            place,
            plan: Plan::Raise,
            waiting: Vec::new(),
        }
    }
}

/// What a rule sees in one workload (or the node).
#[derive(Clone, Debug)]
pub struct Observation {
    /// The rule.
    pub rule: &'static Rule,
    /// The namespace the evidence comes from.
    pub netns: u32,
    /// How bad it is.
    pub severity: Severity,
    /// The figures that show it, for people.
    pub evidence: String,
    /// What to do, with this node's values.
    pub fix: String,
    /// The changes it wants (none: advice only).
    pub changes: Vec<Change>,
}

/// What a rule looks at: one workload of a Snapshot, with the config.
pub struct Scene<'a> {
    /// The whole Snapshot (listeners, node-wide figures).
    pub snapshot: &'a Snapshot,
    /// The workload looked at.
    pub workload: &'a WorkloadFigures,
    /// Thresholds.
    pub config: &'a TuningConfig,
}

impl Scene<'_> {
    /// Who the workload is, for people.
    pub fn who(&self) -> String {
        self.workload.workload.display_name()
    }

    /// Whether the workload is the node.
    pub fn is_node(&self) -> bool {
        self.workload.workload.kind == WorkloadKind::Node
    }
}

/// One tuning rule, declared once.
pub struct Rule {
    /// The name in decisions, logs, the journal and `diagnose` (`id`).
    pub name: &'static str,
    /// The guide's "common problems" row it answers.
    pub problem: &'static str,
    /// What the evidence counts, for people.
    pub evidence_name: &'static str,
    /// The sysctls it may change (empty: it only advises).
    pub sysctls: &'static [&'static Tunable],
    /// Its evidence in namespace `netns` (node-wide rules ignore it): what the
    /// verdict on a change re-measures. `None` when the namespace is gone or the
    /// rule watches nothing.
    pub evidence: fn(netns: u32, &Snapshot, &TuningConfig) -> Option<Evidence>,
    /// What it sees in one workload, if anything.
    pub observe: fn(&Scene<'_>) -> Option<Observation>,
    /// What to look at when a raise did not reduce the evidence.
    pub when_ineffective: &'static str,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Rule {}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// A static profile (`nettune apply`): not a reaction to evidence.
pub static PROFILE: Rule = Rule {
    name: "profile",
    problem: "a static profile applied by hand",
    evidence_name: "nothing",
    sysctls: &[],
    evidence: |_, _, _| None,
    observe: |_| None,
    when_ineffective: "",
};

/// Every rule, in the order the policy asks them (within a workload).
pub static ALL: &[&Rule] = &[
    &LISTEN_OVERFLOWS,
    &SYN_QUEUE_FULL,
    &PORT_EXHAUSTION,
    &RECEIVE_BUFFER_DROPS,
    &CONNTRACK_FULL,
    &BACKLOG_DROPS,
    &RETRANSMISSIONS,
    &DNS_FAILURES,
    &DNS_CONNTRACK_RACE,
    &CONNECT_FAILURES,
    &PATH_MTU,
    &POD_MTU,
    &IDLE_TIMEOUTS,
];

/// Every observation the Snapshot supports, workload by workload.
pub fn observe(snapshot: &Snapshot, config: &TuningConfig) -> Vec<Observation> {
    let mut out = Vec::new();
    for workload in &snapshot.workloads {
        let scene = Scene {
            snapshot,
            workload,
            config,
        };
        out.extend(ALL.iter().filter_map(|rule| (rule.observe)(&scene)));
    }
    out
}

/// Where a per-namespace sysctl of `w` is tuned: the node's own, or an opted-in
/// pod's (listed in `tuning.pod_netns`, or annotated `nettune.io/tune-netns`);
/// `None` for a pod that is not opted in.
pub fn target_of(w: &WorkloadFigures, config: &TuningConfig) -> Option<Target> {
    let opted_in = w.workload.tune_netns || config.pod_netns.iter().any(|n| w.workload.is_named(n));
    if w.workload.kind == WorkloadKind::Node {
        Some(Target::Node)
    } else if opted_in {
        Some(Target::Netns {
            inode: w.netns,
            label: w.workload.display_name(),
        })
    } else {
        None
    }
}

/// An [`Evidence`] of a counter, without pressure.
fn counted(c: &crate::model::counter::CounterRate) -> Evidence {
    Evidence {
        total: c.total,
        per_second: c.per_second,
        pressure: false,
    }
}

#[cfg(test)]
mod tests;
