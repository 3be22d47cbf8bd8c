//! Collection: one tick of reading the node into a [`Sample`](crate::model::sample::Sample)
//! and a [`Snapshot`](crate::model::snapshot::Snapshot).
//!
//! - [`collector`]: the tick — follow host-side veths (the probes attach to new
//!   ones), discover namespaces, release the departed, read, build the Snapshot;
//! - [`sample`]: turning the probes' readings and each namespace's procfs files
//!   into a Sample;
//! - [`identity`]: who owns each namespace (pod, named netns, process, node);
//! - [`listeners`]: the listening sockets of the namespaces worth a look, with
//!   what their applications asked `listen()` for and their overflows.
//!
//! All I/O goes through [`crate::sys::System`] and
//! [`crate::probes::ProbeSource`], so a tick is unit-tested against
//! [`crate::sys::fake::FakeSystem`] and [`crate::probes::fake::FakeProbes`].

pub mod collector;
pub mod identity;
pub mod listeners;
pub mod sample;

pub use collector::{Collector, Tick};
