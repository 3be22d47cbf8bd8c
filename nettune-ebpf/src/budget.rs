//! Per-namespace budgets in shared maps (see `nettune_common::budget`): a
//! namespace past its budget has its new keys folded into one per namespace.
//!
//! Only the path that creates a key asks: a key that exists is counted without
//! looking here. A count may run one or two above the keys a namespace holds
//! when CPUs race to create the same key (each releases what it did not
//! create, so it does not drift); the agent resets counts when it removes keys.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{macros::map, maps::HashMap};
use nettune_common::{
    BudgetKey, BudgetedMap,
    budget::{MAX_BUDGET_KEYS, default_budgets},
};

#[map]
static NAMESPACE_ENTRIES: HashMap<BudgetKey, u32> = HashMap::with_max_entries(MAX_BUDGET_KEYS, 0);

// Set by the agent before load and never written after. `static mut`, so
// they live in `.data`: an immutable static is a constant LLVM may merge with
// an equal promoted constant elsewhere (a `&0` passed as a map value became a
// pointer to `HOST_NETNS`, which the loader then set to the host's inode).

/// `nettune_common::budget::DROPS_BUDGET_GLOBAL`.
#[unsafe(no_mangle)]
static mut DROPS_BUDGET: u32 = default_budgets().0;
/// `nettune_common::budget::LISTEN_BUDGET_GLOBAL`.
#[unsafe(no_mangle)]
static mut LISTEN_BUDGET: u32 = default_budgets().1;
/// The host's namespace, which has no budget (`HOST_NETNS_GLOBAL`).
#[unsafe(no_mangle)]
static mut HOST_NETNS: u32 = 0;

/// BPF_NOEXIST.
const NOEXIST: u64 = 1;

/// Reads a global the loader replaced (volatile: not folded to its initialiser).
#[inline(always)]
fn global(value: *const u32) -> u32 {
    // SAFETY: one of the statics above, valid for the program's life and
    // written by no program.
    unsafe { core::ptr::read_volatile(value) }
}

/// Whether `netns` may create one more key in `map`, counting it if so. The
/// host's namespace and namespace 0 (drops nothing could attribute) always may;
/// a namespace whose count cannot be kept (the budget map full) may not.
#[inline(always)]
pub fn admit(netns: u32, map: BudgetedMap) -> bool {
    if netns == 0 || netns == global(&raw const HOST_NETNS) {
        return true;
    }
    let budget = match map {
        BudgetedMap::Drops => global(&raw const DROPS_BUDGET),
        BudgetedMap::ListenOverflows => global(&raw const LISTEN_BUDGET),
    };
    let key = BudgetKey {
        netns,
        map: map as u32,
    };
    let count = match NAMESPACE_ENTRIES.get_ptr_mut(&key) {
        Some(count) => count,
        None => {
            let _ = NAMESPACE_ENTRIES.insert(&key, &0, NOEXIST);
            match NAMESPACE_ENTRIES.get_ptr_mut(&key) {
                Some(count) => count,
                None => return false,
            }
        }
    };
    // SAFETY: a 4-byte map value, valid while the program runs; other CPUs add
    // to it atomically, and an aligned load is never torn.
    if unsafe { core::ptr::read_volatile(count) } >= budget {
        return false;
    }
    add(count, 1);
    true
}

/// Gives back what [`admit`] counted for a key that was then not created
/// (another CPU created it first, or the map was full).
#[inline(always)]
pub fn release(netns: u32, map: BudgetedMap) {
    if netns == 0 || netns == global(&raw const HOST_NETNS) {
        return;
    }
    let key = BudgetKey {
        netns,
        map: map as u32,
    };
    if let Some(count) = NAMESPACE_ENTRIES.get_ptr_mut(&key) {
        add(count, u32::MAX);
    }
}

/// One `BPF_ATOMIC` add, its result unused (as `conversations::add`): `n`
/// wraps, so `u32::MAX` subtracts one.
#[inline(always)]
fn add(count: *mut u32, n: u32) {
    // SAFETY: `count` points into a map value, 4-byte aligned; every writer adds
    // atomically.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(count, n) };
}
