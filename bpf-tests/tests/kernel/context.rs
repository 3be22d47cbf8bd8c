//! The cluster around the node (`model::context`), from what the node shows:
//! interfaces a CNI, kube-proxy and NodeLocal DNSCache leave, made here for real
//! (a VXLAN device named as Flannel names it, kube-proxy's `kube-ipvs0`, the
//! cache's `nodelocaldns`), compared with `ip route` and `ip link` for the uplink and its
//! MTU; the findings that follow (the pods' MTU over the path, keepalive after
//! IPVS forgets), and `nettune probes --json`'s `context`.

use anyhow::{Context as _, ensure};
use std::collections::BTreeSet;

use bpf_tests::{
    bench::pods::Pods,
    harness::{Outcome, Test, TestResult, require_root},
    netns::{Netns, ip},
};
use nettune::{
    collect::Collector,
    config::Config,
    diagnose,
    model::context::{NodeFacts, detect},
    sys::Kernel,
};
use xtask::process::tool;

use crate::probes::probes_json;

pub const TESTS: &[Test] = &[
    Test {
        name: "context::a_vxlan_cni_kube_proxy_ipvs_and_nodelocal_dns_are_found_with_their_findings",
        run: a_vxlan_cni_kube_proxy_ipvs_and_nodelocal_dns_are_found_with_their_findings,
    },
    Test {
        name: "context::kube_proxys_iptables_and_nftables_modes_are_read_from_real_rulesets",
        run: kube_proxys_iptables_and_nftables_modes_are_read_from_real_rulesets,
    },
];

/// A host interface the test made; deleted on drop.
struct HostLink(&'static str);

impl HostLink {
    fn add(name: &'static str, kind: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec!["link", "add", name, "type"];
        args.extend_from_slice(kind);
        ip(&args)?;
        Ok(Self(name))
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", self.0]);
    }
}

/// The IPv4 default route's interface and its MTU, as iproute2 reads them.
fn uplink() -> anyhow::Result<Option<(String, u32)>> {
    let routes: serde_json::Value = serde_json::from_str(&tool(
        "ip",
        &["-j", "route", "show", "default"],
        "iproute2",
    )?)?;
    let Some(dev) = routes[0]["dev"].as_str() else {
        return Ok(None);
    };
    let links: serde_json::Value = serde_json::from_str(&tool(
        "ip",
        &["-j", "link", "show", "dev", dev],
        "iproute2",
    )?)?;
    let mtu = links[0]["mtu"].as_u64().context("no mtu")?;
    Ok(Some((dev.to_owned(), u32::try_from(mtu)?)))
}

fn a_vxlan_cni_kube_proxy_ipvs_and_nodelocal_dns_are_found_with_their_findings() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let Some((uplink, uplink_mtu)) = uplink()? else {
        return Ok(Outcome::Skipped(
            "no IPv4 default route: no uplink to compare".into(),
        ));
    };
    for name in ["flannel.1", "kube-ipvs0", "nodelocaldns"] {
        ensure!(
            !std::path::Path::new("/sys/class/net").join(name).exists(),
            "{name} already exists on this host: the test will not touch a real CNI's"
        );
    }
    let _vxlan = HostLink::add("flannel.1", &["vxlan", "id", "4242", "dstport", "8472"])?;
    // kube-proxy and the cache make dummies; bridges here, as some kernels have
    // no dummy driver (CI's) and the names are what tells.
    let _ipvs = HostLink::add("kube-ipvs0", &["bridge"])?;
    let _cache = HostLink::add("nodelocaldns", &["bridge"])?;
    // A pod at the uplink's MTU: too big once VXLAN adds its 50 bytes.
    let pods = Pods::new(1, "ctx")?;
    ip(&[
        "link",
        "set",
        "dev",
        pods.pods[0].host_iface(),
        "mtu",
        &uplink_mtu.to_string(),
    ])?;

    let mut collector = Collector::new(bpf_tests::probes::load(&[])?, Kernel, &Config::default());
    let snapshot = collector.tick()?.snapshot;
    let context = snapshot
        .context
        .clone()
        .context("no context in the Snapshot")?;
    println!("    {}; evidence {:?}", context.summary(), context.evidence);
    ensure!(
        (
            context.proxy.as_str(),
            context.cni.as_str(),
            context.encapsulation.as_str()
        ) == ("kube-proxy-ipvs", "flannel", "vxlan"),
        "detected {context:?}"
    );
    ensure!(context.nodelocal_dns, "NodeLocal DNSCache not found");
    ensure!(
        context.uplink == Some((uplink.clone(), uplink_mtu)),
        "uplink: nettune {:?}, ip route/link {uplink} MTU {uplink_mtu}",
        context.uplink
    );
    ensure!(
        context.path_mtu() == Some(uplink_mtu - 50),
        "path MTU {:?}",
        context.path_mtu()
    );
    let findings = diagnose::findings(&snapshot, &Config::default().tuning);
    let ids: Vec<&str> = findings.iter().map(|f| f.id).collect();
    println!("    findings: {ids:?}");
    ensure!(ids.contains(&"pod_mtu"), "no pod_mtu finding: {findings:?}");
    let keepalive: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_keepalive_time")?
        .trim()
        .parse()?;
    ensure!(
        ids.contains(&"idle_timeouts") == (keepalive >= 900),
        "keepalive {keepalive} s against IPVS's 900 s: findings {ids:?}"
    );

    // The command line says the same.
    let (_, report) = probes_json(&[])?;
    ensure!(
        report["context"]["proxy"] == "kube-proxy-ipvs" && report["context"]["cni"] == "flannel",
        "nettune probes --json: {}",
        report["context"]
    );
    Ok(Outcome::Passed)
}

