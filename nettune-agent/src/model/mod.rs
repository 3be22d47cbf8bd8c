//! The model: the plain data every layer of nettune speaks.
//!
//! Nothing here does I/O or imports from another nettune layer: the kernel layer
//! ([`crate::sys`], [`crate::probes`]) produces these types, collection
//! ([`crate::collect`]) assembles them into a [`Sample`](sample::Sample), the pure
//! [`Snapshot::build`](snapshot::Snapshot::build) turns two Samples into a
//! [`Snapshot`](snapshot::Snapshot), and the front ends (metrics, JSON API, TUI,
//! tuner) read Snapshots. Because the model is plain data, every rule and every
//! rate can be tested from hand-built values.
//!
//! | module | what it holds |
//! |---|---|
//! | [`counter`] | a cumulative counter with its rate |
//! | [`workload`] | who owns a network namespace (pod, named netns, process, node) |
//! | [`probes`] | which variant of each signal attached, and why others did not |
//! | [`drop_reasons`] | the kernel's drop reason names |
//! | [`sample`] | one tick's raw counters |
//! | [`snapshot`] | what people read: totals and rates per workload |
//! | [`conversations`] | the pods' DNS, handshakes, resets and ICMP errors, as people read them |
//! | [`tunables`] | every sysctl nettune knows: scope, shape, the guide's value, ceilings |
//! | [`value`] | sysctl values parsed, compared the way the kernel normalises them, ranked by room |
//! | [`tuning`] | the tuner's mode, places, decisions and managed values |

pub mod context;
pub mod conversations;
pub mod counter;
pub mod drop_reasons;
pub mod probes;
pub mod sample;
pub mod snapshot;
pub mod sysctl_writers;
pub mod text;
pub mod tunables;
pub mod tuning;
pub mod value;
pub mod workload;
