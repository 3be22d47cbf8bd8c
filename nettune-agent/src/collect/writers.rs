//! Which pod wrote a sysctl: the writer's cgroup (the program's
//! `bpf_get_current_cgroup_id`) → its path in the v2 hierarchy → the pod UID
//! the kubelet puts in that path → the runtime's name for the pod. By cgroup,
//! not by pid: a `sysctl -w` has exited before the agent could look, and a
//! host-network pod (kube-proxy) shares the node's namespace.

use std::collections::BTreeMap;

use super::identity::{PodRecord, pod_uid_from_cgroup};
use crate::{model::sysctl_writers::SysctlWriterFigures, sys::System};

/// Cgroups remembered; past it, the memory starts again.
const MOST_REMEMBERED: usize = 1024;

/// Cgroup id → the UID of the pod it belongs to (`None`: not a pod's, or gone).
#[derive(Debug, Default)]
pub struct WriterPods {
    by_cgroup: BTreeMap<u64, Option<String>>,
}

impl WriterPods {
    /// Names the pod of each writer other than nettune: `namespace/name` where
    /// the runtime knows the UID, else `pod <uid>`.
    pub fn name(
        &mut self,
        system: &impl System,
        writers: &mut [SysctlWriterFigures],
        pods: &[PodRecord],
    ) {
        for w in writers.iter_mut().filter(|w| !w.own && w.cgroup_id != 0) {
            if self.by_cgroup.len() >= MOST_REMEMBERED && !self.by_cgroup.contains_key(&w.cgroup_id)
            {
                self.by_cgroup.clear();
            }
            let uid = self.by_cgroup.entry(w.cgroup_id).or_insert_with(|| {
                system
                    .cgroup_path(w.cgroup_id)
                    .and_then(|path| pod_uid_from_cgroup(&format!("0::{path}\n")))
            });
            let record = uid
                .as_ref()
                .and_then(|uid| pods.iter().find(|p| &p.uid == uid));
            w.pod = uid.as_ref().map(|uid| {
                record.map_or_else(
                    || format!("pod {uid}"),
                    |p| format!("{}/{}", p.namespace, p.name),
                )
            });
            // A pod's container writes its pod's namespace; a host-network
            // pod's, the node's (left unset).
            w.netns = record.filter(|p| !p.host_network).and_then(|p| p.netns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;

    const UID: &str = "6f1f5c1e-7c6b-4c55-9d0a-1c5a7e0b1f2a";

    fn writer(cgroup_id: u64) -> SysctlWriterFigures {
        SysctlWriterFigures {
            cgroup_id,
            ..SysctlWriterFigures::example("kube-proxy", "net.netfilter.nf_conntrack_max")
        }
    }

    #[test]
    fn a_writers_cgroup_names_its_pod_by_the_runtime_else_by_uid() {
        let system = FakeSystem::new();
        system.set_cgroup_path(
            7,
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-1.scope",
                UID.replace('-', "_")
            ),
        );
        system.set_cgroup_path(8, "/system.slice/tuned.service");
        let pod = PodRecord {
            namespace: "kube-system".into(),
            name: "kube-proxy-x2".into(),
            uid: UID.into(),
            netns: Some(4_026_532_999),
            ..PodRecord::default()
        };
        let mut names = WriterPods::default();
        let mut writers = [writer(7), writer(8), writer(9)];
        names.name(&system, &mut writers, std::slice::from_ref(&pod));
        let pods: Vec<Option<&str>> = writers.iter().map(|w| w.pod.as_deref()).collect();
        assert_eq!(pods, [Some("kube-system/kube-proxy-x2"), None, None]);
        assert_eq!(writers[0].netns, Some(4_026_532_999));
        // The runtime does not know it (yet): its UID.
        names.name(&system, &mut writers, &[]);
        assert_eq!(writers[0].pod, Some(format!("pod {UID}")));
    }
}
