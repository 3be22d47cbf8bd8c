//! DNS against dnsmasq answering and dnsperf and glibc asking.

use super::*;

/// What dnsperf prints at the end of a run.
#[derive(Debug)]
pub(crate) struct DnsperfReport {
    pub(crate) sent: u64,
    pub(crate) completed: u64,
    pub(crate) lost: u64,
    pub(crate) rcodes: Vec<(String, u64)>,
    pub(crate) mean_latency: f64,
}

impl DnsperfReport {
    pub(crate) fn parse(text: &str) -> anyhow::Result<Self> {
        let field = |label: &str| -> anyhow::Result<&str> {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .map(str::trim)
                .with_context(|| format!("no {label:?} in dnsperf's report:\n{text}"))
        };
        let first = |label: &str| -> anyhow::Result<u64> {
            Ok(field(label)?
                .split_whitespace()
                .next()
                .context("empty")?
                .parse()?)
        };
        let rcodes = field("Response codes:")?
            .split(", ")
            .filter_map(|entry| {
                let mut words = entry.split_whitespace();
                Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
            })
            .collect();
        Ok(Self {
            sent: first("Queries sent:")?,
            completed: first("Queries completed:")?,
            lost: first("Queries lost:")?,
            rcodes,
            mean_latency: field("Average Latency (s):")?
                .split_whitespace()
                .next()
                .context("empty")?
                .parse()?,
        })
    }
}

pub(super) fn dns_to_dnsmasq_equals_what_dnsperf_reports() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = match load_conversations() {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let pods = Pods::new(2, "dns")?;
    let (server, client) = (&pods.pods[0], &pods.pods[1]);
    let _dnsmasq = Dnsmasq::start(&server.ns, server.addr())?;
    // One response in five never leaves the server's namespace.
    nft_drop(&server.ns, "output", "udp sport 53 numgen inc mod 5 == 0")?;
    let config = config_with_timeouts(1.0, 5.0);
    let mut collector = watching(probes, &config, &[server, client])?;
    let before = conversations_of(&mut collector, client)?;

    // 40 names that exist, 20 that do not, each asked once.
    let queries: String = (0..60)
        .map(|i| {
            if i % 3 == 2 {
                format!("nx{i}.test A\n")
            } else {
                "ok.test A\n".to_owned()
            }
        })
        .collect();
    let file = std::env::temp_dir().join(format!("nettune-dnsperf-{}.txt", std::process::id()));
    std::fs::write(&file, queries)?;
    let output = client.ns.exec(
        "dnsperf",
        &[
            "-s",
            &server.addr().to_string(),
            "-d",
            &file.display().to_string(),
            "-n",
            "1",
            "-c",
            "1",
            "-t",
            "1",
            "-Q",
            "200",
        ],
    );
    let _ = std::fs::remove_file(&file);
    let theirs = DnsperfReport::parse(&output?)?;
    // dnsperf gave up on the lost ones after its 1 s; so has nettune, once a
    // tick runs past the same timeout.
    std::thread::sleep(Duration::from_millis(1200));
    collector.tick()?;
    let after = conversations_of(&mut collector, client)?;
    let server_side = conversations_of(&mut collector, server)?;
    let dropped = nft_counted(&server.ns)?;

    let (a, b) = (&after.dns, &before.dns);
    let delta = |x: u64, y: u64| x - y;
    let queries = delta(a.queries.total, b.queries.total);
    let responses = delta(a.responses_total().total, b.responses_total().total);
    let unanswered = delta(a.unanswered.total, b.unanswered.total);
    let retries = delta(a.retries.total, b.retries.total);
    let latency_count = a.latency.count - b.latency.count;
    let mean = (a.latency.sum_seconds - b.latency.sum_seconds) / latency_count.max(1) as f64;
    println!(
        "    dnsperf: sent {} completed {} lost {} rcodes {:?} mean {:.6}s; nft dropped {dropped}",
        theirs.sent, theirs.completed, theirs.lost, theirs.rcodes, theirs.mean_latency
    );
    println!(
        "    nettune: queries {queries} responses {responses} unanswered {unanswered} retries {retries} mean {mean:.6}s over {latency_count}"
    );
    ensure!(
        queries == theirs.sent,
        "queries: nettune {queries}, dnsperf sent {}",
        theirs.sent
    );
    ensure!(
        responses == theirs.completed && latency_count == theirs.completed,
        "responses: nettune {responses} ({latency_count} timed), dnsperf completed {}",
        theirs.completed
    );
    ensure!(
        unanswered == theirs.lost && theirs.lost == dropped,
        "unanswered: nettune {unanswered}, dnsperf lost {}, nft dropped {dropped}",
        theirs.lost
    );
    ensure!(theirs.lost > 0, "nothing was lost: the test proves nothing");
    ensure!(
        retries == 0,
        "{retries} retries counted; dnsperf never asks twice"
    );
    for (rcode, count) in &theirs.rcodes {
        let ours = a.responses.get(rcode).map_or(0, |c| c.total)
            - b.responses.get(rcode).map_or(0, |c| c.total);
        ensure!(ours == *count, "{rcode}: nettune {ours}, dnsperf {count}");
    }
    ensure!(
        theirs.rcodes.iter().any(|(r, n)| r == "NXDOMAIN" && *n > 0),
        "dnsmasq answered no NXDOMAIN: {:?}",
        theirs.rcodes
    );
    ensure!(
        (mean - theirs.mean_latency).abs() <= DNS_LATENCY_TOLERANCE,
        "mean latency: nettune {mean:.6}s, dnsperf {:.6}s (tolerance {DNS_LATENCY_TOLERANCE}s)",
        theirs.mean_latency
    );
    // The server's pod answered; it asked nothing.
    ensure!(
        server_side.dns.queries.total == 0 && server_side.dns.responses_total().total == 0,
        "the server's pod counted its clients' DNS as its own: {:?}",
        server_side.dns
    );
    // And per server: the same queries, under the server's address.
    let snapshot = collector.tick()?.snapshot;
    let per_server = snapshot
        .dns_servers
        .iter()
        .find(|s| s.server == IpAddr::V4(server.addr()))
        .context("no per-server DNS figures for dnsmasq")?;
    ensure!(
        per_server.dns.queries.total >= theirs.sent
            && per_server.dns.unanswered.total >= theirs.lost,
        "per server: {:?}",
        per_server.dns
    );
    Ok(Outcome::Passed)
}

