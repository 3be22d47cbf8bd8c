//! Traffic for benchmarks, between the benchmark's own namespaces only, every
//! loop bounded in count and time: datagram floods (drops), 1-byte
//! request/response, connect-per-request, iperf3 bulk throughput, and a SYN
//! flood against a listener that never accepts.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::process::{Spawned, pin_thread_to};
use crate::{netns::Netns, sockets::connect_nonblocking};

/// Longest a server waits for its client before giving up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The CPU the datapath benchmarks pin both ends to: the last one.
pub fn bench_cpu() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get() - 1)
}

/// Sends 1-byte UDP datagrams from `from` to `to` — at most `count`, for at most
/// `max`, paced to `rate` per second when given — and returns how many the
/// kernel accepted. The socket is unconnected, so ICMP errors do not stop it.
pub fn udp_flood(
    from: &Netns,
    to: SocketAddr,
    count: u64,
    rate: Option<u64>,
    max: Duration,
) -> anyhow::Result<u64> {
    udp_flood_of(from, to, &[0x5a], count, rate, max)
}

/// A DNS query for `example.test` (A, recursion desired), as a resolver sends it.
pub const DNS_QUERY: &[u8] = &[
    0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 7, b'e', b'x', b'a',
    b'm', b'p', b'l', b'e', 4, b't', b'e', b's', b't', 0, 0x00, 0x01, 0x00, 0x01,
];

/// As [`udp_flood`], each datagram `payload`.
pub fn udp_flood_of(
    from: &Netns,
    to: SocketAddr,
    payload: &[u8],
    count: u64,
    rate: Option<u64>,
    max: Duration,
) -> anyhow::Result<u64> {
    from.run(|| -> anyhow::Result<u64> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        let started = Instant::now();
        let mut sent = 0u64;
        while sent < count && started.elapsed() < max {
            if let Some(rate) = rate {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                if sent >= due {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
            }
            // A full socket buffer (ENOBUFS) is not a sent datagram; carry on.
            if socket.send_to(payload, to).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    })?
}

/// 1-byte request, 1-byte response over one TCP connection for `duration`, both
/// ends pinned to `cpu`; returns transactions per second.
pub fn request_response(
    client: &Netns,
    server: &Netns,
    addr: SocketAddr,
    duration: Duration,
    cpu: usize,
) -> anyhow::Result<f64> {
    let handle = serve(server, addr, cpu, |listener| {
        let (mut stream, _) = accept_within(listener, SETUP_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(SETUP_TIMEOUT))?;
        let mut byte = [0u8; 1];
        while stream.read(&mut byte)? == 1 {
            stream.write_all(&byte)?;
        }
        Ok(())
    })?;
    let rate = client.run(|| -> anyhow::Result<f64> {
        pin_thread_to(cpu)?;
        let mut stream = TcpStream::connect_timeout(&addr, SETUP_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(SETUP_TIMEOUT))?;
        let started = Instant::now();
        let mut done = 0u64;
        let mut byte = [1u8; 1];
        while started.elapsed() < duration {
            stream.write_all(&byte)?;
            stream.read_exact(&mut byte)?;
            done += 1;
        }
        Ok(done as f64 / started.elapsed().as_secs_f64())
    })??;
    join(handle)?;
    Ok(rate)
}

/// A new TCP connection per 1-byte request/response for `duration` (at most
/// `max_connections`), both ends pinned to `cpu`; returns connections per second.
/// The client closes first; `tcp_tw_reuse` in its namespace lets it reuse ports
/// left in TIME_WAIT by earlier runs.
pub fn connect_request_response(
    client: &Netns,
    server: &Netns,
    addr: SocketAddr,
    duration: Duration,
    max_connections: u64,
    cpu: usize,
) -> anyhow::Result<f64> {
    client.write_sysctl("net/ipv4/tcp_tw_reuse", "1")?;
    // The server blocks in accept (no spinning on the shared CPU); one last
    // connection after `stop` is set wakes it to return.
    let stop = Arc::new(AtomicBool::new(false));
    let server_stop = Arc::clone(&stop);
    let handle = serve(server, addr, cpu, move |listener| {
        loop {
            let (mut stream, _) = listener.accept()?;
            if server_stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            stream.set_read_timeout(Some(SETUP_TIMEOUT))?;
            let mut byte = [0u8; 1];
            if stream.read(&mut byte)? == 1 {
                stream.write_all(&byte)?;
            }
            // Wait for the client's close, so the client closes first.
            let _ = stream.read(&mut byte);
        }
    })?;
    let rate = client.run(|| -> anyhow::Result<f64> {
        pin_thread_to(cpu)?;
        let started = Instant::now();
        let mut done = 0u64;
        let mut byte = [1u8; 1];
        while started.elapsed() < duration && done < max_connections {
            let mut stream = TcpStream::connect_timeout(&addr, SETUP_TIMEOUT)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(SETUP_TIMEOUT))?;
            stream.write_all(&byte)?;
            stream.read_exact(&mut byte)?;
            done += 1;
        }
        Ok(done as f64 / started.elapsed().as_secs_f64())
    });
    stop.store(true, Ordering::Relaxed);
    client.run(|| TcpStream::connect_timeout(&addr, SETUP_TIMEOUT))??;
    join(handle)?;
    rate?
}

