//! `nettune rollback`: every journaled original, restored.

use std::process::ExitCode;

use nettune::{
    config::Config,
    sys::Kernel,
    tune::{actuator::Actuator, journal::Journal, rollback, tuner::now_unix},
};

use super::{exit_code, print_json};

/// Restores every journaled value (values someone else owns now only with
/// `force`); exit code 1 if one could not be restored.
pub fn run(config: &Config, json: bool, force: bool) -> anyhow::Result<ExitCode> {
    let mut journal = Journal::open(&config.tuning.state_dir)?;
    let report = rollback::rollback(&Actuator::new(Kernel), &mut journal, force, now_unix())?;
    if json {
        print_json(&report)?;
    } else if report.restored.is_empty()
        && report.gone.is_empty()
        && report.failed.is_empty()
        && report.stood_down.is_empty()
    {
        println!(
            "nothing to roll back (journal {} is empty)",
            journal.path().display()
        );
    } else {
        for (sysctl, target, value) in &report.restored {
            println!(
                "restored {sysctl} = {} on {target}",
                value.replace('\t', " ")
            );
        }
        for (sysctl, target) in &report.gone {
            println!(
                "skipped {sysctl} on {target}: the namespace is gone (or another one now has \
                 its inode)"
            );
        }
        for (sysctl, target) in &report.stood_down {
            println!(
                "left {sysctl} on {target} as it is: someone else changed it after nettune \
                 did (kept in the journal; --force restores nettune's original)"
            );
        }
        for (sysctl, target, e) in &report.failed {
            println!("FAILED to restore {sysctl} on {target}: {e} (kept in the journal)");
        }
    }
    Ok(exit_code(report.failed.is_empty()))
}
