//! The container runtime's CRI v1 API (the one the kubelet uses), over the
//! runtime's unix socket: the transport and the formats, no policy.
//!
//! [`api`] is the `nettune-cri` crate: the messages and the tonic client,
//! generated from its `.proto` (nettune's wire-compatible subset of the CRI's
//! `api.proto`). A new call or field goes there; nothing here writes a message.
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

pub use nettune_cri as api;

use std::{
    collections::HashMap,
    io,
    os::unix::fs::FileTypeExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use api::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::{
    Code, Request, Response, Status,
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
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The socket could not be reached (missing, refused, permission denied).
    #[error("cannot connect to the container runtime at {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The socket's own error (its errno kept), e.g. `Permission denied
        /// (os error 13)`.
        #[source]
        source: io::Error,
    },
    /// The runtime answered a call with an error status.
    #[error("CRI {method} on {socket} failed: {code:?}: {message}")]
    Call {
        /// The call, e.g. `ListPodSandbox`.
        method: &'static str,
        /// The socket.
        socket: PathBuf,
        /// The gRPC status code.
        code: Code,
        /// The runtime's message.
        message: String,
    },
    /// No answer in time.
    #[error("CRI {method} on {socket}: no answer within {timeout:?}")]
    Timeout {
        /// The call (or `connect`).
        method: &'static str,
        /// The socket.
        socket: PathBuf,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The client's own async runtime could not be created.
    #[error("cannot start the CRI client: {0}")]
    Setup(#[source] io::Error),
}

impl CriError {
    /// Whether the runtime said the sandbox does not exist (it went away
    /// between a list and a status call).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::Call {
                code: Code::NotFound,
                ..
            }
        )
    }
}

/// The socket's own error inside tonic's transport error (which wraps it in
/// layers of its own), with its errno; else the innermost error's text.
fn socket_error(error: &tonic::transport::Error) -> io::Error {
    let mut inner: &(dyn std::error::Error + 'static) = error;
    loop {
        if let Some(io) = inner.downcast_ref::<io::Error>() {
            return match io.raw_os_error() {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::Error::new(io.kind(), io.to_string()),
            };
        }
        match inner.source() {
            Some(next) => inner = next,
            None => return io::Error::other(inner.to_string()),
        }
    }
}

/// A blocking CRI v1 client on one unix socket.
pub struct CriClient {
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
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
            .map_err(CriError::Setup)?;
        let path = Arc::new(socket.to_path_buf());
        // The URI is required by the endpoint and ignored by the connector.
        let endpoint = Endpoint::from_static("http://cri.localhost")
            .connect_timeout(timeout)
            .timeout(timeout);
        let connector = tower::service_fn(move |_: Uri| {
            let path = Arc::clone(&path);
            async move {
                let stream = tokio::net::UnixStream::connect(path.as_path()).await?;
                Ok::<_, io::Error>(TokioIo::new(stream))
            }
        });
        let connecting = endpoint.connect_with_connector(connector);
        let channel = runtime
            .block_on(async { tokio::time::timeout(timeout, connecting).await })
            .map_err(|_| CriError::Timeout {
                method: "connect",
                socket: socket.to_path_buf(),
                timeout,
            })?
            .map_err(|e| CriError::Connect {
                socket: socket.to_path_buf(),
                source: socket_error(&e),
            })?;
        Ok(Self {
            runtime,
            client: RuntimeServiceClient::new(channel),
            socket: socket.to_path_buf(),
            timeout,
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Calls one method of the runtime service with `request`: `exchange` is
    /// the generated client's method (e.g. `RuntimeServiceClient::version`),
    /// `method` its CRI name for errors (e.g. `Version`).
    pub fn call<Req, Resp>(
        &mut self,
        method: &'static str,
        request: Req,
        exchange: impl AsyncFnOnce(
            &mut RuntimeServiceClient<Channel>,
            Request<Req>,
        ) -> Result<Response<Resp>, Status>,
    ) -> Result<Resp, CriError> {
        let mut request = Request::new(request);
        // Sent as grpc-timeout, so the runtime gives up too.
        request.set_timeout(self.timeout);
        let timeout = self.timeout;
        let client = &mut self.client;
        let answer = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, exchange(client, request)).await });
        let timed_out = || CriError::Timeout {
            method,
            socket: self.socket.clone(),
            timeout,
        };
        match answer {
            Err(_) => Err(timed_out()),
            Ok(Ok(response)) => Ok(response.into_inner()),
            // tonic reports its own deadline as Cancelled("Timeout expired").
            Ok(Err(status))
                if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded) =>
            {
                Err(timed_out())
            }
            Ok(Err(status)) => Err(CriError::Call {
                method,
                socket: self.socket.clone(),
                code: status.code(),
                message: status.message().to_owned(),
            }),
        }
    }

    /// `Version`: the runtime's name and version.
    pub fn version(&mut self) -> Result<api::VersionResponse, CriError> {
        let request = api::VersionRequest {
            version: "v1".into(),
        };
        self.call("Version", request, RuntimeServiceClient::version)
    }

    /// `ListPodSandbox`, ready sandboxes only (a sandbox that is not ready has no
    /// network namespace worth naming).
    pub fn ready_sandboxes(&mut self) -> Result<Vec<api::PodSandbox>, CriError> {
        let request = api::ListPodSandboxRequest {
            filter: Some(api::PodSandboxFilter {
                state: Some(api::PodSandboxStateValue {
                    state: api::PodSandboxState::SandboxReady.into(),
                }),
            }),
        };
        let response = self.call(
            "ListPodSandbox",
            request,
            RuntimeServiceClient::list_pod_sandbox,
        )?;
        Ok(response.items)
    }

    /// `PodSandboxStatus` of sandbox `id`, verbose.
    pub fn sandbox_status(&mut self, id: &str) -> Result<api::PodSandboxStatusResponse, CriError> {
        let request = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: true,
        };
        self.call(
            "PodSandboxStatus",
            request,
            RuntimeServiceClient::pod_sandbox_status,
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
        assert!(
            matches!(&error, CriError::Connect { source, .. } if source.raw_os_error() == Some(libc::ENOENT)),
            "{error:?}"
        );
    }

    #[test]
    fn a_socket_nobody_listens_on_is_refused_with_its_errno() {
        let runtime = SilentRuntime::new("cri-refused");
        // Beside the silent one, in the directory removed on drop: the file
        // stays, the listener goes.
        let socket = runtime.socket.with_file_name("refused.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let Err(error) = CriClient::connect(&socket, Duration::from_secs(2)) else {
            panic!("connected to a socket nobody listens on");
        };
        assert!(
            matches!(&error, CriError::Connect { source, .. } if source.raw_os_error() == Some(libc::ECONNREFUSED)),
            "{error:?}"
        );
    }

    #[test]
    fn a_status_code_stays_a_code() {
        let call = |code| CriError::Call {
            method: "PodSandboxStatus",
            socket: PathBuf::from("/run/x.sock"),
            code,
            message: "sandbox gone".into(),
        };
        assert!(call(Code::NotFound).is_not_found());
        assert!(!call(Code::Unavailable).is_not_found());
        assert_eq!(
            call(Code::NotFound).to_string(),
            "CRI PodSandboxStatus on /run/x.sock failed: NotFound: sandbox gone"
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
