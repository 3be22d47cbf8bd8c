//! The real `nettune run` as a separate process, and a minimal HTTP client for its
//! endpoints (tests talk to it the way Prometheus and kubelet probes do).

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET path` on `addr`; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let (status, body) = nettune::serve::client::get_raw_blocking(
        addr,
        path,
        Duration::from_secs(10),
        nettune::serve::client::DEFAULT_MAX_BODY,
    )
    .map_err(anyhow::Error::msg)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `nettune run`, stopped with SIGTERM on drop.
pub struct AgentProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl AgentProcess {
    /// Starts `binary run --listen 127.0.0.1:<free port> ARGS` (the JSON API on
    /// the same address) and waits until `/readyz` answers 200.
    pub fn start(binary: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let child = Command::new(binary)
            .args(["run", "--listen", &addr.to_string()])
            .args(["--api-listen", &addr.to_string()])
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .context("starting nettune run")?;
        let mut agent = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = agent.child.try_wait()? {
                bail!("nettune run exited early: {status}");
            }
            if matches!(http_get(addr, "/readyz"), Ok((200, _))) {
                return Ok(agent);
            }
            if Instant::now() > deadline {
                bail!("nettune run was not ready within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The current `/metrics` text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        match http_get(self.addr, "/metrics")? {
            (200, body) => Ok(body),
            (status, body) => bail!("/metrics answered {status}: {body}"),
        }
    }

    /// The current `/api/v1/snapshot` (the Snapshot and the tuner's state).
    pub fn snapshot(&self) -> anyhow::Result<serde_json::Value> {
        match http_get(self.addr, "/api/v1/snapshot")? {
            (200, body) => Ok(serde_json::from_str(&body)?),
            (status, body) => bail!("/api/v1/snapshot answered {status}: {body}"),
        }
    }

    /// Polls the snapshot every 200 ms until `found` returns something, for at
    /// most `timeout`; the error names `what` and shows the last snapshot.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut found: impl FnMut(&serde_json::Value) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let snapshot = self.snapshot()?;
            if let Some(t) = found(&snapshot) {
                return Ok(t);
            }
            if Instant::now() > deadline {
                bail!("{what}: not seen within {timeout:?}; last snapshot: {snapshot}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The process id (to find the maps it owns).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the agent with SIGKILL: no cleanup, as in a crash or an OOM kill.
    pub fn kill_hard(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signals our own child, which we reap right after.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}
