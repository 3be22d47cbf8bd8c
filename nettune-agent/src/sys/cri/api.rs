//! The CRI v1 messages nettune sends and reads (package `runtime.v1`), written by
//! hand as prost messages: only the three calls nettune makes — `Version`,
//! `ListPodSandbox` and `PodSandboxStatus` — and only the fields it reads. Field
//! numbers follow `pkg/apis/runtime/v1/api.proto` of kubernetes/cri-api; a field
//! left out here is skipped when decoding, as protobuf requires, so a newer
//! runtime's additions do no harm.

use std::collections::HashMap;

/// The gRPC service every call below belongs to.
pub const SERVICE: &str = "/runtime.v1.RuntimeService/";

/// `VersionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {
    /// The kubelet's CRI version (informational).
    #[prost(string, tag = "1")]
    pub version: String,
}

/// `VersionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    /// Version of the kubelet runtime API.
    #[prost(string, tag = "1")]
    pub version: String,
    /// Name of the runtime, e.g. `containerd`.
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    /// Version of the runtime.
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    /// API version of the runtime, e.g. `v1`.
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

/// `PodSandboxState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PodSandboxState {
    /// `SANDBOX_READY`: running, with its network set up.
    SandboxReady = 0,
    /// `SANDBOX_NOTREADY`: stopped, or not set up (yet).
    SandboxNotready = 1,
}

/// `NamespaceMode`: whose namespace a pod uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NamespaceMode {
    /// `POD`: the pod's own.
    Pod = 0,
    /// `CONTAINER`: each container's own.
    Container = 1,
    /// `NODE`: the node's (`hostNetwork`, `hostPID`, `hostIPC`).
    Node = 2,
    /// `TARGET`: another container's.
    Target = 3,
}

/// `PodSandboxMetadata`: who the pod is.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PodSandboxMetadata {
    /// The pod's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The pod's UID.
    #[prost(string, tag = "2")]
    pub uid: String,
    /// The pod's Kubernetes namespace.
    #[prost(string, tag = "3")]
    pub namespace: String,
    /// How many times the sandbox was re-created.
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// `PodSandboxStateValue` (a filter on the state).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PodSandboxStateValue {
    /// The state.
    #[prost(enumeration = "PodSandboxState", tag = "1")]
    pub state: i32,
}

/// `PodSandboxFilter`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PodSandboxFilter {
    /// Only this sandbox.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Only sandboxes in this state.
    #[prost(message, optional, tag = "2")]
    pub state: Option<PodSandboxStateValue>,
    /// Only sandboxes with all these labels.
    #[prost(map = "string, string", tag = "3")]
    pub label_selector: HashMap<String, String>,
}

/// `ListPodSandboxRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListPodSandboxRequest {
    /// Which sandboxes.
    #[prost(message, optional, tag = "1")]
    pub filter: Option<PodSandboxFilter>,
}

/// `PodSandbox`: one entry of the list (no IP, no pid: those need the status).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PodSandbox {
    /// The sandbox id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Who the pod is.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// Ready or not.
    #[prost(enumeration = "PodSandboxState", tag = "3")]
    pub state: i32,
    /// Creation time, in nanoseconds since the epoch.
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    /// The pod's labels.
    #[prost(map = "string, string", tag = "5")]
    pub labels: HashMap<String, String>,
    /// The pod's annotations.
    #[prost(map = "string, string", tag = "6")]
    pub annotations: HashMap<String, String>,
}

/// `ListPodSandboxResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListPodSandboxResponse {
    /// The sandboxes.
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<PodSandbox>,
}

/// `PodSandboxStatusRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PodSandboxStatusRequest {
    /// The sandbox.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    /// Ask for the runtime-specific `info` map (pid, network namespace path).
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `PodIP`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PodIp {
    /// The address.
    #[prost(string, tag = "1")]
    pub ip: String,
}

/// `PodSandboxNetworkStatus`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PodSandboxNetworkStatus {
    /// The pod's primary IP.
    #[prost(string, tag = "1")]
    pub ip: String,
    /// Its other IPs (dual stack).
    #[prost(message, repeated, tag = "2")]
    pub additional_ips: Vec<PodIp>,
}

/// `NamespaceOption`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct NamespaceOption {
    /// Whose network namespace the pod uses.
    #[prost(enumeration = "NamespaceMode", tag = "1")]
    pub network: i32,
    /// Whose PID namespace.
    #[prost(enumeration = "NamespaceMode", tag = "2")]
    pub pid: i32,
    /// Whose IPC namespace.
    #[prost(enumeration = "NamespaceMode", tag = "3")]
    pub ipc: i32,
    /// The container for `TARGET`.
    #[prost(string, tag = "4")]
    pub target_id: String,
}

/// `Namespace` (of a sandbox's status).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Namespace {
    /// The namespace modes.
    #[prost(message, optional, tag = "2")]
    pub options: Option<NamespaceOption>,
}

/// `LinuxPodSandboxStatus`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LinuxPodSandboxStatus {
    /// The sandbox's namespaces.
    #[prost(message, optional, tag = "1")]
    pub namespaces: Option<Namespace>,
}

/// `PodSandboxStatus`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PodSandboxStatus {
    /// The sandbox id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Who the pod is.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// Ready or not.
    #[prost(enumeration = "PodSandboxState", tag = "3")]
    pub state: i32,
    /// Creation time, in nanoseconds since the epoch.
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    /// The pod's IPs.
    #[prost(message, optional, tag = "5")]
    pub network: Option<PodSandboxNetworkStatus>,
    /// The pod's namespaces (host network or its own).
    #[prost(message, optional, tag = "6")]
    pub linux: Option<LinuxPodSandboxStatus>,
    /// The pod's labels.
    #[prost(map = "string, string", tag = "7")]
    pub labels: HashMap<String, String>,
    /// The pod's annotations.
    #[prost(map = "string, string", tag = "8")]
    pub annotations: HashMap<String, String>,
}

/// `PodSandboxStatusResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PodSandboxStatusResponse {
    /// The status.
    #[prost(message, optional, tag = "1")]
    pub status: Option<PodSandboxStatus>,
    /// With `verbose`: runtime-specific details; containerd and CRI-O put one
    /// JSON document under `info` (see [`super::SandboxInfo`]).
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

impl PodSandboxStatus {
    /// Whether the pod uses the node's network namespace (`hostNetwork`).
    pub fn host_network(&self) -> bool {
        self.linux
            .as_ref()
            .and_then(|l| l.namespaces.as_ref())
            .and_then(|n| n.options.as_ref())
            .is_some_and(|o| o.network == NamespaceMode::Node as i32)
    }

    /// Every IP of the pod, as the runtime reports them.
    pub fn ips(&self) -> Vec<String> {
        self.network
            .iter()
            .flat_map(|n| {
                std::iter::once(n.ip.clone()).chain(n.additional_ips.iter().map(|p| p.ip.clone()))
            })
            .filter(|ip| !ip.is_empty())
            .collect()
    }
}
