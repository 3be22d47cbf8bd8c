use super::*;
use crate::model::{
    counter::CounterRate,
    snapshot::ConntrackFigures,
    workload::{Workload, WorkloadKind as Kind},
};

fn fig(per_second: f64) -> CounterRate {
    CounterRate {
        total: 1,
        per_second,
    }
}

fn workload(kind: Kind, pod: &str, netns: u32) -> WorkloadFigures {
    let mut w = WorkloadFigures::new(netns, Workload::new(kind, pod));
    w.process = Some("nginx".into());
    w
}

fn snapshot(workloads: Vec<WorkloadFigures>) -> Snapshot {
    let mut s = crate::model::snapshot::for_tests(workloads);
    s.conntrack_max = Some(1000);
    s
}

fn names(p: &[Proposal]) -> Vec<(&str, Option<&Target>)> {
    p.iter()
        .map(|p| (p.sysctl.name, p.target.as_ref()))
        .collect()
}

#[test]
fn listen_overflows_raise_somaxconn_and_name_the_backlog() {
    let mut node = workload(Kind::Node, "node", 1);
    node.listen_overflows = fig(12.0);
    let p = propose(&snapshot(vec![node]), &TuningConfig::default());
    assert_eq!(names(&p), [("net.core.somaxconn", Some(&Target::Node))]);
    assert!(
        p[0].evidence
            .contains("12.0 listen overflows/s in node in nginx"),
        "{}",
        p[0].evidence
    );
    assert!(p[0].evidence.contains("listen() backlog"));
}

#[test]
fn pods_are_tuned_in_their_namespace_only_when_opted_in() {
    let mut pod = workload(Kind::NamedNetns, "netns:blue", 42);
    pod.syn_queue_full_drops = fig(3.0);
    let config = TuningConfig::default();
    let p = propose(&snapshot(vec![pod.clone()]), &config);
    assert_eq!(names(&p), [("net.ipv4.tcp_max_syn_backlog", None)]);
    let mut config = TuningConfig::default();
    config.pod_netns.push("netns:blue".into());
    let p = propose(&snapshot(vec![pod]), &config);
    let target = Target::Netns {
        inode: 42,
        label: "netns:blue".into(),
    };
    assert_eq!(names(&p), [("net.ipv4.tcp_max_syn_backlog", Some(&target))]);
}

#[test]
fn a_runtime_named_pod_opts_in_by_annotation_name_or_uid() {
    let mut pod = WorkloadFigures::new(
        42,
        Workload::pod("shop", "web-1", "6f1f5c1e-7c6b-4c55-9d0a-1c5a7e0b1f2a"),
    );
    pod.syn_queue_full_drops = fig(3.0);
    let target = Target::Netns {
        inode: 42,
        label: "shop/web-1".into(),
    };
    let targets = |pod: &WorkloadFigures, config: &TuningConfig| {
        propose(&snapshot(vec![pod.clone()]), config)
            .into_iter()
            .map(|p| p.target)
            .collect::<Vec<_>>()
    };
    assert_eq!(targets(&pod, &TuningConfig::default()), [None]);
    for name in [
        "shop/web-1",
        "web-1",
        "6f1f5c1e-7c6b-4c55-9d0a-1c5a7e0b1f2a",
    ] {
        let mut config = TuningConfig::default();
        config.pod_netns.push(name.into());
        assert_eq!(targets(&pod, &config), [Some(target.clone())], "{name}");
    }
    let mut config = TuningConfig::default();
    config.pod_netns.push("other/web-1".into());
    assert_eq!(targets(&pod, &config), [None]);
    pod.workload.tune_netns = true;
    assert_eq!(
        targets(&pod, &TuningConfig::default()),
        [Some(target)],
        "the annotation opts in"
    );
}

#[test]
fn conntrack_over_threshold_or_dropping_grows_max_and_buckets() {
    let mut node = workload(Kind::Node, "node", 1);
    node.conntrack = Some(ConntrackFigures {
        entries: 850,
        ..ConntrackFigures::default()
    });
    let p = propose(&snapshot(vec![node.clone()]), &TuningConfig::default());
    assert_eq!(
        names(&p),
        [
            ("net.netfilter.nf_conntrack_max", Some(&Target::Node)),
            ("net.netfilter.nf_conntrack_buckets", Some(&Target::Node))
        ]
    );
    node.conntrack = Some(ConntrackFigures {
        entries: 10,
        drop: fig(1.0),
        ..ConntrackFigures::default()
    });
    assert_eq!(
        propose(&snapshot(vec![node.clone()]), &TuningConfig::default()).len(),
        2
    );
    node.conntrack = Some(ConntrackFigures {
        entries: 10,
        ..ConntrackFigures::default()
    });
    assert!(propose(&snapshot(vec![node]), &TuningConfig::default()).is_empty());
}

#[test]
fn port_exhaustion_reserves_nodeports_first_then_widens() {
    let mut node = workload(Kind::Node, "node", 1);
    node.connect_eaddrnotavail = fig(5.0);
    let p = propose(&snapshot(vec![node]), &TuningConfig::default());
    assert_eq!(
        names(&p).into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
        [
            "net.ipv4.ip_local_reserved_ports",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_tw_reuse"
        ]
    );
}

#[test]
fn backlog_and_receive_buffer_drops() {
    let mut node = workload(Kind::Node, "node", 1);
    node.drops_by_reason
        .insert("SOCKET_RCVBUFF".into(), fig(2.0));
    let mut snap = snapshot(vec![node]);
    snap.totals.backlog_drops_per_second = 4.0;
    let p = propose(&snap, &TuningConfig::default());
    assert_eq!(
        names(&p).into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
        [
            "net.core.rmem_max",
            "net.ipv4.tcp_rmem",
            "net.core.netdev_max_backlog"
        ]
    );
}

#[test]
fn a_quiet_node_gets_no_proposals() {
    assert!(
        propose(
            &snapshot(vec![workload(Kind::Node, "node", 1)]),
            &TuningConfig::default()
        )
        .is_empty()
    );
}
