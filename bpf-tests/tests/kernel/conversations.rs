//! The pod-conversations signal (`nettune-ebpf/src/conversations.rs`): tc programs
//! on every pod's host-side veth see its DNS, TCP handshakes and resets and ICMP
//! errors, compared here with real peers — dnsmasq answering, dnsperf and glibc's
//! resolver asking, the kernel's own TCP and ICMP counters in each namespace. The
//! pod's volumes are the interface's own counters, compared with `ip -s link`.
//!
//! Every test runs the agent's own pipeline (`Collector` ticks on this kernel), so
//! the figures compared are the ones `/metrics` and `nettune top` show.
//!
//! Tolerances: counts are exact — each test's traffic is over before the figures
//! are read, and the pods have IPv6 off (no neighbour discovery). DNS latency is
//! measured by nettune on the host side of the client's veth and by dnsperf in
//! the client, so the two means may differ by the veth crossings and dnsperf's
//! own scheduling: within [`DNS_LATENCY_TOLERANCE`].
//!
//! On kernels before 6.6 (no TCX) the programs are clsact filters, which outlive
//! the process that added them unless removed one by one: `tc filter show` (the
//! kernel's own list) must show none of nettune's once it stops watching an
//! interface or goes away.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use bpf_tests::{
    bench::pods::{Pod, Pods},
    dns::Dnsmasq,
    harness::{Feature, Outcome, Test, TestResult, record, require_root},
    loss::Loss,
    netns::{Netns, Veth},
    probes::{kfree_skb_has_reason, load, require_variant, watch_host_veths},
    scenarios::Pair,
    traffic::{bulk_transfer_from_host, send_df_datagrams},
};
use nettune::{
    collect::Collector,
    config::Config,
    model::{conversations::ConversationFigures, probes::Variant, snapshot::Snapshot},
    probes::{ProbeSource as _, Probes, conversations::SIGNAL},
    sys::Kernel,
};
use xtask::process::tool;

pub const TESTS: &[Test] = &[
    Test {
        name: "conversations::tcx_volumes_equal_ip_link_and_follow_the_interface",
        run: || volumes_equal_ip_link_and_follow_the_interface(Variant::Tcx),
    },
    Test {
        name: "conversations::clsact_volumes_equal_ip_link_and_follow_the_interface",
        run: || volumes_equal_ip_link_and_follow_the_interface(Variant::Clsact),
    },
    Test {
        name: "conversations::clsact_filters_are_removed_when_nettune_stops_watching_or_exits",
        run: clsact_filters_are_removed_when_nettune_stops_watching_or_exits,
    },
    Test {
        name: "conversations::a_pods_veth_is_not_confused_with_a_veth_elsewhere_that_shares_its_ifindex",
        run: a_pods_veth_is_not_confused_with_a_veth_elsewhere_that_shares_its_ifindex,
    },
    Test {
        name: "conversations::dns_to_dnsmasq_equals_what_dnsperf_reports",
        run: dns_to_dnsmasq_equals_what_dnsperf_reports,
    },
    Test {
        name: "conversations::glibc_retries_of_an_unanswered_query_are_retries",
        run: glibc_retries_of_an_unanswered_query_are_retries,
    },
    Test {
        name: "conversations::handshakes_and_resets_equal_the_clients_view_and_the_tcp_counters",
        run: handshakes_and_resets_equal_the_clients_view_and_the_tcp_counters,
    },
    Test {
        name: "conversations::frag_needed_equals_the_pods_icmp_counter_with_the_paths_mtu",
        run: frag_needed_equals_the_pods_icmp_counter_with_the_paths_mtu,
    },
];

/// How far nettune's mean DNS latency may be from dnsperf's, in seconds.
const DNS_LATENCY_TOLERANCE: f64 = 0.002;

