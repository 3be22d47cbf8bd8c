//! ICMP fragmentation-needed against the pod's own ICMP counter.

use super::*;

pub(super) fn frag_needed_equals_the_pods_icmp_counter_with_the_paths_mtu() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = match load_conversations() {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let pods = Pods::new(2, "mtu")?;
    let (server, client) = (&pods.pods[0], &pods.pods[1]);
    // The hop into the server's pod is narrower than the client's own link.
    bpf_tests::netns::ip(&["link", "set", "dev", server.host_iface(), "mtu", "1300"])?;
    let mut collector = watching(probes, &Config::default(), &[server, client])?;
    let before = conversations_of(&mut collector, client)?;
    let icmp_before = client.ns.mib("snmp", "Icmp", "InDestUnreachs")?;
    let target = SocketAddr::from((server.addr(), 5800));
    send_df_datagrams(&client.ns, target, 1400, 5)?;
    std::thread::sleep(Duration::from_millis(100));
    let after = conversations_of(&mut collector, client)?;
    let theirs = u64::try_from(client.ns.mib("snmp", "Icmp", "InDestUnreachs")? - icmp_before)?;
    let count = |f: &ConversationFigures| f.icmp.received.get("frag_needed").map_or(0, |c| c.total);
    let ours = count(&after) - count(&before);
    println!(
        "    frag needed: nettune {ours} (smallest MTU {:?}), the client's IcmpInDestUnreachs {theirs}",
        after.icmp.smallest_mtu
    );
    ensure!(
        theirs > 0,
        "no ICMP reached the client: the test proves nothing"
    );
    ensure!(
        ours == theirs,
        "frag needed: nettune {ours}, IcmpInDestUnreachs {theirs}"
    );
    ensure!(
        after.icmp.smallest_mtu == Some(1300),
        "the MTU reported: {:?}, the path's 1300",
        after.icmp.smallest_mtu
    );
    // `diagnose` (and the agent's rules) name the pod and the MTU.
    let snapshot = collector.tick()?.snapshot;
    let findings = nettune::diagnose::findings(&snapshot, &Config::default().tuning);
    let finding = findings
        .iter()
        .find(|f| f.id == "path_mtu" && f.evidence.contains(&client.label()))
        .with_context(|| format!("no path_mtu finding for {}: {findings:?}", client.label()))?;
    println!("    finding: {}", finding.evidence);
    ensure!(
        finding.evidence.contains("smallest MTU reported: 1300") && finding.fix.contains("1300"),
        "the finding does not name the MTU: {finding:?}"
    );
    Ok(Outcome::Passed)
}

// ---- attaching and detaching ------------------------------------------------
