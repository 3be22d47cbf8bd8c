//! Section `scale`: the agent with 100 and 500 pod namespaces, against
//! node_exporter scraped on the same machine at the same time.
//!
//! Each pod gets a veth to the host. The agent starts after the pods exist;
//! once the kernel shows every veth attached, a window with the pods quiet (the
//! idle-CPU target), then one with each pod sending a datagram a second to the
//! next pod's closed port (packets on every veth, a NO_SOCKET drop in every pod),
//! `/metrics` and node_exporter each scraped once a second.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bpf_tests::{
    agent_process::{free_port, http_get},
    bench::{
        agent::{Agent, metric_sum, series_count, wait_for_tcx},
        pods::Pods,
        process::{CpuMeter, Spawned},
        report::{Row, Section, Target},
        stats::Summary,
    },
};

use crate::mode::Mode;

const METHOD: &str = "N pod namespaces, each a veth to the host and a default route through \
it; each pod sends a datagram a second to the next pod's closed port. `nettune run` \
(release, 1 s tick) starts after the pods exist: *time to ready* is until `/readyz` answers \
200, *time to full view* until every pod's host veth has series, *time to every veth attached* \
until the kernel (a TCX query per veth) shows both tc programs on each — the agent attaches a \
bounded time per pass, each TCX attach waiting for an RCU grace period, and its CPU meanwhile \
is a row of its own. Then six laps of 10 s with the pods quiet and `/metrics` scraped 1×/s: \
*idle agent CPU* (`/proc/<pid>/stat`, one sample a lap). Then a window with every pod sending its datagram a second \
(every namespace's counters move every tick, so each tick reads the most namespaces' \
`/proc/net` files it may): agent CPU; the `nettune_collection_duration_seconds` gauge at every scrape; \
`/metrics` scraped 1×/s (wall time per scrape, body size, series); node_exporter \
(`prometheus-node-exporter`, default collectors, on loopback) scraped 1×/s in the same window \
as the reference. Namespaces and links already on the machine (see the line above) are \
watched too.";

/// Scrapes of one endpoint: wall times, body sizes, series counts.
#[derive(Default)]
struct Scrapes {
    ms: Vec<f64>,
    kib: Vec<f64>,
    series: Vec<f64>,
}

impl Scrapes {
    fn scrape(&mut self, addr: SocketAddr) -> anyhow::Result<String> {
        let t = Instant::now();
        let (status, body) = http_get(addr, "/metrics")?;
        self.ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if status != 200 {
            bail!("{addr}/metrics answered {status}");
        }
        self.kib.push(body.len() as f64 / 1024.0);
        self.series.push(series_count(&body) as f64);
        Ok(body)
    }
}

