//! The tests themselves, each run on the calling thread (which `nettune check`
//! has moved into the source's network namespace), bounded in count and time:
//! throughput (iperf3, else a built-in stream), TCP connect latency, DNS lookups
//! and HTTP requests.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs as _},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize};

use super::{
    dns::{self, Lookup},
    stats::Summary,
};

/// Reports how far a test has come (a progress line on a terminal).
pub trait Progress: Sync {
    /// `done` of `total` steps of `test`.
    fn step(&self, test: &str, done: u64, total: u64);
}

/// No progress shown.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: &str, _: u64, _: u64) {}
}

/// What a throughput test measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// `iperf3` or `builtin`.
    pub tool: String,
    /// Seconds the stream ran (as measured by the receiver).
    pub seconds: f64,
    /// Megabits per second received.
    pub mbps: f64,
    /// TCP retransmissions of the sender, when iperf3 reports them.
    pub retransmits: Option<u64>,
}

/// Runs `iperf3 -c addr -p port -t seconds -J` here and reads what it received.
pub fn iperf3(addr: SocketAddr, seconds: u32, timeout: Duration) -> anyhow::Result<Throughput> {
    let mut child = Command::new("iperf3")
        .args(["-c", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args([
            "-t",
            &seconds.to_string(),
            "-J",
            "--connect-timeout",
            "3000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running iperf3")?;
    let mut stdout = child.stdout.take().context("iperf3's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds)) + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("iperf3 did not finish within {seconds} s + {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader
        .join()
        .map_err(|_| anyhow::anyhow!("iperf3 reader panicked"))??;
    let json: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("iperf3 -J printed no JSON (exit {status})"))?;
    if let Some(error) = json["error"].as_str() {
        bail!("iperf3: {error}");
    }
    let received = &json["end"]["sum_received"];
    let bits = received["bits_per_second"]
        .as_f64()
        .context("iperf3 reported no end.sum_received.bits_per_second")?;
    Ok(Throughput {
        tool: "iperf3".into(),
        seconds: received["seconds"].as_f64().unwrap_or(f64::from(seconds)),
        mbps: bits / 1e6,
        retransmits: json["end"]["sum_sent"]["retransmits"].as_u64(),
    })
}

/// A sink for the built-in stream: bound to `addr` (port 0 picks one) in the
/// calling thread's namespace.
pub fn stream_sink(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("listening on {addr} for the built-in stream"))
}

/// Receives one stream on `listener` until it ends, for at most `limit`;
/// returns (bytes, seconds from the first byte to the last).
pub fn receive_stream(listener: &TcpListener, limit: Duration) -> anyhow::Result<(u64, f64)> {
    listener.set_nonblocking(true)?;
    let started = Instant::now();
    let (mut stream, _) = loop {
        match listener.accept() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ensure!(
                    started.elapsed() < limit,
                    "the built-in stream never connected"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(limit))?;
    let mut buf = vec![0u8; 256 * 1024];
    let (mut bytes, mut first, mut last) = (0u64, None, Instant::now());
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        bytes += n as u64;
        ensure!(
            started.elapsed() < limit * 2,
            "the built-in stream did not end"
        );
    }
    let seconds = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    Ok((bytes, seconds))
}

/// Sends a stream to `addr` for `seconds`, from here.
pub fn send_stream(
    addr: SocketAddr,
    seconds: u32,
    timeout: Duration,
    progress: &dyn Progress,
) -> anyhow::Result<u64> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to the built-in sink at {addr}"))?;
    stream.set_write_timeout(Some(timeout))?;
    let buf = vec![0x5au8; 128 * 1024];
    let started = Instant::now();
    let run = Duration::from_secs(u64::from(seconds));
    let mut sent = 0u64;
    while started.elapsed() < run {
        stream.write_all(&buf)?;
        sent += buf.len() as u64;
        progress.step(
            "throughput",
            started.elapsed().as_secs(),
            u64::from(seconds),
        );
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    Ok(sent)
}

/// What the connect test measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// The address connected to.
    pub address: SocketAddr,
    /// Connects tried.
    pub attempts: u64,
    /// Connects that failed (refused, unreachable, timed out).
    pub failures: u64,
    /// The first failure's reason.
    pub first_error: Option<String>,
    /// Time from `connect()` to established, of those that succeeded.
    pub connect_ms: Option<Summary>,
}

/// `count` TCP connects to `addr`, one after the other, each closed at once;
/// stops early when `budget` is spent.
pub fn connect_latency(
    addr: SocketAddr,
    count: u64,
    timeout: Duration,
    budget: Duration,
    progress: &dyn Progress,
) -> Latency {
    let started = Instant::now();
    let (mut times, mut failures, mut attempts, mut first_error) = (Vec::new(), 0, 0, None);
    while attempts < count && started.elapsed() < budget {
        attempts += 1;
        let t = Instant::now();
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                times.push(t.elapsed().as_secs_f64());
                drop(stream);
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
        progress.step("latency", attempts, count);
    }
    Latency {
        address: addr,
        attempts,
        failures,
        first_error,
        connect_ms: Summary::of_seconds(&times),
    }
}

/// What the ICMP echo test measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    /// The address pinged.
    pub address: Ipv4Addr,
    /// Echo requests sent.
    pub sent: u64,
    /// Echo replies received within the timeout.
    pub received: u64,
    /// Round-trip times of the replies.
    pub rtt_ms: Option<Summary>,
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(u16::try_from(sum).unwrap_or(0xffff))
}

/// An ICMP echo request with `id` and `seq` and a 16-byte payload.
pub fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut msg = vec![8, 0, 0, 0];
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(b"nettune-check-01");
    let sum = internet_checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// Whether `packet` (an IPv4 packet, as a raw socket reads it) is the echo reply
/// to `id`/`seq`.
pub fn is_echo_reply(packet: &[u8], id: u16, seq: u16) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let icmp = packet
        .get(usize::from(first & 0x0f) * 4..)
        .unwrap_or_default();
    icmp.len() >= 8
        && icmp[0] == 0
        && icmp[1] == 0
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

/// `count` ICMP echo requests to `addr`, one after the other, through a raw
/// socket (root or CAP_NET_RAW: "where permitted").
pub fn icmp_echo(
    addr: Ipv4Addr,
    count: u64,
    timeout: Duration,
    budget: Duration,
    progress: &dyn Progress,
) -> anyhow::Result<Ping> {
    // SAFETY: plain socket creation; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        bail!(
            "ICMP echo is not permitted here (a raw socket needs CAP_NET_RAW): {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: `fd` was just created and is owned here alone. A raw socket takes
    // sendto/recvfrom like a datagram socket, which is all UdpSocket calls.
    let socket = std::net::UdpSocket::from(unsafe {
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
    });
    let target = SocketAddr::from((addr, 0));
    let id = std::process::id() as u16;
    let started = Instant::now();
    let (mut sent, mut times) = (0u64, Vec::new());
    let mut buf = [0u8; 1500];
    while sent < count && started.elapsed() < budget {
        let seq = (sent & 0xffff) as u16;
        sent += 1;
        let t = Instant::now();
        socket.send_to(&echo_request(id, seq), target)?;
        loop {
            let left = timeout.saturating_sub(t.elapsed());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            match socket.recv_from(&mut buf) {
                Ok((n, from))
                    if from.ip() == IpAddr::V4(addr) && is_echo_reply(&buf[..n], id, seq) =>
                {
                    times.push(t.elapsed().as_secs_f64());
                    break;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        progress.step("ping", sent, count);
    }
    Ok(Ping {
        address: addr,
        sent,
        received: times.len() as u64,
        rtt_ms: Summary::of_seconds(&times),
    })
}

/// What the DNS test measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    /// The nameserver asked.
    pub server: SocketAddr,
    /// Where it was read from (or `--dns-server`).
    pub resolv_conf: String,
    /// The name looked up.
    pub name: String,
    /// Lookups sent.
    pub queries: u64,
    /// Lookups without a NOERROR answer holding an address.
    pub failures: u64,
    /// Lookups never answered within the timeout.
    pub timeouts: u64,
    /// Answers by response code.
    pub rcodes: BTreeMap<String, u64>,
    /// Time to an answer, of those answered.
    pub latency_ms: Option<Summary>,
}

/// `count` lookups of `name` at `server`, one after the other.
pub fn dns_lookups(
    server: SocketAddr,
    source: &Path,
    name: &str,
    count: u64,
    timeout: Duration,
    budget: Duration,
    progress: &dyn Progress,
) -> anyhow::Result<Dns> {
    dns::encode_query(0, name)?;
    let started = Instant::now();
    let mut result = Dns {
        server,
        resolv_conf: source.display().to_string(),
        name: name.to_owned(),
        queries: 0,
        failures: 0,
        timeouts: 0,
        rcodes: BTreeMap::new(),
        latency_ms: None,
    };
    let mut times = Vec::new();
    // Ids start from the process id so two runs side by side do not share them.
    let mut id = std::process::id() as u16;
    while result.queries < count && started.elapsed() < budget {
        result.queries += 1;
        id = id.wrapping_add(1);
        let lookup = dns::lookup(server, name, id, timeout);
        if !lookup.succeeded() {
            result.failures += 1;
        }
        match lookup {
            Lookup::Answered { seconds, rcode, .. } => {
                times.push(seconds);
                *result.rcodes.entry(dns::rcode_name(rcode)).or_default() += 1;
            }
            Lookup::TimedOut => result.timeouts += 1,
            Lookup::Error(e) => {
                *result.rcodes.entry(format!("error: {e}")).or_default() += 1;
            }
        }
        progress.step("dns", result.queries, count);
    }
    result.latency_ms = Summary::of_seconds(&times);
    Ok(result)
}

/// An `http://host[:port]/path` URL, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// The `Host` header's value.
    pub host: String,
    /// Host and port.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses `url` (plain HTTP only).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("`{url}`: only http:// URLs are supported"))?;
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
        ensure!(!authority.is_empty(), "`{url}` has no host");
        // `[::1]:8080`, `host:8080` or `host`.
        let (host, port) = match authority.rfind(']') {
            Some(end) => (
                &authority[..=end],
                authority[end + 1..].strip_prefix(':').unwrap_or("80"),
            ),
            None => authority.split_once(':').unwrap_or((authority, "80")),
        };
        let port: u16 = port
            .parse()
            .with_context(|| format!("`{url}`: port `{port}` is not a number"))?;
        Ok(Self {
            host: host.to_owned(),
            authority: format!("{host}:{port}"),
            path: path.to_owned(),
        })
    }
}

/// What the HTTP test measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Http {
    /// The URL requested.
    pub url: String,
    /// Requests to make.
    pub requests: u64,
    /// Requests at once.
    pub concurrency: u64,
    /// Requests answered with a complete response (any status).
    pub completed: u64,
    /// Requests that failed (connect, I/O, timeout, malformed response).
    pub errors: u64,
    /// Complete responses whose status was not 2xx.
    pub non_2xx: u64,
    /// The first error's reason.
    pub first_error: Option<String>,
    /// Wall time of the whole test.
    pub seconds: f64,
    /// Completed requests per second.
    pub rate: f64,
    /// Time from connect to the response's last byte, of the completed.
    pub latency_ms: Option<Summary>,
}

