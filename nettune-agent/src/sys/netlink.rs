//! Netlink: the host's interfaces (and their kind and veth peer) and the ids the
//! host namespace gives other namespaces (rtnetlink), and a namespace's listening
//! TCP sockets with their accept queues (`sock_diag`).
//!
//! The agent watches pods' host-side interfaces, which most CNIs make as veth
//! pairs. sysfs does not say an interface is a veth; rtnetlink does
//! (`IFLA_LINKINFO` → `IFLA_INFO_KIND`). A host-side veth also names where its
//! peer lives: `IFLA_LINK` is the peer's ifindex *in the peer's namespace* and
//! `IFLA_LINK_NETNSID` the id the host gave that namespace, which `RTM_GETNSID`
//! maps back to a namespace file. Both are needed: ifindex values repeat across
//! namespaces, so an ifindex alone can point at the wrong pod.
//!
//! `sock_diag` answers for the calling thread's namespace with, for each
//! listener, its local address and port, its socket inode, the connections
//! waiting in its accept queue (`rqueue`) and the queue's limit (`wqueue`,
//! `sk_max_ack_backlog`: `min(listen() backlog, somaxconn)` when it listened).
//!
//! Messages are encoded and decoded by `netlink-packet-route` and
//! `netlink-packet-sock-diag`; this module owns the exchange: one request, a
//! sequence number checked on every reply, a receive timeout, and a 0-byte read
//! treated as an error rather than as "try again".

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd, RawFd},
    time::Duration,
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkInfo, LinkMessage},
    nsid::{NsidAttribute, NsidMessage},
    stats::{StatsAttribute, StatsFilterMask, StatsMessage},
};

use crate::model::sample::LinkCounters;
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{
    Socket, SocketAddr,
    protocols::{NETLINK_ROUTE, NETLINK_SOCK_DIAG},
};

/// An interface of the agent's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Its ifindex (unique within its namespace only).
    pub ifindex: u32,
    /// Its name.
    pub name: String,
    /// `IFLA_INFO_KIND`, e.g. `veth`; `None` for physical devices and loopback.
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, its peer's ifindex (in the peer's namespace).
    pub peer_ifindex: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the id of the peer's namespace, when it is not this
    /// one.
    pub peer_netnsid: Option<i32>,
    /// `IFLA_MTU`.
    pub mtu: Option<u32>,
}

impl Link {
    /// Whether this is one end of a veth pair.
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
}

/// How long a reply may take before the request fails.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Receive buffer: a dump datagram is at most a page or two.
const BUFFER_BYTES: usize = 64 * 1024;

/// A listening TCP socket, as `sock_diag` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListeningSocket {
    /// Local address (`0.0.0.0`, `::` for any).
    pub address: std::net::IpAddr,
    /// Local port.
    pub port: u16,
    /// The socket's inode (`/proc/<pid>/fd/* -> socket:[inode]`).
    pub inode: u32,
    /// Connections waiting to be accepted now.
    pub queue: u32,
    /// The accept queue's limit (`sk_max_ack_backlog`).
    pub limit: u32,
}

/// Every listening TCP socket (IPv4 and IPv6) of the calling thread's namespace.
pub fn listeners() -> io::Result<Vec<ListeningSocket>> {
    let mut out = Vec::new();
    for (family, socket_id) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        let request = SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id,
        });
        let replies = match request_on(NETLINK_SOCK_DIAG, request, NLM_F_REQUEST | NLM_F_DUMP) {
            Ok(r) => r,
            // No IPv6 in this kernel or namespace: the IPv4 listeners still count.
            Err(e) if family == AF_INET6 && e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        out.extend(replies.into_iter().filter_map(|m| match m {
            SockDiagMessage::InetResponse(r) => Some(ListeningSocket {
                address: r.header.socket_id.source_address,
                port: r.header.socket_id.source_port,
                inode: r.header.inode,
                queue: r.header.recv_queue,
                limit: r.header.send_queue,
            }),
            _ => None,
        }));
    }
    Ok(out)
}

