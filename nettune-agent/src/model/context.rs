//! The cluster around the node, as the node itself shows it: which Service proxy
//! runs (kube-proxy and its mode, Cilium's kube-proxy replacement, none), which
//! CNI and encapsulation carry pod traffic and what the encapsulation costs per
//! packet, whether NodeLocal DNSCache answers the pods, and the MTUs and idle
//! timeouts on a pod's path. Pure: [`detect`] decides from [`NodeFacts`], which
//! `collect` reads through the `sys` seam.
//!
//! Each conclusion keeps the evidence it came from (an interface, a process, a
//! pinned map), so `probes`, `diagnose` and the JSON API can say why.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// What the node shows, read once (see `collect::context`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The host namespace's interfaces: (name, kind, MTU).
    pub links: Vec<(String, Option<String>, Option<u32>)>,
    /// Every process's command name (`/proc/<pid>/comm`).
    pub processes: BTreeSet<String>,
    /// Objects pinned under `/sys/fs/bpf/tc/globals` (a BPF CNI's maps).
    pub pinned: BTreeSet<String>,
    /// The interface of the IPv4 default route.
    pub uplink: Option<String>,
    /// `net.ipv4.tcp_keepalive_time` of the node, seconds.
    pub keepalive_time: Option<u64>,
    /// `net.netfilter.nf_conntrack_tcp_timeout_established`, seconds.
    pub conntrack_established_timeout: Option<u64>,
    /// The host's nftables chains: (family, table, chain), e.g. `("ip", "nat",
    /// "KUBE-SERVICES")` as iptables-nft leaves them; empty when nftables
    /// cannot be read.
    pub nft_chains: Vec<(String, String, String)>,
}

/// The node's context, with the evidence for each part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeContext {
    /// The Service proxy: `kube-proxy-iptables`, `kube-proxy-ipvs`,
    /// `kube-proxy-nftables`, `kube-proxy` (mode not visible), `cilium`
    /// (kube-proxy replacement) or `none`.
    pub proxy: String,
    /// The CNI: `cilium`, `calico`, `flannel`, `weave`, `kindnet` or `unknown`.
    pub cni: String,
    /// Encapsulation of pod traffic between nodes: `vxlan`, `geneve`, `ipip`,
    /// `wireguard` or `none`.
    pub encapsulation: String,
    /// Bytes the encapsulation adds to each packet (IPv4 outer header).
    pub overhead_bytes: u32,
    /// NodeLocal DNSCache answers on this node.
    pub nodelocal_dns: bool,
    /// The default route's interface and its MTU.
    pub uplink: Option<(String, u32)>,
    /// The largest MTU of the pods' host-side veths.
    pub pod_mtu: Option<u32>,
    /// TCP keepalive starts after this many idle seconds (node).
    pub keepalive_time: Option<u64>,
    /// Conntrack forgets an idle established connection after this many seconds.
    pub conntrack_established_timeout: Option<u64>,
    /// The load balancer in front of the cluster forgets an idle connection
    /// after this many seconds (`cluster.lb_idle_timeout_seconds`; not visible
    /// from the node).
    pub lb_idle_timeout: Option<u64>,
    /// Why: one line per conclusion.
    pub evidence: Vec<String>,
}

impl NodeContext {
    /// One line for people: `proxy kube-proxy-ipvs · cni flannel (vxlan, 50 B) ·
    /// path MTU 1450 · NodeLocal DNSCache`.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!("proxy {}", self.proxy), format!("cni {}", self.cni)];
        if self.encapsulation != "none" {
            let last = parts.len() - 1;
            parts[last].push_str(&format!(
                " ({}, {} B)",
                self.encapsulation, self.overhead_bytes
            ));
        }
        if let Some(mtu) = self.path_mtu() {
            parts.push(format!("path MTU {mtu}"));
        }
        if self.nodelocal_dns {
            parts.push("NodeLocal DNSCache".to_owned());
        }
        parts.join(" · ")
    }

    /// The largest packet a pod may send for it to cross the node's uplink
    /// once encapsulated.
    pub fn path_mtu(&self) -> Option<u32> {
        self.uplink
            .as_ref()
            .map(|(_, mtu)| mtu.saturating_sub(self.overhead_bytes))
    }
}

/// IPVS's default idle timeout for established TCP connections (`ipvsadm
/// --set`), seconds: what kube-proxy in ipvs mode runs with unless changed.
pub const IPVS_TCP_TIMEOUT_SECONDS: u64 = 900;

/// Per-packet overhead of each encapsulation over IPv4 (outer IP + UDP +
/// header, or the tunnel's own): VXLAN 50, Geneve 50 without options, IP-in-IP
/// 20, WireGuard 60.
fn overhead(encapsulation: &str) -> u32 {
    match encapsulation {
        "vxlan" | "geneve" => 50,
        "ipip" => 20,
        "wireguard" => 60,
        _ => 0,
    }
}

