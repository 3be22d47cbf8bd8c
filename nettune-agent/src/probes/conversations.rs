//! The pod-conversations signal: tc programs on every veth of the host namespace
//! (the host side of a pod's interface with most CNIs), attached when an
//! interface appears and detached when it goes, that see the pod's DNS, TCP
//! handshakes and resets, and ICMP errors (`nettune-ebpf/src/conversations.rs`).
//! The pod's volumes are the interface's own counters (`sys::netlink::link_stats`),
//! not the programs'.
//!
//! Chain: TCX links (6.6+), then classic clsact filters through netlink. The maps
//! are keyed by the host-namespace ifindex, unique within that namespace.
//! Queries and handshakes still unanswered after their timeout, and refusals,
//! are taken out of their maps each tick ([`Probes::take_conversations`]), for
//! the collector to count.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttach},
    },
    util::KernelVersion,
};
use nettune_common::{
    Conversations, DnsCounters, DnsQueryKey, HandshakeKey, Pending, Remote,
    traffic::{CONVERSATIONS_MAP, DNS_PENDING_MAP, DNS_SERVERS_MAP, HANDSHAKES_MAP, REFUSALS_MAP},
};
use serde::Serialize;

use crate::{
    model::probes::{SignalStatus, Variant},
    sys::Link,
};

use super::{
    MapReadError, Probes,
    chain::{AttachContext, AttachError, Attempt, attach_chain, error_chain, load_error, program},
    maps,
};

/// Signal name in reports and metrics.
pub const SIGNAL: &str = "pod_conversations";

const INGRESS: &str = "pod_ingress";
const EGRESS: &str = "pod_egress";

const CHAIN: [(Variant, Attempt); 2] = [
    (Variant::Tcx, |ebpf, _| {
        let version =
            KernelVersion::current().map_err(|e| AttachError::KernelVersion(e.to_string()))?;
        if version < KernelVersion::new(6, 6, 0) {
            return Err(AttachError::TooOld {
                running: format!("{version:?}"),
                feature: "TCX",
                needs: "6.6",
            });
        }
        load_programs(ebpf)
    }),
    (Variant::Clsact, |ebpf, _| load_programs(ebpf)),
];

pub(super) fn attach(ebpf: &mut Ebpf, context: &AttachContext) -> SignalStatus {
    attach_chain(ebpf, context, SIGNAL, &CHAIN)
}

/// Loads both classifiers; they are attached per interface by [`Watcher`].
fn load_programs(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    for name in [INGRESS, EGRESS] {
        let p: &mut SchedClassifier = program(ebpf, name)?;
        if p.fd().is_err() {
            p.load().map_err(load_error(name))?;
        }
    }
    Ok(())
}