/// Every interface of the calling thread's namespace (`RTM_GETLINK` dump).
pub fn links() -> io::Result<Vec<Link>> {
    let replies = request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_REQUEST | NLM_F_DUMP,
    )?;
    Ok(replies
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) => Some(link_of(&link)),
            _ => None,
        })
        .collect())
}

/// Every interface's own counters in the calling thread's namespace, by ifindex
/// (`RTM_GETSTATS` dump, `IFLA_STATS_LINK_64` only: about 200 bytes an
/// interface, where a link dump carries every attribute).
pub fn link_stats() -> io::Result<std::collections::BTreeMap<u32, LinkCounters>> {
    let mut message = StatsMessage::default();
    message.header.filter_mask = StatsFilterMask::Link64;
    let replies = request(
        RouteNetlinkMessage::GetStats(message),
        NLM_F_REQUEST | NLM_F_DUMP,
    )?;
    Ok(replies
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewStats(stats) => {
                let s = stats.attributes.iter().find_map(|a| match a {
                    StatsAttribute::Link64(s) => Some(s),
                    _ => None,
                })?;
                Some((
                    stats.header.ifindex,
                    LinkCounters {
                        rx_packets: s.rx_packets,
                        tx_packets: s.tx_packets,
                        rx_bytes: s.rx_bytes,
                        tx_bytes: s.tx_bytes,
                        rx_errors: s.rx_errors,
                        tx_errors: s.tx_errors,
                        rx_dropped: s.rx_dropped,
                        tx_dropped: s.tx_dropped,
                    },
                ))
            }
            _ => None,
        })
        .collect())
}

/// A subscription to the calling thread's namespace's link changes
/// (`RTNLGRP_LINK`): interfaces added, removed or changed.
#[derive(Debug)]
pub struct LinkEvents {
    socket: Socket,
}

impl LinkEvents {
    /// Subscribes.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.add_membership(libc::RTNLGRP_LINK)?;
        socket.set_non_blocking(true)?;
        Ok(Self { socket })
    }

    /// Whether anything changed since the last call: drains what arrived. A
    /// lost message (the socket's buffer overflowed) counts as a change.
    pub fn changed(&mut self) -> bool {
        let mut changed = false;
        let mut buf = Vec::with_capacity(BUFFER_BYTES);
        loop {
            buf.clear();
            match self.socket.recv(&mut buf, 0) {
                Ok(0) => return changed,
                Ok(_) => changed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return changed,
                // ENOBUFS: events were lost; anything may have changed.
                Err(_) => return true,
            }
        }
    }
}

/// The id the calling thread's namespace gives the namespace behind `ns_file`
/// (`RTM_GETNSID`); `None` when none is assigned.
pub fn netns_id(ns_file: &File) -> io::Result<Option<i32>> {
    let fd = u32::try_from(ns_file.as_raw_fd()).map_err(io::Error::other)?;
    let mut message = NsidMessage::default();
    message.attributes.push(NsidAttribute::Fd(fd));
    let replies = request(RouteNetlinkMessage::GetNsId(message), NLM_F_REQUEST)?;
    let id = replies.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewNsId(reply) => reply.attributes.into_iter().find_map(|a| match a {
            NsidAttribute::Id(id) => Some(id),
            _ => None,
        }),
        _ => None,
    });
    // -1: the namespace has no id here.
    Ok(id.filter(|id| *id >= 0))
}

