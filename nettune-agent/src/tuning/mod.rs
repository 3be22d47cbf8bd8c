//! The tuner: from Snapshots to sysctl changes, bounded, journaled, reversible and
//! explained.
//!
//! - [`policy`]: pure rules, Snapshot → proposals (which sysctl, where, why);
//! - [`guardrails`]: the one place every proposal is checked (allow-list,
//!   exclusions, ceiling, never below the original, step, cooldown, hourly budget,
//!   stand down on outside changes);
//! - [`journal`]: original values, durably recorded before the first write;
//! - [`io`]: the only code that reads and writes sysctls, behind a trait that
//!   tests point at a directory;
//! - [`tuner`]: runs one round (mode, decisions, counters);
//! - [`profile`]: static profiles (`audit`, `apply`), the guide's `production`.

pub mod guardrails;
pub mod io;
pub mod journal;
pub mod policy;
pub mod profile;
pub mod tuner;
pub mod value;
