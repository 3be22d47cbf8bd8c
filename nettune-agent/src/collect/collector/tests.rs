//! The collector against a fake node: namespaces appear and go, a veth's peer
//! lives in another namespace than the one its ifindex suggests, a procfs file
//! vanishes between discovery and read.

use nettune_common::{Conversations, DropKey, RetransmitCounters};

use super::*;
use crate::{
    collect::cri::RuntimeBoard,
    model::{
        drop_reasons::DropReasons,
        workload::{IdentitySource, WorkloadKind},
    },
    probes::fake::FakeProbes,
    sys::fake::FakeSystem,
};

const SNMP: &str = "Tcp: RetransSegs OutSegs\nTcp: 7 700\n";
const NETSTAT: &str = "TcpExt: ListenOverflows ListenDrops TCPReqQFullDrop\nTcpExt: 3 4 1\n";

fn veth(ifindex: u32, name: &str, peer_netnsid: Option<i32>) -> Link {
    Link {
        ifindex,
        name: name.into(),
        kind: Some("veth".into()),
        peer_ifindex: Some(2),
        peer_netnsid,
        mtu: Some(1500),
    }
}

/// A node with the host (inode 1) and a pod namespace `pod` (inode 10, id 5)
/// joined to the host by `veth10` (ifindex 7).
fn node() -> FakeSystem {
    let system = FakeSystem::new();
    system.add_namespace(1, None, true);
    system.add_namespace(10, Some("pod"), false);
    system.set_netns_id(10, Some(5));
    for inode in [1, 10] {
        system.set_net_file(inode, "snmp", Some(SNMP));
        system.set_net_file(inode, "netstat", Some(NETSTAT));
    }
    system.set_host_links(vec![veth(7, "veth10", Some(5))]);
    // What the host side sends is what the pod receives.
    system.set_link_stats(
        7,
        crate::model::sample::LinkCounters {
            tx_bytes: 1000,
            ..Default::default()
        },
    );
    system.set_proc(sample::CONNTRACK_MAX, "262144\n");
    system
}

fn probes() -> FakeProbes {
    let mut p = FakeProbes {
        reasons: DropReasons::from_enum(&[("SKB_DROP_REASON_TC_INGRESS".into(), 73)]),
        ..FakeProbes::default()
    };
    p.readings.retransmits.insert(
        10,
        RetransmitCounters {
            retransmits: 2,
            segments: 5,
            failed: 0,
        },
    );
    p.readings.conversations.insert(
        7,
        (
            "veth10".into(),
            Conversations {
                connect_attempts: 4,
                connects_answered: 3,
                ..Conversations::default()
            },
        ),
    );
    p
}

fn collector(system: FakeSystem) -> Collector<FakeProbes, FakeSystem> {
    Collector::new(probes(), system, &Config::default())
}

#[test]
fn a_tick_joins_maps_procfs_and_interfaces_per_namespace() {
    let mut c = collector(node());
    let tick = c.tick().unwrap();
    assert_eq!(tick.interfaces.added, [(7, "veth10".to_owned())]);
    let s = &tick.snapshot;
    assert_eq!(s.conntrack_max, Some(262_144));
    let pod = s.workload(10).unwrap();
    assert_eq!(
        (pod.workload.kind, pod.workload.pod.as_str()),
        (WorkloadKind::NamedNetns, "netns:pod")
    );
    assert_eq!(pod.retransmit_segments.total, 5);
    assert_eq!(pod.out_segments.total, 700);
    assert_eq!(pod.listen_overflows.total, 3);
    assert_eq!(pod.interface.as_ref().unwrap().rx_bytes.total, 1000);
    assert!(s.workload(1).unwrap().interface.is_none());
}

#[test]
fn namespaces_that_go_are_forgotten_and_new_ones_appear() {
    let mut c = collector(node());
    c.tick().unwrap();
    c.system().add_namespace(11, Some("late"), false);
    c.system().remove_namespace(10);
    c.system().set_host_links(Vec::new());
    let tick = c.tick().unwrap();
    assert_eq!(tick.interfaces.removed, [(7, "veth10".to_owned())]);
    assert_eq!(c.probes.alive_sets.last().unwrap(), &[1, 11].into());
    assert!(
        tick.snapshot.workload(10).is_none(),
        "departed pod still shown"
    );
    assert_eq!(
        tick.snapshot.workload(11).unwrap().workload.pod,
        "netns:late"
    );
}

