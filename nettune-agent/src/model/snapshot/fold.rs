//! Which pods keep their own entries and which are folded under `_other`:
//! the one place the cap is decided, so `/metrics` and the JSON API agree.

use std::collections::BTreeSet;

use super::{Snapshot, WorkloadFigures, WorkloadKind};

/// Which pods (by namespace) have their own entries and which are folded,
/// carried from one Snapshot to the next ([`Snapshot::fold_stable`]).
#[derive(Clone, Debug, Default)]
pub struct Folding {
    own: BTreeSet<u32>,
    folded: BTreeSet<u32>,
}

impl Snapshot {
    /// Decides which workloads keep their own entries — the node and the first
    /// `max_pods` pods, in the Snapshot's order — and marks the others
    /// [`WorkloadFigures::folded`]: the metrics sum them under `pod="_other"`, the
    /// JSON API leaves them out ([`Self::without_folded`]). The one place the cap
    /// is decided, so both outputs agree.
    pub fn fold(&mut self, max_pods: usize) {
        self.fold_stable(max_pods, &mut Folding::default());
    }

    /// [`Self::fold`], stable from one Snapshot to the next: a pod keeps its own
    /// entries, or stays folded, until its namespace goes; newcomers take the
    /// places free then, in the Snapshot's order. A pod moving in or out of
    /// `_other` as names sort would lower `_other`'s counters.
    pub fn fold_stable(&mut self, max_pods: usize, folding: &mut Folding) {
        let is_pod = |w: &WorkloadFigures| w.workload.kind != WorkloadKind::Node;
        let present: BTreeSet<u32> = self
            .workloads
            .iter()
            .filter(|w| is_pod(w))
            .map(|w| w.netns)
            .collect();
        folding.own.retain(|n| present.contains(n));
        folding.folded.retain(|n| present.contains(n));
        for w in &mut self.workloads {
            w.folded = is_pod(w)
                && !folding.own.contains(&w.netns)
                && (folding.folded.contains(&w.netns) || folding.own.len() >= max_pods);
            if is_pod(w) {
                if w.folded {
                    folding.folded.insert(w.netns);
                } else {
                    folding.own.insert(w.netns);
                }
            }
        }
        self.workloads_folded = self.workloads.iter().filter(|w| w.folded).count();
    }

    /// This Snapshot without its folded workloads and their listeners (counted in
    /// [`Self::workloads_folded`]). Totals still count every workload.
    #[must_use]
    pub fn without_folded(mut self) -> Self {
        let kept: BTreeSet<u32> = self
            .workloads
            .iter()
            .filter(|w| !w.folded)
            .map(|w| w.netns)
            .collect();
        self.workloads.retain(|w| !w.folded);
        self.listeners.retain(|l| kept.contains(&l.netns));
        self
    }
}
