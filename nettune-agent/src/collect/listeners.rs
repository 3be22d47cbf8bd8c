//! Listeners: the listening TCP sockets of the namespaces worth a look, each
//! with the backlog its application asked `listen()` for, the limit it got, its
//! accept queue, and its share of the namespace's overflows.
//!
//! **What asked for what.** `listen()` grants min(asked, somaxconn), and
//! `sock_diag` reports the limit granted. A listener that was not there at the
//! namespace's previous look, while somaxconn read the same at both looks, got
//! it under that somaxconn: a limit below it is exactly what the application
//! asked for, a limit equal to it means it asked for at least that. Its process
//! is the one holding the socket (`/proc/<pid>/fd`, a few namespaces a tick),
//! which also names the server that forked after `listen()` and exited (nginx's
//! daemon mode, httpd, HAProxy `-D`): the socket stays with its children. While
//! the on-demand `inet_sock_set_state` program runs (ports crowded somewhere),
//! the kernel side records listeners as they start, keyed by (namespace, socket
//! inode), with the somaxconn of that moment and the calling process; the
//! tracker takes those records first and has the probes forget them. A socket
//! that listened before nettune's first look at its namespace has no origin:
//! what it asked for is unknown, while its limit and queue are still exact. (A
//! somaxconn written and written back between two looks goes unseen: the
//! sysctl writers table would show it.)
//!
//! **Which namespaces are looked at** (a `sock_diag` dump inside a namespace
//! costs a thread and a netlink exchange, so the idle cost must not grow with the
//! number of namespaces): those whose `ListenOverflows`, `ListenDrops` or
//! `TCPReqQFullDrop` moved since their last look (at most
//! [`MAX_SCANS_PER_TICK`], the biggest movers first; the others keep their
//! lead for the next tick), those where a `listen()` was just seen or whose
//! ports look crowded under the default range (`port_watch` needs their own),
//! those that appeared since the last tick (a new pod's namespace, looked at before its
//! application listens), and [`BACKGROUND_SCANS_PER_TICK`] more in round-robin
//! order. A namespace not looked at this tick keeps the listeners of its last
//! look.
//!
//! **Whose overflows.** Where the `listen_overflow` signal runs per socket
//! (fentry or kprobe), its map counts each (namespace, port) exactly. Elsewhere
//! the namespace's `ListenOverflows` delta since its last look is split among the
//! listeners found at their limit (queue ≥ limit) in this look; a delta with no
//! listener at its limit stays with the namespace alone. Each listener says which
//! method counted it ([`Attribution`]).

use std::collections::{BTreeMap, BTreeSet};

use nettune_common::{ListenKey, ListenOrigin, ListenOverflow, ListenSocket};

use crate::{
    model::{
        sample::{Attribution, ListenCounters, ListenerSample, NetnsSysctls, Sample},
        text::printable_c,
    },
    sys::{ListeningSocket, Namespace, System},
};

/// Namespaces whose counters moved looked at per tick, at most.
pub const MAX_SCANS_PER_TICK: usize = 16;
/// Namespaces looked at per tick for no reason but their turn.
pub const BACKGROUND_SCANS_PER_TICK: usize = 2;
/// Listeners kept per namespace (the fullest queues first).
pub const MAX_LISTENERS_PER_NAMESPACE: usize = 256;
/// Listen origins remembered (socket inode → limit, somaxconn, process).
pub const MAX_ORIGINS: usize = 8192;
/// Namespaces whose new listeners' processes are looked up per tick (each a
/// pass over `/proc`).
pub const OWNER_LOOKUPS_PER_TICK: usize = 2;

/// How a socket started listening, and who listened.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    /// The socket's namespace.
    netns: u32,
    /// Its limit when it started listening.
    limit: u32,
    /// The namespace's somaxconn at that moment.
    somaxconn: u32,
    /// The command of the process that listened.
    process: Option<String>,
    /// The tick it was taken in (newer origins survive eviction).
    tick: u64,
}

/// One look at a namespace.
#[derive(Clone, Debug, Default)]
struct Look {
    sockets: Vec<ListeningSocket>,
    sysctls: NetnsSysctls,
}

