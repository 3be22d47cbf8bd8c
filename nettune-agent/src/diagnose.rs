//! `nettune diagnose`: the guide's diagnostics, automated — the tuning rules'
//! observations ([`crate::tune::rules`]) on two readings of the node, mapped to
//! the guide's "common problems" table with the concrete fix for this node.
//!
//! By default it needs no eBPF: everything comes from procfs (the kernel's own
//! counters) and `sock_diag` (listening sockets), so it runs anywhere, as root or
//! not (then it sees the host namespace only), in about the time of one
//! measurement interval. [`gather`] does the I/O, through [`System`] and the same
//! per-namespace reader the agent uses, and builds the same [`Snapshot`] the
//! agent serves. With `--with-probes` (root), [`gather_with_probes`] runs the
//! agent's own pipeline instead — the probes attached for the interval — so the
//! findings also see drops by reason and each pod's DNS, handshakes and ICMP
//! errors. [`findings`] is a pure function of the Snapshot, with no rule,
//! threshold, sysctl name or guide value of its own.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use crate::{
    collect::{Collector, identity, sample},
    config::TuningConfig,
    model::{
        drop_reasons::DropReasons,
        probes::Report,
        sample::{Attribution, ListenerSample, NetnsSample, Sample},
        snapshot::{Context, Snapshot},
        tuning::Mode,
    },
    probes::{MapReadError, ProbeSource},
    sys::{Namespace, System, procfs},
    tune::rules::{self, Severity},
};

/// One problem, with the evidence and the fix.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// The rule that found it, e.g. `conntrack_full`.
    pub id: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The guide's "common problems" row this belongs to.
    pub problem: &'static str,
    /// The figures that show it.
    pub evidence: String,
    /// What to do, with this node's values.
    pub fix: String,
}

/// Every namespace's counters at one moment; with `listeners`, also the
/// listening sockets of `listeners` namespaces and their sysctls.
fn read(system: &impl System, namespaces: &BTreeMap<u32, Namespace>, listeners: &[u32]) -> Sample {
    let mut sample = Sample {
        conntrack_max: system
            .read_proc(sample::CONNTRACK_MAX)
            .ok()
            .and_then(|t| procfs::number(&t)),
        softnet_dropped: system
            .read_proc(sample::SOFTNET_STAT)
            .ok()
            .map(|t| procfs::softnet_dropped(&t)),
        ..Sample::default()
    };
    for ns in namespaces.values() {
        let mut counts = NetnsSample {
            workload: Some(identity::identify(system, ns, None)),
            process: ns.process.clone(),
            ..NetnsSample::default()
        };
        sample::read_netns_files(system, ns, &mut counts);
        if listeners.contains(&ns.inode)
            && let Ok(scan) = system.scan_listeners(ns)
        {
            counts.netns_sysctls = Some(scan.sysctls);
            sample
                .listeners
                .extend(scan.sockets.iter().map(|s| ListenerSample {
                    netns: ns.inode,
                    address: s.address,
                    port: s.port,
                    inode: s.inode,
                    queue: s.queue,
                    limit: s.limit,
                    requested: None,
                    capped_by: None,
                    process: None,
                    overflows: 0,
                    attribution: Attribution::AtLimit,
                }));
        }
        sample.netns.insert(ns.inode, counts);
    }
    sample
}

/// Measures this node over `interval`: the Snapshot of two readings.
pub fn gather(system: &impl System, interval: Duration) -> Snapshot {
    let namespaces = system.namespaces();
    let before = read(system, &namespaces, &[]);
    std::thread::sleep(interval);
    // The listeners of the host and of every namespace whose queues overflowed.
    let overflows = |s: &Sample, inode: u32| {
        s.netns
            .get(&inode)
            .and_then(|n| n.listen)
            .map_or(0, |l| l.overflows)
    };
    let probe = read(system, &namespaces, &[]);
    let look: Vec<u32> = namespaces
        .values()
        .filter(|ns| ns.is_host || overflows(&probe, ns.inode) > overflows(&before, ns.inode))
        .map(|ns| ns.inode)
        .collect();
    let after = read(system, &namespaces, &look);
    let text = |path: &str| {
        system
            .read_proc(path)
            .map_or_else(|_| "unknown".into(), |t| t.trim().to_owned())
    };
    let (node, kernel) = (text("sys/kernel/hostname"), text("sys/kernel/osrelease"));
    let (report, reasons) = (Report::default(), DropReasons::default());
    let context = Context {
        taken_at_unix_seconds: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        node: &node,
        kernel: &kernel,
        mode: Mode::Observe,
        uptime_seconds: interval.as_secs_f64(),
        collection_seconds: 0.0,
        report: &report,
        reasons: &reasons,
        identity_sources: &[],
    };
    let mut snapshot = Snapshot::build(&after, Some(&before), interval.as_secs_f64(), &context);
    if let Ok(links) = system.host_links() {
        snapshot.context = Some(crate::collect::context::read(system, &links));
    }
    snapshot
}

/// Measures this node over `interval` with the agent's pipeline: a first tick
/// attaches the pods' tc programs (catching up until every veth is watched),
/// the Snapshot is the tick `interval` later.
pub fn gather_with_probes<P: ProbeSource, S: System>(
    collector: &mut Collector<P, S>,
    interval: Duration,
) -> Result<Snapshot, MapReadError> {
    collector.tick()?;
    // Bounded: each pass attaches for at most the attach budget.
    for _ in 0..1000 {
        if collector.catch_up().is_none_or(|c| c.pending == 0) {
            break;
        }
    }
    collector.tick()?;
    std::thread::sleep(interval);
    Ok(collector.tick()?.snapshot)
}

/// The problems the Snapshot shows, worst first: every rule's observations.
pub fn findings(snapshot: &Snapshot, config: &TuningConfig) -> Vec<Finding> {
    let mut out: Vec<Finding> = rules::observe(snapshot, config)
        .into_iter()
        .map(|o| Finding {
            id: o.rule.name,
            severity: o.severity,
            problem: o.rule.problem,
            evidence: o.evidence,
            fix: o.fix,
        })
        .collect();
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

#[cfg(test)]
mod tests;
