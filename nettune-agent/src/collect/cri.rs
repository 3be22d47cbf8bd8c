//! Pod names from the container runtime, kept current by a thread of its own.
//!
//! [`RuntimeWatcher`] polls the runtime's CRI API ([`crate::sys::cri`]) every
//! `identity.cri_poll_seconds` (and early when the collector meets a namespace
//! it cannot name): one `ListPodSandbox`, and a verbose `PodSandboxStatus` only
//! for sandboxes it has not seen, each call bounded by
//! `identity.cri_timeout_seconds`. What it learns goes onto a [`RuntimeBoard`],
//! which a collection reads without waiting: a runtime that is slow, frozen or
//! gone never holds up a tick.
//!
//! When the runtime stops answering, the watcher says so once (a warning, and
//! `nettune_identity_source{source="cri"} 0`), keeps the pods it knew whose
//! sandbox process is still in the same namespace (their names stay valid, and
//! labels that flap on every runtime restart would break every series), and
//! names nothing new; other identity sources name the rest. When the runtime
//! answers again it says so and names everything again.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
    },
    thread::JoinHandle,
    time::Duration,
};

use super::identity::PodRecord;
use crate::{
    config::IdentityConfig,
    model::workload::IdentitySource,
    sys::{
        System,
        cri::{self, CriClient, CriError, SandboxInfo, api},
    },
};

/// Why a poll of the runtime brought no pods.
#[derive(Debug, thiserror::Error)]
enum PollError {
    /// No socket configured, and none of the usual ones exists.
    #[error("no container runtime socket at {} (set identity.cri_socket)", cri::CANDIDATE_SOCKETS.join(" or "))]
    NoSocket,
    /// The runtime did not answer as asked.
    #[error(transparent)]
    Cri(#[from] CriError),
}

/// The `source` label of the runtime in `nettune_identity_source`.
pub const SOURCE: &str = "cri";

/// What the runtime said last: its pods, and whether it answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimePods {
    /// The pods known (ready sandboxes).
    pub pods: Vec<PodRecord>,
    /// The runtime source's health; `None` when the source is turned off.
    pub source: Option<IdentitySource>,
}

enum Signal {
    Poll,
    Stop,
}

/// Where the watcher leaves what it learned and the collector picks it up.
#[derive(Clone, Default)]
pub struct RuntimeBoard {
    latest: Arc<Mutex<Arc<RuntimePods>>>,
    wake: Option<Sender<Signal>>,
}

impl RuntimeBoard {
    /// A board without a watcher (tests publish onto it themselves).
    pub fn new() -> Self {
        Self::default()
    }

    /// A board whose early-poll requests arrive on the returned receiver (for
    /// tests of the collector).
    #[cfg(test)]
    pub(crate) fn with_requests() -> (Self, Receiver<impl Sized>) {
        let (tx, rx) = mpsc::channel::<Signal>();
        let board = Self {
            latest: Arc::default(),
            wake: Some(tx),
        };
        (board, rx)
    }

    /// Makes `pods` what the collector sees.
    pub fn publish(&self, pods: RuntimePods) {
        let pods = Arc::new(pods);
        match self.latest.lock() {
            Ok(mut latest) => *latest = pods,
            Err(poisoned) => *poisoned.into_inner() = pods,
        }
    }