/// Issue 19, defect 11: drops on a pod's host-side veth are keyed by the host
/// namespace, which never goes; they must go with the veth.
#[test]
fn drops_of_a_departed_host_interface_are_released_with_it() {
    let key = |netns, ifindex| DropKey {
        netns,
        ifindex,
        reason: 73,
        _pad: 0,
    };
    let mut probes = probes();
    // The host's veth10, the host without a device, a host veth gone before
    // any listing, the pod's own interface.
    for k in [key(1, 7), key(1, 0), key(1, 8), key(10, 2)] {
        probes.readings.drops.insert(k, 4);
    }
    let mut c = Collector::new(probes, node(), &Config::default());
    let tick = c.tick().unwrap();
    assert_eq!(tick.forgotten_entries, 1, "the never-listed veth's entry");
    assert!(c.probes.readings.drops.contains_key(&key(1, 7)));
    // veth10 goes; the pod's namespace is still there.
    c.system().set_host_links(Vec::new());
    let tick = c.tick().unwrap();
    assert_eq!(tick.forgotten_entries, 1);
    let left: Vec<&DropKey> = c.probes.readings.drops.keys().collect();
    assert_eq!(left, [&key(1, 0), &key(10, 2)]);
    assert_eq!(
        c.probes.listed_interfaces.last(),
        Some(&(1, BTreeSet::new()))
    );
}

#[test]
fn links_and_namespaces_are_listed_again_only_when_something_says_so() {
    let mut c = collector(node());
    c.tick().unwrap();
    let listed = |c: &Collector<FakeProbes, FakeSystem>| c.system().listings();
    assert_eq!(listed(&c), 1);
    c.tick().unwrap();
    assert_eq!(listed(&c), 1, "nothing changed: the last listing serves");
    // A veth comes or goes.
    c.system().set_host_links(Vec::new());
    c.tick().unwrap();
    assert_eq!(listed(&c), 2);
    // A namespace with no veth on the host shows up in the maps first: its
    // entries survive until the next tick lists it.
    c.system().add_namespace(30, Some("quiet"), false);
    c.probes.readings.retransmits.insert(
        30,
        RetransmitCounters {
            retransmits: 1,
            segments: 1,
            failed: 0,
        },
    );
    c.tick().unwrap();
    assert_eq!(listed(&c), 2);
    assert!(
        c.probes.readings.retransmits.contains_key(&30),
        "forgotten before listed"
    );
    let tick = c.tick().unwrap();
    assert_eq!(listed(&c), 3);
    assert_eq!(tick.snapshot.workload(30).unwrap().retransmits.total, 1);
    // Nothing at all: listed again after TOPOLOGY_REFRESH_TICKS anyway.
    for _ in 0..TOPOLOGY_REFRESH_TICKS {
        c.tick().unwrap();
    }
    assert_eq!(listed(&c), 4);
}

#[test]
fn a_veth_is_joined_to_the_namespace_its_peer_id_names_not_its_ifindex() {
    let system = node();
    // A second pod, id 6; the host-side veth 7 names id 6, not the first pod's 5.
    system.add_namespace(20, Some("other"), false);
    system.set_netns_id(20, Some(6));
    system.set_host_links(vec![
        veth(7, "veth20", Some(6)),
        // Both ends in the host namespace: no pod behind it.
        veth(8, "vethlocal", None),
    ]);
    let mut c = collector(system);
    c.probes
        .readings
        .conversations
        .insert(8, ("vethlocal".into(), Conversations::default()));
    let tick = c.tick().unwrap();
    let s = &tick.snapshot;
    assert!(s.workload(10).unwrap().interface.is_none());
    assert_eq!(
        s.workload(20).unwrap().interface.as_ref().unwrap().name,
        "veth20"
    );
    assert!(
        s.workloads
            .iter()
            .all(|w| w.interface.as_ref().is_none_or(|i| i.name != "vethlocal"))
    );
}

