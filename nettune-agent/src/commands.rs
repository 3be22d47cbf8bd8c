//! What each subcommand does, once the command line is parsed (see main.rs).

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use nettune::{
    config::Config,
    daemon, diagnose,
    probes::{LoadOptions, Probes},
    tuning::{
        guardrails::Outcome,
        io::ProcSys,
        journal::Journal,
        profile,
        tuner::{self, Tuner},
    },
};

use crate::Failure;

/// Loads the probes, with a hint when the failure is a permission problem.
fn load_probes(options: &LoadOptions) -> anyhow::Result<Probes> {
    Probes::load(options).with_context(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            "loading eBPF programs failed".to_owned()
        } else {
            "loading eBPF programs failed (not running as root: nettune needs root, or \
             CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN + CAP_SYS_ADMIN)"
                .to_owned()
        }
    })
}

pub fn print_probes(json: bool, options: &LoadOptions) -> anyhow::Result<ExitCode> {
    let probes = load_probes(options)?;
    let report = probes.report();
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    Ok(if report.all_attached() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

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

pub fn run_diagnose(json: bool, seconds: f64) -> anyhow::Result<ExitCode> {
    let readings = diagnose::Readings::gather(Duration::from_secs_f64(seconds));
    let findings = diagnose::findings(&readings);
    if json {
        let out = serde_json::json!({ "findings": findings, "readings": readings });
        println!("{}", serde_json::to_string_pretty(&out)?);
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
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn run_audit(profile: &str, json: bool) -> anyhow::Result<ExitCode> {
    let profile = profile::named(profile)?;
    let rows = profile::audit(&ProcSys, &profile);
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
    Ok(if rows.iter().all(|r| r.compliant) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn run_apply(
    config: &Config,
    profile: &str,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let profile = profile::named(profile)?;
    let mut tuner = Tuner::new(ProcSys, config.tuning.clone(), tuner::mem_total())?;
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
    Ok(if decisions.iter().any(|d| d.result == Outcome::Failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn run_rollback(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let mut journal = Journal::open(&config.tuning.state_dir)?;
    let report = tuner::rollback(&ProcSys, &mut journal)?;
    if json {
        print_json(&report)?;
    } else if report.restored.is_empty() && report.gone.is_empty() && report.failed.is_empty() {
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
            println!("skipped {sysctl} on {target}: the namespace is gone");
        }
        for (sysctl, target, e) in &report.failed {
            println!("FAILED to restore {sysctl} on {target}: {e} (kept in the journal)");
        }
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