pub(super) fn glibc_retries_of_an_unanswered_query_are_retries() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = match load_conversations() {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let pods = Pods::new(2, "dnsr")?;
    let (server, client) = (&pods.pods[0], &pods.pods[1]);
    let _dnsmasq = Dnsmasq::start(&server.ns, server.addr())?;
    // Every query reaches the server, no response leaves it.
    nft_drop(&server.ns, "input", "udp dport 53")?;
    // `ip netns exec` mounts /etc/netns/<name>/resolv.conf over /etc/resolv.conf.
    let etc = std::path::PathBuf::from("/etc/netns").join(client.ns.name());
    std::fs::create_dir_all(&etc)?;
    let _etc = EtcNetns(etc.clone());
    std::fs::write(
        etc.join("resolv.conf"),
        format!(
            "nameserver {}\noptions timeout:1 attempts:2\n",
            server.addr()
        ),
    )?;
    let config = config_with_timeouts(0.5, 5.0);
    let mut collector = watching(probes, &config, &[server, client])?;
    let before = conversations_of(&mut collector, client)?;
    // A fully qualified name: no search domains, one question (A only).
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            client.ns.name(),
            "getent",
            "ahostsv4",
            "lost.test.",
        ])
        .stdout(Stdio::null())
        .status()?;
    ensure!(!status.success(), "getent resolved a name nobody answers");
    std::thread::sleep(Duration::from_millis(700));
    collector.tick()?;
    let after = conversations_of(&mut collector, client)?;
    let sent = nft_counted(&server.ns)?;
    let queries = after.dns.queries.total - before.dns.queries.total;
    let retries = after.dns.retries.total - before.dns.retries.total;
    let unanswered = after.dns.unanswered.total - before.dns.unanswered.total;
    println!(
        "    glibc (timeout:1 attempts:2): the server received {sent}; nettune queries {queries} retries {retries} unanswered {unanswered}"
    );
    ensure!(
        queries + retries == sent,
        "queries {queries} + retries {retries} != {sent} the server received"
    );
    ensure!(retries >= 1, "glibc's second attempt was not a retry");
    ensure!(
        unanswered == queries,
        "unanswered {unanswered} of {queries} queries"
    );
    Ok(Outcome::Passed)
}

/// `/etc/netns/<name>`, removed on drop.
pub(super) struct EtcNetns(std::path::PathBuf);

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- TCP handshakes ----------------------------------------------------------
