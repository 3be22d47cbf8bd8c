//! The tuner's vocabulary: its mode, the places it changes sysctls, its decisions
//! and the values it manages. [`crate::tune`] produces these; the metrics, the
//! JSON API and the TUI show them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the tuner may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Watch only: no tuning decisions.
    #[default]
    Observe,
    /// Decide and explain, write nothing.
    Advise,
    /// Decide and write, within the limits.
    Enforce,
}

impl Mode {
    /// Every mode, for the `nettune_tuning_mode` metric.
    pub const ALL: [Self; 3] = [Self::Observe, Self::Advise, Self::Enforce];

    /// The config value and metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Observe => "observe",
            Self::Advise => "advise",
            Self::Enforce => "enforce",
        }
    }
}

/// Why the tuner runs in a milder mode than its config asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Demotion {
    /// The `/proc/sys` in use is read-only (a container's own, `tuning.proc_sys`
    /// not pointing at the node's): enforce advises instead.
    ProcSysReadOnly,
    /// The journal cannot be read (corrupt, or its directory unusable): tuning
    /// is off, observing goes on, until a person fixes or moves the file.
    JournalUnusable,
}

impl Demotion {
    /// Every reason, for the `nettune_tuning_demoted` metric.
    pub const ALL: [Self; 2] = [Self::ProcSysReadOnly, Self::JournalUnusable];

    /// The JSON value and metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ProcSysReadOnly => "proc_sys_read_only",
            Self::JournalUnusable => "journal_unusable",
        }
    }
}

/// Where a sysctl is read or written. Two targets are the same place when they
/// are the same namespace: a pod's label is for people, and changes while the
/// namespace stays (the runtime answers again and a UID becomes
/// `namespace/name`), so equality, order and hash look at the inode alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The host's (the agent's own) network namespace: node-wide values and the
    /// node's per-namespace values.
    Node,
    /// A pod's network namespace, by inode, with the workload's label for people.
    Netns {
        /// The namespace inode.
        inode: u32,
        /// The workload's `pod` label.
        label: String,
    },
}

impl Target {
    /// What identifies the place: `None` for the node, the inode for a pod.
    fn place(&self) -> Option<u32> {
        match self {
            Self::Node => None,
            Self::Netns { inode, .. } => Some(*inode),
        }
    }
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.place() == other.place()
    }
}

impl Eq for Target {}

impl PartialOrd for Target {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Target {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.place().cmp(&other.place())
    }
}

impl std::hash::Hash for Target {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.place().hash(state);
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node => f.write_str("node"),
            Self::Netns { label, inode } => write!(f, "{label} (netns {inode})"),
        }
    }
}

/// What tells a network namespace from a later one that got the same inode
/// number (the kernel reuses them): every mark the kernel offers, recorded when
/// nettune first changes a value in a pod's namespace and checked
/// ([`NamespaceIdentity::judge`]) before it writes there again or restores.
///
/// Before Linux 5.14 there is no cookie, and the other marks come and go with
/// the namespace's users (its last process exits, its `/run/netns` name is
/// unmounted): keeping all of them lets one that lasts prove it is the same
/// namespace when another has changed. Journals written with one mark (the
/// older `{"named": …}` form too) read as an identity of that one mark.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceIdentity {
    /// The namespace cookie (`SO_NETNS_COOKIE`, Linux 5.14+): never reused while
    /// the node runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<u64>,
    /// The lowest process inside it, by pid and start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessStamp>,
    /// Its name under `/run/netns`.
    #[serde(default, alias = "named", skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A process, told from a later one with the same pid by its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStamp {
    /// The process.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat`).
    pub start_time: u64,
}

/// Whether the namespace found now is the one an identity was recorded for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sameness {
    /// A mark that lasts for the namespace's life still matches.
    Same,
    /// A mark that lasts for the namespace's life differs: another namespace.
    Other,
    /// Nothing shared either way (no cookie, and the recorded process and name
    /// are gone): it may be either, so nothing is written there on its word.
    Unproven,
}

impl NamespaceIdentity {
    /// Judges `now` (what the kernel shows at the inode today) against `self`
    /// (what was recorded): a cookie decides when both have one; else a
    /// `/run/netns` name both have (a name stays bound to one namespace until it
    /// is unmounted); else the same process, alive with the same start time
    /// (a live process keeps its namespace, so the inode was never freed). A
    /// process that differs proves nothing: the recorded one may have exited.
    pub fn judge(&self, now: &Self) -> Sameness {
        let decides = |same: bool| {
            if same {
                Sameness::Same
            } else {
                Sameness::Other
            }
        };
        if let (Some(then), Some(found)) = (self.cookie, now.cookie) {
            return decides(then == found);
        }
        if let (Some(then), Some(found)) = (&self.name, &now.name) {
            return decides(then == found);
        }
        match (self.process, now.process) {
            (Some(then), Some(found)) if then == found => Sameness::Same,
            _ => Sameness::Unproven,
        }
    }

