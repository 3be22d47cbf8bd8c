//! Who owns a network namespace: a Kubernetes pod, a named namespace, a process,
//! or the node itself.
//!
//! Sources, most specific first: the pod UID in the cgroup path of a process inside
//! the namespace (`kubepods…pod<uid>…`, both the cgroupfs and the systemd
//! drivers' spellings); the name under `/run/netns`; the command of the lowest pid
//! inside; the namespace inode. The agent's own namespace is the node's. (Pod
//! names and Kubernetes namespaces come from the container runtime, a later
//! source; until then a pod is named by its UID.)

use serde::Serialize;

use crate::netns::{Access, Namespace};

/// What kind of owner a namespace has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Node,
    Pod,
    NamedNetns,
    Process,
    Unknown,
}

/// The owner of a namespace, as shown in metrics (`namespace`, `pod` labels) and
/// in the UI.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct Workload {
    pub kind: Kind,
    /// Kubernetes namespace, when known; empty otherwise.
    pub namespace: String,
    /// Pod name (or UID until names are known); `node` for the host;
    /// `netns:<name>`, `<comm>:<inode>` or `netns:<inode>` for the others.
    pub pod: String,
}

/// Identifies the owner of `ns`.
pub fn identify(ns: &Namespace) -> Workload {
    if ns.is_host {
        return workload(Kind::Node, "node".into());
    }
    if let Access::Pid(pid) = ns.access
        && let Some(uid) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|c| pod_uid_from_cgroup(&c))
    {
        return workload(Kind::Pod, uid);
    }
    if let Some(name) = &ns.name {
        return workload(Kind::NamedNetns, format!("netns:{name}"));
    }
    match &ns.process {
        Some(comm) => workload(Kind::Process, format!("{comm}:{}", ns.inode)),
        None => workload(Kind::Unknown, format!("netns:{}", ns.inode)),
    }
}

/// For a namespace nettune saw in the kernel but cannot find on the node any more.
pub fn departed(inode: u32) -> Workload {
    workload(Kind::Unknown, format!("netns:{inode}"))
}

fn workload(kind: Kind, pod: String) -> Workload {
    Workload {
        kind,
        namespace: String::new(),
        pod,
    }
}

/// The pod UID in a `/proc/<pid>/cgroup` file, if the process is in a pod:
/// - cgroupfs: `…/kubepods/burstable/pod6f1f5c1e-7c6b-4c55-9d0a-1c5a7e0b1f2a/<ctr>`
/// - systemd:  `…/kubepods-burstable-pod6f1f5c1e_7c6b_4c55_9d0a_1c5a7e0b1f2a.slice/…`
pub fn pod_uid_from_cgroup(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter(|l| l.contains("kubepods"))
        .flat_map(|l| l.split('/'))
        .find_map(|part| {
            let part = part.trim_end_matches(".slice");
            let uid = part
                .rsplit_once("-pod")
                .map(|(_, uid)| uid)
                .or_else(|| part.strip_prefix("pod"))?;
            let uid = uid.replace('_', "-");

            let looks_like_uid = uid.len() == 36
                && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
                && uid.matches('-').count() == 4;
            looks_like_uid.then_some(uid)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1f5c1e-7c6b-4c55-9d0a-1c5a7e0b1f2a";

    #[test]
    fn cgroupfs_and_systemd_layouts() {
        let cgroupfs = format!("0::/kubepods/burstable/pod{UID}/0123456789abcdef\n");
        assert_eq!(pod_uid_from_cgroup(&cgroupfs).as_deref(), Some(UID));
        let systemd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-0123.scope\n",
            UID.replace('-', "_")
        );
        assert_eq!(pod_uid_from_cgroup(&systemd).as_deref(), Some(UID));
        let besteffort_v1 =
            format!("12:memory:/kubepods/besteffort/pod{UID}/abc\n1:name=systemd:/\n");
        assert_eq!(pod_uid_from_cgroup(&besteffort_v1).as_deref(), Some(UID));
    }

    #[test]
    fn not_a_pod() {
        assert_eq!(pod_uid_from_cgroup("0::/system.slice/sshd.service\n"), None);
        assert_eq!(
            pod_uid_from_cgroup("0::/kubepods/burstable/podNOTAUID/x\n"),
            None
        );
        assert_eq!(pod_uid_from_cgroup(""), None);
    }

    #[test]
    fn names_by_source() {
        let ns = |access, name: Option<&str>, process: Option<&str>, is_host| Namespace {
            inode: 42,
            access,
            name: name.map(str::to_owned),
            process: process.map(str::to_owned),
            is_host,
        };
        assert_eq!(
            identify(&ns(Access::Pid(1), None, Some("init"), true)).pod,
            "node"
        );
        let named = identify(&ns(
            Access::Path("/run/netns/x".into()),
            Some("blue"),
            None,
            false,
        ));
        assert_eq!(
            (named.kind, named.pod.as_str()),
            (Kind::NamedNetns, "netns:blue")
        );
        let proc = identify(&ns(Access::Pid(u32::MAX), None, Some("nginx"), false));
        assert_eq!((proc.kind, proc.pod.as_str()), (Kind::Process, "nginx:42"));
        assert_eq!(departed(7).pod, "netns:7");
    }
}
