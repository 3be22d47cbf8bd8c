//! `nettune check` between two pod-like namespaces routed through the host,
//! against real servers the test starts in the server's namespace — `iperf3 -s`,
//! dnsmasq, a small HTTP server — and compared with the same tools run by hand
//! from the client's namespace in the same test: iperf3's own JSON, dnsperf and
//! dig, and `ab`.
//!
//! Tolerances (a 2-core machine shared with other work; each pair of figures is
//! measured back to back, not at once):
//! - throughput through nettune's iperf3 run: within a factor of [`IPERF_FACTOR`]
//!   of iperf3's by hand; the built-in stream within [`BUILTIN_FACTOR`];
//! - DNS: the mean lookup time within [`DNS_MEAN_MS`] ms of dnsperf's (one query
//!   outstanding, as nettune sends them), the same count of answers, and every
//!   lookup of a name dnsmasq does not know is the NXDOMAIN dig shows;
//! - HTTP: requests per second and the mean request time within a factor of
//!   [`HTTP_FACTOR`] of ab's (same -n and -c), the same count of failures and of
//!   non-2xx responses;
//! - connect: the median within 1 ms of ab's median connect time (ab counts
//!   whole milliseconds);
//! - ICMP echo: the mean round trip within [`PING_MEAN_MS`] ms of `ping`'s, every
//!   request answered both ways.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    bench::{pods::Pods, process::Spawned},
    containerd::{Containerd, Pod, PodSpec, require_containers},
    harness::{Outcome, Test, TestResult, require_root},
    host::TempDir,
    netns::Netns,
};
use serde_json::Value;

use bpf_tests::dns::Dnsmasq;

use crate::{agent::nettune_bin, conversations::DnsperfReport};

pub const TESTS: &[Test] = &[
    Test {
        name: "check::figures_match_iperf3_dnsperf_dig_and_ab_run_by_hand",
        run: figures_match_iperf3_dnsperf_dig_and_ab_run_by_hand,
    },
    Test {
        name: "check::compare_across_an_apply_shows_the_sysctls_it_wrote",
        run: compare_across_an_apply_shows_the_sysctls_it_wrote,
    },
    Test {
        name: "check::on_a_terminal_a_progress_line_runs_until_the_table_replaces_it",
        run: on_a_terminal_a_progress_line_runs_until_the_table_replaces_it,
    },
    Test {
        name: "check::between_runtime_pods_named_by_cri_the_figures_match_iperf3_and_ab",
        run: between_runtime_pods_named_by_cri_the_figures_match_iperf3_and_ab,
    },
];

/// nettune's iperf3 figure may differ from iperf3's by hand by this factor.
const IPERF_FACTOR: f64 = 2.0;
/// The built-in stream's figure may differ from iperf3's by hand by this factor.
const BUILTIN_FACTOR: f64 = 4.0;
/// nettune's mean DNS lookup time may differ from dnsperf's by this many ms.
const DNS_MEAN_MS: f64 = 1.0;
/// nettune's mean ICMP round trip may differ from ping's by this many ms.
const PING_MEAN_MS: f64 = 1.0;
/// nettune's HTTP rate and mean time may differ from ab's by this factor.
const HTTP_FACTOR: f64 = 3.0;

const IPERF_PORT: &str = "5231";
const HTTP_PORT: u16 = 8089;

/// A small HTTP/1.0 server on `addr` inside `ns`: 200 with a short body for
/// `/`, 404 for anything else; one thread per connection; stopped on drop.
struct HttpServer {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    /// Where its connections came from, since the last [`HttpServer::peers`].
    peers: Arc<Mutex<BTreeSet<IpAddr>>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl HttpServer {
    fn start(ns: &Netns, addr: SocketAddr) -> anyhow::Result<Self> {
        // Bound inside the namespace; served from anywhere (the socket stays there).
        let listener = ns.run(|| TcpListener::bind(addr))??;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let peers = Arc::new(Mutex::new(BTreeSet::new()));
        let seen = peers.clone();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let Ok(mut stream) = stream else { continue };
                if let (Ok(peer), Ok(mut seen)) = (stream.peer_addr(), seen.lock()) {
                    seen.insert(peer.ip());
                }
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let found = request.starts_with(b"GET / ");
                    let body = if found {
                        "hello from the server\n"
                    } else {
                        "no\n"
                    };
                    let status = if found { "200 OK" } else { "404 Not Found" };
                    let _ = write!(
                        stream,
                        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
            Ok(())
        });
        Ok(Self {
            stop,
            addr,
            peers,
            thread: Some(thread),
        })
    }

