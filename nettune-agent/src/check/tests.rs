//! The bounds and the tables on hand-made runs.

use std::collections::BTreeMap;

use super::{
    measure::{Dns, Http, Latency, Throughput},
    report::{self, Bounds, Outcome, Run, Sysctls},
    stats::Summary,
    target::Endpoint,
};
use crate::{model::tuning::Target, tune::journal::Entry};

fn endpoint(spec: &str, address: &str) -> Endpoint {
    Endpoint {
        spec: spec.into(),
        kind: "netns".into(),
        netns_path: Some(format!("/run/netns/{spec}").into()),
        inode: Some(4026532000),
        address: Some(address.parse().unwrap()),
        resolv_conf: None,
    }
}

fn summary(p50: f64, p99: f64) -> Summary {
    Summary {
        count: 100,
        min: p50 / 2.0,
        mean: (p50 + p99) / 2.0,
        p50,
        p90: p99,
        p99,
        max: p99,
    }
}

/// A run with every test measured: `mbps`, `dns_failures`, DNS p99 `dns_p99` ms.
fn run(started: f64, mbps: f64, dns_failures: u64, dns_p99: f64, somaxconn: &str) -> Run {
    Run {
        id: format!("r{started}"),
        started,
        finished: started + 10.0,
        from: endpoint("client", "10.0.0.2"),
        to: endpoint("server", "10.0.0.6"),
        throughput: Some(Outcome::Measured(Throughput {
            tool: "iperf3".into(),
            seconds: 3.0,
            mbps,
            retransmits: Some(0),
        })),
        latency: Some(Outcome::Measured(Latency {
            address: "10.0.0.6:80".parse().unwrap(),
            attempts: 100,
            failures: 0,
            first_error: None,
            connect_ms: Some(summary(0.05, 0.2)),
        })),
        ping: None,
        dns: Some(Outcome::Measured(Dns {
            server: "10.0.0.6:53".parse().unwrap(),
            resolv_conf: "/etc/netns/client/resolv.conf".into(),
            name: "ok.test".into(),
            queries: 100,
            failures: dns_failures,
            timeouts: dns_failures,
            rcodes: BTreeMap::from([("NOERROR".to_owned(), 100 - dns_failures)]),
            latency_ms: Some(summary(0.1, dns_p99)),
        })),
        http: Some(Outcome::Measured(Http {
            url: "http://10.0.0.6:80/".into(),
            requests: 1000,
            concurrency: 10,
            completed: 1000,
            errors: 0,
            non_2xx: 0,
            first_error: None,
            seconds: 0.5,
            rate: 2000.0,
            latency_ms: Some(summary(2.0, 9.0)),
        })),
        bounds: Vec::new(),
        passed: false,
        sysctls: Sysctls {
            node: BTreeMap::from([("net.core.netdev_max_backlog".to_owned(), "1000".to_owned())]),
            source: BTreeMap::from([("net.core.somaxconn".to_owned(), somaxconn.to_owned())]),
        },
        journal: Vec::new(),
    }
}

#[test]
fn a_run_passes_only_within_every_bound_it_was_given() {
    let mut r = run(1000.0, 900.0, 2, 5.0, "4096");
    r.check(&Bounds::default());
    assert!(r.passed && r.bounds.is_empty());

    let bounds = Bounds {
        min_throughput_mbps: Some(500.0),
        max_dns_failures: Some(2),
        max_dns_p99_ms: Some(5.0),
        ..Bounds::default()
    };
    r.check(&bounds);
    assert!(r.passed, "{:?}", r.bounds);
    assert_eq!(r.bounds.len(), 3);

    // One failure over the bound fails the run, and only that bound.
    let mut worse = run(1000.0, 900.0, 3, 5.0, "4096");
    worse.check(&bounds);
    assert!(!worse.passed);
    let failed: Vec<_> = worse
        .bounds
        .iter()
        .filter(|b| !b.ok)
        .map(|b| b.flag.as_str())
        .collect();
    assert_eq!(failed, ["--max-dns-failures"]);
    assert!(
        worse.table().contains("--max-dns-failures 2 FAILED"),
        "{}",
        worse.table()
    );

    // Too slow.
    let mut slow = run(1000.0, 499.0, 0, 1.0, "4096");
    slow.check(&bounds);
    assert!(!slow.passed);
}

#[test]
fn a_test_that_could_not_run_fails_the_run_and_its_bound() {
    let mut r = run(1000.0, 900.0, 0, 1.0, "4096");
    r.throughput = Some(Outcome::Failed("iperf3: unable to connect".into()));
    r.check(&Bounds {
        min_throughput_mbps: Some(1.0),
        ..Bounds::default()
    });
    assert!(!r.passed);
    assert_eq!((r.bounds[0].value, r.bounds[0].ok), (None, false));
    let table = r.table();
    assert!(
        table.contains("throughput") && table.contains("iperf3: unable to connect"),
        "{table}"
    );
    // Without a bound, a test that could not run still fails the run.
    r.check(&Bounds::default());
    assert!(!r.passed);
}

#[test]
fn the_table_lists_each_figure_with_its_unit() {
    let mut r = run(1000.0, 941.5, 0, 1.25, "4096");
    r.check(&Bounds::default());
    let table = r.table();
    for line in [
        "throughput",
        "941.5",
        "Mbit/s",
        "dns p99",
        "1.250",
        "http rate",
        "2000",
        "req/s",
    ] {
        assert!(table.contains(line), "no {line:?} in\n{table}");
    }
    assert!(table.ends_with("passed\n"), "{table}");
}

