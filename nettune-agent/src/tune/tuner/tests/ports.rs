//! Reserved ports and the port range: the node's own ports stay protected.

use super::*;

/// The node with connect() failing for lack of ephemeral ports.
pub(super) fn exhausted() -> Snapshot {
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
    pub(super) fn with_ports(self, reserved: &str) -> Self {
        self.system.set_sysctl(&Target::Node, RESERVED, reserved);
        self.system.set_sysctl(&Target::Node, RANGE, "32768\t60999");
        self.system
            .set_sysctl(&Target::Node, "net.ipv4.tcp_tw_reuse", "2");
        self
    }

    pub(super) fn tuner_with(
        &self,
        mode: Mode,
        change: impl FnOnce(&mut TuningConfig),
    ) -> Tuner<&FakeSystem> {
        let mut config = TuningConfig {
            mode,
            state_dir: self.state.clone(),
            ..TuningConfig::default()
        };
        change(&mut config);
        Tuner::new(&self.system, config, 0).unwrap()
    }
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
    let report = rollback(&Actuator::new(&f.system), &mut journal, false, 0).unwrap();
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
    let report = rollback(&Actuator::new(&f.system), &mut journal, false, 0).unwrap();
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
    let report = rollback(&Actuator::new(&f.system), &mut journal, false, 0).unwrap();
    assert_eq!(
        f.somaxconn(),
        "6000",
        "the admin's value was overwritten: {report:?}"
    );
    assert_eq!(report.stood_down.len(), 1, "{report:?}");
    let report = rollback(&Actuator::new(&f.system), &mut journal, true, 0).unwrap();
    assert_eq!(f.somaxconn(), "4096", "{report:?}");
    assert!(Journal::open(&f.state).unwrap().entries().is_empty());
}

/// An enforcing tuner raised somaxconn in pod-a (namespace inode 7); then the
/// pod went and a new namespace got the same inode (the kernel reuses them),
/// with somaxconn 1111. Returns the pod's target and the Snapshot of the raise.
fn raised_in_a_pod_whose_inode_was_reused(name: &str) -> (Fixture, Target, Snapshot) {
    let f = Fixture::new(name);
    f.system.add_namespace(7, Some("pod-a"), false);
    let pod = pod_a();
    f.system.set_sysctl(&pod, "net.core.somaxconn", "4096");
    let snapshot = pod_a_overflowing();
    let d = f
        .tuner_with(Mode::Enforce, |c| c.pod_netns = vec!["netns:pod-a".into()])
        .round(&snapshot, 0);
    assert_eq!(d[0].result, Outcome::Applied, "{d:?}");
    f.system.remove_namespace(7);
    f.system.add_namespace(7, Some("pod-a"), false);
    f.system.set_sysctl(&pod, "net.core.somaxconn", "1111");
    (f, pod, snapshot)
}

#[test]
fn rollback_never_writes_into_a_new_namespace_that_reused_an_inode() {
    let (f, pod, _) = raised_in_a_pod_whose_inode_was_reused("inode-reuse");
    let mut journal = Journal::open(&f.state).unwrap();
    let report = rollback(&Actuator::new(&f.system), &mut journal, false, 0).unwrap();
    assert_eq!(
        f.system.sysctl(&pod, "net.core.somaxconn").as_deref(),
        Some("1111"),
        "an old original was written into another namespace: {report:?}"
    );
    assert_eq!(report.gone.len(), 1, "{report:?}");
}

#[test]
fn an_advising_tuner_leaves_a_departed_namespaces_entry_to_the_writer() {
    let (f, _, snapshot) = raised_in_a_pod_whose_inode_was_reused("inode-reuse-advise");
    let journal = f.state.join("journal.json");
    let before = fs::read_to_string(&journal).unwrap();
    f.tuner_with(Mode::Advise, |c| c.pod_netns = vec!["netns:pod-a".into()])
        .round(&snapshot, 10_000);
    assert_eq!(
        fs::read_to_string(&journal).unwrap(),
        before,
        "an advising tuner dropped an entry"
    );
}

/// A listener on `port` in namespace `netns`.
fn listening(netns: u32, port: u16) -> Listener {
    let mut l = overflowing().listeners.remove(0);
    l.netns = netns;
    l.port = port;
    l.overflows = CounterRate::default();
    l
}

#[test]
fn what_the_node_listens_on_below_the_range_is_reserved_before_widening() {
    // A control-plane node: the API server, etcd and the scheduler listen
    // under 32768; port 80 is below the lowest port widening can reach and
    // 45000 is already ephemeral.
    let f = Fixture::new("reserve-listening").with_ports("");
    let mut s = exhausted();
    s.listeners = [80, 2379, 2380, 6443, 10259, 45000]
        .into_iter()
        .map(|p| listening(1, p))
        .collect();
    let d = f.tuner(Mode::Enforce).round(&s, 10_000);
    assert_eq!(decision(&d, RESERVED).result, Outcome::Applied, "{d:?}");
    assert_eq!(
        f.system.sysctl(&Target::Node, RESERVED).as_deref(),
        Some("2379-2380,6443,9100,10250,10256,10259,30000-32767")
    );
    assert_eq!(decision(&d, RANGE).result, Outcome::Applied, "{d:?}");
}

#[test]
fn a_pods_namespace_is_widened_only_after_what_listens_there_is_reserved() {
    let f = Fixture::new("reserve-pod");
    f.system.add_namespace(7, Some("pod-a"), false);
    let pod = Target::Netns {
        inode: 7,
        label: "netns:pod-a".into(),
    };
    f.system.set_sysctl(&pod, RESERVED, "");
    f.system.set_sysctl(&pod, RANGE, "32768\t60999");
    f.system.set_sysctl(&pod, "net.ipv4.tcp_tw_reuse", "2");
    let mut w = WorkloadFigures::new(
        7,
        Workload::new(
            crate::model::workload::WorkloadKind::NamedNetns,
            "netns:pod-a",
        ),
    );
    w.connect_eaddrnotavail = CounterRate {
        total: 50,
        per_second: 5.0,
    };
    let mut s = crate::model::snapshot::for_tests(vec![w]);
    s.listeners = vec![listening(7, 8080)];
    let d = f
        .tuner_with(Mode::Enforce, |c| c.pod_netns = vec!["netns:pod-a".into()])
        .round(&s, 10_000);
    assert_eq!(
        f.system.sysctl(&pod, RESERVED).as_deref(),
        Some("8080"),
        "the pod's own port was left to ephemeral use: {d:?}"
    );
    assert_eq!(decision(&d, RANGE).result, Outcome::Applied, "{d:?}");
    assert_eq!(
        f.system.sysctl(&pod, RANGE).as_deref(),
        Some("4537\t60999"),
        "one step (tuning.max_step) past 8080"
    );
}
