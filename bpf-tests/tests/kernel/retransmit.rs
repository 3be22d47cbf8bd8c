//! The retransmit signal (`nettune-ebpf/src/retransmit.rs`) against the kernel's
//! own `RetransSegs` counter and against bpftrace, for each variant of its chain,
//! under loss from the test-only tc program and, where the kernel has it, from
//! the kernel's netem qdisc.
//!
//! Setup: two fresh namespaces joined by a veth pair, 5 % of TCP packets lost on
//! their way into the receiver, and an 8 MiB transfer. Only the sender retransmits
//! data, and its namespace carries no other traffic, so the per-netns count must
//! match that namespace's counters.
//!
//! Tolerance against `RetransSegs`: none while every retransmit succeeds.
//! `RetransSegs` is incremented before the skb is handed to the device; a transmit
//! that then fails is reported by the tracepoint with `err != 0` (Linux 6.12+) and
//! counted as `failed`, without segments, so each failure may account for up to one
//! skb's segments (≤ 64 with GSO) of difference. Against bpftrace on the same
//! tracepoint: none at all, every event counts once on both sides.

use std::collections::BTreeMap;

use anyhow::ensure;
use bpf_tests::{
    bpftrace::{Bpftrace, bpftrace_reads_kernel_structs},
    harness::{Feature, Outcome, Test, TestResult, record, require_netem, require_root},
    probes::{load, load_requiring, read, require_variant},
    scenarios::{Pair, check_retransmitted_segments},
};
use nettune::{
    model::probes::Variant,
    probes::{ProbeSource as _, Probes, retransmit::SIGNAL},
};
use nettune_common::RetransmitCounters;
use serde_json::json;

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
    Test {
        name: "retransmit::under_netem_loss_segments_equal_retranssegs_and_events_equal_bpftrace",
        run: under_netem_loss_segments_equal_retranssegs_and_events_equal_bpftrace,
    },
];

const ALL_VARIANTS: [Variant; 2] = [Variant::TpBtf, Variant::Tracepoint];
const TRANSFER_BYTES: usize = 8 << 20;
const LOSS_PER_10K: u32 = 500;

/// Where the loss comes from.
#[derive(Clone, Copy)]
enum Loss {
    /// The test-only tc program on the receiver's ingress.
    TcProgram,
    /// The kernel's netem qdisc on the way into the receiver.
    Netem,
}

/// What one lossy transfer left in nettune's map and the kernel's counters.
struct Measured {
    /// Packets the loss dropped, by its own count.
    dropped: u64,
    /// nettune's counters for the sender's namespace, for the transfer only.
    map: RetransmitCounters,
    /// The sender namespace's `RetransSegs` delta.
    retrans_segs: u64,
    /// bpftrace's `tcp:tcp_retransmit_skb` events and nettune's over the same
    /// scope: the sender's namespace, or the whole machine where bpftrace cannot
    /// read this kernel's structs to tell namespaces apart.
    events: Option<(i64, u64)>,
}

/// Retransmit events (successful and failed) nettune counted per namespace.
fn events_by_netns(probes: &Probes) -> anyhow::Result<BTreeMap<u32, u64>> {
    Ok(read(probes)?
        .retransmits
        .into_iter()
        .map(|(ns, c)| (ns, c.retransmits + c.failed))
        .collect())
}

