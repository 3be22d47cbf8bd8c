//! Conversations on pods' host-side interfaces (tc: TCX or clsact, both
//! directions): DNS queries and responses, TCP handshakes and resets, ICMP
//! errors — what only the packet path shows.
//!
//! A plain packet costs a few loads and compares and no map access: the program
//! reads the EtherType from the context, the IP protocol and, for TCP, the flags
//! byte or, for UDP, the ports, by direct packet access; only a SYN, an RST, a
//! UDP datagram to or from port 53 and an ICMP error look up their interface's
//! entry (which the agent created before attaching: an interface nettune does
//! not watch costs a failed lookup) and count with atomic adds. Parsing is
//! bounded: IPv4 with options, IPv6 without extension headers, first fragments
//! only, DNS over UDP only (a TCP query can span segments). The programs never
//! change the verdict (`TC_ACT_UNSPEC` / `TCX_NEXT`: let the next program decide).
//!
//! Pending queries and handshakes wait in hash maps with the time they were
//! sent; the answer closes them (DNS latency, a SYN-ACK or an RST), and the
//! agent takes out and counts what stayed unanswered past its timeout, which
//! bounds them. A handshake costs two map operations in all: the SYN's
//! create-if-absent (which also tells a retransmitted SYN) and the answer's
//! delete (which also tells whether it was pending); the server's side of a
//! handshake costs none. Plain hashes, not LRU ones: an LRU insert and delete
//! each take the LRU's own locks on every connection, and a full LRU would
//! evict the oldest pending entries — the very ones about to count as timed
//! out. A full map fails the insert instead: the attempt is still counted, and
//! the failure is a `map_update` probe error.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map},
    maps::HashMap,
    programs::TcContext,
};
use nettune_common::{
    Conversations, DnsCounters, DnsQueryKey, HandshakeKey, Pending, ProbeError, Remote,
    traffic::{DNS_LATENCY_BOUNDS_NS, MAX_DNS_SERVERS, MAX_IFACES, MAX_PENDING, MAX_REMOTES},
};

use crate::errors;

#[map]
static CONVERSATIONS: HashMap<u32, Conversations> = HashMap::with_max_entries(MAX_IFACES, 0);

#[map]
static DNS_PENDING: HashMap<DnsQueryKey, Pending> = HashMap::with_max_entries(MAX_PENDING, 0);

#[map]
static HANDSHAKES: HashMap<HandshakeKey, Pending> = HashMap::with_max_entries(MAX_PENDING, 0);

#[map]
static DNS_SERVERS: HashMap<[u8; 16], DnsCounters> = HashMap::with_max_entries(MAX_DNS_SERVERS, 0);

#[map]
static REFUSALS: HashMap<Remote, u64> = HashMap::with_max_entries(MAX_REMOTES, 0);

/// `TC_ACT_UNSPEC` for clsact, `TCX_NEXT` for TCX: both -1, "carry on".
const NEXT: i32 = -1;
/// `BPF_NOEXIST`: create, never replace.
const BPF_NOEXIST: u64 = 1;
/// What a `BPF_NOEXIST` insert returns for a key already there.
const EEXIST: i32 = -17;

const ETH_HLEN: usize = 14;
/// `ETH_P_IP` and `ETH_P_IPV6` as `__sk_buff.protocol` holds them (network order).
const ETH_P_IP_BE: u32 = 0x0008;
const ETH_P_IPV6_BE: u32 = 0xdd86;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const TCP_FIN_SYN_RST_ACK: u8 = 0x17;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const DNS_PORT: u16 = 53;
const UDP_HLEN: usize = 8;
const DNS_HLEN: usize = 12;

/// Which way a packet goes, seen from the pod.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Host-side ingress: the pod sent it.
    FromPod,
    /// Host-side egress: the pod receives it.
    ToPod,
}

#[classifier]
pub fn pod_ingress(ctx: TcContext) -> i32 {
    observe(&ctx, Way::FromPod);
    NEXT
}

#[classifier]
pub fn pod_egress(ctx: TcContext) -> i32 {
    observe(&ctx, Way::ToPod);
    NEXT
}

/// The packet's bytes `[offset, offset + N)`, if it has them in its linear part.
#[inline(always)]
fn bytes<const N: usize>(ctx: &TcContext, offset: usize) -> Option<&[u8; N]> {
    let start = ctx.data();
    if start + offset + N > ctx.data_end() {
        return None;
    }
    // SAFETY: the range lies within [data, data_end), checked just above, where
    // direct packet access may read.
    Some(unsafe { &*((start + offset) as *const [u8; N]) })
}

