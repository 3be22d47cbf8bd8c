//! The agent as Prometheus and operators see it: a real Prometheus server scrapes
//! `nettune run`; namespaces that come and go leave nothing behind; `nettune
//! diagnose` names a full conntrack table and its fix.

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
        run: fifty_namespaces_come_and_go_without_leftovers,
    },
    Test {
        name: "exporter::departed_host_veths_release_their_drop_entries",
        run: departed_host_veths_release_their_drop_entries,
    },
    Test {
        name: "exporter::hundreds_of_namespaces_and_thousands_of_ports_stay_within_the_caps",
        run: hundreds_of_namespaces_and_thousands_of_ports_stay_within_the_caps,
    },
    Test {
        name: "exporter::diagnose_names_a_full_conntrack_table_and_the_fix",
        run: diagnose_names_a_full_conntrack_table_and_the_fix,
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

/// Keys of every loaded `DROPS` map (the agent's), as netns inodes.
fn netns_in_drop_maps() -> anyhow::Result<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for info in aya::maps::loaded_maps().filter_map(Result::ok) {
        if info.name_as_str() != Some("DROPS") {
            continue;
        }
        let map = aya::maps::Map::from_map_data(aya::maps::MapData::from_id(info.id())?)?;
        let hash: aya::maps::PerCpuHashMap<_, DropKey, u64> = map.try_into()?;
        out.extend(hash.keys().filter_map(Result::ok).map(|k| k.netns));
    }
    Ok(out)
}

/// The keys of the `DROPS` map the process `pid` holds (found through its
/// descriptors' `map_id`, so other agents' maps on the machine are not counted).
fn drop_keys_of(pid: u32) -> anyhow::Result<Vec<DropKey>> {
    let mut ids = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(info) = std::fs::read_to_string(fd?.path()) else {
            continue;
        };
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("map_id:"))
                .filter_map(|id| id.trim().parse::<u32>().ok()),
        );
    }
    let mut keys = Vec::new();
    for info in aya::maps::loaded_maps().filter_map(Result::ok) {
        if info.name_as_str() != Some("DROPS") || !ids.contains(&info.id()) {
            continue;
        }
        let map = aya::maps::Map::from_map_data(aya::maps::MapData::from_id(info.id())?)?;
        let hash: aya::maps::PerCpuHashMap<_, DropKey, u64> = map.try_into()?;
        keys.extend(hash.keys().filter_map(Result::ok));
    }
    Ok(keys)
}

