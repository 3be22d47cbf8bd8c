//! `nettune check`: the guide's tests between two pods, saved, and compared.

use std::{
    io::{IsTerminal as _, Write as _},
    net::SocketAddr,
    process::ExitCode,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nettune::{
    check::{
        self, Plan,
        measure::Progress,
        report::{self, Bounds},
        store,
        target::Resolver,
    },
    config::Config,
    tune::journal::Journal,
};

use super::{exit_code, print_json};

/// The tests `--tests` may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TestKind {
    /// iperf3 (or the built-in stream) to the target.
    Throughput,
    /// TCP connect times to the target's --port.
    Latency,
    /// ICMP echo round trips (a raw socket: root or CAP_NET_RAW).
    Ping,
    /// Lookups through the source's nameserver.
    Dns,
    /// HTTP GETs to --url (default http://TARGET:PORT/).
    Http,
}

/// `nettune check`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// Where the tests run from: a network namespace (`NAME` under /run/netns, or
    /// `netns:NAME`), a pod (`namespace/name`, found through the container
    /// runtime), or `host`.
    #[arg(long, value_name = "SOURCE", required_unless_present_any = ["compare", "list"])]
    from: Option<String>,
    /// Where they go: a namespace, a pod, `host` or an IP address.
    #[arg(long, value_name = "TARGET", required_unless_present_any = ["compare", "list"])]
    to: Option<String>,
    /// The tests to run (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,latency,dns,http"
    )]
    tests: Vec<TestKind>,
    /// Seconds of throughput streaming.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=60))]
    seconds: u32,
    /// The target's `iperf3 -s` port.
    #[arg(long, default_value_t = 5201)]
    iperf_port: u16,
    /// Use the built-in TCP stream (a sink nettune starts in the target's
    /// namespace) even when iperf3 is installed.
    #[arg(long)]
    builtin_stream: bool,
    /// TCP connects for the latency test.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    connects: u64,
    /// ICMP echo requests for the ping test.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pings: u64,
    /// The target's TCP port for the latency test and the default URL.
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// DNS lookups.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    dns_queries: u64,
    /// The name looked up (an A query, sent as is: no search domains).
    #[arg(long, default_value = "kubernetes.default.svc.cluster.local")]
    dns_name: String,
    /// Ask this nameserver (ADDR:PORT) instead of the source's resolv.conf's.
    #[arg(long, value_name = "ADDR:PORT")]
    dns_server: Option<SocketAddr>,
    /// HTTP requests (`ab -n`).
    #[arg(short = 'n', long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    requests: u64,
    /// HTTP requests at once (`ab -c`).
    #[arg(short = 'c', long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    concurrency: u64,
    /// The URL of the HTTP test (http:// only).
    #[arg(long)]
    url: Option<String>,
    /// Milliseconds one connect, lookup or request may take.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    timeout_ms: u64,
    /// Seconds one test may take in all (it stops early, with what it measured).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    test_timeout: u64,
    /// Fail (exit 1) below this throughput.
    #[arg(long, value_name = "MBPS")]
    min_throughput_mbps: Option<f64>,
    /// Fail when more connects than this fail.
    #[arg(long, value_name = "N")]
    max_connect_failures: Option<u64>,
    /// Fail when the 99th percentile connect time is above this.
    #[arg(long, value_name = "MS")]
    max_connect_p99_ms: Option<f64>,
    /// Fail when more echo requests than this go unanswered.
    #[arg(long, value_name = "N")]
    max_ping_loss: Option<u64>,
    /// Fail when more lookups than this fail (no answer, or no address).
    #[arg(long, value_name = "N")]
    max_dns_failures: Option<u64>,
    /// Fail when the 99th percentile lookup time is above this.
    #[arg(long, value_name = "MS")]
    max_dns_p99_ms: Option<f64>,
    /// Fail when more requests than this fail or answer other than 2xx.
    #[arg(long, value_name = "N")]
    max_http_errors: Option<u64>,
    /// Fail when the 99th percentile request time is above this.
    #[arg(long, value_name = "MS")]
    max_http_p99_ms: Option<f64>,
    /// Fail below this many completed requests per second.
    #[arg(long, value_name = "RATE")]
    min_http_rate: Option<f64>,
    /// Print the run (or the comparison) as JSON.
    #[arg(long)]
    json: bool,
    /// Do not save the run in the state directory.
    #[arg(long)]
    no_save: bool,
    /// Compare two saved runs (ids, `last`, `previous` or files); one run is
    /// compared with the run saved before it (`--compare last`).
    #[arg(long, num_args = 1..=2, value_name = "RUN", conflicts_with_all = ["from", "to", "list"])]
    compare: Option<Vec<String>>,
    /// List the saved runs.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    list: bool,
}

