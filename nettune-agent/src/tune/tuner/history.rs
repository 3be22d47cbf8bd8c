//! What the tuner knows of a place from the journal: its entry (unless the
//! namespace is another one now), the attempts the journal could not take, a
//! rollback's record; and the entries of namespaces that went, forgotten.

use super::{DEPARTED_CHECKS_PER_ROUND, Tuner};
use crate::{
    model::{
        snapshot::Snapshot,
        tunables::Tunable,
        tuning::{Sameness, Target},
        value::Value,
    },
    sys::System,
    tune::journal::Entry,
};

impl<S: System> Tuner<S> {
    /// Forgets the journal entries of pod namespaces that are gone (their values
    /// went with them), so the journal does not grow with pod churn. Only an
    /// entry whose namespace is not in `snapshot` is asked after, at most
    /// [`DEPARTED_CHECKS_PER_ROUND`] a round, and only one the kernel confirms
    /// gone, or replaced by another with the same inode, is forgotten.
    pub(super) fn forget_departed(&mut self, snapshot: &Snapshot) {
        let present: std::collections::BTreeSet<u32> =
            snapshot.workloads.iter().map(|w| w.netns).collect();
        let departed: Vec<Entry> = self
            .journal
            .entries()
            .iter()
            .filter(
                |e| matches!(e.target, Target::Netns { inode, .. } if !present.contains(&inode)),
            )
            .take(DEPARTED_CHECKS_PER_ROUND)
            .cloned()
            .collect();
        for e in departed {
            let Target::Netns { inode, .. } = &e.target else {
                continue;
            };
            let gone = match self.actuator.system().netns_identity(*inode) {
                Err(err) => err.kind() == std::io::ErrorKind::NotFound,
                // Unproven stays: its original is still owed if it is that one.
                Ok(now) => e
                    .identity
                    .as_ref()
                    .is_some_and(|then| then.judge(&now) == Sameness::Other),
            };
            if !gone {
                continue;
            }
            match self.journal.remove(&e.sysctl, &e.target) {
                Ok(()) => log::info!(
                    "tuning: forgot {} in {}: its namespace is gone, and its values with it",
                    e.sysctl,
                    e.target
                ),
                Err(err) => log::warn!("cannot forget a departed namespace's entry: {err}"),
            }
        }
    }

    /// The journal's entry for `spec` at `target`, unless it belongs to an earlier
    /// namespace that had the same inode: that one is gone with its values, and
    /// its entry is dropped. An entry judged the same namespace records the
    /// marks it has gained; one that cannot be proven either way is
    /// [`Known::Unproven`], and nothing is written there.
    pub(super) fn current_entry(&mut self, spec: &Tunable, target: &Target) -> Known {
        let Some(entry) = self.journal.entry(spec.name, target).cloned() else {
            return Known::Entry(None);
        };
        let (Target::Netns { inode, .. }, Some(journaled)) = (target, &entry.identity) else {
            return Known::Entry(Some(entry));
        };
        let Ok(now) = self.actuator.system().netns_identity(*inode) else {
            return Known::Entry(Some(entry));
        };
        match journaled.judge(&now) {
            Sameness::Same => {
                let merged = journaled.merged(&now);
                if self.owns_journal()
                    && &merged != journaled
                    && let Err(e) = self.journal.remark(spec.name, target, merged)
                {
                    log::warn!("cannot record how {target} is known now: {e}");
                }
                Known::Entry(Some(entry))
            }
            Sameness::Unproven => Known::Unproven(entry.unproven(&now)),
            Sameness::Other => {
                if self.owns_journal()
                    && let Err(e) = self.journal.remove(spec.name, target)
                {
                    log::warn!("cannot drop the journal entry of a departed namespace: {e}");
                }
                Known::Entry(None)
            }
        }
    }

    /// What the guardrails know of `spec` at `target`: the journal's entry
    /// ([`Self::current_entry`]) with the attempts the journal could not take;
    /// with only such attempts, an entry of `current` made of them.
    pub(super) fn history(&mut self, spec: &Tunable, target: &Target, current: &Value) -> Known {
        let entry = match self.current_entry(spec, target) {
            Known::Entry(entry) => entry,
            Known::Unproven(why) => return Known::Unproven(why),
        };
        let key = (spec.name.to_owned(), target.clone());
        // A rollback's record counts where no entry is: its restore is the last
        // change there.
        let rolled_back = entry
            .is_none()
            .then(|| self.journal.rolled_back(spec.name, target))
            .flatten()
            .map(|r| r.changes.clone());
        let unrecorded = self.unrecorded.get(&key);
        if unrecorded.is_none() && rolled_back.is_none() {
            return Known::Entry(entry);
        }
        let mut entry = entry.unwrap_or_else(|| Entry {
            sysctl: spec.name.to_owned(),
            target: target.clone(),
            original: current.to_string(),
            last_written: None,
            pending: None,
            writes: Vec::new(),
            stood_down: false,
            identity: None,
        });
        entry.writes.extend(
            unrecorded
                .into_iter()
                .flatten()
                .chain(rolled_back.iter().flatten()),
        );
        entry.writes.sort_unstable();
        Known::Entry(Some(entry))
    }
}

/// What the journal knows of a place.
pub(super) enum Known {
    /// Its entry, if nettune changed something there.
    Entry(Option<Entry>),
    /// An entry whose namespace cannot be proven the one found now: why, and
    /// what to restore by hand.
    Unproven(String),
}
