//! The drop signal (`nettune-ebpf/src/drops.rs`): per-(netns, reason) counts equal
//! bpftrace's on the same `skb:kfree_skb` tracepoint over the same interval, for
//! known scenarios; reason names are the kernel's own (`enum skb_drop_reason` in
//! its BTF, as bpftool reads it); drops the kernel counts itself (a tc program's,
//! netem's, a packet socket's `tp_drops`) are counted under the reason the kernel
//! gives them; and interfaces that share an ifindex in different namespaces are
//! never merged.
//!
//! bpftrace counts every `kfree_skb` with no reason filter and attributes each drop
//! exactly as the program does (device's netns, else socket's, else `rx_sk`'s), so
//! the two must agree with no tolerance. Before Linux 5.17 the tracepoint has no
//! reason: every drop is reason 0 on both sides, and the scenarios expect it there.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
};

use anyhow::ensure;
use bpf_tests::{
    bpftrace::{
        Bpftrace, bpftrace_reads_kernel_structs, drops_by_netns, drops_by_netns_script,
        drops_script,
    },
    harness::{Outcome, Test, TestResult, record, require_netem, require_root},
    loss::Loss,
    netns::Netns,
    probes::{kfree_skb_has_reason, load_requiring, read},
    scenarios::Pair,
    sockets::{drain_packet_socket, packet_drops, packet_socket_that_overflows},
    traffic::bulk_transfer,
};
use nettune::{
    model::drop_reasons::NameSource,
    probes::{ProbeSource as _, Probes, drops::SIGNAL},
    sys::tracefs::{self, Tracefs},
};
use serde_json::json;
use xtask::process::tool;

pub const TESTS: &[Test] = &[
    Test {
        name: "drops::reason_names_are_the_kernels_own_btf_enum",
        run: reason_names_are_the_kernels_own_btf_enum,
    },
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
    Test {
        name: "drops::packet_socket_overruns_equal_tp_drops_and_every_kfree_skb_bpftrace_sees",
        run: packet_socket_overruns_equal_tp_drops_and_every_kfree_skb_bpftrace_sees,
    },
    Test {
        name: "drops::netem_loss_equals_the_qdiscs_drop_count_and_bpftrace",
        run: netem_loss_equals_the_qdiscs_drop_count_and_bpftrace,
    },
];

/// Drops per (netns, reason), summed over interfaces.
pub type ByReason = BTreeMap<(u32, u32), u64>;

