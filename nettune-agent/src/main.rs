//! The `nettune` binary: a thin CLI over the `nettune` library.
//!
//! Exit codes: 0 success; 1 a runtime failure (message on stderr); 2 bad usage.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use nettune::{
    netns,
    probes::{LoadOptions, Probes, Variant},
    sample::Sample,
};

#[derive(Parser)]
#[command(
    name = "nettune",
    version,
    about = "eBPF network observability and sysctl tuning for Kubernetes nodes",
    long_about = "nettune watches the kernel's network stack with eBPF (retransmits, drops, \
                  queue overflows, conntrack pressure), per node and per pod.\n\n\
                  Loading eBPF programs needs root (or CAP_BPF, CAP_PERFMON and \
                  CAP_NET_ADMIN). Logs go to stderr; set RUST_LOG=debug for per-tick detail."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Do not try this variant even if the kernel supports it (repeatable); the next
    /// variant in each signal's chain is used instead.
    #[arg(long = "disable-variant", value_name = "VARIANT")]
    disabled: Vec<Variant>,
    /// Kernel BTF to use instead of /sys/kernel/btf/vmlinux (for kernels built
    /// without CONFIG_DEBUG_INFO_BTF, e.g. a file from btfhub).
    #[arg(long, value_name = "FILE")]
    btf: Option<std::path::PathBuf>,
    /// tracefs mount point to use instead of /sys/kernel/tracing.
    #[arg(long, value_name = "DIR")]
    tracefs: Option<std::path::PathBuf>,
}

impl ProbeArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            disabled: self.disabled.clone(),
            btf_path: self.btf.clone(),
            tracefs_path: self.tracefs.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: load and attach the probes, report what they see every tick,
    /// and detach everything on Ctrl-C or SIGTERM.
    Run {
        /// Seconds between two reads of the kernel maps.
        #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
        interval: f64,
        #[command(flatten)]
        probes: ProbeArgs,
    },
    /// Load and attach every probe once, print which variant of each signal attached
    /// and why the others were skipped, then detach and exit. Exit code 1 if a
    /// signal has no working variant.
    Probes {
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        probes: ProbeArgs,
    },
}

fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|e| format!("`{s}` is not a number: {e}"))?;
    if v.is_finite() && (0.05..=3600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "`{s}` is out of range: the interval must be 0.05 to 3600 seconds"
        ))
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { interval, probes } => {
            run(Duration::from_secs_f64(interval), &probes.options())
        }
        Command::Probes { json, probes } => print_probes(json, &probes.options()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nettune: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the probes, with a hint when the failure is a permission problem.
fn load_probes(options: &LoadOptions) -> anyhow::Result<Probes> {
    Probes::load(options).with_context(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            "loading eBPF programs failed".to_owned()
        } else {
            "loading eBPF programs failed (not running as root: nettune needs root, or \
             CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN)"
                .to_owned()
        }
    })
}

fn print_probes(json: bool, options: &LoadOptions) -> anyhow::Result<ExitCode> {
    let probes = load_probes(options)?;
    let report = probes.report();
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    Ok(if report.all_attached() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run(interval: Duration, options: &LoadOptions) -> anyhow::Result<ExitCode> {
    let mut probes = load_probes(options)?;
    for status in &probes.report().signals {
        match status.attached {
            Some(variant) => log::info!("{}: attached {variant}", status.signal),
            None => log::warn!("{}: no variant could attach", status.signal),
        }
        for skipped in &status.skipped {
            log::info!(
                "{}: skipped {}: {}",
                status.signal,
                skipped.variant,
                skipped.reason
            );
        }
    }
    for warning in &probes.report().warnings {
        log::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(tick_until_signal(&mut probes, interval))?;
    drop(probes);
    log::info!("detached every program; exiting");
    Ok(ExitCode::SUCCESS)
}

/// Every `interval` until SIGINT or SIGTERM: follow interfaces and namespaces, and
/// read a Sample.
async fn tick_until_signal(probes: &mut Probes, interval: Duration) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut ticker = tokio::time::interval(interval);
    let mut reported_errors = 0;
    log::info!("running; Ctrl-C or SIGTERM stops");
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = ticker.tick() => {}
        }
        let changes = probes.refresh_interfaces()?;
        for (ifindex, name) in &changes.added {
            log::info!("watching interface {name} (ifindex {ifindex})");
        }
        for (ifindex, name) in &changes.removed {
            log::info!("interface {name} (ifindex {ifindex}) is gone");
        }
        for (name, reason) in &changes.failed {
            log::warn!("cannot watch interface {name}: {reason}");
        }
        let namespaces = netns::discover();
        let alive = namespaces.keys().copied().collect();
        probes.forget_namespaces(&alive)?;
        let sample = Sample::collect(probes, &namespaces)?;
        for event in probes.drain_events() {
            log::info!("urgent event: {event:?}");
        }
        let errors: u64 = sample.probe_errors.iter().map(|(_, n)| n).sum();
        if errors > reported_errors {
            log::warn!(
                "eBPF programs reported {errors} internal errors so far: {:?}",
                sample.probe_errors
            );
            reported_errors = errors;
        }
        log::debug!(
            "{} namespaces, {} interfaces, {} flows with retransmits",
            sample.netns.len(),
            sample.interfaces.len(),
            sample.flows.len()
        );
    }
    log::info!("signal received; detaching");
    Ok(())
}
