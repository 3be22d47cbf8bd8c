//! `nettune check`: the guide's tests between two pods, as one command.
//!
//! The tests run inside the source's network namespace — on a thread that joined
//! it with `setns(2)`, whose children (iperf3, the HTTP workers) are born there
//! too — and go only to the target given (DNS: to the source's own nameserver),
//! each bounded in count and time:
//! - throughput: `iperf3 -c` to an `iperf3 -s` on the target when iperf3 is
//!   installed, else a built-in TCP stream to a sink nettune starts inside the
//!   target's namespace ([`measure::iperf3`], [`measure::send_stream`]);
//! - latency: TCP connect times ([`measure::connect_latency`]);
//! - ping: ICMP echo round trips through a raw socket, where permitted
//!   ([`measure::icmp_echo`]);
//! - DNS: A lookups through the source's `resolv.conf` nameserver ([`dns`]);
//! - HTTP: GETs at a concurrency, one connection each, as `ab` makes them.
//!
//! A run's figures, its bounds, the sysctls and the tuning journal at its start
//! are saved ([`store`]); [`report::comparison`] puts two runs side by side with
//! the tuning changes between them.

pub mod dns;
pub mod measure;
pub mod report;
pub mod stats;
pub mod store;
pub mod target;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use self::{
    measure::Progress,
    report::{Bounds, Outcome, Run, Sysctls},
    target::Endpoint,
};
use crate::{
    model::tunables::{self, Scope},
    sys::{netns, sysctl},
};

/// Which tests to run and how far each may go.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Throughput: seconds of streaming (`None`: not run).
    pub throughput_seconds: Option<u32>,
    /// The target's iperf3 server port.
    pub iperf_port: u16,
    /// Use the built-in stream even when iperf3 is installed.
    pub builtin_stream: bool,
    /// Latency: connects (`None`: not run).
    pub connects: Option<u64>,
    /// The port connected to.
    pub port: u16,
    /// ICMP echo: requests (`None`: not run).
    pub pings: Option<u64>,
    /// DNS: lookups (`None`: not run).
    pub dns_queries: Option<u64>,
    /// The name looked up.
    pub dns_name: String,
    /// Ask this nameserver instead of the source's resolv.conf's.
    pub dns_server: Option<SocketAddr>,
    /// HTTP: requests (`None`: not run).
    pub http_requests: Option<u64>,
    /// Requests at once.
    pub concurrency: u64,
    /// The URL (default `http://<target>:<port>/`).
    pub url: Option<String>,
    /// One connect, lookup or request may take this long.
    pub op_timeout: Duration,
    /// One test may take this long in all.
    pub test_timeout: Duration,
    /// The bounds.
    pub bounds: Bounds,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs `f` on a thread inside the namespace at `path` (here when `None`).
fn in_namespace<R: Send>(path: Option<&Path>, f: impl FnOnce() -> R + Send) -> anyhow::Result<R> {
    match path {
        None => Ok(f()),
        Some(p) => netns::inside(p, f).with_context(|| format!("entering {}", p.display())),
    }
}

/// Whether `program` is on `$PATH`.
fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Reads every tunable that can be read: node-wide ones here, per-namespace ones
/// inside `source` (here as well when it is the node).
fn read_sysctls(source: Option<&Path>) -> Sysctls {
    let read = |scope: Scope| -> BTreeMap<String, String> {
        tunables::ALL
            .iter()
            .filter(|t| t.scope == scope)
            .filter_map(|t| {
                let path = sysctl::path_under(Path::new(sysctl::PROC_SYS), t.name).ok()?;
                let value = sysctl::read_file(&path).ok()?;
                Some((
                    t.name.to_owned(),
                    value.split_whitespace().collect::<Vec<_>>().join(" "),
                ))
            })
            .collect()
    };
    let mut node = read(Scope::Node);
    let source = match source {
        None => {
            node.extend(read(Scope::Netns));
            BTreeMap::new()
        }
        Some(p) => in_namespace(Some(p), || read(Scope::Netns)).unwrap_or_default(),
    };
    Sysctls { node, source }
}

/// The nameserver the source's processes use, and where that was read.
fn source_nameserver(plan: &Plan, from: &Endpoint) -> anyhow::Result<(SocketAddr, PathBuf)> {
    if let Some(server) = plan.dns_server {
        return Ok((server, PathBuf::from("--dns-server")));
    }
    let file = from
        .resolv_conf
        .clone()
        .with_context(|| format!("`{}` has no resolv.conf: give --dns-server", from.spec))?;
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading {} (or give --dns-server)", file.display()))?;
    let server = dns::nameserver(&file, &text)?
        .with_context(|| format!("{} names no nameserver", file.display()))?;
    Ok((server, file))
}

