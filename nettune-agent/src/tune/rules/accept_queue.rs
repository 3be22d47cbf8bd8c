//! The accept and SYN queues, decided from the listeners themselves.
//!
//! Two kernel facts make raising `net.core.somaxconn` futile more often than
//! not:
//! - a listener's accept-queue limit is `min(backlog passed to listen(),
//!   somaxconn)`: an application that asked for 511 (nginx), 128 or 50 (Java)
//!   gains nothing from a higher somaxconn;
//! - the limit is fixed when `listen()` is called: a raise changes nothing for
//!   sockets already listening until the application listens again.
//!
//! So the somaxconn rule raises only for an overflowing listener that asked for
//! more than somaxconn, says that it keeps its old limit until it listens again
//! (the tuner waits for that before judging the raise); for one that asked for
//! less, it advises the application's backlog instead of writing anything.
//!
//! Since Linux 4.4 the SYN queue is bounded by the same per-socket limit
//! (`inet_csk_reqsk_queue_is_full` compares with `sk_max_ack_backlog`), and
//! `TCPReqQFullDrop` counts SYNs dropped there with syncookies off.
//! `tcp_max_syn_backlog` does not set that limit, so that rule advises
//! syncookies and the listener's backlog rather than raising it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Change, Observation, Place, Plan, Rule, Scene, Severity, counted};
use crate::model::{
    snapshot::{Listener, Snapshot, WorkloadFigures},
    tunables::{SOMAXCONN, TCP_MAX_SYN_BACKLOG, TCP_SYNCOOKIES},
};

/// The two facts about accept queues that make raising somaxconn futile so
/// often, as `diagnose` prints them under the listeners.
pub const LISTEN_FACTS: &str = "\
A listener's accept queue holds min(the backlog its application passed to listen(), \
net.core.somaxconn): raising somaxconn does nothing for a socket whose own backlog is \
smaller (nginx asks for 511, Java for 50). And the limit is fixed when listen() is called: \
a socket already listening keeps its limit until the application listens again (a restart).";

/// A listener that a somaxconn raise lifts only once it listens again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingListener {
    /// Its namespace inode.
    pub netns: u32,
    /// Its socket inode (a new socket on the port means it listened again).
    pub inode: u32,
    /// Its port.
    pub port: u16,
    /// The process that listened, when known.
    pub process: Option<String>,
    /// Its limit when somaxconn was raised.
    pub limit: u32,
}

impl fmt::Display for WaitingListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}", self.port)?;
        if let Some(p) = &self.process {
            write!(f, " ({p})")?;
        }
        Ok(())
    }
}

impl WaitingListener {
    /// Whether it still has its old limit in `snapshot`: the same socket is there
    /// with the same limit. A new socket on the port, or a higher limit, means it
    /// listened again; no socket on the port means there is nothing to wait for.
    pub fn still_waiting(&self, snapshot: &Snapshot) -> bool {
        snapshot
            .listeners
            .iter()
            .any(|l| l.netns == self.netns && l.inode == self.inode && l.limit <= self.limit)
    }
}

