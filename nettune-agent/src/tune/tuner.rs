//! One tuning round: proposals through the guardrails, then (in enforce mode)
//! journal, write, journal — and every decision logged, counted and kept for the
//! UI. Also the static `apply` and `rollback`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    TuningConfig,
    actuator::Actuator,
    guardrails::{self, Limits},
    journal::{Journal, JournalError},
    policy::{self, NODEPORT_RANGE, Proposal},
    tunables::{self, Tunable},
    value::{self, Value},
};
use crate::{
    model::{
        snapshot::Snapshot,
        tuning::{Decision, DecisionCount, Managed, Mode, Outcome, Target, TuningState},
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
        }
    }

    /// Runs the policy on `snapshot` and acts on it according to the mode.
    pub fn round(&mut self, snapshot: &Snapshot, now: u64) -> Vec<Decision> {
        if self.config.mode == Mode::Observe {
            return Vec::new();
        }
        let proposals = policy::propose(snapshot, &self.config);
        let decisions: Vec<Decision> = proposals.iter().map(|p| self.decide(p, now)).collect();
        for d in &decisions {
            self.record(d);
        }
        decisions
    }

    fn decision(p: &Proposal, action: &'static str, now: u64) -> Decision {
        Decision {
            rule: p.rule.to_owned(),
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

    fn decide(&mut self, p: &Proposal, now: u64) -> Decision {
        let spec = p.sysctl;
        let action = spec.action();
        let mut d = Self::decision(p, action, now);
        let current = match p.target.as_ref().map(|t| self.actuator.read(t, spec)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => return fail(d, e),
            None => Value::Int(0),
        };
        d.from = p.target.as_ref().map(|_| current.to_string());
        let entry = p
            .target
            .as_ref()
            .and_then(|t| self.journal.entry(spec.name, t))
            .cloned();
        let limits = Limits {
            config: &self.config,
            mem_total: self.mem_total,
        };
        let next = if action == "reserve" {
            reserve_nodeports(&current).ok_or((
                Outcome::Refused,
                format!("{NODEPORT_RANGE} already reserved"),
            ))
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
                let target = p.target.clone().unwrap_or(Target::Node);
                self.write(d, &target, spec, &current, &next, now)
            }
        }
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
        if let Err(e) = self
            .journal
            .record_original(spec.name, target, &current.to_string())
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

    fn record(&mut self, d: &Decision) {
        match d.result {
            Outcome::Applied | Outcome::StoodDown | Outcome::Failed => log::warn!("tuning: {d}"),
            Outcome::Advised | Outcome::Refused => log::info!("tuning: {d}"),
        }
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
        let mut out = Vec::new();
        for (name, wanted) in values {
            let Ok(spec) = tunables::lookup(name) else {
                continue;
            };
            let p = Proposal {
                rule: "profile",
                sysctl: spec,
                target: Some(Target::Node),
                workload: "node".into(),
                evidence: format!("profile {profile} sets {name} = {wanted}"),
            };
            let mut d = Self::decision(&p, "set", now);
            let current = match self.actuator.read(&Target::Node, spec) {
                Ok(v) => v,
                Err(e) => {
                    out.push(fail(d, e));
                    continue;
                }
            };
            d.from = Some(current.to_string());
            let limits = Limits {
                config: &self.config,
                mem_total: self.mem_total,
            };
            let entry = self.journal.entry(name, &Target::Node).cloned();
            let decided = Value::parse(spec, wanted)
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
                });
            let d = match decided {
                Err((outcome, reason)) => {
                    d.result = outcome;
                    d.reason = Some(reason);
                    d
                }
                Ok(next) => {
                    d.to = Some(next.to_string());
                    if dry_run {
                        d.result = Outcome::Advised;
                        d
                    } else {
                        let mode = std::mem::replace(&mut self.config.mode, Mode::Enforce);
                        let d = self.write(d, &Target::Node, spec, &current, &next, now);
                        self.config.mode = mode;
                        d
                    }
                }
            };
            self.record(&d);
            out.push(d);
        }
        out
    }
}

fn fail(mut d: Decision, reason: String) -> Decision {
    d.result = Outcome::Failed;
    d.reason = Some(reason);
    d
}

/// `current` with the NodePort range added, or None if it is already there.
fn reserve_nodeports(current: &Value) -> Option<Value> {
    let Value::Text(list) = current else {
        return None;
    };
    let list = list.trim();
    if list.split(',').any(|r| r.trim() == NODEPORT_RANGE) {
        return None;
    }
    Some(Value::Text(if list.is_empty() {
        NODEPORT_RANGE.to_owned()
    } else {
        format!("{list},{NODEPORT_RANGE}")
    }))
}

/// What a rollback did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RollbackReport {
    /// (sysctl, target, restored value).
    pub restored: Vec<(String, Target, String)>,
    /// Entries whose namespace no longer exists (its values went with it).
    pub gone: Vec<(String, Target)>,
    /// (sysctl, target, error): kept in the journal for another try.
    pub failed: Vec<(String, Target, String)>,
}

/// Restores every journaled original and forgets each entry once restored. Safe to
/// run twice (the second finds nothing) and after a crash (the journal is on disk).
pub fn rollback<S: System>(
    actuator: &Actuator<S>,
    journal: &mut Journal,
) -> Result<RollbackReport, JournalError> {
    let mut report = RollbackReport::default();
    for entry in journal.entries().to_vec() {
        let Ok(spec) = tunables::lookup(&entry.sysctl) else {
            journal.remove(&entry.sysctl, &entry.target)?;
            continue;
        };
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
