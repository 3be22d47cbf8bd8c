//! Fallback chains: try each variant of a signal in order, keep the first that
//! works, and remember why the others did not.

use aya::{Ebpf, programs::ProgramError};

use super::offsets::{MissingOffsets, ResolvedOffsets};
use crate::{
    model::probes::{SignalStatus, Skipped, Variant},
    sys::tracefs::{Tracefs, TracefsError},
};

/// Most keys one pod's namespace may create in each shared map (see
/// `nettune_common::budget`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceBudgets {
    /// In `DROPS`.
    pub drops: u32,
    /// In `LISTEN_OVERFLOWS`.
    pub listen: u32,
}

impl Default for NamespaceBudgets {
    fn default() -> Self {
        let (drops, listen) = nettune_common::budget::default_budgets();
        Self { drops, listen }
    }
}

/// Choices the caller makes about loading.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Variants not to try even where the kernel supports them (to force or test a
    /// fallback).
    pub disabled: Vec<Variant>,
    /// Kernel BTF to use instead of `/sys/kernel/btf/vmlinux` (e.g. a file from
    /// btfhub for a kernel built without `CONFIG_DEBUG_INFO_BTF`).
    pub btf_path: Option<std::path::PathBuf>,
    /// tracefs mount to use instead of finding (or mounting) it.
    pub tracefs_path: Option<std::path::PathBuf>,
    /// Have the programs send no urgent events (no ring-buffer wake-ups in the
    /// kernel; for an agent that collects on its tick only).
    pub without_urgent_events: bool,
    /// Have the kernel count each program's runs and run time
    /// (`agent.program_stats`; costs every run two clock reads).
    pub program_stats: bool,
    /// The per-namespace budgets in the shared maps.
    pub budgets: NamespaceBudgets,
}