/// iperf3 from `client` to `server`'s `addr` for `seconds`, both ends pinned to
/// `cpu` (`-A cpu,cpu`: on different CPUs a veth reorders packets); returns the
/// received bits per second.
pub fn iperf3(
    client: &Netns,
    server: &Netns,
    addr: Ipv4Addr,
    seconds: u32,
    cpu: usize,
) -> anyhow::Result<f64> {
    let (addr, cpu) = (addr.to_string(), cpu.to_string());
    let mut server_process = Spawned::start(
        "ip",
        &[
            "netns",
            "exec",
            server.name(),
            "iperf3",
            "-s",
            "-1",
            "-B",
            &addr,
            "-p",
            "5211",
        ],
    )?;
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let args = [
        "-c",
        &addr,
        "-p",
        "5211",
        "-t",
        &seconds.to_string(),
        "-A",
        &format!("{cpu},{cpu}"),
        "-J",
    ];
    // The server needs a moment to listen; until then iperf3 reports "unable to
    // connect" (in its JSON, with or without a failing exit status).
    loop {
        let error = match client.exec("iperf3", &args) {
            Ok(out) => {
                let json: serde_json::Value =
                    serde_json::from_str(&out).context("iperf3 -J output")?;
                if let Some(bits) = json["end"]["sum_received"]["bits_per_second"].as_f64() {
                    return Ok(bits);
                }
                anyhow::anyhow!("iperf3 reported no throughput: {}", json["error"])
            }
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(error);
        }
        server_process.check_running().context(error)?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Opens connections from `client` to a listener in `server` with `listen(backlog)`
/// that never accepts — at most `count`, for at most `max`, paced to `rate` per
/// second — closing each at once (the SYN has left). Returns connects started.
pub fn syn_flood(
    client: &Netns,
    server: &Netns,
    addr: SocketAddrV4,
    backlog: i32,
    (count, rate, max): (u64, u64, Duration),
) -> anyhow::Result<u64> {
    let listener = server.run(|| crate::sockets::listener_with_backlog(addr, backlog))??;
    let started = client.run(|| -> anyhow::Result<u64> {
        let t0 = Instant::now();
        let mut started = 0u64;
        while started < count && t0.elapsed() < max {
            let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
            if started >= due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            drop(connect_nonblocking(addr)?);
            started += 1;
        }
        Ok(started)
    })??;
    drop(listener);
    Ok(started)
}

type Server = std::thread::JoinHandle<anyhow::Result<anyhow::Result<()>>>;

/// Binds `addr` in `ns` on a thread pinned to `cpu`, then runs `body` on the
/// listener; returns once it listens.
fn serve(
    ns: &Netns,
    addr: SocketAddr,
    cpu: usize,
    body: impl FnOnce(&TcpListener) -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<Server> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = ns.spawn(move || -> anyhow::Result<()> {
        pin_thread_to(cpu)?;
        let listener = TcpListener::bind(addr).context("bind")?;
        ready_tx.send(()).ok();
        body(&listener)
    })?;
    if ready_rx.recv_timeout(SETUP_TIMEOUT).is_err() {
        return Err(join(handle)
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("server never listened")));
    }
    Ok(handle)
}

fn accept_within(
    listener: &TcpListener,
    timeout: Duration,
) -> anyhow::Result<(TcpStream, SocketAddr)> {
    listener.set_nonblocking(true)?;
    let started = Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(false)?;
                return Ok((stream, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if started.elapsed() > timeout {
                    bail!("no connection within {timeout:?}");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn join(handle: Server) -> anyhow::Result<()> {
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))???;
    Ok(())
}

/// System calls per second of a tight loop of `getppid(2)` on `cpu`, over
/// `calls` calls: the cost every system call of every task pays, which an
/// attached syscall tracepoint raises for the whole node (its slow path) and no
/// program's own run time shows.
pub fn syscall_rate(cpu: usize, calls: u64) -> anyhow::Result<f64> {
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<f64> {
            pin_thread_to(cpu)?;
            let started = Instant::now();
            for _ in 0..calls {
                // SAFETY: getppid takes no arguments and cannot fail.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            Ok(calls as f64 / started.elapsed().as_secs_f64())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the syscall loop panicked"))?
    })
}
