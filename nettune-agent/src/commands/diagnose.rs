//! `nettune diagnose`: the guide's checks on procfs alone.

use std::{process::ExitCode, time::Duration};

use nettune::{diagnose, sys::Kernel};

use super::{exit_code, print_json};

/// Measures for `seconds`, prints the findings; exit code 1 if anything was found.
pub fn run(json: bool, seconds: f64) -> anyhow::Result<ExitCode> {
    let readings = diagnose::Readings::gather(&Kernel, Duration::from_secs_f64(seconds));
    let findings = diagnose::findings(&readings);
    if json {
        print_json(&serde_json::json!({ "findings": findings, "readings": readings }))?;
    } else if findings.is_empty() {
        println!("No problems found ({seconds:.0} s of measurements).");
    } else {
        for f in &findings {
            println!(
                "[{:?}] {}\n  evidence: {}\n  fix: {}\n",
                f.severity, f.problem, f.evidence, f.fix
            );
        }
    }
    Ok(exit_code(findings.is_empty()))
}
