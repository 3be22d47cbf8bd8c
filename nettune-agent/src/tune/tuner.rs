//! One tuning round: proposals through the guardrails, then (in enforce mode)
//! journal, write, journal — and every decision logged, counted and kept for the
//! UI. Also the static `apply` and `rollback`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    TuningConfig,
    actuator::Actuator,
    guardrails::{self, Limits},
    journal::{Entry, Journal, JournalError},
    policy::{self, Plan, Proposal, Rule},
    tunables::{self, IP_LOCAL_RESERVED_PORTS, Shape, Tunable},
    value::{self, PortList, Value},
    verify::Watch,
};
use crate::{
    model::{
        snapshot::Snapshot,
        tuning::{
            Decision, DecisionCount, EffectCount, Managed, Mode, Outcome, Target, TuningState,
            Verdict,
        },
    },
    sys::System,
};

/// The tuner with its actuator and journal.
pub struct Tuner<S: System> {
    actuator: Actuator<S>,
    journal: Journal,
    config: TuningConfig,
    mem_total: u64,
    recent: Vec<Decision>,
    /// (sysctl, action, result) → decisions so far.
    counts: BTreeMap<(String, String, String), u64>,
    /// Applied changes under watch, and the last judged ones.
    watches: Vec<Watch>,
    /// (sysctl, target) → why raising it there was judged ineffective.
    ineffective: BTreeMap<(String, Target), String>,
    /// (sysctl, verdict) → changes that reached it.
    effect_counts: BTreeMap<(String, String), u64>,
}

const RECENT: usize = 50;

