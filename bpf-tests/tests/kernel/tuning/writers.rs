//! Another writer of a value nettune manages: a process named `kube-proxy`
//! (procps' `sysctl` run through a link of that name, as the real one's
//! command shows) lowers `nf_conntrack_max` after nettune raised it. nettune
//! stands down naming it with its pid and value, says what to change in
//! kube-proxy's configuration, and counts the write.

use std::{
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    agent_process::metric,
    harness::{Outcome, TestResult, require_root},
    scenarios::Pair,
    sockets::{connect_nonblocking, listener_with_backlog},
    sysctl_guard::Restore,
};

use super::config::TestConfig;

const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const PORT: u16 = 5814;
/// `nf_conntrack_max` while the test namespace fills it.
const SMALL: u64 = 40;

fn conntrack_max() -> anyhow::Result<u64> {
    Ok(std::fs::read_to_string(CONNTRACK_MAX)?.trim().parse()?)
}

pub fn kube_proxy_lowering_nf_conntrack_max_is_named_counted_and_advised() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let pair = Pair::new(27, None)?;
    pair.receiver.exec(
        "nft",
        &["add table inet nettune_test; add chain inet nettune_test input { type filter hook input priority 0; }; add rule inet nettune_test input ct state new,established accept"],
    )?;
    // The only namespace using conntrack here; the original comes back on drop.
    let restore = Restore::set(CONNTRACK_MAX, &SMALL.to_string())?;
    let config = TestConfig::with(
        "writer",
        &[],
        "cooldown_seconds = 1\nexclude = [\"net.netfilter.nf_conntrack_buckets\"]\n",
    )?;
    let agent = config.start_agent()?;
    let addr = SocketAddrV4::new(pair.veth.b_addr, PORT);
    let _listener = pair.receiver.run(|| listener_with_backlog(addr, 4096))??;
    // 36 connections held: 90 % of the table, and nettune raises it.
    let mut held = pair.sender.run(|| {
        (0..36)
            .map(|_| connect_nonblocking(addr))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    let deadline = Instant::now() + Duration::from_secs(15);
    while conntrack_max()? == SMALL {
        ensure!(
            Instant::now() < deadline,
            "nf_conntrack_max was not raised within 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let raised = conntrack_max()?;

    // kube-proxy starts and sets its own value.
    let bin = config.state.parent().context("base")?.join("bin");
    std::fs::create_dir_all(&bin)?;
    let kube_proxy = bin.join("kube-proxy");
    std::os::unix::fs::symlink("/usr/sbin/sysctl", &kube_proxy)?;
    let status = std::process::Command::new(&kube_proxy)
        .args([
            "-q",
            "-w",
            &format!("net.netfilter.nf_conntrack_max={SMALL}"),
        ])
        .status()?;
    ensure!(status.success(), "kube-proxy's write failed: {status}");
    // Still 90 % full of the value kube-proxy set: the next decision stands down.
    let deadline = Instant::now() + Duration::from_secs(15);
    let stood_down = loop {
        held.push(pair.sender.run(|| connect_nonblocking(addr))??);
        let s = agent.snapshot()?;
        let found = s["tuning"]["recent"].as_array().and_then(|d| {
            d.iter()
                .find(|d| {
                    d["sysctl"] == "net.netfilter.nf_conntrack_max" && d["result"] == "stood_down"
                })
                .cloned()
        });
        if let Some(d) = found {
            break d;
        }
        ensure!(Instant::now() < deadline, "no stand-down within 15 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    let metrics = agent.metrics()?;
    let counted = metric(
        &metrics,
        "nettune_sysctl_foreign_writes_total",
        &[
            ("sysctl", "net.netfilter.nf_conntrack_max"),
            ("writer", "kube-proxy"),
        ],
    );
    drop((held, agent));
    let after = conntrack_max()?;
    drop(restore);
    let reason = stood_down["reason"].as_str().unwrap_or_default().to_owned();
    println!(
        "    nf_conntrack_max {SMALL} → {raised}, kube-proxy → {after}: {reason}; counted {counted:?}"
    );
    ensure!(
        reason.contains("kube-proxy (pid") && reason.contains(&format!("wrote {SMALL}")),
        "the stand-down does not name kube-proxy and its value: {reason}"
    );
    ensure!(
        reason.contains("conntrack.maxPerCore: 0"),
        "the stand-down does not say what to change: {reason}"
    );
    ensure!(
        counted.is_some_and(|n| n >= 1.0),
        "the write is not counted in nettune_sysctl_foreign_writes_total: {counted:?}"
    );
    ensure!(
        after == SMALL,
        "nettune wrote over kube-proxy's value: {after}"
    );
    Ok(Outcome::Passed)
}
