//! Every check a change passes, in one place.
//!
//! In order: the allow-list (a [`Tunable`] exists only for names in the table), the
//! exclusion list, the namespace opt-in, stand-down (someone else changed a value
//! nettune manages), the cooldown, the hourly budget, then the new value itself:
//! towards more room only (never below what was found), by at most `max_step`,
//! never past the ceiling (the config's, else the guide's, and for conntrack also
//! a share of RAM) even once the kernel rounds it, never below the floor.

use super::journal::Entry;
use crate::{
    config::TuningConfig,
    model::{
        tunables::{Direction, Tunable},
        tuning::{Outcome, Target},
        value::{self, PortList, Value},
    },
};

/// Everything the checks need besides the proposal.
pub struct Limits<'a> {
    /// The tuner's settings.
    pub config: &'a TuningConfig,
    /// Bytes of RAM (for tables whose ceiling is also a share of RAM).
    pub mem_total: u64,
    /// Bytes in a memory page (for values the kernel rounds to whole pages).
    pub page_size: u64,
}

impl Limits<'_> {
    /// The ceiling on `spec`'s strength scale: the config's, else the table's;
    /// tables that cost memory are also capped at `conntrack_memory_percent` of RAM.
    pub fn ceiling(&self, spec: &Tunable, target: &Target) -> u64 {
        let in_pod = matches!(target, Target::Netns { .. });
        let configured = self
            .config
            .limits
            .get(spec.name)
            .and_then(|l| l.ceiling)
            .or_else(|| spec.default_ceiling(in_pod))
            .unwrap_or(0);
        match spec.bytes_per_unit {
            Some(bytes) if self.mem_total > 0 => {
                let budget =
                    (self.mem_total as f64 * self.config.conntrack_memory_percent / 100.0) as u64;
                configured.min(budget / bytes)
            }
            _ => configured,
        }
    }
}

/// A refusal: the outcome and why.
pub type Refusal = (Outcome, String);

/// Checks raising `spec` at `target` from `current`; returns the value to write.
pub fn check_raise(
    spec: &Tunable,
    target: Option<&Target>,
    current: &Value,
    entry: Option<&Entry>,
    limits: &Limits<'_>,
    now: u64,
) -> Result<Value, Refusal> {
    let target = check_place(spec, target, current, entry, limits, now)?;
    let ceiling = limits.ceiling(spec, target);
    let floor = limits.config.limits.get(spec.name).and_then(|l| l.floor);
    // The value as the kernel will keep it, so that what is written, read back
    // and journaled is one value, and rounding never carries it past the ceiling.
    let raised = value::raise(
        spec,
        current,
        limits.config.max_step,
        ceiling,
        limits.config.lowest_ephemeral_port,
    )
    .map(|next| match floor {
        // On the strength scale, like the ceiling: a rank, a width, a maximum.
        Some(floor) => value::at_least(
            spec,
            &next,
            floor.min(ceiling),
            limits.config.lowest_ephemeral_port,
        ),
        None => next,
    })
    .map(|next| value::normalise_within(spec, &next, ceiling, limits.page_size))
    .filter(|next| value::strength(spec, next) > value::strength(spec, current));
    let Some(next) = raised else {
        return Err((
            Outcome::Refused,
            format!(
                "ceiling reached: {current} is at or above the ceiling {ceiling}; this needs a human"
            ),
        ));
    };
    Ok(next)
}

/// Checks reserving `wanted` ports in the port list `spec` at `target`, merged
/// with what is there: the same place checks as a raise (exclusions, opt-in,
/// stand-down, cooldown, hourly budget); returns the list to write.
pub fn check_reserve(
    spec: &Tunable,
    target: Option<&Target>,
    current: &Value,
    wanted: &PortList,
    entry: Option<&Entry>,
    limits: &Limits<'_>,
    now: u64,
) -> Result<Value, Refusal> {
    check_place(spec, target, current, entry, limits, now)?;
    if wanted.is_empty() {
        return Err((
            Outcome::Refused,
            "nothing to reserve: no protected port lies where the range would widen".into(),
        ));
    }
    let have = PortList::parse(&current.to_string()).ok_or((
        Outcome::Failed,
        format!("cannot read the port list `{current}`"),
    ))?;
    if have.covers(wanted) {
        return Err((Outcome::Refused, format!("{wanted} already reserved")));
    }
    Ok(Value::Text(have.union(wanted).to_string()))
}

/// Checks setting `spec` at `target` to `wanted` (static profiles): a setting
/// exactly; a room sysctl element by element, never lowering any element of
/// what is there (for a ranked one, by rank), never past its ceiling.
pub fn check_set(
    spec: &Tunable,
    target: &Target,
    current: &Value,
    wanted: &Value,
    entry: Option<&Entry>,
    limits: &Limits<'_>,
) -> Result<Value, Refusal> {
    check_not_excluded(spec, limits.config)?;
    check_not_stood_down(spec, current, entry)?;
    // What the kernel will keep of it: that is compared, written and journaled.
    let wanted = &value::normalise(spec, wanted, limits.page_size);
    if let (true, Value::Pair(low, _)) = (spec.exposes_ports, wanted)
        && *low < limits.config.lowest_ephemeral_port
    {
        return Err((
            Outcome::Refused,
            format!(
                "{wanted} starts below tuning.lowest_ephemeral_port ({})",
                limits.config.lowest_ephemeral_port
            ),
        ));
    }
    if current == wanted {
        return Err((Outcome::Refused, format!("already {current}")));
    }
    if spec.direction == Direction::MoreRoom {
        // Element by element: no element of what is there is ever lowered (a
        // higher minimum of tcp_rmem stays while the profile raises the default).
        let merged = value::roomiest(spec, current, wanted).unwrap_or_else(|| wanted.clone());
        if merged == *current {
            return Err((
                Outcome::Refused,
                format!(
                    "kept {}: in every element it gives at least the room of the profile's {}",
                    current.to_string().replace('\t', " "),
                    wanted.to_string().replace('\t', " ")
                ),
            ));
        }
        let (have, want) = (
            value::strength(spec, current),
            value::strength(spec, &merged),
        );
        let ceiling = limits.ceiling(spec, target);
        // The ceiling bounds what nettune raises, not a larger value found there.
        if want > have && want > ceiling {
            return Err((
                Outcome::Refused,
                format!("{wanted} is above the ceiling {ceiling}"),
            ));
        }
        return Ok(merged);
    }
    Ok(wanted.clone())
}

/// Refuses sysctls the config excludes (owned by the CNI or the admin).
pub fn check_not_excluded(spec: &Tunable, config: &TuningConfig) -> Result<(), Refusal> {
    if config.exclude.iter().any(|e| e == spec.name) {
        return Err((Outcome::Refused, "excluded by tuning.exclude".into()));
    }
    Ok(())
}

fn check_not_stood_down(
    spec: &Tunable,
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
    if !entry.owns(spec, current) {
        return Err((
            Outcome::StoodDown,
            format!(
                "changed from {} (nettune's) to {current} by someone else: standing down",
                entry.ours().replace('\t', " ")
            ),
        ));
    }
    Ok(())
}

fn check_place<'a>(
    spec: &Tunable,
    target: Option<&'a Target>,
    current: &Value,
    entry: Option<&Entry>,
    limits: &Limits<'_>,
    now: u64,
) -> Result<&'a Target, Refusal> {
    check_not_excluded(spec, limits.config)?;
    let Some(target) = target else {
        return Err((
            Outcome::Refused,
            "the workload's namespace is not opted in (tuning.pod_netns, or the pod annotation \
             nettune.io/tune-netns: \"true\")"
                .into(),
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
