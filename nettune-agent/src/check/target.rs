//! What `--from` and `--to` name: a network namespace under `/run/netns`, a pod
//! the container runtime knows (`namespace/name`, found through
//! [`crate::collect::cri`] as the agent names pods), the node itself, or a bare
//! address (a target only) — and what a test needs of it: the namespace file to
//! join, an address to reach it at, and its `resolv.conf`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::{
    collect::{cri::RuntimeWatcher, identity::PodRecord},
    config::IdentityConfig,
    sys::{
        Kernel,
        netns::{self, Namespace, NamespaceAccess},
        procfs,
    },
};

/// An endpoint as written on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// `host`: the node's own namespace.
    Host,
    /// `netns:NAME` or `NAME`: `/run/netns/NAME`.
    Netns(String),
    /// `namespace/name`: a pod, by the container runtime.
    Pod {
        /// Kubernetes namespace.
        namespace: String,
        /// Pod name.
        name: String,
    },
    /// An IP address (only as a target: nothing can be run inside it).
    Address(IpAddr),
}

impl Spec {
    /// Reads `text`; a bare word is a `/run/netns` name.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text == "host" {
            return Ok(Self::Host);
        }
        if let Ok(ip) = text.parse() {
            return Ok(Self::Address(ip));
        }
        let name_ok = |n: &str| !n.is_empty() && !n.contains('/') && n != "." && n != "..";
        if let Some(name) = text.strip_prefix("netns:") {
            if !name_ok(name) {
                bail!(
                    "`{text}`: netns:NAME needs a name under {}",
                    netns::RUN_NETNS
                );
            }
            return Ok(Self::Netns(name.to_owned()));
        }
        match text.split_once('/') {
            Some((namespace, name)) if name_ok(namespace) && name_ok(name) => Ok(Self::Pod {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            Some(_) => bail!("`{text}` is not a pod (namespace/name)"),
            None if name_ok(text) => Ok(Self::Netns(text.to_owned())),
            None => bail!("`{text}` names no namespace, pod or address"),
        }
    }
}

/// An endpoint, found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// As given on the command line.
    pub spec: String,
    /// `host`, `netns`, `pod` or `address`.
    pub kind: String,
    /// The namespace file to join; `None` for the node's own namespace (and a bare
    /// address).
    pub netns_path: Option<PathBuf>,
    /// The namespace inode, when there is a namespace.
    pub inode: Option<u32>,
    /// Where it is reached.
    pub address: Option<IpAddr>,
    /// The resolver configuration of the processes inside it.
    pub resolv_conf: Option<PathBuf>,
}

/// Finds endpoints; asks the container runtime once, only when a pod is named.
pub struct Resolver<'c> {
    identity: &'c IdentityConfig,
    pods: Option<Vec<PodRecord>>,
}

impl<'c> Resolver<'c> {
    /// A resolver asking the runtime `identity` configures.
    pub fn new(identity: &'c IdentityConfig) -> Self {
        Self {
            identity,
            pods: None,
        }
    }

