//! `nettune run`: the daemon.

use std::process::ExitCode;

use nettune::{
    config::Config,
    daemon,
    probes::{LoadOptions, ProbeSource as _},
};

use super::load_probes;
use crate::Failure;

/// Loads the probes, logs what attached, and runs the daemon until a signal.
pub fn run(config: Config, options: &LoadOptions) -> Result<ExitCode, Failure> {
    let probes = load_probes(options)?;
    for status in &probes.report().signals {
        match status.attached {
            Some(variant) => log::info!("{}: attached {variant}", status.signal),
            None => log::warn!("{}: no variant could attach", status.signal),
        }
        for skipped in &status.skipped {
            log::info!(
                "{}: skipped {}: {}",
                status.signal,
                skipped.variant,
                skipped.reason
            );
        }
    }
    for warning in &probes.report().warnings {
        log::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    runtime
        .block_on(daemon::run(config, probes))
        .map_err(anyhow::Error::from)?;
    log::info!("detached every program; exiting");
    Ok(ExitCode::SUCCESS)
}