/// What the listeners of a namespace say about its overflows.
enum Finding<'a> {
    /// Not enough to go on.
    Unknown(String),
    /// Overflowing listeners that asked for no more than somaxconn.
    SelfLimited(Vec<&'a Listener>, u32),
    /// Overflowing listeners that asked for more than somaxconn (or, asking
    /// unknown, sit at somaxconn).
    Capped(Vec<&'a Listener>, u32),
}

/// `port 8080 (server)`.
fn name(l: &Listener) -> String {
    match &l.process {
        Some(p) => format!("port {} ({p})", l.port),
        None => format!("port {}", l.port),
    }
}

/// What a listener asked for and got.
fn describe(l: &Listener) -> String {
    match (l.requested_backlog, l.capped_by_somaxconn) {
        (Some(r), _) => format!("{} asked listen() for {r} and got {}", name(l), l.limit),
        (None, Some(s)) => format!(
            "{} asked listen() for at least the {s} somaxconn allowed when it listened, and got \
             {}",
            name(l),
            l.limit
        ),
        (None, None) => format!(
            "{} has a limit of {} (what it asked for is unknown: it listened before nettune \
             looked at its namespace)",
            name(l),
            l.limit
        ),
    }
}

/// Whether somaxconn caps what `l` asked for (so raising it helps once it
/// listens again): it asked for more than `somaxconn`, or somaxconn capped it when
/// it listened; not knowing, a limit at somaxconn says it may have.
fn capped(l: &Listener, somaxconn: u32) -> bool {
    match (l.requested_backlog, l.capped_by_somaxconn) {
        (Some(r), _) => r > somaxconn,
        (None, Some(_)) => true,
        (None, None) => l.limit >= somaxconn,
    }
}

fn find<'a>(snapshot: &'a Snapshot, w: &WorkloadFigures) -> Finding<'a> {
    let Some(somaxconn) = w.netns_sysctls.and_then(|s| s.somaxconn) else {
        return Finding::Unknown(format!(
            "the listeners of {} have not been looked at yet",
            w.workload.pod
        ));
    };
    let over: Vec<&Listener> = snapshot
        .listeners
        .iter()
        .filter(|l| l.netns == w.netns && (l.overflows.per_second > 0.0 || l.queue >= l.limit))
        .collect();
    if over.is_empty() {
        return Finding::Unknown(format!(
            "no listener of {} was found at its limit yet: somaxconn is raised only for a \
             listener nettune can name",
            w.workload.pod
        ));
    }
    let capped: Vec<&Listener> = over
        .iter()
        .copied()
        .filter(|l| capped(l, somaxconn))
        .collect();
    if capped.is_empty() {
        Finding::SelfLimited(over, somaxconn)
    } else {
        Finding::Capped(capped, somaxconn)
    }
}

/// The advice for listeners whose own backlog is the cap.
fn raise_the_backlog(listeners: &[&Listener], somaxconn: u32) -> String {
    let who: Vec<String> = listeners.iter().map(|l| describe(l)).collect();
    let mut advice = format!(
        "{}; somaxconn is already {somaxconn}, so raising it changes nothing for {}: raise the \
         application's listen backlog to {somaxconn} (nginx: `listen … backlog={somaxconn}`; \
         Java: `new ServerSocket(port, {somaxconn})`; Node.js: `server.listen(port, host, \
         {somaxconn})`)",
        who.join("; "),
        if listeners.len() == 1 { "it" } else { "them" }
    );
    if listeners
        .iter()
        .any(|l| l.requested_backlog == Some(somaxconn))
    {
        advice.push_str(
            "; an application that asks for exactly somaxconn may size its backlog from it \
             (Go does): then raise somaxconn yourself and restart it",
        );
    }
    advice
}

/// `; full: 0.0.0.0:8080 (queue 9 of 8)` for `w`'s listeners at their limit.
fn full_queues(snapshot: &Snapshot, w: &WorkloadFigures) -> String {
    let full: Vec<String> = snapshot
        .listeners
        .iter()
        .filter(|l| l.netns == w.netns && l.queue >= l.limit)
        .map(|l| {
            format!(
                "{} (queue {} of {})",
                std::net::SocketAddr::new(l.address, l.port),
                l.queue,
                l.limit
            )
        })
        .collect();
    if full.is_empty() {
        String::new()
    } else {
        format!("; full: {}", full.join(", "))
    }
}

/// Accept queues overflow: raise somaxconn only for listeners it caps.
pub static LISTEN_OVERFLOWS: Rule = Rule {
    name: "listen_overflows",
    problem: "connection timeouts: accept queues overflow",
    evidence_name: "listen overflows",
    sysctls: &[&SOMAXCONN],
    evidence: |netns, snapshot, _| Some(counted(&snapshot.workload(netns)?.listen_overflows)),
    observe: observe_overflows,
    when_ineffective: "the application does not accept connections as fast as they come: look \
                       at its accept loop and worker count",
};

