//! Prometheus metrics, rendered from each published Snapshot.
//!
//! - [`catalog`]: every metric, declared once (name, type, label struct, help);
//! - [`labels`]: the label structs;
//! - [`series`]: which figure of the Snapshot feeds which metric;
//! - `conversations`: the series of the pods' DNS, handshakes and ICMP errors;
//! - `families`: typed series in, exposition text out.
//!
//! Every metric of [`catalog::ALL`] gets a `prometheus` [`Desc`] at start-up, so
//! a name or label the Prometheus data model rejects fails there, not at scrape
//! time. [`Exporter::render`] runs at most once per published Snapshot and
//! returns the text as [`Bytes`] that every scrape shares: a scrape never
//! renders, clones a Snapshot or waits for a collection.
//!
//! Beside them, the `prometheus` crate's process collector exports the agent's
//! own CPU and memory (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, …), read from `/proc/self` at each rendering.
//!
//! Rendering from the latest Snapshot (rather than keeping long-lived metric
//! objects) makes a departed pod's series disappear on the first scrape after it
//! goes: nothing has to remember to delete them. Counters are the kernel's own
//! cumulative counts, so they only go up while a workload exists.

pub mod catalog;
mod conversations;
mod families;
pub mod labels;
pub mod series;

use std::collections::HashMap;

use bytes::Bytes;
use prometheus::{
    Encoder as _, TextEncoder, core::Collector as _, core::Desc,
    process_collector::ProcessCollector,
};

use crate::model::snapshot::Published;

/// Renders published Snapshots, with the agent's own process metrics.
pub struct Exporter {
    process: ProcessCollector,
    /// The `_other` counters rendered so far (they never decrease).
    folded: std::sync::Mutex<families::FoldedCounters>,
}

impl Default for Exporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Exporter {
    /// An exporter of every metric in [`catalog::ALL`].
    ///
    /// # Panics
    /// If the catalog holds a name or label Prometheus rejects (a test renders
    /// every metric, so this cannot ship).
    pub fn new() -> Self {
        for m in catalog::ALL {
            Desc::new(
                m.name.to_owned(),
                m.help.to_owned(),
                m.labels.iter().map(|l| (*l).to_owned()).collect(),
                HashMap::new(),
            )
            .unwrap_or_else(|e| panic!("metric {}: {e}", m.name));
        }
        Self {
            process: ProcessCollector::for_self(),
            folded: std::sync::Mutex::default(),
        }
    }

    /// The Prometheus text exposition of `published` (whose workloads beyond
    /// `agent.max_pod_series` are marked folded: see
    /// [`crate::model::snapshot::Snapshot::fold`]).
    ///
    /// The families are written in the catalog's order and each family's series
    /// in the Snapshot's (stable) order, as text straight away (`families`): a
    /// `Registry` would sort every family's series by their labels first, and
    /// the crate's protobuf families cost more to build than the text they
    /// encode to, at hundreds of pods the most of a rendering.
    pub fn render(&self, published: &Published) -> Bytes {
        let mut f = families::Families::new();
        series::render_into(&mut f, published);
        let text = match self.folded.lock() {
            Ok(mut folded) => f.finish(&mut folded),
            Err(_) => f.finish(&mut families::FoldedCounters::default()),
        };
        let mut buf = text.into_bytes();
        // The process collector's few families, through the crate's encoder.
        if let Err(e) = TextEncoder::new().encode(&self.process.collect(), &mut buf) {
            buf.extend_from_slice(format!("# encoding failed: {e}\n").as_bytes());
        }
        Bytes::from(buf)
    }
}

#[cfg(test)]
mod tests;
