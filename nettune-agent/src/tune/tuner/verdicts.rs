//! Verdicts in the round: each watched change judged against the Snapshot, and
//! an earlier verdict's say over the next raise of the same sysctl.

use super::{RECENT, Tuner};
use crate::{
    model::{
        snapshot::Snapshot,
        tuning::{Outcome, Target, Verdict},
    },
    sys::System,
    tune::{policy::Proposal, verify::Watch},
};

impl<S: System> Tuner<S> {
    /// Checks every watched change against `snapshot`; logs and counts each new
    /// verdict, and remembers where a raise was ineffective.
    pub(super) fn verify(&mut self, snapshot: &Snapshot, now: u64) {
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
    pub(super) fn watch(&mut self, watch: Watch) {
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
    pub(super) fn verdicts_rule_out(
        &self,
        p: &Proposal,
        target: &Target,
    ) -> Option<(Outcome, String)> {
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
}
