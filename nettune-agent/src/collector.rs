//! One collection: follow the node's namespaces and interfaces, read a Sample,
//! turn it into a Snapshot against the previous one.
//!
//! Everything about a namespace that is gone is released here, on the tick after
//! it goes: its map entries (`forget_namespaces`), its interface's tc links
//! (`refresh_interfaces`), and — since metrics are rendered from the latest
//! Snapshot only — its metric series.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use crate::{
    config::Config,
    netns::{self, Namespace},
    probes::{InterfaceChanges, LoadError, Probes},
    sample::Sample,
    snapshot::{Context, Snapshot},
};

/// Collection state carried from tick to tick.
pub struct Collector {
    pub probes: Probes,
    node: String,
    kernel: String,
    config: Config,
    started: Instant,
    previous: Option<(Sample, Instant)>,
    /// Namespace inode → the host-side ifindexes of its veths' peers.
    peer_cache: BTreeMap<u32, Vec<u32>>,
}

/// What one tick produced.
pub struct Tick {
    pub snapshot: Snapshot,
    pub interfaces: InterfaceChanges,
    pub forgotten_entries: usize,
}

/// The node's name: the configured one, `$NODE_NAME` (the Downward API), or the
/// hostname.
pub fn node_name(config: &Config) -> String {
    config
        .agent
        .node_name
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The running kernel's release, e.g. `6.18.44`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

impl Collector {
    pub fn new(probes: Probes, config: Config) -> Self {
        Self {
            probes,
            node: node_name(&config),
            kernel: kernel_release(),
            config,
            started: Instant::now(),
            previous: None,
            peer_cache: BTreeMap::new(),
        }
    }

    /// Reads the kernel once and returns the Snapshot.
    pub fn tick(&mut self) -> Result<Tick, LoadError> {
        let started = Instant::now();
        let interfaces = self.probes.refresh_interfaces().unwrap_or_else(|e| {
            log::warn!("cannot list interfaces: {e}");
            InterfaceChanges::default()
        });
        let namespaces = netns::discover();
        let alive: BTreeSet<u32> = namespaces.keys().copied().collect();
        let forgotten_entries = self.probes.forget_namespaces(&alive)?;
        self.peer_cache.retain(|inode, _| alive.contains(inode));
        if !interfaces.added.is_empty() {
            // A new host-side interface: some namespace got a new veth.
            self.peer_cache.clear();
        }
        let peers = self.peers(&namespaces);
        let sample = Sample::collect(&self.probes, &namespaces)?;
        let now = Instant::now();
        let (before, elapsed) = match &self.previous {
            Some((s, at)) => (Some(s), now.duration_since(*at).as_secs_f64()),
            None => (None, 0.0),
        };
        let ctx = Context {
            node: &self.node,
            kernel: &self.kernel,
            mode: self.config.tuning.mode,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            collection_seconds: started.elapsed().as_secs_f64(),
            report: self.probes.report(),
            reasons: self.probes.drop_reasons(),
            peers: &peers,
        };
        let snapshot = Snapshot::build(&sample, before, elapsed, &ctx);
        self.previous = Some((sample, now));
        Ok(Tick {
            snapshot,
            interfaces,
            forgotten_entries,
        })
    }

    /// Host-side ifindex → namespace of the veth's other end.
    fn peers(&mut self, namespaces: &BTreeMap<u32, Namespace>) -> BTreeMap<u32, u32> {
        let mut peers = BTreeMap::new();
        for (inode, ns) in namespaces.iter().filter(|(_, n)| !n.is_host) {
            let ifindexes = self.peer_cache.entry(*inode).or_insert_with(|| {
                ns.links()
                    .map(|links| {
                        links
                            .into_iter()
                            .filter(|l| l.kind.as_deref() == Some("veth"))
                            .filter_map(|l| l.peer_ifindex)
                            .collect()
                    })
                    .unwrap_or_default()
            });
            for ifindex in ifindexes.iter() {
                peers.insert(*ifindex, *inode);
            }
        }
        peers
    }
}