    /// The latest view.
    pub fn latest(&self) -> Arc<RuntimePods> {
        match self.latest.lock() {
            Ok(latest) => latest.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Asks the watcher to poll now rather than at its next interval (a new
    /// namespace may be a new pod).
    pub fn poll_soon(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.send(Signal::Poll);
        }
    }
}

/// The thread that polls the runtime; stopped when dropped.
pub struct RuntimeWatcher {
    board: RuntimeBoard,
    stop: Sender<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl RuntimeWatcher {
    /// Starts polling as `config` says; `None` when the runtime source is off
    /// (`identity.cri_socket = ""`) or the thread cannot be started (then pods
    /// are named by the other sources, which the log says).
    pub fn start<S: System + Send + 'static>(config: &IdentityConfig, system: S) -> Option<Self> {
        if config.cri_disabled() {
            log::info!("pod names from the container runtime: off (identity.cri_socket = \"\")");
            return None;
        }
        let (tx, rx) = mpsc::channel();
        let board = RuntimeBoard {
            latest: Arc::default(),
            wake: Some(tx.clone()),
        };
        let mut poller = Poller {
            system,
            configured: config.cri_socket.clone(),
            timeout: Duration::from_secs_f64(config.cri_timeout_seconds),
            interval: Duration::from_secs_f64(config.cri_poll_seconds),
            client: None,
            pods: BTreeMap::new(),
            health: Health::Unknown,
            outages: 0,
            board: board.clone(),
            runtime: String::new(),
        };
        let thread = std::thread::Builder::new()
            .name("nettune-cri".into())
            .spawn(move || poller.run(&rx));
        match thread {
            Ok(thread) => Some(Self {
                board,
                stop: tx,
                thread: Some(thread),
            }),
            Err(e) => {
                log::warn!("cannot start the container runtime poller: {e}; pods are not named");
                None
            }
        }
    }

    /// The board the watcher publishes onto.
    pub fn board(&self) -> RuntimeBoard {
        self.board.clone()
    }
}

impl Drop for RuntimeWatcher {
    fn drop(&mut self) {
        let _ = self.stop.send(Signal::Stop);
        // The thread is waiting (it wakes at once) or in one call (bounded by the
        // timeout).
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Health {
    Unknown,
    Up,
    Down,
}

struct Poller<S> {
    /// Where namespaces are looked up.
    system: S,
    configured: Option<PathBuf>,
    timeout: Duration,
    interval: Duration,
    client: Option<CriClient>,
    /// Known pods by sandbox id.
    pods: BTreeMap<String, PodRecord>,
    health: Health,
    /// Times the runtime went down (or was down at first), so far.
    outages: u64,
    board: RuntimeBoard,
    /// The runtime's name and version, once it answered.
    runtime: String,
}

impl<S: System> Poller<S> {
    fn run(&mut self, signals: &Receiver<Signal>) {
        loop {
            let outcome = self.poll();
            self.report(outcome);
            match signals.recv_timeout(self.interval) {
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Signal::Poll) | Err(RecvTimeoutError::Timeout) => {}
            }
            // Several requests for an early poll are one poll.
            while let Ok(signal) = signals.try_recv() {
                if matches!(signal, Signal::Stop) {
                    return;
                }
            }
        }
    }

    /// The socket to use: the configured one, else the first usual one present.
    fn socket(&self) -> Result<PathBuf, PollError> {
        if let Some(path) = &self.configured {
            return Ok(path.clone());
        }
        cri::detect_socket().ok_or(PollError::NoSocket)
    }

    /// One poll; `Ok(where)` when the runtime answered.
    fn poll(&mut self) -> Result<String, PollError> {
        let socket = self.socket()?;
        if self.client.as_ref().is_none_or(|c| c.socket() != socket) {
            self.client = None;
            let mut client = CriClient::connect(&socket, self.timeout)?;
            let version = client.version()?;
            self.runtime = format!("{} {}", version.runtime_name, version.runtime_version);
            self.client = Some(client);
        }
        let result = self.refresh();
        if result.is_err() {
            // Reconnect next time (the runtime may come back on a new socket).
            self.client = None;
        }
        result.map(|()| socket.display().to_string())
    }

    /// Lists the ready sandboxes and asks for the status of new ones.
    fn refresh(&mut self) -> Result<(), PollError> {
        let Some(client) = self.client.as_mut() else {
            return Ok(());
        };
        let sandboxes = client.ready_sandboxes()?;
        let mut known = std::mem::take(&mut self.pods);
        let mut outcome = Ok(());
        for sandbox in sandboxes {
            if let Some(mut pod) = known.remove(&sandbox.id) {
                pod.annotations = sandbox.annotations.into_iter().collect();
                self.pods.insert(sandbox.id, pod);
                continue;
            }
            if outcome.is_err() {
                continue;
            }
            match client.sandbox_status(&sandbox.id) {
                Ok(status) => {
                    let pod = record(&self.system, &sandbox, &status);
                    self.pods.insert(sandbox.id, pod);
                }
                // Removed between the list and the status.
                Err(e) if e.is_not_found() => {}
                Err(e) => outcome = Err(e),
            }
        }
        outcome.map_err(|e: CriError| {
            // Keep what was known; the next poll finishes the list.
            self.pods.append(&mut known);
            e.into()
        })
    }

    /// Publishes the pods and the source's health; logs transitions only.
    fn report(&mut self, outcome: Result<String, PollError>) {
        let (up, detail) = match outcome {
            Ok(socket) => {
                if self.health != Health::Up {
                    let again = if self.health == Health::Down {
                        " again"
                    } else {
                        ""
                    };
                    log::info!(
                        "pod names from the container runtime{again}: {} at {socket}, {} pods",
                        self.runtime,
                        self.pods.len()
                    );
                }
                self.health = Health::Up;
                (true, socket)
            }
            Err(e) => {
                let reason = e.to_string();
                if self.health == Health::Down {
                    log::debug!("container runtime still unavailable: {reason}");
                } else {
                    self.outages += 1;
                    log::warn!(
                        "pod names from the container runtime are unavailable: {reason}; pods it \
                         named keep their names, new ones are named by their cgroup or \
                         /run/netns name until it answers (retrying every {:?})",
                        self.interval
                    );
                }
                self.health = Health::Down;
                // Keep only pods whose sandbox process still lives in the same
                // namespace: a namespace inode can be reused.
                let system = &self.system;
                self.pods.retain(|_, pod| still_there(system, pod));
                (false, reason)
            }
        };
        self.board.publish(RuntimePods {
            pods: self.pods.values().cloned().collect(),
            source: Some(IdentitySource {
                source: SOURCE.into(),
                up,
                detail,
                outages: self.outages,
            }),
        });
    }
}

/// The namespace inode of `pid`, or of the namespace file at `path`.
fn namespace_of(system: &impl System, pid: Option<u32>, path: Option<&Path>) -> Option<u32> {
    pid.and_then(|pid| system.netns_of_pid(pid).ok())
        .or_else(|| path.and_then(|p| system.namespace_file_inode(p).ok()))
}

/// Whether a pod's sandbox process still lives in the namespace recorded.
fn still_there(system: &impl System, pod: &PodRecord) -> bool {
    match (pod.pid, pod.netns) {
        (Some(pid), Some(inode)) => namespace_of(system, Some(pid), None) == Some(inode),
        _ => false,
    }
}

/// A pod from its list entry and verbose status.
fn record(
    system: &impl System,
    sandbox: &api::PodSandbox,
    response: &api::PodSandboxStatusResponse,
) -> PodRecord {
    let info = SandboxInfo::from_status_info(&response.info);
    let status = response.status.clone().unwrap_or_default();
    let metadata = sandbox
        .metadata
        .clone()
        .or(status.metadata.clone())
        .unwrap_or_default();
    let host_network = status.host_network();
    PodRecord {
        id: sandbox.id.clone(),
        namespace: metadata.namespace,
        name: metadata.name,
        uid: metadata.uid,
        annotations: sandbox.annotations.clone().into_iter().collect(),
        ips: status
            .ips()
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect(),
        netns: if host_network {
            None
        } else {
            namespace_of(system, info.pid, info.netns_path.as_deref())
        },
        pid: info.pid,
        host_interfaces: info.host_interfaces,
        host_network,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Kernel, netns};

    #[test]
    fn a_record_takes_names_annotations_ips_and_the_namespace_of_its_process() {
        let own = netns::own_inode().unwrap();
        let pid = std::process::id();
        let sandbox = api::PodSandbox {
            id: "abc".into(),
            metadata: Some(api::PodSandboxMetadata {
                name: "web-1".into(),
                uid: "u-1".into(),
                namespace: "shop".into(),
                attempt: 0,
            }),
            annotations: [("nettune.io/ignore".to_owned(), "true".to_owned())].into(),
        };
        let response = api::PodSandboxStatusResponse {
            status: Some(api::PodSandboxStatus {
                network: Some(api::PodSandboxNetworkStatus {
                    ip: "10.244.77.2".into(),
                    additional_ips: Vec::new(),
                }),
                ..api::PodSandboxStatus::default()
            }),
            info: [(
                "info".to_owned(),
                format!(r#"{{"pid": {pid}, "cniResult": {{"Interfaces": {{"veth1": {{"Sandbox": ""}}}}}}}}"#),
            )]
            .into(),
        };
        let pod = record(&Kernel, &sandbox, &response);
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str(), pod.uid.as_str()),
            ("shop", "web-1", "u-1")
        );
        assert!(pod.ignored());
        assert_eq!(
            pod.ips,
            ["10.244.77.2".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(pod.netns, Some(own), "the namespace of the sandbox's pid");
        assert_eq!(pod.host_interfaces, ["veth1"]);
        assert!(still_there(&Kernel, &pod));
        let moved = PodRecord {
            netns: Some(own.wrapping_add(1)),
            ..pod
        };
        assert!(
            !still_there(&Kernel, &moved),
            "its process lives elsewhere now"
        );
    }

    #[test]
    fn a_missing_socket_is_reported_down_once_and_nothing_is_named() {
        let board = RuntimeBoard::new();
        let mut poller = Poller {
            system: Kernel,
            configured: Some("/nonexistent/nettune.sock".into()),
            timeout: Duration::from_millis(200),
            interval: Duration::from_secs(1),
            client: None,
            pods: BTreeMap::new(),
            health: Health::Unknown,
            outages: 0,
            board: board.clone(),
            runtime: String::new(),
        };
        let outcome = poller.poll();
        poller.report(outcome);
        let outcome = poller.poll();
        poller.report(outcome);
        let seen = board.latest();
        assert!(seen.pods.is_empty());
        let source = seen.source.clone().unwrap();
        assert_eq!((source.source.as_str(), source.up), (SOURCE, false));
        assert_eq!(source.outages, 1, "two failed polls are one outage");
        assert!(
            source.detail.contains("/nonexistent/nettune.sock"),
            "{}",
            source.detail
        );
    }

    #[test]
    fn a_watcher_stops_when_dropped_even_against_a_silent_runtime() {
        let runtime = cri::SilentRuntime::new("watch");
        let watcher = RuntimeWatcher::start(
            &IdentityConfig {
                cri_socket: Some(runtime.socket.clone()),
                cri_poll_seconds: 0.1,
                cri_timeout_seconds: 0.2,
            },
            Kernel,
        )
        .unwrap();
        watcher.board().poll_soon();
        drop(watcher);
        assert!(
            RuntimeWatcher::start(
                &IdentityConfig {
                    cri_socket: Some(PathBuf::new()),
                    ..IdentityConfig::default()
                },
                Kernel
            )
            .is_none(),
            "an empty socket turns the source off"
        );
    }
}
