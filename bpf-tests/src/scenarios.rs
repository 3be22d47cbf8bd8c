//! Test set-ups used by several signals' tests.

use std::{
    net::{SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::ensure;

use crate::{
    loss::Loss,
    netem::Netem,
    netns::{Netns, Veth},
    sockets::{connect_nonblocking, listener_with_backlog},
    traffic::bulk_transfer,
};

/// A sender and a receiver namespace joined by a veth pair (subnet 10.203.<n>.0/24).
pub struct Pair {
    pub sender: Netns,
    pub receiver: Netns,
    pub veth: Veth,
}

impl Pair {
    /// A new pair on `subnet`; `ifindex` pins both interfaces' index.
    pub fn new(subnet: u8, ifindex: Option<u32>) -> anyhow::Result<Self> {
        let sender = Netns::new("snd")?;
        let receiver = Netns::new("rcv")?;
        let veth = Veth::connect(&sender, &receiver, subnet, ifindex)?;
        Ok(Self {
            sender,
            receiver,
            veth,
        })
    }

    /// Sends `bytes` over TCP from sender to receiver while the loss program drops
    /// `loss_per_10k`/10000 of TCP packets on the receiver's ingress. Returns the
    /// packets the loss program dropped.
    pub fn lossy_transfer(&self, bytes: usize, loss_per_10k: u32) -> anyhow::Result<u64> {
        let to = SocketAddr::from((self.veth.b_addr, 5201));
        lossy_transfer(
            &self.sender,
            (&self.receiver, &self.veth.b_name),
            to,
            bytes,
            loss_per_10k,
        )
    }

    /// Sends `bytes` over TCP from sender to receiver through a netem qdisc that
    /// loses `percent` % of packets on their way into the receiver's namespace
    /// (see [`crate::netem`]). Returns the packets netem dropped, by its own count.
    pub fn netem_transfer(&self, bytes: usize, percent: f64) -> anyhow::Result<u64> {
        let netem = Netem::attach(&self.sender, &self.veth.a_name, percent)?;
        let to = SocketAddr::from((self.veth.b_addr, 5201));
        transfer_while(&self.sender, &self.receiver, to, bytes, || netem.dropped())
    }
}

/// Sends `bytes` over TCP from `sender` to `to` in `receiver` while the loss
/// program drops `loss_per_10k`/10000 of TCP packets arriving on the receiver's
/// interface. Returns the packets the loss program dropped.
pub fn lossy_transfer(
    sender: &Netns,
    (receiver, interface): (&Netns, &str),
    to: SocketAddr,
    bytes: usize,
    loss_per_10k: u32,
) -> anyhow::Result<u64> {
    let loss = Loss::attach(receiver, interface, loss_per_10k)?;
    transfer_while(sender, receiver, to, bytes, || Ok(loss.stats()?.1))
}

/// Transfers a test makes at most before the loss in place has dropped a packet.
const MAX_TRANSFERS: usize = 8;

/// Sends `bytes` from `sender` to `to` in `receiver` until `dropped` (how many
/// packets the loss in place dropped) says some were: with GSO one transfer is
/// a few large packets, and a low loss rate may by chance spare them all. At
/// most [`MAX_TRANSFERS`] transfers.
fn transfer_while(
    sender: &Netns,
    receiver: &Netns,
    to: SocketAddr,
    bytes: usize,
    dropped: impl Fn() -> anyhow::Result<u64>,
) -> anyhow::Result<u64> {
    for _ in 0..MAX_TRANSFERS {
        let received = bulk_transfer(sender, receiver, to, bytes)?;
        ensure!(received == bytes, "received {received} of {bytes} bytes");
        let dropped = dropped()?;
        if dropped > 0 {
            return Ok(dropped);
        }
    }
    anyhow::bail!("the loss in place dropped nothing in {MAX_TRANSFERS} transfers")
}

/// Most segments one skb can carry with GSO on a veth.
pub const MAX_SEGMENTS_PER_SKB: u64 = 64;

/// Checks a count of retransmitted segments against the namespace's own
/// `RetransSegs`: equal while every retransmit succeeds; the kernel counts
/// `RetransSegs` before the skb reaches the device, so each retransmit it
/// reported as failed may account for up to one skb's segments of difference.
pub fn check_retransmitted_segments(
    segments: u64,
    failed: u64,
    retrans_segs: u64,
) -> anyhow::Result<()> {
    let tolerance = failed * MAX_SEGMENTS_PER_SKB;
    ensure!(
        segments <= retrans_segs && retrans_segs <= segments + tolerance,
        "counted {segments} retransmitted segments, RetransSegs says {retrans_segs} \
         (tolerance {tolerance} for {failed} failed)"
    );
    Ok(())
}

/// `net.core.somaxconn` in `ns` (the host's with `None`).
pub fn somaxconn(ns: Option<&Netns>) -> anyhow::Result<u64> {
    let read = || std::fs::read_to_string("/proc/sys/net/core/somaxconn");
    let text = match ns {
        Some(ns) => ns.run(read)??,
        None => read()?,
    };
    Ok(text.trim().parse()?)
}

/// Checks a namespace's somaxconn went from `original` to `raised` within
/// `ceiling`, and that the node's is still `node_before`.
pub fn check_raised_there_only(
    original: u64,
    raised: u64,
    ceiling: u64,
    node_before: u64,
) -> anyhow::Result<()> {
    ensure!(
        raised > original && raised <= ceiling,
        "raised to {raised}, outside ({original}, {ceiling}]"
    );
    ensure!(
        somaxconn(None)? == node_before,
        "the node's somaxconn changed"
    );
    Ok(())
}

/// Storms a server listening with `backlog` on `addr` in `server` with
/// connects from `client` until the server namespace's somaxconn moves from
/// `original` (or 20 s pass); returns the new value.
pub fn storm_until_raised(
    server: &Netns,
    client: &Netns,
    addr: SocketAddrV4,
    backlog: i32,
    original: u64,
) -> anyhow::Result<u64> {
    let _listener = server.run(|| listener_with_backlog(addr, backlog))??;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let clients = client.run(|| {
            (0..50)
                .map(|_| connect_nonblocking(addr))
                .collect::<anyhow::Result<Vec<_>>>()
        })??;
        std::thread::sleep(Duration::from_millis(300));
        drop(clients);
        let now = somaxconn(Some(server))?;
        if now != original {
            return Ok(now);
        }
        ensure!(
            Instant::now() < deadline,
            "somaxconn stayed {original} for 20 s of overflows"
        );
    }
}