    /// The addresses connections came from since the last call.
    fn peers(&self) -> BTreeSet<IpAddr> {
        self.peers
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop (from the host: the route goes through it).
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `/etc/netns/<name>/resolv.conf` naming `server` (what `ip netns exec` shows
/// the namespace's processes, and what nettune reads for it); removed on drop.
struct ResolvConf(PathBuf);

impl ResolvConf {
    fn write(ns: &Netns, server: Ipv4Addr) -> anyhow::Result<Self> {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("resolv.conf"), format!("nameserver {server}\n"))?;
        Ok(Self(dir))
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // /etc/netns itself, when nothing else is in it.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// The client and the server: pod-like namespaces, or pods of a real containerd.
enum Peers {
    Namespaces(Pods),
    Runtime(Box<RuntimePods>),
}

/// Two pods of a private containerd.
struct RuntimePods {
    // Pods before the runtime: their namespaces go with their sandboxes.
    client: Pod,
    server: Pod,
    _containerd: Containerd,
}

/// Two pods (client, server) with the servers running and, for namespaces, the
/// client's resolv.conf naming dnsmasq.
struct Setup {
    _resolv: Option<ResolvConf>,
    http: HttpServer,
    _dnsmasq: Dnsmasq,
    _iperf: Spawned,
    scratch: TempDir,
    peers: Peers,
}

impl Setup {
    /// Between two pod-like namespaces routed through the host.
    fn new(tag: &str) -> anyhow::Result<Self> {
        Self::start(tag, Peers::Namespaces(Pods::new(2, tag)?), "")
    }

    /// Between two pods a real containerd made (`nt-check/client`, `nt-check/server`).
    fn with_runtime(tag: &str) -> anyhow::Result<Self> {
        let mut containerd = Containerd::start()?;
        let spec = |name| PodSpec {
            name,
            namespace: "nt-check",
            annotations: &[],
            host_network: false,
        };
        let client = containerd.run_pod(&spec("client"))?;
        let server = containerd.run_pod(&spec("server"))?;
        let identity = format!(
            "[identity]\ncri_socket = \"{}\"\ncri_timeout_seconds = 2.0\n",
            containerd.socket.display()
        );
        Self::start(
            tag,
            Peers::Runtime(Box::new(RuntimePods {
                client,
                server,
                _containerd: containerd,
            })),
            &identity,
        )
    }

    fn start(tag: &str, peers: Peers, config: &str) -> anyhow::Result<Self> {
        let (client, server, server_ip) = match &peers {
            Peers::Namespaces(pods) => (&pods.pods[0].ns, &pods.pods[1].ns, pods.pods[1].addr()),
            Peers::Runtime(pods) => (
                pods.client.netns()?,
                pods.server.netns()?,
                pods.server.ip.context("the server pod has no IP")?,
            ),
        };
        let addr = server_ip.to_string();
        let iperf = Spawned::start(
            "ip",
            &[
                "netns",
                "exec",
                server.name(),
                "iperf3",
                "-s",
                "-B",
                &addr,
                "-p",
                IPERF_PORT,
            ],
        )
        .context("iperf3 (Debian: iperf3)")?;
        let dnsmasq = Dnsmasq::start(server, server_ip)?;
        let http = HttpServer::start(server, SocketAddr::new(server_ip.into(), HTTP_PORT))?;
        let resolv = match &peers {
            Peers::Namespaces(_) => Some(ResolvConf::write(client, server_ip)?),
            Peers::Runtime(_) => None,
        };
        let scratch = TempDir::new(&format!("check-{tag}"))?;
        // Node-wide sysctls would change the host when `apply` runs: leave them out.
        let node_wide: Vec<String> = nettune::model::tunables::ALL
            .iter()
            .filter(|t| t.scope == nettune::model::tunables::Scope::Node)
            .map(|t| format!("\"{}\"", t.name))
            .collect();
        std::fs::write(
            scratch.join("nettune.toml"),
            format!(
                "[tuning]\nstate_dir = \"{}\"\nexclude = [{}]\n{config}",
                scratch.join("state").display(),
                node_wide.join(", ")
            ),
        )?;
        // iperf3 -s needs a moment to listen.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect_timeout(
            &format!("{addr}:{IPERF_PORT}").parse()?,
            Duration::from_millis(200),
        )
        .is_err()
        {
            ensure!(
                std::time::Instant::now() < deadline,
                "iperf3 -s never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            _resolv: resolv,
            http,
            _dnsmasq: dnsmasq,
            _iperf: iperf,
            scratch,
            peers,
        })
    }

    fn client(&self) -> &Netns {
        match &self.peers {
            Peers::Namespaces(pods) => &pods.pods[0].ns,
            Peers::Runtime(pods) => pods.client.netns().expect("checked at the start"),
        }
    }

    fn client_addr(&self) -> Ipv4Addr {
        match &self.peers {
            Peers::Namespaces(pods) => pods.pods[0].addr(),
            Peers::Runtime(pods) => pods.client.ip.expect("a pod of its own network"),
        }
    }

    /// Runs `nettune check ARGS`, and checks that every connection the HTTP
    /// server saw meanwhile came from the client's address: the tests ran inside
    /// its namespace (the host reaches the server too, from another address).
    fn check_from_client(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        self.http.peers();
        let result = self.check(args)?;
        let peers = self.http.peers();
        let client = IpAddr::V4(self.client_addr());
        ensure!(
            !peers.is_empty() && peers.iter().all(|p| *p == client),
            "connections from {peers:?}, not only from the client's {client}"
        );
        Ok(result)
    }

    fn server_addr(&self) -> Ipv4Addr {
        match &self.peers {
            Peers::Namespaces(pods) => pods.pods[1].addr(),
            Peers::Runtime(pods) => pods.server.ip.expect("checked at the start"),
        }
    }

    /// `--from` and `--to`: `netns:` names, or the pods' `namespace/name`.
    fn endpoints(&self) -> (String, String) {
        match &self.peers {
            Peers::Namespaces(pods) => (
                pods.pods[0].ns.name().to_owned(),
                format!("netns:{}", pods.pods[1].ns.name()),
            ),
            Peers::Runtime(pods) => (
                format!("{}/{}", pods.client.namespace, pods.client.name),
                format!("{}/{}", pods.server.namespace, pods.server.name),
            ),
        }
    }

    /// `nettune --config … check --from client --to server ARGS`: exit code,
    /// stdout, stderr.
    fn check(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let (from, to) = self.endpoints();
        let port = HTTP_PORT.to_string();
        let mut all = vec!["check", "--from", &from, "--to", &to, "--port", &port];
        all.extend_from_slice(&["--iperf-port", IPERF_PORT]);
        all.extend_from_slice(args);
        self.nettune(None, &all)
    }

    /// `nettune --config … ARGS`, inside `ns` when given.
    fn nettune(&self, ns: Option<&Netns>, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.name()]).arg(nettune_bin()?);
                c
            }
            None => Command::new(nettune_bin()?),
        };
        let out = cmd
            .arg("--config")
            .arg(self.scratch.join("nettune.toml"))
            .args(args)
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

/// nettune's throughput (iperf3) next to iperf3's by hand; returns iperf3's Mbit/s.
fn compare_throughput(setup: &Setup, ours: &Value) -> anyhow::Result<f64> {
    let server = setup.server_addr().to_string();
    let by_hand: Value = serde_json::from_str(&setup.client().exec(
        "iperf3",
        &["-c", &server, "-p", IPERF_PORT, "-t", "3", "-J"],
    )?)?;
    let theirs = f64_at(&by_hand, &["end", "sum_received", "bits_per_second"])? / 1e6;
    let measured = &ours["throughput"]["measured"];
    let mbps = f64_at(measured, &["mbps"])?;
    println!("    throughput: nettune (iperf3) {mbps:.0} Mbit/s, iperf3 by hand {theirs:.0}");
    ensure!(measured["tool"] == "iperf3", "{}", ours["throughput"]);
    ensure!(
        within_factor(mbps, theirs, IPERF_FACTOR),
        "throughput {mbps} vs iperf3's {theirs}"
    );
    Ok(theirs)
}

/// nettune's HTTP and connect figures next to `ab`'s with the same -n and -c.
fn compare_http(
    setup: &Setup,
    ours: &Value,
    requests: &str,
    concurrency: &str,
) -> anyhow::Result<()> {
    let url = format!("http://{}:{HTTP_PORT}/", setup.server_addr());
    let ab = setup
        .client()
        .exec("ab", &["-n", requests, "-c", concurrency, &url])?;
    let http = &ours["http"]["measured"];
    let (ours_rate, ours_mean) = (
        f64_at(http, &["rate"])?,
        f64_at(http, &["latency_ms", "mean"])?,
    );
    let (ab_rate, ab_mean) = (
        ab_figure(&ab, "Requests per second:")?,
        ab_figure(&ab, "Time per request:")?,
    );
    println!(
        "    http: nettune {ours_rate:.0} req/s mean {ours_mean:.2} ms; ab {ab_rate:.0} req/s mean {ab_mean:.2} ms"
    );
    ensure!(
        http["completed"].as_f64() == requests.parse().ok()
            && http["errors"] == 0
            && http["non_2xx"] == 0,
        "{http}"
    );
    ensure!(
        ab_figure(&ab, "Failed requests:")? == 0.0 && !ab.contains("Non-2xx"),
        "{ab}"
    );
    ensure!(
        within_factor(ours_rate, ab_rate, HTTP_FACTOR),
        "rate {ours_rate} vs ab's {ab_rate}"
    );
    ensure!(
        within_factor(ours_mean, ab_mean, HTTP_FACTOR) || (ours_mean - ab_mean).abs() < 1.0,
        "mean {ours_mean} ms vs ab's {ab_mean} ms"
    );
    let connect = &ours["latency"]["measured"];
    let ours_p50 = f64_at(connect, &["connect_ms", "p50"])?;
    let ab_connect = ab_connect_median(&ab)?;
    println!(
        "    connect: nettune p50 {ours_p50:.3} ms p99 {:.3} ms; ab median {ab_connect} ms",
        f64_at(connect, &["connect_ms", "p99"])?
    );
    ensure!(connect["failures"] == 0, "{connect}");
    ensure!(
        (ours_p50 - ab_connect).abs() <= 1.0,
        "connect p50 {ours_p50} vs ab's {ab_connect}"
    );
    Ok(())
}

fn f64_at(v: &Value, path: &[&str]) -> anyhow::Result<f64> {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .with_context(|| format!("no {} in {v}", path.join(".")))
}

/// What ab printed: a line's first number after `label`.
fn ab_figure(text: &str, label: &str) -> anyhow::Result<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {label:?} in ab's report:\n{text}"))
}

