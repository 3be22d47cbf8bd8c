//! Loading nettune's probes for a test, with only the variants it wants.

use nettune::probes::{LoadOptions, Probes, Variant};

use crate::harness::{Feature, TestResult, require};

/// Loads nettune's probes with `disabled` variants turned off.
pub fn load(disabled: &[Variant]) -> anyhow::Result<Probes> {
    Ok(Probes::load(&LoadOptions {
        disabled: disabled.to_vec(),
        ..LoadOptions::default()
    })?)
}

/// Skips (or fails, if `feature` is required) unless `signal` attached `variant`,
/// naming the kernel's reason.
pub fn require_variant(
    probes: &Probes,
    signal: &str,
    variant: Variant,
    feature: Feature,
) -> Option<TestResult> {
    let status = probes.report().signal(signal);
    let attached = status.and_then(|s| s.attached) == Some(variant);
    let why = status
        .and_then(|s| s.skipped.iter().find(|k| k.variant == variant))
        .map_or_else(
            || format!("{signal} did not attach {variant}"),
            |k| k.reason.clone(),
        );
    require(feature, attached, &why)
}

/// Loads every variant and fails unless `signal` attached: for signals every
/// kernel nettune supports must provide.
pub fn load_requiring(signal: &str) -> anyhow::Result<Probes> {
    let probes = load(&[])?;
    let status = probes.report().signal(signal);
    if status.and_then(|s| s.attached).is_none() {
        anyhow::bail!("{signal} did not attach: {status:?}");
    }
    Ok(probes)
}
