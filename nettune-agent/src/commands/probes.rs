//! `nettune probes`: attach every probe once, print which variant of each signal
//! attached and why the others were skipped, then detach.

use std::process::ExitCode;

use nettune::probes::{LoadOptions, ProbeSource as _};

use super::{exit_code, load_probes, print_json};

/// Runs `nettune probes`; exit code 1 when a signal has no variant.
pub fn run(json: bool, options: &LoadOptions) -> anyhow::Result<ExitCode> {
    let probes = load_probes(options)?;
    let report = probes.report();
    if json {
        print_json(report)?;
    } else {
        print!("{report}");
    }
    Ok(exit_code(report.all_attached()))
}
