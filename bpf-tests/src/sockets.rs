//! Raw sockets for scenarios std cannot express: a listener with a chosen backlog
//! (std always asks for 128), connects that do not wait or come from a chosen
//! local address, and a packet socket that
//! makes the kernel drop what it cannot deliver.

use std::{
    net::SocketAddrV4,
    os::fd::{FromRawFd as _, OwnedFd},
};

use anyhow::bail;

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn tcp_socket(flags: i32) -> anyhow::Result<OwnedFd> {
    // SAFETY: plain socket creation; the fd is owned by the returned OwnedFd.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags,
            0,
        )
    };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A TCP listener on `addr` with `listen(backlog)`, in the calling thread's netns.
/// It never accepts: its accept queue fills after `backlog + 1` connections.
pub fn listener_with_backlog(addr: SocketAddrV4, backlog: i32) -> anyhow::Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let fd = tcp_socket(0)?;
    let sa = sockaddr(addr);
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: bind/listen on a socket we own with a valid sockaddr_in of `len` bytes.
    unsafe {
        if libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) != 0 {
            bail!("bind {addr}: {}", std::io::Error::last_os_error());
        }
        if libc::listen(fd.as_raw_fd(), backlog) != 0 {
            bail!("listen: {}", std::io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// Starts a non-blocking connect to `addr` and returns the socket at once.
pub fn connect_nonblocking(addr: SocketAddrV4) -> anyhow::Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let fd = tcp_socket(libc::SOCK_NONBLOCK)?;
    let sa = sockaddr(addr);
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: connect on a socket we own with a valid sockaddr_in.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), len) };
    let err = std::io::Error::last_os_error();
    if rc != 0 && err.raw_os_error() != Some(libc::EINPROGRESS) {
        bail!("connect {addr}: {err}");
    }
    Ok(fd)
}

/// A TCP connection to `to` from the local address `from` (any of 127.0.0.0/8
/// is this host's: a second "client" on loopback), connected when returned.
pub fn connect_from(
    from: std::net::Ipv4Addr,
    to: std::net::SocketAddr,
) -> anyhow::Result<std::net::TcpStream> {
    use std::os::fd::AsRawFd as _;
    let std::net::SocketAddr::V4(to) = to else {
        bail!("connect_from {to}: IPv4 only");
    };
    let fd = tcp_socket(0)?;
    let (local, remote) = (sockaddr(SocketAddrV4::new(from, 0)), sockaddr(to));
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: bind/connect on a socket we own with valid sockaddr_ins of `len` bytes.
    unsafe {
        if libc::bind(fd.as_raw_fd(), (&raw const local).cast(), len) != 0 {
            bail!("bind {from}: {}", std::io::Error::last_os_error());
        }
        if libc::connect(fd.as_raw_fd(), (&raw const remote).cast(), len) != 0 {
            bail!(
                "connect {to} from {from}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(std::net::TcpStream::from(fd))
}

/// An `AF_PACKET` socket that sees every packet on interface `ifindex` (of the
/// calling thread's namespace) with the smallest receive buffer the kernel allows,
/// and never reads: after a few packets the kernel drops what it would deliver
/// to it and counts each drop in the socket's `tp_drops` ([`packet_drops`]).
pub fn packet_socket_that_overflows(ifindex: u32) -> anyhow::Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket creation; the fd is owned by the OwnedFd below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        )
    };
    if fd < 0 {
        bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let smallest: libc::c_int = 1;
    let addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol,
        sll_ifindex: i32::try_from(ifindex)?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: setsockopt reads a c_int we own; bind reads a sockaddr_ll we own.
    unsafe {
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const smallest).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
        {
            bail!("SO_RCVBUF: {}", std::io::Error::last_os_error());
        }
        if libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        ) != 0
        {
            bail!("bind(AF_PACKET): {}", std::io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// The packets the kernel dropped for a packet socket since the last call
/// (`PACKET_STATISTICS`' `tp_drops`; reading it resets the kernel's counters).
pub fn packet_drops(fd: &OwnedFd) -> anyhow::Result<u32> {
    use std::os::fd::AsRawFd as _;
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the struct we own.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        bail!("PACKET_STATISTICS: {}", std::io::Error::last_os_error());
    }
    Ok(stats.tp_drops)
}

/// Reads everything queued on a packet socket; returns how many packets it had
/// queued that were leaving the interface (`PACKET_OUTGOING`) and how many were
/// arriving.
pub fn drain_packet_socket(fd: &OwnedFd) -> anyhow::Result<(u64, u64)> {
    use std::os::fd::AsRawFd as _;
    let (mut leaving, mut arriving) = (0, 0);
    let mut buf = [0u8; 2048];
    loop {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: recvfrom writes at most `buf.len()` bytes into `buf` and at most
        // `len` bytes into `from`, both ours.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&raw mut from).cast(),
                &raw mut len,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok((leaving, arriving));
            }
            bail!("recvfrom(AF_PACKET): {e}");
        }
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            leaving += 1;
        } else {
            arriving += 1;
        }
    }
}

/// Calls `listen(backlog)` again on a listening socket: the kernel gives it the
/// new limit, `min(backlog, somaxconn)`, as an application restart would.
pub fn relisten(fd: &OwnedFd, backlog: i32) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: listen on a socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } != 0 {
        bail!("listen: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
