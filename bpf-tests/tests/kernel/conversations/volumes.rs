//! Volumes against `ip -s link`, and the tc programs on the right veth and gone when nettune is.

use super::*;

/// An interface's counters as `ip -j -s link` prints them (`stats64`).
pub(super) fn ip_link_stats(iface: &str) -> anyhow::Result<serde_json::Value> {
    let text = tool(
        "ip",
        &["-j", "-s", "link", "show", "dev", iface],
        "iproute2",
    )?;
    let links: serde_json::Value = serde_json::from_str(&text)?;
    links[0]["stats64"]
        .as_object()
        .map(|o| serde_json::Value::Object(o.clone()))
        .with_context(|| format!("no stats64 for {iface} in {text}"))
}

pub(super) fn stat(stats: &serde_json::Value, direction: &str, key: &str) -> anyhow::Result<u64> {
    stats[direction][key]
        .as_u64()
        .with_context(|| format!("no {direction}.{key} in {stats}"))
}

pub(super) fn volumes_equal_ip_link_and_follow_the_interface(variant: Variant) -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let disabled: Vec<Variant> = [Variant::Tcx, Variant::Clsact]
        .into_iter()
        .filter(|v| *v != variant)
        .collect();
    let probes = load(&disabled)?;
    let feature = if variant == Variant::Tcx {
        Feature::Tcx
    } else {
        Feature::Clsact
    };
    if let Some(skip) = require_variant(&probes, SIGNAL, variant, feature) {
        return skip;
    }
    let mut pods = Pods::new(1, "vol")?;
    let pod = &pods.pods[0];
    let name = pod.host_iface().to_owned();
    let inode = pod.ns.inode()?;
    let mut collector = watching(probes, &Config::default(), &[pod])?;

    // Drop some of what the pod sends (its ACKs) on the host side, after our
    // program saw them: a tc drop, counted by its drop reason.
    let loss = Loss::attach_in(None, &name, 1000, variant == Variant::Clsact)?;
    let addr = SocketAddr::from((pod.addr(), 5600));
    bulk_transfer_from_host(&pod.ns, addr, 2 << 20)?;
    std::thread::sleep(Duration::from_millis(100));
    let dropped = loss.stats()?.1;
    drop(loss);
    let snapshot = collector.tick()?.snapshot;
    let theirs = ip_link_stats(&name)?;
    let ours = snapshot
        .workload(inode)
        .and_then(|w| w.interface.clone())
        .context("the pod has no interface")?;
    // The pod receives what its host side transmits, and the other way round.
    let pairs = [
        (
            "rx_bytes",
            ours.rx_bytes.total,
            stat(&theirs, "tx", "bytes")?,
        ),
        (
            "tx_bytes",
            ours.tx_bytes.total,
            stat(&theirs, "rx", "bytes")?,
        ),
        (
            "rx_packets",
            ours.rx_packets.total,
            stat(&theirs, "tx", "packets")?,
        ),
        (
            "tx_packets",
            ours.tx_packets.total,
            stat(&theirs, "rx", "packets")?,
        ),
        (
            "rx_drops",
            ours.rx_drops.total,
            stat(&theirs, "tx", "dropped")?,
        ),
        (
            "tx_drops",
            ours.tx_drops.total,
            stat(&theirs, "rx", "dropped")?,
        ),
        (
            "errors",
            ours.errors.total,
            stat(&theirs, "rx", "errors")? + stat(&theirs, "tx", "errors")?,
        ),
    ];
    for (what, ours, theirs) in pairs {
        println!("    {variant} {name} {what}: nettune {ours}, ip -s link {theirs}");
        ensure!(
            ours == theirs,
            "{what}: nettune {ours}, ip -s link {theirs}"
        );
    }
    ensure!(
        ours.rx_bytes.total >= 2 << 20,
        "less than the transfer reached the pod"
    );

    let counted_drops = ours.tc_drops.total;
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
        &format!("pod_tc_drops_{variant}"),
        serde_json::json!({ "tc_drops_counted": counted_drops, "tc_program_dropped": dropped }),
    );

    // The pod goes away, its interface with it: nettune detaches and forgets both.
    pods.pods.clear();
    let started = Instant::now();
    loop {
        let tick = collector.tick()?;
        if tick.interfaces.removed.iter().any(|(_, n)| *n == name) {
            ensure!(
                tick.snapshot.workload(inode).is_none(),
                "the departed pod is still reported"
            );
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "{name} was not forgotten: {:?}",
            tick.interfaces
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Outcome::Passed)
}

// ---- DNS -------------------------------------------------------------------

/// A pod's host-side veth has ifindex N on the host; elsewhere, two namespaces are
/// joined by a veth pair whose ends are also numbered N (ifindex values repeat
/// across namespaces). The pod's traffic must be the pod's, and the pair's
/// namespaces must get no interface: only the peer's namespace id
/// (`IFLA_LINK_NETNSID`) tells them apart, not the ifindex.
pub(super) fn a_pods_veth_is_not_confused_with_a_veth_elsewhere_that_shares_its_ifindex()
-> TestResult {
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

/// nettune's tc filters on `iface` (host namespace), by program name, in both
/// directions, as `tc filter show` lists them.
pub fn our_filters(iface: &str) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for hook in ["ingress", "egress"] {
        let text = tool("tc", &["filter", "show", "dev", iface, hook], "iproute2")?;
        found.extend(
            ["pod_ingress", "pod_egress"]
                .into_iter()
                .filter(|name| text.contains(name))
                .map(|name| format!("{hook}:{name}")),
        );
    }
    Ok(found)
}

pub(super) fn clsact_filters_are_removed_when_nettune_stops_watching_or_exits() -> TestResult {
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
