//! The journal around every write: intent first, undone when it cannot record.

use super::*;

impl Fixture {
    /// Makes every journal write of this process fail from now on, as a full or
    /// read-only state directory would (root ignores permissions, so the
    /// temporary file's name is taken by a directory instead).
    pub(super) fn break_journal_writes(&self) {
        fs::create_dir_all(self.journal_tmp()).unwrap();
    }

    /// The state directory has room again.
    pub(super) fn repair_journal_writes(&self) {
        fs::remove_dir_all(self.journal_tmp()).unwrap();
    }

    pub(super) fn journal_tmp(&self) -> PathBuf {
        self.state
            .join(format!("journal.json.tmp.{}", std::process::id()))
    }
}

#[test]
fn a_write_the_journal_cannot_record_is_undone_and_the_decision_fails() {
    let f = Fixture::new("record-fails");
    let first = f.tuner(Mode::Enforce).round(&overflowing(), 0);
    assert_eq!(first[0].result, Outcome::Applied);
    assert_eq!(f.somaxconn(), "8192");
    // The disk fills between the next write and its record.
    let tmp = f.journal_tmp();
    f.system.after_next_write("net.core.somaxconn", move |_| {
        fs::create_dir_all(tmp).unwrap();
    });
    // (A new tuner each time: the same one would wait for the first verdict.)
    let d = f.tuner(Mode::Enforce).round(&overflowing(), 10_000);
    assert_eq!(d[0].result, Outcome::Failed, "{}", d[0]);
    let reason = d[0].reason.as_deref().unwrap();
    assert!(reason.contains("8192 restored"), "{reason}");
    assert_eq!(
        f.somaxconn(),
        "8192",
        "a write the journal does not know of stayed"
    );
    // The agent restarts once the disk has room: 8192 is still nettune's own.
    f.repair_journal_writes();
    let d = f.tuner(Mode::Enforce).round(&overflowing(), 20_000);
    assert_eq!(
        (d[0].result, d[0].to.as_deref()),
        (Outcome::Applied, Some("16384")),
        "{}",
        d[0]
    );
    let report = rollback(
        &Actuator::new(&f.system),
        &mut Journal::open(&f.state).unwrap(),
        false,
        0,
    )
    .unwrap();
    assert_eq!(f.somaxconn(), "4096", "{report:?}");
}

#[test]
fn a_kill_between_the_write_and_its_record_leaves_a_value_nettune_still_owns() {
    let f = Fixture::new("killed-after-write");
    f.tuner(Mode::Enforce).round(&overflowing(), 0);
    assert_eq!(f.somaxconn(), "8192");
    // SIGKILL right after the second write took: nothing after it runs.
    f.system
        .after_next_write("net.core.somaxconn", |_| panic!("killed after the write"));
    let mut t = f.tuner(Mode::Enforce);
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        t.round(&overflowing(), 10_000)
    }));
    assert!(killed.is_err());
    drop(t);
    assert_eq!(f.somaxconn(), "16384");
    // Restarted over a journal holding only the intent: 16384 is nettune's.
    let d = f.tuner(Mode::Enforce).round(&overflowing(), 20_000);
    assert_eq!(
        (d[0].result, d[0].from.as_deref(), d[0].to.as_deref()),
        (Outcome::Applied, Some("16384"), Some("32768")),
        "{}",
        d[0]
    );
    let report = rollback(
        &Actuator::new(&f.system),
        &mut Journal::open(&f.state).unwrap(),
        false,
        0,
    )
    .unwrap();
    assert!(report.stood_down.is_empty(), "{report:?}");
    assert_eq!(f.somaxconn(), "4096", "{report:?}");
}

#[test]
fn a_journal_that_cannot_record_the_intent_means_nothing_is_written() {
    let f = Fixture::new("intent-fails");
    f.break_journal_writes();
    let d = f.tuner(Mode::Enforce).round(&overflowing(), 0);
    assert_eq!(d[0].result, Outcome::Failed, "{}", d[0]);
    assert!(d[0].reason.as_deref().unwrap().starts_with("not written"));
    assert_eq!(f.somaxconn(), "4096");
    f.repair_journal_writes();
}

