//! Test set-ups used by several signals' tests.

use std::net::SocketAddr;

use anyhow::ensure;

use crate::{
    loss::Loss,
    netem::Netem,
    netns::{Netns, Veth},
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
        let loss = Loss::attach(&self.receiver, &self.veth.b_name, loss_per_10k)?;
        self.transfer_while(bytes, || Ok(loss.stats()?.1))
    }

    /// Sends `bytes` over TCP from sender to receiver through a netem qdisc that
    /// loses `percent` % of packets on their way into the receiver's namespace
    /// (see [`crate::netem`]). Returns the packets netem dropped, by its own count.
    pub fn netem_transfer(&self, bytes: usize, percent: f64) -> anyhow::Result<u64> {
        let netem = Netem::attach(&self.sender, &self.veth.a_name, percent)?;
        self.transfer_while(bytes, || netem.dropped())
    }

    /// Sends `bytes` from sender to receiver; `dropped` then says how many packets
    /// the loss in place dropped, which must be some.
    fn transfer_while(
        &self,
        bytes: usize,
        dropped: impl FnOnce() -> anyhow::Result<u64>,
    ) -> anyhow::Result<u64> {
        let addr = SocketAddr::from((self.veth.b_addr, 5201));
        let received = bulk_transfer(&self.sender, &self.receiver, addr, bytes)?;
        let dropped = dropped()?;
        ensure!(received == bytes, "received {received} of {bytes} bytes");
        ensure!(dropped > 0, "the loss in place dropped nothing");
        Ok(dropped)
    }
}
