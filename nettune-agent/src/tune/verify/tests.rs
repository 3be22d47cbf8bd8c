use super::*;
use crate::model::{
    counter::CounterRate,
    snapshot::{ConntrackFigures, WorkloadFigures},
    tunables::{RMEM_MAX, Scope, TCP_RMEM, Tunable},
    tuning::Target,
    workload::Workload,
};

fn config() -> TuningConfig {
    TuningConfig {
        verdict_seconds: 10,
        ..TuningConfig::default()
    }
}

/// The node with `total` conntrack drops so far at `per_second`, and `entries`
/// of 1000.
fn conntrack(total: u64, per_second: f64, entries: u64) -> Snapshot {
    let mut node = WorkloadFigures::new(1, Workload::node());
    node.conntrack = Some(ConntrackFigures {
        entries,
        drop: CounterRate { total, per_second },
        ..ConntrackFigures::default()
    });
    let mut s = crate::model::snapshot::for_tests(vec![node]);
    s.conntrack_max = Some(1000);
    s
}

fn watch_conntrack(before: f64) -> Watch {
    let p = Proposal {
        rule: &crate::tune::rules::CONNTRACK_FULL,
        sysctl: &crate::model::tunables::NF_CONNTRACK_MAX,
        target: Some(Target::Node),
        workload: "node".into(),
        netns: 1,
        evidence: String::new(),
        plan: crate::tune::rules::Plan::Raise,
        waiting: Vec::new(),
    };
    let d = Decision {
        rule: "conntrack_full".into(),
        sysctl: p.sysctl.name.into(),
        target: p.target.clone(),
        workload: "node".into(),
        action: "raise".into(),
        result: crate::model::tuning::Outcome::Applied,
        from: Some("1000".into()),
        to: Some("2000".into()),
        evidence: String::new(),
        reason: None,
        at_unix: 0,
    };
    Watch::new(
        &p,
        &d,
        Some(Evidence {
            total: 0,
            per_second: before,
            pressure: true,
        }),
    )
}

#[test]
fn evidence_that_stops_makes_the_change_effective_after_the_window() {
    let mut w = watch_conntrack(50.0);
    let c = config();
    // Right after the write: queues drain, drops may still come.
    assert_eq!(w.check(&conntrack(100, 30.0, 900), &c, 0), None);
    assert_eq!(w.effect.verdict, Verdict::Watching);
    assert_eq!(w.check(&conntrack(120, 0.0, 500), &c, 5), None);
    assert_eq!(
        w.check(&conntrack(120, 0.0, 500), &c, 10),
        Some(Verdict::Effective)
    );
    assert!(
        w.effect.detail.contains("went from 50.0/s to 0.0/s"),
        "{}",
        w.effect.detail
    );
    // Judged for good.
    assert_eq!(w.check(&conntrack(900, 80.0, 1000), &c, 20), None);
    assert_eq!(w.effect.verdict, Verdict::Effective);
}

#[test]
fn evidence_that_goes_on_makes_it_ineffective_with_the_rules_advice() {
    let mut w = watch_conntrack(50.0);
    let c = config();
    w.check(&conntrack(0, 50.0, 2000), &c, 0);
    w.check(&conntrack(250, 50.0, 2000), &c, 5);
    assert_eq!(
        w.check(&conntrack(500, 50.0, 2000), &c, 10),
        Some(Verdict::Ineffective)
    );
    assert!(
        w.effect.detail.contains("50.0/s to 50.0/s") && w.effect.detail.contains("conntrack -L"),
        "{}",
        w.effect.detail
    );
}

#[test]
fn a_table_still_over_its_threshold_is_not_effective_even_without_drops() {
    let mut w = watch_conntrack(0.0);
    let c = config();
    w.check(&conntrack(0, 0.0, 950), &c, 0);
    w.check(&conntrack(0, 0.0, 950), &c, 5);
    assert_eq!(
        w.check(&conntrack(0, 0.0, 950), &c, 10),
        Some(Verdict::Ineffective)
    );
    assert!(w.effect.detail.contains("over its threshold"));
}

#[test]
fn a_tenth_of_the_rate_or_less_counts_as_effective() {
    let c = config();
    for (after, verdict) in [(5.0, Verdict::Effective), (6.0, Verdict::Ineffective)] {
        let mut w = watch_conntrack(50.0);
        w.check(&conntrack(0, 50.0, 100), &c, 0);
        w.check(&conntrack(0, after, 100), &c, 5);
        let total = (after * 5.0) as u64;
        assert_eq!(
            w.check(&conntrack(total, after, 100), &c, 10),
            Some(verdict),
            "{after}/s"
        );
    }
}

