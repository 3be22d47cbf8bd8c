//! The conntrack signal: with an nftables `ct state` rule in a test namespace and
//! a known number of open connections, nettune's entries figure for that namespace
//! equals `conntrack -C` there; and, where drops carry a reason (5.17+), a packet
//! a full conntrack table refused arrives as an urgent event naming the namespace
//! and its interface, while one a firewall rule dropped (it had an entry) is
//! counted and raises none.

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
    sysctl_guard::Restore,
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
        name: "conntrack::a_full_table_raises_an_urgent_event_a_firewall_drop_does_not",
        run: a_full_table_raises_an_urgent_event_a_firewall_drop_does_not,
    },
    Test {
        name: "conntrack::a_quiet_namespace_sends_no_event_until_its_quiet_ends",
        run: a_quiet_namespace_sends_no_event_until_its_quiet_ends,
    },
];

const CONNECTIONS: usize = 20;
const PORT: u16 = 5400;
const BLOCKED_PORT: u16 = 5409;
const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
/// `nf_conntrack_max` while the table is made to fill up.
const FULL_TABLE: usize = 4;

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

/// Urgent netfilter-drop events of namespace `inode` taken from the ring within
/// `wait`.
fn events_of(
    probes: &mut nettune::probes::Probes,
    inode: u32,
    wait: Duration,
) -> Vec<nettune_common::Event> {
    let deadline = std::time::Instant::now() + wait;
    let mut out = Vec::new();
    while std::time::Instant::now() < deadline && out.is_empty() {
        out.extend(
            probes
                .drain_events()
                .into_iter()
                .filter(|e| e.kind == EventKind::NetfilterDrop as u32 && e.netns == inode),
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

/// NETFILTER_DROP drops the probes counted in namespace `inode`.
fn netfilter_drops(probes: &nettune::probes::Probes, inode: u32) -> anyhow::Result<u64> {
    let reason = probes
        .drop_reasons()
        .value("NETFILTER_DROP")
        .context("no NETFILTER_DROP reason")?;
    Ok(probes
        .read()?
        .drops
        .iter()
        .filter(|(k, _)| k.netns == inode && k.reason == reason)
        .map(|(_, n)| n)
        .sum())
}

/// A table too small for the connections the pair's sender opens: the packets
/// it cannot track are refused before they get an entry (and their SYNs, sent
/// again, keep being refused while this lives).
struct FullTable {
    _restore: Restore,
    _listener: TcpListener,
    _clients: Vec<std::os::fd::OwnedFd>,
}

impl FullTable {
    fn open(pair: &Pair) -> anyhow::Result<Self> {
        let restore = Restore::set(CONNTRACK_MAX, &FULL_TABLE.to_string())?;
        let server = std::net::SocketAddrV4::new(pair.veth.b_addr, PORT);
        let listener = pair.receiver.run(|| TcpListener::bind(server))??;
        let clients = pair.sender.run(|| {
            (0..FULL_TABLE * 3)
                .map(|_| connect_nonblocking(server))
                .collect::<anyhow::Result<Vec<_>>>()
        })??;
        Ok(Self {
            _restore: restore,
            _listener: listener,
            _clients: clients,
        })
    }
}

fn a_full_table_raises_an_urgent_event_a_firewall_drop_does_not() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    if let Some(skip) = require_drop_reasons()? {
        return skip;
    }
    let mut probes = probes_with_drops()?;
    let pair = pair_with_conntrack_rules(7)?;
    let inode = pair.receiver.inode()?;
    let netfilter_drops = |probes: &nettune::probes::Probes| netfilter_drops(probes, inode);
    probes.drain_events();
    // A SYN to the blocked port: tracked (the namespace has a ct rule), then
    // dropped by the rule. Counted, and not urgent.
    let before = netfilter_drops(&probes)?;
    let blocked = std::net::SocketAddrV4::new(pair.veth.b_addr, BLOCKED_PORT);
    let _syn = pair.sender.run(|| connect_nonblocking(blocked))??;
    let firewall = events_of(&mut probes, inode, Duration::from_secs(1));
    let dropped = netfilter_drops(&probes)? - before;
    println!(
        "    firewall: {dropped} NETFILTER_DROP counted, {} events",
        firewall.len()
    );
    ensure!(dropped >= 1, "the firewall's drop was not counted");
    ensure!(
        firewall.is_empty(),
        "a firewall drop of a tracked packet raised an event: {firewall:?}"
    );
    // A table too small for the connections: the packets it cannot track are
    // refused before they get an entry. Urgent.
    let _full = FullTable::open(&pair)?;
    let full = events_of(&mut probes, inode, Duration::from_secs(5));
    let event = full
        .first()
        .context("no urgent event from a full table within 5 s")?;
    println!("    full table: event {event:?}");
    ensure!(
        event.ifindex != 0,
        "the event does not name the interface: {event:?}"
    );
    Ok(Outcome::Passed)
}

/// The agent makes a namespace quiet after its events woke a collection in vain:
/// the kernel then sends none from it, even from a full table, and counts them
/// as not sent; once the quiet ends, the next refused packet is an event again.
fn a_quiet_namespace_sends_no_event_until_its_quiet_ends() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    if let Some(skip) = require_drop_reasons()? {
        return skip;
    }
    let mut probes = probes_with_drops()?;
    let pair = pair_with_conntrack_rules(8)?;
    let inode = pair.receiver.inode()?;
    probes.drain_events();
    probes.quiet_namespaces(&[inode]);
    let (drops_before, unsent_before) = (
        netfilter_drops(&probes, inode)?,
        probes.read()?.lost_events.not_armed,
    );
    let full = FullTable::open(&pair)?;
    let quiet = events_of(&mut probes, inode, Duration::from_secs(3));
    let dropped = netfilter_drops(&probes, inode)? - drops_before;
    let unsent = probes.read()?.lost_events.not_armed - unsent_before;
    println!(
        "    quiet: {dropped} NETFILTER_DROP counted, {unsent} not sent, {} events",
        quiet.len()
    );
    ensure!(dropped >= 1, "the full table refused nothing");
    ensure!(quiet.is_empty(), "a quiet namespace sent events: {quiet:?}");
    ensure!(
        unsent >= 1,
        "the refused packets of a quiet namespace were not counted as not sent"
    );
    probes.quiet_namespaces(&[]);
    drop(full);
    let _full = FullTable::open(&pair)?;
    let heard = events_of(&mut probes, inode, Duration::from_secs(5));
    println!("    quiet ended: {} events", heard.len());
    ensure!(
        !heard.is_empty(),
        "no event within 5 s after the namespace's quiet ended"
    );
    Ok(Outcome::Passed)
}
