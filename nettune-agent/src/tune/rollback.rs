//! `nettune rollback`: every journaled original restored, read back, forgotten.

use serde::Serialize;

use super::{
    actuator::Actuator,
    journal::{Journal, JournalError},
};
use crate::{
    model::{
        tunables,
        tuning::{Sameness, Target},
    },
    sys::System,
};

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
/// restore read back to be sure it took), leaving a record of the restore at
/// `now` that a running daemon's cooldown and budget count. Values nettune stood
/// down from are left to their new owner unless `force`. Never writes into a
/// namespace other than the one journaled. Holds the journal's lock throughout,
/// so a daemon's round waits rather than acting on a value about to be
/// restored. Safe to run twice (the second finds nothing) and after a crash
/// (the journal is on disk).
pub fn rollback<S: System>(
    actuator: &Actuator<S>,
    journal: &mut Journal,
    force: bool,
    now: u64,
) -> Result<RollbackReport, JournalError> {
    journal.hold()?;
    let report = restore_all(actuator, journal, force, now);
    journal.release();
    report
}

fn restore_all<S: System>(
    actuator: &Actuator<S>,
    journal: &mut Journal,
    force: bool,
    now: u64,
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
                Ok(now) => match journaled.judge(&now) {
                    Sameness::Same => {}
                    // Kept: the original is still owed if it is that namespace.
                    Sameness::Unproven => {
                        let why = entry.unproven(&now);
                        report.failed.push((entry.sysctl, entry.target, why));
                        continue;
                    }
                    // Another namespace has the inode: the values went with the old one.
                    Sameness::Other => {
                        journal.remove(&entry.sysctl, &entry.target)?;
                        report.gone.push((entry.sysctl, entry.target));
                        continue;
                    }
                },
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    report.failed.push((
                        entry.sysctl,
                        entry.target,
                        format!("cannot identify the namespace: {e}"),
                    ));
                    continue;
                }
                Err(_) => {
                    journal.remove(&entry.sysctl, &entry.target)?;
                    report.gone.push((entry.sysctl, entry.target));
                    continue;
                }
            }
        }
        match actuator.write(
            &entry.target,
            entry.identity.as_ref(),
            spec,
            &entry.original,
        ) {
            Ok(()) => {
                journal.forget_restored(&entry.sysctl, &entry.target, now)?;
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
