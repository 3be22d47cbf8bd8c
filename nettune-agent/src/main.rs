//! The `nettune` binary: a thin CLI over the `nettune` library.
//!
//! Exit codes: 0 success; 1 a runtime failure, a signal without any working
//! variant (`probes`), findings (`diagnose`), a non-compliant node (`audit`), a
//! failed write (`apply`) or restore (`rollback`), a test that failed or missed
//! its bound (`check`); 2 bad usage; 3 an invalid
//! config file.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use nettune::{
    config::{self, Config, ConfigError},
    model::probes::Variant,
    probes::{LoadOptions, NamespaceBudgets},
    top::{self, TopOptions},
};

mod commands;

#[derive(Parser)]
#[command(
    name = "nettune",
    version,
    about = "eBPF network observability and sysctl tuning for Kubernetes nodes",
    long_about = "nettune watches the kernel's network stack with eBPF (retransmits, drops by \
                  reason, listen-queue overflows, conntrack pressure, pod traffic), per node and \
                  per pod, and serves it to Prometheus.\n\n\
                  Loading eBPF programs needs root (or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and \
                  CAP_SYS_ADMIN). Logs go to stderr; RUST_LOG=debug shows per-tick detail.\n\n\
                  Exit codes: 0 success; 1 failure, or findings (diagnose); 2 bad usage; \
                  3 invalid config."
)]
struct Cli {
    /// Config file (default: $NETTUNE_CONFIG, else /etc/nettune/nettune.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Do not try this variant even if the kernel supports it (repeatable); the next
    /// variant in each signal's chain is used instead. Adds to probes.disable_variants.
    /// One of: tp_btf, tracepoint, fentry, kprobe, tcx, clsact, sock_diag, procfs.
    #[arg(long = "disable-variant", value_name = "VARIANT", value_parser = parse_variant)]
    disabled: Vec<Variant>,
    /// Kernel BTF to use instead of /sys/kernel/btf/vmlinux (for kernels built
    /// without CONFIG_DEBUG_INFO_BTF, e.g. a file from btfhub).
    #[arg(long, value_name = "FILE")]
    btf: Option<PathBuf>,
    /// tracefs mount point to use instead of /sys/kernel/tracing.
    #[arg(long, value_name = "DIR")]
    tracefs: Option<PathBuf>,
}

impl ProbeArgs {
    /// The config's probe settings, overridden by these flags.
    fn options(&self, config: &Config) -> LoadOptions {
        let mut disabled = config.probes.disable_variants.clone();
        disabled.extend(self.disabled.iter().copied());
        LoadOptions {
            disabled,
            btf_path: self.btf.clone().or_else(|| config.probes.btf.clone()),
            tracefs_path: self
                .tracefs
                .clone()
                .or_else(|| config.probes.tracefs.clone()),
            // Nobody would be woken: spare the kernel the events' cost.
            without_urgent_events: !config.agent.wake_on_events,
            program_stats: config.agent.program_stats,
            // The keys' bounds keep both within the maps.
            budgets: NamespaceBudgets {
                drops: u32::try_from(config.probes.drop_keys_per_namespace).unwrap_or(u32::MAX),
                listen: u32::try_from(config.probes.listen_keys_per_namespace).unwrap_or(u32::MAX),
            },
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: attach the probes, collect every tick, serve /metrics,
    /// /api/v1/snapshot, /healthz and /readyz; detach everything on Ctrl-C or SIGTERM.
    Run {
        /// Seconds between collections (overrides agent.interval_seconds).
        #[arg(long, value_parser = parse_interval)]
        interval: Option<f64>,
        /// Address of /metrics, /healthz, /readyz (overrides agent.listen), e.g.
        /// 0.0.0.0:9977.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Address of the JSON API (overrides agent.api_listen); the same as
        /// --listen serves everything on one address.
        #[arg(long, value_name = "ADDR:PORT")]
        api_listen: Option<std::net::SocketAddr>,
        /// Print the effective configuration (file, defaults and flags) and exit.
        #[arg(long)]
        print_config: bool,
        #[command(flatten)]
        probes: ProbeArgs,
    },
    /// A live, top-style view: per-pod rates, drop reasons, listen overflows,
    /// conntrack, and the tuner's decisions. Reads a running agent (--agent, or the
    /// one answering on agent.api_listen), else runs one in this process (root). Without
    /// a terminal it prints plain-text frames, like `top -b`.
    Top {
        /// A running agent's JSON API, e.g. http://127.0.0.1:9978 (inside a DaemonSet pod:
        /// `kubectl exec … -- nettune top --agent http://127.0.0.1:9978`).
        #[arg(long, value_name = "URL", conflicts_with = "prometheus")]
        agent: Option<String>,
        /// The whole cluster instead, from the Prometheus that scrapes the agents,
        /// e.g. http://prometheus.monitoring:9090 (a path after the port is kept):
        /// nodes ranked by drops, Enter for a node's pods and listeners.
        #[arg(long, value_name = "URL")]
        prometheus: Option<String>,
        /// The label that names each series' node in that Prometheus (the
        /// ServiceMonitor in deploy/ sets `node` from the agent pod's node).
        #[arg(long, value_name = "LABEL", default_value = top::cluster::DEFAULT_NODE_LABEL,
              requires = "prometheus")]
        node_label: String,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
        interval: f64,
        /// Stop after N refreshes (batch mode: default 1).
        #[arg(short = 'n', long = "iterations", value_name = "N")]
        iterations: Option<u64>,
        /// Print plain-text frames even on a terminal.
        #[arg(short = 'b', long)]
        batch: bool,
        #[command(flatten)]
        probes: ProbeArgs,
    },
    /// Attach every probe once, print which variant of each signal attached and why
    /// the others were skipped, then detach. Exit code 1 if a signal has no variant.
    Probes {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        probes: ProbeArgs,
    },
    /// Compare this node's sysctls with a profile: current, recommended, scope and
    /// impact of each. Exit code 0 when compliant, 1 when not.
    Audit {
        /// Profile to compare with.
        #[arg(long, default_value = "production")]
        profile: String,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply a profile's values to this node through the tuner's guardrails (never
    /// lowering room the node already has, never past a ceiling, never an excluded
    /// sysctl) and its journal, so `nettune rollback` can undo it. Exit code 1 if a
    /// write failed.
    Apply {
        /// Profile to apply (`production` is the guide's).
        #[arg(long)]
        profile: String,
        /// Decide and print, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the decisions as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore every value nettune changed (on the node and in pod namespaces that
    /// still exist) from the journal in tuning.state_dir. Safe to run twice, and after
    /// a crash. Exit code 1 if a value could not be restored.
    Rollback {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also restore values nettune stood down from because someone else
        /// changed them (by default they are left to their new owner).
        #[arg(long)]
        force: bool,
    },
    /// The guide's tests between two pods or namespaces — throughput (iperf3, else a
    /// built-in stream), TCP connect latency, ICMP echo, DNS lookups through the
    /// source's own nameserver, HTTP requests as `ab` makes them — run inside the
    /// source's namespace, bounded in count and time; a table (or --json), the run
    /// saved in tuning.state_dir, and `--compare` of two runs with the tuning
    /// changes between them. Exit code 1 if a test could not run, got nothing
    /// through, or missed its bound.
    Check(Box<commands::check::Args>),
    /// Check this node for the guide's common network problems (conntrack table,
    /// listen overflows, backlog drops, retransmissions, ephemeral ports) and print
    /// each finding with its evidence and fix. Exit code 1 if anything was found.
    Diagnose {
        /// Print the findings and the readings as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds to measure rates over.
        #[arg(long, default_value_t = 2.0, value_parser = parse_interval)]
        seconds: f64,
        /// Also attach nettune's probes for the measurement (root): drops by
        /// reason, and each pod's DNS, handshakes and ICMP errors, which procfs
        /// cannot show. Unanswered queries need `--seconds` past dns.timeout_seconds.
        #[arg(long)]
        with_probes: bool,
        #[command(flatten)]
        probes: ProbeArgs,
    },
}

fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|e| format!("`{s}` is not a number: {e}"))?;
    config::check_interval(v).map_err(|e| e.to_string())
}

fn parse_variant(s: &str) -> Result<Variant, String> {
    s.parse()
        .map_err(|e: nettune::model::probes::UnknownVariant| e.to_string())
}

/// A failure with its exit code.
enum Failure {
    Config(ConfigError),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs what it does; one-shot commands print their results and log
    // only problems.
    // `top` owns the terminal: its own logs would tear the screen.
    let default_level = match cli.command {
        Command::Run { .. } => "info",
        Command::Top { .. } => "error",
        _ => "warn",
    };

    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();