/// Runs `plan` from `from` to `to`; `journal` is the tuning journal as read now.
/// The run is not saved here ([`store::save`]).
pub fn run(
    plan: &Plan,
    from: Endpoint,
    to: Endpoint,
    journal: Vec<crate::tune::journal::Entry>,
    progress: &dyn Progress,
) -> Run {
    let started = unix_now();
    let source = from.netns_path.clone();
    let sysctls = read_sysctls(source.as_deref());
    let address = to.address;
    let no_address = || format!("`{}` has no address to test against", to.spec);
    let fail = |e: anyhow::Error| format!("{e:#}");

    let throughput = plan.throughput_seconds.map(|seconds| {
        let Some(ip) = address else {
            return Outcome::Failed(no_address());
        };
        let result = if !plan.builtin_stream && installed("iperf3") {
            in_namespace(source.as_deref(), || {
                ticking(progress, "throughput", seconds, || {
                    measure::iperf3(
                        SocketAddr::new(ip, plan.iperf_port),
                        seconds,
                        plan.op_timeout * 5,
                    )
                })
            })
            .and_then(|r| r)
        } else {
            builtin_stream(plan, &to, ip, source.as_deref(), seconds, progress)
        };
        result.map_or_else(|e| Outcome::Failed(fail(e)), Outcome::Measured)
    });
    let latency = plan.connects.map(|count| {
        let Some(ip) = address else {
            return Outcome::Failed(no_address());
        };
        in_namespace(source.as_deref(), || {
            measure::connect_latency(
                SocketAddr::new(ip, plan.port),
                count,
                plan.op_timeout,
                plan.test_timeout,
                progress,
            )
        })
        .map_or_else(|e| Outcome::Failed(fail(e)), Outcome::Measured)
    });
    let ping = plan.pings.map(|count| {
        let ip = match address {
            Some(IpAddr::V4(ip)) => ip,
            Some(IpAddr::V6(_)) => return Outcome::Failed("ICMP echo: IPv4 targets only".into()),
            None => return Outcome::Failed(no_address()),
        };
        in_namespace(source.as_deref(), || {
            measure::icmp_echo(ip, count, plan.op_timeout, plan.test_timeout, progress)
        })
        .and_then(|r| r)
        .map_or_else(|e| Outcome::Failed(fail(e)), Outcome::Measured)
    });
    let dns = plan.dns_queries.map(|count| {
        let result = source_nameserver(plan, &from).and_then(|(server, file)| {
            in_namespace(source.as_deref(), || {
                measure::dns_lookups(
                    server,
                    &file,
                    &plan.dns_name,
                    count,
                    plan.op_timeout,
                    plan.test_timeout,
                    progress,
                )
            })
            .and_then(|r| r)
        });
        result.map_or_else(|e| Outcome::Failed(fail(e)), Outcome::Measured)
    });
    let http = plan.http_requests.map(|requests| {
        let url = match (&plan.url, address) {
            (Some(url), _) => url.clone(),
            (None, Some(IpAddr::V6(ip))) => format!("http://[{ip}]:{}/", plan.port),
            (None, Some(ip)) => format!("http://{ip}:{}/", plan.port),
            (None, None) => return Outcome::Failed(no_address()),
        };
        in_namespace(source.as_deref(), || {
            measure::http_requests(
                &url,
                requests,
                plan.concurrency,
                plan.op_timeout,
                plan.test_timeout,
                progress,
            )
        })
        .and_then(|r| r)
        .map_or_else(|e| Outcome::Failed(fail(e)), Outcome::Measured)
    });
    let mut run = Run {
        id: String::new(),
        started,
        finished: unix_now(),
        from,
        to,
        throughput,
        latency,
        ping,
        dns,
        http,
        bounds: Vec::new(),
        passed: false,
        sysctls,
        journal,
    };
    run.check(&plan.bounds);
    run
}

/// The built-in stream: a sink inside the target's namespace, the sender inside
/// the source's.
fn builtin_stream(
    plan: &Plan,
    to: &Endpoint,
    ip: IpAddr,
    source: Option<&Path>,
    seconds: u32,
    progress: &dyn Progress,
) -> anyhow::Result<measure::Throughput> {
    if to.kind == "address" {
        anyhow::bail!(
            "iperf3 is not installed here (or --builtin-stream was given) and the built-in \
             stream needs a sink in the target's namespace: name a namespace or a pod, not an address"
        );
    }
    let limit = Duration::from_secs(u64::from(seconds)) + plan.op_timeout * 5;
    let target = to.netns_path.clone();
    let listener = in_namespace(target.as_deref(), || {
        measure::stream_sink(SocketAddr::new(ip, 0))
    })??;
    let sink_addr = listener.local_addr()?;
    std::thread::scope(|s| {
        // The listener's socket stays in the target's namespace wherever it is read.
        let sink = s.spawn(|| measure::receive_stream(&listener, limit));
        let sent = in_namespace(source, || {
            measure::send_stream(sink_addr, seconds, plan.op_timeout, progress)
        })
        .and_then(|r| r);
        let received = sink
            .join()
            .map_err(|_| anyhow::anyhow!("the sink panicked"))?;
        sent?;
        let (bytes, secs) = received?;
        anyhow::ensure!(secs > 0.0, "the built-in stream carried no data");
        Ok(measure::Throughput {
            tool: "builtin".into(),
            seconds: secs,
            mbps: bytes as f64 * 8.0 / secs / 1e6,
            retransmits: None,
        })
    })
}

/// Runs `f` (a tool that reports nothing while it runs, for about `seconds`)
/// while a thread steps the progress line by the clock.
fn ticking<R>(progress: &dyn Progress, test: &str, seconds: u32, f: impl FnOnce() -> R) -> R {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let started = std::time::Instant::now();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let elapsed = started.elapsed().as_secs().min(u64::from(seconds));
                progress.step(test, elapsed, u64::from(seconds));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let result = f();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })
}
