//! Each namespace's `/proc/net` counter files (`netstat`, `snmp`,
//! `stat/nf_conntrack`, `sockstat`), read where something happened.
//!
//! Reading and parsing four files per namespace every tick was most of an idle
//! agent's cost on a node with hundreds of pods (a thread per namespace without
//! a process, text the kernel formats, parsing). Most namespaces are quiet most
//! of the time, and the kernel side already shows which are not: a namespace is
//! read this tick when it is the node's, when it is new, when its veth carried
//! packets or its retransmit, drop or failed-connect counters moved since its
//! last read (at most [`MOVED_READS_PER_TICK`] of those, the most moved first),
//! and otherwise in turn, [`BACKGROUND_READS_PER_TICK`] namespaces a tick. A namespace not read keeps its last figures, and its rates stay those
//! between its last two reads (`NetnsSample::files_before`), so a quiet
//! namespace's rate is an honest average rather than zero then a spike.
//!
//! On a node with fewer namespaces than the background budget, every namespace
//! is read every tick, as before.

use std::{collections::BTreeMap, time::Instant};

use super::sample::read_netns_files_of;
use crate::{
    model::sample::{NetFiles, NetnsSample, Sample},
    sys::{Namespace, System},
};

/// Quiet namespaces read per tick for no reason but their turn: the safety net
/// for what the kernel side cannot see (a pod's loopback-only traffic where
/// overflows are counted from `/proc`). At 500 quiet pods, 16 a tick was a third
/// of the agent's CPU (a profile of `cargo xtask bench --section scale`); 8 read
/// each of 500 namespaces about once a minute.
pub const BACKGROUND_READS_PER_TICK: usize = 8;

/// Namespaces read per tick because their counters moved, the most moved first.
/// On a node where every pod is busy every second this bounds a tick's reads
/// (500 busy pods took 113 ms a tick and 10 % of a core with every one read);
/// a namespace left for a later tick keeps its figures and honest rates, and its
/// growing lead puts it first soon. The host and new namespaces are not counted.
pub const MOVED_READS_PER_TICK: usize = 32;

/// The last read of one namespace's files.
#[derive(Clone, Copy, Debug)]
struct Read {
    at: Instant,
    files: NetFiles,
    /// The read before it.
    before: Option<(Instant, NetFiles)>,
    /// The namespace's activity mark when it was read.
    mark: u64,
}

/// What was read of each namespace, carried from tick to tick.
#[derive(Debug, Default)]
pub struct NetFilesReader {
    reads: BTreeMap<u32, Read>,
    /// The last namespace read for its turn.
    cursor: u32,
}

/// A figure that moves when anything happens in the namespace that the kernel
/// side sees: the sum of its counters from the maps and its veth's packets.
fn activity_marks(sample: &Sample) -> BTreeMap<u32, u64> {
    let mut marks: BTreeMap<u32, u64> = sample
        .netns
        .iter()
        .map(|(inode, ns)| (*inode, mark_of(ns)))
        .collect();
    for iface in sample.interfaces.values() {
        if let Some(mark) = iface.peer_netns.and_then(|n| marks.get_mut(&n)) {
            let c = &iface.counters;
            *mark = mark.wrapping_add(c.rx_packets).wrapping_add(c.tx_packets);
        }
    }
    marks
}

fn mark_of(ns: &NetnsSample) -> u64 {
    let r = &ns.retransmits;
    ns.drops
        .values()
        .fold(r.segments.wrapping_add(r.retransmits), |a, n| {
            a.wrapping_add(*n)
        })
        .wrapping_add(r.failed)
        .wrapping_add(ns.connect_eaddrnotavail)
}

impl NetFilesReader {
    /// Reads the files of the namespaces that need it (each of `namespaces`
    /// whose entry `sample` has), and gives every namespace of `sample` read so
    /// far its figures. Returns how many namespaces were read.
    pub fn fill(
        &mut self,
        system: &impl System,
        namespaces: &[&Namespace],
        sample: &mut Sample,
        now: Instant,
    ) -> usize {
        self.reads
            .retain(|inode, _| namespaces.iter().any(|ns| ns.inode == *inode));
        let marks = activity_marks(sample);
        let mark = |inode: u32| marks.get(&inode).copied().unwrap_or(0);
        // The node and namespaces never read: now. Namespaces whose counters
        // moved: the most moved first, a bounded number a tick.
        let (mut due, mut moved): (Vec<&Namespace>, Vec<(u64, &Namespace)>) =
            (Vec::new(), Vec::new());
        for ns in namespaces.iter().copied() {
            match self.reads.get(&ns.inode) {
                _ if ns.is_host => due.push(ns),
                None => due.push(ns),
                Some(r) if r.mark != mark(ns.inode) => {
                    moved.push((mark(ns.inode).wrapping_sub(r.mark), ns));
                }
                Some(_) => {}
            }
        }
        moved.sort_by_key(|(delta, ns)| (std::cmp::Reverse(*delta), ns.inode));
        due.extend(
            moved
                .into_iter()
                .take(MOVED_READS_PER_TICK)
                .map(|(_, ns)| ns),
        );
        let mut turn: Vec<&Namespace> = namespaces
            .iter()
            .copied()
            .filter(|ns| ns.inode > self.cursor)
            .chain(
                namespaces
                    .iter()
                    .copied()
                    .filter(|ns| ns.inode <= self.cursor),
            )
            .filter(|ns| !due.iter().any(|d| d.inode == ns.inode))
            .take(BACKGROUND_READS_PER_TICK)
            .collect();
        if let Some(last) = turn.last() {
            self.cursor = last.inode;
        }
        turn.extend(due);
        for (ns, read) in turn.iter().zip(read_netns_files_of(system, &turn)) {
            let before = self.reads.get(&ns.inode).map(|r| (r.at, r.files));
            self.reads.insert(
                ns.inode,
                Read {
                    at: now,
                    files: read.files(),
                    before,
                    mark: mark(ns.inode),
                },
            );
        }
        for (inode, read) in &self.reads {
            if let Some(ns) = sample.netns.get_mut(inode) {
                ns.set_files(read.files);
                ns.files_before = read
                    .before
                    .map(|(at, files)| (files, read.at.duration_since(at).as_secs_f64()));
            }
        }
        turn.len()
    }
}

#[cfg(test)]
mod tests;