/// Ticks of the agent's pipeline until `ready` holds for a Snapshot (the tc
/// programs attach within a tick's budget, so a busy host may take several).
fn tick_until(
    collector: &mut Collector,
    what: &str,
    ready: impl Fn(&Snapshot) -> bool,
) -> anyhow::Result<Snapshot> {
    let started = Instant::now();
    loop {
        let snapshot = collector.tick()?.snapshot;
        if ready(&snapshot) {
            return Ok(snapshot);
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!("{what}: not within 15 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A collector on this kernel with the pods' interfaces watched.
fn watching(probes: Probes, config: &Config, pods: &[&Pod]) -> anyhow::Result<Collector> {
    let mut collector = Collector::new(probes, Kernel, config);
    let inodes = pods
        .iter()
        .map(|p| p.ns.inode())
        .collect::<anyhow::Result<Vec<_>>>()?;
    tick_until(&mut collector, "the pods' interfaces watched", |s| {
        inodes
            .iter()
            .all(|i| s.workload(*i).is_some_and(|w| w.conversations.is_some()))
    })?;
    Ok(collector)
}

/// A pod's conversations in a fresh tick.
fn conversations_of(collector: &mut Collector, pod: &Pod) -> anyhow::Result<ConversationFigures> {
    let inode = pod.ns.inode()?;
    let snapshot = collector.tick()?.snapshot;
    snapshot
        .workload(inode)
        .and_then(|w| w.conversations.clone())
        .with_context(|| format!("no conversations for {}", pod.label()))
}

/// The agent's configuration with short timeouts, so that a test waits seconds.
fn config_with_timeouts(dns: f64, handshake: f64) -> Config {
    let mut config = Config::default();
    config.dns.timeout_seconds = dns;
    config.tcp.handshake_timeout_seconds = handshake;
    config
}

/// Skips unless the conversations programs attached.
fn load_conversations() -> Result<Probes, TestResult> {
    let probes = load(&[]).map_err(Err)?;
    if probes
        .report()
        .signal(SIGNAL)
        .and_then(|s| s.attached)
        .is_none()
    {
        return Err(require_variant(&probes, SIGNAL, Variant::Tcx, Feature::Tc)
            .unwrap_or_else(|| Err(anyhow::anyhow!("{SIGNAL} did not attach"))));
    }
    Ok(probes)
}

/// An nftables table in `ns` with one rule that counts what `matches` and drops
/// it; removed with the namespace.
fn nft_drop(ns: &Netns, hook: &str, matches: &str) -> anyhow::Result<()> {
    let chain = format!("{{ type filter hook {hook} priority 0 ; }}");
    ns.exec("nft", &["add", "table", "inet", "nettune_test"])?;
    ns.exec(
        "nft",
        &["add", "chain", "inet", "nettune_test", "c", &chain],
    )?;
    let rule = format!("{matches} counter drop");
    ns.exec("nft", &["add", "rule", "inet", "nettune_test", "c", &rule])?;
    Ok(())
}

/// Packets the rule of [`nft_drop`] dropped.
fn nft_counted(ns: &Netns) -> anyhow::Result<u64> {
    let text = ns.exec("nft", &["list", "table", "inet", "nettune_test"])?;
    let at = text
        .find("counter packets ")
        .context("no counter in nft's listing")?;
    let rest = &text[at + "counter packets ".len()..];
    Ok(rest
        .split_whitespace()
        .next()
        .context("no packet count")?
        .parse()?)
}

// ---- volumes ---------------------------------------------------------------

/// An interface's counters as `ip -j -s link` prints them (`stats64`).
fn ip_link_stats(iface: &str) -> anyhow::Result<serde_json::Value> {
    let text = tool(
        "ip",
        &["-j", "-s", "link", "show", "dev", iface],
        "iproute2",
    )?;
    let links: serde_json::Value = serde_json::from_str(&text)?;
    links[0]["stats64"]
        .as_object()
        .map(|o| serde_json::Value::Object(o.clone()))
        .with_context(|| format!("no stats64 for {iface} in {text}"))
}

fn stat(stats: &serde_json::Value, direction: &str, key: &str) -> anyhow::Result<u64> {
    stats[direction][key]
        .as_u64()
        .with_context(|| format!("no {direction}.{key} in {stats}"))
}

fn volumes_equal_ip_link_and_follow_the_interface(variant: Variant) -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let disabled: Vec<Variant> = [Variant::Tcx, Variant::Clsact]
        .into_iter()
        .filter(|v| *v != variant)
        .collect();
    let probes = load(&disabled)?;
    let feature = if variant == Variant::Tcx {
        Feature::Tcx
    } else {
        Feature::Clsact
    };
    if let Some(skip) = require_variant(&probes, SIGNAL, variant, feature) {
        return skip;
    }
    let mut pods = Pods::new(1, "vol")?;
    let pod = &pods.pods[0];
    let name = pod.host_iface().to_owned();
    let inode = pod.ns.inode()?;
    let mut collector = watching(probes, &Config::default(), &[pod])?;

    // Drop some of what the pod sends (its ACKs) on the host side, after our
    // program saw them: a tc drop, counted by its drop reason.
    let loss = Loss::attach_in(None, &name, 1000, variant == Variant::Clsact)?;
    let addr = SocketAddr::from((pod.addr(), 5600));
    bulk_transfer_from_host(&pod.ns, addr, 2 << 20)?;
    std::thread::sleep(Duration::from_millis(100));
    let dropped = loss.stats()?.1;
    drop(loss);
    let snapshot = collector.tick()?.snapshot;
    let theirs = ip_link_stats(&name)?;
    let ours = snapshot
        .workload(inode)
        .and_then(|w| w.interface.clone())
        .context("the pod has no interface")?;
    // The pod receives what its host side transmits, and the other way round.
    let pairs = [
        (
            "rx_bytes",
            ours.rx_bytes.total,
            stat(&theirs, "tx", "bytes")?,
        ),
        (
            "tx_bytes",
            ours.tx_bytes.total,
            stat(&theirs, "rx", "bytes")?,
        ),
        (
            "rx_packets",
            ours.rx_packets.total,
            stat(&theirs, "tx", "packets")?,
        ),
        (
            "tx_packets",
            ours.tx_packets.total,
            stat(&theirs, "rx", "packets")?,
        ),
        (
            "rx_drops",
            ours.rx_drops.total,
            stat(&theirs, "tx", "dropped")?,
        ),
        (
            "tx_drops",
            ours.tx_drops.total,
            stat(&theirs, "rx", "dropped")?,
        ),
        (
            "errors",
            ours.errors.total,
            stat(&theirs, "rx", "errors")? + stat(&theirs, "tx", "errors")?,
        ),
    ];
    for (what, ours, theirs) in pairs {
        println!("    {variant} {name} {what}: nettune {ours}, ip -s link {theirs}");
        ensure!(
            ours == theirs,
            "{what}: nettune {ours}, ip -s link {theirs}"
        );
    }
    ensure!(
        ours.rx_bytes.total >= 2 << 20,
        "less than the transfer reached the pod"
    );

    let counted_drops = ours.tc_drops.total;
    println!("    tc drops on {name}: nettune {counted_drops}, the tc program dropped {dropped}");
    ensure!(dropped > 0, "the loss program dropped nothing");
    if kfree_skb_has_reason()? {
        ensure!(
            counted_drops == dropped,
            "tc drops: counted {counted_drops}, dropped {dropped}"
        );
    } else {
        // Without drop reasons (before 5.17) a tc drop cannot be told from others:
        // the pod's tc-drop figure stays 0, never a guess.
        println!("    no drop reasons on this kernel: tc drops are not told apart");
        ensure!(
            counted_drops == 0,
            "{counted_drops} tc drops counted on a kernel without drop reasons"
        );
    }
    record(
        &format!("pod_tc_drops_{variant}"),
        serde_json::json!({ "tc_drops_counted": counted_drops, "tc_program_dropped": dropped }),
    );

    // The pod goes away, its interface with it: nettune detaches and forgets both.
    pods.pods.clear();
    let started = Instant::now();
    loop {
        let tick = collector.tick()?;
        if tick.interfaces.removed.iter().any(|(_, n)| *n == name) {
            ensure!(
                tick.snapshot.workload(inode).is_none(),
                "the departed pod is still reported"
            );
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "{name} was not forgotten: {:?}",
            tick.interfaces
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Outcome::Passed)
}

// ---- DNS -------------------------------------------------------------------

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

fn dns_to_dnsmasq_equals_what_dnsperf_reports() -> TestResult {
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

fn glibc_retries_of_an_unanswered_query_are_retries() -> TestResult {
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
struct EtcNetns(std::path::PathBuf);

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- TCP handshakes ----------------------------------------------------------

/// Closes `stream` with an RST (SO_LINGER with a zero timeout).
fn reset(stream: TcpStream) -> anyhow::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized `linger` value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            u32::try_from(size_of::<libc::linger>())?,
        )
    };
    ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(stream);
    Ok(())
}

/// One namespace's TCP counters: (OutRsts, EstabResets, TCPSynRetrans).
fn tcp_counters(ns: &Netns) -> anyhow::Result<[i64; 3]> {
    Ok([
        ns.mib("snmp", "Tcp", "OutRsts")?,
        ns.mib("snmp", "Tcp", "EstabResets")?,
        ns.mib("netstat", "TcpExt", "TCPSynRetrans")?,
    ])
}

fn handshakes_and_resets_equal_the_clients_view_and_the_tcp_counters() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = match load_conversations() {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let pods = Pods::new(2, "hs")?;
    let (server, client) = (&pods.pods[0], &pods.pods[1]);
    let (open, closed, silent) = (5701u16, 5702u16, 5703u16);
    // SYNs to `silent` never reach a socket.
    nft_drop(&server.ns, "input", &format!("tcp dport {silent}"))?;
    let config = config_with_timeouts(5.0, 1.0);
    let mut collector = watching(probes, &config, &[server, client])?;
    let (client_before, server_before) = (
        conversations_of(&mut collector, client)?,
        conversations_of(&mut collector, server)?,
    );
    let (client_tcp_before, server_tcp_before) =
        (tcp_counters(&client.ns)?, tcp_counters(&server.ns)?);

    // The server accepts five connections; it resets the third and the fourth.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let addr = server.addr();
    let accepting = server.ns.spawn(move || -> anyhow::Result<()> {
        let listener = TcpListener::bind((addr, open))?;
        ready_tx.send(()).ok();
        for i in 0..5 {
            let (mut stream, _) = listener.accept()?;
            if i == 2 || i == 3 {
                reset(stream)?;
            } else {
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
            }
        }
        Ok(())
    })?;
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the server never listened")?;
    let seen = client.ns.run(move || -> anyhow::Result<[u32; 3]> {
        let mut seen = [0u32; 3]; // connected, refused, timed out
        for i in 0..5 {
            let mut stream = TcpStream::connect_timeout(
                &SocketAddr::from((addr, open)),
                Duration::from_secs(3),
            )?;
            seen[0] += 1;
            match i {
                // The client resets the first two.
                0 | 1 => reset(stream)?,
                // The server resets these: wait for it.
                2 | 3 => {
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest);
                }
                _ => {
                    stream.write_all(b"bye")?;
                }
            }
        }
        for port in std::iter::repeat_n(closed, 3).chain(std::iter::repeat_n(silent, 2)) {
            match TcpStream::connect_timeout(
                &SocketAddr::from((addr, port)),
                Duration::from_millis(2500),
            ) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => seen[1] += 1,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => seen[2] += 1,
                other => bail!("connect to port {port}: {other:?}"),
            }
        }
        Ok(seen)
    })??;
    accepting
        .join()
        .map_err(|_| anyhow::anyhow!("the server panicked"))???;
    // Past the handshake timeout, the silent port's SYNs are timed out.
    std::thread::sleep(Duration::from_millis(1200));
    collector.tick()?;
    let (client_after, server_after) = (
        conversations_of(&mut collector, client)?,
        conversations_of(&mut collector, server)?,
    );
    let (client_tcp, server_tcp) = (tcp_counters(&client.ns)?, tcp_counters(&server.ns)?);
    let kernel = |after: [i64; 3], before: [i64; 3], i: usize| u64::try_from(after[i] - before[i]);

    let c = (&client_after.connects, &client_before.connects);
    let attempts = c.0.attempts.total - c.1.attempts.total;
    let answered = c.0.answered.total - c.1.answered.total;
    let refused = c.0.refused.total - c.1.refused.total;
    let timed_out = c.0.timed_out.total - c.1.timed_out.total;
    let syn_retransmits = c.0.syn_retransmits.total - c.1.syn_retransmits.total;
    println!(
        "    client saw: {} connected, {} refused, {} timed out; TCPSynRetrans {}",
        seen[0],
        seen[1],
        seen[2],
        kernel(client_tcp, client_tcp_before, 2)?
    );
    println!(
        "    nettune: {attempts} attempts, {answered} answered, {refused} refused, {timed_out} timed out, {syn_retransmits} SYN retransmits"
    );
    ensure!(
        attempts == 10,
        "attempts: nettune {attempts}, the client made 10"
    );
    ensure!(
        answered == u64::from(seen[0]),
        "answered: nettune {answered}, client {}",
        seen[0]
    );
    ensure!(
        refused == u64::from(seen[1]),
        "refused: nettune {refused}, client {}",
        seen[1]
    );
    ensure!(
        timed_out == u64::from(seen[2]),
        "timed out: nettune {timed_out}, client {}",
        seen[2]
    );
    ensure!(
        seen == [5, 3, 2],
        "the client's view is not the test's plan: {seen:?}"
    );
    ensure!(
        syn_retransmits == kernel(client_tcp, client_tcp_before, 2)?,
        "SYN retransmits: nettune {syn_retransmits}, TCPSynRetrans {}",
        kernel(client_tcp, client_tcp_before, 2)?
    );

    // OutRsts counts every RST a namespace sends; EstabResets every established
    // connection a reset ended, whichever side sent it (the server's refusals of
    // the closed port end no connection).
    let sent = |after: &ConversationFigures, before: &ConversationFigures| {
        after.resets_sent.total - before.resets_sent.total
    };
    let received = |after: &ConversationFigures, before: &ConversationFigures| {
        after.resets_received.total - before.resets_received.total
    };
    let (client_sent, client_received) = (
        sent(&client_after, &client_before),
        received(&client_after, &client_before),
    );
    let (server_sent, server_received) = (
        sent(&server_after, &server_before),
        received(&server_after, &server_before),
    );
    let resets = [
        (
            "client sent",
            client_sent,
            "client OutRsts",
            kernel(client_tcp, client_tcp_before, 0)?,
        ),
        (
            "server sent",
            server_sent,
            "server OutRsts",
            kernel(server_tcp, server_tcp_before, 0)?,
        ),
        (
            "client sent + received",
            client_sent + client_received,
            "client EstabResets",
            kernel(client_tcp, client_tcp_before, 1)?,
        ),
        (
            "server sent + received - refusals",
            server_sent + server_received - refused,
            "server EstabResets",
            kernel(server_tcp, server_tcp_before, 1)?,
        ),
    ];
    for (ours_name, ours, theirs_name, theirs) in resets {
        println!("    RSTs {ours_name}: nettune {ours}, {theirs_name} {theirs}");
        ensure!(
            ours == theirs,
            "RSTs {ours_name}: nettune {ours}, {theirs_name} {theirs}"
        );
    }
    ensure!(
        client_received == 2 && server_received == 2,
        "RSTs received: client {client_received}, server {server_received}; each side reset two"
    );

    // The worst remotes: the closed port refused, the silent one timed out.
    let snapshot = collector.tick()?.snapshot;
    let failures = |port: u16| {
        snapshot
            .connect_failures
            .iter()
            .find(|r| r.remote == SocketAddr::from((addr, port)))
            .map(|r| (r.refused.total, r.timed_out.total))
    };
    ensure!(
        failures(closed) == Some((3, 0)) && failures(silent) == Some((0, 2)),
        "per remote: closed {:?}, silent {:?}",
        failures(closed),
        failures(silent)
    );
    Ok(Outcome::Passed)
}

// ---- ICMP ----------------------------------------------------------------------

fn frag_needed_equals_the_pods_icmp_counter_with_the_paths_mtu() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = match load_conversations() {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let pods = Pods::new(2, "mtu")?;
    let (server, client) = (&pods.pods[0], &pods.pods[1]);
    // The hop into the server's pod is narrower than the client's own link.
    bpf_tests::netns::ip(&["link", "set", "dev", server.host_iface(), "mtu", "1300"])?;
    let mut collector = watching(probes, &Config::default(), &[server, client])?;
    let before = conversations_of(&mut collector, client)?;
    let icmp_before = client.ns.mib("snmp", "Icmp", "InDestUnreachs")?;
    let target = SocketAddr::from((server.addr(), 5800));
    send_df_datagrams(&client.ns, target, 1400, 5)?;
    std::thread::sleep(Duration::from_millis(100));
    let after = conversations_of(&mut collector, client)?;
    let theirs = u64::try_from(client.ns.mib("snmp", "Icmp", "InDestUnreachs")? - icmp_before)?;
    let count = |f: &ConversationFigures| f.icmp.received.get("frag_needed").map_or(0, |c| c.total);
    let ours = count(&after) - count(&before);
    println!(
        "    frag needed: nettune {ours} (smallest MTU {:?}), the client's IcmpInDestUnreachs {theirs}",
        after.icmp.smallest_mtu
    );
    ensure!(
        theirs > 0,
        "no ICMP reached the client: the test proves nothing"
    );
    ensure!(
        ours == theirs,
        "frag needed: nettune {ours}, IcmpInDestUnreachs {theirs}"
    );
    ensure!(
        after.icmp.smallest_mtu == Some(1300),
        "the MTU reported: {:?}, the path's 1300",
        after.icmp.smallest_mtu
    );
    // `diagnose` (and the agent's rules) name the pod and the MTU.
    let snapshot = collector.tick()?.snapshot;
    let findings = nettune::diagnose::findings(&snapshot, &Config::default().tuning);
    let finding = findings
        .iter()
        .find(|f| f.id == "path_mtu" && f.evidence.contains(&client.label()))
        .with_context(|| format!("no path_mtu finding for {}: {findings:?}", client.label()))?;
    println!("    finding: {}", finding.evidence);
    ensure!(
        finding.evidence.contains("smallest MTU reported: 1300") && finding.fix.contains("1300"),
        "the finding does not name the MTU: {finding:?}"
    );
    Ok(Outcome::Passed)
}

// ---- attaching and detaching ------------------------------------------------

/// A pod's host-side veth has ifindex N on the host; elsewhere, two namespaces are
/// joined by a veth pair whose ends are also numbered N (ifindex values repeat
/// across namespaces). The pod's traffic must be the pod's, and the pair's
/// namespaces must get no interface: only the peer's namespace id
/// (`IFLA_LINK_NETNSID`) tells them apart, not the ifindex.
fn a_pods_veth_is_not_confused_with_a_veth_elsewhere_that_shares_its_ifindex() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = load(&[])?;
    if probes
        .report()
        .signal(SIGNAL)
        .and_then(|s| s.attached)
        .is_none()
    {
        return require_variant(&probes, SIGNAL, Variant::Tcx, Feature::Tc)
            .unwrap_or(Ok(Outcome::Passed));
    }
    let pod = Netns::new("pod")?;
    let host_veth = Veth::to_host(&pod, 33)?;
    let shared_index = host_veth.host_ifindex()?;
    let pair = Pair::new(34, Some(shared_index))?;
    let mut collector = Collector::new(probes, Kernel, &Config::default());
    collector.tick()?;
    let snapshot = collector.tick()?.snapshot;
    let interface_of = |ns: &Netns| -> anyhow::Result<Option<String>> {
        let inode = ns.inode()?;
        Ok(snapshot
            .workload(inode)
            .and_then(|w| w.interface.as_ref())
            .map(|i| i.name.clone()))
    };
    let (of_pod, of_sender, of_receiver) = (
        interface_of(&pod)?,
        interface_of(&pair.sender)?,
        interface_of(&pair.receiver)?,
    );
    println!(
        "    ifindex {shared_index}: pod → {of_pod:?}, pair → {of_sender:?} / {of_receiver:?}"
    );
    ensure!(
        of_pod.as_deref() == Some(host_veth.veth.a_name.as_str()),
        "the pod's own veth {} is not its interface: {of_pod:?}",
        host_veth.veth.a_name
    );
    ensure!(
        of_sender.is_none() && of_receiver.is_none(),
        "a namespace without a host-side veth got one: {of_sender:?} / {of_receiver:?}"
    );
    Ok(Outcome::Passed)
}

