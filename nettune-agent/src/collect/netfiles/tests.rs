use std::time::Duration;

use super::*;
use crate::{
    model::{
        drop_reasons::DropReasons,
        probes::Report,
        snapshot::{Context, Snapshot},
        tuning::Mode,
    },
    sys::fake::FakeSystem,
};

/// The host (inode 1) and `pods` namespaces (inodes 100…), each with
/// `ListenOverflows` = `overflows`.
fn node(pods: u32, overflows: u64) -> FakeSystem {
    let system = FakeSystem::new();
    system.add_namespace(1, None, true);
    for i in 0..pods {
        system.add_namespace(100 + i, Some(&format!("p{i}")), false);
    }
    set_overflows(&system, pods, overflows);
    system
}

fn set_overflows(system: &FakeSystem, pods: u32, overflows: u64) {
    let text = format!("TcpExt: ListenOverflows ListenDrops\nTcpExt: {overflows} {overflows}\n");
    for inode in std::iter::once(1).chain(100..100 + pods) {
        system.set_net_file(inode, "netstat", Some(&text));
    }
}

/// A Sample with an entry per namespace of `system`.
fn sample(system: &FakeSystem) -> Sample {
    let mut s = Sample::default();
    for inode in system.namespaces().keys() {
        s.netns.insert(*inode, NetnsSample::default());
    }
    s
}

/// One tick at `now`: (namespaces read, the Sample).
fn tick(
    reader: &mut NetFilesReader,
    system: &FakeSystem,
    now: Instant,
    change: impl FnOnce(&mut Sample),
) -> (usize, Sample) {
    let namespaces = system.namespaces();
    let all: Vec<&Namespace> = namespaces.values().collect();
    let mut s = sample(system);
    change(&mut s);
    let read = reader.fill(system, &all, &mut s, now);
    (read, s)
}

#[test]
fn on_a_small_node_every_namespace_is_read_every_tick() {
    let system = node(5, 0);
    let mut reader = NetFilesReader::default();
    let t0 = Instant::now();
    for i in 0..3 {
        let (read, _) = tick(&mut reader, &system, t0 + Duration::from_secs(i), |_| {});
        assert_eq!(read, 6);
    }
}

#[test]
fn a_quiet_node_reads_a_few_namespaces_a_tick_and_an_active_one_at_once() {
    let system = node(100, 0);
    let mut reader = NetFilesReader::default();
    let t0 = Instant::now();
    let (read, _) = tick(&mut reader, &system, t0, |_| {});
    assert_eq!(read, 101, "every namespace is read when first seen");
    let (read, _) = tick(&mut reader, &system, t0 + Duration::from_secs(1), |_| {});
    assert_eq!(
        read,
        BACKGROUND_READS_PER_TICK + 1,
        "the node, and some in turn"
    );
    // A pod retransmits: it is read this tick, whatever its turn.
    let (read, s) = tick(&mut reader, &system, t0 + Duration::from_secs(2), |s| {
        s.netns.get_mut(&199).unwrap().retransmits.segments = 4;
    });
    assert_eq!(read, BACKGROUND_READS_PER_TICK + 2);
    assert!(s.netns[&199].listen.is_some());
    // Over enough ticks, every namespace has had its turn.
    let before = system.net_file_reads();
    for i in 3..10 {
        tick(&mut reader, &system, t0 + Duration::from_secs(i), |s| {
            s.netns.get_mut(&199).unwrap().retransmits.segments = 4;
        });
    }
    let files = 4;
    assert_eq!(
        system.net_file_reads() - before,
        7 * (BACKGROUND_READS_PER_TICK + 1) * files
    );
}

#[test]
fn a_namespace_not_read_this_tick_keeps_its_figures_and_the_rate_between_its_reads() {
    // Two and a half ticks' worth of quiet namespaces, 100 upwards.
    let n = (BACKGROUND_READS_PER_TICK * 5 / 2) as u32;
    let last = 99 + n;
    let system = node(n, 0);
    let mut reader = NetFilesReader::default();
    let t0 = Instant::now();
    tick(&mut reader, &system, t0, |_| {});
    set_overflows(&system, n, 100);
    // The last namespace is last in turn: it is read again only after two quiet ticks.
    let mut read_at = None;
    for i in 1..=4 {
        let now = t0 + Duration::from_secs(10 * i);
        let (_, s) = tick(&mut reader, &system, now, |_| {});
        let ns = &s.netns[&last];
        if ns.listen.map(|l| l.overflows) == Some(100) && read_at.is_none() {
            read_at = Some(i);
            assert_eq!(
                ns.files_before
                    .map(|(f, secs)| (f.listen.map(|l| l.overflows), secs)),
                Some((Some(0), 10.0 * i as f64))
            );
        }
        if let Some(at) = read_at {
            let snapshot = build(&s);
            let w = snapshot.workload(last).unwrap();
            assert_eq!(w.listen_overflows.total, 100);
            assert!(
                (w.listen_overflows.per_second - 100.0 / (10.0 * at as f64)).abs() < 1e-9,
                "tick {i}: {} /s",
                w.listen_overflows.per_second
            );
        }
    }
    assert!(read_at.is_some_and(|at| at > 1), "read at tick {read_at:?}");
}

fn build(s: &Sample) -> Snapshot {
    let (report, reasons) = (Report::default(), DropReasons::default());
    let ctx = Context {
        taken_at_unix_seconds: 0.0,
        node: "n",
        kernel: "k",
        mode: Mode::Observe,
        uptime_seconds: 0.0,
        collection_seconds: 0.0,
        report: &report,
        reasons: &reasons,
        identity_sources: &[],
    };
    // Against itself: only `files_before` can give the files a rate.
    Snapshot::build(s, Some(s), 1.0, &ctx)
}

#[test]
fn departed_namespaces_are_forgotten() {
    let system = node(3, 0);
    let mut reader = NetFilesReader::default();
    let t0 = Instant::now();
    tick(&mut reader, &system, t0, |_| {});
    system.remove_namespace(101);
    tick(&mut reader, &system, t0 + Duration::from_secs(1), |_| {});
    assert!(!reader.reads.contains_key(&101));
    assert_eq!(reader.reads.len(), 3);
}

#[test]
fn when_every_namespace_is_busy_a_tick_reads_a_bounded_number_the_busiest_first() {
    let system = node(200, 0);
    let mut reader = NetFilesReader::default();
    let t0 = Instant::now();
    tick(&mut reader, &system, t0, |_| {});
    // Every pod's counters move every tick; pod 150 by far the most.
    let busy = |s: &mut Sample, i: u64| {
        for (inode, ns) in &mut s.netns {
            ns.connect_eaddrnotavail = i * if *inode == 150 { 1000 } else { 1 };
        }
    };
    let (read, s) = tick(&mut reader, &system, t0 + Duration::from_secs(1), |s| {
        busy(s, 1);
    });
    assert_eq!(
        read,
        1 + MOVED_READS_PER_TICK + BACKGROUND_READS_PER_TICK,
        "the node, the moved ones within their bound, and some in turn"
    );
    assert!(s.netns[&150].listen.is_some());
    let first = reader.reads[&150].at;
    assert_eq!(
        first,
        t0 + Duration::from_secs(1),
        "the busiest is read first"
    );
    // Over the next ticks every busy namespace gets its read.
    for i in 2..8 {
        tick(&mut reader, &system, t0 + Duration::from_secs(i), |s| {
            busy(s, i);
        });
    }
    assert!(
        reader.reads.values().all(|r| r.at > t0),
        "a busy namespace was left unread for 7 ticks"
    );
}
