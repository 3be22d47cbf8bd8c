//! Reading urgent events from the ring buffer, and how many were lost.
//!
//! The kernel side never blocks: a full ring or the rate limit drops the event and
//! counts it (`EVENTS_LOST`). The agent drains the ring when its fd is readable.

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use nettune_common::{
    Event,
    events::{EVENTS_LOST_MAP, EVENTS_MAP},
};

use super::{LoadError, Probes, maps};
use crate::model::sample::LostEvents;

/// The ring buffer, taken out of the object so it can be read with `&mut`.
pub(super) struct EventReader {
    pub(super) ring: RingBuf<MapData>,
}

impl EventReader {
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, String> {
        let map = ebpf
            .take_map(EVENTS_MAP)
            .ok_or_else(|| format!("map {EVENTS_MAP} missing from the object"))?;
        let ring = RingBuf::try_from(map).map_err(|e| e.to_string())?;
        Ok(Self { ring })
    }
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
    pub(super) fn lost_events(&self) -> Result<LostEvents, LoadError> {
        let slots = maps::per_cpu_array_sums(&self.ebpf, EVENTS_LOST_MAP)?;
        Ok(LostEvents {
            ring_full: slots.first().copied().unwrap_or(0),
            rate_limited: slots.get(1).copied().unwrap_or(0),
        })
    }
}
