//! Verdicts: a change judged after it is made, and never repeated when futile.

use super::*;
use crate::model::tuning::Verdict;
use crate::tune::verify::tests::receive_buffer_drops;

/// A tuner that may change a value every second and judges a change in 10 s.
pub(super) fn quick(f: &Fixture) -> Tuner<&FakeSystem> {
    f.tuner_with(Mode::Enforce, |c| {
        c.cooldown_seconds = 1;
        c.verdict_seconds = 10;
    })
}

pub(super) fn effect_count(t: &Tuner<&FakeSystem>, verdict: &str) -> u64 {
    t.state()
        .effect_counts
        .iter()
        .find(|c| c.sysctl == "net.core.somaxconn" && c.verdict == verdict)
        .map_or(0, |c| c.count)
}

#[test]
fn a_listener_that_asked_for_less_than_somaxconn_never_gets_a_write() {
    let f = Fixture::new("futile");
    let mut t = quick(&f);
    for now in [0, 5, 10] {
        let d = t.round(&overflowing_with(8, 8, 291.0, 291 * now), now);
        assert_eq!(d[0].result, Outcome::Futile, "{}", d[0]);
        let reason = d[0].reason.as_deref().unwrap();
        assert!(reason.contains("asked listen() for 8") && reason.contains("backlog to 4096"));
    }
    assert_eq!(f.somaxconn(), "4096");
    assert!(t.journal().entries().is_empty(), "nothing was written");
}

#[test]
fn a_somaxconn_raise_has_no_effect_until_the_listener_listens_again_then_is_effective() {
    let f = Fixture::new("relisten");
    let mut t = quick(&f);
    let d = t.round(&overflowing(), 0);
    assert_eq!(
        (d[0].result, d[0].to.as_deref()),
        (Outcome::Applied, Some("8192"))
    );
    // The socket keeps its 4096: no second raise while it waits.
    for now in [2, 30] {
        let d = t.round(&overflowing_with(65535, 4096, 5.0, 50 + 5 * now), now);
        assert_eq!(d[0].result, Outcome::Refused, "{}", d[0]);
        assert!(d[0].reason.as_deref().unwrap().contains("not judged yet"));
    }
    assert_eq!(f.somaxconn(), "8192");
    let effect = &t.state().effects[0];
    assert_eq!(effect.verdict, Verdict::NoEffectYet);
    assert!(
        effect
            .detail
            .contains("port 8080 (server) still has limit 4096"),
        "{}",
        effect.detail
    );
    assert_eq!(effect_count(&t, "no_effect_yet"), 1);
    // It listens again, gets 8192, and the overflows stop.
    let mut calm = overflowing_with(65535, 8192, 0.0, 200);
    calm.listeners[0].queue = 0;
    for now in [31, 36, 41] {
        t.round(&calm, now);
    }
    assert_eq!(
        t.state().effects[0].verdict,
        Verdict::Effective,
        "{:?}",
        t.state().effects
    );
    assert_eq!(effect_count(&t, "effective"), 1);
}

#[test]
fn an_ineffective_raise_is_not_repeated_and_the_advice_says_why() {
    let f = Fixture::new("ineffective");
    let mut t = quick(&f);
    t.round(&overflowing(), 0);
    // It listened again with the new limit, yet overflows go on at the same rate.
    for now in [1, 6, 12] {
        t.round(&overflowing_with(65535, 8192, 5.0, 50 + 5 * now), now);
    }
    let effect = &t.state().effects[0];
    assert_eq!(effect.verdict, Verdict::Ineffective, "{effect}");
    assert!(effect.detail.contains("accept loop"), "{}", effect.detail);
    let d = t.round(&overflowing_with(65535, 8192, 5.0, 120), 20);
    assert_eq!(d[0].result, Outcome::Futile, "{}", d[0]);
    assert!(d[0].reason.as_deref().unwrap().contains("ineffective"));
    assert_eq!(f.somaxconn(), "8192", "raised once only");
    assert_eq!(effect_count(&t, "ineffective"), 1);
}

#[test]
fn a_node_wide_raise_whose_pod_went_is_judged_and_blocks_no_later_decision() {
    let f = Fixture::new("pod-gone");
    f.system
        .set_sysctl(&Target::Node, "net.core.rmem_max", "212992");
    let mut t = quick(&f);
    let rmem = |d: &[Decision]| d.iter().find(|d| d.sysctl == "net.core.rmem_max").cloned();
    let first = t.round(
        &crate::model::snapshot::for_tests(vec![
            receive_buffer_drops(1, 0, 0.0),
            receive_buffer_drops(7, 100, 50.0),
        ]),
        0,
    );
    assert_eq!(rmem(&first).unwrap().result, Outcome::Applied, "{first:?}");
    // Pod 7 goes; pod 8 drops on full buffers just the same.
    let mut last = None;
    for now in 1..=20 {
        let s = crate::model::snapshot::for_tests(vec![
            receive_buffer_drops(1, 0, 0.0),
            receive_buffer_drops(8, 50 * now, 50.0),
        ]);
        if let Some(d) = rmem(&t.round(&s, now)) {
            last = Some(d);
        }
    }
    let effect = t
        .state()
        .effects
        .into_iter()
        .find(|e| e.sysctl == "net.core.rmem_max")
        .unwrap();
    assert_eq!(effect.verdict, Verdict::Ineffective, "{effect:?}");
    let last = last.unwrap();
    let reason = last.reason.clone().unwrap_or_default();
    assert!(
        !reason.contains("not judged yet"),
        "the raise whose pod went still blocks: {last}"
    );
    assert_eq!(last.result, Outcome::Futile, "{last}");
}
