//! One collection: follow the node's host-side veths and namespaces, read a
//! Sample, turn it into a Snapshot against the previous one.
//!
//! Everything about a namespace that is gone is released here, on the tick its
//! departure is listed (at once when its veth goes, else within
//! [`TOPOLOGY_REFRESH_TICKS`]): its map entries (`forget_namespaces`; those
//! keyed by its host-side interface, `forget_interfaces`), its
//! interface's tc links (`watch_interfaces`), and — since metrics are rendered
//! from the latest Snapshot only — its metric series.
//!
//! Pods are named from the container runtime's latest answer
//! ([`super::cri::RuntimeBoard`], filled by its own thread: a tick never waits
//! for the runtime) and the other identity sources ([`super::identity`]); a pod
//! annotated `nettune.io/ignore: "true"` is left out: no series, no tc
//! programs on its veth, its map figures dropped.
//!
//! A pod's traffic is joined to its namespace through the host-side veth: the veth
//! names its peer's namespace by id (`IFLA_LINK_NETNSID`), and each namespace's id
//! as the host sees it comes from `RTM_GETNSID` (cached per namespace). An ifindex
//! alone cannot do this: ifindex values repeat across namespaces.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use super::{
    conversations::ConversationTracker,
    cri::{RuntimeBoard, RuntimePods},
    identity::{self, PodRecord},
    listeners::{ListenReadings, ListenerTracker},
    netfiles::NetFilesReader,
    port_watch::PortWatch,
    sample::{self, PodInterfaces},
};
use crate::{
    config::Config,
    model::probes::Variant,
    model::{
        context::NodeContext,
        sample::Sample,
        snapshot::{Context, Snapshot},
        tuning::Mode,
        workload::Workload,
    },
    probes::{InterfaceChanges, MapReadError, ProbeSource, Probes, Timeouts, listen},
    sys::{Kernel, Link, Namespace, System},
};

/// Collection state carried from tick to tick.
pub struct Collector<P: ProbeSource = Probes, S: System = Kernel> {
    /// The probes whose maps are read.
    pub probes: P,
    system: S,
    node: String,
    kernel: String,
    mode: Mode,
    started: Instant,
    previous: Option<(Sample, Instant)>,
    /// Namespace inode → the id the host namespace gave it (`None`: none yet).
    netns_ids: BTreeMap<u32, Option<i32>>,
    /// The host-side veths of the last listing, by ifindex.
    known_veths: BTreeSet<u32>,
    /// Pods from the container runtime, if it is a source.
    runtime: Option<RuntimeBoard>,
    /// Namespaces the runtime was asked about early (once each).
    asked: BTreeSet<u32>,
    /// Listening sockets and what their applications asked for.
    listeners: ListenerTracker,
    /// Whether the on-demand connect-failure program should run.
    port_watch: PortWatch,
    /// Whether it was last asked to run.
    connects_asked: bool,
    /// Namespaces the port watch wants looked at (from the last tick).
    look_at: BTreeSet<u32>,
    /// The last listing of the host's links and the node's namespaces.
    topology: Option<Topology>,
    ticks_since_listing: u32,
    /// The maps counted something in a namespace the listing did not have.
    unknown_activity: bool,
    /// Each namespace's `/proc/net` files, read where something happened.
    netfiles: NetFilesReader,
    /// The veths to watch when some are still waiting for their tc programs
    /// (attaching spends a bounded time per pass): see [`Collector::catch_up`].
    pending_watch: Option<Vec<Link>>,
    /// DNS queries and handshakes unanswered, and refusals, so far.
    conversations: ConversationTracker,
    /// Which pod each sysctl writer's cgroup belongs to.
    writer_pods: super::writers::WriterPods,
    /// When a query or a handshake counts as unanswered.
    timeouts: Timeouts,
    /// The cluster around the node, and when it was read.
    node_context: Option<(NodeContext, Instant)>,
    /// `cluster.lb_idle_timeout_seconds`, if set.
    lb_idle_timeout: Option<u64>,
}

/// How often the node's context is read again (on a listing of the links).
const CONTEXT_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Ticks between two listings of links and namespaces when nothing says one
/// changed (a namespace with no veth on the host is found within this many).
/// Links are followed by their netlink notifications and a namespace the maps
/// count in is listed at once, so this is the safety net only: at 500 pods a
/// listing every 10 ticks (every link's dump, in which the kernel finds each
/// veth's peer id by a walk of all ids) was a tenth of an idle agent's CPU.
pub const TOPOLOGY_REFRESH_TICKS: u32 = 30;

