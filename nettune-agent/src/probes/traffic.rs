//! The pod-traffic signal: tc programs on every veth of the host namespace (the
//! host side of a pod's interface with most CNIs), attached when an interface
//! appears and detached when it goes.
//!
//! Chain: TCX links (6.6+), then classic clsact filters through netlink. The maps
//! are keyed by the host-namespace ifindex, unique within that namespace.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::PerCpuValues,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttach},
    },
    util::KernelVersion,
};
use nettune_common::{IfaceTraffic, traffic::IFACE_TRAFFIC_MAP};
use serde::Serialize;

use crate::{
    model::probes::{SignalStatus, Variant},
    sys::Link,
};

use super::{
    LoadError, Probes,
    chain::{AttachContext, Attempt, attach_chain, error_chain, program},
    maps,
};

/// Signal name in reports and metrics.
pub const SIGNAL: &str = "pod_traffic";

const INGRESS: &str = "pod_ingress";
const EGRESS: &str = "pod_egress";

const CHAIN: [(Variant, Attempt); 2] = [
    (Variant::Tcx, |ebpf, _| {
        let version = KernelVersion::current().map_err(|e| e.to_string())?;
        if version < KernelVersion::new(6, 6, 0) {
            return Err(format!("kernel {version:?} predates TCX (6.6)"));
        }
        load_programs(ebpf)
    }),
    (Variant::Clsact, |ebpf, _| load_programs(ebpf)),
];

pub(super) fn attach(ebpf: &mut Ebpf, context: &AttachContext) -> SignalStatus {
    attach_chain(ebpf, context, SIGNAL, &CHAIN)
}

/// Loads both classifiers; they are attached per interface by [`Watcher`].
fn load_programs(ebpf: &mut Ebpf) -> Result<(), String> {
    for name in [INGRESS, EGRESS] {
        let p: &mut SchedClassifier = program(ebpf, name)?;
        if p.fd().is_err() {
            p.load()
                .map_err(|e| format!("load {name}: {}", error_chain(&e)))?;
        }
    }
    Ok(())
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
}

fn attach_one(
    ebpf: &mut Ebpf,
    mode: Variant,
    ifindex: u32,
) -> Result<[SchedClassifierLinkId; 2], String> {
    let iface = aya::programs::NetworkInterface::Index(ifindex);
    if mode == Variant::Clsact {
        // EEXIST: the qdisc is already there (ours from before, or the CNI's).
        if let Err(e) = tc::qdisc_add_clsact(iface) {
            let text = error_chain(&e);
            if !text.contains("exists") {
                return Err(format!("adding clsact: {text}"));
            }
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
                return Err(format!("{name}: {}", error_chain(&e)));
            }
        }
    }
    let egress = links.pop().ok_or("no egress link")?;
    let ingress = links.pop().ok_or("no ingress link")?;
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
            self.forget_traffic(ifindex);
            changes.removed.push((ifindex, old.name));
        }
        for (ifindex, name) in present {
            if self.traffic.attached.contains_key(&ifindex) {
                continue;
            }
            // The entry must exist before packets flow: the programs never insert.
            if let Err(e) = self.zero_traffic(ifindex) {
                changes.failed.push((name.to_owned(), e));
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
                    self.forget_traffic(ifindex);
                    changes.failed.push((name.to_owned(), e));
                }
            }
        }
        changes
    }

    /// Creates `ifindex`'s traffic entry, zeroed on every CPU.
    fn zero_traffic(&mut self, ifindex: u32) -> Result<(), String> {
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| e.to_string())?;
        let zero = PerCpuValues::try_from(vec![IfaceTraffic::default(); nr_cpus.get() as usize])
            .map_err(|e| e.to_string())?;
        maps::per_cpu_hash_mut::<u32, IfaceTraffic>(&mut self.ebpf, IFACE_TRAFFIC_MAP)
            .map_err(|e| e.to_string())?
            .insert(&ifindex, zero, 0)
            .map_err(|e| e.to_string())
    }

    /// Removes `ifindex`'s traffic entry (already gone is fine).
    fn forget_traffic(&mut self, ifindex: u32) {
        if let Ok(mut map) =
            maps::per_cpu_hash_mut::<u32, IfaceTraffic>(&mut self.ebpf, IFACE_TRAFFIC_MAP)
        {
            let _ = map.remove(&ifindex);
        }
    }

    /// Traffic per watched interface: ifindex → (name, counters summed over CPUs).
    pub(super) fn interface_traffic(
        &self,
    ) -> Result<BTreeMap<u32, (String, IfaceTraffic)>, LoadError> {
        let counts =
            maps::per_cpu_hash(&self.ebpf, IFACE_TRAFFIC_MAP, IfaceTraffic::saturating_add)?;
        Ok(counts
            .into_iter()
            .filter_map(|(i, t)| Some((i, (self.traffic.attached.get(&i)?.name.clone(), t))))
            .collect())
    }
}