/// The median of ab's `Connect:` row (min mean sd median max).
fn ab_connect_median(text: &str) -> anyhow::Result<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Connect:"))
        .and_then(|rest| rest.split_whitespace().nth(3)?.parse().ok())
        .with_context(|| format!("no Connect: row in ab's report:\n{text}"))
}

fn within_factor(ours: f64, theirs: f64, factor: f64) -> bool {
    ours <= theirs * factor && ours >= theirs / factor
}

fn figures_match_iperf3_dnsperf_dig_and_ab_run_by_hand() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let setup = Setup::new("chk")?;
    let server = setup.server_addr().to_string();
    let (requests, concurrency) = ("2000", "10");

    // nettune check, every test, with bounds it meets.
    let (code, stdout, stderr) = setup.check_from_client(&[
        "--json",
        "--seconds",
        "3",
        "--connects",
        "200",
        "--dns-queries",
        "300",
        "--dns-name",
        "ok.test",
        "-n",
        requests,
        "-c",
        concurrency,
        "--max-dns-failures",
        "0",
        "--max-http-errors",
        "0",
        "--max-connect-failures",
        "0",
        "--min-throughput-mbps",
        "1",
    ])?;
    ensure!(code == 0, "check exited {code}:\n{stdout}\n{stderr}");
    ensure!(
        !stderr.contains("check:"),
        "a progress line without a terminal:\n{stderr}"
    );
    let ours: Value = serde_json::from_str(&stdout).context("check --json")?;
    let measured = |test: &str| ours[test]["measured"].clone();

    // Throughput: iperf3 by hand, from the same namespace to the same server.
    let theirs_mbps = compare_throughput(&setup, &ours)?;

    // The built-in stream, to a sink nettune starts in the server's namespace.
    let (code, stdout, stderr) = setup.check(&[
        "--json",
        "--no-save",
        "--tests",
        "throughput",
        "--builtin-stream",
        "--seconds",
        "3",
    ])?;
    ensure!(
        code == 0,
        "built-in stream: exit {code}:\n{stdout}\n{stderr}"
    );
    let builtin: Value = serde_json::from_str(&stdout)?;
    let builtin_mbps = f64_at(&builtin["throughput"]["measured"], &["mbps"])?;
    println!("    throughput: nettune built-in {builtin_mbps:.0} Mbit/s");
    ensure!(builtin["throughput"]["measured"]["tool"] == "builtin");
    ensure!(
        within_factor(builtin_mbps, theirs_mbps, BUILTIN_FACTOR),
        "built-in {builtin_mbps} vs iperf3's {theirs_mbps}"
    );

    // ICMP echo: ping by hand, the same count; nettune's requests leave the
    // client's namespace (its OutEchos), not the host's.
    let out_echos = || setup.client().mib("snmp", "Icmp", "OutEchos");
    let echos_before = out_echos()?;
    let (code, stdout, stderr) = setup.check(&[
        "--json",
        "--no-save",
        "--tests",
        "ping",
        "--pings",
        "50",
        "--max-ping-loss",
        "0",
    ])?;
    ensure!(code == 0, "ping: exit {code}:\n{stdout}\n{stderr}");
    ensure!(
        out_echos()? - echos_before == 50,
        "the client sent {} echo requests",
        out_echos()? - echos_before
    );
    let pinged: Value = serde_json::from_str(&stdout)?;
    let echo = &pinged["ping"]["measured"];
    let by_hand = setup
        .client()
        .exec("ping", &["-c", "50", "-i", "0.01", "-q", &server])?;
    // "rtt min/avg/max/mdev = 0.031/0.046/0.090/0.012 ms"
    let avg: f64 = by_hand
        .lines()
        .find_map(|l| l.split(" = ").nth(1)?.split('/').nth(1)?.parse().ok())
        .with_context(|| format!("no rtt line in ping's report:\n{by_hand}"))?;
    let ours_avg = f64_at(echo, &["rtt_ms", "mean"])?;
    println!(
        "    ping: nettune mean {ours_avg:.3} ms, {} of 50; ping avg {avg:.3} ms",
        echo["received"]
    );
    ensure!(
        by_hand.contains("50 packets transmitted, 50 received"),
        "{by_hand}"
    );
    ensure!(echo["sent"] == 50 && echo["received"] == 50, "{echo}");
    ensure!(
        (ours_avg - avg).abs() <= PING_MEAN_MS,
        "mean {ours_avg} ms vs ping's {avg} ms"
    );

    // DNS: dnsperf with one query outstanding, the same name and count.
    let dns = measured("dns");
    ensure!(
        dns["server"] == format!("{server}:53"),
        "asked {} (not the resolv.conf's)",
        dns["server"]
    );
    let file = setup.scratch.join("queries.txt");
    std::fs::write(&file, "ok.test A\n".repeat(300))?;
    let report = setup.client().exec(
        "dnsperf",
        &[
            "-s",
            &server,
            "-d",
            &file.display().to_string(),
            "-n",
            "1",
            "-q",
            "1",
            "-t",
            "1",
        ],
    )?;
    let theirs = DnsperfReport::parse(&report)?;
    let ours_mean = f64_at(&dns, &["latency_ms", "mean"])?;
    println!(
        "    dns: nettune mean {ours_mean:.3} ms p99 {:.3} ms, {} failures; dnsperf mean {:.3} ms, completed {} lost {}",
        f64_at(&dns, &["latency_ms", "p99"])?,
        dns["failures"],
        theirs.mean_latency * 1000.0,
        theirs.completed,
        theirs.lost
    );
    ensure!(dns["queries"] == 300 && dns["failures"] == 0, "{dns}");
    ensure!(
        dns["rcodes"]["NOERROR"] == theirs.completed,
        "{dns} vs {theirs:?}"
    );
    ensure!(theirs.lost == 0 && theirs.sent == 300, "{theirs:?}");
    ensure!(
        (ours_mean - theirs.mean_latency * 1000.0).abs() <= DNS_MEAN_MS,
        "mean {ours_mean} ms vs dnsperf's {} s",
        theirs.mean_latency
    );

    // HTTP and connect: ab with the same -n and -c.
    compare_http(&setup, &ours, requests, concurrency)?;
    ensure!(
        measured("latency")["attempts"] == 200,
        "{}",
        ours["latency"]
    );

    // Failing its bounds: a name dnsmasq does not know (dig: NXDOMAIN) and a
    // path the server does not have (ab: non-2xx) — exit 1 and the table says so.
    let dig = setup.client().exec(
        "dig",
        &["+time=1", "+tries=1", &format!("@{server}"), "nx.test"],
    )?;
    ensure!(dig.contains("status: NXDOMAIN"), "{dig}");
    let missing = format!("http://{server}:{HTTP_PORT}/missing");
    let ab_missing = setup
        .client()
        .exec("ab", &["-n", "50", "-c", "5", &missing])?;
    let ab_non_2xx = ab_figure(&ab_missing, "Non-2xx responses:")?;
    let (code, table, stderr) = setup.check_from_client(&[
        "--no-save",
        "--tests",
        "dns,http",
        "--dns-queries",
        "20",
        "--dns-name",
        "nx.test",
        "-n",
        "50",
        "-c",
        "5",
        "--url",
        &missing,
        "--max-dns-failures",
        "0",
        "--max-http-errors",
        "0",
    ])?;
    println!("    failing run (exit {code}):\n{table}");
    ensure!(
        code == 1,
        "exit {code} for failed bounds:\n{table}\n{stderr}"
    );
    for line in [
        "dns failures",
        "--max-dns-failures 0 FAILED",
        "--max-http-errors 0 FAILED",
        "FAILED\n",
    ] {
        ensure!(table.contains(line), "no {line:?} in\n{table}");
    }
    let row = |name: &str| -> anyhow::Result<f64> {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} row in\n{table}"))
    };
    ensure!(row("dns failures")? == 20.0, "{table}");
    ensure!(
        row("http errors")? == ab_non_2xx,
        "nettune's non-2xx vs ab's {ab_non_2xx}:\n{table}"
    );
    let (code, json, _) = setup.check(&[
        "--no-save",
        "--json",
        "--tests",
        "dns",
        "--dns-queries",
        "5",
        "--dns-name",
        "nx.test",
        "--max-dns-failures",
        "4",
    ])?;
    let nx: Value = serde_json::from_str(&json)?;
    ensure!(
        code == 1 && nx["dns"]["measured"]["rcodes"]["NXDOMAIN"] == 5,
        "{json}"
    );

    // One saved run (the others were --no-save).
    let (_, list, _) = setup.nettune(None, &["check", "--list"])?;
    ensure!(
        list.lines().count() == 1 && list.contains("passed"),
        "{list}"
    );
    Ok(Outcome::Passed)
}