/// The host's links and the node's namespaces, as last listed.
#[derive(Clone, Debug)]
struct Topology {
    host_links: Option<Vec<Link>>,
    namespaces: BTreeMap<u32, Namespace>,
}

/// What one tick produced.
pub struct Tick {
    /// The new Snapshot.
    pub snapshot: Snapshot,
    /// Host-side interfaces attached, forgotten or refused this tick.
    pub interfaces: InterfaceChanges,
    /// Map entries of departed namespaces and host interfaces released this tick.
    pub forgotten_entries: usize,
}

/// The node's name: the configured one, `$NODE_NAME` (the Downward API), or the
/// hostname.
pub fn node_name(config: &Config, system: &impl System) -> String {
    config
        .agent
        .node_name
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok())
        .or_else(|| {
            system
                .read_proc("sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

impl<P: ProbeSource, S: System> Collector<P, S> {
    /// The tuner's mode, as the Snapshot reports it.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A collector reading `probes` and `system`.
    pub fn new(probes: P, system: S, config: &Config) -> Self {
        Self {
            node: node_name(config, &system),
            kernel: system
                .read_proc("sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |r| r.trim().to_owned()),
            mode: config.tuning.mode,
            probes,
            system,
            started: Instant::now(),
            previous: None,
            netns_ids: BTreeMap::new(),
            known_veths: BTreeSet::new(),
            runtime: None,
            asked: BTreeSet::new(),
            listeners: ListenerTracker::default(),
            port_watch: PortWatch::default(),
            connects_asked: false,
            look_at: BTreeSet::new(),
            netfiles: NetFilesReader::default(),
            pending_watch: None,
            conversations: ConversationTracker::default(),
            writer_pods: super::writers::WriterPods::default(),
            timeouts: Timeouts {
                dns: std::time::Duration::from_secs_f64(config.dns.timeout_seconds),
                handshake: std::time::Duration::from_secs_f64(config.tcp.handshake_timeout_seconds),
            },
            node_context: None,
            lb_idle_timeout: Some(config.cluster.lb_idle_timeout_seconds).filter(|t| *t > 0),
            topology: None,
            ticks_since_listing: 0,
            unknown_activity: false,
        }
    }

    /// Names pods with what the container runtime says, as published on `board`.
    #[must_use]
    pub fn with_runtime(mut self, board: RuntimeBoard) -> Self {
        self.runtime = Some(board);
        self
    }

    /// The system layer this collector reads.
    pub fn system(&self) -> &S {
        &self.system
    }

    /// The host's interfaces and the node's namespaces: listed again when the
    /// host's links changed, when the kernel side counted something in a
    /// namespace not known yet (`unknown_activity`), and every
    /// [`TOPOLOGY_REFRESH_TICKS`] ticks; otherwise as last listed. Listing
    /// every link and every process's namespace each tick was most of an idle
    /// agent's kernel time on a node with hundreds of pods.
    /// Returns it and whether it was listed just now.
    fn topology(&mut self, unknown_activity: bool) -> (Topology, bool) {
        self.ticks_since_listing += 1;
        let stale = self.ticks_since_listing >= TOPOLOGY_REFRESH_TICKS;
        // Asked every tick, so that the subscription's queue is drained.
        let links_changed = self.system.host_links_changed();
        match &self.topology {
            Some(t) if !stale && !links_changed && !unknown_activity => (t.clone(), false),
            _ => {
                let host_links = match self.system.host_links() {
                    Ok(links) => Some(links),
                    Err(e) => {
                        log::warn!("cannot list interfaces: {e}");
                        None
                    }
                };
                let t = Topology {
                    host_links,
                    namespaces: self.system.namespaces(),
                };
                self.ticks_since_listing = 0;
                self.topology = Some(t.clone());
                (t, true)
            }
        }
    }

    /// Attaches the tc programs to veths a tick left waiting (within one attach
    /// budget), between ticks; returns what changed, if anything was waiting.
    pub fn catch_up(&mut self) -> Option<InterfaceChanges> {
        let watched = self.pending_watch.take()?;
        let refs: Vec<&Link> = watched.iter().collect();
        let changes = self.probes.watch_interfaces(&refs);
        if changes.pending > 0 {
            self.pending_watch = Some(watched);
        }
        Some(changes)
    }

    /// Attaches the connect-failure program while a namespace's ports are
    /// crowded, and detaches it once they are calm (see [`super::port_watch`]);
    /// asks the probes once per change of mind (where the program cannot run,
    /// the TIME_WAIT figures serve alone).
    fn watch_connects(&mut self, crowded: Option<super::port_watch::Crowded>) {
        let want = self.port_watch.armed;
        if want == self.connects_asked {
            return;
        }
        self.connects_asked = want;
        let watching = self.probes.watch_connects(want);
        match (crowded, want, watching) {
            (Some((netns, held, width)), true, true) => log::info!(
                "counting connects that find no local port: netns {netns}'s TCP sockets hold \
                 {held} of its {width} ephemeral ports"
            ),
            (_, false, false) => log::info!(
                "no namespace's ephemeral ports are crowded: connects are no longer watched"
            ),
            _ => {}
        }
    }

    /// Reads the node once and returns the Snapshot.
    pub fn tick(&mut self) -> Result<Tick, MapReadError> {
        let started = Instant::now();
        let unknown = std::mem::take(&mut self.unknown_activity);
        let (
            Topology {
                host_links,
                namespaces,
            },
            fresh,
        ) = self.topology(unknown);
        let veths: Vec<&Link> = host_links
            .iter()
            .flatten()
            .filter(|l| l.is_veth())
            .collect();
        let alive: BTreeSet<u32> = namespaces.keys().copied().collect();
        // Only a fresh listing says a namespace is gone: a cached one may miss a
        // new namespace whose entries must survive until it is listed.
        let forgotten_entries = if fresh {
            let namespaces_gone = self.probes.forget_namespaces(&alive)?;
            // The host namespace stays while pods come and go: entries keyed by a
            // departed veth of its own are released by interface. An interface
            // made between the listing and this call loses at most the drops it
            // had in that instant (its next drop makes the entry again).
            let host = namespaces.values().find(|ns| ns.is_host);
            let interfaces_gone = match (host, &host_links) {
                (Some(host), Some(links)) => {
                    let listed = links.iter().map(|l| l.ifindex).collect();
                    self.probes.forget_interfaces(host.inode, &listed)?
                }
                _ => 0,
            };
            namespaces_gone + interfaces_gone
        } else {
            0
        };
        self.netns_ids.retain(|inode, _| alive.contains(inode));
        let listed: BTreeSet<u32> = veths.iter().map(|l| l.ifindex).collect();
        if !listed.is_subset(&self.known_veths) {
            // A new veth: its peer's namespace may just have been given an id.
            self.netns_ids.retain(|_, id| id.is_some());
        }
        let peers = self.peers(&namespaces, &veths);
        let runtime = self
            .runtime
            .as_ref()
            .map(RuntimeBoard::latest)
            .unwrap_or_default();
        let node = identity::Node {
            namespaces: &namespaces,
            veths: &veths,
            peers: &peers,
        };
        let pods = identity::match_pods(&self.system, &runtime.pods, &node);
        self.ask_runtime_about_new_namespaces(&namespaces, &pods, &runtime);
        let ignored: BTreeSet<u32> = pods
            .iter()
            .filter(|(_, pod)| pod.ignored())
            .map(|(inode, _)| *inode)
            .collect();
        let pod_veths: Vec<&Link> = veths
            .iter()
            .copied()
            .filter(|l| peers.get(&l.ifindex).is_none_or(|ns| !ignored.contains(ns)))
            .collect();
        // Without a listing, keep watching what we watch rather than detach it all.
        let interfaces = if host_links.is_some() {
            self.known_veths = listed;
            let changes = self.probes.watch_interfaces(&pod_veths);
            self.pending_watch =
                (changes.pending > 0).then(|| pod_veths.iter().copied().cloned().collect());
            changes
        } else {
            InterfaceChanges::default()
        };
        // Every tick, not only on a listing: they are the pods' volumes.
        let link_stats = self.system.host_link_stats().unwrap_or_else(|e| {
            log::warn!("cannot read the interfaces' counters: {e}");
            BTreeMap::new()
        });
        let owners: Vec<(&Namespace, Workload)> = namespaces
            .values()
            .filter(|ns| !ignored.contains(&ns.inode))
            .map(|ns| {
                let pod = pods.get(&ns.inode).copied();
                (ns, identity::identify(&self.system, ns, pod))
            })
            .collect();
        let mut readings = self.probes.read()?;
        sample::leave_out(&mut readings, &ignored);
        // A namespace the maps know and the listing does not: list again next tick.
        self.unknown_activity = readings
            .namespaces_seen()
            .any(|n| n != 0 && !namespaces.contains_key(&n));
        let over_budget = sample::over_budget(&readings);
        let listen = ListenReadings {
            origins: std::mem::take(&mut readings.listen_origins),
            exact: self
                .counts_overflows_per_socket()
                .then(|| std::mem::take(&mut readings.listen_overflows)),
            look_at: std::mem::take(&mut self.look_at),
        };
        let taken = self.probes.take_unanswered_and_refused(self.timeouts)?;
        self.conversations.count(&taken);
        self.conversations
            .keep_interfaces(&veths.iter().map(|l| l.ifindex).collect());
        let pod_interfaces = PodInterfaces {
            veths: &pod_veths,
            link_stats: &link_stats,
            peers: &peers,
        };
        let mut sample = sample::read(
            &self.system,
            &owners,
            &mut readings,
            &pod_interfaces,
            self.probes.drop_reasons(),
        );
        sample.over_budget = over_budget;
        self.writer_pods
            .name(&self.system, &mut sample.sysctl_writers, &runtime.pods);
        self.conversations.fill(&mut sample, &readings);
        let read: Vec<&Namespace> = owners.iter().map(|(ns, _)| *ns).collect();
        self.netfiles
            .fill(&self.system, &read, &mut sample, Instant::now());
        let handled =
            self.listeners
                .update(&self.system, &namespaces, &ignored, &mut sample, listen);
        if !handled.is_empty() {
            self.probes.forget_listen_origins(&handled)?;
        }
        let verdict = self.port_watch.update(
            &sample,
            self.previous
                .as_ref()
                .map(|(s, at)| (s, at.elapsed().as_secs_f64())),
        );
        self.look_at = verdict.to_look_at.into_iter().collect();
        self.watch_connects(verdict.newly_crowded);
        let now = Instant::now();
        let (before, elapsed) = match &self.previous {
            Some((s, at)) => (Some(s), now.duration_since(*at).as_secs_f64()),
            None => (None, 0.0),
        };

        let context = Context {
            taken_at_unix_seconds: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            node: &self.node,
            kernel: &self.kernel,
            mode: self.mode,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            collection_seconds: started.elapsed().as_secs_f64(),
            report: self.probes.report(),
            reasons: self.probes.drop_reasons(),
            identity_sources: runtime.source.as_slice(),
        };
        let mut snapshot = Snapshot::build(&sample, before, elapsed, &context);
        if let Some(links) = host_links.as_deref()
            && fresh
            && self
                .node_context
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() >= CONTEXT_REFRESH)
        {
            let mut context = super::context::read(&self.system, links);
            context.lb_idle_timeout = self.lb_idle_timeout;
            self.node_context = Some((context, now));
        }
        snapshot.context = self.node_context.as_ref().map(|(c, _)| c.clone());
        self.previous = Some((sample, now));
        Ok(Tick {
            snapshot,
            interfaces,
            forgotten_entries,
        })
    }

    /// Whether the kernel side counts overflows per listening socket (fentry or
    /// kprobe), rather than per namespace only.
    fn counts_overflows_per_socket(&self) -> bool {
        self.probes
            .report()
            .signal(listen::SIGNAL)
            .and_then(|s| s.attached)
            .is_some_and(|v| matches!(v, Variant::Fentry | Variant::Kprobe))
    }

    /// A namespace the runtime's pods do not name may be a pod created since
    /// its last poll: ask for an early poll, once per namespace, while the
    /// runtime answers.
    fn ask_runtime_about_new_namespaces(
        &mut self,
        namespaces: &BTreeMap<u32, Namespace>,
        pods: &BTreeMap<u32, &PodRecord>,
        runtime: &RuntimePods,
    ) {
        let Some(board) = &self.runtime else { return };
        self.asked.retain(|inode| namespaces.contains_key(inode));
        if !runtime.source.as_ref().is_some_and(|s| s.up) {
            return;
        }
        let unnamed: Vec<u32> = namespaces
            .values()
            .filter(|ns| !ns.is_host && !pods.contains_key(&ns.inode))
            .map(|ns| ns.inode)
            .filter(|inode| !self.asked.contains(inode))
            .collect();
        if !unnamed.is_empty() {
            board.poll_soon();
            self.asked.extend(unnamed);
        }
    }

    /// Host-side veth ifindex → the namespace of its peer, for peers outside the
    /// host namespace.
    fn peers(
        &mut self,
        namespaces: &BTreeMap<u32, Namespace>,
        veths: &[&Link],
    ) -> BTreeMap<u32, u32> {
        if veths.iter().all(|l| l.peer_netnsid.is_none()) {
            return BTreeMap::new();
        }
        let mut by_id = BTreeMap::new();
        for (inode, ns) in namespaces.iter().filter(|(_, ns)| !ns.is_host) {
            let id = *self
                .netns_ids
                .entry(*inode)
                .or_insert_with(|| self.system.netns_id(ns).ok().flatten());
            if let Some(id) = id {
                by_id.insert(id, *inode);
            }
        }
        veths
            .iter()
            .filter_map(|l| Some((l.ifindex, *by_id.get(&l.peer_netnsid?)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests;