/// Why one interface could not be watched.
#[derive(Debug, thiserror::Error)]
pub(super) enum WatchError {
    /// The clsact qdisc could not be added.
    #[error("adding clsact: {}", error_chain(.0))]
    Qdisc(#[source] tc::TcError),
    /// The program is not loaded or missing.
    #[error(transparent)]
    Program(#[from] AttachError),
    /// The kernel refused to attach it.
    #[error("{name}: {}", error_chain(.source))]
    Attach {
        /// The program.
        name: &'static str,
        /// aya's error.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Its counters could not be created before attaching.
    #[error("creating its counters: {0}")]
    Counters(#[from] MapReadError),
}

/// Whether a tc error says the object already exists (`EEXIST`).
fn already_exists(e: &tc::TcError) -> bool {
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = at {
        if err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(libc::EEXIST)
        {
            return true;
        }
        at = err.source();
    }
    false
}

/// An interface we attached to.
struct Attached {
    name: String,
    links: [SchedClassifierLinkId; 2],
}

/// The interfaces currently watched.
#[derive(Default)]
pub(super) struct Watcher {
    attached: BTreeMap<u32, Attached>,
}

/// What one refresh changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InterfaceChanges {
    /// Interfaces attached: (ifindex, name).
    pub added: Vec<(u32, String)>,
    /// Interfaces gone and forgotten: (ifindex, name).
    pub removed: Vec<(u32, String)>,
    /// Interfaces that could not be attached: (name, reason).
    pub failed: Vec<(String, String)>,
    /// Interfaces left for the next refresh: this one spent its attach budget.
    pub pending: usize,
}

/// Time one refresh may spend attaching. The kernel waits for an RCU grace period
/// in every TCX attach, under the rtnl lock (milliseconds each, so attaching to
/// hundreds of veths takes seconds and cannot be parallelised): a refresh that
/// attached for this long leaves the rest to the next one, so that a collection
/// (and the agent's first Snapshot) never waits for all of them.
pub const ATTACH_BUDGET: std::time::Duration = std::time::Duration::from_millis(250);

fn attach_one(
    ebpf: &mut Ebpf,
    mode: Variant,
    ifindex: u32,
) -> Result<[SchedClassifierLinkId; 2], WatchError> {
    let iface = aya::programs::NetworkInterface::Index(ifindex);
    if mode == Variant::Clsact {
        // EEXIST: the qdisc is already there (ours from before, or the CNI's).
        if let Err(e) = tc::qdisc_add_clsact(iface)
            && !already_exists(&e)
        {
            return Err(WatchError::Qdisc(e));
        }
        // Unlike TCX links, clsact filters outlive the process that attached them:
        // an agent killed with SIGKILL leaves its filters behind. Replace ours
        // rather than pile a second copy on top (NotFound: there were none).
        for (name, hook) in [
            (INGRESS, TcAttachType::Ingress),
            (EGRESS, TcAttachType::Egress),
        ] {
            match tc::qdisc_detach_program(iface, hook.into(), name) {
                Ok(()) => log::info!("replaced a stale {name} filter on ifindex {ifindex}"),
                Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!(
                    "removing a stale {name} filter from ifindex {ifindex}: {}",
                    error_chain(&e)
                ),
            }
        }
    }
    let mut links = Vec::with_capacity(2);
    for (name, hook) in [
        (INGRESS, TcAttachType::Ingress),
        (EGRESS, TcAttachType::Egress),
    ] {
        let how = match mode {
            // An automatic priority sorts before every filter already there.
            Variant::Clsact => TcAttach::Netlink {
                parent: hook.into(),
                options: NlOptions::default(),
            },

            // First in the chain: a CNI's program returning TCX_PASS or redirecting
            // ends tc processing, and anything after it would miss those packets.
            _ => TcAttach::Tcx {
                attach_type: hook,
                order: LinkOrder::first(),
            },
        };
        let p: &mut SchedClassifier = program(ebpf, name)?;
        match p.attach(iface, how) {
            Ok(link) => links.push(link),
            Err(e) => {
                for link in links {
                    let _ = program::<SchedClassifier>(ebpf, INGRESS).map(|p| p.detach(link));
                }
                return Err(WatchError::Attach { name, source: e });
            }
        }
    }
    let (Some(egress), Some(ingress)) = (links.pop(), links.pop()) else {
        unreachable!("both hooks attached or returned early")
    };
    Ok([ingress, egress])
}

fn detach_one(ebpf: &mut Ebpf, links: [SchedClassifierLinkId; 2]) {
    let [ingress, egress] = links;
    // Errors are expected when the interface is already gone: its links went with it.
    if let Ok(p) = program::<SchedClassifier>(ebpf, INGRESS) {
        let _ = p.detach(ingress);
    }
    if let Ok(p) = program::<SchedClassifier>(ebpf, EGRESS) {
        let _ = p.detach(egress);
    }
}

impl Probes {
    /// Attaches to veths in `veths` (the agent's namespace) not watched yet and
    /// forgets watched ones that went. Does nothing when no tc variant attached.
    pub(super) fn refresh_interfaces(&mut self, veths: &[&Link]) -> InterfaceChanges {
        let mut changes = InterfaceChanges::default();
        let Some(mode) = self.report.signal(SIGNAL).and_then(|s| s.attached) else {
            return changes;
        };
        let present: BTreeMap<u32, &str> =
            veths.iter().map(|l| (l.ifindex, l.name.as_str())).collect();
        let gone: Vec<u32> = self
            .traffic
            .attached
            .iter()
            .filter(|(i, a)| present.get(i) != Some(&a.name.as_str()))
            .map(|(i, _)| *i)
            .collect();
        for ifindex in gone {
            let Some(old) = self.traffic.attached.remove(&ifindex) else {
                continue;
            };
            detach_one(&mut self.ebpf, old.links);
            self.forget_conversations(ifindex);
            changes.removed.push((ifindex, old.name));
        }
        let started = std::time::Instant::now();
        for (ifindex, name) in present {
            if self.traffic.attached.contains_key(&ifindex) {
                continue;
            }
            if started.elapsed() >= ATTACH_BUDGET {
                changes.pending += 1;
                continue;
            }
            // The entry must exist before packets flow: the programs never insert.
            if let Err(e) = self.zero_conversations(ifindex) {
                changes.failed.push((name.to_owned(), e.to_string()));
                continue;
            }
            match attach_one(&mut self.ebpf, mode, ifindex) {
                Ok(links) => {
                    changes.added.push((ifindex, name.to_owned()));
                    self.traffic.attached.insert(
                        ifindex,
                        Attached {
                            name: name.to_owned(),
                            links,
                        },
                    );
                }
                Err(e) => {
                    self.forget_conversations(ifindex);
                    changes.failed.push((name.to_owned(), e.to_string()));
                }
            }
        }
        changes
    }

    /// Creates `ifindex`'s conversation counters, zeroed.
    fn zero_conversations(&mut self, ifindex: u32) -> Result<(), WatchError> {
        let mut map = hash_mut::<u32, Conversations>(&mut self.ebpf, CONVERSATIONS_MAP)?;
        map.insert(&ifindex, &Conversations::default(), 0)
            .map_err(|e| WatchError::Counters(maps::map_error(CONVERSATIONS_MAP)(e)))
    }

    /// Removes `ifindex`'s conversation counters (already gone is fine).
    fn forget_conversations(&mut self, ifindex: u32) {
        if let Ok(mut map) = hash_mut::<u32, Conversations>(&mut self.ebpf, CONVERSATIONS_MAP) {
            let _ = map.remove(&ifindex);
        }
    }

    /// Conversations per watched interface: ifindex → (name, counters).
    pub(super) fn conversations(
        &self,
    ) -> Result<BTreeMap<u32, (String, Conversations)>, MapReadError> {
        let counts: BTreeMap<u32, Conversations> =
            maps::hash_entries(&self.ebpf, CONVERSATIONS_MAP)?;
        Ok(counts
            .into_iter()
            .filter_map(|(i, c)| Some((i, (self.traffic.attached.get(&i)?.name.clone(), c))))
            .collect())
    }

    /// DNS counters per server address.
    pub(super) fn dns_servers(&self) -> Result<BTreeMap<[u8; 16], DnsCounters>, MapReadError> {
        maps::hash_entries(&self.ebpf, DNS_SERVERS_MAP)
    }

    /// Takes what stayed unanswered past its timeout out of the pending maps,
    /// and the refused-handshake counts out of theirs (so that it never fills
    /// with remotes of the past; a refusal counted between reading a key and
    /// deleting it is lost).
    pub(super) fn take_conversations(&mut self, timeouts: Timeouts) -> Result<Taken, MapReadError> {
        let now = monotonic_ns();
        let cutoff = |d: std::time::Duration| {
            now.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        let mut refusals = hash_mut::<Remote, u64>(&mut self.ebpf, REFUSALS_MAP)?;
        let refused: BTreeMap<Remote, u64> = refusals.iter().filter_map(Result::ok).collect();
        for key in refused.keys() {
            let _ = refusals.remove(key);
        }
        Ok(Taken {
            dns: take_older(&mut self.ebpf, DNS_PENDING_MAP, cutoff(timeouts.dns))?,
            handshakes: take_older(&mut self.ebpf, HANDSHAKES_MAP, cutoff(timeouts.handshake))?,
            refused,
        })
    }
}

/// How long a query or handshake may wait for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A DNS query's response.
    pub dns: std::time::Duration,
    /// A SYN's SYN-ACK or RST.
    pub handshake: std::time::Duration,
}

/// What one tick takes out of the conversation maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// DNS queries no response came for within their timeout.
    pub dns: Vec<DnsQueryKey>,
    /// Handshakes no SYN-ACK or RST came for within their timeout.
    pub handshakes: Vec<HandshakeKey>,
    /// Handshakes refused since the last take, per remote address and port.
    pub refused: BTreeMap<Remote, u64>,
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns()`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The writable hash `name`.
fn hash_mut<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>, MapReadError> {
    let map = ebpf.map_mut(name).ok_or_else(|| maps::missing(name))?;
    HashMap::try_from(map).map_err(maps::map_error(name))
}

/// Removes and returns the keys of pending map `name` sent before `cutoff`.
fn take_older<K: aya::Pod + Ord>(
    ebpf: &mut Ebpf,
    name: &'static str,
    cutoff: u64,
) -> Result<Vec<K>, MapReadError> {
    let mut map = hash_mut::<K, Pending>(ebpf, name)?;
    let old: Vec<K> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, p)| p.sent_ns < cutoff)
        .map(|(k, _)| k)
        .collect();
    for key in &old {
        let _ = map.remove(key);
    }
    Ok(old)
}
