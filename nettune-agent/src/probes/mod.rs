//! Loading nettune's eBPF object and attaching, for each signal, the best variant
//! this kernel supports.
//!
//! Kernel differences stop here. Each signal has an ordered chain of variants
//! (e.g. `tp_btf` before the classic tracepoint, fentry before kprobe before a
//! procfs counter); [`Probes::load`] tries them in order, keeps the first that
//! loads and attaches, and records why each other one did not. Everything
//! downstream reads the same maps whatever variant is attached, and
//! `nettune probes` prints the record.

mod chain;
pub mod connect;
pub mod drops;
pub mod events;
pub mod listen;
mod maps;
pub mod retransmit;
pub mod traffic;

use std::fmt;

use aya::{Ebpf, EbpfLoader};
use serde::Serialize;

use chain::Env;
pub use chain::{LoadOptions, SignalStatus, Skipped, Variant};
pub use traffic::InterfaceChanges;

use crate::{btf::Btf, drop_reasons::DropReasons, layout::Layout, tracefs::Tracefs};

/// The eBPF object, built by build.rs with the pinned nightly and embedded here.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nettune"));

/// Errors that stop the probes from loading at all (as opposed to one variant
/// failing, which is recorded and falls back), or from reading a map.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load nettune's eBPF object: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    #[error("eBPF map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// The outcome of loading: one entry per signal, plus start-up warnings.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Report {
    pub signals: Vec<SignalStatus>,
    /// Degradations that are not tied to one signal (memlock, tracefs, BTF).
    pub warnings: Vec<String>,
}

impl Report {
    /// Whether every signal has an attached variant.
    pub fn all_attached(&self) -> bool {
        self.signals.iter().all(|s| s.attached.is_some())
    }

