//! `nettune probes`: the record of which variant of each signal attached and why
//! the others did not, on this kernel and with BTF or tracefs missing; and every
//! variant of every chain, forced in turn: each loads (the verifier accepts it)
//! and attaches, or is skipped with the kernel's own reason, never silently.

use std::{collections::BTreeMap, process::Command};

use anyhow::{Context as _, bail, ensure};
use bpf_tests::{
    harness::{Feature, Outcome, Test, TestResult, is_required, record, require_root},
    probes::load,
};
use nettune::{model::probes::Variant, probes::ProbeSource as _};
use serde_json::Value;

use crate::agent::nettune_bin;

pub const TESTS: &[Test] = &[
    Test {
        name: "probes::every_signal_attaches_and_every_skip_has_the_kernels_reason",
        run: every_signal_attaches_and_every_skip_has_the_kernels_reason,
    },
    Test {
        name: "probes::every_variant_loads_or_is_skipped_with_the_kernels_reason",
        run: every_variant_loads_or_is_skipped_with_the_kernels_reason,
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
pub fn probes_json(args: &[&str]) -> anyhow::Result<(Option<i32>, Value)> {
    let out = Command::new(nettune_bin()?)
        .args(["probes", "--json"])
        .args(args)
        .output()?;
    // A Rust panic exits 101.
    ensure!(
        out.status.code() != Some(101),
        "nettune panicked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    // Connects that find no local port are counted by a BTF tracepoint: without
    // BTF, the TIME_WAIT figures alone, and the reason names the BTF file.
    // What listeners asked for needs no BTF (sock_diag).
    let connects = signal(&report, "connect_eaddrnotavail")?;
    ensure!(
        connects["attached"] == "procfs" && connects["on_demand"].is_null(),
        "connect_eaddrnotavail without BTF: {connects}"
    );
    let reason = skipped_reason(connects, "tp_btf").context("no reason")?;
    ensure!(
        reason.contains("/nonexistent/vmlinux"),
        "connect_eaddrnotavail: reason does not name the BTF file: {reason}"
    );
    ensure!(
        signal(&report, "listen_backlog")?["attached"] == "sock_diag",
        "listen_backlog without BTF: {}",
        signal(&report, "listen_backlog")?
    );
    // Pod conversations need neither: it takes the kernel's first tc variant, as it
    // does with both present.
    let (_, full) = probes_json(&[])?;
    let tc = signal(&full, "pod_conversations")?["attached"].clone();
    for (name, fallback) in [
        ("listen_overflow", Value::from("procfs")),
        ("connect_eaddrnotavail", Value::from("procfs")),
        ("conntrack", Value::from("procfs")),
        ("pod_conversations", tc),
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

/// The feature a test machine declares for a variant (`NETTUNE_REQUIRE_FEATURES`):
/// where it is required, that variant must load and attach.
fn feature_of(variant: Variant) -> Option<Feature> {
    match variant {
        Variant::TpBtf => Some(Feature::TpBtf),
        Variant::Tracepoint => Some(Feature::Tracepoint),
        Variant::Fentry => Some(Feature::Fentry),
        Variant::Kprobe => Some(Feature::Kprobe),
        Variant::Tcx => Some(Feature::Tcx),
        Variant::Clsact => Some(Feature::Clsact),
        // cgroup v2 is a mount, not a kernel feature the matrix declares.
        Variant::SockDiag | Variant::Procfs | Variant::CgroupSysctl => None,
    }
}

/// A signal's variants in chain order, each attached (`Ok`) or skipped (the reason).
type Chain = Vec<(Variant, Result<(), String>)>;

/// For each signal, its chain walked to the end: load with nothing disabled, then
/// again with every variant that attached so far disabled, until none attaches.
/// Each variant ends up attached (`Ok`) or skipped with the kernel's reason. One
/// signal at a time: variant names are shared between chains (procfs, tracepoint),
/// and disabling one signal's would hide another's.
fn walk_chains(signals: &[String]) -> anyhow::Result<BTreeMap<String, Chain>> {
    let mut out = BTreeMap::new();
    for name in signals {
        let mut disabled = Vec::new();
        let mut seen: Chain = Vec::new();
        loop {
            let probes = load(&disabled)?;
            let status = probes
                .report()
                .signal(name)
                .with_context(|| format!("no signal {name}"))?
                .clone();
            for skip in status
                .skipped
                .iter()
                .filter(|k| !disabled.contains(&k.variant))
            {
                if !seen.iter().any(|(v, _)| *v == skip.variant) {
                    seen.push((skip.variant, Err(skip.reason.clone())));
                }
            }
            let Some(attached) = status.attached else {
                break;
            };
            if disabled.contains(&attached) {
                // A fallback the caller cannot turn off (conntrack's procfs): the end.
                break;
            }
            seen.push((attached, Ok(())));
            disabled.push(attached);
        }
        out.insert(name.clone(), seen);
    }
    Ok(out)
}

fn every_variant_loads_or_is_skipped_with_the_kernels_reason() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let first = load(&[])?;
    let defaults: BTreeMap<String, Option<Variant>> = first
        .report()
        .signals
        .iter()
        .map(|s| (s.signal.clone(), s.attached))
        .collect();
    drop(first);
    let signals: Vec<String> = defaults.keys().cloned().collect();
    let chains = walk_chains(&signals)?;
    let mut table = serde_json::Map::new();
    for (name, chain) in &chains {
        let mut row = Vec::new();
        for (variant, outcome) in chain {
            match outcome {
                Ok(()) => println!("    {name} {variant}: loads and attaches"),
                Err(reason) => println!("    {name} {variant}: skipped: {reason}"),
            }
            let verdict = outcome.as_ref().err().map(String::as_str);
            row.push(serde_json::json!([variant.name(), verdict]));
            let Err(reason) = outcome else { continue };
            ensure!(
                reason.len() > 10 && !reason.contains("disabled by the caller"),
                "{name} {variant}: skipped without the kernel's reason: {reason:?}"
            );
            if let Some(feature) = feature_of(*variant).filter(|f| is_required(*f)) {
                bail!(
                    "{name} {variant}: feature `{feature}` is required here \
                     (NETTUNE_REQUIRE_FEATURES) but the variant was skipped: {reason}"
                );
            }
        }
        table.insert(name.clone(), Value::Array(row));
    }
    record("variants", Value::Object(table));
    record(
        "attached",
        serde_json::to_value(
            defaults
                .iter()
                .map(|(s, v)| (s.clone(), v.map(Variant::name)))
                .collect::<BTreeMap<_, _>>(),
        )?,
    );
    Ok(Outcome::Passed)
}
