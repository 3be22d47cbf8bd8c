//! The tuning tests' config (enforce mode, the test namespaces opted in) and the
//! listen storms they share.

use std::{net::SocketAddrV4, path::PathBuf, process::Command};

use anyhow::Context as _;
use bpf_tests::{
    agent_process::AgentProcess,
    netns::Netns,
    scenarios::{Pair, somaxconn, storm_until_raised},
};

use crate::agent::nettune_bin;

/// The somaxconn ceiling every tuning test's config sets.
pub const CEILING: u64 = 8192;

/// A config for enforce mode that may tune `pods`' namespaces.
pub struct TestConfig {
    pub path: PathBuf,
    pub state: PathBuf,
}

impl TestConfig {
    pub fn new(tag: &str, pods: &[&Netns]) -> anyhow::Result<Self> {
        Self::with(tag, pods, "")
    }

    /// The config with `tuning` (more `[tuning]` keys, one per line) added.
    pub fn with(tag: &str, pods: &[&Netns], tuning: &str) -> anyhow::Result<Self> {
        // Short: bpftrace compares paths under it with literals of at most 63 bytes.
        let base = std::env::temp_dir().join(format!("ntt-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base)?;
        let state = base.join("state");
        let pods: Vec<String> = pods
            .iter()
            .map(|p| format!("\"netns:{}\"", p.name()))
            .collect();
        let path = base.join("nettune.toml");
        // Node-wide sysctls stay out of reach unless the test is about them:
        // pressure from other tests or other work on the machine must not move them.
        let exclude = if tuning.contains("exclude") {
            String::new()
        } else {
            let node_wide: Vec<String> = nettune::model::tunables::ALL
                .iter()
                .filter(|t| t.scope == nettune::model::tunables::Scope::Node)
                .map(|t| format!("\"{}\"", t.name))
                .collect();
            format!("exclude = [{}]\n", node_wide.join(", "))
        };
        std::fs::write(
            &path,
            format!(
                "[tuning]\nmode = \"enforce\"\nstate_dir = \"{}\"\npod_netns = [{}]\n{tuning}{exclude}\
                 [tuning.limits.\"net.core.somaxconn\"]\nceiling = {CEILING}\n",
                state.display(),
                pods.join(", ")
            ),
        )?;
        Ok(Self { path, state })
    }

    /// `nettune run` with this config and a 0.3 s tick.
    pub fn start_agent(&self) -> anyhow::Result<AgentProcess> {
        let path = self.path.to_str().context("path")?;
        AgentProcess::start(&nettune_bin()?, &["--config", path, "--interval", "0.3"])
    }

    pub fn nettune(&self, args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
        let out = Command::new(nettune_bin()?)
            .arg("--config")
            .arg(&self.path)
            .args(args)
            .output()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }
}

impl Drop for TestConfig {
    fn drop(&mut self) {
        if let Some(base) = self.path.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// Sets somaxconn 8 in `pair`'s receiver (so that a server asking for more is
/// capped by it, and raising it is the fix); returns 8.
pub fn capped_at_8(pair: &Pair) -> anyhow::Result<u64> {
    pair.receiver.write_sysctl("net/core/somaxconn", "8")?;
    somaxconn(Some(&pair.receiver))
}

/// Storms a server that asked for `backlog` in `pair`'s receiver until the
/// namespace's somaxconn rises (or 20 s).
pub fn storm_with_backlog_until_raised(
    pair: &Pair,
    port: u16,
    backlog: i32,
    original: u64,
) -> anyhow::Result<u64> {
    let addr = SocketAddrV4::new(pair.veth.b_addr, port);
    storm_until_raised(&pair.receiver, &pair.sender, addr, backlog, original)
}

/// Storms a server that asked for 4096 in `pair`'s receiver until its somaxconn
/// rises (or 20 s).
pub fn storm_until_raised_in(pair: &Pair, port: u16, original: u64) -> anyhow::Result<u64> {
    storm_with_backlog_until_raised(pair, port, 4096, original)
}
