use std::{collections::BTreeSet, sync::Arc};

use super::{
    catalog::{self, Kind},
    series::{INTERFACE_SERIES, LISTENERS_PER_WORKLOAD, WORKLOAD_SERIES},
    *,
};
use crate::model::{
    counter::CounterRate,
    drop_reasons::DropReasons,
    probes::Report,
    sample::{Attribution, NetnsSample, Sample},
    snapshot::{Context, Listener, Snapshot},
    tuning::Mode,
    workload::{IdentitySource, Workload, WorkloadKind},
};

/// The node and `pods` named namespaces, each with 2 NO_SOCKET drops and 10 sent
/// segments; the container runtime answers.
fn published(pods: u32) -> Arc<Published> {
    published_with(pods, true)
}

pub(super) fn published_with(pods: u32, runtime_up: bool) -> Arc<Published> {
    let mut sample = Sample::default();
    for i in 0..=pods {
        let workload = if i == 0 {
            Workload::node()
        } else {
            Workload::new(WorkloadKind::NamedNetns, format!("netns:p{i:03}"))
        };
        sample.netns.insert(
            i + 1,
            NetnsSample {
                workload: Some(workload),
                drops: [((1, 3), 2)].into_iter().collect(),
                out_segs: Some(10),
                ..NetnsSample::default()
            },
        );
    }
    let sources = [IdentitySource {
        source: "cri".into(),
        up: runtime_up,
        detail: "/run/containerd/containerd.sock".into(),
        outages: 0,
    }];
    Arc::new(publish(with_context(&sources, |ctx| {
        Snapshot::build(&sample, None, 1.0, ctx)
    })))
}