/// nettune's tc filters on `iface` (host namespace), by program name, in both
/// directions, as `tc filter show` lists them.
pub fn our_filters(iface: &str) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for hook in ["ingress", "egress"] {
        let text = tool("tc", &["filter", "show", "dev", iface, hook], "iproute2")?;
        found.extend(
            ["pod_ingress", "pod_egress"]
                .into_iter()
                .filter(|name| text.contains(name))
                .map(|name| format!("{hook}:{name}")),
        );
    }
    Ok(found)
}

fn clsact_filters_are_removed_when_nettune_stops_watching_or_exits() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let mut probes = load(&[Variant::Tcx])?;
    if let Some(skip) = require_variant(&probes, SIGNAL, Variant::Clsact, Feature::Clsact) {
        return skip;
    }
    let mut pods = (0..4u8)
        .map(|i| {
            let ns = Netns::new("cls")?;
            let veth = Veth::to_host(&ns, 36 + i)?;
            Ok((ns, veth))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let names: Vec<String> = pods.iter().map(|(_, v)| v.veth.a_name.clone()).collect();
    let filters = |names: &[String]| -> anyhow::Result<Vec<(String, Vec<String>)>> {
        names
            .iter()
            .map(|n| Ok((n.clone(), our_filters(n)?)))
            .collect()
    };
    let expect_all = |names: &[String], when: &str| -> anyhow::Result<()> {
        for (name, ours) in filters(names)? {
            ensure!(
                ours.len() == 2,
                "{when}: {name} has {ours:?}, not nettune's two filters"
            );
        }
        Ok(())
    };
    let expect_none = |names: &[String], when: &str| -> anyhow::Result<()> {
        for (name, ours) in filters(names)? {
            ensure!(ours.is_empty(), "{when}: {name} still has {ours:?}");
        }
        Ok(())
    };

    watch_host_veths(&mut probes)?;
    expect_all(&names, "attached")?;
    // nettune stops watching while the interfaces stay.
    let changes = probes.watch_interfaces(&[]);
    ensure!(
        changes.removed.len() >= names.len(),
        "not released: {changes:?}"
    );
    expect_none(&names, "after nettune stopped watching")?;

    // Watched again; one pod goes between two ticks, then nettune exits: the
    // vanished interface's filters cannot be removed, the others' must be.
    watch_host_veths(&mut probes)?;
    expect_all(&names, "attached again")?;
    drop(pods.remove(0));
    drop(probes);
    expect_none(&names[1..], "after nettune exited")?;
    println!(
        "    {} interfaces: two clsact filters each while watched, none after release or exit",
        names.len()
    );
    Ok(Outcome::Passed)
}
