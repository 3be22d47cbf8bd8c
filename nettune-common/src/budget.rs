//! Per-namespace budgets in the maps every namespace shares.
//!
//! `DROPS` (16,384 keys) and `LISTEN_OVERFLOWS` (4,096) are keyed by namespace
//! and something a pod chooses (an interface, a port): without a budget one
//! namespace dropping on many interfaces, or overflowing on many ports, could
//! take a whole map and leave every other namespace's new keys uncounted. So a
//! namespace may create at most its budget of keys in each; past it, its new
//! keys are folded into one per namespace ([`FOLDED_IFINDEX`] keeping the drop
//! reason, [`FOLDED_PORT`]), so its counts stay whole and only their detail
//! is lost. The host's own namespace (the agent's: every pod's host-side veth
//! is there) has no budget.
//!
//! The programs count each namespace's keys in [`BUDGET_MAP`] as they create
//! them; the agent resets a namespace's count when it removes its keys.

/// [`BudgetKey`] → keys that namespace holds in that map (`u32`), a hash map.
pub const BUDGET_MAP: &str = "NAMESPACE_ENTRIES";
/// Bound of [`BUDGET_MAP`]: two maps for every namespace.
pub const MAX_BUDGET_KEYS: u32 = 2 * crate::MAX_NETNS;
/// `u32` globals: the budget of each map (the agent sets them at load).
pub const DROPS_BUDGET_GLOBAL: &str = "DROPS_BUDGET";
/// See [`DROPS_BUDGET_GLOBAL`].
pub const LISTEN_BUDGET_GLOBAL: &str = "LISTEN_BUDGET";
/// `u32` global: the host's namespace inode, which has no budget.
pub const HOST_NETNS_GLOBAL: &str = "HOST_NETNS";
/// The interface of a drop key past its namespace's budget.
pub const FOLDED_IFINDEX: u32 = u32::MAX;
/// The port of a listen key past its namespace's budget (no socket listens on 0).
pub const FOLDED_PORT: u16 = 0;

/// The default budgets of (`DROPS`, `LISTEN_OVERFLOWS`): a sixteenth of each
/// map, so that no one namespace, nor fifteen, can fill it.
pub const fn default_budgets() -> (u32, u32) {
    (
        BudgetedMap::Drops.default_budget(),
        BudgetedMap::ListenOverflows.default_budget(),
    )
}

/// Which shared map a budget is of.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BudgetedMap {
    /// `DROPS`.
    Drops = 0,
    /// `LISTEN_OVERFLOWS`.
    ListenOverflows = 1,
}

impl BudgetedMap {
    /// Both maps.
    pub const ALL: [Self; 2] = [Self::Drops, Self::ListenOverflows];

    /// The default budget ([`default_budgets`]).
    pub const fn default_budget(self) -> u32 {
        match self {
            Self::Drops => crate::drops::MAX_DROP_KEYS / 16,
            Self::ListenOverflows => crate::listen::MAX_LISTENERS / 16,
        }
    }

    /// The name in metrics (`map` label).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Drops => "drops",
            Self::ListenOverflows => "listen_overflows",
        }
    }
}

/// A namespace's count in one map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BudgetKey {
    pub netns: u32,
    /// A [`BudgetedMap`] value.
    pub map: u32,
}