/// Why one variant could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The caller asked not to try it.
    #[error("disabled by the caller (--disable-variant)")]
    Disabled,
    /// The object lacks the program (a build problem).
    #[error("program {0} missing from the object")]
    Missing(&'static str),
    /// aya's parse of the kernel's BTF failed.
    #[error("no kernel BTF: {0}")]
    NoBtf(#[source] std::sync::Arc<aya::BtfError>),
    /// tracefs is not there.
    #[error(transparent)]
    NoTracefs(#[from] std::sync::Arc<TracefsError>),
    /// A struct offset the program needs is unknown.
    #[error(transparent)]
    Offsets(#[from] MissingOffsets),
    /// The kernel refused to load the program.
    #[error("load{}: {}{}", target_of(.target), error_chain(.source), hint(.source))]
    Load {
        /// The kernel function or tracepoint, if any.
        target: Option<String>,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
    /// The kernel is older than the variant needs.
    #[error("kernel {running} predates {feature} ({needs})")]
    TooOld {
        /// The running kernel's version.
        running: String,
        /// The feature.
        feature: &'static str,
        /// The first version that has it.
        needs: &'static str,
    },
    /// The running kernel's version could not be read.
    #[error("cannot tell the kernel's version: {0}")]
    KernelVersion(String),
    /// The kernel refused to attach the program.
    #[error("attach{}: {}{}", target_of(.target), error_chain(.source), hint(.source))]
    Attach {
        /// The kernel function or tracepoint, if any.
        target: Option<String>,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
}

fn target_of(target: &Option<String>) -> String {
    target
        .as_ref()
        .map_or_else(String::new, |t| format!(" {t}"))
}

/// What every attempt may need to know about this machine, gathered once.
pub(crate) struct AttachContext {
    /// The caller's choices.
    pub options: LoadOptions,
    /// aya's BTF handle, needed to load `tp_btf` and fentry programs.
    pub aya_btf: Result<aya::Btf, std::sync::Arc<aya::BtfError>>,
    /// tracefs, needed by classic tracepoints.
    pub tracefs: Result<Tracefs, std::sync::Arc<TracefsError>>,
    /// Offsets and drop reasons resolved for this kernel.
    pub offsets: ResolvedOffsets,
}

impl AttachContext {
    /// aya's BTF, or why there is none.
    pub fn btf(&self) -> Result<&aya::Btf, AttachError> {
        self.aya_btf
            .as_ref()
            .map_err(|e| AttachError::NoBtf(e.clone()))
    }
}

/// One attempt in a chain: load and attach one variant, or say why not.
pub(crate) type Attempt = fn(&mut Ebpf, &AttachContext) -> Result<(), AttachError>;

/// Tries `chain` in order; the first success wins.
pub(crate) fn attach_chain(
    ebpf: &mut Ebpf,
    context: &AttachContext,
    signal: &'static str,
    chain: &[(Variant, Attempt)],
) -> SignalStatus {
    let mut status = SignalStatus {
        signal: signal.to_owned(),
        attached: None,
        skipped: Vec::new(),
        on_demand: None,
    };
    for (variant, attempt) in chain {
        let outcome = if context.options.disabled.contains(variant) {
            Err(AttachError::Disabled)
        } else {
            attempt(ebpf, context)
        };
        match outcome {
            Ok(()) => {
                status.attached = Some(*variant);
                break;
            }
            Err(e) => status.skipped.push(Skipped {
                variant: *variant,
                reason: e.to_string(),
            }),
        }
    }
    status
}

/// An error with its causes, on one line (aya's errors nest the errno).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        // aya sometimes repeats its message in the source: say it once.
        if !text.ends_with(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The errno at the bottom of an error's chain, if any.
fn errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut at = Some(e);
    while let Some(e) = at {
        if let Some(code) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(code);
        }
        at = e.source();
    }
    None
}

/// `ENOTSUPP` (kernel-internal, 524): the kernel will not do this for that target.
const ENOTSUPP: i32 = 524;

/// What a kernel's refusal usually means, for the report.
fn hint(e: &ProgramError) -> &'static str {
    if let ProgramError::KProbeError(aya::programs::kprobe::KProbeError::FileError {
        filename, ..
    }) = e
        && filename.ends_with("kprobe/type")
    {
        return " (this kernel has no kprobe support: CONFIG_KPROBES is off)";
    }
    let load_errno = match e {
        ProgramError::LoadError { io_error, .. } => io_error.raw_os_error(),
        other => errno(other),
    };
    match load_errno {
        Some(libc::EPERM) => {
            " (the kernel refused the program before verification: BPF trampolines are \
             disabled or restricted here)"
        }
        Some(ENOTSUPP) => {
            " (ENOTSUPP: this kernel will not build a BPF trampoline for this function, \
             as Debian 12's 6.1 does for tcp_v{4,6}_syn_recv_sock)"
        }
        _ => "",
    }
}

/// The program `name` from the object, as type `T`.
pub(crate) fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, AttachError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(AttachError::Missing(name))?
        .try_into()
        .map_err(|source| AttachError::Load {
            target: None,
            source,
        })
}

/// A load error about `target`.
pub(crate) fn load_error(target: &str) -> impl FnOnce(ProgramError) -> AttachError + '_ {
    move |source| AttachError::Load {
        target: Some(target.to_owned()),
        source,
    }
}

/// An attach error about `target`.
pub(crate) fn attach_error(target: &str) -> impl FnOnce(ProgramError) -> AttachError + '_ {
    move |source| AttachError::Attach {
        target: Some(target.to_owned()),
        source,
    }
}

/// Loads and attaches a `tp_btf` program to `event`; a program already loaded
/// (another signal shares it) is attached already.
pub(crate) fn attach_tp_btf(
    ebpf: &mut Ebpf,
    context: &AttachContext,
    name: &'static str,
    event: &str,
) -> Result<(), AttachError> {
    let btf = context.btf()?;
    let p: &mut aya::programs::BtfTracePoint = program(ebpf, name)?;
    if p.fd().is_ok() {
        return Ok(());
    }
    p.load(event, btf).map_err(load_error(event))?;
    p.attach().map_err(attach_error(event))?;
    Ok(())
}

/// Loads and attaches a classic tracepoint program to `category/event`.
pub(crate) fn attach_tracepoint(
    ebpf: &mut Ebpf,
    context: &AttachContext,
    name: &'static str,
    category: &str,
    event: &str,
) -> Result<(), AttachError> {
    context.tracefs.as_ref().map_err(Clone::clone)?;
    let p: &mut aya::programs::TracePoint = program(ebpf, name)?;
    let target = format!("{category}/{event}");
    p.load().map_err(load_error(&target))?;
    p.attach(category, event).map_err(attach_error(&target))?;
    Ok(())
}