/// The node's conntrack table nearly full: the rule grows max and buckets.
pub(super) fn conntrack_full() -> Snapshot {
    let mut node = WorkloadFigures::new(1, Workload::node());
    node.conntrack = Some(crate::model::snapshot::ConntrackFigures {
        entries: 250_000,
        ..Default::default()
    });
    let mut s = crate::model::snapshot::for_tests(vec![node]);
    s.conntrack_max = Some(262_144);
    s
}

const BUCKETS: &str = "net.netfilter.nf_conntrack_buckets";

#[test]
fn a_value_the_kernel_rounds_is_written_as_it_keeps_it_and_never_past_the_ceiling() {
    let f = Fixture::new("buckets-ceiling");
    f.system.set_sysctl(&Target::Node, BUCKETS, "65536");
    let tuner = || {
        f.tuner_with(Mode::Enforce, |c| {
            c.limits.insert(
                BUCKETS.into(),
                crate::config::Limit {
                    floor: None,
                    ceiling: Some(100_000),
                },
            );
        })
    };
    let d = tuner().round(&conntrack_full(), 0);
    let buckets = decision(&d, BUCKETS);
    // The kernel keeps whole pages of hash heads: 100000 would become 100352.
    assert_eq!(
        (buckets.result, buckets.to.as_deref()),
        (Outcome::Applied, Some("99840")),
        "{buckets}"
    );
    assert_eq!(
        f.system.sysctl(&Target::Node, BUCKETS).as_deref(),
        Some("99840")
    );
    // Later: nettune's own value, at the ceiling: nothing more, no stand-down.
    let d = tuner().round(&conntrack_full(), 10_000);
    let buckets = decision(&d, BUCKETS);
    assert_eq!(buckets.result, Outcome::Refused, "{buckets}");
    assert!(
        buckets
            .reason
            .as_deref()
            .unwrap()
            .starts_with("ceiling reached"),
        "{buckets}"
    );
    assert_eq!(
        f.system.sysctl(&Target::Node, BUCKETS).as_deref(),
        Some("99840")
    );
}

#[test]
fn a_profile_value_the_kernel_rounds_is_journaled_as_the_kernel_keeps_it() {
    let f = Fixture::new("buckets-profile");
    f.system.set_sysctl(&Target::Node, BUCKETS, "65536");
    let values: BTreeMap<String, String> = [(BUCKETS.to_owned(), "100000".to_owned())].into();
    let d = f.tuner(Mode::Observe).apply("custom", &values, false, 0);
    let buckets = decision(&d, BUCKETS);
    assert_eq!(
        (buckets.result, buckets.to.as_deref()),
        (Outcome::Applied, Some("100352")),
        "{buckets}"
    );
    let journal = Journal::open(&f.state).unwrap();
    let e = journal.entry(BUCKETS, &Target::Node).unwrap();
    assert_eq!(
        (e.original.as_str(), e.last_written.as_deref()),
        ("65536", Some("100352"))
    );
    // Asked again: it is there already, as the kernel keeps it.
    let d = f.tuner(Mode::Observe).apply("custom", &values, false, 10);
    assert_eq!(decision(&d, BUCKETS).result, Outcome::Refused, "{d:?}");
}

