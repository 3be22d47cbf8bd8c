//! Real TCP traffic between test namespaces, bounded in size and time.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::Netns;

/// Longest any step may take before the transfer is declared failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `bytes` from a client in `sender` to a server in `receiver` listening on
/// `addr`, then waits until both sides have closed. Returns the bytes received.
pub fn bulk_transfer(
    sender: &Netns,
    receiver: &Netns,
    addr: SocketAddr,
    bytes: usize,
) -> anyhow::Result<usize> {
    transfer(Some(sender), receiver, addr, bytes)
}

/// Like [`bulk_transfer`], with the client in the host namespace (this thread's).
pub fn bulk_transfer_from_host(
    receiver: &Netns,
    addr: SocketAddr,
    bytes: usize,
) -> anyhow::Result<usize> {
    transfer(None, receiver, addr, bytes)
}

fn transfer(
    sender: Option<&Netns>,
    receiver: &Netns,
    addr: SocketAddr,
    bytes: usize,
) -> anyhow::Result<usize> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = receiver.spawn(move || -> anyhow::Result<usize> {
        let listener = TcpListener::bind(addr).context("bind")?;
        listener.set_nonblocking(true)?;
        ready_tx.send(()).ok();
        let started = Instant::now();
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if started.elapsed() > STEP_TIMEOUT {
                        bail!("no connection within {STEP_TIMEOUT:?}");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e).context("accept"),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(STEP_TIMEOUT))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut received = 0;
        loop {
            match stream.read(&mut buf).context("read")? {
                0 => break,
                n => received += n,
            }
        }
        Ok(received)
    })?;
    if let Err(e) = ready_rx.recv_timeout(STEP_TIMEOUT) {
        // The server gave up before listening: its own error says why.
        let why = match server.join() {
            Ok(Ok(Err(server))) => format!("{server:#}"),
            Ok(Err(spawn)) => format!("{spawn:#}"),
            _ => "no error reported".to_owned(),
        };
        bail!("server never became ready ({e}): {why}");
    }
    let client = move || -> anyhow::Result<()> {
        let mut stream = TcpStream::connect_timeout(&addr, STEP_TIMEOUT).context("connect")?;
        stream.set_write_timeout(Some(STEP_TIMEOUT))?;
        stream.set_read_timeout(Some(STEP_TIMEOUT))?;
        let chunk = vec![0x5au8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            stream.write_all(&chunk[..n]).context("write")?;
            left -= n;
        }
        stream.shutdown(std::net::Shutdown::Write)?;
        // Wait for the server's close so every segment and FIN is acknowledged.
        let mut rest = [0u8; 16];
        while stream.read(&mut rest).context("waiting for close")? > 0 {}
        Ok(())
    };
    match sender {
        Some(ns) => ns.run(client)??,
        None => client()?,
    }
    let received = server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))???;
    Ok(received)
}

/// Sends `count` UDP datagrams of `size` bytes from `sender` to `target` with DF
/// set and the cached path MTU ignored (`IP_PMTUDISC_PROBE`), 200 ms apart: each
/// one larger than a hop's MTU draws an ICMP "fragmentation needed".
pub fn send_df_datagrams(
    sender: &Netns,
    target: SocketAddr,
    size: usize,
    count: usize,
) -> anyhow::Result<()> {
    sender.run(move || -> anyhow::Result<()> {
        let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
        let probe = libc::IP_PMTUDISC_PROBE;
        // SAFETY: a valid socket and a correctly sized int option.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&raw const probe).cast(),
                u32::try_from(size_of::<libc::c_int>())?,
            )
        };
        anyhow::ensure!(
            rc == 0,
            "IP_MTU_DISCOVER: {}",
            std::io::Error::last_os_error()
        );
        let payload = vec![0u8; size];
        for _ in 0..count {
            // An error the last ICMP queued may fail this send: not ours to count.
            let _ = socket.send_to(&payload, target);
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })?
}
