//! Before Linux 5.14 a namespace has no cookie: it is known by its lowest
//! process and its `/run/netns` name, which come and go with its users. A
//! change of one mark, with another still proving the namespace, keeps its
//! entry; where nothing proves it either way, nothing is written and the
//! original is given to restore by hand.

use super::*;

/// A node before 5.14 with pod-a's namespace (inode 7) named `pod-a` and, if
/// `named` is false, known only by its process (pid 7).
fn without_cookies(tag: &str, named: bool) -> Fixture {
    let f = Fixture::new(tag);
    f.system.without_cookies();
    f.system.add_namespace(7, named.then_some("pod-a"), false);
    f.system.set_sysctl(&pod_a(), "net.core.somaxconn", "4096");
    f
}

fn enforcing(f: &Fixture) -> Tuner<&FakeSystem> {
    f.tuner_with(Mode::Enforce, |c| c.pod_netns = vec!["netns:pod-a".into()])
}

#[test]
fn before_5_14_a_named_namespace_whose_last_process_exits_keeps_its_entry_and_original() {
    let f = without_cookies("named-exit", true);
    f.system.process_enters(7, 100);
    let d = enforcing(&f).round(&pod_a_overflowing(), 0);
    assert_eq!(d[0].result, Outcome::Applied, "{}", d[0]);
    // Its last process exits; the `/run/netns` mount keeps the namespace. A
    // restarted agent a second later still knows it as nettune's.
    f.system.last_process_exits(7);
    let d = enforcing(&f).round(&pod_a_overflowing(), 1);
    assert_ne!(d[0].result, Outcome::Applied, "outside cooldown: {}", d[0]);
    let journal = Journal::open(&f.state).unwrap();
    assert_eq!(journal.entries().len(), 1, "{:?}", journal.entries());
    assert_eq!(journal.entries()[0].original, "4096");
    // A process enters it again: still the same one.
    f.system.process_enters(7, 300);
    let mut journal = Journal::open(&f.state).unwrap();
    let report = rollback(&Actuator::new(&f.system), &mut journal, false, 2).unwrap();
    assert_eq!(report.restored.len(), 1, "{report:?}");
    assert_eq!(
        f.system.sysctl(&pod_a(), "net.core.somaxconn").as_deref(),
        Some("4096")
    );
}

#[test]
fn before_5_14_a_namespace_nothing_proves_is_not_written_and_its_original_is_given() {
    let f = without_cookies("unproven", false);
    let d = enforcing(&f).round(&pod_a_overflowing(), 0);
    assert_eq!(d[0].result, Outcome::Applied, "{}", d[0]);
    // Its process (pid 7) is gone and another lives there: the same namespace
    // entered by someone else, or a new one with the inode — nothing tells.
    f.system.process_enters(7, 900);
    let d = enforcing(&f).round(&pod_a_overflowing(), 100_000);
    assert_eq!(d[0].result, Outcome::Refused, "{}", d[0]);
    let why = d[0].reason.clone().unwrap_or_default();
    assert!(
        why.contains("cannot prove") && why.contains("sysctl -w net.core.somaxconn='4096'"),
        "{why}"
    );
    assert_eq!(
        f.system.sysctl(&pod_a(), "net.core.somaxconn").as_deref(),
        Some("8192")
    );
    let mut journal = Journal::open(&f.state).unwrap();
    let report = rollback(&Actuator::new(&f.system), &mut journal, false, 100_001).unwrap();
    assert!(report.restored.is_empty(), "{report:?}");
    assert!(
        report.failed.len() == 1 && report.failed[0].2.contains("restore its original by hand"),
        "{report:?}"
    );
    // Kept: the original is still owed if it is that namespace.
    assert_eq!(Journal::open(&f.state).unwrap().entries().len(), 1);
    assert_eq!(
        f.system.sysctl(&pod_a(), "net.core.somaxconn").as_deref(),
        Some("8192")
    );
}