#[test]
fn a_comparison_shows_each_figure_its_change_and_the_journal_s_changes_between() {
    let a = run(1000.0, 500.0, 4, 8.0, "4096");
    let mut b = run(2000.0, 1000.0, 0, 2.0, "65535");
    let entry = |sysctl: &str, writes: Vec<u64>| Entry {
        sysctl: sysctl.into(),
        target: Target::Node,
        original: "4096".into(),
        last_written: Some("65535".into()),
        writes,
        stood_down: false,
        identity: None,
        pending: None,
    };
    // Written between the runs, and one before the first (not between).
    b.journal = vec![
        entry("net.core.somaxconn", vec![900, 1500]),
        entry("net.ipv4.tcp_tw_reuse", vec![900]),
    ];
    let changes = report::changes(&a, &b);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].sysctl, "net.core.somaxconn");
    assert_eq!(changes[0].place, "source");
    assert_eq!(
        (changes[0].before.as_deref(), changes[0].after.as_deref()),
        (Some("4096"), Some("65535"))
    );
    assert_eq!(changes[0].writes, [1500]);

    let text = report::comparison(&a, &b, &changes);
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .to_owned()
    };
    assert!(row("throughput ").contains("+100.0% better"), "{text}");
    assert!(row("dns p99").contains("-75.0% better"), "{text}");
    assert!(row("dns failures").contains("-100.0% better"), "{text}");
    // From no failures to some: the difference, not a percentage.
    let failing = report::comparison(&b, &a, &[]);
    let failures = failing
        .lines()
        .find(|l| l.starts_with("dns failures"))
        .unwrap();
    assert!(failures.ends_with("+4 worse  "), "{failing}");
    assert!(
        text.contains("net.core.somaxconn (source): 4096 → 65535  (written by nettune at 1500)"),
        "{text}"
    );

    // A value written and put back between the runs: no reading differs, the journal says.
    let mut same = run(2000.0, 1000.0, 0, 2.0, "4096");
    same.journal = vec![entry("net.ipv4.tcp_tw_reuse", vec![900, 1200])];
    let mut earlier = a.clone();
    earlier.journal = vec![entry("net.ipv4.tcp_tw_reuse", vec![900])];
    let back = report::changes(&earlier, &same);
    assert_eq!(back.len(), 1);
    assert_eq!(
        (back[0].sysctl.as_str(), back[0].place.as_str()),
        ("net.ipv4.tcp_tw_reuse", "node")
    );
    assert_eq!(back[0].writes, [1200]);
    // A run with itself: nothing in between, even a write in the second it started.
    let mut at_once = run(1200.4, 1000.0, 0, 2.0, "4096");
    at_once.journal = vec![entry("net.ipv4.tcp_tw_reuse", vec![1200])];
    assert_eq!(report::changes(&at_once, &at_once), []);
    assert!(
        report::comparison(&a, &run(2000.0, 400.0, 0, 2.0, "4096"), &[])
            .contains("no tuning changes between the two runs")
    );
    assert!(row("throughput ").contains("1000"));
}

#[test]
fn a_saved_run_reads_back_and_last_and_previous_name_the_latest_two() {
    let dir = std::env::temp_dir().join(format!("nettune-check-store-{}", std::process::id()));
    let mut first = run(1_796_313_848.0, 500.0, 0, 1.0, "4096");
    let mut second = run(1_796_313_848.5, 600.0, 0, 1.0, "4096");
    let path = super::store::save(&dir, &mut first).unwrap();
    super::store::save(&dir, &mut second).unwrap();
    assert_eq!(first.id, "20261203-160408");
    assert_eq!(second.id, "20261203-160408-2");
    assert_eq!(super::store::load(&dir, "previous").unwrap(), first);
    assert_eq!(super::store::load(&dir, "last").unwrap(), second);
    assert_eq!(
        super::store::load(&dir, path.to_str().unwrap()).unwrap(),
        first
    );
    let missing = super::store::load(&dir, "20000101-000000")
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("no saved run `20000101-000000`"),
        "{missing}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let none = super::store::load(&dir, "last").unwrap_err().to_string();
    assert!(none.contains("only 0 runs saved"), "{none}");
}

#[test]
fn a_test_that_got_nothing_through_fails_the_run_without_a_bound() {
    let mut r = run(1000.0, 900.0, 100, 1.0, "4096");
    if let Some(Outcome::Measured(d)) = &mut r.dns {
        d.rcodes = BTreeMap::from([("NXDOMAIN".to_owned(), 100)]);
        d.timeouts = 0;
    }
    r.check(&Bounds::default());
    assert!(!r.passed);
    assert_eq!(
        r.failures(),
        [("dns", "every lookup failed (NXDOMAIN 100)".to_owned())]
    );
    // One answer is enough to have measured something.
    let mut some = run(1000.0, 900.0, 99, 1.0, "4096");
    some.check(&Bounds::default());
    assert!(some.passed);

    let mut refused = run(1000.0, 900.0, 0, 1.0, "4096");
    if let Some(Outcome::Measured(l)) = &mut refused.latency {
        (l.failures, l.first_error) = (100, Some("Connection refused (os error 111)".into()));
    }
    refused.check(&Bounds::default());
    assert!(!refused.passed);
    assert!(
        refused
            .table()
            .contains("every connect failed: Connection refused (os error 111)"),
        "{}",
        refused.table()
    );
}
