//! `nettune apply`: a static profile through the same guardrails and journal as
//! the tuner's own decisions.

use std::collections::BTreeMap;

use super::{Tuner, fail};
use crate::{
    model::{
        tunables::{self, IP_LOCAL_RESERVED_PORTS, Tunable},
        tuning::{Decision, Mode, Outcome, Target},
        value::Value,
    },
    sys::System,
    tune::{
        guardrails,
        policy::Proposal,
        rules::{self, Plan},
    },
};

impl<S: System> Tuner<S> {
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
            Err(e) => return fail(d, e.to_string()),
        };
        d.from = Some(current.to_string());
        let limits = self.limits();
        let entry = self.journal.entry(spec.name, &Target::Node).cloned();
        let protected = self.config.protected_ports();
        let decided = if spec.exposes_ports
            && let Err(reason) = self.ports_protected(&Target::Node, &protected, earlier)
        {
            Err((Outcome::Refused, reason.to_string()))
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
                self.write(d, &Target::Node, None, spec, (&current, &next), now)
            }
        }
    }
}

/// A profile's proposal for `sysctl` on the node.
fn profile_proposal(sysctl: &'static Tunable, evidence: String) -> Proposal {
    Proposal {
        rule: &rules::PROFILE,
        sysctl,
        target: Some(Target::Node),
        workload: "node".into(),
        netns: 0,
        evidence,
        plan: Plan::Raise,
        waiting: Vec::new(),
    }
}