/// Issue 19, defect 11: a pod's drops on its host-side veth are keyed by the
/// host namespace, which never goes. Rounds of pods whose host veths each see
/// drops (datagrams from the pod to a closed port of the host side: NO_SOCKET
/// in the host namespace, on that veth) must leave no entry of a departed
/// veth behind; before the fix there was one per veth, forever.
fn departed_host_veths_release_their_drop_entries() -> TestResult {
    use std::os::unix::fs::MetadataExt as _;
    if let Some(skip) = require_root() {
        return skip;
    }
    const ROUNDS: u8 = 2;
    const PODS: u8 = 20;
    let host = u32::try_from(std::fs::metadata("/proc/self/ns/net")?.ino())?;
    let agent = AgentProcess::start(&nettune_bin()?, &["--interval", "0.2"])?;
    let pid = agent.pid();
    let baseline = drop_keys_of(pid)?.len();
    let mut departed = BTreeSet::new();
    for round in 0..ROUNDS {
        let mut pods: Vec<(Netns, HostVeth)> = Vec::new();
        for i in 0..PODS {
            let ns = Netns::new("veths")?;
            let veth = Veth::to_host(&ns, 140 + i)?;
            pods.push((ns, veth));
        }
        let ifindexes: BTreeSet<u32> = pods
            .iter()
            .map(|(_, v)| v.host_ifindex())
            .collect::<Result<_, _>>()?;
        let on_our_veths = |keys: &[DropKey], veths: &BTreeSet<u32>| {
            keys.iter()
                .filter(|k| k.netns == host && veths.contains(&k.ifindex))
                .map(|k| k.ifindex)
                .collect::<BTreeSet<u32>>()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Sent again until counted: the first datagrams wait for ARP.
            for (ns, veth) in &pods {
                let to = SocketAddr::from((veth.veth.a_addr, 9));
                ns.run(|| -> std::io::Result<()> {
                    let socket = UdpSocket::bind("0.0.0.0:0")?;
                    socket.send_to(b"gone", to)?;
                    Ok(())
                })??;
            }
            std::thread::sleep(Duration::from_millis(200));
            let seen = on_our_veths(&drop_keys_of(pid)?, &ifindexes).len();
            if seen == ifindexes.len() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "round {round}: after 30 s only {seen} of {PODS} host veths have drop entries"
            );
        }
        let held = drop_keys_of(pid)?.len();
        drop(pods);
        departed.extend(ifindexes);
        let gone_at = Instant::now();
        loop {
            let keys = drop_keys_of(pid)?;
            let left = on_our_veths(&keys, &departed);
            if left.is_empty() {
                println!(
                    "    round {round}: {held} entries with {PODS} pods, {} {:.1} s after they went (baseline {baseline})",
                    keys.len(),
                    gone_at.elapsed().as_secs_f64()
                );
                break;
            }
            ensure!(
                gone_at.elapsed() < Duration::from_secs(30),
                "round {round}: 30 s after the pods went, {} entries of departed host veths remain ({} in all, baseline {baseline})",
                left.len(),
                keys.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(agent);
    Ok(Outcome::Passed)
}

fn tcx_links() -> usize {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| matches!(l.link_type(), Ok(aya::programs::links::LinkType::Tcx)))
        .count()
}

/// The variant of the agent's pod conversations, as `/metrics` reports it.
fn conversations_on_tcx(agent: &AgentProcess) -> anyhow::Result<bool> {
    let metrics = agent.metrics()?;
    let attached = |variant: &str| {
        metrics.contains(&format!(
            "nettune_probe_attached{{signal=\"pod_conversations\",variant=\"{variant}\"}} 1"
        ))
    };
    match (attached("tcx"), attached("clsact")) {
        (true, _) => Ok(true),
        (false, true) => Ok(false),
        (false, false) => bail!("pod conversations attached neither TCX nor clsact"),
    }
}

/// The agent's tick as it measured it: the longest `elapsed_seconds` (time
/// between the two samples of a snapshot's rates) seen so far, at least `interval`.
fn longest_tick(agent: &AgentProcess, seen: &mut f64) -> anyhow::Result<f64> {
    let elapsed = agent.snapshot()?["elapsed_seconds"]
        .as_f64()
        .context("snapshot without elapsed_seconds")?;
    *seen = seen.max(elapsed);
    Ok(*seen)
}

/// 50 pod-like namespaces get series, drop-map entries and tc attachments (TCX
/// links, or nettune's clsact filters before 6.6), and once they are deleted none
/// of it remains within two of the agent's ticks (plus one for a deletion landing
/// mid-tick and the test's own polling). Ticks are the agent's own, as its
/// snapshots measure them: 0.2 s here, longer when the machine is slow (software
/// emulation), so the bound is the agent's and not the machine's speed.
fn fifty_namespaces_come_and_go_without_leftovers() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const COUNT: u8 = 50;
    const INTERVAL: f64 = 0.2;
    let agent = AgentProcess::start(&nettune_bin()?, &["--interval", "0.2"])?;
    let tcx = conversations_on_tcx(&agent)?;
    let links_before = tcx_links();
    let mut pods: Vec<(Netns, HostVeth)> = Vec::new();
    for i in 0..COUNT {
        let ns = Netns::new("churn")?;
        let veth = Veth::to_host(&ns, 10 + i)?;
        pods.push((ns, veth));
    }
    // Traffic into each pod: datagrams to a closed port are dropped (NO_SOCKET)
    // inside the pod's namespace, so every pod gets map entries and series.
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    for (_, veth) in &pods {
        for _ in 0..3 {
            socket.send_to(b"churn", SocketAddr::from((veth.veth.b_addr, 9)))?;
        }
    }
    let names: Vec<String> = pods
        .iter()
        .map(|(ns, _)| format!("pod=\"netns:{}\"", ns.name()))
        .collect();
    let inodes: BTreeSet<u32> = pods
        .iter()
        .map(|(ns, _)| ns.inode())
        .collect::<Result<_, _>>()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = agent.metrics()?;
        let seen = names.iter().filter(|n| text.contains(n.as_str())).count();
        let with_traffic = names
            .iter()
            .filter(|n| {
                text.lines().any(|l| {
                    l.starts_with("nettune_pod_receive_bytes_total") && l.contains(n.as_str())
                })
            })
            .count();
        // The datagrams wait for ARP: their drops can land after the series appear.
        let with_drops = netns_in_drop_maps()?.intersection(&inodes).count();
        if seen == names.len() && with_traffic == names.len() && with_drops == names.len() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "after 60 s only {seen} of {COUNT} pods have series ({with_traffic} with traffic, \
             {with_drops} with drop map entries)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if tcx {
        ensure!(
            tcx_links() >= links_before + 2 * usize::from(COUNT),
            "tc links were not attached"
        );
    } else {
        for (_, veth) in &pods {
            let filters = crate::conversations::our_filters(&veth.veth.a_name)?;
            ensure!(
                filters.len() == 2,
                "{}: nettune's clsact filters are {filters:?}",
                veth.veth.a_name
            );
        }
    }

    // Deleting 100 objects with `ip` takes a while: time the release from the
    // moment the last namespace is gone. (clsact filters go with their device;
    // TCX links live on while the agent holds them.)
    drop(pods);
    let gone_at = Instant::now();
    let deadline = gone_at + Duration::from_secs(30);
    let mut tick = INTERVAL;
    let mut longest_poll = Duration::ZERO;
    loop {
        let polled_at = Instant::now();
        let text = agent.metrics()?;
        let series_left = names.iter().filter(|n| text.contains(n.as_str())).count();
        let entries_left = netns_in_drop_maps()?.intersection(&inodes).count();
        let links_left = tcx_links().saturating_sub(links_before);
        if series_left == 0 && entries_left == 0 && links_left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "30 s after deletion: {series_left} series, {entries_left} map entries, {links_left} tc links remain"
            );
        }
        longest_tick(&agent, &mut tick)?;
        std::thread::sleep(Duration::from_millis(50));
        longest_poll = longest_poll.max(polled_at.elapsed());
    }
    let took = gone_at.elapsed().as_secs_f64();
    let tick = longest_tick(&agent, &mut tick)?;
    let polling = longest_poll.as_secs_f64().max(0.5);
    println!(
        "    50 namespaces released in {took:.2} s (interval {INTERVAL} s, the agent's ticks \
         up to {tick:.2} s, polls up to {:.2} s)",
        longest_poll.as_secs_f64()
    );
    // Two ticks, plus one for the deletion landing mid-tick, plus the polling
    // and scrape timing (at least 0.5 s).
    ensure!(
        took <= tick * 3.0 + polling,
        "release took {took:.2} s, more than two of the agent's {tick:.2} s ticks"
    );
    Ok(Outcome::Passed)
}

