//! The conntrack signal: with an nftables `ct state` rule in a test namespace and
//! a known number of open connections, nettune's entries figure for that namespace
//! equals `conntrack -C` there; and, where drops carry a reason (5.17+), a packet
//! dropped by netfilter arrives as an urgent event naming the namespace.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    harness::{Outcome, Test, TestResult, require_root},
    probes::require_drop_reasons,
    scenarios::Pair,
    sockets::connect_nonblocking,
};
use nettune::probes::{ProbeSource as _, drops::CONNTRACK_SIGNAL};
use nettune_common::EventKind;

use crate::drops::probes_with_drops;

pub const TESTS: &[Test] = &[
    Test {
        name: "conntrack::entries_equal_conntrack_count",
        run: entries_equal_conntrack_count,
    },
    Test {
        name: "conntrack::a_netfilter_drop_raises_an_urgent_event",
        run: a_netfilter_drop_raises_an_urgent_event,
    },
];

const CONNECTIONS: usize = 20;
const PORT: u16 = 5400;
const BLOCKED_PORT: u16 = 5409;

/// A sender/receiver pair whose receiver has an nftables `ct state` rule (which
/// makes the namespace track connections) and drops SYNs to [`BLOCKED_PORT`].
fn pair_with_conntrack_rules(subnet: u8) -> anyhow::Result<Pair> {
    let pair = Pair::new(subnet, None)?;
    let rules = std::env::temp_dir().join(format!("nettune-test-{}.nft", std::process::id()));
    std::fs::write(
        &rules,
        format!(
            "table inet nettune_test {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    ct state established,related accept
                    tcp dport {BLOCKED_PORT} drop
                    ct state new accept
                }}
            }}"
        ),
    )?;
    let loaded = pair
        .receiver
        .exec("nft", &["-f", rules.to_str().context("path")?]);
    std::fs::remove_file(&rules)?;
    loaded?;
    Ok(pair)
}

fn entries_equal_conntrack_count() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = probes_with_drops()?;
    ensure!(
        probes
            .report()
            .signal(CONNTRACK_SIGNAL)
            .and_then(|s| s.attached)
            .is_some(),
        "conntrack unavailable: {:?}",
        probes.report().signal(CONNTRACK_SIGNAL)
    );
    let pair = pair_with_conntrack_rules(7)?;
    let server = SocketAddr::from((pair.veth.b_addr, PORT));
    let listener = pair.receiver.run(|| TcpListener::bind(server))??;
    let clients = pair.sender.run(|| {
        (0..CONNECTIONS)
            .map(|_| TcpStream::connect_timeout(&server, Duration::from_secs(5)))
            .collect::<Result<Vec<_>, _>>()
    })??;
    let accepted = (0..CONNECTIONS)
        .map(|_| listener.accept().map(|(s, _)| s))
        .collect::<Result<Vec<_>, _>>()?;

    let sample = bpf_tests::probes::sample(&probes)?;
    let inode = pair.receiver.inode()?;
    let ours = sample
        .netns
        .get(&inode)
        .and_then(|n| n.conntrack)
        .map(|c| c.entries)
        .context("no conntrack figures for the test namespace")?;
    let theirs: u64 = pair.receiver.exec("conntrack", &["-C"])?.trim().parse()?;
    println!("    entries: nettune {ours}, conntrack -C {theirs} ({CONNECTIONS} connections)");
    ensure!(
        ours == theirs,
        "nettune says {ours} entries, conntrack -C says {theirs}"
    );
    ensure!(
        ours >= CONNECTIONS as u64,
        "fewer entries ({ours}) than connections"
    );
    drop((clients, accepted));
    Ok(Outcome::Passed)
}

fn a_netfilter_drop_raises_an_urgent_event() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    if let Some(skip) = require_drop_reasons()? {
        return skip;
    }
    let mut probes = probes_with_drops()?;
    let pair = pair_with_conntrack_rules(7)?;
    let inode = pair.receiver.inode()?;
    // A SYN to the blocked port is dropped by the rule: NETFILTER_DROP, urgent.
    probes.drain_events();
    let blocked = std::net::SocketAddrV4::new(pair.veth.b_addr, BLOCKED_PORT);
    let _syn = pair.sender.run(|| connect_nonblocking(blocked))??;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let event = loop {
        if let Some(e) = probes
            .drain_events()
            .into_iter()
            .find(|e| e.kind == EventKind::NetfilterDrop as u32 && e.netns == inode)
        {
            break e;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no NETFILTER_DROP event within 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    ensure!(
        event.ifindex != 0,
        "the event does not name the interface: {event:?}"
    );
    Ok(Outcome::Passed)
}