fn observe_overflows(scene: &Scene<'_>) -> Option<Observation> {
    let (snapshot, w) = (scene.snapshot, scene.workload);
    if w.listen_overflows.per_second <= 0.0 {
        return None;
    }
    let rate = format!(
        "{:.1} listen overflows/s in {}",
        w.listen_overflows.per_second, w.workload.pod
    );
    let mut change = Change::raise(&SOMAXCONN, Place::Workload);
    let mut evidence = format!("{rate}{}", full_queues(snapshot, w));
    let fix = match find(snapshot, w) {
        Finding::Unknown(reason) => {
            change.plan = Plan::Hold(reason.clone());
            format!(
                "{reason}; watch `ss -lnt` (Recv-Q is the queue, Send-Q its limit) or run \
                 `nettune top` (l: listeners): the limit is min(listen() backlog, somaxconn) \
                 and is fixed until the application listens again"
            )
        }
        Finding::SelfLimited(listeners, somaxconn) => {
            let advice = raise_the_backlog(&listeners, somaxconn);
            change.plan = Plan::Futile(advice.clone());
            advice
        }
        Finding::Capped(listeners, somaxconn) => {
            let who: Vec<String> = listeners
                .iter()
                .map(|l| match (l.requested_backlog, l.capped_by_somaxconn) {
                    (Some(r), _) => format!(
                        "{} asked listen() for {r} but somaxconn {somaxconn} caps it at {}",
                        name(l),
                        l.limit
                    ),
                    (None, Some(s)) => format!(
                        "{} asked listen() for more than the {s} somaxconn allowed when it \
                         listened",
                        name(l)
                    ),
                    (None, None) => format!("{} is capped at somaxconn ({})", name(l), l.limit),
                })
                .collect();
            evidence = format!(
                "{rate}: {}; a listening socket keeps its limit until the application listens \
                 again",
                who.join("; ")
            );
            change.waiting = listeners
                .iter()
                .map(|l| WaitingListener {
                    netns: l.netns,
                    inode: l.inode,
                    port: l.port,
                    process: l.process.clone(),
                    limit: l.limit,
                })
                .collect();
            let ceiling = SOMAXCONN.ceiling.map_or_else(String::new, |c| {
                format!(
                    " (nettune goes up to {} on the node, {} in pods)",
                    c.node, c.pod
                )
            });
            format!(
                "raise {}{ceiling} and make sure the application asks listen() for as much — and \
                 restart it: a socket keeps its limit until the application listens again",
                SOMAXCONN.name
            )
        }
    };
    Some(Observation {
        rule: &LISTEN_OVERFLOWS,
        netns: w.netns,
        severity: Severity::Warning,
        evidence,
        fix,
        changes: vec![change],
    })
}

/// SYNs dropped on full SYN queues: always advice, since the listener's own
/// limit, not `tcp_max_syn_backlog`, bounds the queue.
pub static SYN_QUEUE_FULL: Rule = Rule {
    name: "syn_queue_full",
    problem: "connection timeouts: SYNs dropped on full SYN queues",
    evidence_name: "SYN-queue drops",
    sysctls: &[&TCP_MAX_SYN_BACKLOG],
    evidence: |netns, snapshot, _| Some(counted(&snapshot.workload(netns)?.syn_queue_full_drops)),
    observe: observe_syn_queue,
    when_ineffective: "a SYN flood or a listener that does not keep up: turn \
                       net.ipv4.tcp_syncookies on and raise the listener's backlog",
};

fn observe_syn_queue(scene: &Scene<'_>) -> Option<Observation> {
    let (snapshot, w) = (scene.snapshot, scene.workload);
    if w.syn_queue_full_drops.per_second <= 0.0 {
        return None;
    }
    let mut listeners: Vec<&Listener> = snapshot
        .listeners
        .iter()
        .filter(|l| l.netns == w.netns)
        .collect();
    listeners.sort_by_key(|l| l.limit);
    let limits: Vec<String> = listeners
        .iter()
        .take(3)
        .map(|l| format!("{} limit {}", name(l), l.limit))
        .collect();
    let syncookies = w
        .netns_sysctls
        .and_then(|s| s.syncookies)
        .map_or_else(|| "off".to_owned(), |v| v.to_string());
    let advice = format!(
        "a listener's SYN queue is bounded by its own limit, min(listen() backlog, somaxconn){}, \
         and SYNs beyond it are dropped while {} is {syncookies}; {} does not set that limit: \
         turn tcp_syncookies on (1) and raise the listener's backlog",
        if limits.is_empty() {
            String::new()
        } else {
            format!(" ({})", limits.join(", "))
        },
        TCP_SYNCOOKIES.name,
        TCP_MAX_SYN_BACKLOG.name
    );
    Some(Observation {
        rule: &SYN_QUEUE_FULL,
        netns: w.netns,
        severity: Severity::Warning,
        evidence: format!(
            "{:.1} SYNs/s dropped on a full SYN queue in {}",
            w.syn_queue_full_drops.per_second, w.workload.pod
        ),
        fix: advice.clone(),
        changes: vec![Change {
            plan: Plan::Futile(advice),
            ..Change::raise(&TCP_MAX_SYN_BACKLOG, Place::Workload)
        }],
    })
}
