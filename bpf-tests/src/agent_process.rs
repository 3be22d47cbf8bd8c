//! The real `nettune run` as a separate process, and a minimal HTTP client for its
//! endpoints (tests talk to it the way Prometheus and kubelet probes do).

use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
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

/// The value of the series of metric `name` whose labels include all of
/// `labels`, in Prometheus text `text` (the first such series).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series(text, name)
        .find(|(have, _)| {
            labels
                .iter()
                .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        })
        .map(|(_, value)| value)
}

/// Every series of metric `name` in `text`: its labels and value.
pub fn series<'a>(
    text: &'a str,
    name: &'a str,
) -> impl Iterator<Item = (Vec<(String, String)>, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let labels = labels
            .split("\",")
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.split_once("=\"")?;
                Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
            })
            .collect();
        Some((labels, value.trim().parse().ok()?))
    })
}

/// The listener on `port` in `ns` in a `/api/v1/snapshot`, if there.
pub fn listener_in(snapshot: &serde_json::Value, ns: u32, port: u16) -> Option<serde_json::Value> {
    snapshot["listeners"]
        .as_array()?
        .iter()
        .find(|l| l["netns"] == ns && l["port"] == port)
        .cloned()
}

/// The workload of network namespace `ns` in a `/api/v1/snapshot`, if there.
pub fn workload_in(snapshot: &serde_json::Value, ns: u32) -> Option<serde_json::Value> {
    snapshot["workloads"]
        .as_array()?
        .iter()
        .find(|w| w["netns"] == ns)
        .cloned()
}

/// `nettune run`, stopped with SIGTERM on drop.
pub struct AgentProcess {
    child: Child,
    pub addr: SocketAddr,
    log: Option<Arc<Mutex<Vec<String>>>>,
    /// Whether the child was waited for (its pid may then be another's).
    reaped: bool,
    /// Signals go to the child's process group (a wrapper such as `unshare
    /// --fork` and the agent under it), not to the child alone.
    group: bool,
}

impl AgentProcess {
    /// Starts `binary run --listen 127.0.0.1:<free port> ARGS` (the JSON API on
    /// the same address) and waits until `/readyz` answers 200.
    pub fn start(binary: &Path, args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(Command::new(binary), args, false)
    }

    /// As [`AgentProcess::start`], logging at `info` into [`AgentProcess::log`].
    pub fn start_logged(binary: &Path, args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(Command::new(binary), args, true)
    }

    /// As [`AgentProcess::start_logged`], for `command` (e.g. `setpriv … nettune`).
    pub fn start_logged_with(command: Command, args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(command, args, true)
    }

    /// As [`AgentProcess::start_logged_with`] for a `command` that wraps the
    /// agent in a process of its own (`ip netns exec … unshare --fork …`):
    /// both its endpoints on `addr` (reachable from here), signals sent to the
    /// whole process group.
    pub fn start_wrapped(
        mut command: Command,
        addr: SocketAddr,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        Self::spawn_at(command, addr, args, true, true)
    }

    fn spawn(command: Command, args: &[&str], logged: bool) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        Self::spawn_at(command, addr, args, logged, false)
    }

    fn spawn_at(
        mut command: Command,
        addr: SocketAddr,
        args: &[&str],
        logged: bool,
        group: bool,
    ) -> anyhow::Result<Self> {
        command
            .args(["run", "--listen", &addr.to_string()])
            .args(["--api-listen", &addr.to_string()])
            .args(args)
            .env("RUST_LOG", if logged { "info" } else { "error" })
            .stdout(Stdio::null());
        if logged {
            command.stderr(Stdio::piped());
        }
        let mut child = command.spawn().context("starting nettune run")?;
        let log = child.stderr.take().map(|stderr| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut log) = sink.lock() {
                        log.push(line);
                    }
                }
            });
            lines
        });
        let mut agent = Self {
            child,
            addr,
            log,
            reaped: false,
            group,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = agent.child.try_wait()? {
                bail!(
                    "nettune run exited early: {status}\n{}",
                    agent.log().join("\n")
                );
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

    /// What the agent logged so far (with [`AgentProcess::start_logged`]).
    pub fn log(&self) -> Vec<String> {
        self.log
            .as_ref()
            .and_then(|l| l.lock().ok().map(|l| l.clone()))
            .unwrap_or_default()
    }

    /// The current `/api/v1/snapshot` document.
    pub fn snapshot(&self) -> anyhow::Result<serde_json::Value> {
        match http_get(self.addr, "/api/v1/snapshot")? {
            (200, body) => Ok(serde_json::from_str(&body)?),
            (status, body) => bail!("/api/v1/snapshot answered {status}: {body}"),
        }
    }

    /// The current `/metrics` text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        match http_get(self.addr, "/metrics")? {
            (200, body) => Ok(body),
            (status, body) => bail!("/metrics answered {status}: {body}"),
        }
    }

    /// Waits until the agent has looked at namespace `ns`'s listeners (its
    /// listen sysctls are in the snapshot): a listener started after that is
    /// new to it, and what it asked `listen()` for can be inferred.
    pub fn wait_for_a_look(&self, ns: u32) -> anyhow::Result<()> {
        self.wait_for(
            "a look at the namespace's listeners",
            Duration::from_secs(30),
            |s| workload_in(s, ns).filter(|w| !w["netns_sysctls"].is_null()),
        )
        .map(drop)
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
                let mut text = snapshot.to_string();
                if text.len() > 2000 {
                    let cut = (0..=2000)
                        .rev()
                        .find(|i| text.is_char_boundary(*i))
                        .unwrap_or(0);
                    text.truncate(cut);
                    text.push('…');
                }
                bail!("{what}: not seen within {timeout:?}; last snapshot: {text}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The process id (to find the maps it owns).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the agent (its group when wrapped).
    fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = i32::try_from(self.child.id())?;
        let target = if self.group { -pid } else { pid };
        // SAFETY: signals our own child (or its group), not reaped yet.
        unsafe { libc::kill(target, signal) };
        Ok(())
    }

    /// Kills the agent with SIGKILL: no cleanup, as in a crash or an OOM kill.
    pub fn kill_hard(mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGKILL)?;
        self.child.wait()?;
        self.reaped = true;
        Ok(())
    }

    /// Sends `signal` and waits at most `timeout` for the agent to exit; returns
    /// how it exited (SIGKILL and an error when it did not in time).
    pub fn stop(mut self, signal: libc::c_int, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(signal)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.reaped = true;
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.child.kill().ok();
                self.child.wait()?;
                self.reaped = true;
                bail!(
                    "nettune did not exit within {timeout:?} of the signal; its log:\n{}",
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // Our own child (or its group), reaped right after; a wrapped agent
        // that has no handler yet (the first process of a PID namespace ignores
        // what it does not handle) is killed after a while.
        let _ = self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.group && Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.group {
            let _ = self.signal(libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
