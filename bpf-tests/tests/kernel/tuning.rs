//! The tuner against the real kernel: in enforce mode a listen(1) storm in an
//! opted-in test namespace makes `nettune run` raise that namespace's somaxconn
//! (within the ceiling) and only that one; `nettune rollback` restores it, twice
//! safely; after a SIGKILL mid-run, rollback still restores every value.

use std::{
    net::SocketAddrV4,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    agent_process::AgentProcess,
    harness::{Outcome, Test, TestResult, require_root},
    netns::Netns,
    scenarios::Pair,
    sockets::{connect_nonblocking, listener_with_backlog},
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
];

const CEILING: u64 = 8192;

fn somaxconn(ns: Option<&Netns>) -> anyhow::Result<u64> {
    let read = || std::fs::read_to_string("/proc/sys/net/core/somaxconn");
    let text = match ns {
        Some(ns) => ns.run(read)??,
        None => read()?,
    };
    Ok(text.trim().parse()?)
}

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

/// Storms a listen(1) server in `pair`'s receiver until its somaxconn rises (or 20 s).
fn storm_until_raised(pair: &Pair, port: u16, original: u64) -> anyhow::Result<u64> {
    let addr = SocketAddrV4::new(pair.veth.b_addr, port);
    let _listener = pair.receiver.run(|| listener_with_backlog(addr, 1))??;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let clients = pair.sender.run(|| {
            (0..50)
                .map(|_| connect_nonblocking(addr))
                .collect::<anyhow::Result<Vec<_>>>()
        })??;
        std::thread::sleep(Duration::from_millis(300));
        drop(clients);
        let now = somaxconn(Some(&pair.receiver))?;
        if now != original {
            return Ok(now);
        }
        ensure!(
            Instant::now() < deadline,
            "somaxconn stayed {original} for 20 s of overflows"
        );
    }
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
    let raised = storm_until_raised(&pair, 5800, original)?;
    println!(
        "    somaxconn in the test namespace: {original} → {raised} (ceiling {CEILING}); host {host_before}"
    );
    ensure!(
        raised > original && raised <= CEILING,
        "raised to {raised}, outside ({original}, {CEILING}]"
    );
    ensure!(
        somaxconn(None)? == host_before,
        "the host's somaxconn changed"
    );
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
    storm_until_raised(&first, 5801, originals[0])?;
    storm_until_raised(&second, 5802, originals[1])?;
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