/// Bytes of RAM, from `/proc/meminfo`.
pub fn mem_total(system: &impl System) -> u64 {
    system
        .read_proc("meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Unix time now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl<S: System> Tuner<S> {
    /// A tuner writing through `system`, journaling under `config.state_dir`.
    pub fn new(system: S, config: TuningConfig, mem_total: u64) -> Result<Self, JournalError> {
        let journal = Journal::open(&config.state_dir)?;
        Ok(Self {
            actuator: Actuator::new(system),
            journal,
            config,
            mem_total,
            recent: Vec::new(),
            counts: BTreeMap::new(),
            watches: Vec::new(),
            ineffective: BTreeMap::new(),
            effect_counts: BTreeMap::new(),
        })
    }

    /// The actuator it writes through.
    pub fn actuator(&self) -> &Actuator<S> {
        &self.actuator
    }

    /// The journal of original values.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Decisions, managed values and counts so far.
    pub fn state(&self) -> TuningState {
        let limits = Limits {
            config: &self.config,
            mem_total: self.mem_total,
        };
        let managed = self
            .journal
            .entries()
            .iter()
            .filter_map(|e| {
                let spec = tunables::lookup(&e.sysctl).ok()?;
                let current = self.actuator.read_text(&e.target, spec).ok();
                let room = |text: &str| {
                    Value::parse(spec, text)
                        .ok()
                        .map(|v| value::strength(spec, &v))
                };
                Some(Managed {
                    sysctl: e.sysctl.clone(),
                    target: e.target.clone(),
                    current_room: current.as_deref().and_then(room),
                    original_room: room(&e.original),
                    current,
                    original: e.original.clone(),
                    ceiling: limits.ceiling(spec, &e.target),
                    stood_down: e.stood_down,
                })
            })
            .collect();
        TuningState {
            recent: self.recent.clone(),
            managed,
            counts: self
                .counts
                .iter()
                .map(|((sysctl, action, result), count)| DecisionCount {
                    sysctl: sysctl.clone(),
                    action: action.clone(),
                    result: result.clone(),
                    count: *count,
                })
                .collect(),
            effects: self.watches.iter().map(|w| w.effect.clone()).collect(),
            effect_counts: self
                .effect_counts
                .iter()
                .map(|((sysctl, verdict), count)| EffectCount {
                    sysctl: sysctl.clone(),
                    verdict: verdict.clone(),
                    count: *count,
                })
                .collect(),
        }
    }

    /// Runs the policy on `snapshot` and acts on it according to the mode.
    pub fn round(&mut self, snapshot: &Snapshot, now: u64) -> Vec<Decision> {
        if self.config.mode == Mode::Observe {
            return Vec::new();
        }
        // `nettune rollback` may have changed the journal since the last round.
        if let Err(e) = self.journal.reload() {
            log::warn!("cannot re-read the journal: {e}");
        }
        self.verify(snapshot, now);
        let proposals = policy::propose(snapshot, &self.config);
        let mut decisions: Vec<Decision> = Vec::with_capacity(proposals.len());
        for p in &proposals {
            let d = self.decide(p, &decisions, now);
            Self::log(&d);
            self.count(&d);
            if d.result == Outcome::Applied && p.rule != Rule::Profile {
                let before = p.rule.evidence(p.netns, snapshot, &self.config);
                self.watch(Watch::new(p, &d, before));
            }
            decisions.push(d);
        }
        decisions
    }

    /// Checks every watched change against `snapshot`; logs and counts each new
    /// verdict, and remembers where a raise was ineffective.
    fn verify(&mut self, snapshot: &Snapshot, now: u64) {
        for w in &mut self.watches {
            let Some(verdict) = w.check(snapshot, &self.config, now) else {
                continue;
            };
            let effect = &w.effect;
            if verdict == Verdict::Watching {
                log::info!("tuning: {effect}");
                continue;
            }
            log::warn!("tuning: {effect}");
            *self
                .effect_counts
                .entry((effect.sysctl.clone(), verdict.label().to_owned()))
                .or_default() += 1;
            if verdict == Verdict::Ineffective {
                self.ineffective.insert(
                    (effect.sysctl.clone(), effect.target.clone()),
                    format!("{} → {}: {}", effect.from, effect.to, effect.detail),
                );
            }
        }
    }

    /// Starts watching a change; the oldest judged watches make room.
    fn watch(&mut self, watch: Watch) {
        self.watches.push(watch);
        while self.watches.len() > RECENT {
            let oldest = self
                .watches
                .iter()
                .position(|w| w.effect.verdict.is_final())
                .unwrap_or(0);
            self.watches.remove(oldest);
        }
    }

    /// Why an earlier change's verdict rules out raising `p.sysctl` at
    /// `target` now: it was ineffective there, or it is still being judged.
    fn verdicts_rule_out(&self, p: &Proposal, target: &Target) -> Option<(Outcome, String)> {
        let name = p.sysctl.name;
        if let Some(why) = self.ineffective.get(&(name.to_owned(), target.clone())) {
            return Some((
                Outcome::Futile,
                format!("an earlier raise here was ineffective ({why})"),
            ));
        }
        let pending = self
            .watches
            .iter()
            .find(|w| w.is_for(name, target) && !w.effect.verdict.is_final())?;
        let e = &pending.effect;
        Some((
            Outcome::Refused,
            format!(
                "the last change ({} → {}) is not judged yet: {}",
                e.from, e.to, e.detail
            ),
        ))
    }

    fn decision(p: &Proposal, action: &'static str, now: u64) -> Decision {
        Decision {
            rule: p.rule.name().to_owned(),
            sysctl: p.sysctl.name.to_owned(),
            target: p.target.clone(),
            workload: p.workload.clone(),
            action: action.to_owned(),
            result: Outcome::Refused,
            from: None,
            to: None,
            evidence: p.evidence.clone(),
            reason: None,
            at_unix: now,
        }
    }

    /// Decides `p`, knowing the decisions taken before it this round.
    fn decide(&mut self, p: &Proposal, earlier: &[Decision], now: u64) -> Decision {
        let spec = p.sysctl;
        let mut d = Self::decision(p, spec.action(), now);
        if let Err((outcome, reason)) = guardrails::check_not_excluded(spec, &self.config) {
            // Excluded: not even read.
            d.result = outcome;
            d.reason = Some(reason);
            return d;
        }
        match &p.plan {
            Plan::Raise => {}
            Plan::Futile(advice) => {
                d.result = Outcome::Futile;
                d.reason = Some(advice.clone());
                return d;
            }
            Plan::Hold(reason) => {
                d.result = Outcome::Refused;
                d.reason = Some(reason.clone());
                return d;
            }
        }
        let current = match p.target.as_ref().map(|t| self.actuator.read(t, spec)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => return fail(d, e),
            None => Value::Int(0),
        };
        d.from = p.target.as_ref().map(|_| current.to_string());
        let entry = p.target.as_ref().and_then(|t| self.current_entry(spec, t));
        let limits = Limits {
            config: &self.config,
            mem_total: self.mem_total,
        };
        let protected = self.config.protected_ports();
        let next = if spec.shape == Shape::PortList {
            guardrails::check_reserve(
                spec,
                p.target.as_ref(),
                &current,
                &protected,
                entry.as_ref(),
                &limits,
                now,
            )
        } else if spec.exposes_ports
            && let Some(target) = &p.target
            && let Err(reason) = self.ports_protected(target, &protected, earlier)
        {
            Err((Outcome::Refused, reason))
        } else {
            guardrails::check_raise(
                spec,
                p.target.as_ref(),
                &current,
                entry.as_ref(),
                &limits,
                now,
            )
        };
        match next {
            Err((outcome, reason)) => {
                if outcome == Outcome::StoodDown
                    && let Some(t) = &p.target
                    && let Err(e) = self.journal.stand_down(spec.name, t)
                {
                    log::warn!("cannot record stand-down: {e}");
                }
                d.result = outcome;
                d.reason = Some(reason);
                d
            }
            Ok(next) => {
                d.to = Some(next.to_string());
                if let Some(target) = &p.target
                    && let Some((outcome, reason)) = self.verdicts_rule_out(p, target)
                {
                    d.result = outcome;
                    d.reason = Some(reason);
                    return d;
                }
                let target = p.target.clone().unwrap_or(Target::Node);
                self.write(d, &target, spec, &current, &next, now)
            }
        }
    }

    /// The journal's entry for `spec` at `target`, unless it belongs to an earlier
    /// namespace that had the same inode: that one is gone with its values, and
    /// its entry is dropped.
    fn current_entry(&mut self, spec: &Tunable, target: &Target) -> Option<Entry> {
        let entry = self.journal.entry(spec.name, target)?.clone();
        if let (Target::Netns { inode, .. }, Some(journaled)) = (target, &entry.identity)
            && self
                .actuator
                .system()
                .netns_identity(*inode)
                .is_ok_and(|now| &now != journaled)
        {
            if let Err(e) = self.journal.remove(spec.name, target) {
                log::warn!("cannot drop the journal entry of a departed namespace: {e}");
            }
            return None;
        }
        Some(entry)
    }

    /// `Ok` when the ports nettune protects are reserved at `target` — already, or
    /// by a reservation applied (or, in advise mode, advised) earlier this round.
    /// Only the node's services listen in the node's namespace: a pod's own
    /// namespace has nothing to protect.
    fn ports_protected(
        &self,
        target: &Target,
        protected: &PortList,
        earlier: &[Decision],
    ) -> Result<(), String> {
        if target != &Target::Node {
            return Ok(());
        }
        let reserved_now = earlier.iter().any(|d| {
            d.sysctl == IP_LOCAL_RESERVED_PORTS.name
                && d.target.as_ref() == Some(target)
                && matches!(d.result, Outcome::Applied | Outcome::Advised)
        });
        let have = self
            .actuator
            .read_text(target, &IP_LOCAL_RESERVED_PORTS)
            .ok()
            .and_then(|t| PortList::parse(&t));
        if reserved_now || have.as_ref().is_some_and(|h| h.covers(protected)) {
            return Ok(());
        }
        Err(format!(
            "not widened: the ports nettune protects ({protected}) are not reserved in {} \
             (ip_local_reserved_ports = {:?}): outgoing connections could take them",
            IP_LOCAL_RESERVED_PORTS.name,
            have.map(|h| h.to_string()).unwrap_or_default()
        ))
    }

    /// Journal the original, write, journal the write (enforce); or just advise.
    fn write(
        &mut self,
        mut d: Decision,
        target: &Target,
        spec: &Tunable,
        current: &Value,
        next: &Value,
        now: u64,
    ) -> Decision {
        if self.config.mode != Mode::Enforce {
            d.result = Outcome::Advised;
            return d;
        }
        let identity = match target {
            Target::Node => None,
            Target::Netns { inode, .. } => match self.actuator.system().netns_identity(*inode) {
                Ok(id) => Some(id),
                // Unidentified, a later rollback could not tell it from a successor.
                Err(e) => {
                    return fail(
                        d,
                        format!("not written: cannot identify netns {inode}: {e}"),
                    );
                }
            },
        };
        if let Err(e) =
            self.journal
                .record_original(spec.name, target, &current.to_string(), identity)
        {
            // No journal entry, no write: the original would be lost.
            return fail(d, format!("not written: {e}"));
        }
        if let Err(e) = self.actuator.write(target, spec, &next.to_string()) {
            return fail(
                d,
                format!(
                    "writing {}: {e} (original {current} is journaled)",
                    spec.name
                ),
            );
        }
        if let Err(e) = self
            .journal
            .record_write(spec.name, target, &next.to_string(), now)
        {
            log::warn!(
                "{} was written but the journal could not record it: {e}",
                spec.name
            );
        }
        d.result = Outcome::Applied;
        d
    }

    /// Logs a round's decision (the daemon's record of what it did and why).
    fn log(d: &Decision) {
        match d.result {
            Outcome::Applied | Outcome::StoodDown | Outcome::Failed => log::warn!("tuning: {d}"),
            Outcome::Advised | Outcome::Refused | Outcome::Futile => log::info!("tuning: {d}"),
        }
    }

    /// Counts a decision and keeps it among the recent ones.
    fn count(&mut self, d: &Decision) {
        *self
            .counts
            .entry((
                d.sysctl.clone(),
                d.action.to_owned(),
                d.result.label().to_owned(),
            ))
            .or_default() += 1;
        self.recent.push(d.clone());
        let excess = self.recent.len().saturating_sub(RECENT);
        self.recent.drain(..excess);
    }

    /// Applies `values` (sysctl → value) to the node, through the guardrails and
    /// the journal; with `dry_run`, decides without writing.
    pub fn apply(
        &mut self,
        profile: &str,
        values: &BTreeMap<String, String>,
        dry_run: bool,
        now: u64,
    ) -> Vec<Decision> {
        // A profile is an explicit, one-off action: it writes unless this is a dry run.
        let mode = if dry_run { Mode::Advise } else { Mode::Enforce };
        let mode = std::mem::replace(&mut self.config.mode, mode);
        let mut out = Vec::new();
        let widens_ports = values
            .keys()
            .any(|n| tunables::lookup(n).is_ok_and(|t| t.exposes_ports));
        if widens_ports {
            let p = profile_proposal(
                &IP_LOCAL_RESERVED_PORTS,
                format!(
                    "profile {profile} widens the ephemeral port range: the ports nettune \
                     protects are reserved first"
                ),
            );
            let d = self.decide(&p, &out, now);
            self.count(&d);
            out.push(d);
        }
        for (name, wanted) in values {
            let Ok(spec) = tunables::lookup(name) else {
                continue;
            };
            let p = profile_proposal(spec, format!("profile {profile} sets {name} = {wanted}"));
            let d = self.set(&p, wanted, &out, now);
            self.count(&d);
            out.push(d);
        }
        self.config.mode = mode;
        out
    }

    /// Decides setting `p` to exactly `wanted` (a profile's value).
    fn set(&mut self, p: &Proposal, wanted: &str, earlier: &[Decision], now: u64) -> Decision {
        let spec = p.sysctl;
        let mut d = Self::decision(p, "set", now);
        if let Err((outcome, reason)) = guardrails::check_not_excluded(spec, &self.config) {
            // Excluded: not even read (it may not exist where nettune runs).
            d.result = outcome;
            d.reason = Some(reason);
            return d;
        }
        let current = match self.actuator.read(&Target::Node, spec) {
            Ok(v) => v,
            Err(e) => return fail(d, e),
        };
        d.from = Some(current.to_string());
        let limits = Limits {
            config: &self.config,
            mem_total: self.mem_total,
        };
        let entry = self.journal.entry(spec.name, &Target::Node).cloned();
        let protected = self.config.protected_ports();
        let decided = if spec.exposes_ports
            && let Err(reason) = self.ports_protected(&Target::Node, &protected, earlier)
        {
            Err((Outcome::Refused, reason))
        } else {
            Value::parse(spec, wanted)
                .map_err(|e| (Outcome::Failed, e.to_string()))
                .and_then(|w| {
                    guardrails::check_set(
                        spec,
                        &Target::Node,
                        &current,
                        &w,
                        entry.as_ref(),
                        &limits,
                    )
                })
        };
        match decided {
            Err((outcome, reason)) => {
                d.result = outcome;
                d.reason = Some(reason);
                d
            }
            Ok(next) => {
                d.to = Some(next.to_string());
                self.write(d, &Target::Node, spec, &current, &next, now)
            }
        }
    }
}

/// A profile's proposal for `sysctl` on the node.
fn profile_proposal(sysctl: &'static Tunable, evidence: String) -> Proposal {
    Proposal {
        rule: Rule::Profile,
        sysctl,
        target: Some(Target::Node),
        workload: "node".into(),
        netns: 0,
        evidence,
        plan: Plan::Raise,
        waiting: Vec::new(),
    }
}

fn fail(mut d: Decision, reason: String) -> Decision {
    d.result = Outcome::Failed;
    d.reason = Some(reason);
    d
}

/// What a rollback did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RollbackReport {
    /// (sysctl, target, restored value).
    pub restored: Vec<(String, Target, String)>,
    /// Entries whose namespace is gone, or was replaced by another with the same
    /// inode (its values went with it): forgotten, nothing written.
    pub gone: Vec<(String, Target)>,
    /// Entries nettune stood down from (someone else owns the value now): left
    /// as they are, and kept in the journal, unless forced.
    pub stood_down: Vec<(String, Target)>,
    /// (sysctl, target, error): kept in the journal for another try.
    pub failed: Vec<(String, Target, String)>,
}