/// The parts of a `RTM_NEWLINK` nettune uses.
fn link_of(message: &LinkMessage) -> Link {
    let mut link = Link {
        ifindex: message.header.index,
        name: String::new(),
        kind: None,
        peer_ifindex: None,
        peer_netnsid: None,
        mtu: None,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Link(peer) => link.peer_ifindex = Some(*peer),
            LinkAttribute::LinkNetNsId(id) => link.peer_netnsid = Some(*id),
            LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    link
}

/// Sends one rtnetlink request on a new socket and collects its replies.
fn request(message: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    request_on(NETLINK_ROUTE, message, flags)
}

/// Sends one request of a netlink `protocol` on a new socket and collects its
/// replies.
pub(super) fn request_on<M>(protocol: isize, message: M, flags: u16) -> io::Result<Vec<M>>
where
    M: NetlinkSerializable + NetlinkDeserializable + std::fmt::Debug,
{
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    set_receive_timeout(socket.as_raw_fd(), RECEIVE_TIMEOUT)?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    // One request per socket: any fixed number identifies our replies.
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    socket.send(&bytes, 0)?;
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    receive_replies(
        |buf| {
            buf.clear();
            socket.recv(buf, 0)
        },
        header.sequence_number,
        dump,
    )
}

fn set_receive_timeout(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        // The field types, not their names: libc deprecates naming `time_t` and
        // `suseconds_t` on musl, where they are changing.
        tv_sec: timeout
            .as_secs()
            .min(i32::MAX as u64)
            .try_into()
            .unwrap_or_default(),
        tv_usec: timeout.subsec_micros().min(999_999).into(),
    };
    // SAFETY: `tv` is a valid timeval for the duration of the call; the fd is
    // our open socket.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            libc::socklen_t::try_from(size_of::<libc::timeval>()).unwrap_or(16),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What one datagram said about request `sequence`.
#[derive(Debug)]
pub struct Replies<M> {
    /// The replies to our request in it.
    pub messages: Vec<M>,
    /// The exchange is complete (`NLMSG_DONE`, an acknowledgement, or the one
    /// reply a non-dump request gets).
    pub complete: bool,
}

/// Parses one datagram of replies to request `sequence` (a dump when `dump`);
/// replies to other sequence numbers are skipped, an error reply is an error.
pub fn parse_datagram<M: NetlinkDeserializable + std::fmt::Debug>(
    mut datagram: &[u8],
    sequence: u32,
    dump: bool,
) -> io::Result<Replies<M>> {
    let mut replies = Replies {
        messages: Vec::new(),
        complete: false,
    };
    while !datagram.is_empty() && !replies.complete {
        let message = NetlinkMessage::<M>::deserialize(datagram)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let length = usize::try_from(message.header.length).unwrap_or(usize::MAX);
        if length < 16 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "netlink message shorter than its header",
            ));
        }
        datagram = datagram
            .get(length.next_multiple_of(4)..)
            .unwrap_or_default();
        if message.header.sequence_number != sequence {
            continue;
        }
        match message.payload {
            NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
            // NLMSG_DONE, or an acknowledgement.
            NetlinkPayload::Done(_) | NetlinkPayload::Error(_) => replies.complete = true,
            NetlinkPayload::InnerMessage(inner) => {
                replies.messages.push(inner);
                replies.complete = !dump;
            }
            _ => {}
        }
    }
    Ok(replies)
}

