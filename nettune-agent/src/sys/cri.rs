//! The container runtime's CRI v1 API (the one the kubelet uses), over the
//! runtime's unix socket: the transport and the formats, no policy.
//!
//! [`CriClient`] is a blocking client for the caller's own thread: it owns a
//! small current-thread tokio runtime for tonic and bounds every step — the
//! connect and each call — by one timeout, so a runtime that is down answers
//! with an error at once and one that hangs answers with [`CriError::Timeout`].
//! It must not be used from inside an async task (it blocks on its own
//! runtime); [`crate::collect::cri`] runs it on a thread of its own.
//!
//! [`SandboxInfo`] reads what the verbose `PodSandboxStatus` adds as JSON under
//! `info["info"]` (containerd and CRI-O): the sandbox's pid, the path of its
//! network namespace and the host-side interfaces its CNI created.

pub mod api;

use std::{
    collections::HashMap,
    os::unix::fs::FileTypeExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use tonic::{
    Request,
    client::Grpc,
    transport::{Channel, Endpoint, Uri},
};

/// Where runtimes put their CRI socket, tried in this order when
/// `identity.cri_socket` is not set: containerd, then CRI-O.
pub const CANDIDATE_SOCKETS: [&str; 2] =
    ["/run/containerd/containerd.sock", "/var/run/crio/crio.sock"];

/// The first of [`CANDIDATE_SOCKETS`] that exists and is a socket.
pub fn detect_socket() -> Option<PathBuf> {
    CANDIDATE_SOCKETS
        .iter()
        .map(PathBuf::from)
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()))
}

/// A failed exchange with the runtime, naming the socket and the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriError {
    /// The socket could not be reached (missing, refused, permission denied).
    #[error("cannot connect to the container runtime at {socket}: {reason}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The innermost error, e.g. `Permission denied (os error 13)`.
        reason: String,
    },
    /// The runtime answered a call with an error status.
    #[error("CRI {method} on {socket} failed: {code}: {message}")]
    Call {
        /// The call, e.g. `ListPodSandbox`.
        method: String,
        /// The socket.
        socket: PathBuf,
        /// The gRPC status code.
        code: String,
        /// The runtime's message.
        message: String,
    },
    /// No answer in time.
    #[error("CRI {method} on {socket}: no answer within {timeout:?}")]
    Timeout {
        /// The call (or `connect`).
        method: String,
        /// The socket.
        socket: PathBuf,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The client's own async runtime could not be created.
    #[error("cannot start the CRI client: {0}")]
    Setup(String),
}

impl CriError {
    /// Whether the runtime said the sandbox does not exist (it went away
    /// between a list and a status call).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Call { code, .. } if code == "NotFound")
    }
}

/// The innermost message of an error chain: tonic wraps the socket's own error
/// (`No such file or directory`, `Permission denied`) in transport errors.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = error;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// A blocking CRI v1 client on one unix socket.
pub struct CriClient {
    runtime: tokio::runtime::Runtime,
    grpc: Grpc<Channel>,
    socket: PathBuf,
    timeout: Duration,
}

impl CriClient {
    /// Connects to `socket`; the connect and every later call may take at most
    /// `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, CriError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CriError::Setup(e.to_string()))?;
        let path = Arc::new(socket.to_path_buf());
        // The URI is required by the endpoint and ignored by the connector.
        let endpoint = Endpoint::from_static("http://cri.localhost")
            .connect_timeout(timeout)
            .timeout(timeout);
        let connector = tower::service_fn(move |_: Uri| {
            let path = Arc::clone(&path);
            async move {
                let stream = tokio::net::UnixStream::connect(path.as_path()).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        let connecting = endpoint.connect_with_connector(connector);
        let channel = runtime
            .block_on(async { tokio::time::timeout(timeout, connecting).await })
            .map_err(|_| CriError::Timeout {
                method: "connect".into(),
                socket: socket.to_path_buf(),
                timeout,
            })?
            .map_err(|e| CriError::Connect {
                socket: socket.to_path_buf(),
                reason: innermost(&e),
            })?;
        Ok(Self {
            runtime,
            grpc: Grpc::new(channel),
            socket: socket.to_path_buf(),
            timeout,
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Calls `method` (e.g. `Version`) of the runtime service with `request`.
    pub fn call<Req, Resp>(&mut self, method: &str, request: Req) -> Result<Resp, CriError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let path = PathAndQuery::try_from(format!("{}{method}", api::SERVICE))
            .map_err(|e| CriError::Setup(format!("CRI method {method}: {e}")))?;
        let mut request = Request::new(request);
        // Sent as grpc-timeout, so the runtime gives up too.
        request.set_timeout(self.timeout);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let grpc = &mut self.grpc;
        let exchange = async move {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(innermost(&e)))?;
            grpc.unary(request, path, codec).await
        };
        let timeout = self.timeout;
        let answer = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, exchange).await });
        let timed_out = || CriError::Timeout {
            method: method.to_owned(),
            socket: self.socket.clone(),
            timeout,
        };
        match answer {
            Err(_) => Err(timed_out()),
            Ok(Ok(response)) => Ok(response.into_inner()),
            // tonic reports its own deadline as Cancelled("Timeout expired").
            Ok(Err(status))
                if status.code() == tonic::Code::Cancelled
                    || status.code() == tonic::Code::DeadlineExceeded =>
            {
                Err(timed_out())
            }
            Ok(Err(status)) => Err(CriError::Call {
                method: method.to_owned(),
                socket: self.socket.clone(),
                code: format!("{:?}", status.code()),
                message: status.message().to_owned(),
            }),
        }
    }

