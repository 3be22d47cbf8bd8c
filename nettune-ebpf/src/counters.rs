//! Bumping values in per-CPU maps.
//!
//! Per-CPU maps need no atomics: programs do not preempt each other on one CPU, so a
//! plain read-modify-write through the map value pointer is exact.

use aya_ebpf::maps::{PerCpuArray, PerCpuHashMap};
use nettune_common::{BudgetedMap, ProbeError};

use crate::budget;

/// BPF_NOEXIST: insert only if absent (another CPU may have just created the key).
const NOEXIST: u64 = 1;

/// This CPU's value for `key`, created zeroed (`init`) on first use.
#[inline(always)]
pub fn entry<K, V>(map: &PerCpuHashMap<K, V>, key: &K, init: &V) -> Result<*mut V, ProbeError> {
    if let Some(ptr) = map.get_ptr_mut(key) {
        return Ok(ptr);
    }
    let _ = map.insert(key, init, NOEXIST);
    map.get_ptr_mut(key).ok_or(ProbeError::MapUpdate)
}

/// This CPU's value for `key`, created zeroed (`init`) on first use — unless
/// `netns` is past its budget in `map`: then the entry of `folded`, the key
/// standing for all of that namespace's keys past it (see [`budget`]).
#[inline(always)]
pub fn entry_within<K, V>(
    map: &PerCpuHashMap<K, V>,
    key: &K,
    folded: &K,
    init: &V,
    netns: u32,
    budgeted: BudgetedMap,
) -> Result<*mut V, ProbeError> {
    if let Some(ptr) = map.get_ptr_mut(key) {
        return Ok(ptr);
    }
    if !budget::admit(netns, budgeted) {
        return entry(map, folded, init);
    }
    if map.insert(key, init, NOEXIST).is_err() {
        // Another CPU created it (or the map is full): this one did not.
        budget::release(netns, budgeted);
    }
    map.get_ptr_mut(key).ok_or(ProbeError::MapUpdate)
}

/// Adds `n` to this CPU's counter for `key`.
#[inline(always)]
pub fn add<K>(map: &PerCpuHashMap<K, u64>, key: &K, n: u64) -> Result<(), ProbeError> {
    let slot = entry(map, key, &0)?;
    // SAFETY: this CPU's value of a per-CPU map entry; no other writer runs here.
    unsafe { *slot = (*slot).wrapping_add(n) };
    Ok(())
}

/// Adds one to slot `index` of a per-CPU array.
#[inline(always)]
pub fn bump_slot(array: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = array.get_ptr_mut(index) {
        // SAFETY: as in `add`: this CPU's slot, no concurrent writer.
        unsafe { *slot = (*slot).wrapping_add(1) };
    }
}
