//! The retransmit signal (`nettune-ebpf/src/retransmit.rs`) against the kernel's
//! own `RetransSegs` counter and against bpftrace, for each variant of its chain.
//!
//! Setup: two fresh namespaces joined by a veth pair, the test-only loss program
//! dropping 5 % of TCP packets on the receiver's ingress, and an 8 MiB transfer.
//! Only the sender retransmits data, and its namespace carries no other traffic, so
//! the per-netns count must match that namespace's counters.
//!
//! Tolerance against `RetransSegs`: none while every retransmit succeeds.
//! `RetransSegs` is incremented before the skb is handed to the device; a transmit
//! that then fails is reported by the tracepoint with `err != 0` (Linux 6.12+) and
//! counted as `failed`, without segments, so each failure may account for up to one
//! skb's segments (≤ 64 with GSO) of difference. Against bpftrace on the same
//! tracepoint: none at all, every event counts once on both sides.

use anyhow::ensure;
use bpf_tests::{
    bpftrace::Bpftrace,
    harness::{Feature, Outcome, Test, TestResult, require_root},
    netns::Netns,
    probes::{load, load_requiring, read, require_variant},
    scenarios::{Pair, check_retransmitted_segments},
};
use nettune::{
    model::probes::Variant,
    probes::{Probes, retransmit::SIGNAL},
};
use nettune_common::RetransmitCounters;

pub const TESTS: &[Test] = &[
    Test {
        name: "retransmit::tp_btf_count_equals_retranssegs",
        run: || count_equals_retranssegs(Variant::TpBtf, Feature::TpBtf),
    },
    Test {
        name: "retransmit::tracepoint_count_equals_retranssegs",
        run: || count_equals_retranssegs(Variant::Tracepoint, Feature::Tracepoint),
    },
    Test {
        name: "retransmit::count_equals_bpftrace_on_the_same_tracepoint",
        run: count_equals_bpftrace,
    },
];

const ALL_VARIANTS: [Variant; 2] = [Variant::TpBtf, Variant::Tracepoint];
const TRANSFER_BYTES: usize = 8 << 20;
const LOSS_PER_10K: u32 = 500;

fn map_counters(probes: &Probes, netns: &Netns) -> anyhow::Result<RetransmitCounters> {
    Ok(read(probes)?
        .retransmits
        .get(&netns.inode()?)
        .copied()
        .unwrap_or_default())
}

fn count_equals_retranssegs(variant: Variant, feature: Feature) -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let others: Vec<Variant> = ALL_VARIANTS.into_iter().filter(|v| *v != variant).collect();
    let probes = load(&others)?;
    if let Some(skip) = require_variant(&probes, SIGNAL, variant, feature) {
        return skip;
    }
    let net = Pair::new(1, None)?;
    let map_before = map_counters(&probes, &net.sender)?;
    let mib_before = net.sender.mib("snmp", "Tcp", "RetransSegs")?;
    let dropped = net.lossy_transfer(TRANSFER_BYTES, LOSS_PER_10K)?;
    let map = map_counters(&probes, &net.sender)?.saturating_sub(map_before);
    let mib = u64::try_from(net.sender.mib("snmp", "Tcp", "RetransSegs")? - mib_before)?;

    println!(
        "    {variant}: {dropped} packets dropped; map: {} retransmits, {} segments, \
         {} failed; RetransSegs: {mib}",
        map.retransmits, map.segments, map.failed
    );
    ensure!(
        map.segments > 0,
        "no retransmits counted despite {dropped} drops"
    );
    check_retransmitted_segments(map.segments, map.failed, mib)?;
    Ok(Outcome::Passed)
}

fn count_equals_bpftrace() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = load_requiring(SIGNAL)?;
    let net = Pair::new(1, None)?;
    let inode = net.sender.inode()?;
    let bpftrace = Bpftrace::start(&format!(
        "tracepoint:tcp:tcp_retransmit_skb \
         /((struct sock *)args->skaddr)->__sk_common.skc_net.net->ns.inum == {inode}/ \
         {{ @events = count(); }}"
    ))?;
    let before = map_counters(&probes, &net.sender)?;
    net.lossy_transfer(TRANSFER_BYTES, LOSS_PER_10K)?;
    let map = map_counters(&probes, &net.sender)?.saturating_sub(before);
    let peer = bpftrace.stop()?;
    let peer_events = peer.get("@events").copied().unwrap_or(0);
    let ours = map.retransmits + map.failed;
    println!(
        "    nettune: {ours} events ({} ok, {} failed); bpftrace: {peer_events}",
        map.retransmits, map.failed
    );
    ensure!(ours > 0, "no retransmits");
    ensure!(
        i64::try_from(ours)? == peer_events,
        "nettune counted {ours} tracepoint events in the sender's netns, bpftrace {peer_events}"
    );
    Ok(Outcome::Passed)
}