    /// The marks of `self` with those `now` adds (a name given since, the
    /// process that lives there now): what to record once `now` is judged the
    /// same namespace, so that a later change of one mark is still proven by
    /// another.
    #[must_use]
    pub fn merged(&self, now: &Self) -> Self {
        Self {
            cookie: self.cookie.or(now.cookie),
            process: now.process.or(self.process),
            name: self.name.clone().or_else(|| now.name.clone()),
        }
    }
}

impl fmt::Display for NamespaceIdentity {
    /// `cookie 7, process 812 started at tick 5501, /run/netns/cni-1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut marks = Vec::new();
        if let Some(cookie) = self.cookie {
            marks.push(format!("cookie {cookie}"));
        }
        if let Some(p) = self.process {
            marks.push(format!(
                "process {} started at tick {}",
                p.pid, p.start_time
            ));
        }
        if let Some(name) = &self.name {
            marks.push(format!("/run/netns/{name}"));
        }
        if marks.is_empty() {
            f.write_str("no mark")
        } else {
            f.write_str(&marks.join(", "))
        }
    }
}

/// How a decision ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Written (enforce mode).
    Applied,
    /// Would have been written (advise mode, or `apply --dry-run`).
    Advised,
    /// A guardrail said no.
    Refused,
    /// Someone else changed the value after nettune did; nettune stops managing it.
    StoodDown,
    /// Reading or writing failed.
    Failed,
    /// Raising it cannot help (the evidence points elsewhere, or an earlier
    /// raise had no effect); the reason says what would.
    Futile,
}

impl Outcome {
    /// Label value in `nettune_tuning_decisions_total{result}`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Advised => "advised",
            Self::Refused => "refused",
            Self::StoodDown => "stood_down",
            Self::Failed => "failed",
            Self::Futile => "futile",
        }
    }
}

/// One decision, with everything needed to explain it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The rule (scenario) that fired, e.g. `listen_overflows`, or `profile`.
    pub rule: String,
    /// The sysctl's dotted name.
    pub sysctl: String,
    /// Where it would be changed; `None` when the workload's own namespace is not
    /// opted in to tuning.
    pub target: Option<Target>,
    /// Who it is for, for people (`node`, a pod).
    pub workload: String,
    /// `raise`, `reserve` (port lists) or `set` (profiles).
    pub action: String,
    /// How it ended.
    pub result: Outcome,
    /// The value found.
    pub from: Option<String>,
    /// The value written (or that would be).
    pub to: Option<String>,
    /// The figures that triggered the rule.
    pub evidence: String,
    /// Why a guardrail refused, or what failed.
    pub reason: Option<String>,
    /// When, in Unix seconds.
    pub at_unix: u64,
}

impl fmt::Display for Decision {
    /// `rule: sysctl old → new on target [result], because evidence — reason`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let change = match (&self.from, &self.to) {
            (Some(a), Some(b)) => format!("{a} → {b}"),
            (Some(a), None) => format!("stays {a}"),
            _ => String::new(),
        };
        let place = self.target.as_ref().map_or_else(
            || format!("{} (namespace not opted in)", self.workload),
            ToString::to_string,
        );
        write!(
            f,
            "{}: {} {} on {place} [{}], because {}",
            self.rule,
            self.sysctl,
            change.replace('\t', " "),
            self.result.label(),
            self.evidence
        )?;
        if let Some(r) = &self.reason {
            write!(f, " — {}", r.replace('\t', " "))?;
        }
        Ok(())
    }
}

/// A managed sysctl's values, for the UI and metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Managed {
    /// The sysctl's dotted name.
    pub sysctl: String,
    /// Where.
    pub target: Target,
    /// The value now (`None` if it cannot be read).
    pub current: Option<String>,
    /// The value found before nettune's first write: what rollback restores.
    pub original: String,
    /// `current` on the sysctl's room scale (a range's width, a buffer's maximum,
    /// a switch's rank), for metrics.
    pub current_room: Option<u64>,
    /// `original` on the same scale.
    pub original_room: Option<u64>,
    /// The most nettune will raise it to, on the same scale.
    pub ceiling: u64,
    /// Someone else changed it after nettune did: hands off.
    pub stood_down: bool,
}

/// How many decisions of one kind were taken so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionCount {
    /// The sysctl's dotted name.
    pub sysctl: String,
    /// `raise`, `reserve` or `set`.
    pub action: String,
    /// An [`Outcome`] label.
    pub result: String,
    /// Decisions so far.
    pub count: u64,
}

/// What became of an applied change, judged from the evidence that triggered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within its window: not judged yet.
    Watching,
    /// It cannot act yet (a listener keeps its old limit until it listens again).
    NoEffectYet,
    /// The evidence fell by 90 % or more (and the table is under its threshold).
    Effective,
    /// The evidence went on: the change is not repeated.
    Ineffective,
    /// The evidence went away before a verdict (its namespace is gone).
    Unknown,
}

impl Verdict {
    /// Label value in `nettune_tuning_effect_total{verdict}`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Watching => "watching",
            Self::NoEffectYet => "no_effect_yet",
            Self::Effective => "effective",
            Self::Ineffective => "ineffective",
            Self::Unknown => "unknown",
        }
    }

    /// Whether the change is judged for good.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Effective | Self::Ineffective | Self::Unknown)
    }
}

