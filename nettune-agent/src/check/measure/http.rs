//! HTTP/1.1 requests, counted by status.

use crate::check::stats::Summary;
use anyhow::{Context as _, ensure};
use serde::{Deserialize, Serialize};
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::*;

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
