//! Test-only tc classifiers (`bpf-tests/ebpf`): loaded once, attached to any
//! number of interface hooks, every attachment detached on drop.
//!
//! Used for packet loss ([`crate::loss`]) and, in benchmarks, for the empty
//! classifier that a tc program's per-packet cost is compared with.

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttach},
    },
    util::KernelVersion,
};

use crate::netns::Netns;

/// The test-only empty classifier (`bpf-tests/ebpf/src/empty.rs`).
static EMPTY_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/empty"));

/// A loaded test classifier and its attachments; detached on drop.
pub struct Classifier<'a> {
    ebpf: Ebpf,
    program: &'static str,
    links: Vec<SchedClassifierLinkId>,
    /// Where the interfaces live; `None` for the host namespace.
    netns: Option<&'a Netns>,
}

impl<'a> Classifier<'a> {
    /// Loads `program` from `object`, with `globals` (name, value) written before
    /// load, for interfaces of `netns` (the host when `None`).
    pub fn load(
        object: &[u8],
        program: &'static str,
        globals: &[(&str, u32)],
        netns: Option<&'a Netns>,
    ) -> anyhow::Result<Self> {
        let mut loader = EbpfLoader::new();
        for (name, value) in globals {
            loader.override_global(name, value, true);
        }
        let mut ebpf = loader.load(object)?;
        let p: &mut SchedClassifier = ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow::anyhow!("no `{program}` program"))?
            .try_into()?;
        p.load()?;
        Ok(Self {
            ebpf,
            program,
            links: Vec::new(),
            netns,
        })
    }

    /// The empty classifier, loaded for interfaces of `netns` (host when `None`).
    pub fn empty(netns: Option<&'a Netns>) -> anyhow::Result<Self> {
        Self::load(EMPTY_OBJECT, "empty", &[], netns)
    }

    /// Attaches to `hook` of `iface`: with TCX where the kernel has it, or on
    /// clsact after every filter already there (`after_clsact`).
    pub fn attach(
        &mut self,
        iface: &str,
        hook: TcAttachType,
        after_clsact: bool,
    ) -> anyhow::Result<()> {
        let netns = self.netns;
        let program = self.program_mut()?;
        let iface = std::ffi::CString::new(iface)?;
        let how = if after_clsact {
            // Automatic priorities go *before* existing filters: ask for a later one.
            TcAttach::Netlink {
                parent: hook.into(),
                options: NlOptions {
                    priority: 60000,
                    ..NlOptions::default()
                },
            }
        } else {
            TcAttach::Auto(hook)
        };
        // Before TCX (6.6) aya attaches through netlink, on a clsact qdisc that must
        // exist first (nettune adds it on the interfaces it watches).
        let netlink =
            after_clsact || KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0));
        // Interface names resolve in the calling thread's namespace: attach from inside.
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
        self.links.push(link);
        Ok(())
    }

    /// The loaded object (its maps).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The kernel's id of the program (to find its run-time statistics).
    pub fn program_id(&self) -> anyhow::Result<u32> {
        let program: &SchedClassifier = self
            .ebpf
            .program(self.program)
            .ok_or_else(|| anyhow::anyhow!("no `{}` program", self.program))?
            .try_into()?;
        Ok(program.info()?.id())
    }

    fn program_mut(&mut self) -> anyhow::Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(self.program)
            .ok_or_else(|| anyhow::anyhow!("no `{}` program", self.program))?
            .try_into()?)
    }
}

/// Adds a clsact qdisc to `iface` (in the calling thread's namespace) unless one
/// is there already.
fn add_clsact(iface: &std::ffi::CStr) -> anyhow::Result<()> {
    match tc::qdisc_add_clsact(iface).map_err(anyhow::Error::from) {
        Err(e) if !format!("{e:#}").contains("exists") => Err(e.context("adding a clsact qdisc")),
        _ => Ok(()),
    }
}

impl Drop for Classifier<'_> {
    fn drop(&mut self) {
        // A clsact (pre-6.6) detach is a netlink request by ifindex: it must run in
        // the namespace that owns the interface, or it could hit a host interface.
        let links = std::mem::take(&mut self.links);
        let netns = self.netns;
        let Ok(program) = self.program_mut() else {
            return;
        };
        for link in links {
            let result = match netns {
                Some(ns) => ns.run(|| program.detach(link)).and_then(|r| Ok(r?)),
                None => program.detach(link).map_err(Into::into),
            };
            if let Err(e) = result {
                eprintln!("warning: could not detach a test classifier: {e}");
            }
        }
    }
}
