//! Conversations seen by tc programs on pods' host-side interfaces: DNS, TCP
//! handshakes and resets, ICMP errors — what only the packet path shows. Volumes
//! (bytes, packets, drops) are the kernel's own interface counters, read by the
//! agent over rtnetlink: counting every packet here would cost every packet.
//!
//! A plain packet costs a few loads and compares and no map access: only a SYN,
//! an RST, a UDP datagram to or from port 53 and an ICMP error go further. The
//! agent inserts an entry per watched interface (keyed by its ifindex in the
//! host namespace) before attaching; the programs only update existing entries,
//! with atomic adds (these packets are rare, so a shared map does not contend).
//! Addresses are IPv6; IPv4 ones are IPv4-mapped (`::ffff:a.b.c.d`).

/// `u32` ifindex → [`Conversations`], hash (shared by all CPUs).
pub const CONVERSATIONS_MAP: &str = "CONVERSATIONS";
/// Bound of [`CONVERSATIONS_MAP`]: interfaces watched at once.
pub const MAX_IFACES: u32 = 4096;

/// [`DnsQueryKey`] → [`Pending`]: queries sent and not answered yet (a hash the agent sweeps).
pub const DNS_PENDING_MAP: &str = "DNS_PENDING";
/// [`HandshakeKey`] → [`Pending`]: SYNs sent and not answered yet (a hash the agent sweeps).
pub const HANDSHAKES_MAP: &str = "HANDSHAKES";
/// Bound of [`DNS_PENDING_MAP`] and of [`HANDSHAKES_MAP`].
pub const MAX_PENDING: u32 = 16384;

/// `[u8; 16]` server address → [`DnsCounters`], hash.
pub const DNS_SERVERS_MAP: &str = "DNS_SERVERS";
/// Bound of [`DNS_SERVERS_MAP`].
pub const MAX_DNS_SERVERS: u32 = 256;

/// [`Remote`] → `u64` handshakes refused (an RST to the SYN), hash.
pub const REFUSALS_MAP: &str = "REFUSALS";
/// Bound of [`REFUSALS_MAP`].
pub const MAX_REMOTES: u32 = 1024;

/// DNS response codes counted one by one (`rcodes[i]` is code `i`); every other
/// code counts in the last slot.
pub const DNS_RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "OTHER",
];

/// Upper bounds of the DNS latency histogram's buckets, in nanoseconds; a last
/// bucket holds the rest. Two bounds keep a pod's DNS under a dozen series: up
/// to 10 ms (a cache on the node or in the cluster), up to 1 s (an upstream,
/// a loaded server), beyond (a lost datagram the client had to resend: the
/// latency runs from the first send).
pub const DNS_LATENCY_BOUNDS_NS: [u64; 2] = [10_000_000, 1_000_000_000];

/// What one interface's pod said in DNS, as a client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsCounters {
    /// Queries sent (a retry is not a new query).
    pub queries: u64,
    /// The same query (server, port, id) sent again while unanswered.
    pub retries: u64,
    /// Responses received, answered or not.
    pub responses: u64,
    /// Responses with the TC (truncated) bit.
    pub truncated: u64,
    /// Responses by code, as [`DNS_RCODES`].
    pub rcodes: [u64; 7],
    /// Responses that matched a pending query, by latency bucket
    /// ([`DNS_LATENCY_BOUNDS_NS`]).
    pub latency_buckets: [u64; 3],
    /// Sum of those latencies, in nanoseconds.
    pub latency_sum_ns: u64,
}

/// ICMP error kinds counted, per direction.
pub const ICMP_KINDS: [&str; 7] = [
    "net_unreachable",
    "host_unreachable",
    "port_unreachable",
    "frag_needed",
    "admin_prohibited",
    "other_unreachable",
    "time_exceeded",
];

/// The conversations of one watched interface's pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conversations {
    /// DNS, as a client.
    pub dns: DnsCounters,
    /// SYNs sent (retransmissions not counted).
    pub connect_attempts: u64,
    /// SYN-ACKs received for a pending handshake.
    pub connects_answered: u64,
    /// RSTs received for a pending handshake.
    pub connects_refused: u64,
    /// SYNs sent again for a pending handshake.
    pub syn_retransmits: u64,
    /// RSTs the pod sent.
    pub resets_sent: u64,
    /// RSTs the pod received, but those refusing its own handshakes.
    pub resets_received: u64,
    /// ICMP errors the pod received, by [`ICMP_KINDS`].
    pub icmp_received: [u64; 7],
    /// ICMP errors the pod sent, by [`ICMP_KINDS`].
    pub icmp_sent: [u64; 7],
    /// The smallest MTU a "fragmentation needed" or "packet too big" the pod
    /// received reported (0: none).
    pub smallest_mtu: u64,
}

/// A DNS query the pod sent, as its response will name it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsQueryKey {
    /// The pod's host-side interface.
    pub ifindex: u32,
    /// The pod's UDP port.
    pub pod_port: u16,
    /// The query id.
    pub id: u16,
    /// The server's address.
    pub server: [u8; 16],
}

/// A handshake the pod started, as its answer will name it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HandshakeKey {
    /// The pod's host-side interface.
    pub ifindex: u32,
    /// The pod's port.
    pub local_port: u16,
    /// The remote port.
    pub remote_port: u16,
    /// The remote address.
    pub remote: [u8; 16],
}

/// When a query or SYN was first sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// `bpf_ktime_get_ns()` of the first send.
    pub sent_ns: u64,
}

/// A remote address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Remote {
    /// The address.
    pub addr: [u8; 16],
    /// The port.
    pub port: u16,
    pub _pad: u16,
}
