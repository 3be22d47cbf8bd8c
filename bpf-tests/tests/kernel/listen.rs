//! The listen-overflow signal (`nettune-ebpf/src/listen.rs`, and the procfs
//! fallback): listeners that never accept, hammered by connects from another
//! namespace.
//!
//! - Whatever variant attaches, nettune's per-netns overflow figure equals the
//!   delta of that namespace's `ListenOverflows`, and the drops seen meanwhile
//!   equal bpftrace's.
//! - Under the fentry variant, and under the kprobe variant forced with fentry
//!   disabled, the per-listener map names each listener's port with its queue
//!   limit, `min(listen() backlog, somaxconn)`, a queue length past that limit,
//!   and overflow counts that add up to the namespace's `ListenOverflows` delta:
//!   the kernel's own counter, which nettune does not read for these figures.

use std::{net::SocketAddrV4, time::Duration};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    harness::{Feature, Outcome, Test, TestResult, record, require_root},
    netns::Netns,
    probes::{load, read, require_variant},
    scenarios::Pair,
    sockets::{connect_nonblocking, listener_with_backlog},
};
use nettune::{
    model::probes::Variant,
    probes::{ProbeSource as _, Probes, listen::SIGNAL},
};
use serde_json::json;

use crate::drops::{drops_equal_bpftrace, probes_with_drops};

pub const TESTS: &[Test] = &[
    Test {
        name: "listen::overflows_equal_the_namespace_listenoverflows_delta",
        run: overflows_equal_the_namespace_listenoverflows_delta,
    },
    Test {
        name: "listen::fentry_per_socket_overflows_add_up_to_listenoverflows",
        run: || per_socket_overflows_add_up_to_listenoverflows(Variant::Fentry, Feature::Fentry),
    },
    Test {
        name: "listen::kprobe_per_socket_overflows_add_up_to_listenoverflows",
        run: || per_socket_overflows_add_up_to_listenoverflows(Variant::Kprobe, Feature::Kprobe),
    },
];

const PORT: u16 = 5300;
const CONNECTS: usize = 100;

fn agent_overflows(probes: &Probes, ns: &Netns) -> anyhow::Result<u64> {
    let sample = bpf_tests::probes::sample(probes)?;
    let inode = ns.inode()?;
    sample
        .netns
        .get(&inode)
        .and_then(|n| n.listen)
        .map(|l| l.overflows)
        .ok_or_else(|| anyhow::anyhow!("the sample has no listen counters for netns {inode}"))
}

