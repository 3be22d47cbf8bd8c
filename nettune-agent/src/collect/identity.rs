//! Who owns a network namespace: a Kubernetes pod, a named namespace, a process,
//! or the node itself.
//!
//! Sources, most specific first:
//! 1. the container runtime ([`crate::collect::cri`]): its pods, matched to the
//!    node's namespaces by the namespace inode (of the sandbox's process or its
//!    namespace file), else by the pod's host-side veth (whose peer names the
//!    namespace, see [`crate::collect::collector`]), else by the pod's IP among
//!    the namespace's own addresses — giving `namespace`, name and UID, and the
//!    pod's annotations ([`IGNORE`], [`TUNE_NETNS`]). A host-network pod lives in
//!    the node's namespace and is the node;
//! 2. the pod UID in the cgroup path of a process inside the namespace
//!    (`kubepods…pod<uid>…`, both the cgroupfs and the systemd drivers'
//!    spellings);
//! 3. the name under `/run/netns`;
//! 4. the command of the lowest pid inside; the namespace inode.
//!
//! The agent's own namespace is the node's.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    model::workload::{Workload, WorkloadKind},
    sys::{Link, Namespace, System, procfs},
};

/// Annotation that keeps a pod out of nettune's figures entirely (`"true"`).
pub const IGNORE: &str = "nettune.io/ignore";
/// Annotation that opts a pod's own namespace into tuning (`"true"`), like
/// listing it in `tuning.pod_netns`.
pub const TUNE_NETNS: &str = "nettune.io/tune-netns";

/// A pod as the container runtime describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRecord {
    /// The runtime's sandbox id.
    pub id: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// The pod's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The pod's IPs.
    pub ips: Vec<IpAddr>,
    /// The inode of the pod's network namespace, when the runtime's pid or
    /// namespace file could be read.
    pub netns: Option<u32>,
    /// The sandbox's process, when the runtime names it.
    pub pid: Option<u32>,
    /// Host-side interfaces its CNI created (e.g. its veth).
    pub host_interfaces: Vec<String>,
    /// The pod shares the node's network namespace (`hostNetwork`).
    pub host_network: bool,
}

impl PodRecord {
    fn annotated(&self, key: &str) -> bool {
        self.annotations
            .get(key)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// `nettune.io/ignore: "true"`.
    pub fn ignored(&self) -> bool {
        self.annotated(IGNORE)
    }

    /// The pod as a workload.
    pub fn workload(&self) -> Workload {
        Workload {
            tune_netns: self.annotated(TUNE_NETNS),
            ..Workload::pod(&self.namespace, &self.name, &self.uid)
        }
    }
}

/// The node's namespaces and interfaces, as one tick sees them, for matching.
pub struct Node<'a> {
    /// Every namespace, by inode.
    pub namespaces: &'a BTreeMap<u32, Namespace>,
    /// The host's veths.
    pub veths: &'a [&'a Link],
    /// Host-side veth ifindex → the namespace of its peer.
    pub peers: &'a BTreeMap<u32, u32>,
}

/// Matches the runtime's `pods` to the node's namespaces: by namespace inode,
/// then host-side veth, then IP (reading a namespace's addresses through
/// `system` only while pods are left unmatched). Host-network pods match
/// nothing: they are the node. Returns namespace inode → pod.
pub fn match_pods<'p>(
    system: &impl System,
    pods: &'p [PodRecord],
    node: &Node<'_>,
) -> BTreeMap<u32, &'p PodRecord> {
    let candidates: BTreeSet<u32> = node
        .namespaces
        .iter()
        .filter(|(_, ns)| !ns.is_host)
        .map(|(inode, _)| *inode)
        .collect();
    let mut matched: BTreeMap<u32, &PodRecord> = BTreeMap::new();
    let mut left: Vec<&PodRecord> = Vec::new();
    for pod in pods.iter().filter(|p| !p.host_network) {
        match pod.netns.filter(|i| candidates.contains(i)) {
            Some(inode) => {
                matched.insert(inode, pod);
            }
            None => left.push(pod),
        }
    }
    // Through the pod's host-side veth and the namespace its peer lives in.
    left.retain(|pod| {
        let by_veth = node
            .veths
            .iter()
            .filter(|l| pod.host_interfaces.contains(&l.name))
            .find_map(|l| node.peers.get(&l.ifindex))
            .filter(|inode| candidates.contains(inode) && !matched.contains_key(inode));
        match by_veth {
            Some(inode) => {
                matched.insert(*inode, pod);
                false
            }
            None => true,
        }
    });
    // Through the pod's IP, read from the namespaces nothing claimed yet.
    left.retain(|pod| !pod.ips.is_empty());
    if !left.is_empty() {
        for inode in &candidates {
            if left.is_empty() {
                break;
            }
            if matched.contains_key(inode) {
                continue;
            }
            let addresses = local_addresses(system, &node.namespaces[inode]);
            if let Some(at) = left
                .iter()
                .position(|p| p.ips.iter().any(|ip| addresses.contains(ip)))
            {
                matched.insert(*inode, left.remove(at));
            }
        }
    }
    matched
}

