use super::*;
use crate::model::{
    counter::CounterRate,
    sample::{Attribution, NetnsSysctls},
    snapshot::WorkloadFigures,
    snapshot::{ConntrackFigures, Listener},
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

/// A listener of namespace `netns` on `port` that asked for `requested` and
/// got `limit`, with `queue` waiting.
fn listener(netns: u32, port: u16, requested: Option<u32>, limit: u32, queue: u32) -> Listener {
    Listener {
        netns,
        address: std::net::Ipv4Addr::UNSPECIFIED.into(),
        port,
        inode: 1000 + u32::from(port),
        process: Some("server".into()),
        requested_backlog: requested,
        capped_by_somaxconn: None,
        limit,
        queue,
        overflows: fig(if queue >= limit { 30.0 } else { 0.0 }),
        attribution: Attribution::AtLimit,
    }
}

/// A node overflowing 12/s with somaxconn `somaxconn` and `listeners`.
fn overflowing_node(somaxconn: u32, listeners: Vec<Listener>) -> Snapshot {
    let mut node = workload(Kind::Node, "node", 1);
    node.listen_overflows = fig(12.0);
    node.netns_sysctls = Some(NetnsSysctls {
        somaxconn: Some(somaxconn),
        max_syn_backlog: Some(512),
        syncookies: Some(0),
        ephemeral_ports: None,
        tw_reuse: None,
    });
    let mut s = snapshot(vec![node]);
    s.listeners = listeners;
    s
}

#[test]
fn a_listener_that_asked_for_less_than_somaxconn_gets_advice_not_a_raise() {
    let s = overflowing_node(4096, vec![listener(1, 8080, Some(8), 8, 9)]);
    let p = propose(&s, &TuningConfig::default());
    assert_eq!(names(&p), [("net.core.somaxconn", Some(&Target::Node))]);
    let Plan::Futile(advice) = &p[0].plan else {
        panic!("expected advice, got {:?}", p[0].plan)
    };
    assert!(
        advice.contains("port 8080 (server) asked listen() for 8 and got 8")
            && advice.contains("somaxconn is already 4096")
            && advice.contains("backlog to 4096"),
        "{advice}"
    );
}

#[test]
fn a_listener_capped_by_somaxconn_gets_a_raise_and_is_waited_for() {
    let s = overflowing_node(
        128,
        vec![
            listener(1, 8080, Some(65535), 128, 129),
            listener(1, 9090, Some(50), 50, 3),
        ],
    );
    let p = propose(&s, &TuningConfig::default());
    assert_eq!(p[0].plan, Plan::Raise);
    assert!(
        p[0].evidence.contains(
            "port 8080 (server) asked listen() for 65535 but somaxconn 128 caps it at 128"
        ) && p[0]
            .evidence
            .contains("until the application listens again"),
        "{}",
        p[0].evidence
    );
    let waiting: Vec<u16> = p[0].waiting.iter().map(|w| w.port).collect();
    assert_eq!(waiting, [8080], "only the capped listener is waited for");
    assert_eq!(p[0].waiting[0].limit, 128);
}

#[test]
fn a_listener_from_before_nettune_is_judged_by_its_limit() {
    // At somaxconn: it may have asked for more.
    let s = overflowing_node(128, vec![listener(1, 80, None, 128, 129)]);
    assert_eq!(propose(&s, &TuningConfig::default())[0].plan, Plan::Raise);
    // Below somaxconn: its own backlog is the cap.
    let s = overflowing_node(4096, vec![listener(1, 80, None, 511, 512)]);
    let p = propose(&s, &TuningConfig::default());
    let Plan::Futile(advice) = &p[0].plan else {
        panic!("{:?}", p[0].plan)
    };
    assert!(
        advice.contains("limit of 511") && advice.contains("unknown"),
        "{advice}"
    );
}

#[test]
fn overflows_with_no_listener_at_its_limit_hold_the_raise() {
    let s = overflowing_node(4096, vec![listener(1, 80, Some(511), 511, 2)]);
    let p = propose(&s, &TuningConfig::default());
    assert!(
        matches!(&p[0].plan, Plan::Hold(r) if r.contains("no listener")),
        "{:?}",
        p[0].plan
    );
    let mut unseen = overflowing_node(4096, Vec::new());
    unseen.workloads[0].netns_sysctls = None;
    let p = propose(&unseen, &TuningConfig::default());
    assert!(matches!(&p[0].plan, Plan::Hold(r) if r.contains("not been looked at")));
}

#[test]
fn syn_queue_drops_advise_syncookies_instead_of_raising_tcp_max_syn_backlog() {
    let mut s = overflowing_node(4096, vec![listener(1, 80, Some(16), 16, 0)]);
    s.workloads[0].listen_overflows = fig(0.0);
    s.workloads[0].syn_queue_full_drops = fig(3.0);
    let p = propose(&s, &TuningConfig::default());
    assert_eq!(
        names(&p),
        [("net.ipv4.tcp_max_syn_backlog", Some(&Target::Node))]
    );
    let Plan::Futile(advice) = &p[0].plan else {
        panic!("{:?}", p[0].plan)
    };
    assert!(
        advice.contains("tcp_syncookies is 0") && advice.contains("port 80 (server) limit 16"),
        "{advice}"
    );
}

#[test]
fn pods_are_tuned_in_their_namespace_only_when_opted_in() {
    let mut pod = workload(Kind::NamedNetns, "netns:blue", 42);
    pod.connect_eaddrnotavail = fig(3.0);
    let config = TuningConfig::default();
    let p = propose(&snapshot(vec![pod.clone()]), &config);
    assert_eq!(
        names(&p),
        [
            ("net.ipv4.ip_local_reserved_ports", None),
            ("net.ipv4.ip_local_port_range", None),
            ("net.ipv4.tcp_tw_reuse", None)
        ]
    );
    let mut config = TuningConfig::default();
    config.pod_netns.push("netns:blue".into());
    let p = propose(&snapshot(vec![pod]), &config);
    let target = Target::Netns {
        inode: 42,
        label: "netns:blue".into(),
    };
    assert_eq!(
        names(&p),
        [
            ("net.ipv4.ip_local_reserved_ports", Some(&target)),
            ("net.ipv4.ip_local_port_range", Some(&target)),
            ("net.ipv4.tcp_tw_reuse", Some(&target))
        ]
    );
}

#[test]
fn each_rule_names_its_evidence_and_the_namespace_it_comes_from() {
    let mut pod = workload(Kind::NamedNetns, "netns:blue", 42);
    pod.connect_eaddrnotavail = CounterRate {
        total: 77,
        per_second: 3.0,
    };
    pod.conntrack = Some(ConntrackFigures {
        entries: 900,
        ..ConntrackFigures::default()
    });
    let s = snapshot(vec![workload(Kind::Node, "node", 1), pod]);
    let config = TuningConfig::default();
    let e = (rules::PORT_EXHAUSTION.evidence)(42, &s, &config).unwrap();
    assert_eq!((e.total, e.per_second, e.pressure), (77, 3.0, false));
    let e = (rules::CONNTRACK_FULL.evidence)(42, &s, &config).unwrap();
    assert!(e.pressure, "900 of 1000 is over the 80 % threshold");
    assert!(
        (rules::LISTEN_OVERFLOWS.evidence)(7, &s, &config).is_none(),
        "no such namespace"
    );
    let p = propose(&s, &config);
    assert!(p.iter().all(|p| p.netns == 42), "{p:?}");
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

#[test]
fn a_listener_seen_capped_by_somaxconn_when_it_listened_gets_a_raise() {
    let mut l = listener(1, 80, None, 4096, 4097);
    l.capped_by_somaxconn = Some(4096);
    let s = overflowing_node(4096, vec![l]);
    let p = propose(&s, &TuningConfig::default());
    assert_eq!(p[0].plan, Plan::Raise);
    assert!(
        p[0].evidence
            .contains("asked listen() for more than the 4096 somaxconn allowed"),
        "{}",
        p[0].evidence
    );
}