fn compare_across_an_apply_shows_the_sysctls_it_wrote() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let setup = Setup::new("cmp")?;
    let small = [
        "--tests",
        "latency,dns,http",
        "--connects",
        "50",
        "--dns-queries",
        "50",
        "--dns-name",
        "ok.test",
        "-n",
        "200",
    ];
    let (code, before, stderr) = setup.check(&small)?;
    ensure!(code == 0, "first run: exit {code}\n{before}\n{stderr}");
    // `apply` inside the client's namespace: there it is the node (node-wide
    // sysctls are excluded in the config), so what it writes is the client's.
    let (code, applied, stderr) =
        setup.nettune(Some(setup.client()), &["apply", "--profile", "production"])?;
    ensure!(code == 0, "apply: exit {code}\n{applied}\n{stderr}");
    let (code, after, stderr) = setup.check(&small)?;
    ensure!(code == 0, "second run: exit {code}\n{after}\n{stderr}");

    let (code, compared, stderr) = setup.nettune(None, &["check", "--compare", "last"])?;
    println!("    nettune check --compare last:\n{compared}");
    ensure!(code == 0, "compare: exit {code}\n{stderr}");
    let written = setup
        .client()
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range"))??
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    ensure!(
        compared.contains("net.ipv4.ip_local_port_range (source): ")
            && compared.contains(&format!("→ {written}  (written by nettune at")),
        "the widened port range is not among the changes:\n{compared}"
    );
    ensure!(
        compared.contains("net.ipv4.ip_local_reserved_ports (source)"),
        "{compared}"
    );
    // Every figure of both runs is there, side by side.
    for figure in ["connect p50", "dns mean", "http rate"] {
        ensure!(
            compared.lines().filter(|l| l.starts_with(figure)).count() == 1,
            "no {figure}:\n{compared}"
        );
    }
    let (_, json, _) =
        setup.nettune(None, &["check", "--compare", "previous", "last", "--json"])?;
    let json: Value = serde_json::from_str(&json)?;
    let changes = json["tuning_changes"]
        .as_array()
        .context("tuning_changes")?;
    ensure!(
        changes
            .iter()
            .any(|c| c["sysctl"] == "net.ipv4.ip_local_port_range"
                && !c["writes"].as_array().is_none_or(Vec::is_empty)),
        "{json:#}"
    );
    // Comparing the first run with itself: nothing changed in between.
    let first = json["before"]["id"].as_str().context("id")?.to_owned();
    let (_, same, _) = setup.nettune(None, &["check", "--compare", &first, &first])?;
    ensure!(
        same.contains("no tuning changes between the two runs"),
        "{same}"
    );
    let (code, _, _) = setup.nettune(Some(setup.client()), &["rollback"])?;
    ensure!(code == 0, "rollback failed");
    Ok(Outcome::Passed)
}

