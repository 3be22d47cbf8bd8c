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
//! Run with `cargo xtask bench` (root). `NETTUNE_BENCH_RUNS` sets runs per mode
//! (default 5). Results also go to `target/nettune-bench/reaction.json`.

use std::{
    net::SocketAddrV4,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bpf_tests::{
    agent_process::AgentProcess, scenarios::Pair, sockets::connect_nonblocking,
    sysctl_guard::Restore,
};

const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const LOWERED: &str = "16";

fn nettune_bin() -> PathBuf {
    std::env::var_os("NETTUNE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/nettune"),
        PathBuf::from,
    )
}

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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the reaction benchmark needs root (it runs nettune and changes sysctls)");
    }
    let runs: u8 = std::env::var("NETTUNE_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let base = std::env::temp_dir().join(format!("nettune-bench-{}", std::process::id()));
    let conntrack_max = Restore::set(CONNTRACK_MAX, LOWERED)?;
    let mut results = serde_json::Map::new();
    let mut medians = Vec::new();
    for (wake, label) in [(true, "urgent event"), (false, "tick only (baseline)")] {
        let mut ms = Vec::new();
        for run in 0..runs {
            let d = one_run(run, wake, &base, &conntrack_max)?;
            ms.push(d.as_secs_f64() * 1000.0);
        }
        let (min, max) = (
            ms.iter().copied().fold(f64::INFINITY, f64::min),
            ms.iter().copied().fold(0.0, f64::max),
        );
        let med = median(&mut ms);
        println!(
            "reaction, {label:<22}: median {med:7.1} ms  (min {min:.1}, max {max:.1}, {runs} runs)"
        );
        results.insert(
            label.to_owned(),
            serde_json::json!({"median_ms": med, "min_ms": min, "max_ms": max, "runs_ms": ms}),
        );
        medians.push(med);
    }
    let ratio = medians[0] / medians[1];
    println!(
        "ratio event / tick: {ratio:.3}  (target: event path under 1000 ms: {})",
        if medians[0] < 1000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    results.insert("ratio_event_to_tick".into(), ratio.into());
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/nettune-bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("reaction.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    let _ = std::fs::remove_dir_all(base);
    Ok(())
}
