//! Pod-like network namespaces: each joined to the host namespace by a veth
//! (the host side is where nettune attaches its tc programs, as with most CNIs),
//! with a default route through the host, so pod-to-pod traffic is routed by the
//! host namespace as on a Kubernetes node.
//!
//! Pod `k` (counted across the process) gets `10.213.<k/64>.<4(k%64)+2>/30` and its
//! host side `.+1` — a range no kernel test uses, so benchmarks and tests can run
//! side by side.

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::ensure;

use crate::{
    netns::{HostVeth, Netns, Veth},
    sysctl_guard::Restore,
};

static NEXT_POD: AtomicUsize = AtomicUsize::new(0);

/// Routing between pods needs forwarding in the host namespace.
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// One pod-like namespace and its veth to the host.
pub struct Pod {
    // Dropped first: deleting the host side removes the pair before the namespace.
    pub veth: HostVeth,
    pub ns: Netns,
}

impl Pod {
    /// The pod's address (on its side of the veth).
    pub fn addr(&self) -> Ipv4Addr {
        self.veth.veth.b_addr
    }

    /// The host side's interface name (where nettune attaches).
    pub fn host_iface(&self) -> &str {
        &self.veth.veth.a_name
    }

    /// `pod="netns:<name>"`: how nettune labels the namespace's series.
    pub fn label(&self) -> String {
        format!("netns:{}", self.ns.name())
    }
}

/// Pod-like namespaces with forwarding on in the host (restored on drop).
pub struct Pods {
    pub pods: Vec<Pod>,
    _forward: Restore,
}

impl Pods {
    /// Creates `count` pods, their namespaces named `nt<pid>-<tag><n>`.
    pub fn new(count: usize, tag: &str) -> anyhow::Result<Self> {
        let forward = Restore::set(IP_FORWARD, "1")?;
        let mut pods = Vec::with_capacity(count);
        for _ in 0..count {
            pods.push(new_pod(tag)?);
        }
        Ok(Self {
            pods,
            _forward: forward,
        })
    }

    /// Host-side interface names, in pod order.
    pub fn host_ifaces(&self) -> Vec<&str> {
        self.pods.iter().map(Pod::host_iface).collect()
    }
}

fn new_pod(tag: &str) -> anyhow::Result<Pod> {
    let k = NEXT_POD.fetch_add(1, Ordering::Relaxed);
    ensure!(k < 64 * 256, "too many pods for 10.213.0.0/16");
    let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + 4 * u32::try_from(k)?;
    let (host, pod) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
    let ns = Netns::new(tag)?;
    let host_name = format!("ntb{}p{k}", std::process::id() % 10000);
    let veth = Veth::to_host_named(&ns, &host_name, "eth0", (host, pod), 30)?;
    ns.ip(&["route", "add", "default", "via", &host.to_string()])?;
    Ok(Pod { veth, ns })
}
