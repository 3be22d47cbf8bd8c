//! The agent as Prometheus and operators see it: a real Prometheus server scrapes
//! `nettune run`; namespaces that come and go leave nothing behind; `nettune
//! diagnose` names a full conntrack table and its fix.

mod churn;
mod scale;

use churn::netns_in_drop_maps;

use std::{
    collections::BTreeSet,
    net::{SocketAddr, UdpSocket},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use bpf_tests::{
    agent_process::{AgentProcess, http_get},
    harness::{Outcome, Test, TestResult, require_root},
    netns::{HostVeth, Netns, Veth},
    prometheus::Prometheus,
    scenarios::Pair,
    sockets::connect_nonblocking,
    sysctl_guard::Restore,
};
use nettune_common::DropKey;
use serde_json::Value;

use crate::agent::nettune_bin;

pub const TESTS: &[Test] = &[
    Test {
        name: "exporter::prometheus_scrapes_retransmits_the_test_caused",
        run: prometheus_scrapes_retransmits_the_test_caused,
    },
    Test {
        name: "exporter::fifty_namespaces_come_and_go_without_leftovers",
        run: churn::fifty_namespaces_come_and_go_without_leftovers,
    },
    Test {
        name: "exporter::departed_host_veths_release_their_drop_entries",
        run: churn::departed_host_veths_release_their_drop_entries,
    },
    Test {
        name: "exporter::hundreds_of_namespaces_and_thousands_of_ports_stay_within_the_caps",
        run: scale::hundreds_of_namespaces_and_thousands_of_ports_stay_within_the_caps,
    },
    Test {
        name: "exporter::diagnose_names_a_full_conntrack_table_and_the_fix",
        run: scale::diagnose_names_a_full_conntrack_table_and_the_fix,
    },
];

fn prometheus_scrapes_retransmits_the_test_caused() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let agent = AgentProcess::start(&nettune_bin()?, &["--interval", "0.5"])?;
    let pair = Pair::new(9, None)?;
    pair.lossy_transfer(4 << 20, 500)?;
    let expected = pair.sender.mib("snmp", "Tcp", "RetransSegs")?;
    ensure!(expected > 0, "the transfer caused no retransmits");

    let prometheus = Prometheus::start(agent.addr)?;
    let query = format!(
        "nettune_tcp_retransmit_segments_total{{pod=\"netns:{}\"}}",
        pair.sender.name()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = loop {
        if let Some(v) = prometheus.query(&query)?
            && v >= expected as f64
        {
            break v;
        }
        ensure!(
            Instant::now() < deadline,
            "Prometheus never returned {expected} for {query}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    println!("    PromQL {query} = {value}; the namespace's RetransSegs = {expected}");
    ensure!(
        value == expected as f64,
        "Prometheus says {value}, the kernel {expected}"
    );

    let text = agent.metrics()?;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting promtool")?;
    std::io::Write::write_all(promtool.stdin.as_mut().context("stdin")?, text.as_bytes())?;
    let out = promtool.wait_with_output()?;
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && complaints.trim().is_empty(),
        "promtool check metrics: {complaints}"
    );
    Ok(Outcome::Passed)
}