#[test]
fn a_namespace_id_assigned_later_is_picked_up_when_its_veth_appears() {
    let system = node();
    system.set_netns_id(10, None);
    system.set_host_links(Vec::new());
    let mut c = collector(system);
    c.tick().unwrap();
    // The CNI creates the veth: the kernel gives the pod's namespace an id.
    c.system().set_netns_id(10, Some(5));
    c.system().set_host_links(vec![veth(7, "veth10", Some(5))]);
    let tick = c.tick().unwrap();
    assert!(tick.snapshot.workload(10).unwrap().interface.is_some());
}

#[test]
fn a_file_that_vanishes_mid_read_leaves_only_its_part_empty() {
    let mut c = collector(node());
    c.tick().unwrap();
    c.system().set_net_file(10, "snmp", None);
    let tick = c.tick().unwrap();
    let pod = tick.snapshot.workload(10).unwrap();
    assert_eq!(pod.out_segments.total, 0);
    assert_eq!(pod.listen_overflows.total, 3, "netstat was still read");
}

#[test]
fn a_failed_interface_listing_detaches_nothing() {
    let system = node();
    system.fail_host_links("netlink down");
    let mut probes = probes();
    probes.watched.insert(7, "veth10".into());
    let mut c = Collector::new(probes, system, &Config::default());
    let tick = c.tick().unwrap();
    assert!(tick.interfaces.removed.is_empty());
    assert!(c.probes.watched.contains_key(&7));
}

#[test]
fn rates_come_from_two_ticks_and_tc_drops_from_the_host_namespace() {
    let mut c = collector(node());
    c.tick().unwrap();
    c.probes.readings.drops.insert(
        DropKey {
            netns: 1,
            ifindex: 7,
            reason: 73,
            _pad: 0,
        },
        4,
    );
    let tick = c.tick().unwrap();
    let iface = tick
        .snapshot
        .workload(10)
        .unwrap()
        .interface
        .clone()
        .unwrap();
    assert_eq!(iface.tc_drops.total, 4);
    assert!(iface.tc_drops.per_second > 0.0);
}

fn runtime_pod(name: &str, netns: u32, annotations: &[(&str, &str)]) -> PodRecord {
    PodRecord {
        id: format!("sandbox-{name}"),
        namespace: "shop".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        annotations: annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        netns: Some(netns),
        ..PodRecord::default()
    }
}

fn runtime(pods: Vec<PodRecord>, up: bool) -> RuntimePods {
    RuntimePods {
        pods,
        source: Some(IdentitySource {
            source: "cri".into(),
            up,
            detail: "/run/containerd/containerd.sock".into(),
            outages: 0,
        }),
    }
}

#[test]
fn runtime_pods_are_named_and_ignored_ones_leave_no_trace() {
    let system = node();
    // A second pod namespace (inode 20, id 6) behind veth 8.
    system.add_namespace(20, None, false);
    system.set_netns_id(20, Some(6));
    system.set_net_file(20, "snmp", Some(SNMP));
    system.set_host_links(vec![veth(7, "veth10", Some(5)), veth(8, "veth20", Some(6))]);
    let board = RuntimeBoard::new();
    board.publish(runtime(
        vec![
            runtime_pod("web-1", 10, &[]),
            runtime_pod("noisy", 20, &[("nettune.io/ignore", "true")]),
        ],
        true,
    ));
    let mut c = collector(system).with_runtime(board);
    c.probes.readings.retransmits.insert(
        20,
        RetransmitCounters {
            retransmits: 9,
            segments: 9,
            failed: 0,
        },
    );
    let tick = c.tick().unwrap();
    let s = &tick.snapshot;
    let web = s.workload(10).unwrap();
    assert_eq!(web.workload, Workload::pod("shop", "web-1", "uid-web-1"));
    assert_eq!(web.interface.as_ref().unwrap().name, "veth10");
    assert!(s.workload(20).is_none(), "the ignored pod has figures");
    assert_eq!(tick.interfaces.added, [(7, "veth10".to_owned())]);
    assert!(
        !c.probes.watched.contains_key(&8),
        "the ignored pod's veth is watched"
    );
    assert_eq!(s.identity_sources.len(), 1);
    assert!(s.identity_sources[0].up);
}

