//! The pod-traffic signal (`nettune-ebpf/src/traffic.rs`): tc programs attach to a
//! pod-like veth when it appears in the host namespace, count what the interface's
//! own counters count, and are forgotten when the interface goes.
//!
//! Tolerance: the interface counters and the maps are read after the transfer has
//! finished and IPv6 is off on the pair (no neighbour discovery), so no packet is in
//! flight between the two reads and the figures must be equal.
//!
//! On kernels before 6.6 (no TCX) the programs are clsact filters, which outlive
//! the process that added them unless removed one by one: `tc filter show` (the
//! kernel's own list) must show none of nettune's once it stops watching an
//! interface or goes away.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, ensure};
use bpf_tests::loss::Loss;
use bpf_tests::{
    command::run,
    harness::{Feature, Outcome, Test, TestResult, record, require_root},
    netns::{Netns, Veth},
    probes::{kfree_skb_has_reason, load, read, require_variant, sample, watch_host_veths},
    scenarios::Pair,
    traffic::bulk_transfer_from_host,
};
use nettune::{
    collect::Collector,
    config::Config,
    model::probes::Variant,
    probes::{ProbeSource as _, Probes, traffic::SIGNAL},
    sys::Kernel,
};

use nettune_common::IfaceTraffic;

pub const TESTS: &[Test] = &[
    Test {
        name: "traffic::tcx_counts_equal_interface_counters_and_follow_the_interface",
        run: || counts_equal_interface_counters_and_follow_the_interface(Variant::Tcx),
    },
    Test {
        name: "traffic::clsact_counts_equal_interface_counters_and_follow_the_interface",
        run: || counts_equal_interface_counters_and_follow_the_interface(Variant::Clsact),
    },
    Test {
        name: "traffic::clsact_filters_are_removed_when_nettune_stops_watching_or_exits",
        run: clsact_filters_are_removed_when_nettune_stops_watching_or_exits,
    },
    Test {
        name: "traffic::a_pods_veth_is_not_confused_with_a_veth_elsewhere_that_shares_its_ifindex",
        run: a_pods_veth_is_not_confused_with_a_veth_elsewhere_that_shares_its_ifindex,
    },
];

/// A pod's host-side veth has ifindex N on the host; elsewhere, two namespaces are
/// joined by a veth pair whose ends are also numbered N (ifindex values repeat
/// across namespaces). The pod's traffic must be the pod's, and the pair's
/// namespaces must get no interface: only the peer's namespace id
/// (`IFLA_LINK_NETNSID`) tells them apart, not the ifindex.
fn a_pods_veth_is_not_confused_with_a_veth_elsewhere_that_shares_its_ifindex() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = load(&[])?;
    if probes
        .report()
        .signal(SIGNAL)
        .and_then(|s| s.attached)
        .is_none()
    {
        return require_variant(&probes, SIGNAL, Variant::Tcx, Feature::Tc)
            .unwrap_or(Ok(Outcome::Passed));
    }
    let pod = Netns::new("pod")?;
    let host_veth = Veth::to_host(&pod, 33)?;
    let shared_index = host_veth.host_ifindex()?;
    let pair = Pair::new(34, Some(shared_index))?;
    let mut collector = Collector::new(probes, Kernel, &Config::default());
    collector.tick()?;
    let snapshot = collector.tick()?.snapshot;
    let interface_of = |ns: &Netns| -> anyhow::Result<Option<String>> {
        let inode = ns.inode()?;
        Ok(snapshot
            .workload(inode)
            .and_then(|w| w.interface.as_ref())
            .map(|i| i.name.clone()))
    };
    let (of_pod, of_sender, of_receiver) = (
        interface_of(&pod)?,
        interface_of(&pair.sender)?,
        interface_of(&pair.receiver)?,
    );
    println!(
        "    ifindex {shared_index}: pod → {of_pod:?}, pair → {of_sender:?} / {of_receiver:?}"
    );
    ensure!(
        of_pod.as_deref() == Some(host_veth.veth.a_name.as_str()),
        "the pod's own veth {} is not its interface: {of_pod:?}",
        host_veth.veth.a_name
    );
    ensure!(
        of_sender.is_none() && of_receiver.is_none(),
        "a namespace without a host-side veth got one: {of_sender:?} / {of_receiver:?}"
    );
    Ok(Outcome::Passed)
}

