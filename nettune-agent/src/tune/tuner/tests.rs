use std::{collections::BTreeMap, fs, path::PathBuf};

use super::*;
use crate::{
    model::{counter::CounterRate, snapshot::WorkloadFigures, workload::Workload},
    sys::fake::FakeSystem,
};

/// A fake node with three sysctls and a journal directory of its own.
struct Fixture {
    system: FakeSystem,
    state: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let state =
            std::env::temp_dir().join(format!("nettune-tuner-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        let system = FakeSystem::new();
        for (sysctl, value) in [
            ("net.core.somaxconn", "4096"),
            ("net.ipv4.tcp_max_syn_backlog", "1024"),
            ("net.netfilter.nf_conntrack_max", "262144"),
        ] {
            system.set_sysctl(&Target::Node, sysctl, value);
        }
        Self { system, state }
    }

    fn tuner(&self, mode: Mode) -> Tuner<&FakeSystem> {
        let config = TuningConfig {
            mode,
            state_dir: self.state.clone(),
            ..TuningConfig::default()
        };
        Tuner::new(&self.system, config, 0).unwrap()
    }

    fn somaxconn(&self) -> String {
        self.system
            .sysctl(&Target::Node, "net.core.somaxconn")
            .unwrap()
    }

    fn set_somaxconn(&self, v: &str) {
        self.system
            .set_sysctl(&Target::Node, "net.core.somaxconn", v);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.state);
    }
}

fn overflowing() -> Snapshot {
    let mut node = WorkloadFigures::new(1, Workload::node());
    node.listen_overflows = CounterRate {
        total: 50,
        per_second: 5.0,
    };
    crate::model::snapshot::for_tests(vec![node])
}

#[test]
fn enforce_journals_then_writes_and_rollback_restores_once() {
    let f = Fixture::new("enforce");
    let mut t = f.tuner(Mode::Enforce);
    let d = t.round(&overflowing(), 10_000);
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].result, d[0].from.as_deref(), d[0].to.as_deref()),
        (Outcome::Applied, Some("4096"), Some("8192"))
    );
    assert_eq!(f.somaxconn(), "8192");
    let e = t
        .journal()
        .entry("net.core.somaxconn", &Target::Node)
        .unwrap();
    assert_eq!(
        (e.original.as_str(), e.last_written.as_deref()),
        ("4096", Some("8192"))
    );
    // Straight away again: the cooldown says no.
    let d = t.round(&overflowing(), 10_010);
    assert_eq!(d[0].result, Outcome::Refused);
    assert!(d[0].reason.as_deref().unwrap().starts_with("cooldown"));
    let counts = t.state().counts;
    let applied = counts
        .iter()
        .find(|c| c.sysctl == "net.core.somaxconn" && c.action == "raise" && c.result == "applied");
    assert_eq!(applied.map(|c| c.count), Some(1));

    let actuator = Actuator::new(&f.system);
    let mut journal = Journal::open(&f.state).unwrap();
    let report = rollback(&actuator, &mut journal).unwrap();
    assert_eq!(report.restored.len(), 1);
    assert_eq!(f.somaxconn(), "4096");
    let again = rollback(&actuator, &mut journal).unwrap();
    assert!(again.restored.is_empty() && again.failed.is_empty());
}

#[test]
fn advise_writes_nothing_and_observe_decides_nothing() {
    let f = Fixture::new("advise");
    let d = f.tuner(Mode::Advise).round(&overflowing(), 0);
    assert_eq!(
        (d[0].result, d[0].to.as_deref()),
        (Outcome::Advised, Some("8192"))
    );
    assert_eq!(f.somaxconn(), "4096");
    assert!(f.tuner(Mode::Observe).round(&overflowing(), 0).is_empty());
}

#[test]
fn an_outside_change_stands_nettune_down() {
    let f = Fixture::new("standdown");
    let mut t = f.tuner(Mode::Enforce);
    t.round(&overflowing(), 0);
    f.set_somaxconn("6000");
    let d = t.round(&overflowing(), 10_000);
    assert_eq!(d[0].result, Outcome::StoodDown);
    assert_eq!(f.somaxconn(), "6000", "the admin's value was touched");
    let d = t.round(&overflowing(), 20_000);
    assert_eq!(d[0].result, Outcome::Refused);
    assert!(
        t.journal()
            .entry("net.core.somaxconn", &Target::Node)
            .unwrap()
            .stood_down
    );
}

#[test]
fn a_restarted_tuner_continues_from_the_journal() {
    let f = Fixture::new("restart");
    f.tuner(Mode::Enforce).round(&overflowing(), 0);
    // A new process: 8192 is nettune's own value, not an admin's.
    let mut t = f.tuner(Mode::Enforce);
    let d = t.round(&overflowing(), 10_000);
    assert_eq!(
        (d[0].result, d[0].to.as_deref()),
        (Outcome::Applied, Some("16384"))
    );
    assert_eq!(
        t.journal()
            .entry("net.core.somaxconn", &Target::Node)
            .unwrap()
            .original,
        "4096"
    );
}

#[test]
fn a_failed_write_is_reported_and_the_original_stays_journaled() {
    let f = Fixture::new("fail");
    f.system.remove_sysctl(&Target::Node, "net.core.somaxconn");
    let d = f.tuner(Mode::Enforce).round(&overflowing(), 0);
    assert_eq!(d[0].result, Outcome::Failed);
    assert!(
        d[0].reason
            .as_deref()
            .unwrap()
            .starts_with("reading net.core.somaxconn")
    );
}

#[test]
fn profiles_apply_through_the_guardrails() {
    let f = Fixture::new("profile");
    let mut t = f.tuner(Mode::Observe);
    let values: BTreeMap<String, String> = [
        ("net.core.somaxconn".to_owned(), "32768".to_owned()),
        (
            "net.netfilter.nf_conntrack_max".to_owned(),
            "1048576".to_owned(),
        ),
        ("net.ipv4.tcp_max_syn_backlog".to_owned(), "512".to_owned()),
    ]
    .into_iter()
    .collect();
    let dry = t.apply("production", &values, true, 0);
    let advised: Vec<&str> = dry
        .iter()
        .filter(|d| d.result == Outcome::Advised)
        .map(|d| d.sysctl.as_str())
        .collect();
    assert_eq!(
        advised,
        ["net.core.somaxconn", "net.netfilter.nf_conntrack_max"],
        "{dry:?}"
    );

    assert_eq!(f.somaxconn(), "4096");
    let applied = t.apply("production", &values, false, 0);
    let by_name = |n: &str| applied.iter().find(|d| d.sysctl == n).unwrap();
    assert_eq!(by_name("net.core.somaxconn").result, Outcome::Applied);
    assert_eq!(f.somaxconn(), "32768");
    // 1024 > 512: the profile never lowers room the node already has.
    assert_eq!(
        by_name("net.ipv4.tcp_max_syn_backlog").result,
        Outcome::Refused
    );
    assert_eq!(t.journal().entries().len(), 2);
}

#[test]
fn nodeports_are_reserved_once() {
    assert_eq!(
        reserve_nodeports(&Value::Text(String::new())),
        Some(Value::Text("30000-32767".into()))
    );
    assert_eq!(
        reserve_nodeports(&Value::Text("8080".into())),
        Some(Value::Text("8080,30000-32767".into()))
    );
    assert_eq!(reserve_nodeports(&Value::Text("30000-32767".into())), None);
}
