//! Enforce raises somaxconn where the storm is, and `nettune rollback` restores
//! it: also after a SIGKILL, and next to a running daemon.

use anyhow::ensure;
use bpf_tests::{
    harness::{Outcome, TestResult, require_root},
    scenarios::{Pair, check_raised_there_only, somaxconn},
};

use super::config::{
    CEILING, TestConfig, capped_at_8, storm_until_raised_in, storm_with_backlog_until_raised,
};

pub fn enforce_raises_somaxconn_in_the_storming_namespace_and_rollback_restores() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let host_before = somaxconn(None)?;
    let pair = Pair::new(11, None)?;
    let original = capped_at_8(&pair)?;
    let config = TestConfig::new("enforce", &[&pair.receiver])?;
    let agent = config.start_agent()?;
    let raised = storm_until_raised_in(&pair, 5800, original)?;
    println!(
        "    somaxconn in the test namespace: {original} → {raised} (ceiling {CEILING}); host {host_before}"
    );
    check_raised_there_only(original, raised, CEILING, host_before)?;
    let metrics = agent.metrics()?;
    ensure!(
        metrics.contains("nettune_tuning_decisions_total{sysctl=\"net.core.somaxconn\",action=\"raise\",result=\"applied\"}"),
        "no applied decision in /metrics"
    );
    drop(agent);

    let (code, out) = config.nettune(&["rollback"])?;
    ensure!(code == Some(0), "rollback exit {code:?}: {out}");
    ensure!(
        somaxconn(Some(&pair.receiver))? == original,
        "rollback did not restore {original}"
    );
    let (code, out) = config.nettune(&["rollback"])?;
    ensure!(
        code == Some(0) && out.contains("nothing to roll back"),
        "second rollback: {code:?} {out}"
    );
    ensure!(
        somaxconn(None)? == host_before,
        "the host's somaxconn changed"
    );
    Ok(Outcome::Passed)
}

pub fn after_sigkill_rollback_restores_every_value() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let host_before = somaxconn(None)?;
    let (first, second) = (Pair::new(12, None)?, Pair::new(13, None)?);
    let originals = [capped_at_8(&first)?, capped_at_8(&second)?];
    let config = TestConfig::new("sigkill", &[&first.receiver, &second.receiver])?;
    let agent = config.start_agent()?;
    storm_until_raised_in(&first, 5801, originals[0])?;
    storm_until_raised_in(&second, 5802, originals[1])?;
    agent.kill_hard()?;
    let journal = std::fs::read_to_string(config.state.join("journal.json"))?;
    ensure!(
        journal.matches("net.core.somaxconn").count() == 2,
        "journal: {journal}"
    );

    let (code, out) = config.nettune(&["rollback"])?;
    println!("    after SIGKILL: {}", out.trim().replace('\n', "; "));
    ensure!(code == Some(0), "rollback exit {code:?}: {out}");
    ensure!(
        somaxconn(Some(&first.receiver))? == originals[0],
        "first namespace not restored"
    );
    ensure!(
        somaxconn(Some(&second.receiver))? == originals[1],
        "second namespace not restored"
    );
    ensure!(
        somaxconn(None)? == host_before,
        "the host's somaxconn changed"
    );
    Ok(Outcome::Passed)
}

/// `kubectl exec … nettune rollback` next to the running daemon: the daemon must
/// not write the removed entries back when it journals its next change.
pub fn a_rollback_next_to_the_running_daemon_is_never_undone_by_it() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let (first, second) = (Pair::new(14, None)?, Pair::new(15, None)?);
    // Applications asking for more than somaxconn: raising it is the fix.
    for pair in [&first, &second] {
        pair.receiver.write_sysctl("net/core/somaxconn", "8")?;
    }
    let config = TestConfig::new("two-writers", &[&first.receiver, &second.receiver])?;
    let agent = config.start_agent()?;
    storm_with_backlog_until_raised(&first, 5803, 4096, 8)?;
    let (code, out) = config.nettune(&["rollback"])?;
    ensure!(code == Some(0), "rollback exit {code:?}: {out}");
    ensure!(
        somaxconn(Some(&first.receiver))? == 8,
        "rollback did not restore the first namespace"
    );
    // The daemon journals a change elsewhere.
    storm_with_backlog_until_raised(&second, 5804, 4096, 8)?;
    let text = std::fs::read_to_string(config.state.join("journal.json"))?;
    let journal: serde_json::Value = serde_json::from_str(&text)?;
    let first_label = format!("netns:{}", first.receiver.name());
    let second_label = format!("netns:{}", second.receiver.name());
    // Targets as the journal writes them: a namespace's label among its fields.
    let names = |list: &str, label: &str| {
        journal[list]
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["target"].to_string().contains(label)))
    };
    println!(
        "    journal after rollback + a new change: entries first {} second {}; rolled back first {}",
        names("entries", &first_label),
        names("entries", &second_label),
        names("rolled_back", &first_label)
    );
    ensure!(
        names("entries", &second_label),
        "the daemon's new entry is missing: {text}"
    );
    ensure!(
        !names("entries", &first_label),
        "the daemon wrote back the entry rollback removed: {text}"
    );
    ensure!(
        names("rolled_back", &first_label),
        "no record of the rollback for the daemon's cooldown: {text}"
    );
    drop(agent);
    let (code, out) = config.nettune(&["rollback"])?;
    ensure!(code == Some(0), "final rollback exit {code:?}: {out}");
    ensure!(
        somaxconn(Some(&second.receiver))? == 8,
        "second not restored"
    );
    Ok(Outcome::Passed)
}
