//! ICMP echo on a raw socket.

use crate::check::stats::Summary;
use anyhow::bail;
use serde::{Deserialize, Serialize};
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use super::*;

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
