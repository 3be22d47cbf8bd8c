//! The pod-conversations signal (`nettune-ebpf/src/conversations.rs`): tc programs
//! on every pod's host-side veth see its DNS, TCP handshakes and resets and ICMP
//! errors, compared here with real peers — dnsmasq answering, dnsperf and glibc's
//! resolver asking, the kernel's own TCP and ICMP counters in each namespace. The
//! pod's volumes are the interface's own counters, compared with `ip -s link`.
//!
//! Every test runs the agent's own pipeline (`Collector` ticks on this kernel), so
//! the figures compared are the ones `/metrics` and `nettune top` show.
//!
//! Tolerances: counts are exact — each test's traffic is over before the figures
//! are read, and the pods have IPv6 off (no neighbour discovery). DNS latency is
//! measured by nettune on the host side of the client's veth and by dnsperf in
//! the client, so the two means may differ by the veth crossings and dnsperf's
//! own scheduling: within [`DNS_LATENCY_TOLERANCE`].
//!
//! On kernels before 6.6 (no TCX) the programs are clsact filters, which outlive
//! the process that added them unless removed one by one: `tc filter show` (the
//! kernel's own list) must show none of nettune's once it stops watching an
//! interface or goes away.

mod dns;
mod handshakes;
mod icmp;
mod volumes;

pub(crate) use dns::DnsperfReport;
pub(crate) use volumes::our_filters;

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use bpf_tests::{
    bench::pods::{Pod, Pods},
    dns::Dnsmasq,
    harness::{Feature, Outcome, Test, TestResult, record, require_root},
    loss::Loss,
    netns::{Netns, Veth},
    probes::{kfree_skb_has_reason, load, require_variant, watch_host_veths},
    scenarios::Pair,
    traffic::{bulk_transfer_from_host, send_df_datagrams},
};
use nettune::{
    collect::Collector,
    config::Config,
    model::{conversations::ConversationFigures, probes::Variant, snapshot::Snapshot},
    probes::{ProbeSource as _, Probes, conversations::SIGNAL},
    sys::Kernel,
};
use xtask::process::tool;

pub const TESTS: &[Test] = &[
    Test {
        name: "conversations::tcx_volumes_equal_ip_link_and_follow_the_interface",
        run: || volumes::volumes_equal_ip_link_and_follow_the_interface(Variant::Tcx),
    },
    Test {
        name: "conversations::clsact_volumes_equal_ip_link_and_follow_the_interface",
        run: || volumes::volumes_equal_ip_link_and_follow_the_interface(Variant::Clsact),
    },
    Test {
        name: "conversations::clsact_filters_are_removed_when_nettune_stops_watching_or_exits",
        run: volumes::clsact_filters_are_removed_when_nettune_stops_watching_or_exits,
    },
    Test {
        name: "conversations::a_pods_veth_is_not_confused_with_a_veth_elsewhere_that_shares_its_ifindex",
        run: volumes::a_pods_veth_is_not_confused_with_a_veth_elsewhere_that_shares_its_ifindex,
    },
    Test {
        name: "conversations::dns_to_dnsmasq_equals_what_dnsperf_reports",
        run: dns::dns_to_dnsmasq_equals_what_dnsperf_reports,
    },
    Test {
        name: "conversations::glibc_retries_of_an_unanswered_query_are_retries",
        run: dns::glibc_retries_of_an_unanswered_query_are_retries,
    },
    Test {
        name: "conversations::handshakes_and_resets_equal_the_clients_view_and_the_tcp_counters",
        run: handshakes::handshakes_and_resets_equal_the_clients_view_and_the_tcp_counters,
    },
    Test {
        name: "conversations::frag_needed_equals_the_pods_icmp_counter_with_the_paths_mtu",
        run: icmp::frag_needed_equals_the_pods_icmp_counter_with_the_paths_mtu,
    },
];

/// How far nettune's mean DNS latency may be from dnsperf's, in seconds.
const DNS_LATENCY_TOLERANCE: f64 = 0.002;

/// Ticks of the agent's pipeline until `ready` holds for a Snapshot (the tc
/// programs attach within a tick's budget, so a busy host may take several).
fn tick_until(
    collector: &mut Collector,
    what: &str,
    ready: impl Fn(&Snapshot) -> bool,
) -> anyhow::Result<Snapshot> {
    let started = Instant::now();
    loop {
        let snapshot = collector.tick()?.snapshot;
        if ready(&snapshot) {
            return Ok(snapshot);
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!("{what}: not within 15 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A collector on this kernel with the pods' interfaces watched.
fn watching(probes: Probes, config: &Config, pods: &[&Pod]) -> anyhow::Result<Collector> {
    let mut collector = Collector::new(probes, Kernel, config);
    let inodes = pods
        .iter()
        .map(|p| p.ns.inode())
        .collect::<anyhow::Result<Vec<_>>>()?;
    tick_until(&mut collector, "the pods' interfaces watched", |s| {
        inodes
            .iter()
            .all(|i| s.workload(*i).is_some_and(|w| w.conversations.is_some()))
    })?;
    Ok(collector)
}

/// A pod's conversations in a fresh tick.
fn conversations_of(collector: &mut Collector, pod: &Pod) -> anyhow::Result<ConversationFigures> {
    let inode = pod.ns.inode()?;
    let snapshot = collector.tick()?.snapshot;
    snapshot
        .workload(inode)
        .and_then(|w| w.conversations.clone())
        .with_context(|| format!("no conversations for {}", pod.label()))
}

/// The agent's configuration with short timeouts, so that a test waits seconds.
fn config_with_timeouts(dns: f64, handshake: f64) -> Config {
    let mut config = Config::default();
    config.dns.timeout_seconds = dns;
    config.tcp.handshake_timeout_seconds = handshake;
    config
}

/// Skips unless the conversations programs attached.
fn load_conversations() -> Result<Probes, TestResult> {
    let probes = load(&[]).map_err(Err)?;
    if probes
        .report()
        .signal(SIGNAL)
        .and_then(|s| s.attached)
        .is_none()
    {
        return Err(require_variant(&probes, SIGNAL, Variant::Tcx, Feature::Tc)
            .unwrap_or_else(|| Err(anyhow::anyhow!("{SIGNAL} did not attach"))));
    }
    Ok(probes)
}

/// An nftables table in `ns` with one rule that counts what `matches` and drops
/// it; removed with the namespace.
pub(crate) fn nft_drop(ns: &Netns, hook: &str, matches: &str) -> anyhow::Result<()> {
    let chain = format!("{{ type filter hook {hook} priority 0 ; }}");
    ns.exec("nft", &["add", "table", "inet", "nettune_test"])?;
    ns.exec(
        "nft",
        &["add", "chain", "inet", "nettune_test", "c", &chain],
    )?;
    let rule = format!("{matches} counter drop");
    ns.exec("nft", &["add", "rule", "inet", "nettune_test", "c", &rule])?;
    Ok(())
}

/// Packets the rule of [`nft_drop`] dropped.
fn nft_counted(ns: &Netns) -> anyhow::Result<u64> {
    let text = ns.exec("nft", &["list", "table", "inet", "nettune_test"])?;
    let at = text
        .find("counter packets ")
        .context("no counter in nft's listing")?;
    let rest = &text[at + "counter packets ".len()..];
    Ok(rest
        .split_whitespace()
        .next()
        .context("no packet count")?
        .parse()?)
}

// ---- volumes ---------------------------------------------------------------