/// Listener state carried from tick to tick.
#[derive(Debug, Default)]
pub struct ListenerTracker {
    tick: u64,
    /// Socket inode → who listened.
    origins: BTreeMap<u32, Origin>,
    /// Namespace → its last look.
    looks: BTreeMap<u32, Look>,
    /// Namespace → its listen counters at its last look (or first sight).
    seen: BTreeMap<u32, ListenCounters>,
    /// (namespace, socket inode) → overflows attributed at the limit so far.
    at_limit: BTreeMap<(u32, u32), u64>,
    /// The last namespace looked at for its turn.
    cursor: u32,
    /// Every namespace seen so far (one not in it is new).
    known: BTreeSet<u32>,
    /// Namespace → inferred origins whose process is still to be looked up.
    unnamed: BTreeMap<u32, BTreeSet<u32>>,
}

/// What the probes gave the tracker this tick.
#[derive(Debug, Default)]
pub struct ListenReadings {
    /// Sockets that started listening since the last tick, and how.
    pub origins: BTreeMap<ListenSocket, ListenOrigin>,
    /// Overflows per (namespace, port), when a per-socket variant is attached.
    pub exact: Option<BTreeMap<ListenKey, ListenOverflow>>,
    /// Namespaces whose sysctls are wanted first (their ports look crowded and
    /// their range is unknown: `collect::port_watch`).
    pub look_at: BTreeSet<u32>,
}

impl ListenerTracker {
    /// Updates the tracker from one tick and fills `sample.listeners` and each
    /// namespace's `netns_sysctls`; namespaces in `ignored` (pods annotated
    /// `nettune.io/ignore`) are treated as absent. Returns the listen origins
    /// taken, for the probes to forget.
    pub fn update(
        &mut self,
        system: &impl System,
        namespaces: &BTreeMap<u32, Namespace>,
        ignored: &BTreeSet<u32>,
        sample: &mut Sample,
        readings: ListenReadings,
    ) -> Vec<ListenSocket> {
        self.tick += 1;
        let kept;
        let namespaces = if ignored.is_empty() {
            namespaces
        } else {
            kept = namespaces
                .iter()
                .filter(|(inode, _)| !ignored.contains(inode))
                .map(|(inode, ns)| (*inode, ns.clone()))
                .collect();
            &kept
        };
        self.forget_departed(namespaces);
        let handled: Vec<ListenSocket> = readings.origins.keys().copied().collect();
        let mut listened_in = self.take(&readings.origins);
        listened_in.extend(&readings.look_at);
        for inode in self.choose(namespaces, sample, &listened_in) {
            let Some(ns) = namespaces.get(&inode) else {
                continue;
            };
            match system.scan_listeners(ns) {
                Ok(scan) => {
                    let counters = sample
                        .netns
                        .get(&inode)
                        .and_then(|n| n.listen)
                        .unwrap_or_default();
                    self.infer_origins(inode, &scan.sockets, &scan.sysctls);
                    self.record(inode, scan.sockets, scan.sysctls, counters);
                }
                Err(e) => {
                    log::debug!("cannot list the listeners of netns {inode}: {e}");
                    self.looks.remove(&inode);
                }
            }
        }
        self.name_owners(system);
        self.fill(sample, readings.exact.as_ref());
        handled
    }

    /// Listeners that were not there at the namespace's previous look, while
    /// somaxconn read the same at both: each got min(asked, that somaxconn).
    /// Nothing is inferred at a namespace's first look (what was there is older
    /// than nettune's watch) or after a look cut at
    /// [`MAX_LISTENERS_PER_NAMESPACE`] (a socket past the cut is not new).
    fn infer_origins(&mut self, netns: u32, sockets: &[ListeningSocket], now: &NetnsSysctls) {
        let Some(before) = self.looks.get(&netns) else {
            return;
        };
        let somaxconn = match (before.sysctls.somaxconn, now.somaxconn) {
            (Some(then), Some(now)) if then == now => now,
            _ => return,
        };
        if before.sockets.len() >= MAX_LISTENERS_PER_NAMESPACE {
            return;
        }
        let known: BTreeSet<u32> = before.sockets.iter().map(|s| s.inode).collect();
        for s in sockets {
            if known.contains(&s.inode) || self.origins.contains_key(&s.inode) {
                continue;
            }
            if self.origins.len() >= MAX_ORIGINS {
                self.evict_oldest_origin();
            }
            self.origins.insert(
                s.inode,
                Origin {
                    netns,
                    limit: s.limit,
                    somaxconn,
                    process: None,
                    tick: self.tick,
                },
            );
            self.unnamed.entry(netns).or_default().insert(s.inode);
        }
    }

