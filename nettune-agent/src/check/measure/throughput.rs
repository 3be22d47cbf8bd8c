//! Throughput: iperf3 when installed, else a built-in stream.

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize};
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::*;

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
