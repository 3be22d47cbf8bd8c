//! The tuner against the real kernel: in enforce mode a listen storm on a server
//! that asked for more than somaxconn, in an opted-in test namespace, makes
//! `nettune run` raise that namespace's somaxconn (within the ceiling) and only
//! that one; `nettune rollback` restores it, twice safely; after a SIGKILL
//! mid-run, rollback still restores every value. Every change is judged: a raise
//! waits for the server to listen again (`no_effect_yet`) and is `effective` once
//! the overflows stop; a conntrack raise that does not stop the drops is
//! `ineffective` and not repeated.

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
    scenarios::{Pair, check_raised_there_only, somaxconn, storm_until_raised},
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
    Test {
        name: "tuning::apply_reserves_node_ports_before_widening_and_rollback_empties_the_list_again",
        run: apply_reserves_node_ports_before_widening_and_rollback_empties_the_list_again,
    },
    Test {
        name: "tuning::a_viewer_with_an_enforce_config_never_writes",
        run: a_viewer_with_an_enforce_config_never_writes,
    },
    Test {
        name: "tuning::a_rollback_next_to_the_running_daemon_is_never_undone_by_it",
        run: a_rollback_next_to_the_running_daemon_is_never_undone_by_it,
    },
    Test {
        name: "tuning::a_raise_has_no_effect_until_the_server_listens_again_then_is_effective",
        run: a_raise_has_no_effect_until_the_server_listens_again_then_is_effective,
    },
    Test {
        name: "tuning::a_conntrack_raise_that_does_not_stop_the_drops_is_ineffective_and_not_repeated",
        run: a_conntrack_raise_that_does_not_stop_the_drops_is_ineffective_and_not_repeated,
    },
];

const CEILING: u64 = 8192;

/// A config for enforce mode that may tune `pods`' namespaces.
pub struct TestConfig {
    pub path: PathBuf,
    pub state: PathBuf,
}

impl TestConfig {
    fn new(tag: &str, pods: &[&Netns]) -> anyhow::Result<Self> {
        Self::with(tag, pods, "")
    }

    /// The config with `tuning` (more `[tuning]` keys, one per line) added.
    pub fn with(tag: &str, pods: &[&Netns], tuning: &str) -> anyhow::Result<Self> {
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
        // Node-wide sysctls stay out of reach unless the test is about them:
        // pressure from other tests or other work on the machine must not move them.
        let exclude = if tuning.contains("exclude") {
            String::new()
        } else {
            let node_wide: Vec<String> = nettune::tune::tunables::ALL
                .iter()
                .filter(|t| t.scope == nettune::tune::tunables::Scope::Node)
                .map(|t| format!("\"{}\"", t.name))
                .collect();
            format!("exclude = [{}]\n", node_wide.join(", "))
        };
        std::fs::write(
            &path,
            format!(
                "[tuning]\nmode = \"enforce\"\nstate_dir = \"{}\"\npod_netns = [{}]\n{tuning}{exclude}\
                 [tuning.limits.\"net.core.somaxconn\"]\nceiling = {CEILING}\n",
                state.display(),
                pods.join(", ")
            ),
        )?;
        Ok(Self { path, state })
    }

    /// `nettune run` with this config and a 0.3 s tick.
    pub fn start_agent(&self) -> anyhow::Result<AgentProcess> {
        let path = self.path.to_str().context("path")?;
        AgentProcess::start(&nettune_bin()?, &["--config", path, "--interval", "0.3"])
    }