/// nettune's drops per (netns, reason) in `namespaces` (every namespace if `None`).
fn by_reason(probes: &Probes, namespaces: Option<&[u32]>) -> anyhow::Result<ByReason> {
    let mut out = ByReason::new();
    for (key, n) in read(probes)?.drops {
        if namespaces.is_none_or(|ns| ns.contains(&key.netns)) {
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
fn wait_until_quiet(probes: &Probes, namespaces: Option<&[u32]>) -> anyhow::Result<()> {
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

/// Every drop of `counts` under namespace 0, per reason: what bpftrace counts
/// where it cannot tell namespaces apart.
fn per_reason(counts: &ByReason) -> ByReason {
    let mut out = ByReason::new();
    for ((_, reason), n) in counts {
        *out.entry((0, *reason)).or_default() += n;
    }
    out
}

/// Runs `scenario` while bpftrace counts every kfree_skb per (netns, reason) for
/// `namespaces`; asserts nettune counted the same; returns nettune's counts for
/// `namespaces`.
///
/// Where bpftrace cannot read this kernel's structs (bpftrace 0.17 does not use
/// 5.10's BTF), it cannot attribute a drop to a namespace: the comparison then
/// covers every drop on the machine, per reason (in a test VM, the test's own).
pub fn drops_equal_bpftrace(
    probes: &Probes,
    namespaces: &[&Netns],
    scenario: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<ByReason> {
    let inodes: Vec<u32> = namespaces
        .iter()
        .map(|n| n.inode())
        .collect::<Result<_, _>>()?;
    let (watched, script) = match bpftrace_reads_kernel_structs() {
        Ok(()) => (Some(inodes.as_slice()), drops_by_netns_script(&inodes)?),
        Err(why) => {
            println!("    bpftrace: {why}; comparing every drop on the machine");
            (None, drops_script()?)
        }
    };
    wait_until_quiet(probes, watched)?;
    let bpftrace = Bpftrace::start(&script)?;
    let before = by_reason(probes, watched)?;
    scenario()?;
    let seen = delta(&by_reason(probes, watched)?, &before);
    let peer: ByReason = drops_by_netns(&bpftrace.stop()?);
    let compared = if watched.is_some() {
        seen.clone()
    } else {
        per_reason(&seen)
    };
    let ours: ByReason = seen
        .into_iter()
        .filter(|((ns, _), _)| inodes.contains(ns))
        .collect();
    let names = |m: &ByReason| {
        m.iter()
            .map(|((ns, r), n)| format!("{ns}/{}={n}", probes.drop_reasons().name(*r)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "    nettune: {}\n    bpftrace: {}",
        names(&compared),
        names(&peer)
    );
    ensure!(compared == peer, "nettune and bpftrace disagree");
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

/// The value of the first of `names` this kernel has; 0 on a kernel without drop
/// reasons, where every drop reads 0 and nettune records it so.
pub(crate) fn expected_reason(probes: &Probes, names: &[&str]) -> anyhow::Result<u32> {
    if let Some(value) = names.iter().find_map(|n| probes.drop_reasons().value(n)) {
        return Ok(value);
    }
    ensure!(
        !kfree_skb_has_reason()?,
        "this kernel has none of the drop reasons {names:?}"
    );
    Ok(0)
}

/// Checks nettune's `counted` drops against `expected`, the kernel's (or the tc
/// program's) own count of the same drops: exactly where the kernel names the
/// reason; on a kernel without drop reasons (before 5.17) reason 0 also holds
/// every other drop there (a TCP segment the stack discards, …), so at least
/// `expected`, and the difference is shown.
pub(crate) fn matches_kernel_count(counted: u64, expected: u64, what: &str) -> anyhow::Result<()> {
    if kfree_skb_has_reason()? {
        ensure!(
            counted == expected,
            "{what}: nettune {counted}, expected {expected}"
        );
    } else {
        println!(
            "    no drop reasons here: {what} shares reason 0 with {} other drop(s)",
            counted.saturating_sub(expected)
        );
        ensure!(
            counted >= expected,
            "{what}: nettune {counted}, fewer than {expected}"
        );
    }
    Ok(())
}

/// Sends `count` UDP datagrams carrying `payload` from a socket in `ns` to `to`.
pub(crate) fn send_datagrams(
    ns: &Netns,
    to: SocketAddr,
    count: u64,
    payload: &[u8],
) -> anyhow::Result<()> {
    ns.run(|| -> anyhow::Result<()> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..count {
            socket.send_to(payload, to)?;
        }
        Ok(())
    })?
}

/// Drops nettune counted for `(netns, reason)` in `seen`.
fn count_of(seen: &ByReason, ns: &Netns, reason: u32) -> anyhow::Result<u64> {
    Ok(seen.get(&(ns.inode()?, reason)).copied().unwrap_or(0))
}

/// `enum <name>` from this kernel's BTF as bpftool prints it: (name, value) pairs,
/// empty when the kernel has no such enum.
fn bpftool_enum(name: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let text = tool(
        "bpftool",
        &["btf", "dump", "file", "/sys/kernel/btf/vmlinux"],
        "bpftool",
    )?;
    let header = format!("ENUM '{name}' ");
    Ok(text
        .lines()
        .skip_while(|l| !l.contains(&header))
        .skip(1)
        .map_while(|l| {
            // `\t'SKB_DROP_REASON_NO_SOCKET' val=2`
            let (quoted, value) = l.strip_prefix('\t')?.rsplit_once(" val=")?;
            Some((quoted.trim_matches('\'').to_owned(), value.parse().ok()?))
        })
        .collect())
}

fn reason_names_are_the_kernels_own_btf_enum() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = probes_with_drops()?;
    let names = probes.drop_reasons();
    let kernel = bpftool_enum("skb_drop_reason")?;
    let has_reason = kfree_skb_has_reason()?;
    println!(
        "    BTF enum skb_drop_reason: {} names; kfree_skb has a reason: {has_reason}; \
         nettune's names from {:?}",
        kernel.len(),
        names.source
    );
    if kernel.is_empty() {
        // Before 5.17: nothing to name, and every drop is counted under reason 0.
        ensure!(
            !has_reason,
            "kfree_skb has a reason but BTF has no enum skb_drop_reason"
        );
        ensure!(
            names.source == NameSource::None && names.value("NOT_SPECIFIED").is_none(),
            "nettune names reasons this kernel does not have: {names:?}"
        );
        record(
            "drop_reasons",
            json!({ "enum": null, "reason_field": false }),
        );
        return Ok(Outcome::Passed);
    }
    ensure!(has_reason, "BTF names drop reasons but kfree_skb has none");
    for (name, value) in &kernel {
        let short = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(name);
        ensure!(
            names.name(*value) == short && names.value(short) == Some(*value),
            "{name} = {value} in the kernel's BTF; nettune names {value} {} and puts {short} at {:?}",
            names.name(*value),
            names.value(short)
        );
    }
    let value_of = |n: &str| kernel.iter().find(|(k, _)| k.ends_with(n)).map(|(_, v)| *v);
    record(
        "drop_reasons",
        json!({
            "enum": kernel.len(),
            "reason_field": true,
            "SKB_CONSUMED": value_of("SKB_CONSUMED"),
            "NOT_SPECIFIED": value_of("_NOT_SPECIFIED"),
            "NO_SOCKET": value_of("_NO_SOCKET"),
            "TC_INGRESS": value_of("_TC_INGRESS"),
            "QDISC_DROP": value_of("_QDISC_DROP"),
            "PACKET_SOCK_ERROR": value_of("_PACKET_SOCK_ERROR"),
        }),
    );
    Ok(Outcome::Passed)
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
    let tc_ingress = expected_reason(&probes, &["TC_INGRESS"])?;
    let counted = count_of(&ours, &pair.receiver, tc_ingress)?;
    matches_kernel_count(counted, dropped, "TC_INGRESS drops in the receiver's netns")?;
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
        send_datagrams(&pair.sender, closed, DATAGRAMS, b"nobody listens here")?;
        // Let the last datagrams reach the receiver before counting.
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(())
    })?;
    let no_socket = expected_reason(&probes, &["NO_SOCKET"])?;
    let counted = count_of(&ours, &pair.receiver, no_socket)?;
    matches_kernel_count(
        counted,
        DATAGRAMS,
        "NO_SOCKET drops of datagrams sent to a closed port",
    )?;
    Ok(Outcome::Passed)
}

fn same_ifindex_in_two_namespaces_is_not_merged() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const IFINDEX: u32 = 4242;
    let probes = probes_with_drops()?;
    let tc_ingress = expected_reason(&probes, &["TC_INGRESS"])?;
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
    matches_kernel_count(counted_1, dropped_1, "tc drops in the first namespace")?;
    matches_kernel_count(counted_2, dropped_2, "tc drops in the second namespace")?;
    Ok(Outcome::Passed)
}

/// A packet socket on a namespace's loopback that never reads: the kernel drops
/// what it cannot queue there and counts each drop in `tp_drops`. A drop is a
/// `kfree_skb` event only where the socket held the packet's last reference: the
/// copy of a packet *leaving* lo is a clone the socket owns, freed on the spot;
/// a packet *arriving* is shared with the stack, so dropping it releases a
/// reference and frees nothing. Those frees come under `PACKET_SOCK_ERROR` where
/// the kernel names it, and as plain `NOT_SPECIFIED` on kernels like 6.1, where
/// that reason's value is 1 (the value 6.2+ gives `SKB_CONSUMED`, not a drop).
/// nettune must count them: one per leaving copy the socket did not queue, and
/// equal to bpftrace counting every `kfree_skb`.
fn packet_socket_overruns_equal_tp_drops_and_every_kfree_skb_bpftrace_sees() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const DATAGRAMS: u64 = 60;
    let probes = probes_with_drops()?;
    let ns = Netns::new("pkt")?;
    let (receiver, packets) = ns.run(|| -> anyhow::Result<_> {
        let receiver = UdpSocket::bind("127.0.0.1:0")?;
        receiver.set_nonblocking(true)?;
        Ok((receiver, packet_socket_that_overflows(1)?))
    })??;
    let to = receiver.local_addr()?;
    let ours = drops_equal_bpftrace(&probes, &[&ns], || {
        send_datagrams(
            &ns,
            to,
            DATAGRAMS,
            b"seen twice on lo: leaving and arriving",
        )?;
        // Read every datagram: left queued, they would be freed as drops later.
        let mut buf = [0u8; 64];
        let mut received = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while received < DATAGRAMS && std::time::Instant::now() < deadline {
            match receiver.recv(&mut buf) {
                Ok(_) => received += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        }
        ensure!(received == DATAGRAMS, "received {received} of {DATAGRAMS}");
        Ok(())
    })?;
    let tp_drops = u64::from(packet_drops(&packets)?);
    let (queued_leaving, queued_arriving) = drain_packet_socket(&packets)?;
    let reason = expected_reason(&probes, &["PACKET_SOCK_ERROR", "NOT_SPECIFIED"])?;
    let name = probes.drop_reasons().name(reason);
    let counted = count_of(&ours, &ns, reason)?;
    let freed = DATAGRAMS - queued_leaving;
    println!(
        "    tp_drops {tp_drops}, queued {queued_leaving} leaving + {queued_arriving} arriving \
         of {DATAGRAMS} each; nettune {counted} under {name} ({reason})"
    );
    ensure!(
        tp_drops == 2 * DATAGRAMS - queued_leaving - queued_arriving,
        "tp_drops {tp_drops} is not the {} copies the socket did not queue",
        2 * DATAGRAMS - queued_leaving - queued_arriving
    );
    matches_kernel_count(counted, freed, &format!("{name} ({reason}) frees"))?;
    record(
        "packet_socket_drops",
        json!({ "reason": name, "value": reason, "counted": counted, "tp_drops": tp_drops }),
    );
    drop((packets, receiver));
    Ok(Outcome::Passed)
}

/// netem loses 5 % of a transfer on its way into the receiver: the qdisc's own
/// drop count equals nettune's drops in the sender's namespace (where the qdisc
/// is) under the reason the kernel gives qdisc drops, and everything equals
/// bpftrace's count.
fn netem_loss_equals_the_qdiscs_drop_count_and_bpftrace() -> TestResult {
    if let Some(skip) = require_root().or_else(require_netem) {
        return skip;
    }
    let probes = probes_with_drops()?;
    let pair = Pair::new(9, None)?;
    let mut dropped = 0;
    let ours = drops_equal_bpftrace(&probes, &[&pair.sender, &pair.receiver], || {
        dropped = pair.netem_transfer(4 << 20, 5.0)?;
        Ok(())
    })?;
    let reason = expected_reason(&probes, &["QDISC_DROP", "NOT_SPECIFIED"])?;
    let name = probes.drop_reasons().name(reason);
    let counted = count_of(&ours, &pair.sender, reason)?;
    println!("    netem dropped {dropped}; nettune {counted} under {name} ({reason})");
    matches_kernel_count(
        counted,
        dropped,
        &format!("{name} drops by netem in the sender's namespace"),
    )?;
    record(
        "netem_drops",
        json!({ "reason": name, "value": reason, "counted": counted, "netem_dropped": dropped }),
    );
    Ok(Outcome::Passed)
}