/// Interfaces by which CNIs are known, with the CNI each names.
const CNI_LINKS: &[(&str, &str)] = &[
    ("cilium_host", "cilium"),
    ("cilium_vxlan", "cilium"),
    ("cilium_geneve", "cilium"),
    ("vxlan.calico", "calico"),
    ("tunl0", "calico"),
    ("wireguard.cali", "calico"),
    ("flannel.1", "flannel"),
    ("flannel-wg", "flannel"),
    ("weave", "weave"),
];

/// Processes by which CNIs are known.
const CNI_PROCESSES: &[(&str, &str)] = &[
    ("cilium-agent", "cilium"),
    ("calico-node", "calico"),
    ("flanneld", "flannel"),
    ("weaver", "weave"),
    ("kindnetd", "kindnet"),
];

/// What the facts say about the node.
pub fn detect(facts: &NodeFacts) -> NodeContext {
    let mut evidence = Vec::new();
    let has_link = |name: &str| facts.links.iter().any(|(n, _, _)| n == name);

    let cni = CNI_LINKS
        .iter()
        .find(|(link, _)| has_link(link))
        .map(|(link, cni)| {
            evidence.push(format!("cni {cni}: interface {link}"));
            *cni
        })
        .or_else(|| {
            CNI_PROCESSES
                .iter()
                .find(|(process, _)| facts.processes.contains(*process))
                .map(|(process, cni)| {
                    evidence.push(format!("cni {cni}: process {process}"));
                    *cni
                })
        })
        .unwrap_or("unknown");

    // Tunnel devices by kind; a tunl0 without routes is still calico's IP-in-IP.
    let encapsulation = facts
        .links
        .iter()
        .find_map(|(name, kind, _)| {
            let kind = kind.as_deref()?;
            matches!(kind, "vxlan" | "geneve" | "ipip" | "wireguard").then(|| (name, kind))
        })
        .map_or("none", |(name, kind)| {
            evidence.push(format!("encapsulation {kind}: interface {name}"));
            kind
        });

    let kube_proxy = facts.processes.contains("kube-proxy");
    let nft_table = |table: &str| {
        facts
            .nft_chains
            .iter()
            .find(|(family, t, _)| t == table && (family == "ip" || family == "ip6"))
    };
    let nft_chain = |table: &str, chain: &str| {
        facts
            .nft_chains
            .iter()
            .find(|(family, t, c)| t == table && c == chain && (family == "ip" || family == "ip6"))
    };
    // IPVS mode also leaves KUBE-SERVICES in the nat table: its interface first.
    let proxy = if has_link("kube-ipvs0") {
        evidence.push("proxy kube-proxy-ipvs: interface kube-ipvs0".to_owned());
        "kube-proxy-ipvs"
    } else if let Some((family, ..)) = nft_table("kube-proxy") {
        evidence.push(format!(
            "proxy kube-proxy-nftables: nftables table {family} kube-proxy"
        ));
        "kube-proxy-nftables"
    } else if let Some((family, ..)) = nft_chain("nat", "KUBE-SERVICES") {
        evidence.push(format!(
            "proxy kube-proxy-iptables: chain KUBE-SERVICES in nftables table {family} nat \
             (iptables-nft)"
        ));
        "kube-proxy-iptables"
    } else if kube_proxy {
        evidence.push("proxy kube-proxy: process kube-proxy (mode not visible)".to_owned());
        "kube-proxy"
    } else if facts
        .pinned
        .iter()
        .any(|p| p.starts_with("cilium_lb4_services") || p.starts_with("cilium_lb6_services"))
    {
        evidence.push("proxy cilium: pinned cilium_lb*_services maps, no kube-proxy".to_owned());
        "cilium"
    } else {
        "none"
    };

    let nodelocal_dns = has_link("nodelocaldns") || facts.processes.contains("node-cache");
    if nodelocal_dns {
        evidence
            .push("NodeLocal DNSCache: interface nodelocaldns or process node-cache".to_owned());
    }

    let uplink = facts.uplink.as_ref().and_then(|name| {
        let mtu = facts
            .links
            .iter()
            .find(|(n, _, _)| n == name)
            .and_then(|(_, _, mtu)| *mtu)?;
        Some((name.clone(), mtu))
    });
    let pod_mtu = facts
        .links
        .iter()
        .filter(|(_, kind, _)| kind.as_deref() == Some("veth"))
        .filter_map(|(_, _, mtu)| *mtu)
        .max();

    NodeContext {
        proxy: proxy.to_owned(),
        cni: cni.to_owned(),
        encapsulation: encapsulation.to_owned(),
        overhead_bytes: overhead(encapsulation),
        nodelocal_dns,
        uplink,
        pod_mtu,
        keepalive_time: facts.keepalive_time,
        conntrack_established_timeout: facts.conntrack_established_timeout,
        lb_idle_timeout: None,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, kind: Option<&str>, mtu: u32) -> (String, Option<String>, Option<u32>) {
        (name.to_owned(), kind.map(str::to_owned), Some(mtu))
    }

    #[test]
    fn flannel_over_vxlan_with_kube_proxy_in_ipvs_mode() {
        let facts = NodeFacts {
            links: vec![
                link("eth0", None, 1500),
                link("flannel.1", Some("vxlan"), 1450),
                link("kube-ipvs0", Some("dummy"), 1500),
                link("veth1", Some("veth"), 1450),
            ],
            processes: ["kube-proxy", "flanneld"].map(str::to_owned).into(),
            uplink: Some("eth0".into()),
            ..NodeFacts::default()
        };
        let c = detect(&facts);
        assert_eq!(
            (c.proxy.as_str(), c.cni.as_str(), c.encapsulation.as_str()),
            ("kube-proxy-ipvs", "flannel", "vxlan")
        );
        assert_eq!(c.overhead_bytes, 50);
        assert_eq!(c.path_mtu(), Some(1450));
        assert_eq!(c.pod_mtu, Some(1450));
        assert!(!c.nodelocal_dns);
        assert_eq!(
            c.summary(),
            "proxy kube-proxy-ipvs · cni flannel (vxlan, 50 B) · path MTU 1450"
        );
        assert!(
            c.evidence
                .contains(&"encapsulation vxlan: interface flannel.1".to_owned()),
            "{:?}",
            c.evidence
        );
    }

    #[test]
    fn kube_proxys_mode_is_read_from_the_tables_and_chains_it_leaves() {
        let chain = |family: &str, table: &str, chain: &str| {
            (family.to_owned(), table.to_owned(), chain.to_owned())
        };
        let proxy = |chains: Vec<(String, String, String)>, links: Vec<_>| {
            let facts = NodeFacts {
                links,
                processes: ["kube-proxy".to_owned()].into(),
                nft_chains: chains,
                ..NodeFacts::default()
            };
            let c = detect(&facts);
            (c.proxy, c.evidence.first().cloned().unwrap_or_default())
        };
        let iptables = vec![
            chain("ip", "nat", "PREROUTING"),
            chain("ip", "nat", "KUBE-SERVICES"),
        ];
        let (mode, why) = proxy(iptables.clone(), vec![]);
        assert_eq!(mode, "kube-proxy-iptables", "{why}");
        assert!(
            why.contains("KUBE-SERVICES in nftables table ip nat"),
            "{why}"
        );
        let (mode, why) = proxy(vec![chain("ip", "kube-proxy", "services")], vec![]);
        assert_eq!(mode, "kube-proxy-nftables", "{why}");
        // IPVS mode leaves KUBE-SERVICES too; its interface decides.
        let (mode, _) = proxy(iptables, vec![link("kube-ipvs0", Some("dummy"), 1500)]);
        assert_eq!(mode, "kube-proxy-ipvs");
        // A table of that name elsewhere (inet, a user's) is not kube-proxy's.
        let (mode, _) = proxy(vec![chain("inet", "kube-proxy", "x")], vec![]);
        assert_eq!(mode, "kube-proxy");
    }

    #[test]
    fn cilium_replacing_kube_proxy_with_geneve_and_nodelocal_dns() {
        let facts = NodeFacts {
            links: vec![
                link("ens5", None, 9001),
                link("cilium_host", Some("veth"), 9001),
                link("cilium_geneve", Some("geneve"), 8951),
                link("nodelocaldns", Some("dummy"), 1500),
            ],
            pinned: ["cilium_lb4_services_v2".to_owned()].into(),
            uplink: Some("ens5".into()),
            ..NodeFacts::default()
        };
        let c = detect(&facts);
        assert_eq!(
            (c.proxy.as_str(), c.cni.as_str(), c.encapsulation.as_str()),
            ("cilium", "cilium", "geneve")
        );
        assert!(c.nodelocal_dns);
        assert_eq!(c.path_mtu(), Some(8951));
    }

    #[test]
    fn a_bare_node_is_none_and_unknown() {
        let c = detect(&NodeFacts::default());
        assert_eq!(
            (c.proxy.as_str(), c.cni.as_str(), c.encapsulation.as_str()),
            ("none", "unknown", "none")
        );
        assert_eq!(c.path_mtu(), None);
        assert!(c.evidence.is_empty());
    }
}
