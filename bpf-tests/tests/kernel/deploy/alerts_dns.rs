//! The shipped DNS and conntrack alert rules, live (as `alerts`, with their
//! waiting shortened): a pod asks a server that answers half its queries with
//! SERVFAIL after 1.2 s and never answers the other half, and the conntrack
//! table is made 80 % full — `NettuneDNSUnanswered`, `NettuneDNSServerFailures`,
//! `NettuneDNSSlow` (naming the asking pod) and `NettuneConntrackTableFull` fire,
//! and resolve once the faults stop.

use std::{
    net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    agent_process::AgentProcess,
    bench::pods::{Pod, Pods},
    harness::{Outcome, TestResult, require_root},
    sysctl_guard::Restore,
};

use super::alerts::{firing, prometheus_with_the_rules, wait_alerts};
use crate::agent::nettune_bin;

const DNS_ALERTS: [&str; 3] = [
    "NettuneDNSUnanswered",
    "NettuneDNSServerFailures",
    "NettuneDNSSlow",
];
const CONNTRACK_ALERT: &str = "NettuneConntrackTableFull";
const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
/// Connections held open to the server while the table is made small.
const TRACKED: usize = 20;
/// `nf_conntrack_max` while they are held: 20 of 24 is over the rule's 80 %.
const SMALL_TABLE: usize = 24;
const LISTEN_PORT: u16 = 5330;
/// How long the server sits on the queries it answers (past the rule's 1 s).
const SLOW: Duration = Duration::from_millis(1200);

/// A query for `example.test A` with `id`.
fn query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["example", "test"] {
        q.push(u8::try_from(label.len()).unwrap_or(0));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Answers queries with an even id with SERVFAIL after [`SLOW`], never the odd
/// ones, until `stop` (bounded by the test's waits).
fn serve(socket: &UdpSocket, stop: &AtomicBool) -> anyhow::Result<u64> {
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut pending: Vec<(Instant, Vec<u8>, SocketAddr)> = Vec::new();
    let mut answered = 0;
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = socket.recv_from(&mut buf)
            && n >= 12
            && buf[1] % 2 == 0
        {
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80; // a response
            reply[3] = 0x82; // recursion available, SERVFAIL
            pending.push((Instant::now() + SLOW, reply, from));
        }
        let now = Instant::now();
        for (_, reply, to) in pending.iter().filter(|(due, ..)| *due <= now) {
            socket.send_to(reply, to)?;
            answered += 1;
        }
        pending.retain(|(due, ..)| *due > now);
    }
    Ok(answered)
}

/// Ten queries a second from `client` to `server`'s port 53, until `stop`.
fn ask(client: &Pod, server: SocketAddrV4, stop: &AtomicBool) -> anyhow::Result<u16> {
    let socket = client.ns.run(|| UdpSocket::bind("0.0.0.0:0"))??;
    let mut id = 0u16;
    while !stop.load(Ordering::Relaxed) && id < 2000 {
        socket.send_to(&query(id), server)?;
        id += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(id)
}

pub fn the_dns_and_conntrack_alerts_fire_for_real_faults_and_resolve() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let pods = Pods::new(2, "alertdns")?;
    let (server, client) = (&pods.pods[0], &pods.pods[1]);
    // Connection tracking on in the server's namespace (a `ct` rule makes the
    // namespace track).
    server.ns.exec(
        "nft",
        &[
            "add table inet nettune_test; add chain inet nettune_test input { type filter hook \
             input priority 0; policy accept; ct state new accept; }",
        ],
    )?;
    let dir = std::env::temp_dir().join(format!("nettune-alerts-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("nettune.toml");
    std::fs::write(&config, "[dns]\ntimeout_seconds = 3.0\n")?;
    let config_arg = config.to_str().context("path")?;
    let agent = AgentProcess::start(
        &nettune_bin()?,
        &["--config", config_arg, "--interval", "0.5"],
    )?;
    let prometheus = prometheus_with_the_rules(&agent)?;
    let dns_server = SocketAddrV4::new(server.addr(), 53);
    let responder = server.ns.run(|| UdpSocket::bind(dns_server))??;
    let listener = server
        .ns
        .run(|| TcpListener::bind(SocketAddrV4::new(server.addr(), LISTEN_PORT)))??;
    let held = client.ns.run(|| {
        (0..TRACKED)
            .map(|_| TcpStream::connect(SocketAddrV4::new(server.addr(), LISTEN_PORT)))
            .collect::<std::io::Result<Vec<_>>>()
    })??;
    let small = Restore::set(CONNTRACK_MAX, &SMALL_TABLE.to_string())?;
    let stop = AtomicBool::new(false);
    let pod = format!("netns:{}", client.ns.name());
    let every: Vec<&str> = DNS_ALERTS
        .iter()
        .copied()
        .chain([CONNTRACK_ALERT])
        .collect();
    let (fired, answered, asked) = std::thread::scope(|s| -> anyhow::Result<_> {
        let serving = s.spawn(|| serve(&responder, &stop));
        let asking = s.spawn(|| ask(client, dns_server, &stop));
        let fired = wait_alerts(
            &prometheus,
            Duration::from_secs(90),
            "every DNS and conntrack alert firing",
            |a| every.iter().all(|name| firing(a, name).is_some()),
        );
        stop.store(true, Ordering::Relaxed);
        let answered = serving
            .join()
            .map_err(|_| anyhow::anyhow!("the server panicked"))??;
        let asked = asking
            .join()
            .map_err(|_| anyhow::anyhow!("the client panicked"))??;
        Ok((fired?, answered, asked))
    })?;
    println!("    {asked} queries, {answered} answered SERVFAIL after {SLOW:?}");
    for name in &every {
        let alert = firing(&fired, name).context(*name)?;
        println!("    firing: {name} {}", alert.labels);
    }
    for name in DNS_ALERTS {
        ensure!(
            fired
                .iter()
                .any(|a| a.name == name && a.labels["pod"] == pod.as_str()),
            "{name} does not name the asking pod {pod}"
        );
    }
    // The faults stop: the table back to its size, the connections closed.
    drop(small);
    drop(held);
    drop(listener);
    let started = Instant::now();
    wait_alerts(
        &prometheus,
        Duration::from_secs(90),
        "the DNS and conntrack alerts resolving",
        |a| a.iter().all(|alert| !every.contains(&alert.name.as_str())),
    )?;
    println!(
        "    resolved {:.0} s after the faults stopped",
        started.elapsed().as_secs_f64()
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Outcome::Passed)
}