/// Restores every journaled original and forgets each entry once restored (each
/// restore read back to be sure it took). Values nettune stood down from are left
/// to their new owner unless `force`. Never writes into a namespace other than
/// the one journaled. Safe to run twice (the second finds nothing) and after a
/// crash (the journal is on disk).
pub fn rollback<S: System>(
    actuator: &Actuator<S>,
    journal: &mut Journal,
    force: bool,
) -> Result<RollbackReport, JournalError> {
    let mut report = RollbackReport::default();
    journal.reload()?;
    for entry in journal.entries().to_vec() {
        let Ok(spec) = tunables::lookup(&entry.sysctl) else {
            journal.remove(&entry.sysctl, &entry.target)?;
            continue;
        };
        if entry.stood_down && !force {
            report.stood_down.push((entry.sysctl, entry.target));
            continue;
        }
        if let (Target::Netns { inode, .. }, Some(journaled)) = (&entry.target, &entry.identity) {
            match actuator.system().netns_identity(*inode) {
                Ok(now) if &now == journaled => {}
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    report.failed.push((
                        entry.sysctl,
                        entry.target,
                        format!("cannot identify the namespace: {e}"),
                    ));
                    continue;
                }
                // Gone, or another namespace now has the inode.
                _ => {
                    journal.remove(&entry.sysctl, &entry.target)?;
                    report.gone.push((entry.sysctl, entry.target));
                    continue;
                }
            }
        }
        match actuator.write(&entry.target, spec, &entry.original) {
            Ok(()) => {
                journal.remove(&entry.sysctl, &entry.target)?;
                report
                    .restored
                    .push((entry.sysctl, entry.target, entry.original));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && entry.target != Target::Node => {
                journal.remove(&entry.sysctl, &entry.target)?;
                report.gone.push((entry.sysctl, entry.target));
            }
            Err(e) => report
                .failed
                .push((entry.sysctl, entry.target, e.to_string())),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
