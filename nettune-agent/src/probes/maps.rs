//! Reading the programs' maps: per-CPU values summed into one figure per key.

use std::{collections::BTreeMap, os::fd::AsFd as _};

use aya::{
    Ebpf, Pod,
    maps::{HashMap, IterableMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap},
};

use super::MapReadError;

/// `error` on map `name`, as a [`MapReadError`].
pub(crate) fn map_error(name: &'static str) -> impl Fn(MapError) -> MapReadError {
    move |e| MapReadError {
        name,
        source: Box::new(e),
    }
}

pub(crate) fn missing(name: &'static str) -> MapReadError {
    map_error(name)(MapError::InvalidName {
        name: name.to_owned(),
    })
}

/// The map `name` of the object.
fn map<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Map, MapReadError> {
    ebpf.map(name).ok_or_else(|| missing(name))
}

/// The per-CPU hash `name`, writable (to insert or remove keys).
pub(crate) fn per_cpu_hash_mut<'a, K: Pod, V: Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<PerCpuHashMap<&'a mut MapData, K, V>, MapReadError> {
    let map = ebpf.map_mut(name).ok_or_else(|| missing(name))?;
    PerCpuHashMap::try_from(map).map_err(map_error(name))
}

/// Every entry of a per-CPU hash (plain or LRU), each value folded over CPUs with
/// `fold` starting from `V::default()`. Entries evicted mid-iteration are skipped.
pub(crate) fn per_cpu_hash<K, V>(
    ebpf: &Ebpf,
    name: &'static str,
    fold: impl Fn(V, V) -> V,
) -> Result<BTreeMap<K, V>, MapReadError>
where
    K: Pod + Ord,
    V: Pod + Default,
{
    let hash: PerCpuHashMap<&MapData, K, V> =
        PerCpuHashMap::try_from(map(ebpf, name)?).map_err(map_error(name))?;
    let cpus = aya::util::nr_cpus()
        .map_err(|(_, e)| map_error(name)(MapError::IoError(e)))?
        .get() as usize;
    if let Some(entries) = batch(&hash, cpus, name)? {
        return Ok(entries
            .into_iter()
            .map(|(key, per_cpu)| (key, per_cpu.into_iter().fold(V::default(), &fold)))
            .collect());
    }
    let mut out = BTreeMap::new();
    for entry in hash.iter() {
        let Ok((key, per_cpu)) = entry else { continue };
        out.insert(key, per_cpu.iter().copied().fold(V::default(), &fold));
    }
    Ok(out)
}

/// Every entry of a plain hash (or LRU hash). Entries evicted mid-iteration are
/// skipped.
pub(crate) fn hash_entries<K: Pod + Ord, V: Pod>(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<BTreeMap<K, V>, MapReadError> {
    let hash: HashMap<&MapData, K, V> =
        HashMap::try_from(map(ebpf, name)?).map_err(map_error(name))?;
    if let Some(entries) = batch(&hash, 1, name)? {
        return Ok(entries
            .into_iter()
            .filter_map(|(key, mut one)| Some((key, one.pop()?)))
            .collect());
    }
    Ok(hash.iter().filter_map(Result::ok).collect())
}

/// Every entry of `map` by batch lookups, or `None` where the kernel has none.
fn batch<K: Pod, V: Pod, Value>(
    map: &impl IterableMap<K, Value>,
    per_key: usize,
    name: &'static str,
) -> Result<Option<super::batch::Entries<K, V>>, MapReadError> {
    super::batch::entries(map.map().fd().as_fd(), per_key)
        .map_err(|e| map_error(name)(MapError::IoError(e)))
}

/// Per-CPU `u64` hash summed over CPUs.
pub(crate) fn per_cpu_counts<K: Pod + Ord>(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<BTreeMap<K, u64>, MapReadError> {
    per_cpu_hash(ebpf, name, u64::saturating_add)
}

/// Each slot of a per-CPU `u64` array, summed over CPUs.
pub(crate) fn per_cpu_array_sums(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<Vec<u64>, MapReadError> {
    let array: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map(ebpf, name)?).map_err(map_error(name))?;
    array
        .iter()
        .map(|slot| {
            let values = slot.map_err(map_error(name))?;
            Ok(values.iter().fold(0u64, |a, v| a.saturating_add(*v)))
        })
        .collect()
}

/// Removes from a hash map every key `stale` selects (e.g. namespaces that are gone).
pub(crate) fn remove_keys<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    stale: impl Fn(&K) -> bool,
) -> Result<usize, MapReadError> {
    let mut hash = per_cpu_hash_mut::<K, V>(ebpf, name)?;
    let doomed: Vec<K> = hash
        .keys()
        .filter_map(Result::ok)
        .filter(|k| stale(k))
        .collect();
    for key in &doomed {
        // Already gone (LRU eviction) is fine.
        let _ = hash.remove(key);
    }
    Ok(doomed.len())
}

/// Removes from a plain hash map every key `stale` selects.
pub(crate) fn remove_plain_keys<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    stale: impl Fn(&K) -> bool,
) -> Result<usize, MapReadError> {
    let doomed: Vec<K> = {
        let map = ebpf.map(name).ok_or_else(|| missing(name))?;
        let hash: HashMap<&MapData, K, V> = HashMap::try_from(map).map_err(map_error(name))?;
        hash.keys()
            .filter_map(Result::ok)
            .filter(|k| stale(k))
            .collect()
    };
    remove_entries::<K, V>(ebpf, name, &doomed)?;
    Ok(doomed.len())
}

/// Removes `keys` from a plain hash (or LRU hash) map; keys already gone are fine.
pub(crate) fn remove_entries<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    keys: &[K],
) -> Result<(), MapReadError> {
    let map = ebpf.map_mut(name).ok_or_else(|| missing(name))?;
    let mut hash: HashMap<&mut MapData, K, V> = HashMap::try_from(map).map_err(map_error(name))?;
    for key in keys {
        let _ = hash.remove(key);
    }
    Ok(())
}