fn counts_equal_interface_counters_and_follow_the_interface(variant: Variant) -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let disabled: Vec<Variant> = [Variant::Tcx, Variant::Clsact]
        .into_iter()
        .filter(|v| *v != variant)
        .collect();
    let mut probes = load(&disabled)?;
    let feature = if variant == Variant::Tcx {
        Feature::Tcx
    } else {
        Feature::Clsact
    };
    if let Some(skip) = require_variant(&probes, SIGNAL, variant, feature) {
        return skip;
    }
    let attached = Some(variant);
    let pod = Netns::new("pod")?;
    let host_veth = Veth::to_host(&pod, 8)?;
    let name = host_veth.veth.a_name.clone();
    let changes = watch_host_veths(&mut probes)?;
    let ifindex = changes
        .added
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(i, _)| *i)
        .with_context(|| format!("{name} was not attached: {changes:?}"))?;

    let read = |probes: &Probes| -> anyhow::Result<(IfaceTraffic, [u64; 4])> {
        let ours = read(probes)?
            .interfaces
            .get(&ifindex)
            .map(|(_, t)| *t)
            .context("no traffic entry")?;
        let theirs = [
            host_veth.host_counter("rx_packets")?,
            host_veth.host_counter("rx_bytes")?,
            host_veth.host_counter("tx_packets")?,
            host_veth.host_counter("tx_bytes")?,
        ];
        Ok((ours, theirs))
    };
    let tc_drops = |probes: &Probes| -> anyhow::Result<u64> {
        let sample = sample(probes)?;
        Ok(sample.interfaces.get(&ifindex).map_or(0, |i| i.tc_drops))
    };
    let (ours_before, theirs_before) = read(&probes)?;
    let drops_before = tc_drops(&probes)?;
    // Drop some of what the pod sends (its ACKs) on the host side, after our
    // program counted them: the interface's own counters count them too.
    let loss = Loss::attach_in(None, &name, 1000, variant == Variant::Clsact)?;
    let addr = SocketAddr::from((host_veth.veth.b_addr, 5600));
    bulk_transfer_from_host(&pod, addr, 2 << 20)?;
    std::thread::sleep(Duration::from_millis(100));
    let (ours_after, theirs_after) = read(&probes)?;
    let dropped = loss.stats()?.1;
    drop(loss);
    let counted_drops = tc_drops(&probes)? - drops_before;
    let ours = [
        ours_after.ingress_packets - ours_before.ingress_packets,
        ours_after.ingress_bytes - ours_before.ingress_bytes,
        ours_after.egress_packets - ours_before.egress_packets,
        ours_after.egress_bytes - ours_before.egress_bytes,
    ];
    let theirs: Vec<u64> = theirs_after
        .iter()
        .zip(theirs_before)
        .map(|(a, b)| a - b)
        .collect();
    println!(
        "    {attached:?} on {name}: nettune in {}p/{}B out {}p/{}B; interface rx {}p/{}B tx {}p/{}B",
        ours[0], ours[1], ours[2], ours[3], theirs[0], theirs[1], theirs[2], theirs[3]
    );
    ensure!(ours[3] >= 2 << 20, "less than the transfer went to the pod");
    ensure!(
        ours.as_slice() == theirs.as_slice(),
        "tc counts differ from the interface's"
    );
    println!("    tc drops on {name}: nettune {counted_drops}, the tc program dropped {dropped}");
    ensure!(dropped > 0, "the loss program dropped nothing");
    if kfree_skb_has_reason()? {
        ensure!(
            counted_drops == dropped,
            "tc drops: counted {counted_drops}, dropped {dropped}"
        );
    } else {
        // Without drop reasons (before 5.17) a tc drop cannot be told from others:
        // the pod's tc-drop figure stays 0, never a guess.
        println!("    no drop reasons on this kernel: tc drops are not told apart");
        ensure!(
            counted_drops == 0,
            "{counted_drops} tc drops counted on a kernel without drop reasons"
        );
    }
    record(
        &format!("pod_traffic_{variant}"),
        serde_json::json!({ "tc_drops_counted": counted_drops, "tc_program_dropped": dropped }),
    );

    // The pod goes away: its interface with it, and nettune forgets both.
    drop(host_veth);
    drop(pod);
    let changes = watch_host_veths(&mut probes)?;
    ensure!(
        changes
            .removed
            .iter()
            .any(|(i, n)| *i == ifindex && *n == name),
        "{name} was not removed: {changes:?}"
    );
    ensure!(
        !bpf_tests::probes::read(&probes)?
            .interfaces
            .contains_key(&ifindex),
        "traffic for a removed interface is still reported"
    );
    Ok(Outcome::Passed)
}