/// A progress line on stderr, when it is a terminal; at most ten updates a second.
struct TermProgress {
    last: Mutex<Option<Instant>>,
}

impl Progress for TermProgress {
    fn step(&self, test: &str, done: u64, total: u64) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) && done < total {
            return;
        }
        *last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2Kcheck: {test} {done}/{total}");
        let _ = err.flush();
    }
}

impl TermProgress {
    fn clear(&self) {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

/// Runs `nettune check`; exit code 1 when a test could not run, got nothing
/// through, or missed its bound.
pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let state = &config.tuning.state_dir;
    if args.list {
        for id in store::list(state)? {
            let run = store::load(state, &id)?;
            println!(
                "{id}  {} → {}  {}",
                run.from.spec,
                run.to.spec,
                if run.passed { "passed" } else { "FAILED" }
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(names) = &args.compare {
        return compare(config, names, args.json);
    }
    let (Some(from), Some(to)) = (&args.from, &args.to) else {
        bail!("--from and --to are required");
    };
    let has = |t| args.tests.contains(&t);
    let plan = Plan {
        throughput_seconds: has(TestKind::Throughput).then_some(args.seconds),
        iperf_port: args.iperf_port,
        builtin_stream: args.builtin_stream,
        connects: has(TestKind::Latency).then_some(args.connects),
        port: args.port,
        pings: has(TestKind::Ping).then_some(args.pings),
        dns_queries: has(TestKind::Dns).then_some(args.dns_queries),
        dns_name: args.dns_name.clone(),
        dns_server: args.dns_server,
        http_requests: has(TestKind::Http).then_some(args.requests),
        concurrency: args.concurrency,
        url: args.url.clone(),
        op_timeout: Duration::from_millis(args.timeout_ms),
        test_timeout: Duration::from_secs(args.test_timeout),
        bounds: Bounds {
            min_throughput_mbps: args.min_throughput_mbps,
            max_connect_failures: args.max_connect_failures,
            max_connect_p99_ms: args.max_connect_p99_ms,
            max_ping_loss: args.max_ping_loss,
            max_dns_failures: args.max_dns_failures,
            max_dns_p99_ms: args.max_dns_p99_ms,
            max_http_errors: args.max_http_errors,
            max_http_p99_ms: args.max_http_p99_ms,
            min_http_rate: args.min_http_rate,
        },
    };
    if let Some(url) = &plan.url {
        check::measure::HttpUrl::parse(url)?;
    }
    let mut resolver = Resolver::new(&config.identity);
    let source = resolver.resolve(from).context("--from")?;
    let target = resolver.resolve(to).context("--to")?;
    if source.kind == "address" {
        bail!("--from {from}: tests run inside a namespace or pod, not from an address");
    }
    let journal = match Journal::open(state) {
        Ok(j) => j.entries().to_vec(),
        Err(e) => {
            log::warn!("the tuning journal cannot be read ({e}): this run records no tuning state");
            Vec::new()
        }
    };
    let progress = TermProgress {
        last: Mutex::new(None),
    };
    let quiet = check::measure::Quiet;
    let shown: &dyn Progress = if std::io::stderr().is_terminal() {
        &progress
    } else {
        &quiet
    };
    let mut run = check::run(&plan, source, target, journal, shown);
    if std::io::stderr().is_terminal() {
        progress.clear();
    }
    let saved = if args.no_save {
        None
    } else {
        Some(store::save(state, &mut run)?)
    };
    if args.json {
        print_json(&run)?;
    } else {
        print!("{}", run.table());
        if let Some(path) = saved {
            println!(
                "saved as {} ({}); compare with: nettune check --compare {} RUN",
                run.id,
                path.display(),
                run.id
            );
        }
    }
    Ok(exit_code(run.passed))
}

/// Two saved runs side by side.
fn compare(config: &Config, names: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let state = &config.tuning.state_dir;
    let (a, b) = match names {
        [a, b] => (store::load(state, a)?, store::load(state, b)?),
        [one] => {
            let b = store::load(state, one)?;
            let ids = store::list(state)?;
            let before = ids
                .iter()
                .rev()
                .find(|id| id.as_str() < b.id.as_str())
                .with_context(|| format!("no run saved before {}", b.id))?;
            (store::load(state, before)?, b)
        }
        _ => bail!("--compare takes one or two runs"),
    };
    let changes = report::changes(&a, &b);
    if json {
        print_json(&serde_json::json!({ "before": a, "after": b, "tuning_changes": changes }))?;
    } else {
        print!("{}", report::comparison(&a, &b, &changes));
    }
    Ok(ExitCode::SUCCESS)
}