/// `CONNECTS` non-blocking connects from `pair`'s sender to each of `servers`, kept
/// open long enough for the SYN retransmit at 1 s to hit the full queues again.
fn storm(pair: &Pair, servers: &[SocketAddrV4]) -> anyhow::Result<()> {
    let clients = pair.sender.run(|| {
        servers
            .iter()
            .flat_map(|s| (0..CONNECTS).map(|_| connect_nonblocking(*s)))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    std::thread::sleep(Duration::from_millis(1500));
    drop(clients);
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

/// The namespace's `ListenOverflows`, once it has stopped moving (read every
/// 300 ms, for at most 10 s): late handshakes of closed clients can still arrive.
fn settled_listen_overflows(ns: &Netns) -> anyhow::Result<i64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut last = ns.mib("netstat", "TcpExt", "ListenOverflows")?;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = ns.mib("netstat", "TcpExt", "ListenOverflows")?;
        if now == last || std::time::Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

fn overflows_equal_the_namespace_listenoverflows_delta() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = probes_with_drops()?;
    let variant = probes.report().signal(SIGNAL).and_then(|s| s.attached);
    ensure!(
        variant.is_some(),
        "listen_overflow did not attach: {:?}",
        probes.report().signal(SIGNAL)
    );
    let pair = Pair::new(6, None)?;
    let server_addr = SocketAddrV4::new(pair.veth.b_addr, PORT);
    let listener = pair
        .receiver
        .run(|| listener_with_backlog(server_addr, 1))??;

    let agent_before = agent_overflows(&probes, &pair.receiver)?;
    let kernel_before = pair.receiver.mib("netstat", "TcpExt", "ListenOverflows")?;
    drops_equal_bpftrace(&probes, &[&pair.sender, &pair.receiver], || {
        storm(&pair, &[server_addr])
    })?;
    let kernel = u64::try_from(settled_listen_overflows(&pair.receiver)? - kernel_before)?;
    let agent = agent_overflows(&probes, &pair.receiver)? - agent_before;
    println!("    {variant:?}: nettune {agent} overflows, ListenOverflows rose by {kernel}");
    ensure!(
        kernel > 0,
        "{CONNECTS} connects to a listen(1) server caused no overflow"
    );
    ensure!(
        agent == kernel,
        "nettune says {agent} overflows, the namespace's counter {kernel}"
    );
    drop(listener);
    Ok(Outcome::Passed)
}

/// A listener of the per-socket test: its port, `listen()` backlog, and the limit
/// the kernel must apply (somaxconn is 3 in the test namespace).
const LISTENERS: [(u16, i32, u32); 2] = [(5301, 1, 1), (5302, 8, 3)];
const SOMAXCONN: &str = "3";

fn per_socket_overflows_add_up_to_listenoverflows(
    variant: Variant,
    feature: Feature,
) -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let others: Vec<Variant> = [Variant::Fentry, Variant::Kprobe]
        .into_iter()
        .filter(|v| *v != variant)
        .collect();
    let probes = load(&others)?;
    if let Some(skip) = require_variant(&probes, SIGNAL, variant, feature) {
        return skip;
    }
    let pair = Pair::new(7, None)?;
    pair.receiver
        .write_sysctl("net/core/somaxconn", SOMAXCONN)?;
    let servers: Vec<SocketAddrV4> = LISTENERS
        .iter()
        .map(|(port, _, _)| SocketAddrV4::new(pair.veth.b_addr, *port))
        .collect();
    let _listeners = pair.receiver.run(|| {
        LISTENERS
            .iter()
            .zip(&servers)
            .map(|((_, backlog, _), addr)| listener_with_backlog(*addr, *backlog))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    let kernel_before = pair.receiver.mib("netstat", "TcpExt", "ListenOverflows")?;
    storm(&pair, &servers)?;
    let kernel = u64::try_from(settled_listen_overflows(&pair.receiver)? - kernel_before)?;

    let inode = pair.receiver.inode()?;
    let entries = read(&probes)?.listeners;
    let mut total = 0;
    let mut seen = Vec::new();
    for (port, backlog, limit) in LISTENERS {
        let entry = entries
            .iter()
            .find(|(k, _)| k.netns == inode && k.port == port)
            .map(|(_, v)| *v)
            .with_context(|| format!("no per-listener entry for port {port}: {entries:?}"))?;
        println!(
            "    {variant}: port {port} listen({backlog}): {} overflows, queue {} of limit {}",
            entry.overflows, entry.backlog, entry.max_backlog
        );
        ensure!(entry.overflows > 0, "port {port}: no overflows counted");
        ensure!(
            entry.max_backlog == limit,
            "port {port}: limit {} != min(backlog {backlog}, somaxconn {SOMAXCONN}) = {limit}",
            entry.max_backlog
        );
        ensure!(
            entry.backlog > limit,
            "port {port}: an overflow with the queue at {} of {limit}",
            entry.backlog
        );
        total += entry.overflows;
        seen.push(json!([
            port,
            backlog,
            entry.max_backlog,
            entry.backlog,
            entry.overflows
        ]));
    }
    let others_in_ns: u64 = entries
        .iter()
        .filter(|(k, _)| k.netns == inode && !LISTENERS.iter().any(|l| l.0 == k.port))
        .map(|(_, v)| v.overflows)
        .sum();
    println!("    {variant}: per-listener total {total}, ListenOverflows rose by {kernel}");
    ensure!(others_in_ns == 0, "overflows counted on other ports");
    ensure!(
        total == kernel,
        "per-listener overflows add up to {total}, the namespace's ListenOverflows rose by {kernel}"
    );
    record(
        &format!("listen_overflow_{variant}"),
        json!({ "listeners": seen, "listen_overflows": kernel }),
    );
    Ok(Outcome::Passed)
}