/// One request on its own connection (`Connection: close`, as `ab` does
/// without -k); the response's status once it is complete.
fn one_request(addr: SocketAddr, url: &HttpUrl, timeout: Duration) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: a request in pieces costs a packet each.
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nettune-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("response ended before its headers")?;
    let head = std::str::from_utf8(&response[..head_end]).context("headers not UTF-8")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .filter(|_| head.starts_with("HTTP/1."))
        .and_then(|s| s.parse().ok())
        .context("no HTTP/1.x status line")?;
    let body = response.len() - head_end - 4;
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    if let Some(length) = length {
        ensure!(body >= length, "body ended at {body} of {length} bytes");
    }
    Ok(status)
}

/// `requests` GETs of `url` with `concurrency` at once, as `ab -n -c` makes them.
pub fn http_requests(
    url_text: &str,
    requests: u64,
    concurrency: u64,
    timeout: Duration,
    budget: Duration,
    progress: &dyn Progress,
) -> anyhow::Result<Http> {
    let url = HttpUrl::parse(url_text)?;
    let addr = url
        .authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", url.authority))?
        .next()
        .with_context(|| format!("{} has no address", url.authority))?;
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let (errors, non_2xx) = (AtomicU64::new(0), AtomicU64::new(0));
    let first_error = Mutex::new(None);
    let started = Instant::now();
    let times: Vec<f64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..concurrency.min(requests).max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < requests
                        && started.elapsed() < budget
                    {
                        let t = Instant::now();
                        match one_request(addr, &url, timeout) {
                            Ok(status) => {
                                mine.push(t.elapsed().as_secs_f64());
                                if !(200..300).contains(&status) {
                                    non_2xx.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(e) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                if let Ok(mut first) = first_error.lock() {
                                    first.get_or_insert_with(|| format!("{e:#}"));
                                }
                            }
                        }
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        progress.step("http", d, requests);
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let completed = times.len() as u64;
    Ok(Http {
        url: url_text.to_owned(),
        requests,
        concurrency,
        completed,
        errors: errors.into_inner(),
        non_2xx: non_2xx.into_inner(),
        first_error: first_error.into_inner().unwrap_or_default(),
        seconds,
        rate: if seconds > 0.0 {
            completed as f64 / seconds
        } else {
            0.0
        },
        latency_ms: Summary::of_seconds(&times),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_checksums_to_zero_and_only_its_reply_matches() {
        let request = echo_request(0x1234, 7);
        assert_eq!(internet_checksum(&request), 0);
        assert_eq!(&request[..2], [8, 0]);
        // The reply as a raw socket reads it: a 20-byte IPv4 header first.
        let mut packet = vec![0x45; 1];
        packet.extend_from_slice(&[0; 19]);
        let mut reply = request.clone();
        reply[0] = 0;
        packet.extend_from_slice(&reply);
        assert!(is_echo_reply(&packet, 0x1234, 7));
        assert!(!is_echo_reply(&packet, 0x1234, 8));
        assert!(!is_echo_reply(&packet, 0x4321, 7));
        // Our own request, looped back on a raw socket, is no reply.
        packet[20] = 8;
        assert!(!is_echo_reply(&packet, 0x1234, 7));
        assert!(!is_echo_reply(&packet[..24], 0x1234, 7));
        assert!(!is_echo_reply(&[], 0x1234, 7));
        // RFC 1071's example: 0x0001 0xf203 0xf4f5 0xf6f7 sums to 0xddf2.
        assert_eq!(
            internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        let u = HttpUrl::parse("http://10.0.0.2:8080/x?y=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority.as_str(), u.path.as_str()),
            ("10.0.0.2", "10.0.0.2:8080", "/x?y=1")
        );
        let u = HttpUrl::parse("http://web").unwrap();
        assert_eq!((u.authority.as_str(), u.path.as_str()), ("web:80", "/"));
        let u = HttpUrl::parse("http://[fd00::2]:81/").unwrap();
        assert_eq!(u.authority, "[fd00::2]:81");
        assert!(
            HttpUrl::parse("https://x/")
                .unwrap_err()
                .to_string()
                .contains("only http://")
        );
        assert!(
            HttpUrl::parse("http://x:eighty/")
                .unwrap_err()
                .to_string()
                .contains("`eighty`")
        );
    }

    /// A loopback server answering each connection with `reply`.
    fn server(reply: &'static [u8], connections: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(connections) {
                let mut stream = stream.unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(reply);
            }
        });
        addr
    }

    #[test]
    fn http_counts_completed_non_2xx_and_broken_responses() {
        let ok = server(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", 6);
        let r = http_requests(
            &format!("http://{ok}/"),
            6,
            3,
            Duration::from_secs(2),
            Duration::from_secs(10),
            &Quiet,
        )
        .unwrap();
        assert_eq!((r.completed, r.errors, r.non_2xx), (6, 0, 0));
        assert_eq!(r.latency_ms.unwrap().count, 6);
        let missing = server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 2);
        let r = http_requests(
            &format!("http://{missing}/"),
            2,
            1,
            Duration::from_secs(2),
            Duration::from_secs(10),
            &Quiet,
        )
        .unwrap();
        assert_eq!((r.completed, r.errors, r.non_2xx), (2, 0, 2));
        let short = server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhi", 1);
        let r = http_requests(
            &format!("http://{short}/"),
            1,
            1,
            Duration::from_secs(2),
            Duration::from_secs(10),
            &Quiet,
        )
        .unwrap();
        assert_eq!((r.completed, r.errors), (0, 1));
        assert!(r.first_error.unwrap().contains("body ended at 2 of 10"));
    }

    #[test]
    fn refused_connects_are_failures_with_their_reason() {
        // A port nobody listens on: bind, read the port, close.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let l = connect_latency(
            addr,
            3,
            Duration::from_secs(1),
            Duration::from_secs(5),
            &Quiet,
        );
        assert_eq!((l.attempts, l.failures, l.connect_ms), (3, 3, None));
        assert!(l.first_error.unwrap().to_lowercase().contains("refused"));
    }
}
