//! Caps at scale, and diagnose on a full conntrack table.

use super::*;

pub(super) const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

pub(super) fn diagnose_names_a_full_conntrack_table_and_the_fix() -> TestResult {
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
pub(super) fn pods_in(metrics: &str) -> BTreeSet<String> {
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
pub(super) fn hundreds_of_namespaces_and_thousands_of_ports_stay_within_the_caps() -> TestResult {
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
