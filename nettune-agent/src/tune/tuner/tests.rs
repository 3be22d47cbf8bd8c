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
    let report = rollback(&actuator, &mut journal, false).unwrap();
    assert_eq!(report.restored.len(), 1);
    assert_eq!(f.somaxconn(), "4096");
    let again = rollback(&actuator, &mut journal, false).unwrap();
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

/// The node with connect() failing for lack of ephemeral ports.
fn exhausted() -> Snapshot {
    let mut node = WorkloadFigures::new(1, Workload::node());
    node.connect_eaddrnotavail = CounterRate {
        total: 50,
        per_second: 5.0,
    };
    crate::model::snapshot::for_tests(vec![node])
}

const RESERVED: &str = "net.ipv4.ip_local_reserved_ports";
const RANGE: &str = "net.ipv4.ip_local_port_range";

impl Fixture {
    /// Adds the port sysctls, with `reserved` as the list found.
    fn with_ports(self, reserved: &str) -> Self {
        self.system.set_sysctl(&Target::Node, RESERVED, reserved);
        self.system.set_sysctl(&Target::Node, RANGE, "32768\t60999");
        self.system
            .set_sysctl(&Target::Node, "net.ipv4.tcp_tw_reuse", "2");
        self
    }

    fn tuner_with(&self, mode: Mode, change: impl FnOnce(&mut TuningConfig)) -> Tuner<&FakeSystem> {
        let mut config = TuningConfig {
            mode,
            state_dir: self.state.clone(),
            ..TuningConfig::default()
        };
        change(&mut config);
        Tuner::new(&self.system, config, 0).unwrap()
    }
}

fn decision<'a>(d: &'a [Decision], sysctl: &str) -> &'a Decision {
    d.iter()
        .find(|d| d.sysctl == sysctl)
        .unwrap_or_else(|| panic!("no decision on {sysctl}: {d:?}"))
}

#[test]
fn reserving_ports_passes_the_same_guardrails_as_every_change() {
    let f = Fixture::new("reserve-guard").with_ports("");
    let mut t = f.tuner_with(Mode::Enforce, |c| c.exclude = vec![RESERVED.into()]);
    let d = t.round(&exhausted(), 10_000);
    let reserve = decision(&d, RESERVED);
    assert_eq!(reserve.result, Outcome::Refused, "{reserve}");
    assert_eq!(
        f.system.sysctl(&Target::Node, RESERVED).as_deref(),
        Some("")
    );
    // And no widening while the ports it would expose are not reserved.
    assert_ne!(decision(&d, RANGE).result, Outcome::Applied);
    assert_eq!(
        f.system.sysctl(&Target::Node, RANGE).as_deref(),
        Some("32768\t60999")
    );
}

#[test]
fn the_nodes_own_ports_are_reserved_merged_with_what_is_there_before_widening() {
    let f = Fixture::new("reserve-merge").with_ports("8080");
    let mut t = f.tuner_with(Mode::Enforce, |c| c.lowest_ephemeral_port = 20_000);
    let d = t.round(&exhausted(), 10_000);
    assert_eq!(decision(&d, RESERVED).result, Outcome::Applied);
    assert_eq!(
        f.system.sysctl(&Target::Node, RESERVED).as_deref(),
        Some("8080,9100,10250,10256,30000-32767")
    );
    assert_eq!(decision(&d, RANGE).result, Outcome::Applied);
    assert_eq!(
        f.system.sysctl(&Target::Node, RANGE).as_deref(),
        Some("20000\t60999"),
        "the configured lowest port is the floor"
    );
}

#[test]
fn rolling_back_an_empty_original_empties_the_value_and_says_so_only_if_it_did() {
    let f = Fixture::new("empty-original").with_ports("");
    f.tuner(Mode::Enforce).round(&exhausted(), 10_000);
    assert_ne!(
        f.system.sysctl(&Target::Node, RESERVED).as_deref(),
        Some("")
    );
    let mut journal = Journal::open(&f.state).unwrap();
    let report = rollback(&Actuator::new(&f.system), &mut journal, false).unwrap();
    assert_eq!(
        f.system.sysctl(&Target::Node, RESERVED).as_deref(),
        Some(""),
        "{report:?}"
    );
    assert!(report.failed.is_empty(), "{report:?}");
}

