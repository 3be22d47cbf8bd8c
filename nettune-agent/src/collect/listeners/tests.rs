use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use std::collections::BTreeSet;

use super::*;
use crate::{model::sample::NetnsSample, sys::ListenerScan, sys::fake::FakeSystem};

const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

fn socket(port: u16, inode: u32, queue: u32, limit: u32) -> ListeningSocket {
    ListeningSocket {
        address: ANY,
        port,
        inode,
        queue,
        limit,
    }
}

fn scan(sockets: Vec<ListeningSocket>) -> ListenerScan {
    ListenerScan {
        sockets,
        sysctls: ListenSysctls {
            somaxconn: Some(4096),
            max_syn_backlog: Some(512),
            syncookies: Some(1),
        },
    }
}

/// A fake node with namespaces `inodes` (the first is the host).
fn node(inodes: &[u32]) -> FakeSystem {
    let system = FakeSystem::new();
    for (i, inode) in inodes.iter().enumerate() {
        system.add_namespace(*inode, Some(&format!("ns{inode}")), i == 0);
    }
    system
}

/// A Sample in which each of `overflows` namespaces has that many `ListenOverflows`.
fn sample(overflows: &[(u32, u64)]) -> Sample {
    let mut s = Sample::default();
    for (inode, n) in overflows {
        s.netns.insert(
            *inode,
            NetnsSample {
                listen: Some(ListenCounters {
                    overflows: *n,
                    ..ListenCounters::default()
                }),
                ..NetnsSample::default()
            },
        );
    }
    s
}

fn request(backlog: u32, netns: u32) -> ListenRequest {
    ListenRequest { backlog, netns }
}

fn tick(
    tracker: &mut ListenerTracker,
    system: &FakeSystem,
    s: &mut Sample,
    readings: ListenReadings,
) -> Vec<ListenCall> {
    tracker.update(system, &system.namespaces(), &BTreeSet::new(), s, readings)
}

#[test]
fn a_listen_call_is_resolved_to_its_socket_with_the_backlog_and_process() {
    let system = node(&[1, 10]);
    system.set_listeners(10, scan(vec![socket(8080, 500, 0, 8)]));
    system.set_proc_link("7/fd/3", Some("socket:[500]"));
    system.set_proc("7/comm", "server\n");
    let call = ListenCall { tgid: 7, fd: 3 };
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0), (10, 0)]);
    let handled = tick(
        &mut tracker,
        &system,
        &mut s,
        ListenReadings {
            calls: BTreeMap::from([(call, request(8, 10))]),
            exact: None,
        },
    );
    assert_eq!(handled, vec![call]);
    let l = s
        .listeners
        .iter()
        .find(|l| l.port == 8080)
        .expect("listener");
    assert_eq!(
        (l.netns, l.requested, l.process.as_deref(), l.limit, l.inode),
        (10, Some(8), Some("server"), 8, 500)
    );
    assert_eq!(
        s.netns[&10].listen_sysctls.and_then(|x| x.somaxconn),
        Some(4096)
    );
}

#[test]
fn without_the_callers_namespace_the_processes_own_stands_in() {
    let system = node(&[1, 10]);
    system.set_listeners(10, scan(vec![socket(8080, 500, 0, 8)]));
    system.set_proc_link("7/fd/3", Some("socket:[500]"));
    system.set_proc_link("7/ns/net", Some("net:[10]"));
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0), (10, 0)]);
    let call = ListenCall { tgid: 7, fd: 3 };
    tick(
        &mut tracker,
        &system,
        &mut s,
        ListenReadings {
            calls: BTreeMap::from([(call, request(8, 0))]),
            exact: None,
        },
    );
    assert_eq!(tracker.origins[&500].netns, 10);
    assert_eq!(s.listeners[0].requested, Some(8));
}