/// The chains `nft` itself lists in `ns`: (family, table, chain).
fn nft_listed(ns: &Netns) -> anyhow::Result<BTreeSet<(String, String, String)>> {
    let listed: serde_json::Value =
        serde_json::from_str(&ns.exec("nft", &["-j", "list", "chains"])?)?;
    Ok(listed["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let c = &o["chain"];
            Some((
                c["family"].as_str()?.to_owned(),
                c["table"].as_str()?.to_owned(),
                c["name"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// Rulesets shaped as kube-proxy leaves them, each in a namespace of its own:
/// its iptables mode through iptables-nft (the `KUBE-SERVICES` chain of the
/// `nat` table, made by `iptables-nft` itself), its nftables mode (the `ip
/// kube-proxy` table), and none. nettune's nfnetlink dump lists the chains
/// `nft -j list chains` lists, and the proxy's mode follows from them.
fn kube_proxys_iptables_and_nftables_modes_are_read_from_real_rulesets() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let iptables = Netns::new("kpipt")?;
    iptables.exec("iptables-nft", &["-t", "nat", "-N", "KUBE-SERVICES"])?;
    iptables.exec(
        "iptables-nft",
        &["-t", "nat", "-A", "PREROUTING", "-j", "KUBE-SERVICES"],
    )?;
    let nftables = Netns::new("kpnft")?;
    nftables.exec(
        "nft",
        &["add table ip kube-proxy; add chain ip kube-proxy services; add table ip6 kube-proxy"],
    )?;
    let none = Netns::new("kpnone")?;
    for (ns, expected) in [
        (&iptables, "kube-proxy-iptables"),
        (&nftables, "kube-proxy-nftables"),
        (&none, "kube-proxy"),
    ] {
        let chains: Vec<(String, String, String)> = ns
            .run(nettune::sys::nftables::chains)??
            .into_iter()
            .map(|c| (c.family_name().to_owned(), c.table, c.chain))
            .collect();
        let ours: BTreeSet<_> = chains.iter().cloned().collect();
        let theirs = nft_listed(ns)?;
        ensure!(
            ours == theirs,
            "{}: nettune read {ours:?}, nft lists {theirs:?}",
            ns.name()
        );
        let context = detect(&NodeFacts {
            processes: ["kube-proxy".to_owned()].into(),
            nft_chains: chains,
            ..NodeFacts::default()
        });
        println!(
            "    {}: {} chain(s) as nft lists them; proxy {} ({:?})",
            ns.name(),
            ours.len(),
            context.proxy,
            context.evidence.first()
        );
        ensure!(
            context.proxy == expected,
            "{}: proxy {}, expected {expected}",
            ns.name(),
            context.proxy
        );
    }
    Ok(Outcome::Passed)
}
