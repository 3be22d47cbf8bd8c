//! How fast an urgent kernel event reaches a written sysctl (target: under 1 s in
//! enforce mode), against the baseline of the same agent waking only on its tick.
//!
//! Scenario, per run: a fresh namespace pair whose receiver tracks connections
//! (an nftables `ct state` rule), `nf_conntrack_max` lowered to 16 (restored
//! after), and `nettune run` in enforce mode with a 1 s tick. At t0 the sender
//! opens 24 connections: the table fills, conntrack drops packets
//! (`NETFILTER_DROP`, an urgent event), and the tuner raises `nf_conntrack_max`.
//! The reaction is t0 → the moment the new value is visible in /proc (polled every
//! millisecond). The baseline runs the same with `agent.wake_on_events = false`.
//!
//! Section `reaction` of `cargo xtask bench`: 5 runs per mode (2 with `--quick`;
//! `NETTUNE_BENCH_RUNS` overrides).

use std::{
    net::SocketAddrV4,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bpf_tests::{
    agent_process::AgentProcess,
    bench::{
        agent::nettune_bin,
        report::{Row, Section, Target},
        stats::Summary,
    },
    scenarios::Pair,
    sockets::connect_nonblocking,
    sysctl_guard::Restore,
};

use crate::mode::Mode;

const METHOD: &str = "Urgent kernel event → written sysctl (`bpf-tests/benches/bench/reaction.rs`): \
a test namespace that tracks connections, `nf_conntrack_max` lowered to 16 (restored after), \
`nettune run` in enforce mode with a 1 s tick. At t0 24 connections are opened; the table \
fills, conntrack drops packets (`NETFILTER_DROP`, sent through the ring buffer), the agent \
collects at once, the tuner raises `nf_conntrack_max`; the reaction is t0 → the new value \
visible in /proc (polled every millisecond). Reference: the same agent with \
`agent.wake_on_events = false`, waiting for its tick.";

const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const LOWERED: &str = "16";

fn one_run(run: u8, wake: bool, base: &Path, conntrack_max: &Restore) -> anyhow::Result<Duration> {
    let pair = Pair::new(40 + run, None)?;
    pair.receiver.exec(
        "nft",
        &["add table inet bench; add chain inet bench input { type filter hook input priority 0; }; add rule inet bench input ct state new,established accept"],
    )?;
    let dir = base.join(format!("{}-{run}", if wake { "event" } else { "tick" }));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("nettune.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ninterval_seconds = 1.0\nwake_on_events = {wake}\n\
             [tuning]\nmode = \"enforce\"\nstate_dir = \"{}\"\n",
            dir.join("state").display()
        ),
    )?;
    conntrack_max.write(LOWERED)?;
    let config_arg = config.to_str().context("path")?;
    let agent = AgentProcess::start(&nettune_bin(), &["--config", config_arg])?;
    // Start at a random phase of the tick, as real events do.
    std::thread::sleep(Duration::from_millis(1000 + u64::from(run) * 173 % 1000));
    let server = SocketAddrV4::new(pair.veth.b_addr, 5900);
    let _listener = pair
        .receiver
        .run(|| std::net::TcpListener::bind(server))??;
    let t0 = Instant::now();
    let _clients = pair.sender.run(|| {
        (0..24)
            .map(|_| connect_nonblocking(server))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    let deadline = t0 + Duration::from_secs(10);
    let reaction = loop {
        if std::fs::read_to_string(CONNTRACK_MAX)?.trim() != LOWERED {
            break t0.elapsed();
        }
        if Instant::now() > deadline {
            bail!("nf_conntrack_max was not raised within 10 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    drop(agent);
    let rollback = std::process::Command::new(nettune_bin())
        .args(["--config", config_arg, "rollback"])
        .output()?;
    if !rollback.status.success() {
        bail!(
            "rollback failed: {}",
            String::from_utf8_lossy(&rollback.stdout)
        );
    }
    Ok(reaction)
}

pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let runs: u8 = std::env::var("NETTUNE_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(mode.pick(2, 5));
    let base = std::env::temp_dir().join(format!("nettune-bench-{}", std::process::id()));
    let conntrack_max = Restore::set(CONNTRACK_MAX, LOWERED)?;
    let mut summaries = Vec::new();
    for wake in [true, false] {
        let mut ms = Vec::new();
        for run in 0..runs {
            let d = one_run(run, wake, &base, &conntrack_max)?;
            ms.push(d.as_secs_f64() * 1000.0);
        }
        summaries.push(Summary::of(&ms));
    }
    let _ = std::fs::remove_dir_all(base);
    let mut section = Section::new("reaction", "6. Reaction", METHOD, mode.quick);
    section.rows.push(
        Row::new("urgent event → written sysctl", "ms", summaries[0].clone())
            .against("tick only (1 s tick)", summaries[1].clone())
            .target(Target::below(1000.0, "< 1 s")),
    );
    Ok(section)
}
