//! Every check a change passes, in one place.
//!
//! In order: the allow-list (a [`Spec`] exists only for allow-listed names), the
//! exclusion list, the namespace opt-in, stand-down (someone else changed a value
//! nettune manages), the cooldown, the hourly budget, then the new value itself:
//! towards more room only (never below what was found), by at most `max_step`,
//! never past the ceiling (the config's, else the guide's, and for conntrack also
//! a share of RAM), never below the floor.

use serde::Serialize;

use super::{
    io::Target,
    journal::Entry,
    value::{self, Value},
};
use crate::{config::TuningConfig, sysctl::Spec};

/// How a decision ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
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
        }
    }
}

/// The guide's recommendations, used as ceilings when the config sets none.
pub fn default_ceiling(spec: &Spec, target: &Target) -> u64 {
    match spec.name {
        "net.core.somaxconn" if matches!(target, Target::Netns { .. }) => 65_535,
        "net.core.somaxconn" => 32_768,
        "net.ipv4.tcp_max_syn_backlog" => 8_192,
        "net.core.netdev_max_backlog" => 16_384,
        "net.netfilter.nf_conntrack_max" => 1_048_576,
        "net.netfilter.nf_conntrack_buckets" => 262_144,
        "net.core.rmem_max" | "net.core.wmem_max" => 16_777_216,
        "net.ipv4.tcp_rmem" | "net.ipv4.tcp_wmem" => 16_777_216,
        // Width of 1024-65535.
        "net.ipv4.ip_local_port_range" => 65_535 - 1_024,
        // On (1) is the top of 0 < 2 < 1.
        "net.ipv4.tcp_tw_reuse" => 2,
        _ => 0,
    }
}

/// Everything the checks need besides the proposal.
pub struct Limits<'a> {
    pub config: &'a TuningConfig,
    /// Bytes of RAM (for the conntrack cap).
    pub mem_total: u64,
}

/// Bytes one conntrack entry costs, roughly (struct nf_conn plus hash slot).
const CONNTRACK_ENTRY_BYTES: u64 = 320;

impl Limits<'_> {
    /// The ceiling on the strength scale of `value`: config, else the guide;
    /// conntrack also capped by `conntrack_memory_percent` of RAM.
    pub fn ceiling(&self, spec: &Spec, target: &Target) -> u64 {
        let configured = self
            .config
            .limits
            .get(spec.name)
            .and_then(|l| l.ceiling)
            .unwrap_or_else(|| default_ceiling(spec, target));
        if spec.name == "net.netfilter.nf_conntrack_max" && self.mem_total > 0 {
            let budget =
                (self.mem_total as f64 * self.config.conntrack_memory_percent / 100.0) as u64;
            configured.min(budget / CONNTRACK_ENTRY_BYTES)
        } else {
            configured
        }
    }
}

/// A refusal: the outcome and why.
pub type Refusal = (Outcome, String);

/// Checks raising `spec` at `target` from `current`; returns the value to write.
pub fn check_raise(
    spec: &Spec,
    target: Option<&Target>,
    current: &Value,
    entry: Option<&Entry>,
    limits: &Limits<'_>,
    now: u64,
) -> Result<Value, Refusal> {
    let target = check_place(spec, target, current, entry, limits, now)?;
    let ceiling = limits.ceiling(spec, target);
    let floor = limits.config.limits.get(spec.name).and_then(|l| l.floor);
    let Some(mut next) = value::raise(spec, current, limits.config.max_step, ceiling) else {
        return Err((
            Outcome::Refused,
            format!(
                "ceiling reached: {current} is at or above the ceiling {ceiling}; this needs a human"
            ),
        ));
    };
    if let (Some(floor), Value::Int(v)) = (floor, &next)
        && *v < floor
    {
        next = Value::Int(floor.min(ceiling));
    }
    Ok(next)
}

/// Checks setting `spec` at `target` to exactly `wanted` (static profiles): never
/// lowering a room sysctl, never past its ceiling.
pub fn check_set(
    spec: &Spec,
    target: &Target,
    current: &Value,
    wanted: &Value,
    entry: Option<&Entry>,
    limits: &Limits<'_>,
) -> Result<Value, Refusal> {
    check_not_excluded(spec, limits)?;
    check_not_stood_down(spec, current, entry)?;
    if current == wanted {
        return Err((Outcome::Refused, format!("already {current}")));
    }
    if spec.direction() == crate::sysctl::Direction::MoreRoom {
        let (have, want) = (
            value::strength(spec, current),
            value::strength(spec, wanted),
        );
        if have > want {
            return Err((
                Outcome::Refused,
                format!("kept {current}: it gives more room than the profile's {wanted}"),
            ));
        }
        let ceiling = limits.ceiling(spec, target);
        if want > ceiling {
            return Err((
                Outcome::Refused,
                format!("{wanted} is above the ceiling {ceiling}"),
            ));
        }
    }
    Ok(wanted.clone())
}

fn check_not_excluded(spec: &Spec, limits: &Limits<'_>) -> Result<(), Refusal> {
    if limits.config.exclude.iter().any(|e| e == spec.name) {
        return Err((Outcome::Refused, "excluded by tuning.exclude".into()));
    }
    Ok(())
}

fn check_not_stood_down(
    spec: &Spec,
    current: &Value,
    entry: Option<&Entry>,
) -> Result<(), Refusal> {
    let Some(entry) = entry else { return Ok(()) };
    if entry.stood_down {
        return Err((
            Outcome::Refused,
            "stood down earlier: someone else manages this value (rollback to take it back)".into(),
        ));
    }
    if let Some(ours) = &entry.last_written
        && Value::parse(spec, ours).ok().as_ref() != Some(current)
    {
        return Err((
            Outcome::StoodDown,
            format!("changed from {ours} (nettune's) to {current} by someone else: standing down"),
        ));
    }
    Ok(())
}

fn check_place<'a>(
    spec: &Spec,
    target: Option<&'a Target>,
    current: &Value,
    entry: Option<&Entry>,
    limits: &Limits<'_>,
    now: u64,
) -> Result<&'a Target, Refusal> {
    check_not_excluded(spec, limits)?;
    let Some(target) = target else {
        return Err((
            Outcome::Refused,
            "the workload's namespace is not opted in (tuning.pod_netns)".into(),
        ));
    };
    check_not_stood_down(spec, current, entry)?;
    if let Some(entry) = entry {
        if let Some(last) = entry.writes.last()
            && now.saturating_sub(*last) < limits.config.cooldown_seconds
        {
            return Err((
                Outcome::Refused,
                format!(
                    "cooldown: changed {} s ago (tuning.cooldown_seconds = {})",
                    now.saturating_sub(*last),
                    limits.config.cooldown_seconds
                ),
            ));
        }
        let recent = entry
            .writes
            .iter()
            .filter(|t| now.saturating_sub(**t) < 3600)
            .count();
        if recent >= limits.config.max_changes_per_hour as usize {
            return Err((
                Outcome::Refused,
                format!("hourly budget spent: {recent} changes in the last hour"),
            ));
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests;
