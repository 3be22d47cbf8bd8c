//! `nettune apply`: a profile through the tuner's guardrails and journal.

use std::process::ExitCode;

use nettune::{
    config::Config,
    model::tuning::Outcome,
    sys::Kernel,
    tune::{
        profile,
        tuner::{self, Tuner},
    },
};

use super::{exit_code, print_json};

/// Applies (or with `dry_run` only decides) `profile`; exit code 1 if a write
/// failed.
pub fn run(config: &Config, profile: &str, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let profile = profile::named(profile)?;
    let mut tuner = Tuner::new(
        Kernel,
        config.tuning_with_own_ports(),
        tuner::mem_total(&Kernel),
    )?;
    let decisions = tuner.apply(&profile.name, &profile.sysctls, dry_run, tuner::now_unix());
    if json {
        print_json(&decisions)?;
    } else {
        for d in &decisions {
            println!("{d}");
        }
        if !dry_run && decisions.iter().any(|d| d.result == Outcome::Applied) {
            println!(
                "\nundo with: nettune rollback   (journal: {})",
                tuner.journal().path().display()
            );
        }
    }
    Ok(exit_code(
        !decisions.iter().any(|d| d.result == Outcome::Failed),
    ))
}