/// node_exporter on a free loopback port, ready to scrape.
fn node_exporter() -> anyhow::Result<(Spawned, SocketAddr)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut process = Spawned::start(
        "prometheus-node-exporter",
        &[&format!("--web.listen-address={addr}")],
    )
    .context("node_exporter (Debian package prometheus-node-exporter; `cargo xtask setup`)")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(http_get(addr, "/metrics"), Ok((200, _))) {
        process.check_running()?;
        if Instant::now() > deadline {
            bail!("node_exporter did not answer within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((process, addr))
}

pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let counts: &[usize] = mode.pick(&[100], &[100, 500]);
    let window = Duration::from_secs(mode.pick(6, 30));
    let mut section = Section::new("scale", "4. Scale", METHOD, mode.quick);
    for &n in counts {
        one_count(&mut section, n, window)?;
    }
    Ok(section)
}

/// Laps of the idle window, each a sample of the agent's CPU.
const IDLE_LAPS: usize = 6;
/// One lap of the idle window.
const IDLE_LAP: Duration = Duration::from_secs(10);

fn one_count(section: &mut Section, n: usize, window: Duration) -> anyhow::Result<()> {
    let t = Instant::now();
    let pods = Pods::new(n, "sc")?;
    let created = t.elapsed();
    // One socket per pod, created inside it: it keeps sending from there.
    let sockets: Vec<(UdpSocket, SocketAddr)> = pods
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let next = &pods.pods[(i + 1) % n];
            let socket = p.ns.run(|| UdpSocket::bind("0.0.0.0:0"))??;
            Ok((socket, SocketAddr::from((next.addr(), 9))))
        })
        .collect::<anyhow::Result<_>>()?;
    let send_all = || {
        for (socket, to) in &sockets {
            let _ = socket.send_to(&[1], to);
        }
    };
    send_all();
    let (_exporter, exporter_addr) = node_exporter()?;

    let t = Instant::now();
    let agent = Agent::start("")?;
    let ready = t.elapsed();
    let mut meter = CpuMeter::start(agent.pid())?;
    agent.wait_for_interfaces(&pods.host_ifaces(), Duration::from_secs(120))?;
    let full_view = t.elapsed();
    wait_for_tcx(&pods.host_ifaces(), Duration::from_secs(120))?;
    let attached = t.elapsed();
    let attach_cpu = meter.lap()? * 100.0;

    // Idle: the pods send nothing; /metrics scraped once a second, the rate
    // the target is stated at. Laps of 10 s (the kernel's CPU times count in
    // 10 ms ticks: 0.1 % of a core), each a sample.
    let mut idle_cpu = Vec::new();
    for _ in 0..IDLE_LAPS {
        let started = Instant::now();
        while started.elapsed() < IDLE_LAP {
            http_get(agent.process.addr, "/metrics")?;
            std::thread::sleep(Duration::from_secs(1));
        }
        idle_cpu.push(meter.lap()? * 100.0);
    }

    let (mut ours, mut theirs) = (Scrapes::default(), Scrapes::default());
    let mut collection_ms = Vec::new();
    let started = Instant::now();
    // Once a second, as Prometheus at its most eager scrapes: what the target is
    // stated at.
    while started.elapsed() < window {
        let body = ours.scrape(agent.process.addr)?;
        collection_ms.push(metric_sum(&body, "nettune_collection_duration_seconds", &[]) * 1000.0);
        send_all();
        theirs.scrape(exporter_addr)?;
        std::thread::sleep(Duration::from_secs(1));
    }
    let cpu = meter.lap()? * 100.0;

    let at_500 = n >= 500;
    let target = |t: Target| if at_500 { Some(t) } else { None };
    let mut push = |row: Row, t: Option<Target>| {
        section.rows.push(match t {
            Some(t) => row.target(t),
            None => row,
        });
    };
    push(
        Row::new(
            format!("{n} pods: time to ready"),
            "s",
            Summary::one(ready.as_secs_f64()),
        ),
        target(Target::below(2.0, "< 2 s at 500")),
    );
    push(
        Row::new(
            format!("{n} pods: time to full view (every veth has series)"),
            "s",
            Summary::one(full_view.as_secs_f64()),
        ),
        None,
    );
    push(
        Row::new(
            format!("{n} pods: time to every veth attached (kernel's TCX query)"),
            "s",
            Summary::one(attached.as_secs_f64()),
        ),
        None,
    );
    push(
        Row::new(
            format!("{n} pods: agent CPU until every veth attached"),
            "% of a core",
            Summary::one(attach_cpu),
        ),
        None,
    );
    push(
        Row::new(
            format!("{n} pods: idle agent CPU (quiet pods)"),
            "% of a core",
            Summary::of(&idle_cpu),
        ),
        target(Target::below(1.0, "< 1 % of a core at 500")),
    );
    push(
        Row::new(
            format!("{n} pods: agent CPU, every pod busy (a drop a second each)"),
            "% of a core",
            Summary::one(cpu),
        ),
        None,
    );
    push(
        Row::new(
            format!("{n} pods: collection duration"),
            "ms",
            Summary::of(&collection_ms),
        ),
        target(Target::below(50.0, "< 50 ms at 500")),
    );
    let p = |v: &[f64], q: f64| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        bpf_tests::bench::stats::quantile(&s, q)
    };
    push(
        Row::new(
            format!("{n} pods: /metrics scrape p50"),
            "ms",
            Summary::one(p(&ours.ms, 0.5)),
        )
        .against("node_exporter p50", Summary::one(p(&theirs.ms, 0.5))),
        None,
    );
    push(
        Row::new(
            format!("{n} pods: /metrics scrape p100"),
            "ms",
            Summary::one(p(&ours.ms, 1.0)),
        )
        .against("node_exporter p100", Summary::one(p(&theirs.ms, 1.0))),
        target(Target::below(50.0, "< 50 ms at 500")),
    );
    push(
        Row::new(
            format!("{n} pods: /metrics body"),
            "KiB",
            Summary::of(&ours.kib),
        )
        .against("node_exporter", Summary::of(&theirs.kib)),
        None,
    );
    push(
        Row::new(
            format!("{n} pods: /metrics series"),
            "",
            Summary::of(&ours.series),
        )
        .against("node_exporter", Summary::of(&theirs.series)),
        None,
    );
    section.facts.push(format!(
        "{n} pods: created in {:.1} s; {} agent scrapes and {} node_exporter scrapes over {} s.",
        created.as_secs_f64(),
        ours.ms.len(),
        theirs.ms.len(),
        window.as_secs()
    ));
    drop(agent);
    let t = Instant::now();
    drop(sockets);
    drop(pods);
    section.facts.push(format!(
        "{n} pods: removed in {:.1} s.",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}
