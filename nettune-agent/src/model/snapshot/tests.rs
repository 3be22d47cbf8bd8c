use super::*;
use crate::model::sample::{InterfaceSample, ListenCounters, NetnsSample};
use crate::model::{drop_reasons::DropReasons, sample::Sample};
use nettune_common::RetransmitCounters;

fn reasons() -> DropReasons {
    DropReasons::from_enum(&[
        ("SKB_DROP_REASON_NO_SOCKET".into(), 3),
        ("SKB_DROP_REASON_CPU_BACKLOG".into(), 71),
    ])
}

fn sample(segments: u64, no_socket: u64, backlog: u64, overflows: u64) -> Sample {
    let mut s = Sample::default();
    let host = NetnsSample {
        workload: Some(Workload::node()),
        process: Some("init".into()),
        retransmits: RetransmitCounters {
            retransmits: segments / 2,
            segments,
            failed: 0,
        },
        drops: [((2, 3), no_socket), ((0, 71), backlog)]
            .into_iter()
            .collect(),
        listen: Some(ListenCounters {
            overflows,
            drops: overflows,
            syn_queue_full: 0,
        }),
        ..NetnsSample::default()
    };
    s.netns.insert(1, host);
    // A namespace nettune saw in the kernel but that is gone from the node.
    s.netns.insert(
        99,
        NetnsSample {
            drops: [((5, 3), 1)].into_iter().collect(),
            ..NetnsSample::default()
        },
    );
    s
}

fn ctx<'a>(report: &'a Report, reasons: &'a DropReasons) -> Context<'a> {
    Context {
        taken_at_unix_seconds: 0.0,
        node: "node-a",
        kernel: "6.18",
        mode: Mode::Observe,
        uptime_seconds: 10.0,
        collection_seconds: 0.001,
        report,
        reasons,
        identity_sources: &[],
    }
}

#[test]
fn rates_are_deltas_over_elapsed_time() {
    let (report, reasons) = (Report::default(), reasons());
    let before = sample(100, 10, 0, 5);
    let now = sample(160, 40, 8, 9);
    let snap = Snapshot::build(&now, Some(&before), 2.0, &ctx(&report, &reasons));
    let node = snap
        .workloads
        .iter()
        .find(|w| w.workload.pod == "node")
        .unwrap();
    assert_eq!(
        node.retransmit_segments,
        CounterRate {
            total: 160,
            per_second: 30.0
        }
    );
    assert_eq!(
        node.drops_by_reason["NO_SOCKET"],
        CounterRate {
            total: 40,
            per_second: 15.0
        }
    );
    assert_eq!(node.drops.per_second, 19.0);
    assert_eq!(node.listen_overflows.per_second, 2.0);
    assert_eq!(node.top_drop_reason().unwrap().0, "NO_SOCKET");
    assert_eq!(snap.totals.backlog_drops_per_second, 4.0);
    assert_eq!(snap.version, SNAPSHOT_VERSION);
    let gone = snap.workload(99).unwrap();
    assert_eq!(gone.workload.pod, "netns:99");
}

#[test]
fn no_previous_sample_means_no_rates_and_counters_going_back_read_as_zero() {
    let (report, reasons) = (Report::default(), reasons());
    let first = Snapshot::build(&sample(5, 5, 5, 5), None, 1.0, &ctx(&report, &reasons));
    assert!(first.workloads.iter().all(|w| w.drops.per_second == 0.0));
    let before = sample(u64::MAX, 100, 0, 100);
    let now = sample(3, 1, 0, 0);
    let snap = Snapshot::build(&now, Some(&before), 1.0, &ctx(&report, &reasons));
    let node = snap
        .workloads
        .iter()
        .find(|w| w.workload.pod == "node")
        .unwrap();
    assert_eq!(node.retransmit_segments.per_second, 0.0);
    assert_eq!(node.listen_overflows.per_second, 0.0);
}

#[test]
fn a_pods_interface_is_its_veth_seen_from_the_other_side() {
    let (report, reasons) = (Report::default(), reasons());
    let with_traffic = |bytes| {
        let mut s = sample(0, 0, 0, 0);
        s.interfaces.insert(
            7,
            InterfaceSample {
                name: "veth7".into(),
                counters: crate::model::sample::LinkCounters {
                    tx_bytes: bytes,
                    rx_bytes: 1,
                    tx_dropped: 4,
                    ..Default::default()
                },
                peer_netns: Some(99),
                ..InterfaceSample::default()
            },
        );
        s
    };
    let snap = Snapshot::build(
        &with_traffic(3000),
        Some(&with_traffic(1000)),
        2.0,
        &ctx(&report, &reasons),
    );
    let iface = snap.workload(99).unwrap().interface.clone().unwrap();
    assert_eq!(iface.name, "veth7");
    assert_eq!(iface.rx_bytes.per_second, 1000.0, "host egress = pod rx");
    assert_eq!(iface.tx_bytes.total, 1);
    assert_eq!(
        iface.rx_drops.total, 4,
        "host tx drops = drops towards the pod"
    );
    assert!(snap.workload(1).unwrap().interface.is_none());
    assert!(
        snap.workload(99).unwrap().conversations.is_none(),
        "no tc programs on it (yet)"
    );
}

#[test]
fn serializes_to_versioned_json() {
    let (report, reasons) = (Report::default(), reasons());
    let snap = Snapshot::build(&sample(1, 1, 1, 1), None, 1.0, &ctx(&report, &reasons));
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["version"], 1);
    // The node first, then the others by kind and name.
    assert_eq!(json["workloads"][0]["kind"], "node");
    assert_eq!(json["workloads"][1]["pod"], "netns:99");
    let back: Snapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back, snap);
}

#[test]
fn fold_keeps_the_node_and_the_first_pods_and_counts_the_rest() {
    let (report, reasons) = (Report::default(), reasons());
    let mut s = sample(1, 1, 1, 1);
    for i in 0..5 {
        s.netns.insert(
            10 + i,
            NetnsSample {
                workload: Some(Workload::new(WorkloadKind::Pod, format!("pod-{i}"))),
                ..NetnsSample::default()
            },
        );
    }
    let mut snap = Snapshot::build(&s, None, 1.0, &ctx(&report, &reasons));
    let total = snap.workloads.len();
    snap.fold(2);
    let folded: Vec<&str> = snap
        .workloads
        .iter()
        .filter(|w| w.folded)
        .map(|w| w.workload.pod.as_str())
        .collect();
    assert!(
        ["pod-2", "pod-3", "pod-4"]
            .iter()
            .all(|p| folded.contains(p)),
        "{folded:?}"
    );
    let capped = snap.clone().without_folded();
    let names: Vec<&str> = capped
        .workloads
        .iter()
        .map(|w| w.workload.pod.as_str())
        .collect();
    assert_eq!(names, ["node", "pod-0", "pod-1"]);
    assert_eq!(capped.workloads_folded, total - 3);
    assert_eq!(capped.totals, snap.totals, "totals still count everything");
}
