//! A [`ProbeSource`] made of data, for unit tests of collection: a test sets the
//! readings the "kernel" returns and sees which interfaces collection asked to
//! watch and which namespaces it told the probes to forget.

use std::collections::BTreeSet;

use super::{InterfaceChanges, MapReadError, ProbeReadings, ProbeSource, Taken, Timeouts};
use crate::{
    model::{drop_reasons::DropReasons, probes::Report},
    sys::Link,
};

/// Probes that return what the test put in.
#[derive(Debug, Default)]
pub struct FakeProbes {
    /// What [`ProbeSource::read`] returns (interfaces: only watched ones, named as
    /// watched).
    pub readings: ProbeReadings,
    /// The report.
    pub report: Report,
    /// Drop reason names.
    pub reasons: DropReasons,
    /// Interfaces being watched: ifindex → name.
    pub watched: std::collections::BTreeMap<u32, String>,
    /// Every namespace set passed to `forget_namespaces`, most recent last.
    pub alive_sets: Vec<BTreeSet<u32>>,
    /// Every (namespace, interfaces) passed to `forget_interfaces`, most recent last.
    pub listed_interfaces: Vec<(u32, BTreeSet<u32>)>,
    /// Urgent events waiting in the "ring buffer".
    pub events: Vec<nettune_common::Event>,
    /// Which event kinds are armed, by kind value, as last set.
    pub armed: std::collections::BTreeMap<u32, bool>,
    /// What the next take of unanswered conversations returns.
    pub taken: Taken,
    /// The timeouts of the last take.
    pub timeouts: Option<Timeouts>,
    /// Whether connects are watched, as last asked.
    pub connects_watched: bool,
}

impl ProbeSource for FakeProbes {
    fn report(&self) -> &Report {
        &self.report
    }

    fn watch_connects(&mut self, on: bool) -> bool {
        self.connects_watched = on;
        on
    }

    fn drop_reasons(&self) -> &DropReasons {
        &self.reasons
    }

    fn read(&self) -> Result<ProbeReadings, MapReadError> {
        let mut readings = self.readings.clone();
        // Like the real probes: counters of watched interfaces, under their names.
        readings.conversations = readings
            .conversations
            .into_iter()
            .filter_map(|(ifindex, (_, counted))| {
                Some((ifindex, (self.watched.get(&ifindex)?.clone(), counted)))
            })
            .collect();
        Ok(readings)
    }

    fn take_unanswered_and_refused(&mut self, timeouts: Timeouts) -> Result<Taken, MapReadError> {
        self.timeouts = Some(timeouts);
        Ok(std::mem::take(&mut self.taken))
    }

    fn drain_events(&mut self) -> Vec<nettune_common::Event> {
        std::mem::take(&mut self.events)
    }

    fn forget_namespaces(&mut self, alive: &BTreeSet<u32>) -> Result<usize, MapReadError> {
        let before = self.readings.retransmits.len() + self.readings.drops.len();
        self.readings
            .retransmits
            .retain(|netns, _| *netns == 0 || alive.contains(netns));
        self.readings
            .drops
            .retain(|k, _| k.netns == 0 || alive.contains(&k.netns));
        self.alive_sets.push(alive.clone());
        Ok(before - self.readings.retransmits.len() - self.readings.drops.len())
    }

    fn forget_interfaces(
        &mut self,
        netns: u32,
        listed: &BTreeSet<u32>,
    ) -> Result<usize, MapReadError> {
        let before = self.readings.drops.len();
        self.readings
            .drops
            .retain(|k, _| k.netns != netns || k.ifindex == 0 || listed.contains(&k.ifindex));
        self.listed_interfaces.push((netns, listed.clone()));
        Ok(before - self.readings.drops.len())
    }

    fn forget_listen_origins(
        &mut self,
        taken: &[nettune_common::ListenSocket],
    ) -> Result<(), MapReadError> {
        self.readings
            .listen_origins
            .retain(|s, _| !taken.contains(s));
        Ok(())
    }

    fn arm_events(
        &mut self,
        kind: nettune_common::EventKind,
        armed: bool,
    ) -> Result<(), MapReadError> {
        self.armed.insert(kind as u32, armed);
        Ok(())
    }

    fn watch_interfaces(&mut self, veths: &[&Link]) -> InterfaceChanges {
        let mut changes = InterfaceChanges::default();
        let present: std::collections::BTreeMap<u32, String> =
            veths.iter().map(|l| (l.ifindex, l.name.clone())).collect();
        self.watched.retain(|ifindex, name| {
            let keep = present.get(ifindex) == Some(name);
            if !keep {
                changes.removed.push((*ifindex, name.clone()));
            }
            keep
        });
        for (ifindex, name) in present {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.watched.entry(ifindex) {
                changes.added.push((ifindex, name.clone()));
                slot.insert(name);
            }
        }
        changes
    }
}
