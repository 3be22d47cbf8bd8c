//! Every applied change is checked against the evidence that triggered it.
//!
//! A change can act once it is written — except a somaxconn raise for
//! listeners that keep their old limit until they listen again: until then its
//! verdict is `no_effect_yet`. From the moment it can act, the evidence is
//! watched for `tuning.verdict_seconds`; its rate over the second half of that
//! window (the first half lets queues drain) decides: `effective` when it fell
//! to a tenth of the rate that triggered the change or less, and the table
//! watched (conntrack) is under its threshold; `ineffective` otherwise. The
//! tuner does not repeat an ineffective change in that place, and does not stack
//! a second change on one still being judged.
//!
//! A per-namespace sysctl is judged on its namespace's evidence; a node-wide one
//! (one value acting on every namespace) on the evidence of every namespace,
//! whichever triggered it — each namespace's growth counted only while it is
//! there, so one that goes takes its counts with it, never a negative rate. A
//! change whose evidence went away before its verdict (its pod's namespace is
//! gone) closes as `unknown`: it blocks nothing after it.

use std::collections::BTreeMap;

use super::{
    policy::Proposal,
    rules::{Evidence, Rule, WaitingListener},
};
use crate::{
    config::TuningConfig,
    model::{
        snapshot::Snapshot,
        tunables::Scope as SysctlScope,
        tuning::{Decision, Effect, Target, Verdict},
    },
};

/// The share of the triggering rate an effective change leaves at most.
pub const EFFECTIVE_SHARE: f64 = 0.1;

/// One applied change under watch.
#[derive(Clone, Debug)]
pub struct Watch {
    rule: &'static Rule,
    scope: Scope,
    waiting: Vec<WaitingListener>,
    /// The evidence's rate when the change was decided.
    before_per_second: f64,
    /// When the change could first act.
    since: Option<u64>,
    /// When the middle of the window was, and each namespace's evidence total then.
    middle: Option<(u64, BTreeMap<u32, u64>)>,
    /// The change and its verdict so far.
    pub effect: Effect,
}

impl Watch {
    /// A watch on the change `decision` applied for `proposal`, whose evidence was
    /// `before` when decided.
    pub fn new(proposal: &Proposal, decision: &Decision, before: Option<Evidence>) -> Self {
        Self {
            rule: proposal.rule,
            scope: Scope::of(proposal),
            waiting: proposal.waiting.clone(),
            before_per_second: before.map_or(0.0, |e| e.per_second),
            since: None,
            middle: None,
            effect: Effect {
                rule: proposal.rule.name.to_owned(),
                sysctl: proposal.sysctl.name.to_owned(),
                target: proposal.target.clone().unwrap_or(Target::Node),
                workload: proposal.workload.clone(),
                from: decision.from.clone().unwrap_or_default(),
                to: decision.to.clone().unwrap_or_default(),
                applied_at_unix: decision.at_unix,
                verdict: Verdict::Watching,
                detail: format!("watching {}", proposal.rule.evidence_name),
            },
        }
    }

    /// Whether this watches `sysctl` at `target`.
    pub fn is_for(&self, sysctl: &str, target: &Target) -> bool {
        self.effect.sysctl == sysctl && &self.effect.target == target
    }

