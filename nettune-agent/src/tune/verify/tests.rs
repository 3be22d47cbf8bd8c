use super::*;
use crate::model::{
    counter::CounterRate,
    snapshot::{ConntrackFigures, WorkloadFigures},
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

#[test]
fn a_change_whose_namespace_is_gone_stays_as_it_was() {
    let mut w = watch_conntrack(50.0);
    let empty = crate::model::snapshot::for_tests(Vec::new());
    assert_eq!(w.check(&empty, &config(), 30), None);
    assert_eq!(w.effect.verdict, Verdict::Watching);
}
