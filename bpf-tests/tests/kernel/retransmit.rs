//! The retransmit signal (`nettune-ebpf/src/retransmit.rs`) against the kernel's
//! own `RetransSegs` counter, for each variant of its chain.
//!
//! Setup: two fresh namespaces joined by a veth pair, the test-only loss program
//! dropping 3 % of TCP packets on the receiver's ingress, and an 8 MiB transfer.
//! Only the sender retransmits data, and its namespace carries no other traffic, so
//! the per-netns count must match that namespace's `RetransSegs` delta.
//!
//! Tolerance: none while every retransmit succeeds. `RetransSegs` is incremented
//! before the skb is handed to the device; a transmit that then fails is reported
//! by the tracepoint with `err != 0` (Linux 6.12+) and counted as `failed`, without
//! segments, so each failure may account for up to one skb's segments (≤ 64 with
//! GSO) of difference.

use std::{net::SocketAddr, path::Path};

use anyhow::ensure;
use bpf_tests::{
    harness::{Feature, Outcome, Test, TestResult, require, require_root},
    loss::Loss,
    netns::{Netns, Veth},
    traffic::bulk_transfer,
};
use nettune::{
    probes::{LoadOptions, Probes, Variant, retransmit::SIGNAL},
    procfs::Mib,
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
];

const ALL_VARIANTS: [Variant; 2] = [Variant::TpBtf, Variant::Tracepoint];
const TRANSFER_BYTES: usize = 8 << 20;
const LOSS_PER_10K: u32 = 300;
/// Most segments one skb can carry with GSO on a veth (see the module doc).
const MAX_SEGMENTS_PER_SKB: u64 = 64;

fn retrans_segs(netns: &Netns) -> anyhow::Result<i64> {
    let mib = netns.run(|| Mib::read(Path::new("/proc/thread-self/net/snmp")))??;
    Ok(mib.get("Tcp", "RetransSegs")?)
}

fn map_counters(probes: &Probes, netns: &Netns) -> anyhow::Result<RetransmitCounters> {
    Ok(probes
        .retransmits()?
        .get(&netns.inode()?)
        .copied()
        .unwrap_or_default())
}

fn count_equals_retranssegs(variant: Variant, feature: Feature) -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let options = LoadOptions {
        disabled: ALL_VARIANTS.into_iter().filter(|v| *v != variant).collect(),
    };
    let probes = Probes::load(&options)?;
    let status = probes
        .report()
        .signals
        .iter()
        .find(|s| s.signal == SIGNAL)
        .ok_or_else(|| anyhow::anyhow!("no {SIGNAL} in the probe report"))?;
    if status.attached != Some(variant) {
        let why = status
            .skipped
            .iter()
            .find(|s| s.variant == variant)
            .map_or("not attempted", |s| s.reason.as_str());
        if let Some(skip) = require(feature, false, why) {
            return skip;
        }
    }

    let sender = Netns::new("snd")?;
    let receiver = Netns::new("rcv")?;
    let veth = Veth::connect(&sender, &receiver, 1, None)?;
    let loss = Loss::attach(&receiver, &veth.b_name, LOSS_PER_10K)?;

    let map_before = map_counters(&probes, &sender)?;
    let mib_before = retrans_segs(&sender)?;
    let addr = SocketAddr::from((veth.b_addr, 5201));
    let received = bulk_transfer(&sender, &receiver, addr, TRANSFER_BYTES)?;
    let map = map_counters(&probes, &sender)?.saturating_sub(map_before);
    let mib = u64::try_from(retrans_segs(&sender)? - mib_before)?;
    let (seen, dropped) = loss.stats()?;

    println!(
        "    {variant}: {dropped}/{seen} packets dropped; map: {} retransmits, {} segments, \
         {} failed; RetransSegs: {mib}",
        map.retransmits, map.segments, map.failed
    );
    ensure!(
        received == TRANSFER_BYTES,
        "received {received} of {TRANSFER_BYTES} bytes"
    );
    ensure!(dropped > 0, "the loss program dropped nothing");
    ensure!(
        map.segments > 0,
        "no retransmits counted despite {dropped} drops"
    );
    let tolerance = map.failed * MAX_SEGMENTS_PER_SKB;
    ensure!(
        map.segments <= mib && mib <= map.segments + tolerance,
        "map counted {} segments, RetransSegs rose by {mib} (tolerance {tolerance})",
        map.segments
    );
    Ok(Outcome::Passed)
}
