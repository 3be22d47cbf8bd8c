//! Pod sandboxes made through containerd's CRI API, the way the kubelet makes
//! them, with the messages `nettune-cri` generates.

use std::{collections::HashMap, net::Ipv4Addr};

use anyhow::Context as _;
use nettune::sys::cri::{CriClient, CriError, SandboxInfo};
use nettune_cri::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest,
    RuntimeServiceClient, StopPodSandboxRequest,
};

use super::Containerd;
use crate::netns::Netns;

/// A pod to create.
#[derive(Clone, Copy, Debug, Default)]
pub struct PodSpec<'a> {
    /// Pod name.
    pub name: &'a str,
    /// Kubernetes namespace.
    pub namespace: &'a str,
    /// Annotations.
    pub annotations: &'a [(&'a str, &'a str)],
    /// `hostNetwork: true`.
    pub host_network: bool,
}

/// A pod sandbox, as its verbose status describes it.
pub struct Pod {
    /// Sandbox id.
    pub id: String,
    /// Pod name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// Its IP (none with host network).
    pub ip: Option<Ipv4Addr>,
    /// The pause process.
    pub pid: u32,
    /// Its network namespace (none with host network), not deleted on drop.
    pub netns: Option<Netns>,
    /// Its host-side veth.
    pub host_veth: Option<String>,
}

impl Pod {
    /// The pod's network namespace.
    pub fn netns(&self) -> anyhow::Result<&Netns> {
        self.netns
            .as_ref()
            .with_context(|| format!("pod {} has no namespace of its own", self.name))
    }

    /// The namespace's inode (what nettune keys it by).
    pub fn inode(&self) -> anyhow::Result<u32> {
        self.netns()?.inode()
    }

    /// One counter of the pod's `/proc/net/<file>`, read through its pause process.
    pub fn mib(&self, file: &str, group: &str, name: &str) -> anyhow::Result<i64> {
        let path = format!("/proc/{}/net/{file}", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
        Ok(nettune::sys::procfs::Mib::parse(&path, &text).get(group, name)?)
    }
}

/// Stops and removes sandbox `id`, as the kubelet does when a pod is deleted.
pub(super) fn remove_sandbox(client: &mut CriClient, id: &str) -> Result<(), CriError> {
    let stop = StopPodSandboxRequest {
        pod_sandbox_id: id.to_owned(),
    };
    client.call(
        "StopPodSandbox",
        stop,
        RuntimeServiceClient::stop_pod_sandbox,
    )?;
    let remove = RemovePodSandboxRequest {
        pod_sandbox_id: id.to_owned(),
    };
    client.call(
        "RemovePodSandbox",
        remove,
        RuntimeServiceClient::remove_pod_sandbox,
    )?;
    Ok(())
}

impl Containerd {
    /// Creates a pod sandbox through `RunPodSandbox`, as the kubelet does.
    pub fn run_pod(&mut self, spec: &PodSpec<'_>) -> anyhow::Result<Pod> {
        self.next_pod += 1;
        let uid = format!(
            "00000000-0000-4000-8000-{:06}{:06}",
            std::process::id() % 1_000_000,
            self.next_pod
        );
        let network = if spec.host_network {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        };
        let labels = HashMap::from([
            ("io.kubernetes.pod.name".to_owned(), spec.name.to_owned()),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                spec.namespace.to_owned(),
            ),
            ("io.kubernetes.pod.uid".to_owned(), uid.clone()),
        ]);
        // No IPv6 inside: no router solicitations or DAD among the counted packets.
        let sysctls = if spec.host_network {
            HashMap::new()
        } else {
            HashMap::from([
                ("net.ipv6.conf.all.disable_ipv6".to_owned(), "1".to_owned()),
                (
                    "net.ipv6.conf.default.disable_ipv6".to_owned(),
                    "1".to_owned(),
                ),
            ])
        };
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: spec.name.to_owned(),
                uid: uid.clone(),
                namespace: spec.namespace.to_owned(),
                attempt: 0,
            }),
            hostname: if spec.host_network {
                String::new()
            } else {
                spec.name.to_owned()
            },
            log_directory: self.dir.join("logs").join(&uid).display().to_string(),
            labels,
            annotations: spec
                .annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod{uid}", self.cgroup_parent),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network.into(),
                        pid: NamespaceMode::Container.into(),
                        ipc: NamespaceMode::Pod.into(),
                    }),
                }),
                sysctls,
            }),
        };
        let request = RunPodSandboxRequest {
            config: Some(config),
        };
        let mut client = self.client()?;
        let created = client
            .call(
                "RunPodSandbox",
                request,
                RuntimeServiceClient::run_pod_sandbox,
            )
            .with_context(|| format!("creating pod {}\n{}", spec.name, self.log_tail()))?;
        let id = created.pod_sandbox_id;
        self.sandboxes.insert(id.clone(), None);
        let status = client.sandbox_status(&id)?;
        let info = SandboxInfo::from_status_info(&status.info);
        self.sandboxes.insert(id.clone(), info.netns_path.clone());
        let ip = status
            .status
            .as_ref()
            .and_then(|s| s.ips().first().and_then(|ip| ip.parse().ok()));
        let host_veth = info
            .host_interfaces
            .iter()
            .find(|name| name.starts_with("veth"))
            .cloned();
        if let Some(veth) = &host_veth {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{veth}/disable_ipv6"), "1");
        }
        let netns = info
            .netns_path
            .as_deref()
            .and_then(|p| p.file_name())
            .map(|n| Netns::existing(&n.to_string_lossy()));
        Ok(Pod {
            id,
            name: spec.name.to_owned(),
            namespace: spec.namespace.to_owned(),
            uid,
            ip,
            pid: info.pid.context("the sandbox's status names no pid")?,
            netns,
            host_veth,
        })
    }

    /// Stops and removes a sandbox, as the kubelet does when a pod is deleted.
    pub fn remove_pod(&mut self, pod: Pod) -> anyhow::Result<()> {
        remove_sandbox(&mut self.client()?, &pod.id)?;
        self.sandboxes.remove(&pod.id);
        Ok(())
    }
}