    match dispatch(cli) {
        Ok(code) => code,
        Err(Failure::Config(e)) => {
            eprintln!("nettune: invalid config: {e}");
            ExitCode::from(3)
        }
        Err(Failure::Other(e)) => {
            eprintln!("nettune: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    let config = || {
        let config = Config::load(cli.config.as_deref()).map_err(Failure::Config)?;
        nettune::sys::sysctl::use_root(config.tuning.proc_sys.clone());
        Ok::<_, Failure>(config)
    };
    match cli.command {
        Command::Run {
            interval,
            listen,
            api_listen,
            print_config,
            probes,
        } => {
            let mut config = config()?;
            if let Some(i) = interval {
                config.agent.interval_seconds = i;
            }
            if let Some(l) = listen {
                config.agent.listen = l;
            }
            if let Some(l) = api_listen {
                config.agent.api_listen = l;
            }
            let options = probes.options(&config);
            config.probes.disable_variants.clone_from(&options.disabled);
            if print_config {
                print!("{}", config.to_toml());
                return Ok(ExitCode::SUCCESS);
            }
            commands::run::run(config, &options)
        }
        Command::Probes { json, probes } => {
            let config = config()?;
            Ok(commands::probes::run(json, &probes.options(&config))?)
        }
        Command::Diagnose {
            json,
            seconds,
            with_probes,
            probes,
        } => {
            let config = config()?;
            let options = with_probes.then(|| probes.options(&config));
            Ok(commands::diagnose::run(
                &config,
                json,
                seconds,
                options.as_ref(),
            )?)
        }
        Command::Top {
            agent,
            prometheus,
            node_label,
            interval,
            iterations,
            batch,
            probes,
        } => {
            let config = config()?;
            let options = TopOptions {
                agent,
                prometheus,
                node_label,
                interval: Duration::from_secs_f64(interval),
                iterations,
                batch,
            };
            top::run(&options, &config, &probes.options(&config)).map_err(anyhow::Error::from)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => Ok(commands::check::run(&config()?, *args)?),
        Command::Audit { profile, json } => Ok(commands::audit::run(&config()?, &profile, json)?),
        Command::Apply {
            profile,
            dry_run,
            json,
        } => Ok(commands::apply::run(&config()?, &profile, dry_run, json)?),
        Command::Rollback { json, force } => Ok(commands::rollback::run(&config()?, json, force)?),
    }
}
