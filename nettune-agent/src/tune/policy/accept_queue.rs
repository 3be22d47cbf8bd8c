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

use super::{Plan, Proposal, Rule};
use crate::{
    model::{
        snapshot::{Listener, Snapshot, WorkloadFigures},
        tuning::Target,
    },
    tune::tunables::{SOMAXCONN, TCP_MAX_SYN_BACKLOG},
};

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
    match l.requested_backlog {
        Some(r) => format!("{} asked listen() for {r} and got {}", name(l), l.limit),
        None => format!(
            "{} has a limit of {} (what it asked for is unknown: it listened before nettune \
             started)",
            name(l),
            l.limit
        ),
    }
}

fn find<'a>(snapshot: &'a Snapshot, w: &WorkloadFigures) -> Finding<'a> {
    let Some(somaxconn) = w.listen_sysctls.and_then(|s| s.somaxconn) else {
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
        .filter(|l| {
            l.requested_backlog
                .map_or(l.limit >= somaxconn, |r| r > somaxconn)
        })
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

/// The somaxconn proposal for `w`'s accept-queue overflows.
pub(super) fn listen_overflows(
    snapshot: &Snapshot,
    w: &WorkloadFigures,
    target: Option<Target>,
) -> Proposal {
    let rate = format!(
        "{:.1} listen overflows/s in {}",
        w.listen_overflows.per_second, w.workload.pod
    );
    let mut p = Proposal {
        rule: Rule::ListenOverflows,
        sysctl: &SOMAXCONN,
        target,
        workload: w.workload.pod.clone(),
        netns: w.netns,
        evidence: rate.clone(),
        plan: Plan::Raise,
        waiting: Vec::new(),
    };
    match find(snapshot, w) {
        Finding::Unknown(reason) => p.plan = Plan::Hold(reason),
        Finding::SelfLimited(listeners, somaxconn) => {
            p.plan = Plan::Futile(raise_the_backlog(&listeners, somaxconn));
        }
        Finding::Capped(listeners, somaxconn) => {
            let who: Vec<String> = listeners
                .iter()
                .map(|l| match l.requested_backlog {
                    Some(r) => format!(
                        "{} asked listen() for {r} but somaxconn {somaxconn} caps it at {}",
                        name(l),
                        l.limit
                    ),
                    None => format!("{} is capped at somaxconn ({})", name(l), l.limit),
                })
                .collect();
            p.evidence = format!(
                "{rate}: {}; a listening socket keeps its limit until the application listens \
                 again",
                who.join("; ")
            );
            p.waiting = listeners
                .iter()
                .map(|l| WaitingListener {
                    netns: l.netns,
                    inode: l.inode,
                    port: l.port,
                    process: l.process.clone(),
                    limit: l.limit,
                })
                .collect();
        }
    }
    p
}

/// The `tcp_max_syn_backlog` proposal for `w`'s SYN-queue drops: always advice.
pub(super) fn syn_queue_full(
    snapshot: &Snapshot,
    w: &WorkloadFigures,
    target: Option<Target>,
) -> Proposal {
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
        .listen_sysctls
        .and_then(|s| s.syncookies)
        .map_or_else(|| "off".to_owned(), |v| v.to_string());
    let advice = format!(
        "a listener's SYN queue is bounded by its own limit, min(listen() backlog, somaxconn){}, \
         and SYNs beyond it are dropped while net.ipv4.tcp_syncookies is {syncookies}; \
         tcp_max_syn_backlog does not set that limit: turn tcp_syncookies on (1) and raise the \
         listener's backlog",
        if limits.is_empty() {
            String::new()
        } else {
            format!(" ({})", limits.join(", "))
        }
    );
    Proposal {
        rule: Rule::SynQueueFull,
        sysctl: &TCP_MAX_SYN_BACKLOG,
        target,
        workload: w.workload.pod.clone(),
        netns: w.netns,
        evidence: format!(
            "{:.1} SYNs/s dropped on a full SYN queue in {}",
            w.syn_queue_full_drops.per_second, w.workload.pod
        ),
        plan: Plan::Futile(advice),
        waiting: Vec::new(),
    }
}
