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
    ring: RingBuf<MapData>,
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

impl Probes {
    /// Takes every event waiting in the ring buffer.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        let Some(reader) = self.events.as_mut() else {
            return out;
        };
        while let Some(item) = reader.ring.next() {
            if item.len() >= size_of::<Event>() {
                // SAFETY: the kernel side writes whole `Event`s (repr(C), plain
                // integers); read_unaligned copes with the ring's 8-byte alignment.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
            }
        }
        out
    }

    /// The ring buffer's fd, to wait for events with epoll/tokio.
    pub fn events_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd as _;
        self.events.as_ref().map(|r| r.ring.as_fd())
    }

    /// Events the kernel side could not send.
    pub(super) fn lost_events(&self) -> Result<LostEvents, LoadError> {
        let slots = maps::per_cpu_array_sums(&self.ebpf, EVENTS_LOST_MAP)?;
        Ok(LostEvents {
            ring_full: slots.first().copied().unwrap_or(0),
            rate_limited: slots.get(1).copied().unwrap_or(0),
        })
    }
}
