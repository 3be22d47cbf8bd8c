//! The drop signal (`nettune-ebpf/src/drops.rs`): per-(netns, reason) counts equal
//! bpftrace's on the same `skb:kfree_skb` tracepoint over the same interval, for
//! known scenarios; reason names are the kernel's; and interfaces that share an
//! ifindex in different namespaces are never merged.
//!
//! bpftrace attributes each drop exactly as the program does (device's netns, else
//! socket's, else `rx_sk`'s), so the two must agree with no tolerance.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
};

use anyhow::ensure;
use bpf_tests::{
    bpftrace::{Bpftrace, drops_by_netns, drops_by_netns_script},
    harness::{Outcome, Test, TestResult, require_root},
    loss::Loss,
    netns::Netns,
    probes::{load_requiring, read},
    scenarios::Pair,
    traffic::bulk_transfer,
};
use nettune::{
    probes::{ProbeSource as _, Probes, drops::SIGNAL},
    sys::tracefs::{self, Tracefs},
};

pub const TESTS: &[Test] = &[
    Test {
        name: "drops::tc_ingress_equals_the_tc_program_and_bpftrace",
        run: tc_ingress_equals_the_tc_program_and_bpftrace,
    },
    Test {
        name: "drops::no_socket_from_a_closed_port_equals_bpftrace",
        run: no_socket_from_a_closed_port_equals_bpftrace,
    },
    Test {
        name: "drops::same_ifindex_in_two_namespaces_is_not_merged",
        run: same_ifindex_in_two_namespaces_is_not_merged,
    },
];

/// Drops per (netns, reason), summed over interfaces.
pub type ByReason = BTreeMap<(u32, u32), u64>;

fn by_reason(probes: &Probes, namespaces: &[u32]) -> anyhow::Result<ByReason> {
    let mut out = ByReason::new();
    for (key, n) in read(probes)?.drops {
        if namespaces.contains(&key.netns) {
            *out.entry((key.netns, key.reason)).or_default() += n;
        }
    }
    Ok(out)
}

