//! Loading nettune's eBPF object and attaching, for each signal, the best variant
//! this kernel supports.
//!
//! Kernel differences stop here. Each signal has an ordered chain of variants
//! (e.g. `tp_btf` before the classic tracepoint); [`Probes::load`] tries them in order,
//! keeps the first that loads and attaches, and records why each earlier one did not.
//! Everything downstream reads the same maps whatever variant is attached, and
//! `nettune probes` prints the record.

pub mod retransmit;

use std::fmt;

use aya::{Ebpf, EbpfLoader};
use serde::Serialize;

use crate::{btf::Btf, layout::Layout, tracefs::Tracefs};

/// The eBPF object, built by build.rs with the pinned nightly and embedded here.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nettune"));

/// Errors that stop the probes from loading at all (as opposed to one variant
/// failing, which is recorded and falls back).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load nettune's eBPF object: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    #[error("eBPF map `{name}` is missing or has the wrong type: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// A way of getting a signal out of the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Variant {
    /// BTF-enabled tracepoint (`tp_btf`, Linux 5.5+).
    TpBtf,
    /// Classic tracepoint through tracefs.
    Tracepoint,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TpBtf => "tp_btf",
            Self::Tracepoint => "tracepoint",
        })
    }
}

/// A variant that was tried and not used, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub variant: Variant,
    pub reason: String,
}

/// What happened to one signal's chain.
#[derive(Clone, Debug, Serialize)]
pub struct SignalStatus {
    /// Signal name, e.g. `tcp_retransmit`.
    pub signal: &'static str,
    /// The variant in use, if any worked.
    pub attached: Option<Variant>,
    /// Variants tried before (or instead of) the attached one.
    pub skipped: Vec<Skipped>,
}

/// The outcome of loading: one entry per signal, plus start-up warnings.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub signals: Vec<SignalStatus>,
    /// Degradations that are not tied to one signal (e.g. memlock, tracefs).
    pub warnings: Vec<String>,
}

impl Report {
    /// Whether every signal has an attached variant.
    pub fn all_attached(&self) -> bool {
        self.signals.iter().all(|s| s.attached.is_some())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<18} {:<12} SKIPPED VARIANTS", "SIGNAL", "ATTACHED")?;
        for s in &self.signals {
            let attached = s
                .attached
                .map_or_else(|| "NONE".to_owned(), |v| v.to_string());
            let skipped = if s.skipped.is_empty() {
                "-".to_owned()
            } else {
                s.skipped
                    .iter()
                    .map(|k| format!("{}: {}", k.variant, k.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            writeln!(f, "{:<18} {:<12} {skipped}", s.signal, attached)?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Choices the caller makes about loading.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Variants not to try even where the kernel supports them (to force or test a
    /// fallback).
    pub disabled: Vec<Variant>,
}

/// What the variants need to know about this machine, gathered once.
pub(crate) struct Env {
    pub options: LoadOptions,
    /// aya's BTF handle, needed to load `tp_btf` programs.
    pub aya_btf: Result<aya::Btf, String>,
    pub tracefs: Result<Tracefs, String>,
    pub layout: Layout,
}

/// One attempt in a chain: load and attach one variant.
pub(crate) type Attempt = fn(&mut Ebpf, &Env) -> Result<(), String>;

/// Tries `chain` in order; the first success wins.
pub(crate) fn attach_chain(
    ebpf: &mut Ebpf,
    env: &Env,
    signal: &'static str,
    chain: &[(Variant, Attempt)],
) -> SignalStatus {
    let mut status = SignalStatus {
        signal,
        attached: None,
        skipped: Vec::new(),
    };
    for (variant, attempt) in chain {
        let outcome = if env.options.disabled.contains(variant) {
            Err("disabled by the caller (--disable-variant)".to_owned())
        } else {
            attempt(ebpf, env)
        };
        match outcome {
            Ok(()) => {
                status.attached = Some(*variant);
                break;
            }
            Err(reason) => status.skipped.push(Skipped {
                variant: *variant,
                reason,
            }),
        }
    }
    status
}

/// The loaded object with every signal's chosen variant attached. Dropping it
/// detaches every program and frees every map (nothing is pinned).
pub struct Probes {
    ebpf: Ebpf,
    report: Report,
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
        let tracefs = Tracefs::find_or_mount();
        if let Err(e) = &tracefs {
            warnings.push(format!("{e}; classic tracepoint variants are unavailable"));
        }
        let env = {
            let btf = Btf::from_sys_fs();
            let layout = Layout::resolve(btf.as_ref(), tracefs.as_ref());
            // Our reader is dropped here: it held all of vmlinux's types.
            Env {
                options: options.clone(),
                aya_btf: aya::Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}")),
                tracefs: tracefs.map_err(|e| e.to_string()),
                layout,
            }
        };
        if let Some(problem) = &env.layout.btf_problem {
            warnings.push(format!(
                "kernel struct offsets unknown ({problem}); signals that read kernel structs \
                 are unavailable"
            ));
        }
        let ebpf = EbpfLoader::new()
            .override_global(
                nettune_common::offsets::OFFSETS_GLOBAL,
                &env.layout.offsets,
                true,
            )
            .load(OBJECT)
            .map_err(|e| LoadError::Object(Box::new(e)))?;
        let mut probes = Self {
            ebpf,
            report: Report {
                signals: Vec::new(),
                warnings,
            },
        };
        let status = retransmit::attach(&mut probes.ebpf, &env);
        probes.report.signals.push(status);
        Ok(probes)
    }

    /// What attached, what was skipped and why.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Sum over CPUs of the programs' own error counters, by error kind.
    pub fn probe_errors(&self) -> Result<Vec<(nettune_common::ProbeError, u64)>, LoadError> {
        use aya::maps::PerCpuArray;
        let name = "PROBE_ERRORS";
        let map_err = |e| LoadError::Map {
            name,
            source: Box::new(e),
        };
        let map = self.ebpf.map(name).ok_or_else(|| {
            map_err(aya::maps::MapError::InvalidName {
                name: name.to_owned(),
            })
        })?;
        let errors: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_err)?;
        nettune_common::ProbeError::ALL
            .iter()
            .map(|&e| {
                let values = errors.get(&(e as u32), 0).map_err(map_err)?;
                Ok((e, values.iter().fold(0u64, |a, v| a.saturating_add(*v))))
            })
            .collect()
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