    /// The status of `signal`.
    pub fn signal(&self, signal: &str) -> Option<&SignalStatus> {
        self.signals.iter().find(|s| s.signal == signal)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<22} {:<11} SKIPPED VARIANTS", "SIGNAL", "ATTACHED")?;
        for s in &self.signals {
            let attached = s
                .attached
                .map_or_else(|| "NONE".to_owned(), |v| v.to_string());
            let mut skipped = s.skipped.iter();
            let first = skipped.next().map_or_else(
                || "-".to_owned(),
                |k| format!("{}: {}", k.variant, k.reason),
            );
            writeln!(f, "{:<22} {attached:<11} {first}", s.signal)?;
            for k in skipped {
                writeln!(f, "{:<22} {:<11} {}: {}", "", "", k.variant, k.reason)?;
            }
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// The loaded object with every signal's chosen variant attached. Dropping it
/// detaches every program and frees every map (nothing is pinned).
pub struct Probes {
    ebpf: Ebpf,
    report: Report,
    drop_reasons: DropReasons,
    events: Option<events::EventReader>,
    traffic: traffic::Watcher,
}

impl Probes {
    /// Loads the object with this kernel's offsets and attaches every signal.
    ///
    /// Only a broken object is an error; a signal whose variants all fail is
    /// recorded in the report as not attached.
    pub fn load(options: &LoadOptions) -> Result<Self, LoadError> {
        let mut warnings = Vec::new();
        if let Err(e) = raise_memlock_limit() {
            warnings.push(format!(
                "could not raise RLIMIT_MEMLOCK ({e}); harmless on Linux 5.11+, where BPF \
                 memory is charged to the cgroup instead"
            ));
        }
        let tracefs = match &options.tracefs_path {
            Some(path) => Tracefs::at_checked(path),
            None => Tracefs::find_or_mount(),
        };
        if let Err(e) = &tracefs {
            warnings.push(format!("{e}; classic tracepoint variants are unavailable"));
        }
        let btf = match &options.btf_path {
            Some(path) => Btf::from_file(path),
            None => Btf::from_sys_fs(),
        };
        if let Err(e) = &btf {
            warnings.push(format!(
                "{e}; BTF is needed for kernel struct offsets and tp_btf/fentry: signals \
                 that read kernel structs fall back to procfs counters where they have one"
            ));
        }
        let layout = Layout::resolve(btf.as_ref(), tracefs.as_ref());
        // Our parsed BTF held all of vmlinux's types: drop it before loading.
        drop(btf);
        if layout.drop_reasons.source == crate::drop_reasons::Source::None {
            warnings.push(
                "drop reason names unavailable (no BTF enum skb_drop_reason, no tracefs \
                 format): reasons are shown as numbers"
                    .to_owned(),
            );
        }
        let env = Env {
            options: options.clone(),
            aya_btf: match &options.btf_path {
                Some(path) => aya::Btf::parse_file(path, aya::Endianness::default()),
                None => aya::Btf::from_sys_fs(),
            }
            .map_err(|e| format!("no kernel BTF: {e}")),
            tracefs: tracefs.map_err(|e| e.to_string()),
            layout,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(
                nettune_common::offsets::OFFSETS_GLOBAL,
                &env.layout.offsets,
                true,
            )
            .load(OBJECT)
            .map_err(|e| LoadError::Object(Box::new(e)))?;
        let signals = vec![
            retransmit::attach(&mut ebpf, &env),
            drops::attach(&mut ebpf, &env),
            listen::attach(&mut ebpf, &env),
            connect::attach(&mut ebpf, &env),
            traffic::attach(&mut ebpf, &env),
            drops::conntrack_status(),
        ];
        let events = match events::EventReader::new(&mut ebpf) {
            Ok(reader) => Some(reader),
            Err(e) => {
                warnings.push(format!("urgent events unavailable: {e}"));
                None
            }
        };
        Ok(Self {
            ebpf,
            report: Report { signals, warnings },
            drop_reasons: env.layout.drop_reasons,
            events,
            traffic: traffic::Watcher::default(),
        })
    }

    /// What attached, what was skipped and why.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Names of this kernel's drop reasons.
    pub fn drop_reasons(&self) -> &DropReasons {
        &self.drop_reasons
    }

    /// Removes every map entry of namespaces not in `alive`, so a departed pod's
    /// figures disappear (and its inode, if the kernel reuses it, starts from zero).
    /// Returns how many entries were removed. Namespace 0 (drops nothing could
    /// attribute) is kept.
    pub fn forget_namespaces(
        &mut self,
        alive: &std::collections::BTreeSet<u32>,
    ) -> Result<usize, LoadError> {
        use nettune_common::{DropKey, FlowKey, ListenKey, ListenOverflow, RetransmitCounters};
        let gone = |netns: u32| netns != 0 && !alive.contains(&netns);
        let ebpf = &mut self.ebpf;
        Ok(maps::remove_keys::<u32, RetransmitCounters>(
            ebpf,
            nettune_common::retransmit::RETRANSMITS_MAP,
            |k| gone(*k),
        )? + maps::remove_keys::<FlowKey, u64>(
            ebpf,
            nettune_common::retransmit::RETRANSMIT_FLOWS_MAP,
            |k| gone(k.netns),
        )? + maps::remove_keys::<DropKey, u64>(ebpf, nettune_common::drops::DROPS_MAP, |k| {
            gone(k.netns)
        })? + maps::remove_keys::<ListenKey, ListenOverflow>(
            ebpf,
            nettune_common::listen::LISTEN_OVERFLOWS_MAP,
            |k| gone(k.netns),
        )? + maps::remove_keys::<u32, u64>(
            ebpf,
            nettune_common::netns_counters::CONNECT_EADDRNOTAVAIL_MAP,
            |k| gone(*k),
        )?)
    }

    /// Sum over CPUs of the programs' own error counters, by error kind.
    pub fn probe_errors(&self) -> Result<Vec<(nettune_common::ProbeError, u64)>, LoadError> {
        let slots = maps::per_cpu_array_sums(&self.ebpf, "PROBE_ERRORS")?;
        Ok(nettune_common::ProbeError::ALL
            .iter()
            .map(|&e| (e, slots.get(e as usize).copied().unwrap_or(0)))
            .collect())
    }
}

/// Lifts the locked-memory limit that kernels before 5.11 charge BPF maps against.
fn raise_memlock_limit() -> std::io::Result<()> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct we own; it has no other effects.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