    /// `Version`: the runtime's name and version.
    pub fn version(&mut self) -> Result<api::VersionResponse, CriError> {
        self.call(
            "Version",
            api::VersionRequest {
                version: "v1".into(),
            },
        )
    }

    /// `ListPodSandbox`, ready sandboxes only (a sandbox that is not ready has no
    /// network namespace worth naming).
    pub fn ready_sandboxes(&mut self) -> Result<Vec<api::PodSandbox>, CriError> {
        let filter = api::PodSandboxFilter {
            state: Some(api::PodSandboxStateValue {
                state: api::PodSandboxState::SandboxReady as i32,
            }),
            ..api::PodSandboxFilter::default()
        };
        let response: api::ListPodSandboxResponse = self.call(
            "ListPodSandbox",
            api::ListPodSandboxRequest {
                filter: Some(filter),
            },
        )?;
        Ok(response.items)
    }

    /// `PodSandboxStatus` of sandbox `id`, verbose.
    pub fn sandbox_status(&mut self, id: &str) -> Result<api::PodSandboxStatusResponse, CriError> {
        self.call(
            "PodSandboxStatus",
            api::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: true,
            },
        )
    }
}

/// What a verbose `PodSandboxStatus` adds about where the pod lives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxInfo {
    /// The sandbox's (pause) process: `/proc/<pid>/ns/net` is the pod's namespace.
    pub pid: Option<u32>,
    /// The network namespace's file (`runtimeSpec.linux.namespaces`), e.g.
    /// `/var/run/netns/cni-…`.
    pub netns_path: Option<PathBuf>,
    /// Host-side interfaces the CNI created (containerd's `cniResult`: entries
    /// with an empty `Sandbox`), e.g. the pod's veth.
    pub host_interfaces: Vec<String>,
}

impl SandboxInfo {
    /// Reads `info["info"]` of a verbose status; anything missing or malformed
    /// is left out (runtimes differ in what they put there).
    pub fn from_status_info(info: &HashMap<String, String>) -> Self {
        let Some(json) = info
            .get("info")
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        else {
            return Self::default();
        };
        let pid = json["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        let netns_path = json["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|ns| ns["type"] == "network")
            .and_then(|ns| ns["path"].as_str())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let mut host_interfaces: Vec<String> = json["cniResult"]["Interfaces"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, iface)| iface["Sandbox"].as_str().is_some_and(str::is_empty))
            .map(|(name, _)| name.clone())
            .collect();
        host_interfaces.sort();
        Self {
            pid,
            netns_path,
            host_interfaces,
        }
    }
}

/// A runtime for tests that accepts connections (the kernel's backlog does)
/// and never answers; its directory is removed on drop.
#[cfg(test)]
pub(crate) struct SilentRuntime {
    dir: PathBuf,
    /// Its socket.
    pub socket: PathBuf,
    _listener: std::os::unix::net::UnixListener,
}

#[cfg(test)]
impl SilentRuntime {
    pub(crate) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nettune-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("silent.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        Self {
            dir,
            socket,
            _listener: listener,
        }
    }
}