/// Runs one 8 MiB transfer with 5 % loss between two fresh namespaces, with
/// bpftrace counting retransmit events if `bpftrace`.
fn measure(probes: &Probes, loss: Loss, bpftrace: bool) -> anyhow::Result<Measured> {
    let net = Pair::new(1, None)?;
    let inode = net.sender.inode()?;
    let whole_machine = bpftrace_reads_kernel_structs().err();
    let peer = bpftrace
        .then(|| {
            Bpftrace::start(&match &whole_machine {
                None => format!(
                    "tracepoint:tcp:tcp_retransmit_skb \
                     /((struct sock *)args->skaddr)->__sk_common.skc_net.net->ns.inum == {inode}/ \
                     {{ @events = count(); }}"
                ),
                Some(why) => {
                    println!("    bpftrace: {why}; comparing every retransmit on the machine");
                    "tracepoint:tcp:tcp_retransmit_skb { @events = count(); }".to_owned()
                }
            })
        })
        .transpose()?;
    let before = read(probes)?.retransmits.get(&inode).copied();
    let events_before = events_by_netns(probes)?;
    let mib_before = net.sender.mib("snmp", "Tcp", "RetransSegs")?;
    let dropped = match loss {
        Loss::TcProgram => net.lossy_transfer(TRANSFER_BYTES, LOSS_PER_10K)?,
        Loss::Netem => net.netem_transfer(TRANSFER_BYTES, f64::from(LOSS_PER_10K) / 100.0)?,
    };
    let map = read(probes)?
        .retransmits
        .get(&inode)
        .copied()
        .unwrap_or_default()
        .saturating_sub(before.unwrap_or_default());
    let ours: u64 = events_by_netns(probes)?
        .into_iter()
        .filter(|(ns, _)| whole_machine.is_some() || *ns == inode)
        .map(|(ns, n)| n - events_before.get(&ns).copied().unwrap_or(0))
        .sum();
    let retrans_segs = u64::try_from(net.sender.mib("snmp", "Tcp", "RetransSegs")? - mib_before)?;
    let events = match peer {
        Some(peer) => Some((peer.stop()?.get("@events").copied().unwrap_or(0), ours)),
        None => None,
    };
    Ok(Measured {
        dropped,
        map,
        retrans_segs,
        events,
    })
}

impl Measured {
    /// nettune's segments equal `RetransSegs`, within the failed-attempt tolerance.
    fn segments_equal_retranssegs(&self) -> anyhow::Result<()> {
        let (map, mib) = (&self.map, self.retrans_segs);
        println!(
            "    {} packets dropped; map: {} retransmits, {} segments, {} failed; \
             RetransSegs: {mib}",
            self.dropped, map.retransmits, map.segments, map.failed
        );
        ensure!(
            map.segments > 0,
            "no retransmits counted despite {} drops",
            self.dropped
        );
        check_retransmitted_segments(map.segments, map.failed, mib)
    }

    /// nettune's events (successful and failed) equal bpftrace's, exactly.
    fn events_equal_bpftrace(&self) -> anyhow::Result<()> {
        let (peer, ours) = self.events.unwrap_or_default();
        println!("    nettune: {ours} events; bpftrace: {peer}");
        ensure!(ours > 0, "no retransmits");
        ensure!(
            i64::try_from(ours)? == peer,
            "nettune counted {ours} tracepoint events, bpftrace {peer}"
        );
        Ok(())
    }
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
    println!("    {variant}:");
    measure(&probes, Loss::TcProgram, false)?.segments_equal_retranssegs()?;
    Ok(Outcome::Passed)
}

fn count_equals_bpftrace() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = load_requiring(SIGNAL)?;
    measure(&probes, Loss::TcProgram, true)?.events_equal_bpftrace()?;
    Ok(Outcome::Passed)
}

fn under_netem_loss_segments_equal_retranssegs_and_events_equal_bpftrace() -> TestResult {
    if let Some(skip) = require_root().or_else(require_netem) {
        return skip;
    }
    let probes = load_requiring(SIGNAL)?;
    let variant = probes.report().signal(SIGNAL).and_then(|s| s.attached);
    let measured = measure(&probes, Loss::Netem, true)?;
    measured.segments_equal_retranssegs()?;
    measured.events_equal_bpftrace()?;
    record(
        "retransmit_under_netem",
        json!({
            "variant": variant.map(Variant::name),
            "netem_dropped": measured.dropped,
            "segments": measured.map.segments,
            "retrans_segs": measured.retrans_segs,
            "events": measured.events.map(|e| e.1),
            "bpftrace_events": measured.events.map(|e| e.0),
        }),
    );
    Ok(Outcome::Passed)
}