#[test]
fn a_restore_that_does_not_take_is_a_failure_and_stays_journaled() {
    let f = Fixture::new("restore-verify");
    f.tuner(Mode::Enforce).round(&overflowing(), 0);
    f.system.ignore_writes(&Target::Node, "net.core.somaxconn");
    let mut journal = Journal::open(&f.state).unwrap();
    let report = rollback(&Actuator::new(&f.system), &mut journal, false).unwrap();
    assert!(report.restored.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(Journal::open(&f.state).unwrap().entries().len(), 1);
}

#[test]
fn a_profile_that_widens_the_port_range_reserves_the_protected_ports_first() {
    let f = Fixture::new("profile-ports").with_ports("");
    let values: BTreeMap<String, String> = [(RANGE.to_owned(), "1024 65535".to_owned())].into();
    let d = f
        .tuner(Mode::Observe)
        .apply("production", &values, false, 0);
    assert_eq!(
        d.iter()
            .map(|d| (d.sysctl.as_str(), d.result))
            .collect::<Vec<_>>(),
        [(RESERVED, Outcome::Applied), (RANGE, Outcome::Applied)],
        "{d:?}"
    );
    assert_eq!(
        f.system.sysctl(&Target::Node, RESERVED).as_deref(),
        Some("9100,10250,10256,30000-32767")
    );
    // Excluded reservation: no widening, and nothing written.
    let f = Fixture::new("profile-ports-excluded").with_ports("");
    let d = f
        .tuner_with(Mode::Observe, |c| c.exclude = vec![RESERVED.into()])
        .apply("production", &values, false, 0);
    assert_eq!(decision(&d, RANGE).result, Outcome::Refused, "{d:?}");
    assert_eq!(
        f.system.sysctl(&Target::Node, RANGE).as_deref(),
        Some("32768\t60999")
    );
}

#[test]
fn rollback_leaves_values_someone_else_owns_unless_forced() {
    let f = Fixture::new("rollback-stood-down");
    let mut t = f.tuner(Mode::Enforce);
    t.round(&overflowing(), 0);
    f.set_somaxconn("6000");
    t.round(&overflowing(), 10_000);
    let mut journal = Journal::open(&f.state).unwrap();
    let report = rollback(&Actuator::new(&f.system), &mut journal, false).unwrap();
    assert_eq!(
        f.somaxconn(),
        "6000",
        "the admin's value was overwritten: {report:?}"
    );
    assert_eq!(report.stood_down.len(), 1, "{report:?}");
    let report = rollback(&Actuator::new(&f.system), &mut journal, true).unwrap();
    assert_eq!(f.somaxconn(), "4096", "{report:?}");
    assert!(Journal::open(&f.state).unwrap().entries().is_empty());
}

#[test]
fn rollback_never_writes_into_a_new_namespace_that_reused_an_inode() {
    let f = Fixture::new("inode-reuse");
    f.system.add_namespace(7, Some("pod-a"), false);
    let pod = Target::Netns {
        inode: 7,
        label: "netns:pod-a".into(),
    };
    f.system.set_sysctl(&pod, "net.core.somaxconn", "4096");
    let mut overflowing_pod = WorkloadFigures::new(
        7,
        Workload::new(
            crate::model::workload::WorkloadKind::NamedNetns,
            "netns:pod-a",
        ),
    );
    overflowing_pod.listen_overflows = CounterRate {
        total: 9,
        per_second: 3.0,
    };
    overflowing_pod.netns_sysctls = overflowing().workloads[0].netns_sysctls;
    let mut snapshot = crate::model::snapshot::for_tests(vec![overflowing_pod]);
    snapshot.listeners = overflowing().listeners;
    snapshot.listeners[0].netns = 7;
    let d = f
        .tuner_with(Mode::Enforce, |c| c.pod_netns = vec!["netns:pod-a".into()])
        .round(&snapshot, 0);
    assert_eq!(d[0].result, Outcome::Applied, "{d:?}");
    // The pod goes; a new namespace gets the same inode (the kernel reuses them).
    f.system.remove_namespace(7);
    f.system.add_namespace(7, Some("pod-a"), false);
    f.system.set_sysctl(&pod, "net.core.somaxconn", "1111");
    let mut journal = Journal::open(&f.state).unwrap();
    let report = rollback(&Actuator::new(&f.system), &mut journal, false).unwrap();
    assert_eq!(
        f.system.sysctl(&pod, "net.core.somaxconn").as_deref(),
        Some("1111"),
        "an old original was written into another namespace: {report:?}"
    );
    assert_eq!(report.gone.len(), 1, "{report:?}");
}

/// A tuner that may change a value every second and judges a change in 10 s.
fn quick(f: &Fixture) -> Tuner<&FakeSystem> {
    f.tuner_with(Mode::Enforce, |c| {
        c.cooldown_seconds = 1;
        c.verdict_seconds = 10;
    })
}

fn effect_count(t: &Tuner<&FakeSystem>, verdict: &str) -> u64 {
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

impl Fixture {
    /// Makes every journal write of this process fail from now on, as a full or
    /// read-only state directory would (root ignores permissions, so the
    /// temporary file's name is taken by a directory instead).
    fn break_journal_writes(&self) {
        fs::create_dir_all(self.journal_tmp()).unwrap();
    }

    /// The state directory has room again.
    fn repair_journal_writes(&self) {
        fs::remove_dir_all(self.journal_tmp()).unwrap();
    }

    fn journal_tmp(&self) -> PathBuf {
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
    f.system.after_next_write("net.core.somaxconn", move || {
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
        .after_next_write("net.core.somaxconn", || panic!("killed after the write"));
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
fn conntrack_full() -> Snapshot {
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
