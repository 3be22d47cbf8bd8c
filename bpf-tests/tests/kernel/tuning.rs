//! The tuner against the real kernel: in enforce mode a listen(1) storm in an
//! opted-in test namespace makes `nettune run` raise that namespace's somaxconn
//! (within the ceiling) and only that one; `nettune rollback` restores it, twice
//! safely; after a SIGKILL mid-run, rollback still restores every value.

use std::{net::SocketAddrV4, path::PathBuf, process::Command};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    agent_process::AgentProcess,
    harness::{Outcome, Test, TestResult, require_root},
    netns::Netns,
    scenarios::{Pair, check_raised_there_only, somaxconn, storm_until_raised},
};

use crate::agent::nettune_bin;

pub const TESTS: &[Test] = &[
    Test {
        name: "tuning::enforce_raises_somaxconn_in_the_storming_namespace_and_rollback_restores",
        run: enforce_raises_somaxconn_in_the_storming_namespace_and_rollback_restores,
    },
    Test {
        name: "tuning::after_sigkill_rollback_restores_every_value",
        run: after_sigkill_rollback_restores_every_value,
    },
    Test {
        name: "tuning::apply_reserves_node_ports_before_widening_and_rollback_empties_the_list_again",
        run: apply_reserves_node_ports_before_widening_and_rollback_empties_the_list_again,
    },
    Test {
        name: "tuning::a_rollback_next_to_the_running_daemon_is_never_undone_by_it",
        run: a_rollback_next_to_the_running_daemon_is_never_undone_by_it,
    },
];

const CEILING: u64 = 8192;

/// A config for enforce mode that may tune `pods`' namespaces.
struct TestConfig {
    path: PathBuf,
    state: PathBuf,
}

