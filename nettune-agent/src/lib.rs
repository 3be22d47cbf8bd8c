//! nettune's agent library: everything the `nettune` binary does, as layers that
//! tests can drive directly.
//!
//! # The flow, one tick
//!
//! ```text
//! kernel ─► probes ─────────┐          (eBPF maps: retransmits, drops, listeners, tc)
//!           sys ────────────┤          (/proc, /run/netns, rtnetlink, /proc/sys)
//!                           ▼
//!                   collect::Collector ─► model::Sample ─► model::Snapshot
//!                                                              │
//!          ┌──────────────────────────┬────────────────────────┼──────────────┐
//!          ▼                          ▼                        ▼              ▼
//!   serve (metrics, JSON)       top (terminal UI)     tune (policy, guardrails,  diagnose
//!                                                       journal, actuator ─► sys)
//! ```
//!
//! 1. [`probes`] loads the eBPF object once, with kernel offsets read from BTF and
//!    tracefs, and attaches for each signal the best variant the kernel allows
//!    (e.g. `tp_btf`, else the classic tracepoint), recording why others did not.
//!    Kernel differences stop there.
//! 2. [`sys`] is every other contact with the node — namespaces, their `/proc/net`
//!    files, interfaces, sysctls — behind one trait ([`sys::System`]) with a real
//!    implementation and a fake.
//! 3. [`collect`] runs a tick: it follows host-side veths (the probes attach tc to
//!    new ones), discovers namespaces and their owners ([`collect::identity`]),
//!    releases departed ones, and reads everything into a
//!    [`model::sample::Sample`] of raw cumulative counters.
//! 4. [`model`] turns two Samples into a [`model::snapshot::Snapshot`] (totals and
//!    per-second rates per workload, drop reasons by name): pure data, no I/O.
//! 5. Front ends read Snapshots and never the kernel: [`serve`] renders metrics and
//!    JSON once per Snapshot for HTTP; [`top`] draws them; [`tune`] decides sysctl
//!    changes from them (a pure policy), checks every change against its
//!    guardrails, journals the original and writes through its actuator — the only
//!    writer of sysctls; [`diagnose`] prints the rules' observations on two procfs readings.
//! 6. [`daemon`] wires it together for `nettune run`: each tick it collects, runs
//!    the tuner, and publishes the Snapshot and the tuner's state side by side.
//!
//! # Where do I put …
//!
//! | a … | goes in |
//! |---|---|
//! | new kernel signal | a program in `nettune-ebpf/src/<signal>.rs`, its chain in [`probes`], its counters in [`model::sample`] and [`model::snapshot`], a kernel test in `bpf-tests/tests/kernel/<signal>.rs` |
//! | new counter file or netlink query | [`sys`] (the format in its own module, the read in [`sys::System`] and its fake) |
//! | new metric | one declaration in [`serve::metrics::catalog`] (name, type, label struct, help), its series in [`serve::metrics::series`], and the README table (a test checks they agree) |
//! | new sysctl | one entry in [`model::tunables`] |
//! | new tuning rule | one module in [`tune::rules`] declaring its `Rule`, listed in `rules::ALL`; unit tests on hand-built Snapshots |
//! | new config key | one entry in [`config::keys::KEYS`] (kind, bounds, field, doc); the README table comes from it |
//! | new subcommand | `src/commands/<name>.rs` in the binary |

#![warn(missing_docs)]

pub mod check;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod diagnose;
pub mod engine;
pub mod model;
pub mod probes;
pub mod serve;
pub mod sys;
pub mod top;
pub mod tune;
