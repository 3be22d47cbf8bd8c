//! The policy: a pure function from a Snapshot and the config to proposals.
//!
//! Every rule ([`super::rules`]) says what it sees in each workload; the policy
//! turns each change an observation wants into a [`Proposal`] with its place —
//! the node, or a pod's own namespace when that pod is opted in — and keeps at
//! most one per sysctl, place and workload. Whether and how far a raise goes is
//! the guardrails' business; whether it helped is [`super::verify`]'s.

use super::rules::{self, Place, Plan, Rule, WaitingListener};
use crate::{
    config::TuningConfig,
    model::{snapshot::Snapshot, tunables::Tunable, tuning::Target},
};

/// A rule's wish: raise `sysctl` at `target` (None: the workload is not opted in).
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The rule that fired.
    pub rule: &'static Rule,
    /// The sysctl to change.
    pub sysctl: &'static Tunable,
    /// Where; `None` when the workload's namespace is not opted in.
    pub target: Option<Target>,
    /// Who it is for, for people (`node`, a pod).
    pub workload: String,
    /// The namespace the evidence comes from.
    pub netns: u32,
    /// The figures that triggered the rule.
    pub evidence: String,
    /// Raise, or why not.
    pub plan: Plan,
    /// Listeners that keep their old limit until they listen again (a
    /// somaxconn raise changes nothing for them before that).
    pub waiting: Vec<WaitingListener>,
}

/// Every proposal the Snapshot justifies (at most one per sysctl and place).
pub fn propose(snapshot: &Snapshot, config: &TuningConfig) -> Vec<Proposal> {
    let mut out: Vec<Proposal> = Vec::new();
    for o in rules::observe(snapshot, config) {
        let Some(w) = snapshot.workload(o.netns) else {
            continue;
        };
        for change in o.changes {
            let (target, workload) = match change.place {
                Place::Node => (Some(Target::Node), "node".to_owned()),
                Place::Workload => (rules::target_of(w, config), w.workload.pod.clone()),
            };
            let duplicate = out.iter().any(|q| {
                q.sysctl.name == change.sysctl.name && q.target == target && q.workload == workload
            });
            if !duplicate {
                out.push(Proposal {
                    rule: o.rule,
                    sysctl: change.sysctl,
                    target,
                    workload,
                    netns: o.netns,
                    evidence: o.evidence.clone(),
                    plan: change.plan,
                    waiting: change.waiting,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