#[test]
fn a_socket_that_listened_before_nettune_has_an_unknown_request_but_an_exact_limit() {
    let system = node(&[1]);
    system.set_listeners(1, scan(vec![socket(22, 9, 3, 128)]));
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0)]);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    let l = &s.listeners[0];
    assert_eq!((l.requested, l.process.clone()), (None, None));
    assert_eq!((l.queue, l.limit), (3, 128));
}

#[test]
fn a_call_whose_process_is_gone_is_handled_and_dropped() {
    let system = node(&[1]);
    let call = ListenCall { tgid: 99, fd: 4 };
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0)]);
    let handled = tick(
        &mut tracker,
        &system,
        &mut s,
        ListenReadings {
            calls: BTreeMap::from([(call, request(128, 1))]),
            exact: None,
        },
    );
    assert_eq!(
        handled,
        vec![call],
        "an unresolvable call must still be forgotten"
    );
    assert!(tracker.origins.is_empty());
}

#[test]
fn new_overflows_are_split_among_the_listeners_found_at_their_limit() {
    let system = node(&[1]);
    system.set_listeners(
        1,
        scan(vec![
            socket(80, 1, 9, 8),
            socket(81, 2, 8, 8),
            socket(82, 3, 2, 8),
        ]),
    );
    let mut tracker = ListenerTracker::default();
    // First sight: the 1000 overflows before nettune are history.
    let mut s = sample(&[(1, 1000)]);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    assert!(s.listeners.iter().all(|l| l.overflows == 0));
    let mut s = sample(&[(1, 1101)]);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    let by_port: BTreeMap<u16, (u64, Attribution)> = s
        .listeners
        .iter()
        .map(|l| (l.port, (l.overflows, l.attribution)))
        .collect();
    assert_eq!(by_port[&80], (51, Attribution::AtLimit));
    assert_eq!(by_port[&81], (50, Attribution::AtLimit));
    assert_eq!(by_port[&82], (0, Attribution::None));
}

#[test]
fn overflows_with_no_listener_at_its_limit_stay_with_the_namespace() {
    let system = node(&[1]);
    system.set_listeners(1, scan(vec![socket(80, 1, 0, 8)]));
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0)]);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    let mut s = sample(&[(1, 40)]);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    // Later, the queue is full: the earlier 40 are not blamed on it.
    system.set_listeners(1, scan(vec![socket(80, 1, 9, 8)]));
    let mut s = sample(&[(1, 45)]);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    assert_eq!(s.listeners[0].overflows, 5);
}

#[test]
fn exact_counts_go_to_the_first_socket_on_the_port() {
    let system = node(&[1]);
    let v6 = ListeningSocket {
        address: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ..socket(80, 2, 0, 8)
    };
    system.set_listeners(1, scan(vec![socket(80, 1, 9, 8), v6, socket(81, 3, 0, 8)]));
    let exact = BTreeMap::from([(
        ListenKey {
            netns: 1,
            port: 80,
            _pad: 0,
        },
        ListenOverflow {
            overflows: 7,
            backlog: 9,
            max_backlog: 8,
        },
    )]);
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0)]);
    tick(
        &mut tracker,
        &system,
        &mut s,
        ListenReadings {
            calls: BTreeMap::new(),
            exact: Some(exact),
        },
    );
    let counts: Vec<(u16, u64, Attribution)> = s
        .listeners
        .iter()
        .map(|l| (l.port, l.overflows, l.attribution))
        .collect();
    assert_eq!(
        counts,
        vec![
            (80, 7, Attribution::Exact),
            (80, 0, Attribution::Exact),
            (81, 0, Attribution::Exact)
        ]
    );
}

#[test]
fn a_quiet_node_is_looked_at_a_few_namespaces_per_tick_whatever_its_size() {
    let inodes: Vec<u32> = (1..=50).collect();
    let system = node(&inodes);
    let mut tracker = ListenerTracker::default();
    let quiet: Vec<(u32, u64)> = inodes.iter().map(|i| (*i, 0)).collect();
    for round in 1..=25 {
        let mut s = sample(&quiet);
        tick(&mut tracker, &system, &mut s, ListenReadings::default());
        assert_eq!(
            system.listener_scans(),
            round * BACKGROUND_SCANS_PER_TICK as u64
        );
    }
    // 25 ticks of 2: every namespace had its turn once.
    assert_eq!(tracker.looks.len(), 50);
}

