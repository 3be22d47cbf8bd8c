//! Collection: one tick of reading the node into a [`Sample`](crate::model::sample::Sample)
//! and a [`Snapshot`](crate::model::snapshot::Snapshot).
//!
//! - [`collector`]: the tick — follow host-side veths (the probes attach to new
//!   ones), discover namespaces, release the departed, read, build the Snapshot;
//! - [`sample`]: turning the probes' readings into a Sample;
//! - [`conversations`]: DNS queries and handshakes that stayed unanswered, and
//!   refusals, counted between ticks;
//! - [`netfiles`]: each namespace's `/proc/net` counter files, read where
//!   something happened (and the rest in turn);
//! - [`identity`]: who owns each namespace (a pod the container runtime names,
//!   a pod UID from a cgroup path, a named netns, a process, the node);
//! - [`cri`]: the container runtime's pods, polled on a thread of its own and
//!   read by a tick without waiting;
//! - [`listeners`]: the listening sockets of the namespaces worth a look, with
//!   what their applications asked `listen()` for and their overflows;
//! - [`port_watch`]: when to count connects that find no local port (the
//!   program that counts them costs every TCP state change, so it runs only
//!   while a namespace's ephemeral ports are crowded).
//!
//! A tick's I/O goes through [`crate::sys::System`] and
//! [`crate::probes::ProbeSource`], so it is unit-tested against
//! `sys::fake::FakeSystem` and `probes::fake::FakeProbes` (compiled for tests only); the
//! runtime's pods reach it as data on a [`cri::RuntimeBoard`].

pub mod collector;
pub mod context;
pub mod conversations;
pub mod cri;
pub mod identity;
pub mod listeners;
pub mod netfiles;
pub mod port_watch;
pub mod sample;
pub mod writers;

pub use collector::{Collector, Tick};