#[test]
fn an_unnamed_namespace_asks_the_runtime_for_an_early_poll_once_while_it_answers() {
    let (board, requests) = RuntimeBoard::with_requests();
    board.publish(runtime(Vec::new(), true));
    let mut c = collector(node()).with_runtime(board.clone());
    c.tick().unwrap();
    assert_eq!(requests.try_iter().count(), 1, "namespace 10 is not named");
    c.tick().unwrap();
    assert_eq!(requests.try_iter().count(), 0, "asked once per namespace");
    // A new pod: its namespace and its veth.
    c.system().add_namespace(11, Some("late"), false);
    c.system()
        .set_host_links(vec![veth(7, "veth10", Some(5)), veth(8, "veth11", None)]);
    board.publish(runtime(Vec::new(), false));
    c.tick().unwrap();
    assert_eq!(
        requests.try_iter().count(),
        0,
        "a runtime that is down is not asked"
    );
    board.publish(runtime(vec![runtime_pod("late", 11, &[])], true));
    let tick = c.tick().unwrap();
    assert_eq!(
        requests.try_iter().count(),
        0,
        "every new namespace is named"
    );
    assert_eq!(tick.snapshot.workload(11).unwrap().workload.pod, "late");
}

#[test]
fn without_the_runtime_pods_keep_their_other_names_and_no_source_is_reported() {
    let mut c = collector(node());
    let tick = c.tick().unwrap();
    assert_eq!(
        tick.snapshot.workload(10).unwrap().workload.pod,
        "netns:pod"
    );
    assert!(tick.snapshot.identity_sources.is_empty());
}

#[test]
fn names_processes_choose_reach_the_labels_with_control_characters_escaped() {
    // A /run/netns name and a comm are any root process's and any process's
    // choice: one with a terminal escape and a newline must not reach `top`'s
    // screen or a log line as they are.
    let mut c = collector(node());
    c.system()
        .add_namespace(12, Some("\u{1b}[2Jpwn\nnettune: ok"), false);
    let s = c.tick().unwrap().snapshot;
    let label = &s.workload(12).unwrap().workload.pod;
    assert!(
        !label.chars().any(char::is_control),
        "a control character reached the label: {label:?}"
    );
    assert_eq!(label, "netns:\\u{1b}[2Jpwn\\nnettune: ok");
}

#[test]
fn a_namespace_whose_sockets_hold_half_its_ports_has_connects_watched_until_it_is_calm() {
    let system = node();
    let ten_ports = crate::sys::ListenerScan {
        sockets: Vec::new(),
        sysctls: crate::model::sample::NetnsSysctls {
            ephemeral_ports: Some((40000, 40009)),
            ..Default::default()
        },
    };
    system.set_listeners(10, ten_ports);
    let sockstat = |in_use: u32, tw: u32| {
        format!("TCP: inuse {in_use} orphan 0 tw {tw} alloc {in_use} mem 1\n")
    };
    system.set_net_file(10, "sockstat", Some(&sockstat(1, 2)));
    let mut c = collector(system);
    for _ in 0..5 {
        c.tick().unwrap();
    }
    assert!(!c.probes.connects_watched, "3 of 10 ports held");
    c.system()
        .set_net_file(10, "sockstat", Some(&sockstat(2, 3)));
    // Read and looked at within a few ticks (two namespaces: every tick).
    for _ in 0..3 {
        c.tick().unwrap();
    }
    assert!(c.probes.connects_watched, "5 of 10 ports held");
    c.system()
        .set_net_file(10, "sockstat", Some(&sockstat(0, 0)));
    for _ in 0..crate::collect::port_watch::CALM_TICKS {
        assert!(
            c.probes.connects_watched,
            "detached before the calm ticks passed"
        );
        c.tick().unwrap();
    }
    assert!(!c.probes.connects_watched);
}