    /// Checks the change against `snapshot` at `now`; returns the verdict when it
    /// changed. A change whose evidence is gone (its namespace went) closes as
    /// [`Verdict::Unknown`].
    pub fn check(
        &mut self,
        snapshot: &Snapshot,
        config: &TuningConfig,
        now: u64,
    ) -> Option<Verdict> {
        if self.effect.verdict.is_final() {
            return None;
        }
        let evidence = self.scope.evidence(self.rule, snapshot, config);
        if evidence.is_empty() {
            let detail = format!(
                "{} went away before a verdict ({} is gone): nothing left to judge",
                self.rule.evidence_name, self.effect.workload
            );
            return self.set(Verdict::Unknown, detail);
        }
        self.waiting.retain(|l| l.still_waiting(snapshot));
        if !self.waiting.is_empty() {
            let who: Vec<String> = self
                .waiting
                .iter()
                .map(|l| format!("{l} still has limit {}", l.limit))
                .collect();
            let detail = format!(
                "{}: a listening socket keeps its limit until the application listens again \
                 (restart it)",
                who.join(", ")
            );
            return self.set(Verdict::NoEffectYet, detail);
        }
        let since = *self.since.get_or_insert(now);
        let window = config.verdict_seconds;
        let watching = format!(
            "watching {} for {window} s ({:.1}/s before the change)",
            self.rule.evidence_name, self.before_per_second
        );
        if now < since + window / 2 {
            return self.set(Verdict::Watching, watching);
        }
        let (middle_at, middle) = self
            .middle
            .get_or_insert_with(|| (now, evidence.iter().map(|(n, e)| (*n, e.total)).collect()));
        let middle_at = *middle_at;
        if now < since + window || now <= middle_at {
            return self.set(Verdict::Watching, watching);
        }
        // Growth of the namespaces there at the middle and still there now.
        let grown: u64 = middle
            .iter()
            .filter_map(|(n, then)| Some(evidence.get(n)?.total.saturating_sub(*then)))
            .sum();
        let after = grown as f64 / (now - middle_at) as f64;
        let pressure = evidence.values().any(|e| e.pressure);
        let fell = format!(
            "{} went from {:.1}/s to {after:.1}/s",
            self.rule.evidence_name, self.before_per_second
        );
        if after <= self.before_per_second * EFFECTIVE_SHARE && !pressure {
            self.set(Verdict::Effective, fell)
        } else {
            let pressure = if pressure {
                ", and the table is still over its threshold"
            } else {
                ""
            };
            let detail = format!(
                "{fell}{pressure}: not raised again here — {}",
                self.rule.when_ineffective
            );
            self.set(Verdict::Ineffective, detail)
        }
    }

    fn set(&mut self, verdict: Verdict, detail: String) -> Option<Verdict> {
        self.effect.detail = detail;
        let changed = self.effect.verdict != verdict;
        self.effect.verdict = verdict;
        changed.then_some(verdict)
    }
}

/// Where a change's evidence is read.
#[derive(Clone, Copy, Debug)]
enum Scope {
    /// The namespace whose evidence triggered a per-namespace change.
    Netns(u32),
    /// Every namespace: a node-wide value acts on all of them.
    Node,
}

impl Scope {
    fn of(proposal: &Proposal) -> Self {
        match proposal.sysctl.scope {
            SysctlScope::Node => Self::Node,
            SysctlScope::Netns => Self::Netns(proposal.netns),
        }
    }

    /// The rule's evidence in each namespace of this scope that has it.
    fn evidence(
        self,
        rule: &Rule,
        snapshot: &Snapshot,
        config: &TuningConfig,
    ) -> BTreeMap<u32, Evidence> {
        let namespaces: Vec<u32> = match self {
            Self::Netns(netns) => vec![netns],
            Self::Node => snapshot.workloads.iter().map(|w| w.netns).collect(),
        };
        namespaces
            .into_iter()
            .filter_map(|n| Some((n, (rule.evidence)(n, snapshot, config)?)))
            .collect()
    }
}

/// The evidence a change for `proposal` is judged on, summed over its scope
/// (see the module's doc): what the tuner records as the rate before the change.
pub fn evidence_for(
    proposal: &Proposal,
    snapshot: &Snapshot,
    config: &TuningConfig,
) -> Option<Evidence> {
    let by_netns = Scope::of(proposal).evidence(proposal.rule, snapshot, config);
    (!by_netns.is_empty()).then(|| Evidence {
        total: by_netns.values().map(|e| e.total).sum(),
        per_second: by_netns.values().map(|e| e.per_second).sum(),
        pressure: by_netns.values().any(|e| e.pressure),
    })
}

#[cfg(test)]
pub(crate) mod tests;
