//! `nettune audit`: the node's sysctls against a profile.

use std::process::ExitCode;

use nettune::{
    sys::Kernel,
    tune::{actuator::Actuator, profile},
};

use super::{exit_code, print_json};

/// Prints the audit table; exit code 0 when compliant, 1 when not.
pub fn run(profile: &str, json: bool) -> anyhow::Result<ExitCode> {
    let profile = profile::named(profile)?;
    let rows = profile::audit(&Actuator::new(Kernel), &profile);
    if json {
        print_json(&rows)?;
    } else {
        println!("profile {}: {}", profile.name, profile.description);
        println!(
            "{:<52} {:<24} {:<24} {:<6} {:<3} IMPACT",
            "SYSCTL", "CURRENT", "RECOMMENDED", "SCOPE", "OK"
        );
        for r in &rows {
            let current = r.current.clone().unwrap_or_else(|| "(unreadable)".into());
            let scope = format!("{:?}", r.scope).to_lowercase();
            let ok = if r.compliant { "yes" } else { "NO" };
            println!(
                "{:<52} {current:<24} {:<24} {scope:<6} {ok:<3} {}",
                r.sysctl, r.recommended, r.impact
            );
        }
    }
    Ok(exit_code(rows.iter().all(|r| r.compliant)))
}
