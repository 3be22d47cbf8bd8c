//! Raw sockets for scenarios std cannot express: a listener with a chosen backlog
//! (std always asks for 128) and connects that do not wait.

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