/// nettune's tc filters on `iface` (host namespace), by program name, in both
/// directions, as `tc filter show` lists them.
pub fn our_filters(iface: &str) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for hook in ["ingress", "egress"] {
        let text = run("tc", &["filter", "show", "dev", iface, hook], "iproute2")?;
        found.extend(
            ["pod_ingress", "pod_egress"]
                .into_iter()
                .filter(|name| text.contains(name))
                .map(|name| format!("{hook}:{name}")),
        );
    }
    Ok(found)
}

fn clsact_filters_are_removed_when_nettune_stops_watching_or_exits() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let mut probes = load(&[Variant::Tcx])?;
    if let Some(skip) = require_variant(&probes, SIGNAL, Variant::Clsact, Feature::Clsact) {
        return skip;
    }
    let mut pods = (0..4u8)
        .map(|i| {
            let ns = Netns::new("cls")?;
            let veth = Veth::to_host(&ns, 36 + i)?;
            Ok((ns, veth))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let names: Vec<String> = pods.iter().map(|(_, v)| v.veth.a_name.clone()).collect();
    let filters = |names: &[String]| -> anyhow::Result<Vec<(String, Vec<String>)>> {
        names
            .iter()
            .map(|n| Ok((n.clone(), our_filters(n)?)))
            .collect()
    };
    let expect_all = |names: &[String], when: &str| -> anyhow::Result<()> {
        for (name, ours) in filters(names)? {
            ensure!(
                ours.len() == 2,
                "{when}: {name} has {ours:?}, not nettune's two filters"
            );
        }
        Ok(())
    };
    let expect_none = |names: &[String], when: &str| -> anyhow::Result<()> {
        for (name, ours) in filters(names)? {
            ensure!(ours.is_empty(), "{when}: {name} still has {ours:?}");
        }
        Ok(())
    };

    watch_host_veths(&mut probes)?;
    expect_all(&names, "attached")?;
    // nettune stops watching while the interfaces stay.
    let changes = probes.watch_interfaces(&[]);
    ensure!(
        changes.removed.len() >= names.len(),
        "not released: {changes:?}"
    );
    expect_none(&names, "after nettune stopped watching")?;

    // Watched again; one pod goes between two ticks, then nettune exits: the
    // vanished interface's filters cannot be removed, the others' must be.
    watch_host_veths(&mut probes)?;
    expect_all(&names, "attached again")?;
    drop(pods.remove(0));
    drop(probes);
    expect_none(&names[1..], "after nettune exited")?;
    println!(
        "    {} interfaces: two clsact filters each while watched, none after release or exit",
        names.len()
    );
    Ok(Outcome::Passed)
}