impl TestConfig {
    fn new(tag: &str, pods: &[&Netns]) -> anyhow::Result<Self> {
        let base =
            std::env::temp_dir().join(format!("nettune-tuning-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base)?;
        let state = base.join("state");
        let pods: Vec<String> = pods
            .iter()
            .map(|p| format!("\"netns:{}\"", p.name()))
            .collect();
        let path = base.join("nettune.toml");
        std::fs::write(
            &path,
            format!(
                "[tuning]\nmode = \"enforce\"\nstate_dir = \"{}\"\npod_netns = [{}]\n\
                 [tuning.limits.\"net.core.somaxconn\"]\nceiling = {CEILING}\n",
                state.display(),
                pods.join(", ")
            ),
        )?;
        Ok(Self { path, state })
    }

    /// `nettune run` with this config and a 0.3 s tick.
    fn start_agent(&self) -> anyhow::Result<AgentProcess> {
        let path = self.path.to_str().context("path")?;
        AgentProcess::start(&nettune_bin()?, &["--config", path, "--interval", "0.3"])
    }

    fn nettune(&self, args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
        let out = Command::new(nettune_bin()?)
            .arg("--config")
            .arg(&self.path)
            .args(args)
            .output()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }
}

impl Drop for TestConfig {
    fn drop(&mut self) {
        if let Some(base) = self.path.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// Storms a server that asked for `backlog` in `pair`'s receiver until the
/// namespace's somaxconn rises (or 20 s).
fn storm_with_backlog_until_raised(
    pair: &Pair,
    port: u16,
    backlog: i32,
    original: u64,
) -> anyhow::Result<u64> {
    let addr = SocketAddrV4::new(pair.veth.b_addr, port);
    storm_until_raised(&pair.receiver, &pair.sender, addr, backlog, original)
}

/// Storms a listen(1) server in `pair`'s receiver until its somaxconn rises (or 20 s).
fn storm_until_raised_in(pair: &Pair, port: u16, original: u64) -> anyhow::Result<u64> {
    storm_with_backlog_until_raised(pair, port, 1, original)
}

fn enforce_raises_somaxconn_in_the_storming_namespace_and_rollback_restores() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let host_before = somaxconn(None)?;
    let pair = Pair::new(11, None)?;
    let original = somaxconn(Some(&pair.receiver))?;
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

fn after_sigkill_rollback_restores_every_value() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let host_before = somaxconn(None)?;
    let (first, second) = (Pair::new(12, None)?, Pair::new(13, None)?);
    let originals = [
        somaxconn(Some(&first.receiver))?,
        somaxconn(Some(&second.receiver))?,
    ];
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
fn a_rollback_next_to_the_running_daemon_is_never_undone_by_it() -> TestResult {
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
    let journal = std::fs::read_to_string(config.state.join("journal.json"))?;
    let first_label = format!("netns:{}", first.receiver.name());
    let second_label = format!("netns:{}", second.receiver.name());
    println!(
        "    journal after rollback + a new change: first {} second {}",
        journal.contains(&first_label),
        journal.contains(&second_label)
    );
    ensure!(
        journal.contains(&second_label),
        "the daemon's new entry is missing: {journal}"
    );
    ensure!(
        !journal.contains(&first_label),
        "the daemon wrote back the entry rollback removed: {journal}"
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

/// `nettune apply --profile production` run inside a test namespace (its "node"):
/// the ports nettune protects are reserved before the ephemeral range widens, and
/// rollback brings `ip_local_reserved_ports` back to its empty original — read
/// back from the kernel, not taken from nettune's word. Every decision is printed
/// once (no second copy as a log line).
fn apply_reserves_node_ports_before_widening_and_rollback_empties_the_list_again() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let ns = Netns::new("apply")?;
    let read = |key: &str| -> anyhow::Result<String> {
        let path = PathBuf::from("/proc/sys").join(key);
        Ok(ns
            .run(|| nettune::sys::sysctl::read_file(&path))??
            .trim()
            .replace('\t', " "))
    };
    let reserved_before = read("net/ipv4/ip_local_reserved_ports")?;
    let range_before = read("net/ipv4/ip_local_port_range")?;
    ensure!(
        reserved_before.is_empty(),
        "a new namespace reserves {reserved_before:?}"
    );
    // Node-wide sysctls would change the host: leave them out.
    let node_wide: Vec<String> = nettune::tune::tunables::ALL
        .iter()
        .filter(|t| t.scope == nettune::tune::tunables::Scope::Node)
        .map(|t| format!("\"{}\"", t.name))
        .collect();
    let base = std::env::temp_dir().join(format!("nettune-apply-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let config = base.join("nettune.toml");
    std::fs::write(
        &config,
        format!(
            "[tuning]\nstate_dir = \"{}\"\nexclude = [{}]\n",
            base.join("state").display(),
            node_wide.join(", ")
        ),
    )?;
    let nettune = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        let mut all = vec!["--config", config.to_str().context("path")?];
        all.extend_from_slice(args);
        Ok(Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(nettune_bin()?)
            .args(&all)
            .output()?)
    };
    let applied = nettune(&["apply", "--profile", "production"])?;
    let stdout = String::from_utf8_lossy(&applied.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&applied.stderr).into_owned();
    let reserved = read("net/ipv4/ip_local_reserved_ports")?;
    let range = read("net/ipv4/ip_local_port_range")?;
    println!("    applied: reserved {reserved:?}, range {range:?}");
    let result = (|| -> anyhow::Result<()> {
        ensure!(applied.status.success(), "apply failed:\n{stdout}{stderr}");
        for port in ["9100", "9977", "10250", "10256", "30000-32767"] {
            ensure!(
                reserved.split(',').any(|r| r == port),
                "{port} is not reserved: {reserved:?}"
            );
        }
        ensure!(
            range == "1024 65535",
            "the range was not widened: {range:?}"
        );
        let reserve_line = stdout.find("ip_local_reserved_ports");
        let range_line = stdout.find("ip_local_port_range");
        ensure!(
            reserve_line.is_some() && reserve_line < range_line,
            "the reservation was not decided before the widening:\n{stdout}"
        );
        ensure!(
            !stderr.contains("tuning:"),
            "decisions were printed twice (stdout and the log):\n{stderr}"
        );
        Ok(())
    })();
    let rolled = nettune(&["rollback"])?;
    let _ = std::fs::remove_dir_all(&base);
    result?;
    ensure!(
        rolled.status.success(),
        "rollback failed: {}",
        String::from_utf8_lossy(&rolled.stdout)
    );
    let (reserved_after, range_after) = (
        read("net/ipv4/ip_local_reserved_ports")?,
        read("net/ipv4/ip_local_port_range")?,
    );
    println!("    rolled back: reserved {reserved_after:?}, range {range_after:?}");
    ensure!(
        reserved_after.is_empty(),
        "the reserved ports were not emptied again: {reserved_after:?}"
    );
    ensure!(
        range_after == range_before,
        "range {range_after:?} != {range_before:?}"
    );
    Ok(Outcome::Passed)
}
