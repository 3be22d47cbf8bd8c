//! The agent under test: the real `nettune run` (release build, as deployed),
//! with a private state directory, and what benchmarks read from its `/metrics`.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::agent_process::AgentProcess;

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// The `nettune` binary: `$NETTUNE_BIN` (set by `cargo xtask bench`), else the
/// workspace's release build.
pub fn nettune_bin() -> PathBuf {
    std::env::var_os("NETTUNE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/nettune"),
        PathBuf::from,
    )
}

/// `nettune run` with a config in a private directory (removed on drop).
pub struct Agent {
    // Dropped first: the agent stops before its directory goes.
    pub process: AgentProcess,
    dir: PathBuf,
}

impl Agent {
    /// Starts the agent in observe mode with `extra` appended to its config file
    /// (e.g. `"[agent]\ninterval_seconds = 0.5\n"`); returns once `/readyz` is 200.
    pub fn start(extra: &str) -> anyhow::Result<Self> {
        Self::start_in("observe", extra)
    }

    /// [`Self::start`] with the tuner in `mode`. In `enforce` the daemon arms
    /// urgent events as on a tuned node, while every sysctl nettune knows is
    /// excluded: a benchmark never changes the machine's settings.
    pub fn start_in(mode: &str, extra: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "nettune-bench-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("nettune.toml");
        std::fs::write(
            &config,
            format!(
                "{extra}\n[tuning]\nmode = \"{mode}\"\nstate_dir = \"{}\"\nexclude = {:?}\n",
                dir.join("state").display(),
                nettune::model::tunables::ALL
                    .iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
            ),
        )?;
        let config = config.to_str().context("non-UTF-8 temp dir")?;
        let process = AgentProcess::start(&nettune_bin(), &["--config", config])?;
        Ok(Self { process, dir })
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Polls `/metrics` until every interface in `ifaces` has series (its tc
    /// programs are attached and counted), for at most `timeout`.
    pub fn wait_for_interfaces(&self, ifaces: &[&str], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let body = self.process.metrics()?;
            let missing = ifaces
                .iter()
                .filter(|i| !body.contains(&format!("interface=\"{i}\"")))
                .count();
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{missing} of {} interfaces not in /metrics after {timeout:?}",
                    ifaces.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Polls the kernel (a TCX query on each interface, both directions) until every
/// interface in `ifaces` has a program attached on ingress and on egress, for at
/// most `timeout`. What the agent says of its attaches is not asked: its series
/// appear before the last of hundreds of attaches is done.
pub fn wait_for_tcx(ifaces: &[&str], timeout: Duration) -> anyhow::Result<()> {
    use aya::programs::{SchedClassifier, tc::TcAttachType};
    let names: Vec<std::ffi::CString> = ifaces
        .iter()
        .map(|i| std::ffi::CString::new(*i))
        .collect::<Result<_, _>>()?;
    let deadline = Instant::now() + timeout;
    let mut at = 0;
    while at < names.len() {
        let attached = [TcAttachType::Ingress, TcAttachType::Egress]
            .into_iter()
            .all(|way| {
                SchedClassifier::query_tcx(names[at].as_c_str(), way)
                    .is_ok_and(|(_, programs)| !programs.is_empty())
            });
        if attached {
            at += 1;
            continue;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} interfaces without both tc programs after {timeout:?}",
                names.len() - at,
                names.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sum of every sample of `metric` in a Prometheus text `body` whose labels
/// include each `name="value"` of `labels`.
pub fn metric_sum(body: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name_end = series.find('{').unwrap_or(series.len());
            if &series[..name_end] != metric {
                return None;
            }
            let wanted = labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Number of samples (series) in a Prometheus text body.
pub fn series_count(body: &str) -> usize {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

#[cfg(test)]
mod tests {
    use super::{metric_sum, series_count};

    #[test]
    fn sums_matching_series_only() {
        let body = "# HELP x\nnettune_drops_total{pod=\"a\",reason=\"NO_SOCKET\"} 3\n\
                    nettune_drops_total{pod=\"a\",reason=\"NETFILTER_DROP\"} 4\n\
                    nettune_drops_total{pod=\"b\",reason=\"NO_SOCKET\"} 5\n\
                    nettune_drops_total_x 9\nnettune_workloads 2\n";
        assert_eq!(
            metric_sum(body, "nettune_drops_total", &[("pod", "a")]),
            7.0
        );
        assert_eq!(metric_sum(body, "nettune_workloads", &[]), 2.0);
        assert_eq!(series_count(body), 5);
    }
}