/// A workload in namespace `netns` with `total` receive-buffer drops so far at
/// `per_second`.
pub(crate) fn receive_buffer_drops(netns: u32, total: u64, per_second: f64) -> WorkloadFigures {
    let workload = if netns == 1 {
        Workload::node()
    } else {
        Workload::pod("default", format!("pod-{netns}"), "")
    };
    let mut w = WorkloadFigures::new(netns, workload);
    w.drops_by_reason
        .insert("SOCKET_RCVBUFF".into(), CounterRate { total, per_second });
    w
}

/// A watch on `sysctl` raised for the receive-buffer drops of namespace `netns`.
fn watch_buffers(sysctl: &'static Tunable, netns: u32, snapshot: &Snapshot) -> Watch {
    let target = if sysctl.scope == Scope::Node {
        Target::Node
    } else {
        Target::Netns {
            inode: netns,
            label: format!("default/pod-{netns}"),
        }
    };
    let p = Proposal {
        rule: &crate::tune::rules::RECEIVE_BUFFER_DROPS,
        sysctl,
        target: Some(target.clone()),
        workload: format!("default/pod-{netns}"),
        netns,
        evidence: String::new(),
        plan: crate::tune::rules::Plan::Raise,
        waiting: Vec::new(),
    };
    let d = Decision {
        rule: p.rule.name.into(),
        sysctl: sysctl.name.into(),
        target: Some(target),
        workload: p.workload.clone(),
        action: "raise".into(),
        result: crate::model::tuning::Outcome::Applied,
        from: Some("212992".into()),
        to: Some("425984".into()),
        evidence: String::new(),
        reason: None,
        at_unix: 0,
    };
    Watch::new(&p, &d, evidence_for(&p, snapshot, &config()))
}

fn snapshot_of(workloads: Vec<WorkloadFigures>) -> Snapshot {
    crate::model::snapshot::for_tests(workloads)
}

#[test]
fn a_pod_change_whose_namespace_goes_before_its_verdict_closes_as_unknown() {
    let before = snapshot_of(vec![
        receive_buffer_drops(1, 0, 0.0),
        receive_buffer_drops(7, 100, 20.0),
    ]);
    let mut w = watch_buffers(&TCP_RMEM, 7, &before);
    let c = config();
    assert_eq!(w.check(&before, &c, 0), None);
    let gone = snapshot_of(vec![receive_buffer_drops(1, 0, 0.0)]);
    w.check(&gone, &c, 3);
    assert!(w.effect.verdict.is_final(), "{:?}", w.effect);
    assert_eq!(w.effect.verdict.label(), "unknown");
    assert!(w.effect.detail.contains("went away"), "{}", w.effect.detail);
    // Closed for good: a later Snapshot changes nothing.
    assert_eq!(w.check(&before, &c, 30), None);
}

/// Pods 7 and 8 drop on full receive buffers; pod 7's drops raised rmem_max.
fn rmem_max_raised_for_pod_7() -> (Snapshot, Watch) {
    let before = snapshot_of(vec![
        receive_buffer_drops(1, 0, 0.0),
        receive_buffer_drops(7, 100, 20.0),
        receive_buffer_drops(8, 100, 20.0),
    ]);
    let w = watch_buffers(&RMEM_MAX, 7, &before);
    (before, w)
}

#[test]
fn a_node_wide_change_is_judged_on_every_namespace_after_the_pod_that_triggered_it_goes() {
    // rmem_max is one value for the node: pod 7's drops raised it; pod 7 goes,
    // pod 8 keeps dropping — the raise did not help, whoever triggered it.
    let (before, mut w) = rmem_max_raised_for_pod_7();
    let c = config();
    w.check(&before, &c, 0);
    let pod_8 = |total| {
        snapshot_of(vec![
            receive_buffer_drops(1, 0, 0.0),
            receive_buffer_drops(8, total, 20.0),
        ])
    };
    w.check(&pod_8(200), &c, 5);
    assert_eq!(w.check(&pod_8(300), &c, 10), Some(Verdict::Ineffective));
    assert!(
        w.effect.detail.contains("40.0/s to 20.0/s"),
        "{}",
        w.effect.detail
    );
}

#[test]
fn a_node_wide_change_is_effective_when_every_namespace_stops_and_departures_do_not_count() {
    let (before, mut w) = rmem_max_raised_for_pod_7();
    let c = config();
    w.check(&before, &c, 0);
    w.check(&before, &c, 5);
    // Pod 7 goes with its 100 drops: a smaller sum, not a negative rate.
    let after = snapshot_of(vec![
        receive_buffer_drops(1, 0, 0.0),
        receive_buffer_drops(8, 100, 0.0),
    ]);
    assert_eq!(w.check(&after, &c, 10), Some(Verdict::Effective));
}
