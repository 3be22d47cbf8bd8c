//! What each subcommand does, once the command line is parsed (see main.rs): one
//! file per subcommand, and the helpers they share.

pub mod apply;
pub mod audit;
pub mod check;
pub mod diagnose;
pub mod probes;
pub mod rollback;
pub mod run;

use anyhow::Context as _;
use nettune::probes::{LoadOptions, Probes};

/// Loads the probes, with a hint when the failure is a permission problem.
fn load_probes(options: &LoadOptions) -> anyhow::Result<Probes> {
    Probes::load(options).with_context(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            "loading eBPF programs failed".to_owned()
        } else {
            "loading eBPF programs failed (not running as root: nettune needs root, or \
             CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN + CAP_SYS_ADMIN)"
                .to_owned()
        }
    })
}

/// Prints `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Exit code 0 when `ok`, else 1.
fn exit_code(ok: bool) -> std::process::ExitCode {
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
