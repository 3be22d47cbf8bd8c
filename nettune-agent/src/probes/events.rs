//! Reading urgent events from the ring buffer, and how many were lost.
//!
//! The kernel side never blocks: an event whose kind is not armed, or that finds
//! the ring full, is counted (`EVENTS_LOST`) instead. The agent drains the ring
//! when its fd is readable, arms the kinds it wants (`EVENTS_ARMED`) and makes
//! quiet the namespaces whose events it does not want for now (`EVENTS_QUIET`).

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, RingBuf},
};
use nettune_common::{
    Event, EventKind,
    events::{EVENTS_ARMED_MAP, EVENTS_LOST_MAP, EVENTS_MAP, EVENTS_QUIET_MAP, quiet_key},
};

use super::{
    MapReadError, Probes,
    maps::{self, map_error, missing},
};
use crate::model::sample::LostEvents;

/// The ring buffer, taken out of the object so it can be read with `&mut`.
pub(super) struct EventReader {
    pub(super) ring: RingBuf<MapData>,
}

impl EventReader {
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, MapReadError> {
        let map = ebpf
            .take_map(EVENTS_MAP)
            .ok_or_else(|| missing(EVENTS_MAP))?;
        let ring = RingBuf::try_from(map).map_err(map_error(EVENTS_MAP))?;
        Ok(Self { ring })
    }
}

/// Arms (`armed`) or disarms urgent events of `kind`.
pub(super) fn arm(ebpf: &mut Ebpf, kind: EventKind, armed: bool) -> Result<(), MapReadError> {
    let map = ebpf
        .map_mut(EVENTS_ARMED_MAP)
        .ok_or_else(|| missing(EVENTS_ARMED_MAP))?;
    let mut slots: Array<&mut MapData, u32> =
        Array::try_from(map).map_err(map_error(EVENTS_ARMED_MAP))?;
    slots
        .set(kind as u32, &u32::from(armed), 0)
        .map_err(map_error(EVENTS_ARMED_MAP))
}

/// Makes namespace `netns` quiet for events of `kind` (`quiet`), or not: a quiet
/// namespace sends none of them even while the kind is armed. Ending quiet where
/// it was not is no error.
pub(super) fn set_quiet(
    ebpf: &mut Ebpf,
    kind: EventKind,
    netns: u32,
    quiet: bool,
) -> Result<(), MapReadError> {
    let map = ebpf
        .map_mut(EVENTS_QUIET_MAP)
        .ok_or_else(|| missing(EVENTS_QUIET_MAP))?;
    let mut quiet_map: HashMap<&mut MapData, u64, u8> =
        HashMap::try_from(map).map_err(map_error(EVENTS_QUIET_MAP))?;
    let key = quiet_key(kind as u32, netns);
    let done = if quiet {
        quiet_map.insert(&key, &1, 0)
    } else {
        match quiet_map.remove(&key) {
            Err(MapError::KeyNotFound) => Ok(()),
            other => other,
        }
    };
    done.map_err(map_error(EVENTS_QUIET_MAP))
}

/// An event from a ring-buffer record; `None` when the record is too short.
pub fn decode(record: &[u8]) -> Option<Event> {
    (record.len() >= size_of::<Event>())
        // SAFETY: `Event` is repr(C) and made of plain integers, so any bytes are a
        // valid value, and the record holds at least that many; read_unaligned
        // copes with the ring's 8-byte alignment.
        .then(|| unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<Event>()) })
}

impl EventReader {
    /// Takes every event waiting in the ring buffer.
    pub(super) fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            out.extend(decode(&item));
        }
        out
    }
}

impl Probes {
    /// Events the kernel side could not send.
    pub(super) fn lost_events(&self) -> Result<LostEvents, MapReadError> {
        let slots = maps::per_cpu_array_sums(&self.ebpf, EVENTS_LOST_MAP)?;
        Ok(LostEvents {
            ring_full: slots.first().copied().unwrap_or(0),
            not_armed: slots.get(1).copied().unwrap_or(0),
        })
    }
}
