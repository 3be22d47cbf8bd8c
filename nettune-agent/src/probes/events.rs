//! Reading urgent events from the ring buffer, arming their kinds, naming the
//! quiet namespaces, and how many were not sent.
//!
//! The kernel side never blocks: an event whose kind is not armed on its CPU, or
//! whose namespace is quiet, or that finds the ring full, is counted instead —
//! in its CPU's [`UrgentSlot`], which the agent maps into its memory
//! (`BPF_F_MMAPABLE`) to write what the programs ask and read what they counted,
//! one field at a time, so that neither side undoes the other's write.

use std::{os::fd::AsRawFd as _, ptr::NonNull};

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use nettune_common::{
    Event, EventKind,
    events::{EVENTS_MAP, QUIET_NAMESPACES, URGENT_CPUS, URGENT_MAP, UrgentSlot, UrgentSlots},
};

use super::{
    MapReadError,
    maps::{map_error, missing},
};
use crate::model::sample::LostEvents;

/// The ring buffer, taken out of the object so it can be read with `&mut`, and
/// the mapped slots.
pub(super) struct EventReader {
    pub(super) ring: RingBuf<MapData>,
    slots: MappedSlots,
    /// Possible CPUs (the slots in use).
    cpus: usize,
}

/// [`URGENT_MAP`]'s value mapped into this process; unmapped on drop. The map
/// stays alive while mapped (the mapping holds a reference).
struct MappedSlots {
    at: NonNull<UrgentSlot>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, accessed through volatile reads
// and writes of whole fields only.
unsafe impl Send for MappedSlots {}

impl Drop for MappedSlots {
    fn drop(&mut self) {
        // SAFETY: a mapping of `len` bytes made by `map_slots`, unmapped once.
        unsafe { libc::munmap(self.at.as_ptr().cast(), self.len) };
    }
}

fn map_slots(ebpf: &Ebpf) -> Result<MappedSlots, MapReadError> {
    let map = ebpf.map(URGENT_MAP).ok_or_else(|| missing(URGENT_MAP))?;
    let data: &MapData = match map {
        aya::maps::Map::Array(data) => data,
        _ => return Err(missing(URGENT_MAP)),
    };
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let len = size_of::<UrgentSlots>().next_multiple_of(page);
    // SAFETY: a shared mapping of the map's fd (created BPF_F_MMAPABLE), of its
    // value's size rounded to pages, as the kernel requires.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsFd::as_fd(data.fd()).as_raw_fd(),
            0,
        )
    };
    if at == libc::MAP_FAILED {
        return Err(map_error(URGENT_MAP)(aya::maps::MapError::IoError(
            std::io::Error::last_os_error(),
        )));
    }
    Ok(MappedSlots {
        at: NonNull::new(at.cast()).ok_or_else(|| missing(URGENT_MAP))?,
        len,
    })
}

impl EventReader {
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, MapReadError> {
        let slots = map_slots(ebpf)?;
        let map = ebpf
            .take_map(EVENTS_MAP)
            .ok_or_else(|| missing(EVENTS_MAP))?;
        let ring = RingBuf::try_from(map).map_err(map_error(EVENTS_MAP))?;
        let cpus = aya::util::nr_cpus()
            .map(|n| n.get() as usize)
            .unwrap_or(URGENT_CPUS)
            .min(URGENT_CPUS);
        Ok(Self { ring, slots, cpus })
    }

    /// Each CPU's slot in use.
    fn each_slot(&self) -> impl Iterator<Item = *mut UrgentSlot> + '_ {
        // SAFETY: within the mapping: `cpus` ≤ URGENT_CPUS slots.
        (0..self.cpus).map(|cpu| unsafe { self.slots.at.as_ptr().add(cpu) })
    }

    /// Arms (`armed`) or disarms urgent events of `kind` on every CPU.
    pub(super) fn arm(&self, kind: EventKind, armed: bool) {
        for slot in self.each_slot() {
            // SAFETY: a byte of a mapped slot, written whole.
            unsafe {
                std::ptr::write_volatile(
                    &raw mut (*slot).armed[kind as usize & 3],
                    u8::from(armed),
                );
            }
        }
    }

    /// Makes `namespaces` the quiet ones (at most [`QUIET_NAMESPACES`]; the rest
    /// are left out): their events are not sent, even armed.
    pub(super) fn set_quiet(&self, namespaces: &[u32]) {
        let n = namespaces.len().min(QUIET_NAMESPACES);
        for slot in self.each_slot() {
            // SAFETY: whole fields of a mapped slot. The length goes down before
            // the list changes and up after, so a program sees a shorter list
            // meanwhile, never a stale entry counted in.
            unsafe {
                std::ptr::write_volatile(&raw mut (*slot).quiet_len, 0);
                for (i, netns) in namespaces.iter().take(n).enumerate() {
                    std::ptr::write_volatile(&raw mut (*slot).quiet[i], *netns);
                }
                std::ptr::write_volatile(&raw mut (*slot).quiet_len, n as u32);
            }
        }
    }

    /// Events the kernel side could not send, summed over CPUs.
    pub(super) fn lost(&self) -> LostEvents {
        self.each_slot().fold(LostEvents::default(), |sum, slot| {
            // SAFETY: whole fields of a mapped slot.
            let (ring_full, not_sent) = unsafe {
                (
                    std::ptr::read_volatile(&raw const (*slot).ring_full),
                    std::ptr::read_volatile(&raw const (*slot).not_sent),
                )
            };
            LostEvents {
                ring_full: sum.ring_full.saturating_add(ring_full),
                not_armed: sum.not_armed.saturating_add(not_sent),
            }
        })
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