#[cfg(test)]
impl Drop for SilentRuntime {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape containerd 1.6 returns (trimmed from a real sandbox).
    const CONTAINERD_INFO: &str = r#"{
      "pid": 4242,
      "processStatus": "running",
      "netNamespaceClosed": false,
      "image": "localhost/nettune-pause:3.9",
      "cniResult": {"Interfaces": {
        "eth0": {"IPConfigs": [{"IP": "10.244.77.2", "Gateway": "10.244.77.1"}], "Mac": "aa", "Sandbox": "/var/run/netns/cni-1"},
        "lo": {"IPConfigs": [{"IP": "127.0.0.1", "Gateway": ""}], "Mac": "00", "Sandbox": "/var/run/netns/cni-1"},
        "ntcri0": {"IPConfigs": null, "Mac": "bb", "Sandbox": ""},
        "vethd9bab8bf": {"IPConfigs": null, "Mac": "cc", "Sandbox": ""}
      }, "DNS": [], "Routes": null},
      "runtimeSpec": {"linux": {"namespaces": [
        {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
        {"type": "network", "path": "/var/run/netns/cni-1"}
      ]}}
    }"#;

    fn info(text: &str) -> HashMap<String, String> {
        HashMap::from([("info".to_owned(), text.to_owned())])
    }

    #[test]
    fn containerds_verbose_info_gives_pid_netns_and_host_interfaces() {
        let parsed = SandboxInfo::from_status_info(&info(CONTAINERD_INFO));
        assert_eq!(parsed.pid, Some(4242));
        assert_eq!(
            parsed.netns_path.as_deref(),
            Some(Path::new("/var/run/netns/cni-1"))
        );
        assert_eq!(parsed.host_interfaces, ["ntcri0", "vethd9bab8bf"]);
    }

    #[test]
    fn a_runtime_with_only_the_spec_or_nothing_usable_gives_what_is_there() {
        // CRI-O: the runtime spec, no pid and no CNI result.
        let crio = r#"{"runtimeSpec": {"linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/abc"}]}}}"#;
        let parsed = SandboxInfo::from_status_info(&info(crio));
        assert_eq!(parsed.pid, None);
        assert_eq!(
            parsed.netns_path.as_deref(),
            Some(Path::new("/var/run/netns/abc"))
        );
        assert!(parsed.host_interfaces.is_empty());
        // Host network: no network namespace path; pid 0 means none.
        let host = r#"{"pid": 0, "runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}]}}}"#;
        assert_eq!(
            SandboxInfo::from_status_info(&info(host)),
            SandboxInfo::default()
        );
        assert_eq!(
            SandboxInfo::from_status_info(&info("not json")),
            SandboxInfo::default()
        );
        assert_eq!(
            SandboxInfo::from_status_info(&HashMap::new()),
            SandboxInfo::default()
        );
    }

    #[test]
    fn host_network_and_ips_come_from_the_status() {
        let status = api::PodSandboxStatus {
            network: Some(api::PodSandboxNetworkStatus {
                ip: "10.0.0.5".into(),
                additional_ips: vec![api::PodIp {
                    ip: "fd00::5".into(),
                }],
            }),
            linux: Some(api::LinuxPodSandboxStatus {
                namespaces: Some(api::Namespace {
                    options: Some(api::NamespaceOption {
                        network: api::NamespaceMode::Node as i32,
                        ..api::NamespaceOption::default()
                    }),
                }),
            }),
            ..api::PodSandboxStatus::default()
        };
        assert!(status.host_network());
        assert_eq!(status.ips(), ["10.0.0.5", "fd00::5"]);
        assert!(!api::PodSandboxStatus::default().host_network());
        assert!(api::PodSandboxStatus::default().ips().is_empty());
    }

    #[test]
    fn a_missing_socket_fails_at_once_naming_it() {
        let socket = Path::new("/nonexistent/nettune-test.sock");
        let Err(error) = CriClient::connect(socket, Duration::from_secs(2)) else {
            panic!("connected to a socket that does not exist");
        };
        assert_eq!(
            error.to_string(),
            "cannot connect to the container runtime at /nonexistent/nettune-test.sock: \
             No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_server_that_never_answers_times_out_instead_of_blocking() {
        let runtime = SilentRuntime::new("cri-unit");
        let timeout = Duration::from_millis(300);
        let result = CriClient::connect(&runtime.socket, timeout).and_then(|mut c| c.version());
        match result {
            Err(CriError::Timeout { method, .. }) => assert!(
                method == "Version" || method == "connect",
                "timed out in {method}"
            ),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
}