    /// Names the processes of inferred origins, [`OWNER_LOOKUPS_PER_TICK`]
    /// namespaces a tick (one try each: a socket no process holds stays
    /// unnamed).
    fn name_owners(&mut self, system: &impl System) {
        let due: Vec<u32> = self
            .unnamed
            .keys()
            .copied()
            .take(OWNER_LOOKUPS_PER_TICK)
            .collect();
        for netns in due {
            let Some(inodes) = self.unnamed.remove(&netns) else {
                continue;
            };
            for (inode, comm) in system.socket_owners(netns, &inodes) {
                if let Some(o) = self.origins.get_mut(&inode).filter(|o| o.netns == netns) {
                    o.process = Some(comm);
                }
            }
        }
    }

    /// Drops everything about namespaces that are gone.
    fn forget_departed(&mut self, namespaces: &BTreeMap<u32, Namespace>) {
        let alive = |netns: &u32| namespaces.contains_key(netns);
        self.looks.retain(|n, _| alive(n));
        self.seen.retain(|n, _| alive(n));
        self.at_limit.retain(|(n, _), _| alive(n));
        self.origins.retain(|_, o| alive(&o.netns));
        self.unnamed.retain(|n, _| alive(n));
    }

    /// Takes the kernel's new listen origins; returns the namespaces they were
    /// made in.
    fn take(&mut self, origins: &BTreeMap<ListenSocket, ListenOrigin>) -> BTreeSet<u32> {
        let mut namespaces = BTreeSet::new();
        for (socket, origin) in origins {
            if self.origins.len() >= MAX_ORIGINS && !self.origins.contains_key(&socket.inode) {
                self.evict_oldest_origin();
            }
            let process = Some(printable_c(&origin.comm)).filter(|p| !p.is_empty());
            self.origins.insert(
                socket.inode,
                Origin {
                    netns: socket.netns,
                    limit: origin.limit,
                    somaxconn: origin.somaxconn,
                    process,
                    tick: self.tick,
                },
            );
            namespaces.insert(socket.netns);
        }
        namespaces
    }

    fn evict_oldest_origin(&mut self) {
        if let Some(oldest) = self
            .origins
            .iter()
            .min_by_key(|(_, o)| o.tick)
            .map(|(inode, _)| *inode)
        {
            self.origins.remove(&oldest);
        }
    }

    /// The namespaces to look at this tick, in order.
    fn choose(
        &mut self,
        namespaces: &BTreeMap<u32, Namespace>,
        sample: &Sample,
        listened_in: &BTreeSet<u32>,
    ) -> Vec<u32> {
        let mut movers: Vec<(u64, u32)> = Vec::new();
        for (inode, ns) in &sample.netns {
            let Some(now) = ns.listen else { continue };
            match self.seen.get(inode) {
                // First sight: what happened before is history, not this tick's news.
                None => {
                    self.seen.insert(*inode, now);
                }
                Some(before) if *before != now => {
                    let lead = now.overflows.saturating_sub(before.overflows)
                        + now.drops.saturating_sub(before.drops)
                        + now.syn_queue_full.saturating_sub(before.syn_queue_full);
                    movers.push((lead, *inode));
                }
                Some(_) => {}
            }
        }
        movers.sort_by(|a, b| b.cmp(a));
        // At the first tick every namespace is older than nettune's watch.
        let new: Vec<u32> = if self.known.is_empty() {
            Vec::new()
        } else {
            namespaces
                .keys()
                .copied()
                .filter(|inode| !self.known.contains(inode))
                .collect()
        };
        self.known = namespaces.keys().copied().collect();
        let mut picked = BTreeSet::new();
        let mut chosen: Vec<u32> = movers
            .into_iter()
            .map(|(_, inode)| inode)
            .chain(listened_in.iter().copied())
            .chain(new)
            .filter(|inode| namespaces.contains_key(inode) && picked.insert(*inode))
            .take(MAX_SCANS_PER_TICK)
            .collect();
        let turn: Vec<u32> = namespaces
            .range(self.cursor.saturating_add(1)..)
            .chain(namespaces.range(..=self.cursor))
            .map(|(inode, _)| *inode)
            .filter(|inode| !chosen.contains(inode))
            .take(BACKGROUND_SCANS_PER_TICK)
            .collect();
        if let Some(last) = turn.last() {
            self.cursor = *last;
        }
        chosen.extend(turn);
        chosen
    }

