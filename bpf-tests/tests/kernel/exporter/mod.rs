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
    agent_process::{AgentProcess, free_port, http_get},
    harness::{Outcome, Test, TestResult, require_root},
    netns::{HostVeth, Netns, Veth},
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

/// A Prometheus server on loopback scraping one target every second.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("nettune-prom-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: nettune\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus (Debian package prometheus)")?;
        Ok(Self { child, addr, dir })
    }

    /// The value of an instant query's first result, if any.
    fn query(&self, promql: &str) -> anyhow::Result<Option<f64>> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        // Not listening yet, or not ready: no answer yet.
        let Ok((200, body)) = http_get(self.addr, &format!("/api/v1/query?query={encoded}")) else {
            return Ok(None);
        };

        let json: Value = serde_json::from_str(&body)?;
        Ok(json["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
