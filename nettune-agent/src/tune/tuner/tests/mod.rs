use std::{collections::BTreeMap, fs, path::PathBuf};

use super::*;
use crate::model::sysctl_writers::SysctlWriterFigures;
use crate::sys::fake::logs;
use crate::tune::rollback::rollback;
use crate::{
    model::{
        counter::CounterRate,
        sample::{Attribution, NetnsSysctls},
        snapshot::{Listener, WorkloadFigures},
        workload::Workload,
    },
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

/// The node's accept queue overflows on a listener that asked for more than
/// somaxconn 4096 and sits at it: the somaxconn rule raises.
fn overflowing() -> Snapshot {
    overflowing_with(65535, 4096, 5.0, 50)
}

/// Listen overflows on the node at `per_second` (`total` so far), on a listener
/// that asked for `requested` and got `limit`.
fn overflowing_with(requested: u32, limit: u32, per_second: f64, total: u64) -> Snapshot {
    let mut node = WorkloadFigures::new(1, Workload::node());
    node.listen_overflows = CounterRate { total, per_second };
    node.netns_sysctls = Some(NetnsSysctls {
        somaxconn: Some(4096),
        ..NetnsSysctls::default()
    });
    let mut s = crate::model::snapshot::for_tests(vec![node]);
    s.listeners = vec![Listener {
        netns: 1,
        address: std::net::Ipv4Addr::UNSPECIFIED.into(),
        port: 8080,
        inode: 77,
        process: Some("server".into()),
        requested_backlog: Some(requested),
        capped_by_somaxconn: None,
        limit,
        queue: limit + 1,
        overflows: CounterRate { total, per_second },
        attribution: Attribution::AtLimit,
    }];
    s
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
    let report = rollback(&actuator, &mut journal, false, 0).unwrap();
    assert_eq!(report.restored.len(), 1);
    assert_eq!(f.somaxconn(), "4096");
    let again = rollback(&actuator, &mut journal, false, 0).unwrap();
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
fn an_advising_tuner_never_writes_the_journal_an_enforcing_one_keeps() {
    // What `nettune top`'s embedded agent and a demoted daemon run: advise,
    // next to an enforcing daemon's journal.
    let f = Fixture::new("advise-journal");
    f.tuner(Mode::Enforce).round(&overflowing(), 0);
    let journal = f.state.join("journal.json");
    let before = fs::read_to_string(&journal).unwrap();
    // Someone else changes the value: an enforcing tuner would stand down
    // and record it; an advising one only says so.
    f.set_somaxconn("6000");
    let d = f.tuner(Mode::Advise).round(&overflowing(), 10_000);
    assert_eq!(d[0].result, Outcome::StoodDown, "{}", d[0]);
    assert_eq!(
        fs::read_to_string(&journal).unwrap(),
        before,
        "an advising tuner changed the journal"
    );
}

#[test]
fn a_stand_down_names_the_writer_the_sysctl_probe_saw() {
    let f = Fixture::new("standdown-writer");
    let mut t = f.tuner(Mode::Enforce);
    t.round(&overflowing(), 0);
    f.set_somaxconn("6000");
    let mut seen = overflowing();
    let writer = |command: &str, pid: u32, writes: u64, own: bool| SysctlWriterFigures {
        sysctl: "net.core.somaxconn".into(),
        command: command.into(),
        pid,
        cgroup_id: 1,
        value: "6000".into(),
        writes,
        own,
        refused: 0,
        pod: None,
        netns: None,
    };
    seen.sysctl_writers = vec![
        writer("nettune", std::process::id(), 5, true),
        writer("kube-proxy", 812, 1, false),
    ];
    let d = t.round(&seen, 10_000);
    assert_eq!(d[0].result, Outcome::StoodDown);
    assert!(
        d[0].reason
            .as_deref()
            .is_some_and(|r| r.ends_with("(kube-proxy (pid 812) wrote 6000)")),
        "{:?}",
        d[0].reason
    );
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

fn decision<'a>(d: &'a [Decision], sysctl: &str) -> &'a Decision {
    d.iter()
        .find(|d| d.sysctl == sysctl)
        .unwrap_or_else(|| panic!("no decision on {sysctl}: {d:?}"))
}

/// The opted-in pod `netns:pod-a` (namespace inode 7).
fn pod_a() -> Target {
    Target::Netns {
        inode: 7,
        label: "netns:pod-a".into(),
    }
}

/// Pod-a's listener overflows as [`overflowing`]'s does on the node.
fn pod_a_overflowing() -> Snapshot {
    let mut w = WorkloadFigures::new(
        7,
        Workload::new(
            crate::model::workload::WorkloadKind::NamedNetns,
            "netns:pod-a",
        ),
    );
    w.listen_overflows = CounterRate {
        total: 9,
        per_second: 3.0,
    };
    w.netns_sysctls = overflowing().workloads[0].netns_sysctls;
    let mut s = crate::model::snapshot::for_tests(vec![w]);
    s.listeners = overflowing().listeners;
    s.listeners[0].netns = 7;
    s
}

mod faults;
mod identity;
mod journal;
mod ports;
mod verdicts;

#[test]
fn a_pod_the_runtime_names_anew_keeps_its_one_entry_original_and_cooldown() {
    // The runtime was down (the pod known by its UID), then answers again (the
    // pod is `shop/web-1`): the same namespace, a new label.
    let f = Fixture::new("relabel");
    f.system.add_namespace(7, None, false);
    let labelled = |label: &str| -> Snapshot {
        let mut s = pod_a_overflowing();
        let w = &mut s.workloads[0];
        w.workload = Workload::pod("", label, "6f1f5c1e");
        w.workload.tune_netns = true;
        s
    };
    let target = |label: &str| Target::Netns {
        inode: 7,
        label: labelled(label).workloads[0].workload.display_name(),
    };
    f.system
        .set_sysctl(&target("6f1f5c1e"), "net.core.somaxconn", "4096");
    let d = f.tuner(Mode::Enforce).round(&labelled("6f1f5c1e"), 0);
    assert_eq!(d[0].result, Outcome::Applied, "{}", d[0]);
    // A restarted agent, a second later, with the pod's name.
    let d = f.tuner(Mode::Enforce).round(&labelled("web-1"), 1);
    assert_ne!(
        d[0].result,
        Outcome::Applied,
        "no cooldown across the rename: {}",
        d[0]
    );
    assert_eq!(
        f.system
            .sysctl(&target("web-1"), "net.core.somaxconn")
            .as_deref(),
        Some("8192")
    );
    let journal = Journal::open(&f.state).unwrap();
    assert_eq!(journal.entries().len(), 1, "{:?}", journal.entries());
    assert_eq!(journal.entries()[0].original, "4096");
}

#[test]
fn the_entries_of_pods_that_went_are_forgotten_and_the_journal_does_not_grow_with_churn() {
    let f = Fixture::new("churn");
    for round in 0..3u64 {
        f.system.add_namespace(7, Some("pod-a"), false);
        f.system.set_sysctl(&pod_a(), "net.core.somaxconn", "4096");
        let mut t = f.tuner_with(Mode::Enforce, |c| c.pod_netns = vec!["netns:pod-a".into()]);
        let d = t.round(&pod_a_overflowing(), round * 10_000);
        assert_eq!(d[0].result, Outcome::Applied, "{}", d[0]);
        // The pod goes (its namespace with it); the next round forgets it.
        f.system.remove_namespace(7);
        t.round(
            &crate::model::snapshot::for_tests(Vec::new()),
            round * 10_000 + 1,
        );
        let journal = Journal::open(&f.state).unwrap();
        assert!(
            journal.entries().is_empty(),
            "round {round}: {:?}",
            journal.entries()
        );
    }
}