fn delta(after: &ByReason, before: &ByReason) -> ByReason {
    after
        .iter()
        .map(|(k, v)| (*k, v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Loads the probes and fails (this signal is required on every kernel nettune
/// supports) unless the drop signal attached.
pub fn probes_with_drops() -> anyhow::Result<Probes> {
    load_requiring(SIGNAL)
}

/// Waits (at most 5 s) until `namespaces` saw no drop for half a second: a new
/// veth's first packets (IPv6 neighbour discovery, …) are dropped as it comes up,
/// and one landing between bpftrace's start and nettune's first read would count
/// for one side only.
fn wait_until_quiet(probes: &Probes, namespaces: &[u32]) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut last = by_reason(probes, namespaces)?;
    let mut quiet_since = std::time::Instant::now();
    while quiet_since.elapsed() < std::time::Duration::from_millis(500)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = by_reason(probes, namespaces)?;
        if now != last {
            quiet_since = std::time::Instant::now();
            last = now;
        }
    }
    Ok(())
}

/// Runs `scenario` while bpftrace counts kfree_skb per (netns, reason) for
/// `namespaces`; asserts nettune counted the same; returns nettune's counts.
pub fn drops_equal_bpftrace(
    probes: &Probes,
    namespaces: &[&Netns],
    scenario: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<ByReason> {
    let inodes: Vec<u32> = namespaces
        .iter()
        .map(|n| n.inode())
        .collect::<Result<_, _>>()?;
    wait_until_quiet(probes, &inodes)?;
    let bpftrace = Bpftrace::start(&drops_by_netns_script(&inodes))?;
    let before = by_reason(probes, &inodes)?;
    scenario()?;
    let ours = delta(&by_reason(probes, &inodes)?, &before);
    let peer: ByReason = drops_by_netns(&bpftrace.stop()?);
    let names = |m: &ByReason| {
        m.iter()
            .map(|((ns, r), n)| format!("{ns}/{}={n}", probes.drop_reasons().name(*r)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "    nettune: {}\n    bpftrace: {}",
        names(&ours),
        names(&peer)
    );
    ensure!(ours == peer, "nettune and bpftrace disagree");
    check_names_match_the_kernel(probes, &ours)?;
    Ok(ours)
}

/// The names nettune gives the reasons it saw are the kernel's own, as the
/// kfree_skb tracepoint format prints them.
fn check_names_match_the_kernel(probes: &Probes, seen: &ByReason) -> anyhow::Result<()> {
    let Some(tracefs) = Tracefs::find() else {
        return Ok(());
    };
    let kernel = tracefs::parse_print_symbolic(&tracefs.format_text("skb", "kfree_skb")?)
        .unwrap_or_default();
    for (_, reason) in seen.keys() {
        if let Some(name) = kernel.get(reason) {
            ensure!(
                &probes.drop_reasons().name(*reason) == name,
                "reason {reason}: nettune says {}, the kernel {name}",
                probes.drop_reasons().name(*reason)
            );
        }
    }
    Ok(())
}

fn reason(probes: &Probes, name: &str) -> anyhow::Result<u32> {
    probes
        .drop_reasons()
        .value(name)
        .ok_or_else(|| anyhow::anyhow!("this kernel has no drop reason {name}"))
}

fn tc_ingress_equals_the_tc_program_and_bpftrace() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = probes_with_drops()?;
    let pair = Pair::new(2, None)?;
    let mut dropped = 0;
    let ours = drops_equal_bpftrace(&probes, &[&pair.sender, &pair.receiver], || {
        dropped = pair.lossy_transfer(4 << 20, 1000)?;
        Ok(())
    })?;
    let tc_ingress = reason(&probes, "TC_INGRESS")?;
    let counted = ours
        .get(&(pair.receiver.inode()?, tc_ingress))
        .copied()
        .unwrap_or(0);
    ensure!(
        counted == dropped,
        "TC_INGRESS in the receiver's netns: nettune {counted}, the tc program dropped {dropped}"
    );
    Ok(Outcome::Passed)
}

fn no_socket_from_a_closed_port_equals_bpftrace() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const DATAGRAMS: u64 = 50;
    let probes = probes_with_drops()?;
    let pair = Pair::new(3, None)?;
    let closed = SocketAddr::from((pair.veth.b_addr, 9));
    let ours = drops_equal_bpftrace(&probes, &[&pair.sender, &pair.receiver], || {
        pair.sender.run(|| -> anyhow::Result<()> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            for _ in 0..DATAGRAMS {
                socket.send_to(b"nobody listens here", closed)?;
            }
            Ok(())
        })??;
        // Let the last datagrams reach the receiver before counting.
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(())
    })?;
    let no_socket = reason(&probes, "NO_SOCKET")?;
    let counted = ours
        .get(&(pair.receiver.inode()?, no_socket))
        .copied()
        .unwrap_or(0);
    ensure!(
        counted == DATAGRAMS,
        "NO_SOCKET in the receiver's netns: {counted}, sent {DATAGRAMS} datagrams to a closed port"
    );
    Ok(Outcome::Passed)
}

fn same_ifindex_in_two_namespaces_is_not_merged() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const IFINDEX: u32 = 4242;
    let probes = probes_with_drops()?;
    let tc_ingress = reason(&probes, "TC_INGRESS")?;
    let first = Pair::new(4, Some(IFINDEX))?;
    let second = Pair::new(5, Some(IFINDEX))?;
    let count = |ns: &Netns| -> anyhow::Result<u64> {
        let inode = ns.inode()?;
        Ok(read(&probes)?
            .drops
            .iter()
            .filter(|(k, _)| k.netns == inode && k.ifindex == IFINDEX && k.reason == tc_ingress)
            .map(|(_, n)| n)
            .sum())
    };
    let (before_1, before_2) = (count(&first.receiver)?, count(&second.receiver)?);
    // Different loss rates make the two counts differ, so a merge would show.
    let loss_1 = Loss::attach(&first.receiver, &first.veth.b_name, 1000)?;
    let loss_2 = Loss::attach(&second.receiver, &second.veth.b_name, 2000)?;
    for (pair, subnet) in [(&first, 4u8), (&second, 5u8)] {
        let addr = SocketAddr::from(([10, 203, subnet, 2], 5201));
        bulk_transfer(&pair.sender, &pair.receiver, addr, 4 << 20)?;
    }
    let (dropped_1, dropped_2) = (loss_1.stats()?.1, loss_2.stats()?.1);
    let (counted_1, counted_2) = (
        count(&first.receiver)? - before_1,
        count(&second.receiver)? - before_2,
    );
    println!(
        "    ifindex {IFINDEX}: netns 1 dropped {dropped_1} counted {counted_1}; netns 2 dropped {dropped_2} counted {counted_2}"
    );
    ensure!(
        dropped_1 > 0 && dropped_2 > 0,
        "a loss program dropped nothing"
    );
    ensure!(
        counted_1 == dropped_1,
        "first namespace: counted {counted_1}, dropped {dropped_1}"
    );
    ensure!(
        counted_2 == dropped_2,
        "second namespace: counted {counted_2}, dropped {dropped_2}"
    );
    Ok(Outcome::Passed)
}
