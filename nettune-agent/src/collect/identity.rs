//! Who owns a network namespace: a Kubernetes pod, a named namespace, a process,
//! or the node itself.
//!
//! Sources, most specific first: the pod UID in the cgroup path of a process inside
//! the namespace (`kubepods…pod<uid>…`, both the cgroupfs and the systemd
//! drivers' spellings); the name under `/run/netns`; the command of the lowest pid
//! inside; the namespace inode. The agent's own namespace is the node's.

use crate::{
    model::workload::{Workload, WorkloadKind},
    sys::{Namespace, System},
};

/// Identifies the owner of `ns`.
pub fn identify(system: &impl System, ns: &Namespace) -> Workload {
    if ns.is_host {
        return Workload::node();
    }
    if let Some(pid) = ns.pid()
        && let Some(uid) = system
            .read_proc(&format!("{pid}/cgroup"))
            .ok()
            .and_then(|c| pod_uid_from_cgroup(&c))
    {
        return Workload::new(WorkloadKind::Pod, uid);
    }
    if let Some(name) = &ns.name {
        return Workload::new(WorkloadKind::NamedNetns, format!("netns:{name}"));
    }
    match &ns.process {
        Some(comm) => Workload::new(WorkloadKind::Process, format!("{comm}:{}", ns.inode)),
        None => Workload::new(WorkloadKind::Unknown, format!("netns:{}", ns.inode)),
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
    use crate::sys::fake::FakeSystem;

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
        let system = FakeSystem::new();
        system.add_namespace(1, None, true);
        system.add_namespace(2, Some("blue"), false);
        system.add_namespace(3, None, false);
        system.add_namespace(4, None, false);
        system.set_proc("4/cgroup", &format!("0::/kubepods/pod{UID}/c\n"));
        let found = system.namespaces();
        let id = |inode| identify(&system, &found[&inode]);
        assert_eq!(id(1), Workload::node());
        assert_eq!(id(2), Workload::new(WorkloadKind::NamedNetns, "netns:blue"));
        assert_eq!(id(3), Workload::new(WorkloadKind::Process, "proc3:3"));
        assert_eq!(id(4), Workload::new(WorkloadKind::Pod, UID));
    }
}
