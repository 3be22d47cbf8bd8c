//! The programs' own error counters.
//!
//! A program that cannot read what it needs (a failed `bpf_probe_read_kernel`, a full
//! map) must not fail silently: it bumps one slot of the per-CPU `PROBE_ERRORS` array
//! and the agent exports the sum, so a broken offset or an undersized map shows up as
//! a metric instead of as quietly missing data.

/// Index into the `PROBE_ERRORS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// Reading a field of a kernel struct failed (bad offset or unmapped pointer).
    KernelRead = 0,
    /// A map update failed (map full, or out of memory).
    MapUpdate = 1,
    /// Reading the tracepoint record failed.
    TracepointRead = 2,
}

impl ProbeError {
    /// Every variant, in index order (the agent iterates this to export all slots).
    pub const ALL: [ProbeError; 3] = [Self::KernelRead, Self::MapUpdate, Self::TracepointRead];

    /// Number of slots in the `PROBE_ERRORS` array.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Stable name used as a metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::KernelRead => "kernel_read",
            Self::MapUpdate => "map_update",
            Self::TracepointRead => "tracepoint_read",
        }
    }
}
