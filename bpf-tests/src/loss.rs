//! Packet loss on a namespace's interface, with the test-only `loss` tc program
//! (`bpf-tests/ebpf/src/loss.rs`).

use aya::{maps::PerCpuArray, programs::TcAttachType};

use crate::{classifier::Classifier, netns::Netns};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/loss"));

/// A loss program attached to one interface's ingress; detached on drop.
pub struct Loss<'a> {
    classifier: Classifier<'a>,
}

impl<'a> Loss<'a> {
    /// Drops `per_10k`/10000 of IPv4 TCP packets arriving on `iface` in `netns`.
    pub fn attach(netns: &'a Netns, iface: &str, per_10k: u32) -> anyhow::Result<Self> {
        Self::attach_in(Some(netns), iface, per_10k, false)
    }

    /// As [`Loss::attach`], for an interface of `netns` (the host when `None`), with
    /// TCX, or on clsact after every filter already there (`after_clsact`).
    pub fn attach_in(
        netns: Option<&'a Netns>,
        iface: &str,
        per_10k: u32,
        after_clsact: bool,
    ) -> anyhow::Result<Self> {
        let mut classifier = Classifier::load(OBJECT, "loss", &[("LOSS_PER_10K", per_10k)], netns)?;
        classifier.attach(iface, TcAttachType::Ingress, after_clsact)?;
        Ok(Self { classifier })
    }

    /// (TCP packets seen, TCP packets dropped) so far.
    pub fn stats(&self) -> anyhow::Result<(u64, u64)> {
        let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.classifier
                .ebpf()
                .map("LOSS_STATS")
                .ok_or_else(|| anyhow::anyhow!("no LOSS_STATS map"))?,
        )?;
        let sum = |i: u32| -> anyhow::Result<u64> { Ok(map.get(&i, 0)?.iter().sum()) };
        Ok((sum(0)?, sum(1)?))
    }
}