    pub fn nettune(&self, args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
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

/// Sets somaxconn 8 in `pair`'s receiver (so that a server asking for more is
/// capped by it, and raising it is the fix); returns 8.
fn capped_at_8(pair: &Pair) -> anyhow::Result<u64> {
    pair.receiver.write_sysctl("net/core/somaxconn", "8")?;
    somaxconn(Some(&pair.receiver))
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

/// Storms a server that asked for 4096 in `pair`'s receiver until its somaxconn
/// rises (or 20 s).
fn storm_until_raised_in(pair: &Pair, port: u16, original: u64) -> anyhow::Result<u64> {
    storm_with_backlog_until_raised(pair, port, 4096, original)
}

fn enforce_raises_somaxconn_in_the_storming_namespace_and_rollback_restores() -> TestResult {
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

fn after_sigkill_rollback_restores_every_value() -> TestResult {
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

/// `nettune top` with no agent running embeds one; with `mode = "enforce"` in the
/// config it must still only advise: a person looking at a screen never changes
/// a sysctl.
fn a_viewer_with_an_enforce_config_never_writes() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let pair = Pair::new(16, None)?;
    pair.receiver.write_sysctl("net/core/somaxconn", "8")?;
    let config = TestConfig::new("viewer", &[&pair.receiver])?;
    // An API address nothing answers on, so `top` embeds its own agent.
    let api = format!("127.0.0.1:{}", bpf_tests::agent_process::free_port()?);
    let path = config.path.to_str().context("path")?;
    std::fs::write(
        &config.path,
        format!(
            "{}[agent]\napi_listen = \"{api}\"\n",
            std::fs::read_to_string(&config.path)?
        ),
    )?;
    let mut top = Command::new(nettune_bin()?)
        .args([
            "--config",
            path,
            "top",
            "-b",
            "-n",
            "8",
            "--interval",
            "0.3",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let addr = SocketAddrV4::new(pair.veth.b_addr, 5805);
    let _listener = pair.receiver.run(|| listener_with_backlog(addr, 4096))??;
    let mut stdout = top.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
    });
    // Overflows for as long as `top` runs: its start (loading the probes) and its
    // 8 frames take a few seconds here, longer on a slow machine; 2 minutes at most.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = top.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = top.kill();
            let _ = top.wait();
            anyhow::bail!("top did not finish its 8 frames in 2 minutes");
        }
        let clients = pair.sender.run(|| {
            (0..50)
                .map(|_| connect_nonblocking(addr))
                .collect::<anyhow::Result<Vec<_>>>()
        })??;
        std::thread::sleep(Duration::from_millis(300));
        drop(clients);
    };
    let frames = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let after = somaxconn(Some(&pair.receiver))?;
    println!(
        "    somaxconn after {:.1} s of overflows under `top` in enforce mode: {after}",
        started.elapsed().as_secs_f64()
    );
    ensure!(status.success(), "top failed: {frames}");
    ensure!(
        frames.contains("[advised]"),
        "the embedded agent did not even advise:\n{frames}"
    );
    ensure!(after == 8, "the viewer wrote somaxconn: 8 → {after}");
    Ok(Outcome::Passed)
}

/// The verdicts on `sysctl` in a snapshot's tuning state, oldest first.
fn verdicts(snapshot: &serde_json::Value, sysctl: &str) -> Vec<String> {
    snapshot["tuning"]["effects"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["sysctl"] == sysctl)
                .map(|e| e["verdict"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A server asking for 65535 under somaxconn 128, flooded: nettune raises
/// somaxconn once, reports the socket still at 128 (`no_effect_yet`) and raises
/// no further; once the server listens again its limit follows, the overflows
/// stop and the raise is `effective`.
fn a_raise_has_no_effect_until_the_server_listens_again_then_is_effective() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const PORT: u16 = 5812;
    let pair = Pair::new(22, None)?;
    pair.receiver.write_sysctl("net/core/somaxconn", "128")?;
    let inode = pair.receiver.inode()?;
    let config = TestConfig::with(
        "relisten",
        &[&pair.receiver],
        "cooldown_seconds = 1\nverdict_seconds = 4\n",
    )?;
    let agent = config.start_agent()?;
    let addr = SocketAddrV4::new(pair.veth.b_addr, PORT);
    let listener = pair.receiver.run(|| listener_with_backlog(addr, 65535))??;
    // 200 connections: more than 129 fit, fewer than the 257 a raise to 256 allows.
    let clients = pair.sender.run(|| {
        (0..200)
            .map(|_| connect_nonblocking(addr))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    let waiting = agent.wait_for("no_effect_yet", Duration::from_secs(20), |s| {
        verdicts(s, "net.core.somaxconn")
            .contains(&"no_effect_yet".to_owned())
            .then(|| s.clone())
    })?;
    let l = crate::listen::listener_in(&waiting, inode, PORT).context("no listener")?;
    let raised = somaxconn(Some(&pair.receiver))?;
    println!(
        "    somaxconn 128 → {raised}; port {PORT} asked {}, still limited to {}: {}",
        l["requested_backlog"], l["limit"], waiting["tuning"]["effects"][0]["detail"]
    );
    ensure!(
        raised == 256,
        "somaxconn is {raised}, expected one raise to 256"
    );
    ensure!(
        l["limit"] == 128,
        "the socket's limit changed without a re-listen: {l}"
    );
    // Overflows go on; no second raise while the first waits.
    std::thread::sleep(Duration::from_secs(3));
    ensure!(
        somaxconn(Some(&pair.receiver))? == 256,
        "raised again while the first raise waited for the server"
    );
    bpf_tests::sockets::relisten(&listener, 65535)?;
    let done = agent.wait_for("effective", Duration::from_secs(30), |s| {
        verdicts(s, "net.core.somaxconn")
            .contains(&"effective".to_owned())
            .then(|| s.clone())
    })?;
    let l = crate::listen::listener_in(&done, inode, PORT).context("no listener")?;
    println!(
        "    after listen() again: limit {}, queue {}; {}",
        l["limit"], l["queue"], done["tuning"]["effects"][0]["detail"]
    );
    ensure!(l["limit"] == 256, "the limit did not follow: {l}");
    let metrics = agent.metrics()?;
    for verdict in ["no_effect_yet", "effective"] {
        let series = format!(
            "nettune_tuning_effect_total{{sysctl=\"net.core.somaxconn\",verdict=\"{verdict}\"}} 1"
        );
        ensure!(metrics.contains(&series), "missing {series}");
    }
    ensure!(
        somaxconn(Some(&pair.receiver))? == 256,
        "raised more than once"
    );
    drop((clients, listener, agent));
    let (code, out) = config.nettune(&["rollback"])?;
    ensure!(code == Some(0), "rollback exit {code:?}: {out}");
    ensure!(
        somaxconn(Some(&pair.receiver))? == 128,
        "rollback did not restore 128"
    );
    Ok(Outcome::Passed)
}

const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

/// Conntrack in a test namespace whose connections are never released (the
/// client keeps opening and holding them): nettune raises nf_conntrack_max
/// once, the table fills again and the drops go on, so the raise is
/// `ineffective` and the next decision is advice, not a second raise.
fn a_conntrack_raise_that_does_not_stop_the_drops_is_ineffective_and_not_repeated() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const PORT: u16 = 5813;
    let pair = Pair::new(23, None)?;
    pair.receiver.exec(
        "nft",
        &["add table inet nettune_test; add chain inet nettune_test input { type filter hook input priority 0; }; add rule inet nettune_test input ct state new,established accept"],
    )?;
    // The only namespace using conntrack here; the original comes back on drop.
    let restore = bpf_tests::sysctl_guard::Restore::set(CONNTRACK_MAX, "10")?;
    let config = TestConfig::with(
        "conntrack",
        &[],
        "cooldown_seconds = 1\nverdict_seconds = 4\nexclude = [\"net.netfilter.nf_conntrack_buckets\"]\n",
    )?;
    let agent = config.start_agent()?;
    let addr = SocketAddrV4::new(pair.veth.b_addr, PORT);
    let _listener = pair.receiver.run(|| listener_with_backlog(addr, 4096))??;
    // New connections, held, 30 a second for at most 15 s: the table refills.
    let mut clients = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut futile = None;
    while Instant::now() < deadline && futile.is_none() {
        clients.extend(pair.sender.run(|| {
            (0..3)
                .map(|_| connect_nonblocking(addr))
                .collect::<anyhow::Result<Vec<_>>>()
        })??);
        std::thread::sleep(Duration::from_millis(100));
        let s = agent.snapshot()?;
        futile = s["tuning"]["recent"].as_array().and_then(|d| {
            d.iter()
                .find(|d| {
                    d["sysctl"] == "net.netfilter.nf_conntrack_max" && d["result"] == "futile"
                })
                .cloned()
        });
    }
    let max = std::fs::read_to_string(CONNTRACK_MAX)?;
    let snapshot = agent.snapshot()?;
    drop((clients, agent));
    // Rollback writes the 10 it found; the guard then restores the true original.
    let (code, out) = config.nettune(&["rollback"])?;
    drop(restore);
    ensure!(code == Some(0), "rollback exit {code:?}: {out}");
    let futile = futile.context("no futile decision within 15 s")?;
    println!(
        "    nf_conntrack_max 10 → {}; {:?}; then: {}",
        max.trim(),
        verdicts(&snapshot, "net.netfilter.nf_conntrack_max"),
        futile["reason"]
    );
    ensure!(
        max.trim() == "20",
        "nf_conntrack_max is {max}, expected one raise to 20"
    );
    ensure!(
        verdicts(&snapshot, "net.netfilter.nf_conntrack_max") == ["ineffective"],
        "verdicts: {:?}",
        verdicts(&snapshot, "net.netfilter.nf_conntrack_max")
    );
    ensure!(
        futile["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("ineffective"),
        "{futile}"
    );
    Ok(Outcome::Passed)
}
