//! A viewer (`nettune top` with its embedded agent) never writes a sysctl.

use std::{
    net::SocketAddrV4,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    harness::{Outcome, TestResult, require_root},
    scenarios::{Pair, somaxconn},
    sockets::{connect_nonblocking, listener_with_backlog},
};

use crate::agent::nettune_bin;

use super::config::TestConfig;

/// `nettune top` with no agent running embeds one; with `mode = "enforce"` in the
/// config it must still only advise: a person looking at a screen never changes
/// a sysctl.
pub fn a_viewer_with_an_enforce_config_never_writes() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let pair = Pair::new(16, None)?;
    pair.receiver.write_sysctl("net/core/somaxconn", "8")?;
    let config = TestConfig::new("viewer", &[&pair.receiver])?;
    // An API address nothing answers on, so `top` embeds its own agent.
    let api = format!("127.0.0.1:{}", bpf_tests::agent_process::free_port()?);
    let path = config.path.to_str().context("path")?;
    std::fs::write(
        &config.path,
        format!(
            "{}[agent]\napi_listen = \"{api}\"\n",
            std::fs::read_to_string(&config.path)?
        ),
    )?;
    let mut top = Command::new(nettune_bin()?)
        .args([
            "--config",
            path,
            "top",
            "-b",
            "-n",
            "8",
            "--interval",
            "0.3",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let addr = SocketAddrV4::new(pair.veth.b_addr, 5805);
    let _listener = pair.receiver.run(|| listener_with_backlog(addr, 4096))??;
    let mut stdout = top.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
    });
    // Overflows for as long as `top` runs: its start (loading the probes) and its
    // 8 frames take a few seconds here, longer on a slow machine; 2 minutes at most.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = top.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = top.kill();
            let _ = top.wait();
            anyhow::bail!("top did not finish its 8 frames in 2 minutes");
        }
        let clients = pair.sender.run(|| {
            (0..50)
                .map(|_| connect_nonblocking(addr))
                .collect::<anyhow::Result<Vec<_>>>()
        })??;
        std::thread::sleep(Duration::from_millis(300));
        drop(clients);
    };
    let frames = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let after = somaxconn(Some(&pair.receiver))?;
    println!(
        "    somaxconn after {:.1} s of overflows under `top` in enforce mode: {after}",
        started.elapsed().as_secs_f64()
    );
    ensure!(status.success(), "top failed: {frames}");
    ensure!(
        frames.contains("[advised]"),
        "the embedded agent did not even advise:\n{frames}"
    );
    ensure!(after == 8, "the viewer wrote somaxconn: 8 → {after}");
    Ok(Outcome::Passed)
}
