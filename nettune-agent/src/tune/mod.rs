//! The tuner: from Snapshots to sysctl changes, bounded, journaled, reversible and
//! explained.
//!
//! - [`crate::model::tunables`]: the one table of every sysctl nettune knows
//!   (with [`crate::model::value`], how values parse and rank);
//! - [`rules`]: every tuning rule declared once (its problem, evidence, trigger,
//!   sysctls, and what to look at when a change does not help);
//! - [`policy`]: pure, Snapshot → proposals (which sysctl, where, why), from the
//!   rules' observations;
//! - [`guardrails`]: the one place every proposal is checked (allow-list,
//!   exclusions, ceiling, never below the original, step, cooldown, hourly budget,
//!   stand down on outside changes);
//! - [`journal`]: original values, durably recorded before the first write;
//! - [`actuator`]: the only code that writes sysctls, through
//!   [`crate::sys::System`];
//! - [`verify`]: after each applied change, watches the evidence that triggered
//!   it and judges the change `effective`, `no_effect_yet` or `ineffective`;
//! - [`tuner`]: runs one round (mode, decisions, counters) and `apply`;
//! - [`rollback`]: restores every journaled original;
//! - [`profile`]: static profiles (`audit`, `apply`), the guide's `production`.

pub mod actuator;
pub mod guardrails;
pub mod journal;
pub mod kube_proxy;
pub mod policy;
pub mod profile;
pub mod rollback;
pub mod rules;
pub mod tuner;
pub mod verify;
