//! Namespaces and veths that come and go leave no map entries, links or filters behind.

use super::*;

/// Keys of every loaded `DROPS` map (the agent's), as netns inodes.
pub(super) fn netns_in_drop_maps() -> anyhow::Result<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for info in aya::maps::loaded_maps().filter_map(Result::ok) {
        if info.name_as_str() != Some("DROPS") {
            continue;
        }
        let map = aya::maps::Map::from_map_data(aya::maps::MapData::from_id(info.id())?)?;
        let hash: aya::maps::PerCpuHashMap<_, DropKey, u64> = map.try_into()?;
        out.extend(hash.keys().filter_map(Result::ok).map(|k| k.netns));
    }
    Ok(out)
}

/// The keys of the `DROPS` map the process `pid` holds (found through its
/// descriptors' `map_id`, so other agents' maps on the machine are not counted).
pub(super) fn drop_keys_of(pid: u32) -> anyhow::Result<Vec<DropKey>> {
    let mut ids = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(info) = std::fs::read_to_string(fd?.path()) else {
            continue;
        };
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("map_id:"))
                .filter_map(|id| id.trim().parse::<u32>().ok()),
        );
    }
    let mut keys = Vec::new();
    for info in aya::maps::loaded_maps().filter_map(Result::ok) {
        if info.name_as_str() != Some("DROPS") || !ids.contains(&info.id()) {
            continue;
        }
        let map = aya::maps::Map::from_map_data(aya::maps::MapData::from_id(info.id())?)?;
        let hash: aya::maps::PerCpuHashMap<_, DropKey, u64> = map.try_into()?;
        keys.extend(hash.keys().filter_map(Result::ok));
    }
    Ok(keys)
}