/// Where an IP packet's addresses and transport are. The addresses are read
/// only by the paths that need them (a SYN, an RST, DNS): a plain packet reads
/// the protocol and the transport header and nothing else.
struct Packet {
    /// IPv6 (else IPv4).
    v6: bool,
    protocol: u8,
    /// Offset of the transport header.
    l4: usize,
}

impl Packet {
    /// The source address (IPv4-mapped for IPv4), if the packet still has it.
    #[inline(always)]
    fn src(&self, ctx: &TcContext) -> [u8; 16] {
        self.address(ctx, 12, 8)
    }

    /// The destination address (IPv4-mapped for IPv4).
    #[inline(always)]
    fn dst(&self, ctx: &TcContext) -> [u8; 16] {
        self.address(ctx, 16, 24)
    }

    #[inline(always)]
    fn address(&self, ctx: &TcContext, v4_at: usize, v6_at: usize) -> [u8; 16] {
        if self.v6 {
            bytes::<16>(ctx, ETH_HLEN + v6_at)
                .copied()
                .unwrap_or([0; 16])
        } else {
            bytes::<4>(ctx, ETH_HLEN + v4_at).map_or([0; 16], mapped)
        }
    }
}

/// An IPv4 address as an IPv4-mapped IPv6 one.
#[inline(always)]
fn mapped(a: &[u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[10] = 0xff;
    out[11] = 0xff;
    out[12] = a[0];
    out[13] = a[1];
    out[14] = a[2];
    out[15] = a[3];
    out
}

#[inline(always)]
fn parse_ip(ctx: &TcContext) -> Option<Packet> {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context of a tc program is a valid __sk_buff.
    let protocol = unsafe { (*skb).protocol };
    if protocol == ETH_P_IP_BE {
        let ip: &[u8; 10] = bytes(ctx, ETH_HLEN)?;
        // Later fragments carry no transport header.
        if (u16::from(ip[6] & 0x1f) << 8 | u16::from(ip[7])) != 0 {
            return None;
        }
        Some(Packet {
            v6: false,
            protocol: ip[9],
            l4: ETH_HLEN + usize::from(ip[0] & 0x0f) * 4,
        })
    } else if protocol == ETH_P_IPV6_BE {
        let ip: &[u8; 7] = bytes(ctx, ETH_HLEN)?;
        Some(Packet {
            v6: true,
            protocol: ip[6],
            l4: ETH_HLEN + 40,
        })
    } else {
        None
    }
}

#[inline(always)]
fn observe(ctx: &TcContext, way: Way) {
    let Some(p) = parse_ip(ctx) else { return };
    match p.protocol {
        IPPROTO_TCP => {
            let Some(tcp) = bytes::<14>(ctx, p.l4) else {
                return;
            };
            let flags = tcp[13] & TCP_FIN_SYN_RST_ACK;
            if flags & (TCP_SYN | TCP_RST) != 0 {
                tcp_control(ctx, way, &p, tcp, flags);
            }
        }
        IPPROTO_UDP => {
            let Some(udp) = bytes::<8>(ctx, p.l4) else {
                return;
            };
            let sport = u16::from_be_bytes([udp[0], udp[1]]);
            let dport = u16::from_be_bytes([udp[2], udp[3]]);
            if sport == DNS_PORT || dport == DNS_PORT {
                dns(ctx, way, &p, sport, dport);
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => icmp(ctx, way, &p),
        _ => {}
    }
}

/// This interface's counters, if it is watched.
#[inline(always)]
fn counters(ctx: &TcContext) -> Option<*mut Conversations> {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context of a tc program is a valid __sk_buff.
    let ifindex = unsafe { (*skb).ifindex };
    CONVERSATIONS.get_ptr_mut(&ifindex)
}

/// Adds `n` to a counter in a map value other CPUs may update at once: one
/// `BPF_ATOMIC` add (the target has no compare-and-swap, so `core`'s atomic types
/// offer no `fetch_add`; the intrinsic's result unused, it is the plain add every
/// kernel since 3.18 has).
#[inline(always)]
fn add(counter: *mut u64, n: u64) {
    // SAFETY: `counter` points into a map value, valid and 8-byte aligned while
    // the program runs; every writer adds atomically.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}

#[inline(always)]
fn ifindex_of(ctx: &TcContext) -> u32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context of a tc program is a valid __sk_buff.
    unsafe { (*skb).ifindex }
}

#[inline(always)]
fn tcp_control(ctx: &TcContext, way: Way, p: &Packet, tcp: &[u8; 14], flags: u8) {
    // Past an RST, only the pod's SYN and the SYN-ACK it receives matter: the
    // server's side of a handshake (the SYN in, the SYN-ACK out) reads no map.
    let opens = match way {
        Way::FromPod => TCP_SYN,
        Way::ToPod => TCP_SYN | TCP_ACK,
    };
    if flags & TCP_RST == 0 && flags & (TCP_SYN | TCP_ACK) != opens {
        return;
    }
    let Some(c) = counters(ctx) else { return };
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    match way {
        Way::FromPod => {
            if flags & TCP_RST != 0 {
                // SAFETY: a field of the map value `c` points at.
                add(unsafe { &raw mut (*c).resets_sent }, 1);
            } else {
                let key = HandshakeKey {
                    ifindex: ifindex_of(ctx),
                    local_port: sport,
                    remote_port: dport,
                    remote: p.dst(ctx),
                };
                // SAFETY: bpf_ktime_get_ns has no preconditions.
                let sent_ns = unsafe { bpf_ktime_get_ns() };
                // One map operation a SYN: BPF_NOEXIST creates the pending entry
                // or, for a retransmitted SYN, fails and keeps the first one's time.
                match HANDSHAKES.insert(&key, &Pending { sent_ns }, BPF_NOEXIST) {
                    Err(e) if e == EEXIST => {
                        // SAFETY: as above.
                        add(unsafe { &raw mut (*c).syn_retransmits }, 1);
                    }
                    outcome => {
                        // SAFETY: as above.
                        add(unsafe { &raw mut (*c).connect_attempts }, 1);
                        if outcome.is_err() {
                            errors::count(ctx, ProbeError::MapUpdate);
                        }
                    }
                }
            }
        }
        Way::ToPod => {
            let reset = flags & TCP_RST != 0;
            let key = HandshakeKey {
                ifindex: ifindex_of(ctx),
                local_port: dport,
                remote_port: sport,
                remote: p.src(ctx),
            };
            // One map operation: the delete succeeds only for a pending handshake.
            let was_pending = HANDSHAKES.remove(&key).is_ok();
            if reset {
                if was_pending {
                    // SAFETY: as above.
                    add(unsafe { &raw mut (*c).connects_refused }, 1);
                    refused(p.src(ctx), sport);
                } else {
                    // SAFETY: as above.
                    add(unsafe { &raw mut (*c).resets_received }, 1);
                }
            } else if was_pending {
                // SAFETY: as above.
                add(unsafe { &raw mut (*c).connects_answered }, 1);
            }
        }
    }
}

/// Counts a refused handshake against its remote.
#[inline(always)]
fn refused(addr: [u8; 16], port: u16) {
    let key = Remote {
        addr,
        port,
        _pad: 0,
    };
    if let Some(n) = REFUSALS.get_ptr_mut(&key) {
        add(n, 1);
    } else {
        // BPF_NOEXIST: another CPU may have just created it; a full map loses it.
        let _ = REFUSALS.insert(&key, &1, BPF_NOEXIST);
    }
}

#[inline(always)]
fn dns(ctx: &TcContext, way: Way, p: &Packet, sport: u16, dport: u16) {
    let Some(header) = bytes::<DNS_HLEN>(ctx, p.l4 + UDP_HLEN) else {
        return;
    };
    let id = u16::from_be_bytes([header[0], header[1]]);
    let is_response = header[2] & 0x80 != 0;
    match (way, is_response) {
        // A query the pod sends.
        (Way::FromPod, false) if dport == DNS_PORT => {
            let Some(c) = counters(ctx) else { return };
            let server_addr = p.dst(ctx);
            let key = DnsQueryKey {
                ifindex: ifindex_of(ctx),
                pod_port: sport,
                id,
                server: server_addr,
            };
            let server = server_counters(server_addr);
            // SAFETY: bpf_ktime_get_ns has no preconditions.
            let sent_ns = unsafe { bpf_ktime_get_ns() };
            // As for a SYN: a retry finds its query pending and keeps its time.
            let sent = DNS_PENDING.insert(&key, &Pending { sent_ns }, BPF_NOEXIST);
            if sent.is_err_and(|e| e != EEXIST) {
                errors::count(ctx, ProbeError::MapUpdate);
            }
            if !sent.is_err_and(|e| e == EEXIST) {
                // SAFETY: a field of the map value `c` points at.
                add(unsafe { &raw mut (*c).dns.queries }, 1);
                if let Some(s) = server {
                    // SAFETY: a field of the map value `s` points at.
                    add(unsafe { &raw mut (*s).queries }, 1);
                }
            } else {
                // SAFETY: as above.
                add(unsafe { &raw mut (*c).dns.retries }, 1);
                if let Some(s) = server {
                    // SAFETY: as above.
                    add(unsafe { &raw mut (*s).retries }, 1);
                }
            }
        }
        // A response the pod receives.
        (Way::ToPod, true) if sport == DNS_PORT => {
            let Some(c) = counters(ctx) else { return };
            let server_addr = p.src(ctx);
            let key = DnsQueryKey {
                ifindex: ifindex_of(ctx),
                pod_port: dport,
                id,
                server: server_addr,
            };
            let latency = DNS_PENDING.get_ptr(&key).map(|q| {
                // SAFETY: bpf_ktime_get_ns has no preconditions; `q` is a value
                // of the map, valid while the program runs.
                unsafe { bpf_ktime_get_ns().saturating_sub((*q).sent_ns) }
            });
            if latency.is_some() {
                let _ = DNS_PENDING.remove(&key);
            }
            let truncated = header[2] & 0x02 != 0;
            let rcode = usize::from(header[3] & 0x0f).min(6);
            // SAFETY: `c` points at a map value.
            response(unsafe { &raw mut (*c).dns }, rcode, truncated, latency);
            if let Some(s) = server_counters(server_addr) {
                response(s, rcode, truncated, latency);
            }
        }
        _ => {}
    }
}

/// Counts a response in `d`.
#[inline(always)]
fn response(d: *mut DnsCounters, rcode: usize, truncated: bool, latency: Option<u64>) {
    // SAFETY: `d` points at DnsCounters inside a map value; every index is in
    // bounds (rcode ≤ 6, bucket ≤ 2).
    unsafe {
        add(&raw mut (*d).responses, 1);
        if truncated {
            add(&raw mut (*d).truncated, 1);
        }
        if rcode < 7 {
            add(&raw mut (*d).rcodes[rcode], 1);
        }
        if let Some(ns) = latency {
            let bucket = if ns <= DNS_LATENCY_BOUNDS_NS[0] {
                0
            } else if ns <= DNS_LATENCY_BOUNDS_NS[1] {
                1
            } else {
                2
            };
            add(&raw mut (*d).latency_buckets[bucket], 1);
            add(&raw mut (*d).latency_sum_ns, ns);
        }
    }
}

/// The counters of DNS server `addr`, created on first use (a full map loses it).
#[inline(always)]
fn server_counters(addr: [u8; 16]) -> Option<*mut DnsCounters> {
    if let Some(s) = DNS_SERVERS.get_ptr_mut(&addr) {
        return Some(s);
    }
    let _ = DNS_SERVERS.insert(&addr, &DnsCounters::default(), 1);
    DNS_SERVERS.get_ptr_mut(&addr)
}

/// The kind of an ICMP or ICMPv6 error (an index into `ICMP_KINDS`) and the MTU
/// it reports, if any; `None` for messages that are not errors (echo, ND, …).
#[inline(always)]
fn icmp_kind(v6: bool, kind: u8, code: u8, m: &[u8; 8]) -> Option<(usize, u64)> {
    let mtu4 = || u64::from(u16::from_be_bytes([m[6], m[7]]));
    let mtu6 = || u64::from(u32::from_be_bytes([m[4], m[5], m[6], m[7]]));
    Some(match (v6, kind, code) {
        (false, 3, 0) | (true, 1, 0) => (0, 0),
        (false, 3, 1) | (true, 1, 3) => (1, 0),
        (false, 3, 3) | (true, 1, 4) => (2, 0),
        (false, 3, 4) => (3, mtu4()),
        (true, 2, _) => (3, mtu6()),
        (false, 3, 9 | 10 | 13) | (true, 1, 1) => (4, 0),
        (false, 3, _) | (true, 1, _) => (5, 0),
        (false, 11, _) | (true, 3, _) => (6, 0),
        _ => return None,
    })
}

#[inline(always)]
fn icmp(ctx: &TcContext, way: Way, p: &Packet) {
    let Some(m) = bytes::<8>(ctx, p.l4) else {
        return;
    };
    let Some((kind, mtu)) = icmp_kind(p.v6, m[0], m[1], m) else {
        return;
    };
    let Some(c) = counters(ctx) else { return };
    // SAFETY: `c` points at a map value; `kind` < 7.
    unsafe {
        if kind >= 7 {
            return;
        }
        match way {
            Way::FromPod => add(&raw mut (*c).icmp_sent[kind], 1),
            Way::ToPod => {
                add(&raw mut (*c).icmp_received[kind], 1);
                // A race between CPUs may keep the larger of two: the next one
                // corrects it.
                let smallest = core::ptr::read_volatile(&raw const (*c).smallest_mtu);
                if mtu != 0 && (smallest == 0 || mtu < smallest) {
                    core::ptr::write_volatile(&raw mut (*c).smallest_mtu, mtu);
                }
            }
        }
    }
}