/// The Snapshot context the tests build from: node `n`, kernel 6.18, observe
/// mode, NO_SOCKET as reason 3.
pub(super) fn with_context<R>(sources: &[IdentitySource], f: impl FnOnce(&Context<'_>) -> R) -> R {
    let (report, reasons) = (
        Report::default(),
        DropReasons::from_enum(&[("SKB_DROP_REASON_NO_SOCKET".into(), 3)]),
    );
    f(&Context {
        taken_at_unix_seconds: 0.0,
        node: "n",
        kernel: "6.18",
        mode: Mode::Observe,
        uptime_seconds: 1.0,
        collection_seconds: 0.5,
        report: &report,
        reasons: &reasons,
        identity_sources: sources,
    })
}

/// `snapshot` as the collection thread publishes it, with no tuner.
pub(super) fn publish(snapshot: Snapshot) -> Published {
    Published {
        snapshot,
        tuning: None,
        mode_demoted: None,
        kernel_log_records: 0,
        run_netns_unpropagated: false,
        event_collections_suppressed: 0,
        events_received: Default::default(),
    }
}

/// `/metrics` for `published` with at most `cap` pods' own series.
pub(super) fn render_capped(published: &Published, cap: usize) -> String {
    let mut p = published.clone();
    p.snapshot.fold(cap);
    let bytes = Exporter::new().render(&p);
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn render(pods: u32, cap: usize) -> String {
    render_capped(&published(pods), cap)
}

#[test]
fn every_rendered_metric_is_declared() {
    let text = render(3, 100);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(
            catalog::ALL.iter().any(|m| m.name == name) || name.starts_with("process_"),
            "undeclared metric {name}"
        );
    }
    assert!(
        text.contains("process_resident_memory_bytes "),
        "the agent's own memory"
    );
    assert!(
        text.contains(
            "nettune_drops_total{namespace=\"\",pod=\"netns:p001\",reason=\"NO_SOCKET\"} 2"
        )
    );
    assert!(text.contains("# TYPE nettune_drops_total counter"));
    assert!(
        text.contains("nettune_drops_total{namespace=\"\",pod=\"node\",reason=\"NO_SOCKET\"} 2")
    );
}

#[test]
fn every_series_table_names_a_declared_metric() {
    let declared = |name: &str| catalog::ALL.iter().any(|m| m.name == name);
    for (metric, _) in WORKLOAD_SERIES {
        assert!(declared(metric.name), "{}", metric.name);
    }
    for (metric, _) in INTERFACE_SERIES {
        assert!(declared(metric.name), "{}", metric.name);
    }
}

#[test]
fn declared_metrics_follow_naming_rules() {
    let mut names = BTreeSet::new();
    for m in catalog::ALL {
        assert!(names.insert(m.name), "{} declared twice", m.name);
        assert!(m.name.starts_with("nettune_"), "{}", m.name);
        assert_eq!(
            m.kind == Kind::Counter,
            m.name.ends_with("_total"),
            "{}: counters end in _total",
            m.name
        );
        assert!(!m.help.is_empty(), "{} has no help", m.name);
    }
    // Desc::new accepts every name and label.
    Exporter::new();
}

#[test]
fn pods_beyond_the_cap_are_folded_into_other() {
    let text = render(5, 2);
    let pods: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("nettune_drops_total{"))
        .filter_map(|l| l.split("pod=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        pods.into_iter().collect::<Vec<_>>(),
        ["_other", "netns:p001", "netns:p002", "node"]
    );
    assert!(
        text.contains("nettune_drops_total{namespace=\"\",pod=\"_other\",reason=\"NO_SOCKET\"} 6")
    );
    assert!(text.contains("nettune_workloads_folded 3"));
}

#[test]
fn other_carries_every_series_the_pods_have() {
    // The hand-synced fold lost OutSegs: `_other`'s retransmission ratio was wrong.
    let text = render(5, 2);
    assert!(
        text.contains("nettune_tcp_out_segments_total{namespace=\"\",pod=\"_other\"} 30"),
        "{text}"
    );
    let per_pod: Vec<&str> = WORKLOAD_SERIES.iter().map(|(m, _)| m.name).collect();
    for name in per_pod
        .iter()
        .filter(|n| text.contains(&format!("{n}{{namespace=\"\",pod=\"netns:p001\"}}")))
    {
        assert!(
            text.contains(&format!("{name}{{namespace=\"\",pod=\"_other\"}}")),
            "_other lacks {name}"
        );
    }
}

#[test]
fn the_readme_lists_every_metric_as_the_catalog_says() {
    let readme = include_str!("../../../../README.md");
    let table = catalog::markdown_table();
    assert!(
        readme.contains(&table),
        "README.md's table of metrics differs from the catalog; it should read:\n{table}"
    );
    for m in catalog::ALL {
        let kind = m.kind.name();
        assert!(
            readme.contains(&format!("| `{}` | {kind} |", m.name)),
            "README.md does not list {} ({kind})",
            m.name
        );
    }
}

#[test]
fn a_counter_rate_is_exported_as_its_total() {
    let mut p = (*published(1)).clone();
    p.snapshot.workloads[1].retransmit_segments = CounterRate {
        total: 42,
        per_second: 3.0,
    };
    let text = render_capped(&p, 10);
    assert!(
        text.contains(
            "nettune_tcp_retransmit_segments_total{namespace=\"\",pod=\"netns:p001\"} 42"
        )
    );
}

/// A listener of `netns` on `port` with 10 overflows.
fn listener(netns: u32, port: u16, inode: u32) -> Listener {
    Listener {
        netns,
        address: std::net::Ipv4Addr::UNSPECIFIED.into(),
        port,
        inode,
        process: Some("server".into()),
        requested_backlog: Some(511),
        capped_by_somaxconn: None,
        limit: 128,
        queue: 3,
        overflows: CounterRate {
            total: 10,
            per_second: 0.0,
        },
        attribution: Attribution::AtLimit,
    }
}

/// The series of `name` in `text`, sorted (the exposition keeps the
/// Snapshot's order, which tests need not know).
pub(super) fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .collect();
    lines.sort_unstable();
    lines
}