    /// Records one look at namespace `netns` and splits its new overflows among
    /// the listeners found at their limit.
    fn record(
        &mut self,
        netns: u32,
        mut sockets: Vec<ListeningSocket>,
        sysctls: NetnsSysctls,
        counters: ListenCounters,
    ) {
        // The fullest queues first, then by port, so that a cut keeps what matters.
        sockets.sort_by(|a, b| {
            fill(b)
                .total_cmp(&fill(a))
                .then(a.port.cmp(&b.port))
                .then(a.address.cmp(&b.address))
        });
        sockets.truncate(MAX_LISTENERS_PER_NAMESPACE);
        let listening: BTreeSet<u32> = sockets.iter().map(|s| s.inode).collect();
        let tick = self.tick;
        // A closed socket's origin goes; one resolved this tick may belong to a
        // listen() that has not completed yet.
        self.origins
            .retain(|inode, o| o.netns != netns || o.tick == tick || listening.contains(inode));
        self.at_limit
            .retain(|(n, inode), _| *n != netns || listening.contains(inode));
        let before = self.seen.insert(netns, counters).unwrap_or(counters);
        let new = counters.overflows.saturating_sub(before.overflows);
        let full: Vec<u32> = sockets
            .iter()
            .filter(|s| s.queue >= s.limit)
            .map(|s| s.inode)
            .collect();
        for (share, inode) in split(new, full.len()).zip(&full) {
            *self.at_limit.entry((netns, *inode)).or_default() += share;
        }
        self.looks.insert(netns, Look { sockets, sysctls });
    }

    /// Fills the Sample's listeners from each namespace's last look.
    fn fill(&self, sample: &mut Sample, exact: Option<&BTreeMap<ListenKey, ListenOverflow>>) {
        sample.listeners.clear();
        for (&netns, look) in &self.looks {
            if let Some(ns) = sample.netns.get_mut(&netns) {
                ns.netns_sysctls = Some(look.sysctls);
            }
            let mut counted_ports = BTreeSet::new();
            for s in &look.sockets {
                // An origin whose limit differs is stale: the application listened
                // again on the same socket (a backlog change) while nettune watched.
                let origin = self
                    .origins
                    .get(&s.inode)
                    .filter(|o| o.netns == netns && o.limit == s.limit);
                let (overflows, attribution) = match exact {
                    // The kernel's key has no address: the first socket on the
                    // port takes the count.
                    Some(exact) => {
                        let key = ListenKey {
                            netns,
                            port: s.port,
                            _pad: 0,
                        };
                        let first = counted_ports.insert(s.port);
                        let n = exact.get(&key).filter(|_| first).map_or(0, |o| o.overflows);
                        (n, Attribution::Exact)
                    }
                    None => match self.at_limit.get(&(netns, s.inode)) {
                        Some(&n) if n > 0 => (n, Attribution::AtLimit),
                        _ => (0, Attribution::None),
                    },
                };
                sample.listeners.push(ListenerSample {
                    netns,
                    address: s.address,
                    port: s.port,
                    inode: s.inode,
                    queue: s.queue,
                    limit: s.limit,
                    requested: origin.filter(|o| o.limit < o.somaxconn).map(|o| o.limit),
                    capped_by: origin
                        .filter(|o| o.limit >= o.somaxconn)
                        .map(|o| o.somaxconn),
                    process: origin.and_then(|o| o.process.clone()),
                    overflows,
                    attribution,
                });
            }
        }
        sample
            .listeners
            .sort_by_key(|l| (l.netns, l.port, l.address, l.inode));
    }
}

/// How full a queue is (a limit of 0 still admits one connection).
fn fill(s: &ListeningSocket) -> f64 {
    f64::from(s.queue) / f64::from(s.limit.max(1))
}

/// `total` split into `parts` shares that differ by at most one, the larger first.
fn split(total: u64, parts: usize) -> impl Iterator<Item = u64> {
    let parts = parts as u64;
    let each = total.checked_div(parts).unwrap_or(0);
    let extra = total.checked_rem(parts).unwrap_or(0);
    (0..parts).map(move |i| each + u64::from(i < extra))
}

#[cfg(test)]
mod tests;