/// Issue 19, defect 11: a pod's drops on its host-side veth are keyed by the
/// host namespace, which never goes. Rounds of pods whose host veths each see
/// drops (datagrams from the pod to a closed port of the host side: NO_SOCKET
/// in the host namespace, on that veth) must leave no entry of a departed
/// veth behind; before the fix there was one per veth, forever.
pub(super) fn departed_host_veths_release_their_drop_entries() -> TestResult {
    use std::os::unix::fs::MetadataExt as _;
    if let Some(skip) = require_root() {
        return skip;
    }
    const ROUNDS: u8 = 2;
    const PODS: u8 = 20;
    let host = u32::try_from(std::fs::metadata("/proc/self/ns/net")?.ino())?;
    let agent = AgentProcess::start(&nettune_bin()?, &["--interval", "0.2"])?;
    let pid = agent.pid();
    let baseline = drop_keys_of(pid)?.len();
    let mut departed = BTreeSet::new();
    for round in 0..ROUNDS {
        let mut pods: Vec<(Netns, HostVeth)> = Vec::new();
        for i in 0..PODS {
            let ns = Netns::new("veths")?;
            let veth = Veth::to_host(&ns, 140 + i)?;
            pods.push((ns, veth));
        }
        let ifindexes: BTreeSet<u32> = pods
            .iter()
            .map(|(_, v)| v.host_ifindex())
            .collect::<Result<_, _>>()?;
        let on_our_veths = |keys: &[DropKey], veths: &BTreeSet<u32>| {
            keys.iter()
                .filter(|k| k.netns == host && veths.contains(&k.ifindex))
                .map(|k| k.ifindex)
                .collect::<BTreeSet<u32>>()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Sent again until counted: the first datagrams wait for ARP.
            for (ns, veth) in &pods {
                let to = SocketAddr::from((veth.veth.a_addr, 9));
                ns.run(|| -> std::io::Result<()> {
                    let socket = UdpSocket::bind("0.0.0.0:0")?;
                    socket.send_to(b"gone", to)?;
                    Ok(())
                })??;
            }
            std::thread::sleep(Duration::from_millis(200));
            let seen = on_our_veths(&drop_keys_of(pid)?, &ifindexes).len();
            if seen == ifindexes.len() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "round {round}: after 30 s only {seen} of {PODS} host veths have drop entries"
            );
        }
        let held = drop_keys_of(pid)?.len();
        drop(pods);
        departed.extend(ifindexes);
        let gone_at = Instant::now();
        loop {
            let keys = drop_keys_of(pid)?;
            let left = on_our_veths(&keys, &departed);
            if left.is_empty() {
                println!(
                    "    round {round}: {held} entries with {PODS} pods, {} {:.1} s after they went (baseline {baseline})",
                    keys.len(),
                    gone_at.elapsed().as_secs_f64()
                );
                break;
            }
            ensure!(
                gone_at.elapsed() < Duration::from_secs(30),
                "round {round}: 30 s after the pods went, {} entries of departed host veths remain ({} in all, baseline {baseline})",
                left.len(),
                keys.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(agent);
    Ok(Outcome::Passed)
}

pub(super) fn tcx_links() -> usize {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| matches!(l.link_type(), Ok(aya::programs::links::LinkType::Tcx)))
        .count()
}

/// The variant of the agent's pod conversations, as `/metrics` reports it.
pub(super) fn conversations_on_tcx(agent: &AgentProcess) -> anyhow::Result<bool> {
    let metrics = agent.metrics()?;
    let attached = |variant: &str| {
        metrics.contains(&format!(
            "nettune_probe_attached{{signal=\"pod_conversations\",variant=\"{variant}\"}} 1"
        ))
    };
    match (attached("tcx"), attached("clsact")) {
        (true, _) => Ok(true),
        (false, true) => Ok(false),
        (false, false) => bail!("pod conversations attached neither TCX nor clsact"),
    }
}

/// The agent's tick as it measured it: the longest `elapsed_seconds` (time
/// between the two samples of a snapshot's rates) seen so far, at least `interval`.
pub(super) fn longest_tick(agent: &AgentProcess, seen: &mut f64) -> anyhow::Result<f64> {
    let elapsed = agent.snapshot()?["elapsed_seconds"]
        .as_f64()
        .context("snapshot without elapsed_seconds")?;
    *seen = seen.max(elapsed);
    Ok(*seen)
}

/// 50 pod-like namespaces get series, drop-map entries and tc attachments (TCX
/// links, or nettune's clsact filters before 6.6), and once they are deleted none
/// of it remains within two of the agent's ticks (plus one for a deletion landing
/// mid-tick and the test's own polling). Ticks are the agent's own, as its
/// snapshots measure them: 0.2 s here, longer when the machine is slow (software
/// emulation), so the bound is the agent's and not the machine's speed.
pub(super) fn fifty_namespaces_come_and_go_without_leftovers() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const COUNT: u8 = 50;
    const INTERVAL: f64 = 0.2;
    let agent = AgentProcess::start(&nettune_bin()?, &["--interval", "0.2"])?;
    let tcx = conversations_on_tcx(&agent)?;
    let links_before = tcx_links();
    let mut pods: Vec<(Netns, HostVeth)> = Vec::new();
    for i in 0..COUNT {
        let ns = Netns::new("churn")?;
        let veth = Veth::to_host(&ns, 10 + i)?;
        pods.push((ns, veth));
    }
    // Traffic into each pod: datagrams to a closed port are dropped (NO_SOCKET)
    // inside the pod's namespace, so every pod gets map entries and series.
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    for (_, veth) in &pods {
        for _ in 0..3 {
            socket.send_to(b"churn", SocketAddr::from((veth.veth.b_addr, 9)))?;
        }
    }
    let names: Vec<String> = pods
        .iter()
        .map(|(ns, _)| format!("pod=\"netns:{}\"", ns.name()))
        .collect();
    let inodes: BTreeSet<u32> = pods
        .iter()
        .map(|(ns, _)| ns.inode())
        .collect::<Result<_, _>>()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = agent.metrics()?;
        let seen = names.iter().filter(|n| text.contains(n.as_str())).count();
        let with_traffic = names
            .iter()
            .filter(|n| {
                text.lines().any(|l| {
                    l.starts_with("nettune_pod_receive_bytes_total") && l.contains(n.as_str())
                })
            })
            .count();
        // The datagrams wait for ARP: their drops can land after the series appear.
        let with_drops = netns_in_drop_maps()?.intersection(&inodes).count();
        if seen == names.len() && with_traffic == names.len() && with_drops == names.len() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "after 60 s only {seen} of {COUNT} pods have series ({with_traffic} with traffic, \
             {with_drops} with drop map entries)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if tcx {
        ensure!(
            tcx_links() >= links_before + 2 * usize::from(COUNT),
            "tc links were not attached"
        );
    } else {
        for (_, veth) in &pods {
            let filters = crate::conversations::our_filters(&veth.veth.a_name)?;
            ensure!(
                filters.len() == 2,
                "{}: nettune's clsact filters are {filters:?}",
                veth.veth.a_name
            );
        }
    }

    // Deleting 100 objects with `ip` takes a while: time the release from the
    // moment the last namespace is gone. (clsact filters go with their device;
    // TCX links live on while the agent holds them.)
    drop(pods);
    let gone_at = Instant::now();
    let deadline = gone_at + Duration::from_secs(30);
    let mut tick = INTERVAL;
    let mut longest_poll = Duration::ZERO;
    loop {
        let polled_at = Instant::now();
        let text = agent.metrics()?;
        let series_left = names.iter().filter(|n| text.contains(n.as_str())).count();
        let entries_left = netns_in_drop_maps()?.intersection(&inodes).count();
        let links_left = tcx_links().saturating_sub(links_before);
        if series_left == 0 && entries_left == 0 && links_left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "30 s after deletion: {series_left} series, {entries_left} map entries, {links_left} tc links remain"
            );
        }
        longest_tick(&agent, &mut tick)?;
        std::thread::sleep(Duration::from_millis(50));
        longest_poll = longest_poll.max(polled_at.elapsed());
    }
    let took = gone_at.elapsed().as_secs_f64();
    let tick = longest_tick(&agent, &mut tick)?;
    let polling = longest_poll.as_secs_f64().max(0.5);
    println!(
        "    50 namespaces released in {took:.2} s (interval {INTERVAL} s, the agent's ticks \
         up to {tick:.2} s, polls up to {:.2} s)",
        longest_poll.as_secs_f64()
    );
    // Two ticks, plus one for the deletion landing mid-tick, plus the polling
    // and scrape timing (at least 0.5 s).
    ensure!(
        took <= tick * 3.0 + polling,
        "release took {took:.2} s, more than two of the agent's {tick:.2} s ticks"
    );
    Ok(Outcome::Passed)
}
