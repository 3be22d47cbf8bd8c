//! Loading nettune's probes for a test, with only the variants it wants, and
//! reading them the way the agent does.

use nettune::{
    collect::{identity, sample},
    model::{probes::Variant, sample::Sample},
    probes::{InterfaceChanges, LoadOptions, ProbeReadings, ProbeSource as _, Probes},
    sys::{Kernel, Link, System as _, tracefs::Tracefs},
};

use crate::harness::{Feature, TestResult, require};

/// Whether this kernel's `skb/kfree_skb` tracepoint carries a drop reason (Linux
/// 5.17+), from its tracefs format: the kernel's own description of the event.
pub fn kfree_skb_has_reason() -> anyhow::Result<bool> {
    let tracefs = Tracefs::find().ok_or_else(|| anyhow::anyhow!("tracefs is not mounted"))?;
    Ok(tracefs.format("skb", "kfree_skb")?.contains_key("reason"))
}

/// Skips (or fails, if `drop_reasons` is required) unless this kernel's drops
/// carry a reason: without one, a tc or netfilter drop cannot be told from others.
pub fn require_drop_reasons() -> anyhow::Result<Option<TestResult>> {
    Ok(require(
        Feature::DropReasons,
        kfree_skb_has_reason()?,
        "this kernel's kfree_skb has no reason (drop reasons came in 5.17)",
    ))
}

/// Loads nettune's probes with `disabled` variants turned off.
pub fn load(disabled: &[Variant]) -> anyhow::Result<Probes> {
    Ok(Probes::load(&LoadOptions {
        disabled: disabled.to_vec(),
        ..LoadOptions::default()
    })?)
}

/// Skips (or fails, if `feature` is required) unless `signal` attached `variant`,
/// naming the kernel's reason.
pub fn require_variant(
    probes: &Probes,
    signal: &str,
    variant: Variant,
    feature: Feature,
) -> Option<TestResult> {
    let status = probes.report().signal(signal);
    let attached = status.and_then(|s| s.attached) == Some(variant);
    let why = status
        .and_then(|s| s.skipped.iter().find(|k| k.variant == variant))
        .map_or_else(
            || format!("{signal} did not attach {variant}"),
            |k| k.reason.clone(),
        );
    require(feature, attached, &why)
}

/// Loads every variant and fails unless `signal` attached: for signals every
/// kernel nettune supports must provide.
pub fn load_requiring(signal: &str) -> anyhow::Result<Probes> {
    let probes = load(&[])?;
    let status = probes.report().signal(signal);
    if status.and_then(|s| s.attached).is_none() {
        anyhow::bail!("{signal} did not attach: {status:?}");
    }
    Ok(probes)
}

/// Every map of `probes`, read once.
pub fn read(probes: &Probes) -> anyhow::Result<ProbeReadings> {
    Ok(probes.read()?)
}

/// A Sample of the node, as one collection tick reads it (without pod
/// interfaces), with every namespace's `/proc/net` files read.
pub fn sample(probes: &Probes) -> anyhow::Result<Sample> {
    let namespaces = Kernel.namespaces();
    let owners: Vec<_> = namespaces
        .values()
        .map(|ns| (ns, identity::identify(&Kernel, ns, None)))
        .collect();
    let mut readings = probes.read()?;
    let interfaces = sample::PodInterfaces {
        veths: &[],
        link_stats: &std::collections::BTreeMap::new(),
        peers: &std::collections::BTreeMap::new(),
    };
    let mut sample = sample::read(
        &Kernel,
        &owners,
        &mut readings,
        &interfaces,
        probes.drop_reasons(),
    );
    for ns in namespaces.values() {
        if let Some(entry) = sample.netns.get_mut(&ns.inode) {
            sample::read_netns_files(&Kernel, ns, entry);
        }
    }
    Ok(sample)
}

/// Attaches `probes`' tc programs to the host's veths, as a collection tick does.
pub fn watch_host_veths(probes: &mut Probes) -> anyhow::Result<InterfaceChanges> {
    let links = Kernel.host_links()?;
    let veths: Vec<&Link> = links.iter().filter(|l| l.is_veth()).collect();
    Ok(probes.watch_interfaces(&veths))
}

/// Whether a loaded program named `name` (the kernel keeps its first 15
/// characters) has a link — the kernel's own list of BPF links, not what the
/// agent says.
pub fn program_linked(name: &str) -> bool {
    let ids: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| !n.is_empty() && name.starts_with(n))
        })
        .map(|p| p.id())
        .collect();
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .any(|l| ids.contains(&l.program_id()))
}
