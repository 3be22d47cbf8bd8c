//! A real Prometheus server (Debian's `prometheus` package) on loopback,
//! scraping agents every second, for tests of what Prometheus and the people
//! reading it see. It can be stopped and started again on the same address
//! and data, as when Prometheus restarts under a running viewer.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::Context as _;
use serde_json::Value;

use crate::agent_process::{free_port, http_get};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A scrape target and the labels Prometheus gives its series.
pub struct Target {
    /// The agent's `/metrics` address.
    pub addr: SocketAddr,
    /// Target labels, e.g. `("node", "node-a")` as the ServiceMonitor's
    /// relabelling gives them.
    pub labels: Vec<(String, String)>,
}

/// A Prometheus server; killed and its data removed on drop.
pub struct Prometheus {
    child: Option<Child>,
    /// Its HTTP address.
    pub addr: SocketAddr,
    dir: PathBuf,
    /// Flags beyond config, data and address ([`Self::restart_with`]).
    flags: Vec<String>,
}

impl Prometheus {
    /// Scrapes one target, without labels of its own.
    pub fn start(target: SocketAddr) -> anyhow::Result<Self> {
        Self::scraping(&[Target {
            addr: target,
            labels: vec![],
        }])
    }

    /// Scrapes `targets` every second.
    pub fn scraping(targets: &[Target]) -> anyhow::Result<Self> {
        Self::with_rules(targets, None)
    }

    /// Scrapes `targets` every second and evaluates the rule file `rules` (a
    /// Prometheus rule file's text) every second.
    pub fn with_rules(targets: &[Target], rules: Option<&str>) -> anyhow::Result<Self> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nettune-prom-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
        if let Some(rules) = rules {
            std::fs::write(dir.join("rules.yaml"), rules)?;
            config.push_str(&format!(
                "rule_files:\n  - {}\n",
                dir.join("rules.yaml").display()
            ));
        }
        config.push_str("scrape_configs:\n  - job_name: nettune\n    static_configs:\n");
        for t in targets {
            config.push_str(&format!("      - targets: ['{}']\n", t.addr));
            if !t.labels.is_empty() {
                config.push_str("        labels:\n");
                for (k, v) in &t.labels {
                    config.push_str(&format!("          {k}: '{v}'\n"));
                }
            }
        }
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut prometheus = Self {
            child: None,
            addr,
            dir,
            flags: Vec::new(),
        };
        prometheus.resume()?;
        Ok(prometheus)
    }

    /// Starts the server (again), same address, config and data.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={}", self.addr))
            .args(&self.flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus (Debian package prometheus)")?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops the server (SIGKILL, as a crash or an eviction), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts the server with `flags` added (e.g. `--query.max-samples=1`, so
    /// that it refuses every query that reads a sample), same data.
    pub fn restart_with(&mut self, flags: &[&str]) -> anyhow::Result<()> {
        self.stop();
        self.flags = flags.iter().map(|f| (*f).to_owned()).collect();
        self.resume()
    }

    /// Stops (`SIGSTOP`) or continues (`SIGCONT`) the server: a Prometheus
    /// that accepts connections and answers nothing, as an overloaded one does.
    pub fn freeze(&self, frozen: bool) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("prometheus is not running")?;
        let pid = i32::try_from(child.id())?;
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: signals our own child, not yet reaped.
        if unsafe { libc::kill(pid, signal) } != 0 {
            anyhow::bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The value of an instant query's first result, if any (none yet while
    /// it is not listening or not ready).
    pub fn query(&self, promql: &str) -> anyhow::Result<Option<f64>> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let Ok((200, body)) = http_get(self.addr, &format!("/api/v1/query?query={encoded}")) else {
            return Ok(None);
        };
        let json: Value = serde_json::from_str(&body)?;
        Ok(json["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok()))
    }
}

/// An alert as Prometheus's `/api/v1/alerts` lists it.
#[derive(Clone, Debug)]
pub struct Alert {
    /// `alertname`.
    pub name: String,
    /// `pending` or `firing`.
    pub state: String,
    /// Its labels, `alertname` included.
    pub labels: Value,
}

impl Prometheus {
    /// The alerts pending or firing now (none while it is not ready).
    pub fn alerts(&self) -> anyhow::Result<Vec<Alert>> {
        let Ok((200, body)) = http_get(self.addr, "/api/v1/alerts") else {
            return Ok(Vec::new());
        };
        let json: Value = serde_json::from_str(&body)?;
        Ok(json["data"]["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .map(|a| Alert {
                        name: a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                        state: a["state"].as_str().unwrap_or("").to_owned(),
                        labels: a["labels"].clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
