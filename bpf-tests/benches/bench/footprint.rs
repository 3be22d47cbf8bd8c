//! Section `footprint`: the agent's CPU and memory, idle and under load.
//!
//! A fresh `nettune run` with four pods (so that its peak includes start-up),
//! measured over an idle window, then over a loaded window: a paced drop loop
//! between two pods, 1-byte request/response between them, and repeated TCP
//! transfers into a third pod whose nftables drops 3 % of TCP packets
//! (NETFILTER_DROP events and retransmits).

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use bpf_tests::{
    bench::{
        agent::Agent,
        load::{bench_cpu, request_response, udp_flood},
        nft,
        pods::Pods,
        process::{CpuMeter, memory},
        report::{Row, Section, Target},
        stats::Summary,
    },
    traffic::bulk_transfer,
};

use crate::mode::Mode;

const METHOD: &str = "A fresh `nettune run` (release build) with four pod namespaces. CPU from \
`/proc/<pid>/stat` (utime + stime, all threads) over consecutive laps, as CPU seconds per \
minute; RSS (`VmRSS`) sampled every second; peak RSS is `VmHWM` at the end (start-up \
included). *Idle*: nothing but the tick. *Load*: 20k datagrams/s to a closed port between two \
pods, 1-byte request/response between them, and back-to-back 4 MiB TCP transfers into a pod \
whose nftables drops 3 % of TCP packets.";

/// CPU seconds per minute over laps, and RSS samples, in one window.
struct Window {
    cpu_s_per_min: Vec<f64>,
    rss_mib: Vec<f64>,
}

fn observe(pid: u32, window: Duration, lap: Duration) -> anyhow::Result<Window> {
    let mut meter = CpuMeter::start(pid)?;
    let (mut cpu, mut rss) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let mut next_lap = started + lap;
    while started.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1));
        rss.push(memory(pid)?.rss_mib);
        if Instant::now() >= next_lap {
            cpu.push(meter.lap()? * 60.0);
            next_lap += lap;
        }
    }
    Ok(Window {
        cpu_s_per_min: cpu,
        rss_mib: rss,
    })
}

pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let window = Duration::from_secs(mode.pick(6, 40));
    let lap = Duration::from_secs(mode.pick(2, 5));
    let pods = Pods::new(4, "fp")?;
    let [a, b, c, d] = &pods.pods[..] else {
        unreachable!("four pods")
    };
    nft::add_input_rule(&d.ns, "meta l4proto tcp numgen random mod 100 < 3 drop")?;
    let agent = Agent::start("")?;
    agent.wait_for_interfaces(&pods.host_ifaces(), Duration::from_secs(30))?;
    let pid = agent.pid();

    let idle = observe(pid, window, lap)?;
    let stop = AtomicBool::new(false);
    let loaded = std::thread::scope(|s| -> anyhow::Result<Window> {
        let flood = s.spawn(|| {
            udp_flood(
                &a.ns,
                SocketAddr::from((b.addr(), 9)),
                20_000 * window.as_secs(),
                Some(20_000),
                window,
            )
        });
        let rr = s.spawn(|| {
            request_response(
                &a.ns,
                &b.ns,
                SocketAddr::from((b.addr(), 5401)),
                window,
                bench_cpu(),
            )
        });
        let bulk = s.spawn(|| -> anyhow::Result<()> {
            while !stop.load(Ordering::Relaxed) {
                bulk_transfer(&c.ns, &d.ns, SocketAddr::from((d.addr(), 5402)), 4 << 20)?;
            }
            Ok(())
        });
        let w = observe(pid, window, lap);
        stop.store(true, Ordering::Relaxed);
        flood
            .join()
            .map_err(|_| anyhow::anyhow!("flood panicked"))??;
        rr.join().map_err(|_| anyhow::anyhow!("rr panicked"))??;
        bulk.join()
            .map_err(|_| anyhow::anyhow!("bulk panicked"))??;
        w
    })?;
    let peak = memory(pid)?.peak_mib;

    let mut section = Section::new("footprint", "3. Agent footprint", METHOD, mode.quick);
    section.rows.push(Row::new(
        "CPU, idle (4 pods)",
        "s/min",
        Summary::of(&idle.cpu_s_per_min),
    ));
    section.rows.push(Row::new(
        "CPU, under load",
        "s/min",
        Summary::of(&loaded.cpu_s_per_min),
    ));
    section.rows.push(
        Row::new("RSS, idle", "MiB", Summary::of(&idle.rss_mib))
            .target(Target::below(30.0, "< 30 MiB steady")),
    );
    section.rows.push(
        Row::new("RSS, under load", "MiB", Summary::of(&loaded.rss_mib))
            .target(Target::below(30.0, "< 30 MiB steady")),
    );
    section.rows.push(
        Row::new(
            "peak RSS (VmHWM), start-up included",
            "MiB",
            Summary::one(peak),
        )
        .target(Target::below(40.0, "< 40 MiB peak")),
    );
    section.facts.push(format!(
        "windows of {} s, CPU laps of {} s.",
        window.as_secs(),
        lap.as_secs()
    ));
    Ok(section)
}
