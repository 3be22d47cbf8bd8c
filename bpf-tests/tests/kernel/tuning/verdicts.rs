//! Every change is judged: `no_effect_yet` until the server listens again, then
//! `effective`; a conntrack raise that does not stop the drops is `ineffective`
//! and not repeated.

use std::{
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    harness::{Outcome, TestResult, require_root},
    scenarios::{Pair, somaxconn},
    sockets::{connect_nonblocking, listener_with_backlog},
};

use super::config::TestConfig;

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
pub fn a_raise_has_no_effect_until_the_server_listens_again_then_is_effective() -> TestResult {
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
    let l = bpf_tests::agent_process::listener_in(&waiting, inode, PORT).context("no listener")?;
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
    let l = bpf_tests::agent_process::listener_in(&done, inode, PORT).context("no listener")?;
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
pub fn a_conntrack_raise_that_does_not_stop_the_drops_is_ineffective_and_not_repeated() -> TestResult
{
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