/// The addresses configured inside `ns` (IPv4 from `fib_trie`, IPv6 from
/// `if_inet6`), loopback left out.
fn local_addresses(system: &impl System, ns: &Namespace) -> BTreeSet<IpAddr> {
    let mut files = system
        .read_net_files(ns, &["fib_trie", "if_inet6"])
        .into_iter();
    let (v4, v6) = (files.next(), files.next());
    let v4 = v4
        .and_then(Result::ok)
        .map(|t| procfs::local_ipv4(&t))
        .unwrap_or_default();
    let v6 = v6
        .and_then(Result::ok)
        .map(|t| procfs::ipv6_addresses(&t))
        .unwrap_or_default();
    v4.into_iter()
        .map(IpAddr::V4)
        .chain(v6.into_iter().map(IpAddr::V6))
        .filter(|ip| !ip.is_loopback())
        .collect()
}

/// Identifies the owner of `ns`; `pod` is the runtime's pod matched to it.
pub fn identify(system: &impl System, ns: &Namespace, pod: Option<&PodRecord>) -> Workload {
    if ns.is_host {
        return Workload::node();
    }
    if let Some(pod) = pod {
        return pod.workload();
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
        let id = |inode| identify(&system, &found[&inode], None);
        assert_eq!(id(1), Workload::node());
        assert_eq!(id(2), Workload::new(WorkloadKind::NamedNetns, "netns:blue"));
        assert_eq!(id(3), Workload::new(WorkloadKind::Process, "proc3:3"));
        assert_eq!(id(4), Workload::new(WorkloadKind::Pod, UID));
        // The runtime's name wins over the cgroup's UID.
        let pod = PodRecord {
            namespace: "shop".into(),
            name: "web-1".into(),
            uid: UID.into(),
            ..PodRecord::default()
        };
        assert_eq!(
            identify(&system, &found[&4], Some(&pod)),
            Workload::pod("shop", "web-1", UID)
        );
    }

    fn veth(ifindex: u32, name: &str) -> Link {
        Link {
            ifindex,
            name: name.into(),
            kind: Some("veth".into()),
            peer_ifindex: Some(2),
            peer_netnsid: Some(0),
            mtu: Some(1500),
        }
    }

    fn pod(name: &str) -> PodRecord {
        PodRecord {
            id: format!("sandbox-{name}"),
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            ..PodRecord::default()
        }
    }

    /// A node with the host (1) and namespaces 10, 11, 12, 13.
    fn node_system() -> FakeSystem {
        let system = FakeSystem::new();
        system.add_namespace(1, None, true);
        for inode in [10, 11, 12, 13] {
            system.add_namespace(inode, None, false);
        }
        system
    }

    #[test]
    fn pods_match_by_inode_then_veth_then_ip_and_host_network_pods_are_the_node() {
        let system = node_system();
        system.set_net_file(
            12,
            "fib_trie",
            Some(
                "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.244.77.7\n        /32 host LOCAL\n\
                 Local:\n     |-- 127.0.0.1\n        /32 host LOCAL\n",
            ),
        );
        system.set_net_file(
            13,
            "if_inet6",
            Some("fd000000000000000000000000000009 02 40 00 80 eth0\n"),
        );
        let by_inode = PodRecord {
            netns: Some(10),
            ..pod("by-inode")
        };
        let by_veth = PodRecord {
            host_interfaces: vec!["cni0".into(), "veth11".into()],
            ..pod("by-veth")
        };
        let by_ip = PodRecord {
            ips: vec!["10.244.77.7".parse().unwrap()],
            ..pod("by-ip")
        };
        let by_ipv6 = PodRecord {
            ips: vec!["fd00::9".parse().unwrap()],
            ..pod("by-ipv6")
        };
        let host = PodRecord {
            netns: Some(1),
            host_network: true,
            ..pod("host")
        };
        let unmatched = PodRecord {
            netns: Some(99),
            ips: vec!["10.244.77.99".parse().unwrap()],
            ..pod("gone")
        };
        let pods = [by_ipv6, unmatched, host, by_ip, by_veth, by_inode];
        let namespaces = system.namespaces();
        let links = [veth(21, "veth11")];
        let veths: Vec<&Link> = links.iter().collect();
        let peers = BTreeMap::from([(21, 11)]);
        let node = Node {
            namespaces: &namespaces,
            veths: &veths,
            peers: &peers,
        };
        let matched: BTreeMap<u32, &str> = match_pods(&system, &pods, &node)
            .into_iter()
            .map(|(inode, p)| (inode, p.name.as_str()))
            .collect();
        assert_eq!(
            matched,
            BTreeMap::from([
                (10, "by-inode"),
                (11, "by-veth"),
                (12, "by-ip"),
                (13, "by-ipv6")
            ])
        );
    }

    #[test]
    fn addresses_are_read_only_while_pods_are_left_unmatched() {
        let system = node_system();
        let pods = [PodRecord {
            netns: Some(10),
            ips: vec!["10.244.77.7".parse().unwrap()],
            ..pod("a")
        }];
        let namespaces = system.namespaces();
        let node = Node {
            namespaces: &namespaces,
            veths: &[],
            peers: &BTreeMap::new(),
        };
        assert_eq!(match_pods(&system, &pods, &node).len(), 1);
        assert_eq!(
            system.net_file_reads(),
            0,
            "no namespace's addresses were needed"
        );
    }

    #[test]
    fn annotations_ignore_a_pod_or_opt_its_namespace_into_tuning() {
        let mut p = pod("web");
        assert!(!p.ignored() && !p.workload().tune_netns);
        p.annotations.insert(TUNE_NETNS.into(), "true".into());
        p.annotations.insert(IGNORE.into(), "false".into());
        assert!(p.workload().tune_netns);
        assert!(!p.ignored());
        p.annotations.insert(IGNORE.into(), "True".into());
        assert!(p.ignored());
    }
}
