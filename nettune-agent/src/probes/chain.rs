//! Fallback chains: try each variant of a signal in order, keep the first that
//! works, and remember why the others did not.

use aya::Ebpf;

use super::offsets::ResolvedOffsets;
use crate::{
    model::probes::{SignalStatus, Skipped, Variant},
    sys::tracefs::Tracefs,
};

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
}

/// What every attempt may need to know about this machine, gathered once.
pub(crate) struct AttachContext {
    /// The caller's choices.
    pub options: LoadOptions,
    /// aya's BTF handle, needed to load `tp_btf` and fentry programs.
    pub aya_btf: Result<aya::Btf, String>,
    /// tracefs, needed by classic tracepoints.
    pub tracefs: Result<Tracefs, String>,
    /// Offsets and drop reasons resolved for this kernel.
    pub offsets: ResolvedOffsets,
}

/// One attempt in a chain: load and attach one variant, or say why not.
pub(crate) type Attempt = fn(&mut Ebpf, &AttachContext) -> Result<(), String>;

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
    };
    for (variant, attempt) in chain {
        let outcome = if context.options.disabled.contains(variant) {
            Err("disabled by the caller (--disable-variant)".to_owned())
        } else {
            attempt(ebpf, context)
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

/// The program `name` from the object, as type `T`.
pub(crate) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())
}

/// Loads and attaches a `tp_btf` program to `event`.
pub(crate) fn attach_tp_btf(
    ebpf: &mut Ebpf,
    context: &AttachContext,
    name: &str,
    event: &str,
) -> Result<(), String> {
    let btf = context.aya_btf.as_ref().map_err(Clone::clone)?;
    let p: &mut aya::programs::BtfTracePoint = program(ebpf, name)?;
    p.load(event, btf)
        .map_err(|e| format!("load: {}", error_chain(&e)))?;
    p.attach()
        .map_err(|e| format!("attach: {}", error_chain(&e)))?;
    Ok(())
}

/// Loads and attaches a classic tracepoint program to `category/event`.
pub(crate) fn attach_tracepoint(
    ebpf: &mut Ebpf,
    context: &AttachContext,
    name: &str,
    category: &str,
    event: &str,
) -> Result<(), String> {
    context.tracefs.as_ref().map_err(Clone::clone)?;
    let p: &mut aya::programs::TracePoint = program(ebpf, name)?;
    p.load().map_err(|e| format!("load: {}", error_chain(&e)))?;
    p.attach(category, event)
        .map_err(|e| format!("attach {category}/{event}: {}", error_chain(&e)))?;
    Ok(())
}
