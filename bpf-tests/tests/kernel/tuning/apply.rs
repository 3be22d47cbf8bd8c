//! `nettune apply --profile production` in a test namespace, and its rollback.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    harness::{Outcome, TestResult, require_root},
    netns::Netns,
};

use crate::agent::nettune_bin;

/// `nettune apply --profile production` run inside a test namespace (its "node"):
/// the ports nettune protects are reserved before the ephemeral range widens, and
/// rollback brings `ip_local_reserved_ports` back to its empty original — read
/// back from the kernel, not taken from nettune's word. Every decision is printed
/// once (no second copy as a log line).
pub fn apply_reserves_node_ports_before_widening_and_rollback_empties_the_list_again() -> TestResult
{
    if let Some(skip) = require_root() {
        return skip;
    }
    let ns = Netns::new("apply")?;
    let read = |key: &str| -> anyhow::Result<String> {
        let path = PathBuf::from("/proc/sys").join(key);
        Ok(ns
            .run(|| nettune::sys::sysctl::read_file(&path))??
            .trim()
            .replace('\t', " "))
    };
    let reserved_before = read("net/ipv4/ip_local_reserved_ports")?;
    let range_before = read("net/ipv4/ip_local_port_range")?;
    ensure!(
        reserved_before.is_empty(),
        "a new namespace reserves {reserved_before:?}"
    );
    // Node-wide sysctls would change the host: leave them out.
    let node_wide: Vec<String> = nettune::model::tunables::ALL
        .iter()
        .filter(|t| t.scope == nettune::model::tunables::Scope::Node)
        .map(|t| format!("\"{}\"", t.name))
        .collect();
    let base = std::env::temp_dir().join(format!("nettune-apply-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let config = base.join("nettune.toml");
    std::fs::write(
        &config,
        format!(
            "[tuning]\nstate_dir = \"{}\"\nexclude = [{}]\n",
            base.join("state").display(),
            node_wide.join(", ")
        ),
    )?;
    let nettune = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        let mut all = vec!["--config", config.to_str().context("path")?];
        all.extend_from_slice(args);
        Ok(Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(nettune_bin()?)
            .args(&all)
            .output()?)
    };
    let applied = nettune(&["apply", "--profile", "production"])?;
    let stdout = String::from_utf8_lossy(&applied.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&applied.stderr).into_owned();
    let reserved = read("net/ipv4/ip_local_reserved_ports")?;
    let range = read("net/ipv4/ip_local_port_range")?;
    println!("    applied: reserved {reserved:?}, range {range:?}");
    let result = (|| -> anyhow::Result<()> {
        ensure!(applied.status.success(), "apply failed:\n{stdout}{stderr}");
        // The agent's metrics and API ports, the kubelet's, kube-proxy's, the
        // NodePort range — as the kernel lists them (adjacent ports merged).
        for (low, high) in [
            (9100, 9100),
            (9977, 9978),
            (10250, 10250),
            (10256, 10256),
            (30000, 32767),
        ] {
            ensure!(
                kernel_port_list(&reserved)
                    .iter()
                    .any(|(l, h)| *l <= low && high <= *h),
                "{low}-{high} is not reserved: {reserved:?}"
            );
        }
        ensure!(
            range == "1024 65535",
            "the range was not widened: {range:?}"
        );
        let reserve_line = stdout.find("ip_local_reserved_ports");
        let range_line = stdout.find("ip_local_port_range");
        ensure!(
            reserve_line.is_some() && reserve_line < range_line,
            "the reservation was not decided before the widening:\n{stdout}"
        );
        ensure!(
            !stderr.contains("tuning:"),
            "decisions were printed twice (stdout and the log):\n{stderr}"
        );
        Ok(())
    })();
    let rolled = nettune(&["rollback"])?;
    let _ = std::fs::remove_dir_all(&base);
    result?;
    ensure!(
        rolled.status.success(),
        "rollback failed: {}",
        String::from_utf8_lossy(&rolled.stdout)
    );
    let (reserved_after, range_after) = (
        read("net/ipv4/ip_local_reserved_ports")?,
        read("net/ipv4/ip_local_port_range")?,
    );
    println!("    rolled back: reserved {reserved_after:?}, range {range_after:?}");
    ensure!(
        reserved_after.is_empty(),
        "the reserved ports were not emptied again: {reserved_after:?}"
    );
    ensure!(
        range_after == range_before,
        "range {range_after:?} != {range_before:?}"
    );
    Ok(Outcome::Passed)
}

/// `ip_local_reserved_ports` as the kernel prints it (`8080,30000-32767`), as
/// (low, high) ranges.
fn kernel_port_list(text: &str) -> Vec<(u16, u16)> {
    text.split(',')
        .filter_map(|item| {
            let (low, high) = item
                .trim()
                .split_once('-')
                .unwrap_or((item.trim(), item.trim()));
            Some((low.parse().ok()?, high.parse().ok()?))
        })
        .collect()
}
