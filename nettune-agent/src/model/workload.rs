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
    /// Kubernetes namespace, when known; empty otherwise.
    pub namespace: String,
    /// Pod name (or UID when only the cgroup path names it); `node` for the host;
    /// `netns:<name>`, `<comm>:<inode>` or `netns:<inode>` for the others.
    pub pod: String,
}

impl Workload {
    /// A workload of `kind` called `pod`, outside any Kubernetes namespace.
    pub fn new(kind: WorkloadKind, pod: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: String::new(),
            pod: pod.into(),
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
}