#[test]
fn listeners_of_folded_pods_are_summed_not_listed() {
    let mut p = (*published(5)).clone();
    for (netns, port) in [(2, 80), (6, 81), (6, 82)] {
        p.snapshot
            .listeners
            .push(listener(netns, port, u32::from(port)));
    }
    let text = render_capped(&p, 2);
    let own = r#"namespace="",pod="netns:p001",address="0.0.0.0",port="80",process="server""#;
    let other = r#"namespace="",pod="_other",address="",port="_other",process="""#;
    assert_eq!(
        series(&text, "nettune_listen_socket_overflows_total"),
        [
            format!("nettune_listen_socket_overflows_total{{{other}}} 20"),
            format!("nettune_listen_socket_overflows_total{{{own}}} 10"),
        ]
    );
    assert_eq!(
        series(&text, "nettune_listen_backlog_requested"),
        [format!("nettune_listen_backlog_requested{{{own}}} 511")],
        "a folded series has no single requested backlog"
    );
    assert_eq!(
        series(&text, "nettune_listen_backlog_limit"),
        [
            format!("nettune_listen_backlog_limit{{{other}}} 256"),
            format!("nettune_listen_backlog_limit{{{own}}} 128"),
        ]
    );
}

#[test]
fn a_pods_listeners_beyond_its_share_fold_into_one_port_and_reuseport_groups_sum() {
    let mut p = (*published(1)).clone();
    for port in 0..(LISTENERS_PER_WORKLOAD as u16 + 3) {
        p.snapshot
            .listeners
            .push(listener(2, 1000 + port, u32::from(port)));
    }
    // Two sockets of one SO_REUSEPORT group: one series, their sums.
    p.snapshot.listeners.push(listener(2, 1000, 999));
    let text = render_capped(&p, 10);
    let queues = series(&text, "nettune_listen_queue_length");
    assert_eq!(queues.len(), LISTENERS_PER_WORKLOAD + 1, "{queues:#?}");
    assert!(
        queues.contains(
            &r#"nettune_listen_queue_length{namespace="",pod="netns:p001",address="0.0.0.0",port="1000",process="server"} 6"#
        ),
        "{queues:#?}"
    );
    assert!(
        queues
            .iter()
            .any(|l| l.contains(r#"port="_other""#) && l.ends_with(" 9"))
    );
}

#[test]
fn a_runtime_named_pod_has_its_namespace_and_name_and_no_uid_label() {
    let mut p = (*published(1)).clone();
    p.snapshot.workloads[1].workload =
        Workload::pod("shop", "web-1", "6f1f5c1e-7c6b-4c55-9d0a-1c5a7e0b1f2a");
    let text = render_capped(&p, 10);
    assert!(
        text.contains(
            "nettune_drops_total{namespace=\"shop\",pod=\"web-1\",reason=\"NO_SOCKET\"} 2"
        ),
        "{text}"
    );
    assert!(!text.contains("6f1f5c1e"), "the UID is not a label: {text}");
}

#[test]
fn the_identity_source_gauge_follows_the_runtime() {
    let up = render_capped(&published_with(1, true), 10);
    assert!(
        up.contains("nettune_identity_source{source=\"cri\"} 1"),
        "{up}"
    );
    let down = render_capped(&published_with(1, false), 10);
    assert!(
        down.contains("nettune_identity_source{source=\"cri\"} 0"),
        "{down}"
    );
}

#[test]
fn received_events_are_exported_by_kind() {
    let mut p = (*published(0)).clone();
    p.events_received.netfilter_drop = 7;
    p.events_received.listen_overflow = 2;
    let text = render_capped(&p, 10);
    assert_eq!(
        series(&text, "nettune_events_received_total"),
        [
            "nettune_events_received_total{kind=\"listen_overflow\"} 2",
            "nettune_events_received_total{kind=\"netfilter_drop\"} 7",
            "nettune_events_received_total{kind=\"other\"} 0",
        ]
    );
}

#[test]
fn a_tuner_off_for_an_unusable_journal_is_a_gauge_to_alert_on() {
    let mut p = (*published(0)).clone();
    p.mode_demoted = Some(crate::model::tuning::Demotion::JournalUnusable);
    let text = String::from_utf8(Exporter::new().render(&p).to_vec()).unwrap();
    assert!(
        text.contains("nettune_tuning_demoted{reason=\"journal_unusable\"} 1"),
        "{text}"
    );
    assert!(text.contains("nettune_tuning_demoted{reason=\"proc_sys_read_only\"} 0"));
    // Not demoted: every reason is 0, so an alert can tell "fine" from "absent".
    let text = render(0, 100);
    assert!(text.contains("nettune_tuning_demoted{reason=\"journal_unusable\"} 0"));
}
