//! Packet loss on a namespace's interface, with the test-only `loss` tc program
//! (`bpf-tests/ebpf/src/loss.rs`).

use aya::{
    Ebpf, EbpfLoader,
    maps::PerCpuArray,
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttach},
    },
    util::KernelVersion,
};

use crate::netns::Netns;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/loss"));

/// A loss program attached to one interface's ingress; detached on drop.
pub struct Loss<'a> {
    ebpf: Ebpf,
    link: Option<SchedClassifierLinkId>,
    /// Where the interface lives; `None` for the host namespace.
    netns: Option<&'a Netns>,
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
        let mut ebpf = EbpfLoader::new()
            .override_global("LOSS_PER_10K", &per_10k, true)
            .load(OBJECT)?;
        let program: &mut SchedClassifier = ebpf
            .program_mut("loss")
            .ok_or_else(|| anyhow::anyhow!("no `loss` program"))?
            .try_into()?;
        program.load()?;
        let iface = std::ffi::CString::new(iface)?;
        // Before TCX (6.6) aya attaches through netlink, on a clsact qdisc that must
        // exist first (nettune adds it on the interfaces it watches).
        let netlink =
            after_clsact || KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0));
        // Interface names resolve in the calling thread's namespace: attach from inside.
        let how = if after_clsact {
            // Automatic priorities go *before* existing filters: ask for a later one.
            TcAttach::Netlink {
                parent: TcAttachType::Ingress.into(),
                options: NlOptions {
                    priority: 60000,
                    ..NlOptions::default()
                },
            }
        } else {
            TcAttach::Auto(TcAttachType::Ingress)
        };
        let attach = || -> anyhow::Result<SchedClassifierLinkId> {
            if netlink {
                add_clsact(&iface)?;
            }
            Ok(program.attach(iface.as_c_str(), how)?)
        };
        let link = match netns {
            Some(ns) => ns.run(attach)??,
            None => attach()?,
        };
        Ok(Self {
            ebpf,
            link: Some(link),
            netns,
        })
    }

    /// (TCP packets seen, TCP packets dropped) so far.
    pub fn stats(&self) -> anyhow::Result<(u64, u64)> {
        let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map("LOSS_STATS")
                .ok_or_else(|| anyhow::anyhow!("no LOSS_STATS map"))?,
        )?;
        let sum = |i: u32| -> anyhow::Result<u64> { Ok(map.get(&i, 0)?.iter().sum()) };
        Ok((sum(0)?, sum(1)?))
    }
}

/// Adds a clsact qdisc to `iface` (in the calling thread's namespace) unless one
/// is there already.
pub fn add_clsact(iface: &std::ffi::CStr) -> anyhow::Result<()> {
    match tc::qdisc_add_clsact(iface).map_err(anyhow::Error::from) {
        Err(e) if !format!("{e:#}").contains("exists") => Err(e.context("adding a clsact qdisc")),
        _ => Ok(()),
    }
}

impl Drop for Loss<'_> {
    fn drop(&mut self) {
        // A clsact (pre-6.6) detach is a netlink request by ifindex: it must run in
        // the namespace that owns the interface, or it could hit a host interface.
        let Some(link) = self.link.take() else { return };
        let Some(program) = self.ebpf.program_mut("loss") else {
            return;
        };
        let Ok(program): Result<&mut SchedClassifier, _> = program.try_into() else {
            return;
        };
        let result = match self.netns {
            Some(ns) => ns.run(|| program.detach(link)).and_then(|r| Ok(r?)),
            None => program.detach(link).map_err(Into::into),
        };
        if let Err(e) = result {
            eprintln!("warning: could not detach the loss program: {e}");
        }
    }
}
