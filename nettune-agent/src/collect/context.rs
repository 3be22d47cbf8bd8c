//! Reads what [`crate::model::context`] decides the node's context from: the
//! host's interfaces (names, kinds, MTUs), its processes' names, BPF CNIs'
//! pinned maps, the default route and the idle-timeout sysctls.

use crate::{
    model::context::{NodeContext, NodeFacts, detect},
    sys::{Link, System, procfs},
};

/// The node's context now, from `links` (the host's interfaces, as listed).
pub fn read(system: &impl System, links: &[Link]) -> NodeContext {
    let number = |path: &str| system.read_proc(path).ok().and_then(|t| procfs::number(&t));
    let facts = NodeFacts {
        links: links
            .iter()
            .map(|l| (l.name.clone(), l.kind.clone(), l.mtu))
            .collect(),
        processes: system.process_names(),
        pinned: system.pinned_bpf("tc/globals"),
        uplink: system
            .read_proc("net/route")
            .ok()
            .and_then(|t| default_route_interface(&t)),
        keepalive_time: number("sys/net/ipv4/tcp_keepalive_time"),
        conntrack_established_timeout: number(
            "sys/net/netfilter/nf_conntrack_tcp_timeout_established",
        ),
        nft_chains: nft_chains(system),
    };
    detect(&facts)
}

/// The host's nftables chains as (family, table, chain); none where nftables
/// cannot be read (no nf_tables in the kernel, or no `CAP_NET_ADMIN`): the
/// proxy is then told by its interfaces and processes alone.
fn nft_chains(system: &impl System) -> Vec<(String, String, String)> {
    match system.nftables_chains() {
        Ok(chains) => chains
            .into_iter()
            .map(|c| (c.family_name().to_owned(), c.table, c.chain))
            .collect(),
        Err(e) => {
            log::debug!("nftables chains not read ({e}): the proxy's mode is told without them");
            Vec::new()
        }
    }
}

/// The interface of the IPv4 default route in `/proc/net/route` (destination and
/// mask 0), the one with the lowest metric when there are several.
fn default_route_interface(route: &str) -> Option<String> {
    route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, destination, metric, mask) = (f.first()?, f.get(1)?, f.get(6)?, f.get(7)?);
            (*destination == "00000000" && *mask == "00000000").then(|| {
                (
                    metric.parse::<u64>().unwrap_or(u64::MAX),
                    (*iface).to_owned(),
                )
            })
        })
        .min()
        .map(|(_, iface)| iface)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;

    #[test]
    fn the_nodes_nftables_chains_tell_kube_proxys_mode() {
        let system = FakeSystem::new();
        system.add_process("kube-proxy");
        system.add_nft_chain(2, "nat", "KUBE-SERVICES");
        assert_eq!(read(&system, &[]).proxy, "kube-proxy-iptables");
    }

    const ROUTE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth1\t00000000\t0102A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
        eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
        eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn the_default_route_with_the_lowest_metric_is_the_uplink() {
        assert_eq!(default_route_interface(ROUTE).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }

    #[test]
    fn facts_come_from_the_system() {
        let system = FakeSystem::new();
        system.add_process("kube-proxy");
        system.pin_bpf("tc/globals", "cilium_lb4_services_v2");
        system.set_proc("net/route", ROUTE);
        system.set_proc("sys/net/ipv4/tcp_keepalive_time", "7200\n");
        let links = [Link {
            ifindex: 2,
            name: "eth0".into(),
            kind: None,
            peer_ifindex: None,
            peer_netnsid: None,
            mtu: Some(9001),
        }];
        let c = read(&system, &links);
        // kube-proxy runs: the pinned Cilium maps do not make Cilium the proxy.
        assert_eq!(c.proxy, "kube-proxy");
        assert_eq!(c.uplink, Some(("eth0".to_owned(), 9001)));
        assert_eq!(c.keepalive_time, Some(7200));
        assert_eq!(c.conntrack_established_timeout, None);
    }
}
