//! Whole hash maps read a few hundred entries per system call
//! (`BPF_MAP_LOOKUP_BATCH`, 5.6+) instead of two per entry (next key, lookup),
//! which at 500 pods was a tenth of an idle agent's CPU. aya has no batch
//! operations; where the kernel refuses them for a map, the caller iterates.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` from `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `ENOTSUPP`, the kernel-internal errno a missing map operation returns.
const KERNEL_ENOTSUPP: i32 = 524;

/// Entries asked for per call; a hash bucket never holds this many.
const BATCH: usize = 256;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries read in batches: each key with its values (one per CPU of a per-CPU
/// map).
pub(crate) type Entries<K, V> = Vec<(K, Vec<V>)>;

/// Every entry of the hash map behind `fd` (plain, LRU or per-CPU) with its
/// `per_key` values of `V` (the number of possible CPUs for a per-CPU map, else
/// 1). `Ok(None)` when the kernel has no batch lookup for this map.
pub(crate) fn entries<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    per_key: usize,
) -> io::Result<Option<Entries<K, V>>> {
    // A per-CPU map's values come 8-byte aligned per CPU; a plain map's as they are.
    let stride = if per_key > 1 {
        size_of::<V>().next_multiple_of(8)
    } else {
        size_of::<V>()
    };
    let value_len = stride * per_key;
    let mut keys = vec![0u8; size_of::<K>() * BATCH];
    let mut values = vec![0u8; value_len * BATCH];
    // The hash map's resume token is a bucket index (a u32); room for a u64.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut out = Vec::new();
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                (&raw const token_in) as u64
            },
            out_batch: (&raw mut token_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` describes buffers of BATCH keys and values that outlive
        // the call, and tokens of 8 bytes; the kernel writes at most that much.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let error = (ret < 0).then(io::Error::last_os_error);
        let got = (attr.count as usize).min(BATCH);
        for i in 0..got {
            // SAFETY: entry i of buffers the kernel filled with `got` entries; any
            // bytes are a valid Pod value; read_unaligned copes with alignment.
            let key = unsafe {
                std::ptr::read_unaligned(keys[i * size_of::<K>()..].as_ptr().cast::<K>())
            };
            let at = i * value_len;
            let per_cpu = (0..per_key)
                .map(|cpu| {
                    // SAFETY: as above, within entry i's values.
                    unsafe {
                        std::ptr::read_unaligned(values[at + cpu * stride..].as_ptr().cast::<V>())
                    }
                })
                .collect();
            out.push((key, per_cpu));
        }
        match error.and_then(|e| e.raw_os_error()) {
            None => {}
            // The last entries came with it: done.
            Some(libc::ENOENT) => return Ok(Some(out)),
            // No batch operation for this map type (the kernel's own ENOTSUPP),
            // none at all (before 5.6), or a bucket larger than a batch.
            Some(KERNEL_ENOTSUPP | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSPC) => {
                return Ok(None);
            }
            Some(errno) => return Err(io::Error::from_raw_os_error(errno)),
        }
        token_in = token_out;
        first = false;
    }
}
