//! Per-namespace budgets in the shared maps: a namespace past its budget of
//! drop keys has its new keys folded into one per reason, and its drops still
//! add up to what the kernel itself counted.

use std::net::SocketAddr;

use anyhow::ensure;
use bpf_tests::{
    harness::{Outcome, Test, TestResult, require_root},
    scenarios::Pair,
};
use nettune::probes::{LoadOptions, NamespaceBudgets, ProbeSource as _, Probes};
use nettune_common::budget::FOLDED_IFINDEX;

use crate::drops::{expected_reason, matches_kernel_count, send_datagrams};

pub const TESTS: &[Test] = &[Test {
    name: "budget::a_namespace_past_its_drop_key_budget_is_folded_and_still_adds_up",
    run: a_namespace_past_its_drop_key_budget_is_folded_and_still_adds_up,
}];

const DATAGRAMS: u64 = 40;

/// With a budget of one drop key a namespace, a test namespace drops datagrams
/// to a closed port on two interfaces (its veth and its loopback): one key is
/// its own, the other is folded (`FOLDED_IFINDEX`), and its `NO_SOCKET` drops
/// over both equal the namespace's own `Udp NoPorts`.
fn a_namespace_past_its_drop_key_budget_is_folded_and_still_adds_up() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = Probes::load(&LoadOptions {
        budgets: NamespaceBudgets {
            drops: 1,
            listen: 1,
        },
        ..LoadOptions::default()
    })?;
    let no_socket = expected_reason(&probes, &["NO_SOCKET"])?;
    let pair = Pair::new(19, None)?;
    let inode = pair.receiver.inode()?;
    let keys = |probes: &Probes| -> anyhow::Result<Vec<(u32, u32, u64)>> {
        Ok(probes
            .read()?
            .drops
            .into_iter()
            .filter(|(k, _)| k.netns == inode)
            .map(|(k, n)| (k.ifindex, k.reason, n))
            .collect())
    };
    let no_socket_drops = |keys: &[(u32, u32, u64)]| -> u64 {
        keys.iter()
            .filter(|(_, reason, _)| *reason == no_socket)
            .map(|(.., n)| n)
            .sum()
    };
    let before = no_socket_drops(&keys(&probes)?);
    let no_ports_before = pair.receiver.mib("snmp", "Udp", "NoPorts")?;
    // Through its veth, from the sender; and on its own loopback.
    send_datagrams(
        &pair.sender,
        SocketAddr::from((pair.veth.b_addr, 9)),
        DATAGRAMS,
        b"closed",
    )?;
    send_datagrams(
        &pair.receiver,
        SocketAddr::from(([127, 0, 0, 1], 9)),
        DATAGRAMS,
        b"closed",
    )?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let after = keys(&probes)?;
    let no_ports = u64::try_from(pair.receiver.mib("snmp", "Udp", "NoPorts")? - no_ports_before)?;
    let own: Vec<u32> = after
        .iter()
        .map(|(ifindex, ..)| *ifindex)
        .filter(|i| *i != FOLDED_IFINDEX)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let folded = after.iter().any(|(i, ..)| *i == FOLDED_IFINDEX);
    let counted = no_socket_drops(&after) - before;
    println!(
        "    receiver's keys (ifindex, reason, drops): {after:?}; own interfaces {own:?}, \
         folded {folded}; NO_SOCKET {counted}, Udp NoPorts {no_ports}"
    );
    ensure!(
        own.len() == 1,
        "the namespace holds keys of {} interfaces with a budget of one: {after:?}",
        own.len()
    );
    ensure!(folded, "nothing was folded: {after:?}");
    ensure!(
        no_ports == 2 * DATAGRAMS,
        "the kernel counted {no_ports} datagrams to no port, {} sent",
        2 * DATAGRAMS
    );
    matches_kernel_count(
        counted,
        no_ports,
        "NO_SOCKET drops over own and folded keys",
    )?;
    Ok(Outcome::Passed)
}