#[test]
fn namespaces_whose_counters_moved_are_looked_at_first_and_the_rest_wait_their_turn() {
    let inodes: Vec<u32> = (1..=30).collect();
    let system = node(&inodes);
    let mut tracker = ListenerTracker::default();
    let zero: Vec<(u32, u64)> = inodes.iter().map(|i| (*i, 0)).collect();
    tick(
        &mut tracker,
        &system,
        &mut sample(&zero),
        ListenReadings::default(),
    );
    let before = system.listener_scans();
    // 20 namespaces overflow; namespace 30 the most.
    let moved: Vec<(u32, u64)> = inodes
        .iter()
        .map(|i| (*i, if *i > 10 { u64::from(*i) } else { 0 }))
        .collect();
    let mut s = sample(&moved);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    assert_eq!(
        system.listener_scans() - before,
        (MAX_SCANS_PER_TICK + BACKGROUND_SCANS_PER_TICK) as u64
    );
    assert!(
        tracker.seen[&30].overflows == 30,
        "the biggest mover was looked at"
    );
    let waiting: Vec<u32> = (11..=30)
        .filter(|i| tracker.seen[i].overflows == 0)
        .collect();
    assert!(!waiting.is_empty() && waiting.len() <= 4, "{waiting:?}");
    // Next tick the ones left over are looked at, with their whole lead.
    let mut s = sample(&moved);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    assert!((11..=30).all(|i| tracker.seen[&i].overflows == u64::from(i)));
}

#[test]
fn a_departed_namespace_takes_its_listeners_and_origins_with_it() {
    let system = node(&[1, 10]);
    system.set_listeners(10, scan(vec![socket(8080, 500, 0, 8)]));
    system.set_proc_link("7/fd/3", Some("socket:[500]"));
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0), (10, 0)]);
    tick(
        &mut tracker,
        &system,
        &mut s,
        ListenReadings {
            calls: BTreeMap::from([(ListenCall { tgid: 7, fd: 3 }, request(8, 10))]),
            exact: None,
        },
    );
    assert_eq!(s.listeners.len(), 1);
    system.remove_namespace(10);
    let mut s = sample(&[(1, 0)]);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    assert!(s.listeners.is_empty());
    assert!(tracker.origins.is_empty() && tracker.looks.len() == 1);
}

#[test]
fn a_closed_socket_loses_its_origin_at_the_next_look() {
    let system = node(&[1]);
    system.set_listeners(1, scan(vec![socket(80, 500, 0, 8)]));
    system.set_proc_link("7/fd/3", Some("socket:[500]"));
    let mut tracker = ListenerTracker::default();
    tick(
        &mut tracker,
        &system,
        &mut sample(&[(1, 0)]),
        ListenReadings {
            calls: BTreeMap::from([(ListenCall { tgid: 7, fd: 3 }, request(8, 1))]),
            exact: None,
        },
    );
    system.set_listeners(1, scan(Vec::new()));
    tick(
        &mut tracker,
        &system,
        &mut sample(&[(1, 0)]),
        ListenReadings::default(),
    );
    assert!(tracker.origins.is_empty());
}

#[test]
fn links_and_shares_parse() {
    assert_eq!(bracketed("socket:[12345]", "socket"), Some(12345));
    assert_eq!(bracketed("net:[4026531840]", "net"), Some(4_026_531_840));
    assert_eq!(bracketed("/dev/null", "socket"), None);
    assert_eq!(bracketed("socket:[x]", "socket"), None);
    assert_eq!(split(10, 3).collect::<Vec<_>>(), vec![4, 3, 3]);
    assert_eq!(split(5, 0).count(), 0);
}
