//! Real packet loss from the kernel's own netem qdisc (`tc qdisc … netem loss`),
//! where the kernel has it (a module on Debian's kernels; absent on CI's).
//!
//! A qdisc acts on egress, so to lose data on its way to a receiver netem sits on
//! the veth end that sends into the receiver's namespace. Unlike a tc program that
//! drops on that egress (the stack sees the failure and sends the packet again as
//! new data), netem reports success and drops afterwards: the sender learns of the
//! loss from the receiver's SACKs and retransmits, as with loss on the wire.

use anyhow::{Context as _, ensure};

use crate::netns::Netns;

/// A netem qdisc at the root of one interface; removed on drop.
pub struct Netem<'a> {
    netns: &'a Netns,
    iface: String,
}

impl<'a> Netem<'a> {
    /// Adds `netem loss <percent>%` as the root qdisc of `iface` in `netns`. Call
    /// [`crate::harness::require_netem`] first: this fails where netem is missing.
    pub fn attach(netns: &'a Netns, iface: &str, percent: f64) -> anyhow::Result<Self> {
        netns.exec(
            "tc",
            &[
                "qdisc",
                "add",
                "dev",
                iface,
                "root",
                "netem",
                "loss",
                &format!("{percent}%"),
            ],
        )?;
        Ok(Self {
            netns,
            iface: iface.to_owned(),
        })
    }

    /// Packets the qdisc dropped so far: the kernel's own count (`tc -s qdisc`).
    pub fn dropped(&self) -> anyhow::Result<u64> {
        let text = self
            .netns
            .exec("tc", &["-s", "-j", "qdisc", "show", "dev", &self.iface])?;
        let qdiscs: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("tc -j printed {text}"))?;
        let netem = qdiscs
            .as_array()
            .and_then(|q| q.iter().find(|q| q["kind"] == "netem"))
            .with_context(|| format!("no netem qdisc on {}: {text}", self.iface))?;
        let drops = netem["drops"].as_u64();
        ensure!(drops.is_some(), "netem without a drop count: {netem}");
        Ok(drops.unwrap_or_default())
    }
}

impl Drop for Netem<'_> {
    fn drop(&mut self) {
        // Gone with the namespace anyway; removing it early keeps later traffic clean.
        let _ = self
            .netns
            .exec("tc", &["qdisc", "del", "dev", &self.iface, "root"]);
    }
}
