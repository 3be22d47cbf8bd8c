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
        sysctls: NetnsSysctls {
            somaxconn: Some(4096),
            max_syn_backlog: Some(512),
            syncookies: Some(1),
            ephemeral_ports: None,
            tw_reuse: None,
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

/// The kernel's record of socket `inode` in `netns` starting to listen with
/// `limit` while somaxconn was `somaxconn`, by process `comm`.
fn origin(
    netns: u32,
    inode: u32,
    limit: u32,
    somaxconn: u32,
    comm: &str,
) -> (ListenSocket, ListenOrigin) {
    let mut name = [0u8; 16];
    name[..comm.len()].copy_from_slice(comm.as_bytes());
    (
        ListenSocket { netns, inode },
        ListenOrigin {
            limit,
            somaxconn,
            comm: name,
        },
    )
}

fn tick(
    tracker: &mut ListenerTracker,
    system: &FakeSystem,
    s: &mut Sample,
    readings: ListenReadings,
) -> Vec<ListenSocket> {
    tracker.update(system, &system.namespaces(), &BTreeSet::new(), s, readings)
}

#[test]
fn a_limit_below_somaxconn_when_it_listened_is_what_the_application_asked_for() {
    let system = node(&[1, 10]);
    system.set_listeners(10, scan(vec![socket(8080, 500, 0, 8)]));
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0), (10, 0)]);
    let (key, value) = origin(10, 500, 8, 4096, "server");
    let taken = tick(
        &mut tracker,
        &system,
        &mut s,
        ListenReadings {
            origins: BTreeMap::from([(key, value)]),
            exact: None,
            ..ListenReadings::default()
        },
    );
    assert_eq!(taken, vec![key]);
    let l = s
        .listeners
        .iter()
        .find(|l| l.port == 8080)
        .expect("listener");
    assert_eq!(
        (
            l.netns,
            l.requested,
            l.capped_by,
            l.process.as_deref(),
            l.limit,
            l.inode
        ),
        (10, Some(8), None, Some("server"), 8, 500)
    );
    assert_eq!(
        s.netns[&10].netns_sysctls.and_then(|x| x.somaxconn),
        Some(4096)
    );
}

#[test]
fn a_limit_at_somaxconn_when_it_listened_asked_for_at_least_that() {
    let system = node(&[1]);
    system.set_listeners(1, scan(vec![socket(80, 7, 0, 128)]));
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0)]);
    let (key, value) = origin(1, 7, 128, 128, "nginx");
    tick(
        &mut tracker,
        &system,
        &mut s,
        ListenReadings {
            origins: BTreeMap::from([(key, value)]),
            exact: None,
            ..ListenReadings::default()
        },
    );
    let l = &s.listeners[0];
    assert_eq!((l.requested, l.capped_by), (None, Some(128)));
}

#[test]
fn an_origin_whose_limit_moved_since_is_not_trusted() {
    // The application listened again with another backlog: the record is stale.
    let system = node(&[1]);
    system.set_listeners(1, scan(vec![socket(80, 7, 0, 256)]));
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0)]);
    let (key, value) = origin(1, 7, 128, 4096, "app");
    tick(
        &mut tracker,
        &system,
        &mut s,
        ListenReadings {
            origins: BTreeMap::from([(key, value)]),
            exact: None,
            ..ListenReadings::default()
        },
    );
    assert_eq!(
        (s.listeners[0].requested, s.listeners[0].capped_by),
        (None, None)
    );
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
            origins: BTreeMap::new(),
            exact: Some(exact),
            ..ListenReadings::default()
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
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0), (10, 0)]);
    tick(
        &mut tracker,
        &system,
        &mut s,
        ListenReadings {
            origins: BTreeMap::from([origin(10, 500, 8, 4096, "server")]),
            exact: None,
            ..ListenReadings::default()
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
    let mut tracker = ListenerTracker::default();
    tick(
        &mut tracker,
        &system,
        &mut sample(&[(1, 0)]),
        ListenReadings {
            origins: BTreeMap::from([origin(1, 500, 8, 4096, "server")]),
            exact: None,
            ..ListenReadings::default()
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
fn shares_split_evenly_the_larger_first() {
    assert_eq!(split(10, 3).collect::<Vec<_>>(), vec![4, 3, 3]);
    assert_eq!(split(5, 0).count(), 0);
}

/// A scan of `sockets` under `somaxconn`.
fn scan_under(sockets: Vec<ListeningSocket>, somaxconn: u32) -> ListenerScan {
    let mut s = scan(sockets);
    s.sysctls.somaxconn = Some(somaxconn);
    s
}

#[test]
fn a_listener_new_since_the_last_look_has_its_limit_as_asked_and_its_owner_named() {
    let system = node(&[1]);
    system.set_listeners(1, scan_under(vec![socket(22, 9, 0, 128)], 4096));
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0)]);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    system.set_listeners(
        1,
        scan_under(
            vec![
                socket(22, 9, 0, 128),
                socket(8080, 10, 0, 8),
                socket(8443, 11, 0, 4096),
            ],
            4096,
        ),
    );
    system.set_socket_owner(10, "server");
    let mut s = sample(&[(1, 0)]);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    // Port → (requested, capped by, process).
    type Origins = BTreeMap<u16, (Option<u32>, Option<u32>, Option<String>)>;
    let by_port: Origins = s
        .listeners
        .iter()
        .map(|l| (l.port, (l.requested, l.capped_by, l.process.clone())))
        .collect();
    // Older than the first look: unknown. New and under somaxconn: as asked.
    // New at somaxconn: asked for at least that. No process holds 11.
    assert_eq!(by_port[&22], (None, None, None));
    assert_eq!(by_port[&8080], (Some(8), None, Some("server".to_owned())));
    assert_eq!(by_port[&8443], (None, Some(4096), None));
}

#[test]
fn a_listener_that_appeared_while_somaxconn_changed_is_not_inferred() {
    let system = node(&[1]);
    system.set_listeners(1, scan_under(Vec::new(), 128));
    let mut tracker = ListenerTracker::default();
    let mut s = sample(&[(1, 0)]);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    // Its 128 may be the old somaxconn, not what it asked for.
    system.set_listeners(1, scan_under(vec![socket(80, 5, 0, 128)], 4096));
    let mut s = sample(&[(1, 0)]);
    tick(&mut tracker, &system, &mut s, ListenReadings::default());
    let l = &s.listeners[0];
    assert_eq!((l.requested, l.capped_by), (None, None));
}

#[test]
fn a_namespace_that_appears_while_nettune_runs_is_looked_at_at_once() {
    let inodes: Vec<u32> = (1..=40).collect();
    let system = node(&inodes);
    let mut tracker = ListenerTracker::default();
    tick(
        &mut tracker,
        &system,
        &mut sample(&[]),
        ListenReadings::default(),
    );
    system.add_namespace(99, Some("ns99"), false);
    system.set_listeners(99, scan(Vec::new()));
    tick(
        &mut tracker,
        &system,
        &mut sample(&[]),
        ListenReadings::default(),
    );
    assert!(
        tracker.looks.contains_key(&99),
        "the new namespace waits for its turn among 40"
    );
}