/// Reads datagrams with `recv` until the reply to request `sequence` is complete:
/// `NLMSG_DONE` for a dump, the first message otherwise. Replies to other
/// sequence numbers are skipped; an error reply, a 0-byte read or a receive
/// timeout ends the exchange with an error.
fn receive_replies<M: NetlinkDeserializable + std::fmt::Debug>(
    mut recv: impl FnMut(&mut Vec<u8>) -> io::Result<usize>,
    sequence: u32,
    dump: bool,
) -> io::Result<Vec<M>> {
    let mut buf = Vec::with_capacity(BUFFER_BYTES);
    let mut messages = Vec::new();
    loop {
        let n = recv(&mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no netlink reply within {RECEIVE_TIMEOUT:?}"),
            ),
            _ => e,
        })?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "netlink socket returned 0 bytes",
            ));
        }
        let replies = parse_datagram::<M>(&buf[..n.min(buf.len())], sequence, dump)?;
        messages.extend(replies.messages);
        if replies.complete {
            return Ok(messages);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::DoneMessage;
    use netlink_packet_route::link::InfoKind;

    fn datagram(sequence: u32, payload: NetlinkPayload<RouteNetlinkMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = sequence;
        let mut m = NetlinkMessage::new(header, payload);
        m.finalize();
        let mut bytes = vec![0; m.buffer_len()];
        m.serialize(&mut bytes);
        bytes
    }

    fn veth(index: u32, name: &str, peer: u32, peer_netnsid: Option<i32>) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes.push(LinkAttribute::IfName(name.into()));
        link.attributes.push(LinkAttribute::Link(peer));
        if let Some(id) = peer_netnsid {
            link.attributes.push(LinkAttribute::LinkNetNsId(id));
        }
        link.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Veth,
            )]));
        datagram(
            7,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)),
        )
    }

    /// Feeds `datagrams` one per read, then reads of 0 bytes.
    fn feed(datagrams: Vec<Vec<u8>>) -> impl FnMut(&mut Vec<u8>) -> io::Result<usize> {
        let mut queue = datagrams.into_iter();
        move |buf| {
            buf.clear();
            let d = queue.next().unwrap_or_default();
            buf.extend_from_slice(&d);
            Ok(d.len())
        }
    }

    fn links_of(replies: Vec<RouteNetlinkMessage>) -> Vec<Link> {
        replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(&l)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_dump_keeps_names_kinds_peers_and_peer_namespaces_until_done() {
        let mut two = veth(3, "veth-a", 2, Some(5));
        two.extend(veth(4, "veth-b", 2, None));
        let done = datagram(7, NetlinkPayload::Done(DoneMessage::default()));
        let links = links_of(receive_replies(feed(vec![two, done]), 7, true).unwrap());
        assert_eq!(
            links,
            [
                Link {
                    ifindex: 3,
                    name: "veth-a".into(),
                    kind: Some("veth".into()),
                    peer_ifindex: Some(2),
                    peer_netnsid: Some(5),
                    mtu: None,
                },
                Link {
                    ifindex: 4,
                    name: "veth-b".into(),
                    kind: Some("veth".into()),
                    peer_ifindex: Some(2),
                    peer_netnsid: None,
                    mtu: None,
                },
            ]
        );
        assert!(links[0].is_veth());
    }

    #[test]
    fn replies_to_other_requests_are_skipped() {
        let stale = veth(9, "stale", 1, None);
        let mut stale_seq = stale.clone();
        // Sequence number lives at bytes 8..12 of the header.
        stale_seq[8..12].copy_from_slice(&99u32.to_ne_bytes());
        let done = datagram(7, NetlinkPayload::Done(DoneMessage::default()));
        let replies = receive_replies(
            feed(vec![stale_seq, veth(1, "ours", 2, None), done]),
            7,
            true,
        )
        .unwrap();
        let names: Vec<String> = links_of(replies).into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["ours"]);
    }

    #[test]
    fn a_zero_byte_read_a_timeout_and_an_error_reply_end_the_exchange() {
        let err =
            receive_replies::<RouteNetlinkMessage>(feed(vec![veth(1, "x", 2, None)]), 7, true)
                .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        let err = receive_replies::<RouteNetlinkMessage>(
            |_| Err(io::Error::from(io::ErrorKind::WouldBlock)),
            7,
            true,
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let mut nack = netlink_packet_core::ErrorMessage::default();
        nack.code = std::num::NonZeroI32::new(-1);
        let err = receive_replies::<RouteNetlinkMessage>(
            feed(vec![datagram(7, NetlinkPayload::Error(nack))]),
            7,
            true,
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(1));
        let err =
            receive_replies::<RouteNetlinkMessage>(feed(vec![vec![1, 2, 3]]), 7, true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