fn between_runtime_pods_named_by_cri_the_figures_match_iperf3_and_ab() -> TestResult {
    if let Some(skip) = require_containers(false) {
        return skip;
    }
    let setup = Setup::with_runtime("pods")?;
    let Peers::Runtime(pods) = &setup.peers else {
        unreachable!("made with a runtime");
    };
    let (client, server) = (&pods.client, &pods.server);
    let dns_server = format!("{}:53", setup.server_addr());
    let (requests, concurrency) = ("1000", "10");
    let (code, stdout, stderr) = setup.check_from_client(&[
        "--json",
        "--seconds",
        "3",
        "--connects",
        "100",
        "--dns-queries",
        "100",
        "--dns-name",
        "ok.test",
        "--dns-server",
        &dns_server,
        "-n",
        requests,
        "-c",
        concurrency,
        "--max-dns-failures",
        "0",
        "--max-http-errors",
        "0",
        "--max-connect-failures",
        "0",
    ])?;
    ensure!(code == 0, "check exited {code}:\n{stdout}\n{stderr}");
    let ours: Value = serde_json::from_str(&stdout).context("check --json")?;
    // The pods the runtime named: their namespaces, the server's IP.
    ensure!(
        ours["from"]["kind"] == "pod" && ours["to"]["kind"] == "pod",
        "{}",
        ours["from"]
    );
    ensure!(
        ours["from"]["inode"] == client.inode()?,
        "{} vs {}",
        ours["from"],
        client.inode()?
    );
    ensure!(ours["to"]["inode"] == server.inode()?, "{}", ours["to"]);
    ensure!(
        ours["to"]["address"] == setup.server_addr().to_string(),
        "{}",
        ours["to"]
    );
    compare_throughput(&setup, &ours)?;
    compare_http(&setup, &ours, requests, concurrency)?;
    let dns = &ours["dns"]["measured"];
    ensure!(dns["queries"] == 100 && dns["failures"] == 0, "{dns}");
    // A pod that is not there: exit 1, saying so.
    let (code, _, stderr) = setup.nettune(
        None,
        &[
            "check",
            "--from",
            "nt-check/client",
            "--to",
            "nt-check/nobody",
        ],
    )?;
    ensure!(
        code == 1 && stderr.contains("no ready pod nt-check/nobody"),
        "{stderr}"
    );
    Ok(Outcome::Passed)
}

fn on_a_terminal_a_progress_line_runs_until_the_table_replaces_it() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let setup = Setup::new("tty")?;
    let (from, to) = setup.endpoints();
    let command = format!(
        "{} --config {} check --from {from} --to {to} --iperf-port {IPERF_PORT} --tests throughput --seconds 4 --no-save; sleep 60",
        nettune_bin()?.display(),
        setup.scratch.join("nettune.toml").display()
    );
    let session = bpf_tests::tmux::Session::start("check", 100, 30, &command)?;
    let running = session.wait_for(Duration::from_secs(5), "the progress line", |screen| {
        screen.contains("check: throughput ")
    })?;
    println!(
        "    while running: {:?}",
        running
            .lines()
            .find(|l| l.contains("check:"))
            .unwrap_or_default()
    );
    let done = session.wait_for(Duration::from_secs(15), "the table", |screen| {
        screen.contains("passed")
    })?;
    println!("    at the end:\n{}", done.trim_end());
    ensure!(
        !done.contains("check: throughput"),
        "the progress line was left on the screen:\n{done}"
    );
    ensure!(done.contains("Mbit/s"), "{done}");
    Ok(Outcome::Passed)
}
