use std::collections::BTreeMap;

use super::*;
use crate::{
    config::Mode,
    drop_reasons::DropReasons,
    netns::{Access, Namespace},
    probes::Report,
    sample::{NetnsSample, Sample},
    snapshot::Context,
};

fn snapshot(pods: u32) -> Snapshot {
    let mut sample = Sample::default();
    for i in 0..=pods {
        sample.netns.insert(
            i + 1,
            NetnsSample {
                namespace: Some(Namespace {
                    inode: i + 1,
                    access: Access::Path(format!("/run/netns/p{i}").into()),
                    name: Some(format!("p{i:03}")),
                    process: None,
                    is_host: i == 0,
                }),
                drops: [((1, 3), 2)].into_iter().collect(),
                ..NetnsSample::default()
            },
        );
    }
    let (report, reasons, peers) = (
        Report::default(),
        DropReasons::from_enum(&[("SKB_DROP_REASON_NO_SOCKET".into(), 3)]),
        BTreeMap::new(),
    );
    let ctx = Context {
        node: "n",
        kernel: "6.18",
        mode: Mode::Observe,
        uptime_seconds: 1.0,
        collection_seconds: 0.5,
        report: &report,
        reasons: &reasons,
        peers: &peers,
    };
    Snapshot::build(&sample, None, 1.0, &ctx)
}

#[test]
fn every_rendered_metric_is_declared() {
    let text = render(&snapshot(3), 100);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(
            METRICS.iter().any(|m| m.0 == name),
            "undeclared metric {name}"
        );
    }
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
fn declared_metrics_follow_naming_rules() {
    for (name, kind, _, help) in METRICS {
        assert!(name.starts_with("nettune_"), "{name}");
        assert_eq!(
            *kind == "counter",
            name.ends_with("_total"),
            "{name}: counters end in _total"
        );
        assert!(!help.is_empty(), "{name} has no help");
    }
}

#[test]
fn pods_beyond_the_cap_are_folded_into_other() {
    let text = render(&snapshot(5), 2);
    let pods: std::collections::BTreeSet<&str> = text
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
fn the_readme_lists_every_metric() {
    let readme = include_str!("../../../README.md");
    for (name, kind, _, _) in METRICS {
        assert!(
            readme.contains(&format!("| `{name}` | {kind} |")),
            "README.md does not list {name} ({kind})"
        );
    }
}