#[test]
fn a_change_the_journal_cannot_take_is_tried_and_logged_once_per_cooldown_and_budgeted() {
    let f = Fixture::new("failing-attempts");
    f.break_journal_writes();
    let mut t = f.tuner(Mode::Enforce);
    logs::take();
    let results: Vec<(u64, Outcome)> = [0, 10, 20, 301, 602, 903, 1204]
        .into_iter()
        .map(|now| (now, t.round(&overflowing(), now)[0].result))
        .collect();
    assert_eq!(
        results,
        [
            (0, Outcome::Failed),
            (10, Outcome::Refused),
            (20, Outcome::Refused),
            (301, Outcome::Failed),
            (602, Outcome::Failed),
            (903, Outcome::Failed),
            // Four attempts in the hour: the budget is spent.
            (1204, Outcome::Refused),
        ]
    );
    let last = t.round(&overflowing(), 1300);
    assert!(
        last[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("hourly budget spent"),
        "{}",
        last[0]
    );
    assert_eq!(logs::failures(&logs::take()), 4);
    assert_eq!(f.somaxconn(), "4096");
    f.repair_journal_writes();
}

#[test]
fn a_decision_that_fails_before_any_attempt_is_logged_once_per_cooldown() {
    let f = Fixture::new("failing-reads");
    f.system.remove_sysctl(&Target::Node, "net.core.somaxconn");
    let mut t = f.tuner(Mode::Enforce);
    logs::take();
    for now in [0, 10, 20] {
        assert_eq!(t.round(&overflowing(), now)[0].result, Outcome::Failed);
    }
    assert_eq!(logs::failures(&logs::take()), 1);
    t.round(&overflowing(), 301);
    assert_eq!(logs::failures(&logs::take()), 1);
}

#[test]
fn a_journal_corrupted_while_running_pauses_tuning_with_one_error_until_it_reads_again() {
    let f = Fixture::new("corrupt-later");
    let first = f.tuner(Mode::Enforce).round(&overflowing(), 0);
    assert_eq!(first[0].result, Outcome::Applied);
    let journal = f.state.join("journal.json");
    let good = fs::read_to_string(&journal).unwrap();
    // Started on a good journal, which someone then breaks.
    let mut t = f.tuner(Mode::Enforce);
    fs::write(&journal, "{").unwrap();
    logs::take();
    for now in [10_000, 10_010, 10_020] {
        assert!(t.round(&overflowing(), now).is_empty());
    }
    let errors = logs::take()
        .into_iter()
        .filter(|(level, _)| *level == log::Level::Error)
        .count();
    assert_eq!(errors, 1);
    assert!(
        t.journal_error().is_some_and(|e| e.contains("is corrupt")),
        "{:?}",
        t.journal_error()
    );
    assert_eq!(f.somaxconn(), "8192");
    fs::write(&journal, good).unwrap();
    let d = t.round(&overflowing(), 20_000);
    assert_eq!(d[0].result, Outcome::Applied, "{}", d[0]);
    assert!(t.journal_error().is_none());
}

#[test]
fn a_rollback_during_a_round_waits_for_it_and_the_next_round_respects_it() {
    let f = Fixture::new("rollback-race");
    assert_eq!(
        f.tuner(Mode::Enforce).round(&overflowing(), 0)[0].result,
        Outcome::Applied
    );
    assert_eq!(f.somaxconn(), "8192");
    // A daemon (restarted since: no verdict pending) reads somaxconn in a round
    // after the cooldown; right then `nettune rollback` runs beside it (another
    // process: its own journal).
    let mut t = f.tuner(Mode::Enforce);
    let (reading_tx, reading_rx) = std::sync::mpsc::channel();
    let (rolled_back_tx, rolled_back_rx) = std::sync::mpsc::channel();
    f.system.after_next_read("net.core.somaxconn", move |_| {
        reading_tx.send(()).unwrap();
        // Give the rollback its chance to run in between (it must not get it).
        let _ = rolled_back_rx.recv_timeout(std::time::Duration::from_secs(2));
    });
    std::thread::scope(|s| {
        let round = s.spawn(|| t.round(&overflowing(), 1000));
        reading_rx.recv().unwrap();
        let rollback = s.spawn(|| {
            let mut journal = Journal::open(&f.state).unwrap();
            let report = rollback(&Actuator::new(&f.system), &mut journal, false, 1000).unwrap();
            let _ = rolled_back_tx.send(());
            report
        });
        round.join().unwrap();
        let report = rollback.join().unwrap();
        assert_eq!(report.restored.len(), 1, "{report:?}");
    });
    assert_eq!(
        f.somaxconn(),
        "4096",
        "the round wrote over the rollback (and journaled 8192 as the original)"
    );
    let journal = Journal::open(&f.state).unwrap();
    assert!(journal.entries().is_empty(), "{:?}", journal.entries());
    // The rollback counts as a change: another restarted daemon waits a
    // cooldown from it, and the hour's changes still count.
    let d = f.tuner(Mode::Enforce).round(&overflowing(), 1001);
    assert_eq!(d[0].result, Outcome::Refused, "{}", d[0]);
    assert!(
        d[0].reason
            .as_deref()
            .unwrap_or_default()
            .contains("cooldown"),
        "{}",
        d[0]
    );
    assert_eq!(f.somaxconn(), "4096");
}
