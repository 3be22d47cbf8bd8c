//! `nettune probes`: the record of which variant of each signal attached and why
//! the others did not, on this kernel and with BTF or tracefs missing.

use std::process::Command;

use anyhow::{Context as _, ensure};
use bpf_tests::harness::{Outcome, Test, TestResult, require_root};
use serde_json::Value;

use crate::agent::nettune_bin;

pub const TESTS: &[Test] = &[
    Test {
        name: "probes::every_signal_attaches_and_every_skip_has_the_kernels_reason",
        run: every_signal_attaches_and_every_skip_has_the_kernels_reason,
    },
    Test {
        name: "probes::missing_btf_and_tracefs_are_named_with_the_fallback_taken",
        run: missing_btf_and_tracefs_are_named_with_the_fallback_taken,
    },
    Test {
        name: "probes::without_btf_drops_fall_back_to_the_classic_tracepoint",
        run: without_btf_drops_fall_back_to_the_classic_tracepoint,
    },
];

/// Runs `nettune probes --json ARGS`; returns (exit code, report).
fn probes_json(args: &[&str]) -> anyhow::Result<(Option<i32>, Value)> {
    let out = Command::new(nettune_bin()?)
        .args(["probes", "--json"])
        .args(args)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!stderr.contains("panicked"), "nettune panicked: {stderr}");
    let report = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))?;
    Ok((out.status.code(), report))
}

fn signal<'a>(report: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    report["signals"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["signal"] == name))
        .with_context(|| format!("no signal {name} in {report}"))
}

fn skipped_reason<'a>(signal: &'a Value, variant: &str) -> Option<&'a str> {
    signal["skipped"]
        .as_array()?
        .iter()
        .find(|k| k["variant"] == variant)?["reason"]
        .as_str()
}

fn every_signal_attaches_and_every_skip_has_the_kernels_reason() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let (code, report) = probes_json(&[])?;
    ensure!(code == Some(0), "exit code {code:?}: {report}");
    for s in report["signals"].as_array().context("no signals")? {
        ensure!(
            !s["attached"].is_null(),
            "{} did not attach: {s}",
            s["signal"]
        );
        for k in s["skipped"].as_array().context("no skipped list")? {
            ensure!(
                k["reason"].as_str().is_some_and(|r| r.len() > 10),
                "{}: skipped {} without a reason",
                s["signal"],
                k["variant"]
            );
        }
    }
    // On kernels without trampolines or kprobes (like CI's), the listen signal says
    // why with the kernel's own error, and runs on its procfs fallback.
    let listen = signal(&report, "listen_overflow")?;
    if listen["attached"] == "procfs" {
        for variant in ["fentry", "kprobe"] {
            let reason = skipped_reason(listen, variant)
                .with_context(|| format!("{variant} not listed as skipped: {listen}"))?;
            ensure!(
                reason.contains("os error"),
                "{variant}: no kernel error in `{reason}`"
            );
            println!("    listen_overflow {variant}: {reason}");
        }
    }
    Ok(Outcome::Passed)
}

fn missing_btf_and_tracefs_are_named_with_the_fallback_taken() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let (code, report) = probes_json(&[
        "--btf",
        "/nonexistent/vmlinux",
        "--tracefs",
        "/nonexistent/tracing",
    ])?;
    // Signals without a fallback cannot attach: exit 1, with the reasons.
    ensure!(code == Some(1), "exit code {code:?}: {report}");
    let warnings = report["warnings"].to_string();
    ensure!(
        warnings.contains("/nonexistent/vmlinux"),
        "no BTF warning: {warnings}"
    );
    ensure!(
        warnings.contains("/nonexistent/tracing"),
        "no tracefs warning: {warnings}"
    );
    let retransmit = signal(&report, "tcp_retransmit")?;
    ensure!(
        retransmit["attached"].is_null(),
        "retransmits attached without BTF: {retransmit}"
    );
    for variant in ["tp_btf", "tracepoint"] {
        let reason = skipped_reason(retransmit, variant).context("no reason")?;
        ensure!(
            reason.contains("BTF"),
            "{variant}: reason does not name BTF: {reason}"
        );
    }
    // Requested backlogs come only from a classic tracepoint: without tracefs,
    // nothing, and the reason says so (listeners are then judged at their limit).
    let backlog = signal(&report, "listen_backlog")?;
    ensure!(
        backlog["attached"].is_null(),
        "listen_backlog attached without tracefs: {backlog}"
    );
    let reason = skipped_reason(backlog, "tracepoint").context("no reason")?;
    ensure!(
        reason.contains("/nonexistent/tracing"),
        "listen_backlog: reason does not name tracefs: {reason}"
    );
    for (name, fallback) in [
        ("listen_overflow", "procfs"),
        ("connect_eaddrnotavail", "procfs"),
        ("conntrack", "procfs"),
        ("pod_traffic", "tcx"),
    ] {
        let s = signal(&report, name)?;
        ensure!(
            s["attached"] == fallback,
            "{name}: expected {fallback}, got {s}"
        );
    }
    Ok(Outcome::Passed)
}

fn without_btf_drops_fall_back_to_the_classic_tracepoint() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let (_, report) = probes_json(&["--btf", "/nonexistent/vmlinux"])?;
    let drops = signal(&report, "drops")?;
    ensure!(drops["attached"] == "tracepoint", "drops: {drops}");
    let reason = skipped_reason(drops, "tp_btf").context("tp_btf not skipped")?;
    ensure!(
        reason.contains("/nonexistent/vmlinux"),
        "tp_btf reason: {reason}"
    );
    ensure!(
        report["warnings"].to_string().contains("BTF"),
        "no warning about BTF: {}",
        report["warnings"]
    );
    Ok(Outcome::Passed)
}