    /// The runtime's pods, asked for once: one poll of the agent's own watcher.
    fn pods(&mut self) -> anyhow::Result<&[PodRecord]> {
        if self.pods.is_none() {
            if self.identity.cri_disabled() {
                bail!(
                    "pods are named through the container runtime, which the config turns off (identity.cri_socket = \"\")"
                );
            }
            let watcher = RuntimeWatcher::start(self.identity, Kernel)
                .context("cannot start asking the container runtime")?;
            let board = watcher.board();
            let limit = Duration::from_secs_f64(self.identity.cri_timeout_seconds * 4.0 + 1.0);
            let started = Instant::now();
            let latest = loop {
                let latest = board.latest();
                if let Some(source) = &latest.source {
                    if !source.up {
                        bail!("the container runtime did not answer: {}", source.detail);
                    }
                    break latest;
                }
                if started.elapsed() > limit {
                    bail!("the container runtime did not answer within {limit:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            self.pods = Some(latest.pods.clone());
        }
        Ok(self.pods.as_deref().unwrap_or_default())
    }

    /// Finds `text`.
    pub fn resolve(&mut self, text: &str) -> anyhow::Result<Endpoint> {
        let spec = Spec::parse(text)?;
        let endpoint = |kind: &str| Endpoint {
            spec: text.to_owned(),
            kind: kind.to_owned(),
            netns_path: None,
            inode: None,
            address: None,
            resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
        };
        Ok(match spec {
            Spec::Host => Endpoint {
                inode: netns::own_inode().ok(),
                address: first_address(&Namespace {
                    inode: 0,
                    access: NamespaceAccess::Pid(std::process::id()),
                    name: None,
                    process: None,
                    is_host: true,
                }),
                ..endpoint("host")
            },
            Spec::Address(ip) => Endpoint {
                address: Some(ip),
                resolv_conf: None,
                ..endpoint("address")
            },
            Spec::Netns(name) => {
                let path = Path::new(netns::RUN_NETNS).join(&name);
                let inode = netns::nsfs_inode(&path).with_context(|| {
                    format!("`{text}`: no network namespace {}", path.display())
                })?;
                let own = Path::new("/etc/netns").join(&name).join("resolv.conf");
                Endpoint {
                    inode: Some(inode),
                    address: first_address(&Namespace {
                        inode,
                        access: NamespaceAccess::Path(path.clone()),
                        name: Some(name),
                        process: None,
                        is_host: false,
                    }),
                    netns_path: Some(path),
                    resolv_conf: Some(if own.exists() {
                        own
                    } else {
                        "/etc/resolv.conf".into()
                    }),
                    ..endpoint("netns")
                }
            }
            Spec::Pod { namespace, name } => {
                let pod = self
                    .pods()?
                    .iter()
                    .find(|p| p.namespace == namespace && p.name == name)
                    .cloned()
                    .with_context(|| {
                        format!("the container runtime has no ready pod {namespace}/{name}")
                    })?;
                pod_endpoint(text, &pod)?
            }
        })
    }
}

/// A pod's namespace (through its sandbox's process, else its inode among the
/// node's namespaces), its first IP (IPv4 first) and the sandbox's resolv.conf.
fn pod_endpoint(text: &str, pod: &PodRecord) -> anyhow::Result<Endpoint> {
    let address = pod
        .ips
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(pod.ips.first())
        .copied();
    let resolv_conf = resolv_conf_in(pod);
    if pod.host_network {
        return Ok(Endpoint {
            spec: text.to_owned(),
            kind: "pod".into(),
            netns_path: None,
            inode: netns::own_inode().ok(),
            address,
            resolv_conf,
        });
    }
    let inode = pod
        .netns
        .with_context(|| format!("`{text}`: the runtime gave no network namespace for the pod"))?;
    let path = match pod.pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        None => netns::discover()
            .remove(&inode)
            .with_context(|| format!("`{text}`: its network namespace {inode} is gone"))?
            .handle_path(),
    };
    Ok(Endpoint {
        spec: text.to_owned(),
        kind: "pod".into(),
        netns_path: Some(path),
        inode: Some(inode),
        address,
        resolv_conf,
    })
}

/// The `/etc/resolv.conf` the pod's processes see: that of the first process in
/// its network namespace (the sandbox's, then its containers') that has one — a
/// runtime mounts it into the containers, not always into the sandbox (pause).
fn resolv_conf_in(pod: &PodRecord) -> Option<PathBuf> {
    let file = |pid: u32| PathBuf::from(format!("/proc/{pid}/root/etc/resolv.conf"));
    if let Some(pid) = pod.pid
        && file(pid).exists()
    {
        return Some(file(pid));
    }
    let inode = pod.netns?;
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let found = pids.into_iter().find(|&pid| {
        netns::inode_of(Path::new(&format!("/proc/{pid}/ns/net"))).ok() == Some(inode)
            && file(pid).exists()
    });
    // Named even when missing, so the error says where it looked.
    found.or(pod.pid).map(file)
}

/// The namespace's first local IPv4 address that is not loopback.
fn first_address(ns: &Namespace) -> Option<IpAddr> {
    let text = netns::read_net_files(ns, &["fib_trie"]).pop()?.ok()?;
    procfs::local_ipv4(&text)
        .into_iter()
        .find(|a| !a.is_loopback())
        .map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_namespaces_pods_the_host_and_addresses() {
        assert_eq!(Spec::parse("host").unwrap(), Spec::Host);
        assert_eq!(Spec::parse("netns:web").unwrap(), Spec::Netns("web".into()));
        assert_eq!(Spec::parse("web").unwrap(), Spec::Netns("web".into()));
        assert_eq!(
            Spec::parse("shop/web-1").unwrap(),
            Spec::Pod {
                namespace: "shop".into(),
                name: "web-1".into()
            }
        );
        assert_eq!(
            Spec::parse("10.0.0.2").unwrap(),
            Spec::Address("10.0.0.2".parse().unwrap())
        );
        for bad in ["a/b/c", "/web", "netns:", "netns:../x", ""] {
            assert!(Spec::parse(bad).is_err(), "{bad}");
        }
    }
}
