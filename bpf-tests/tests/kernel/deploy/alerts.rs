//! The shipped alert rules, live: `deploy/base/prometheusrule.yaml`'s rules
//! loaded into a real Prometheus (Debian's package) scraping a real agent, the
//! faults they describe made for real in test namespaces — packets dropped in a
//! pod, a listen queue overflowing, TCP retransmitting over a lossy path, the
//! agent gone — each alert firing for its fault and resolving once it stops.
//!
//! The rules are the shipped ones with their waiting shortened to fit a test:
//! every `for:` becomes `0s` and every rate window `[15s]` (the expressions
//! are otherwise as shipped), and Prometheus evaluates them every second.

use std::{
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use bpf_tests::{
    agent_process::AgentProcess,
    harness::{Outcome, TestResult, require_root},
    loss::Loss,
    prometheus::{Alert, Prometheus, Target},
    scenarios::Pair,
    sockets::{connect_nonblocking, listener_with_backlog},
    traffic::bulk_transfer,
};

use super::manifests::rules_file;
use crate::{agent::nettune_bin, conversations::nft_drop};

/// The alerts the faults below must fire, and then resolve.
const FAULT_ALERTS: [&str; 3] = [
    "NettunePodNetworkDrops",
    "NettuneListenQueueOverflows",
    "NettuneHighTCPRetransmissions",
];
/// The UDP port the pod drops.
const DROPPED_PORT: u16 = 5321;
/// The port of the listener whose queue overflows.
const LISTEN_PORT: u16 = 5322;

/// The shipped rule file, with `for:` at `0s` and rate windows at `[15s]`.
fn shortened(rules: &str) -> String {
    let windows = ["[1m]", "[5m]", "[10m]", "[15m]", "[30m]", "[1h]"];
    rules
        .lines()
        .map(|line| {
            if let Some((indent, _)) = line.split_once("for: ") {
                return format!("{indent}for: 0s");
            }
            windows
                .iter()
                .fold(line.to_owned(), |l, w| l.replace(w, "[15s]"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A real Prometheus scraping `agent` every second and evaluating the shipped
/// rules, [`shortened`].
pub(super) fn prometheus_with_the_rules(agent: &AgentProcess) -> anyhow::Result<Prometheus> {
    Prometheus::with_rules(
        &[Target {
            addr: agent.addr,
            labels: vec![],
        }],
        Some(&shortened(&rules_file()?)),
    )
}

/// Waits (at most `limit`) until `done` holds for Prometheus's alerts.
pub(super) fn wait_alerts(
    prometheus: &Prometheus,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Alert]) -> bool,
) -> anyhow::Result<Vec<Alert>> {
    let start = Instant::now();
    loop {
        let alerts = prometheus.alerts()?;
        if done(&alerts) {
            return Ok(alerts);
        }
        if start.elapsed() > limit {
            let now: Vec<String> = alerts
                .iter()
                .map(|a| format!("{} {}", a.name, a.state))
                .collect();
            bail!("{what}: not after {limit:?}; alerts now: {now:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub(super) fn firing<'a>(alerts: &'a [Alert], name: &str) -> Option<&'a Alert> {
    alerts
        .iter()
        .find(|a| a.name == name && a.state == "firing")
}

/// The three faults, for as long as `stop` is not set (bounded by the
/// callers' waits): datagrams to a port the pod drops, connects to a listener
/// that asked for a queue of 8 and never accepts, transfers over a path that
/// loses 3 % of its TCP packets.
fn make_faults(pair: &Pair, stop: &AtomicBool) -> anyhow::Result<()> {
    let listener = pair
        .receiver
        .run(|| listener_with_backlog(SocketAddrV4::new(pair.veth.b_addr, LISTEN_PORT), 8))??;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let drops = s.spawn(|| {
            pair.sender.run(|| -> anyhow::Result<()> {
                let socket = UdpSocket::bind("0.0.0.0:0")?;
                let to = SocketAddrV4::new(pair.veth.b_addr, DROPPED_PORT);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..20 {
                        socket.send_to(b"dropped", to)?;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(())
            })?
        });
        let overflows = s.spawn(|| {
            pair.sender.run(|| -> anyhow::Result<()> {
                let to = SocketAddrV4::new(pair.veth.b_addr, LISTEN_PORT);
                while !stop.load(Ordering::Relaxed) {
                    // A fresh set each second: the queue stays full.
                    let held = (0..24)
                        .map(|_| connect_nonblocking(to))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    std::thread::sleep(Duration::from_secs(1));
                    drop(held);
                }
                Ok(())
            })?
        });
        // One loss program for the whole time (one transfer of a few large
        // GSO packets may by chance lose none of them).
        let loss = Loss::attach(&pair.receiver, &pair.veth.b_name, 300)?;
        let to = SocketAddr::from((pair.veth.b_addr, 5201));
        while !stop.load(Ordering::Relaxed) {
            bulk_transfer(&pair.sender, &pair.receiver, to, 1024 * 1024)?;
        }
        ensure!(loss.stats()?.1 > 0, "the lossy path lost nothing");
        drops
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
        overflows
            .join()
            .map_err(|_| anyhow::anyhow!("connector panicked"))??;
        Ok(())
    })?;
    drop(listener);
    Ok(())
}

pub fn the_shipped_alerts_fire_for_real_faults_and_resolve() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let pair = Pair::new(30, None)?;
    nft_drop(
        &pair.receiver,
        "input",
        &format!("udp dport {DROPPED_PORT}"),
    )?;
    let agent = AgentProcess::start(&nettune_bin()?, &["--interval", "0.5"])?;
    let prometheus = prometheus_with_the_rules(&agent)?;
    let stop = AtomicBool::new(false);
    let pod = format!("netns:{}", pair.receiver.name());
    let fired = std::thread::scope(|s| {
        let faults = s.spawn(|| make_faults(&pair, &stop));
        let fired = wait_alerts(
            &prometheus,
            Duration::from_secs(90),
            "every fault's alert firing",
            |a| FAULT_ALERTS.iter().all(|name| firing(a, name).is_some()),
        );
        stop.store(true, Ordering::Relaxed);
        faults
            .join()
            .map_err(|_| anyhow::anyhow!("the faults panicked"))??;
        fired
    })?;
    for name in FAULT_ALERTS {
        let alert = firing(&fired, name).context(name)?;
        println!("    firing: {name} {}", alert.labels);
    }
    for name in ["NettunePodNetworkDrops", "NettuneListenQueueOverflows"] {
        let alert = firing(&fired, name).context(name)?;
        ensure!(
            fired
                .iter()
                .any(|a| a.name == name && a.labels["pod"] == pod.as_str()),
            "{name} does not name the pod {pod}: {}",
            alert.labels
        );
    }
    // The faults stopped: every one of their alerts resolves.
    let started = Instant::now();
    wait_alerts(
        &prometheus,
        Duration::from_secs(90),
        "the faults' alerts resolving",
        |a| {
            a.iter()
                .all(|alert| !FAULT_ALERTS.contains(&alert.name.as_str()))
        },
    )?;
    println!(
        "    resolved {:.0} s after the faults stopped",
        started.elapsed().as_secs_f64()
    );
    // The agent gone: the alert on its absence fires.
    agent.kill_hard()?;
    let down = wait_alerts(
        &prometheus,
        Duration::from_secs(30),
        "NettuneAgentDown firing",
        |a| firing(a, "NettuneAgentDown").is_some(),
    )?;
    println!(
        "    firing: NettuneAgentDown {}",
        firing(&down, "NettuneAgentDown")
            .map(|a| a.labels.to_string())
            .unwrap_or_default()
    );
    Ok(Outcome::Passed)
}