const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

fn diagnose_names_a_full_conntrack_table_and_the_fix() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let pair = Pair::new(8, None)?;
    pair.receiver.exec(
        "nft",
        &["add table inet nettune_test; add chain inet nettune_test input { type filter hook input priority 0; }; add rule inet nettune_test input ct state new,established accept"],
    )?;
    // A tiny table: the 11th connection finds it full. The test namespace is the
    // only one using conntrack here, and the original limit comes back on drop.
    let _restore = Restore::set(CONNTRACK_MAX, "10")?;
    let server = std::net::SocketAddrV4::new(pair.veth.b_addr, 5700);
    let _listener = pair
        .receiver
        .run(|| std::net::TcpListener::bind(server))??;
    let _clients = pair.sender.run(|| {
        (0..20)
            .map(|_| connect_nonblocking(server))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new(nettune_bin()?)
        .args(["diagnose", "--json", "--seconds", "0.2"])
        .output()?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    ensure!(
        out.status.code() == Some(1),
        "diagnose exit code {:?}, expected 1",
        out.status.code()
    );
    let finding = report["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["id"] == "conntrack_full"))
        .with_context(|| format!("no conntrack finding: {report}"))?;
    let evidence = finding["evidence"].as_str().unwrap_or_default();
    let fix = finding["fix"].as_str().unwrap_or_default();
    println!(
        "    {}\n    evidence: {evidence}\n    fix: {fix}",
        finding["problem"]
    );
    ensure!(
        evidence.contains(&format!("netns:{}", pair.receiver.name()))
            && evidence.contains("of 10 conntrack entries"),
        "the evidence does not name the namespace and the limit: {evidence}"
    );
    ensure!(
        fix.contains("nf_conntrack_max"),
        "the fix does not name nf_conntrack_max: {fix}"
    );
    ensure!(
        finding["severity"] == "critical",
        "a full table is not critical: {finding}"
    );
    Ok(Outcome::Passed)
}

/// Distinct `pod` label values in a scrape.
fn pods_in(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.split("pod=\"").nth(1)?.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// Cardinality: 300 namespaces with `agent.max_pod_series = 50`, then 20,000
/// connections to distinct closed ports. The pods beyond the cap are folded and
/// counted, in /metrics and in the JSON API; ports never become series or map
/// entries.
fn hundreds_of_namespaces_and_thousands_of_ports_stay_within_the_caps() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const NAMESPACES: usize = 300;
    const CAP: usize = 50;
    const PORTS: u16 = 20_000;
    let base = std::env::temp_dir().join(format!("nettune-cap-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let config = base.join("nettune.toml");
    std::fs::write(&config, format!("[agent]\nmax_pod_series = {CAP}\n"))?;
    let agent = AgentProcess::start(
        &nettune_bin()?,
        &[
            "--config",
            config.to_str().context("path")?,
            "--interval",
            "0.3",
        ],
    )?;
    let namespaces: Vec<Netns> = (0..NAMESPACES)
        .map(|_| Netns::new("cap"))
        .collect::<anyhow::Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let text = agent.metrics()?;
        let folded = text
            .lines()
            .find_map(|l| l.strip_prefix("nettune_workloads_folded "))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if folded >= NAMESPACES - CAP {
            break text;
        }
        ensure!(
            Instant::now() < deadline,
            "only {folded} workloads folded after 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let pods = pods_in(&metrics);
    let (status, body) = http_get(agent.addr, "/api/v1/snapshot")?;
    ensure!(status == 200, "/api/v1/snapshot answered {status}");
    let json: Value = serde_json::from_str(&body)?;
    let listed = json["workloads"].as_array().map_or(0, Vec::len);
    let json_folded = json["workloads_folded"].as_u64().unwrap_or(0);
    println!(
        "    {NAMESPACES} namespaces, cap {CAP}: {} pod label values in /metrics, {listed} workloads \
         in the JSON ({json_folded} folded)",
        pods.len()
    );
    ensure!(
        pods.len() <= CAP + 2,
        "{} pod series beyond the cap",
        pods.len()
    );
    ensure!(pods.contains("_other"), "no _other series");
    ensure!(
        listed <= CAP + 1 && json_folded as usize >= NAMESPACES - CAP,
        "JSON not capped"
    );

    // Thousands of ports: connection attempts to closed ports in one namespace.
    let ns = &namespaces[0];
    let series_before = metrics.lines().filter(|l| !l.starts_with('#')).count();
    let entries_before = netns_in_drop_maps()?.len();
    ns.run(|| -> anyhow::Result<()> {
        for port in 1..=PORTS {
            let _ = std::net::TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port.saturating_add(20_000))),
                Duration::from_millis(50),
            );
        }
        Ok(())
    })??;
    std::thread::sleep(Duration::from_millis(700));
    let after = agent.metrics()?;
    let series_after = after.lines().filter(|l| !l.starts_with('#')).count();
    let entries_after = netns_in_drop_maps()?.len();
    println!(
        "    {PORTS} ports: series {series_before} → {series_after}, drop-map namespaces \
         {entries_before} → {entries_after}"
    );
    ensure!(
        series_after <= series_before + 10,
        "series grew with ports: {series_before} → {series_after}"
    );
    drop(namespaces);
    let _ = std::fs::remove_dir_all(base);
    Ok(Outcome::Passed)
}
