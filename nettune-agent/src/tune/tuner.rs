//! One tuning round: proposals through the guardrails, then (in enforce mode)
//! journal, write, journal — and every decision logged, counted and kept for the
//! UI. Also the static `apply` and `rollback`.

use std::collections::BTreeMap;

use super::{
    actuator::Actuator,
    guardrails::{self, Limits},
    journal::{Journal, JournalError},
    policy::{self, Proposal},
    rules::{self, Plan},
    verify::{self, Watch},
};
use crate::{
    config::TuningConfig,
    model::{
        snapshot::Snapshot,
        sysctl_writers::foreign_writer,
        tunables::{self, IP_LOCAL_RESERVED_PORTS, Shape, Tunable},
        tuning::{
            Decision, DecisionCount, EffectCount, Managed, Mode, NamespaceIdentity, Outcome,
            Target, TuningState,
        },
        value::{self, PortList, Value},
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
    /// Bytes in a memory page (values the kernel rounds to whole pages).
    page_size: u64,
    /// (sysctl, target) → attempts to write there whose intent the journal
    /// could not take: the cooldown and the hourly budget count them too.
    unrecorded: BTreeMap<(String, Target), Vec<u64>>,
    /// (sysctl, target) → the last failure logged as a warning, and when: the
    /// same failure is logged once per cooldown.
    failure_logged: BTreeMap<(String, Option<Target>), (Option<String>, u64)>,
    /// Why the journal could not be re-read, while it cannot: tuning pauses.
    journal_error: Option<String>,
    /// Namespace inode → the ports listening there that widening the ephemeral
    /// range would expose (from the last round's Snapshot).
    listening: BTreeMap<u32, PortList>,
    /// (sysctl, writer) → refusals of its writes by a guard already logged.
    refusals_logged: BTreeMap<(String, String), u64>,
}

const RECENT: usize = 50;

/// Journal entries of namespaces missing from the Snapshot checked per round
/// (each check looks the namespace up).
const DEPARTED_CHECKS_PER_ROUND: usize = 8;

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
            page_size: system.page_size(),
            unrecorded: BTreeMap::new(),
            failure_logged: BTreeMap::new(),
            journal_error: None,
            listening: BTreeMap::new(),
            refusals_logged: BTreeMap::new(),
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

    /// Why the journal cannot be read now (tuning is paused until it can).
    pub fn journal_error(&self) -> Option<&str> {
        self.journal_error.as_deref()
    }

    /// The limits every check of a change is made against.
    fn limits(&self) -> Limits<'_> {
        Limits {
            config: &self.config,
            mem_total: self.mem_total,
            page_size: self.page_size,
        }
    }

    /// Decisions, managed values and counts so far.
    pub fn state(&self) -> TuningState {
        let limits = self.limits();
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

    /// Runs the policy on `snapshot` and acts on it according to the mode. An
    /// enforcing tuner holds the journal's lock for the whole round, so a
    /// `nettune rollback` beside it waits instead of restoring a value this
    /// round is about to change (and the round sees the rollback's record).
    pub fn round(&mut self, snapshot: &Snapshot, now: u64) -> Vec<Decision> {
        if self.config.mode == Mode::Observe {
            return Vec::new();
        }
        if !self.owns_journal() {
            return self.round_holding(snapshot, now);
        }
        if let Err(e) = self.journal.hold() {
            log::warn!("tuning round skipped: cannot lock the journal: {e}");
            return Vec::new();
        }
        let decisions = self.round_holding(snapshot, now);
        self.journal.release();
        decisions
    }

    /// [`Self::round`], with the journal held when it is ours to change.
    fn round_holding(&mut self, snapshot: &Snapshot, now: u64) -> Vec<Decision> {
        self.listening = exposed_listeners(snapshot, self.config.lowest_ephemeral_port);
        // `nettune rollback` may have changed the journal since the last round.
        // One that cannot be read pauses tuning: deciding on a stale copy could
        // disown or repeat a change. Said once, and once when it reads again.
        match self.journal.reload() {
            Ok(()) => {
                if self.journal_error.take().is_some() {
                    log::warn!(
                        "tuning resumes: the journal {} reads again",
                        self.journal.path().display()
                    );
                }
            }
            Err(e) => {
                if self.journal_error.is_none() {
                    log::error!(
                        "tuning paused: {e}. Observing continues; tuning resumes once the \
                         journal reads again"
                    );
                }
                self.journal_error = Some(e.to_string());
                return Vec::new();
            }
        }
        if self.owns_journal() {
            self.forget_departed(snapshot);
        }
        self.log_refusals(snapshot);
        self.verify(snapshot, now);
        let proposals = policy::propose(snapshot, &self.config);
        let mut decisions: Vec<Decision> = Vec::with_capacity(proposals.len());
        for p in &proposals {
            let mut d = self.decide(p, &decisions, now);
            if d.result == Outcome::StoodDown
                && let Some(w) = foreign_writer(&snapshot.sysctl_writers, p.sysctl.name)
            {
                // The cgroup/sysctl probe saw who: name them.
                let reason = d.reason.take().unwrap_or_default();
                d.reason = Some(format!("{reason} ({})", w.describe()));
            }
            self.log(&d);
            self.count(&d);
            if d.result == Outcome::Applied && *p.rule != rules::PROFILE {
                let before = verify::evidence_for(p, snapshot, &self.config);
                self.watch(Watch::new(p, &d, before));
            }
            decisions.push(d);
        }
        decisions
    }

    fn decision(p: &Proposal, action: &'static str, now: u64) -> Decision {
        Decision {
            rule: p.rule.name.to_owned(),
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
        // Which namespace this decision is about, fixed before anything is read
        // there: a write goes to that one or nowhere.
        let identity = match (self.owns_journal(), p.target.as_ref()) {
            (true, Some(Target::Netns { inode, .. })) => {
                match self.actuator.system().netns_identity(*inode) {
                    Ok(id) => Some(id),
                    // Unidentified, a later rollback could not tell it from a successor.
                    Err(e) => {
                        return fail(
                            d,
                            format!("not written: cannot identify netns {inode}: {e}"),
                        );
                    }
                }
            }
            _ => None,
        };
        let current = match p.target.as_ref().map(|t| self.actuator.read(t, spec)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => return fail(d, e.to_string()),
            None => Value::Int(0),
        };
        d.from = p.target.as_ref().map(|_| current.to_string());
        let entry = match p.target.as_ref().map(|t| self.history(spec, t, &current)) {
            None | Some(history::Known::Entry(None)) => None,
            Some(history::Known::Entry(Some(entry))) => Some(entry),
            Some(history::Known::Unproven(why)) => {
                d.result = Outcome::Refused;
                d.reason = Some(why);
                return d;
            }
        };
        let limits = self.limits();
        let protected = self.protected_ports(p);
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
            Err((Outcome::Refused, reason.to_string()))
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
                    && self.owns_journal()
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
                self.write(d, &target, identity, spec, (&current, &next), now)
            }
        }
    }

    /// Whether this tuner may change the journal: only an enforcing one, whose
    /// writes it records. An advising tuner (`nettune top`'s embedded agent, a
    /// daemon demoted to advise) reads it and leaves it as the writer left it.
    fn owns_journal(&self) -> bool {
        self.config.mode == Mode::Enforce
    }

    /// The ports to keep from ephemeral use where `p` acts: what listens there
    /// below the ephemeral range, and on the node also `tuning.reserved_ports`
    /// (with the agent's own).
    fn protected_ports(&self, p: &Proposal) -> PortList {
        let listening = self.listening.get(&p.netns).cloned().unwrap_or_default();
        match p.target {
            Some(Target::Node) | None => self.config.protected_ports().union(&listening),
            Some(Target::Netns { .. }) => listening,
        }
    }

    /// `Ok` when the `protected` ports (none, in a pod where nothing listens
    /// below the range) are reserved at `target` — already, or by a reservation
    /// applied (or, in advise mode, advised) earlier this round.
    pub(super) fn ports_protected(
        &self,
        target: &Target,
        protected: &PortList,
        earlier: &[Decision],
    ) -> Result<(), PortsExposed> {
        if protected.is_empty() {
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
        Err(PortsExposed {
            protected: protected.to_string(),
            reserved: have.map(|h| h.to_string()).unwrap_or_default(),
        })
    }

    /// Journal the intent (the original, the value about to be written, the
    /// attempt), write, journal the write — or undo it if that cannot be
    /// journaled (enforce); or just advise.
    fn write(
        &mut self,
        mut d: Decision,
        target: &Target,
        identity: Option<NamespaceIdentity>,
        spec: &Tunable,
        (current, next): (&Value, &Value),
        now: u64,
    ) -> Decision {
        if self.config.mode != Mode::Enforce {
            d.result = Outcome::Advised;
            return d;
        }
        let (was, value) = (current.to_string(), next.to_string());
        if let Err(e) =
            self.journal
                .record_intent(spec.name, target, &was, identity.clone(), &value, now)
        {
            // No intent on disk, no write: the original (or whose value the
            // written one is) could be lost. The attempt still counts.
            let attempts = self
                .unrecorded
                .entry((spec.name.to_owned(), target.clone()))
                .or_default();
            attempts.retain(|t| now.saturating_sub(*t) < 3600);
            attempts.push(now);
            return fail(d, format!("not written: {e}"));
        }
        if let Err(e) = self.actuator.write(target, identity.as_ref(), spec, &value) {
            return fail(
                d,
                format!("writing {}: {e} (the original is journaled)", spec.name),
            );
        }
        if let Err(e) = self.journal.record_write(spec.name, target, &value) {
            // A value the journal cannot vouch for is not kept: put back what
            // was there (the intent on disk still names both as nettune's).
            let undone = match self.actuator.write(target, identity.as_ref(), spec, &was) {
                Ok(()) => format!("{current} restored"),
                Err(undo) => format!(
                    "restoring {current} failed too ({undo}): {next} stays, journaled as an intent"
                ),
            };
            return fail(
                d,
                format!(
                    "not kept: {} was written but the journal could not record it ({e}); {undone}",
                    spec.name
                ),
            );
        }
        d.result = Outcome::Applied;
        d
    }

    /// Logs a round's decision (the daemon's record of what it did and why); a
    /// failure that repeats is a warning once per cooldown, else a debug line.
    fn log(&mut self, d: &Decision) {
        match d.result {
            Outcome::Applied | Outcome::StoodDown => log::warn!("tuning: {d}"),
            Outcome::Failed => {
                let key = (d.sysctl.clone(), d.target.clone());
                let repeated = self.failure_logged.get(&key).is_some_and(|(reason, at)| {
                    *reason == d.reason
                        && d.at_unix.saturating_sub(*at) < self.config.cooldown_seconds
                });
                if repeated {
                    log::debug!("tuning: {d}");
                } else {
                    log::warn!("tuning: {d}");
                    self.failure_logged
                        .insert(key, (d.reason.clone(), d.at_unix));
                }
            }
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
}

/// The ports nettune protects are not reserved: widening the ephemeral range
/// could hand them out.
#[derive(Debug, thiserror::Error)]
#[error(
    "not widened: the ports nettune protects ({protected}) are not reserved in \
     net.ipv4.ip_local_reserved_ports (= {reserved:?}): outgoing connections could take them"
)]
pub struct PortsExposed {
    /// The ports to protect.
    protected: String,
    /// What is reserved now.
    reserved: String,
}

/// `d`, failed for `reason`.
pub(super) fn fail(mut d: Decision, reason: String) -> Decision {
    d.result = Outcome::Failed;
    d.reason = Some(reason);
    d
}

/// Namespace inode → the ports listening there from `lowest` up to below its
/// ephemeral range (32768 where the range is unknown, the kernel's default):
/// the ports widening the range would hand to outgoing connections.
fn exposed_listeners(snapshot: &Snapshot, lowest: u64) -> BTreeMap<u32, PortList> {
    let mut ports: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
    for l in &snapshot.listeners {
        let low = snapshot
            .workload(l.netns)
            .and_then(|w| w.netns_sysctls)
            .and_then(|s| s.ephemeral_ports)
            .map_or(32768, |(low, _)| u64::from(low));
        if (lowest..low).contains(&u64::from(l.port)) {
            ports.entry(l.netns).or_default().push(l.port);
        }
    }
    ports
        .into_iter()
        .map(|(netns, p)| (netns, PortList::of_ports(p)))
        .collect()
}

mod apply;
mod guard;
mod history;
#[cfg(test)]
mod tests;
mod verdicts;
