//! `tuning.guard`: the floors the kernel holds other writers to (nettune's own
//! values of the guarded node-wide sysctls), and the refusals it reports.

use std::collections::BTreeMap;

use super::Tuner;
use crate::{
    model::{snapshot::Snapshot, tuning::Target},
    sys::System,
};

impl<S: System> Tuner<S> {
    /// Guarded sysctl → the lowest value another writer may set: nettune's last
    /// write on the node, for each guarded sysctl nettune manages (not stood
    /// down). Empty unless this tuner writes (enforce).
    pub fn guard_floors(&self) -> BTreeMap<String, u64> {
        if !self.owns_journal() {
            return BTreeMap::new();
        }
        self.journal
            .entries()
            .iter()
            .filter(|e| {
                e.target == Target::Node && !e.stood_down && self.config.guard.contains(&e.sysctl)
            })
            .filter_map(|e| {
                let ours = e.last_written.as_deref()?.trim().parse().ok()?;
                Some((e.sysctl.clone(), ours))
            })
            .collect()
    }

    /// Logs each write a guard refused since the last round, naming the writer.
    pub(super) fn log_refusals(&mut self, snapshot: &Snapshot) {
        let floors = self.guard_floors();
        for w in snapshot.sysctl_writers.iter().filter(|w| w.refused > 0) {
            let key = (w.sysctl.clone(), w.command.clone());
            let logged = self.refusals_logged.entry(key).or_default();
            if *logged >= w.refused {
                continue;
            }
            let floor = floors
                .get(&w.sysctl)
                .map_or_else(|| "its guard".to_owned(), |f| format!("nettune's {f}"));
            log::warn!(
                "tuning: guard refused {} (pid {}) setting {} to {}, below {floor} ({} refused so far)",
                w.command,
                w.pid,
                w.sysctl,
                w.value,
                w.refused
            );
            *logged = w.refused;
        }
    }
}
