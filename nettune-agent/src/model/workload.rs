//! Who owns a network namespace, as shown in metrics and in the UI.

use serde::{Deserialize, Serialize};

/// What kind of owner a network namespace has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// The node itself: the agent's own (host) namespace.
    Node,
    /// A Kubernetes pod.
    Pod,
    /// A namespace named under `/run/netns` (`ip netns add`, some CNIs).
    NamedNetns,
    /// A namespace known only by a process inside it.
    Process,
    /// Nothing on the node tells who owns it (e.g. it is gone).
    Unknown,
}

/// The owner of a network namespace: the `namespace` and `pod` labels of every
/// per-workload metric.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Workload {
    /// What kind of owner this is.
    pub kind: WorkloadKind,
    /// Kubernetes namespace, when known (from the container runtime); empty
    /// otherwise.
    pub namespace: String,
    /// Pod name (from the container runtime), or the pod UID when only the cgroup
    /// path names it; `node` for the host; `netns:<name>`, `<comm>:<inode>` or
    /// `netns:<inode>` for the others.
    pub pod: String,
    /// The pod's UID, when known (in the JSON API, not a metric label).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The pod asks for its own namespace to be tuned (annotation
    /// `nettune.io/tune-netns: "true"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tune_netns: bool,
}

impl Workload {
    /// A workload of `kind` called `pod`, outside any Kubernetes namespace
    /// (the name made [printable](super::text::printable): processes choose it).
    pub fn new(kind: WorkloadKind, pod: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: String::new(),
            pod: super::text::printable(&pod.into()),
            uid: String::new(),
            tune_netns: false,
        }
    }

    /// A Kubernetes pod the container runtime named.
    pub fn pod(
        namespace: impl Into<String>,
        name: impl Into<String>,
        uid: impl Into<String>,
    ) -> Self {
        Self {
            namespace: super::text::printable(&namespace.into()),
            uid: uid.into(),
            ..Self::new(WorkloadKind::Pod, name)
        }
    }

    /// The node (the host namespace).
    pub fn node() -> Self {
        Self::new(WorkloadKind::Node, "node")
    }

    /// A namespace seen in the kernel's maps but no longer found on the node.
    pub fn departed(inode: u32) -> Self {
        Self::new(WorkloadKind::Unknown, format!("netns:{inode}"))
    }

    /// `namespace/pod`, or just `pod` outside Kubernetes namespaces.
    pub fn display_name(&self) -> String {
        if self.namespace.is_empty() {
            self.pod.clone()
        } else {
            format!("{}/{}", self.namespace, self.pod)
        }
    }

    /// Whether `name` (from `tuning.pod_netns`) names this workload: its `pod`
    /// label, `namespace/pod`, or its UID.
    pub fn is_named(&self, name: &str) -> bool {
        name == self.pod
            || name == self.display_name()
            || (!self.uid.is_empty() && name == self.uid)
    }
}

/// Whether one source of workload names answers, for the
/// `nettune_identity_source` gauge and the JSON API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentitySource {
    /// The source, e.g. `cri` (the container runtime).
    pub source: String,
    /// Whether its last attempt succeeded.
    pub up: bool,
    /// Where it is reached (e.g. the runtime's socket) or why it is not.
    pub detail: String,
    /// Times it stopped answering (or did not answer at first) so far: one per
    /// outage, each said once in the log.
    #[serde(default)]
    pub outages: u64,
}