/// An applied change and its verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// The rule that made it.
    pub rule: String,
    /// The sysctl's dotted name.
    pub sysctl: String,
    /// Where.
    pub target: Target,
    /// Who it was for.
    pub workload: String,
    /// The value before.
    pub from: String,
    /// The value written.
    pub to: String,
    /// When it was written, in Unix seconds.
    pub applied_at_unix: u64,
    /// The verdict so far.
    pub verdict: Verdict,
    /// Why: the evidence before and after, or what it waits for.
    pub detail: String,
}

impl fmt::Display for Effect {
    /// `sysctl old → new on target: verdict — detail`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} → {} on {}: {} — {}",
            self.sysctl,
            self.from.replace('\t', " "),
            self.to.replace('\t', " "),
            self.target,
            self.verdict.label(),
            self.detail
        )
    }
}

/// How many changes reached one verdict so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectCount {
    /// The sysctl's dotted name.
    pub sysctl: String,
    /// A [`Verdict`] label.
    pub verdict: String,
    /// Changes so far.
    pub count: u64,
}

/// What the tuner shows: recent decisions, managed values, decision counts, and
/// the verdicts on its changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TuningState {
    /// The last decisions, oldest first.
    pub recent: Vec<Decision>,
    /// Every value in the journal, with its current value.
    pub managed: Vec<Managed>,
    /// Decision counts by (sysctl, action, result).
    pub counts: Vec<DecisionCount>,
    /// The last applied changes and their verdicts, oldest first.
    #[serde(default)]
    pub effects: Vec<Effect>,
    /// Verdicts reached, by (sysctl, verdict).
    #[serde(default)]
    pub effect_counts: Vec<EffectCount>,
}

#[cfg(test)]
mod tests {
    use super::{NamespaceIdentity, ProcessStamp, Sameness};

    fn id(cookie: Option<u64>, pid: Option<u32>, name: Option<&str>) -> NamespaceIdentity {
        NamespaceIdentity {
            cookie,
            process: pid.map(|pid| ProcessStamp {
                pid,
                start_time: u64::from(pid) * 10,
            }),
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn a_cookie_decides_whatever_else_changed() {
        let then = id(Some(7), Some(100), Some("a"));
        assert_eq!(then.judge(&id(Some(7), Some(200), None)), Sameness::Same);
        assert_eq!(
            then.judge(&id(Some(8), Some(100), Some("a"))),
            Sameness::Other
        );
    }

    #[test]
    fn without_cookies_a_name_that_stays_proves_it_when_the_last_process_went() {
        // Before 5.14: recorded with its process and its /run/netns name.
        let then = id(None, Some(100), Some("pod"));
        assert_eq!(then.judge(&id(None, None, Some("pod"))), Sameness::Same);
        assert_eq!(
            then.judge(&id(None, Some(300), Some("pod"))),
            Sameness::Same
        );
        assert_eq!(
            then.judge(&id(None, Some(100), Some("other"))),
            Sameness::Other
        );
        // Recorded by name alone, a process entering it changes nothing.
        let named = id(None, None, Some("pod"));
        assert_eq!(named.judge(&id(None, Some(5), Some("pod"))), Sameness::Same);
    }

    #[test]
    fn without_cookies_or_names_only_the_same_live_process_proves_it() {
        let then = id(None, Some(100), None);
        assert_eq!(then.judge(&id(None, Some(100), None)), Sameness::Same);
        assert_eq!(then.judge(&id(None, Some(200), None)), Sameness::Unproven);
        assert_eq!(then.judge(&id(None, None, Some("x"))), Sameness::Unproven);
        assert_eq!(
            NamespaceIdentity::default().judge(&id(None, Some(1), None)),
            Sameness::Unproven
        );
    }

    #[test]
    fn a_merged_identity_keeps_the_marks_that_last_and_the_process_of_now() {
        let merged = id(None, Some(100), None).merged(&id(None, Some(200), Some("pod")));
        assert_eq!(merged, id(None, Some(200), Some("pod")));
        // The name recorded then stays even when it is not seen now.
        assert_eq!(
            id(None, None, Some("pod")).merged(&id(None, Some(9), None)),
            id(None, Some(9), Some("pod"))
        );
    }

    #[test]
    fn journals_of_one_mark_read_as_an_identity_of_that_mark() {
        let read = |text: &str| serde_json::from_str::<NamespaceIdentity>(text).unwrap();
        assert_eq!(read(r#"{"cookie":7}"#), id(Some(7), None, None));
        assert_eq!(read(r#"{"named":"pod"}"#), id(None, None, Some("pod")));
        assert_eq!(
            read(r#"{"process":{"pid":100,"start_time":1000}}"#),
            id(None, Some(100), None)
        );
        let all = id(Some(1), Some(2), Some("n"));
        assert_eq!(read(&serde_json::to_string(&all).unwrap()), all);
    }
}
