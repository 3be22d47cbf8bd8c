//! What the probes attached: per signal, the variant in use and why the others
//! were skipped. Produced by [`crate::probes`], shown by `nettune probes`, the
//! `nettune_probe_attached` metric and the JSON API.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A way of getting a signal out of the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// BTF-enabled tracepoint (`tp_btf`, Linux 5.5+).
    TpBtf,
    /// Classic tracepoint through tracefs.
    Tracepoint,
    /// fentry trampoline on a kernel function (5.5+, needs BTF and trampolines).
    Fentry,
    /// kprobe on a kernel function (needs `CONFIG_KPROBES`).
    Kprobe,
    /// tc program through a TCX link (6.6+).
    Tcx,
    /// tc program on a clsact qdisc through netlink.
    Clsact,
    /// `sock_diag` listings of listening sockets, with the namespace's sysctls.
    SockDiag,
    /// The kernel's own counters under /proc, read every tick.
    Procfs,
    /// A `cgroup/sysctl` program on the root cgroup (cgroup v2, Linux 5.2+).
    CgroupSysctl,
}

impl Variant {
    /// Every variant, in the order `--help` lists them.
    pub const ALL: [Self; 9] = [
        Self::TpBtf,
        Self::Tracepoint,
        Self::Fentry,
        Self::Kprobe,
        Self::Tcx,
        Self::Clsact,
        Self::SockDiag,
        Self::Procfs,
        Self::CgroupSysctl,
    ];

    /// The name used on the command line, in the config and in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::TpBtf => "tp_btf",
            Self::Tracepoint => "tracepoint",
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
            Self::SockDiag => "sock_diag",
            Self::Procfs => "procfs",
            Self::CgroupSysctl => "cgroup_sysctl",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`Variant`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownVariant(pub String);

impl fmt::Display for UnknownVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
        write!(
            f,
            "`{}` is not a variant (one of: {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownVariant {}

impl FromStr for Variant {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| UnknownVariant(s.to_owned()))
    }
}

/// A variant that was tried and not used, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The variant.
    pub variant: Variant,
    /// The kernel's error, the missing prerequisite, or `--disable-variant`.
    pub reason: String,
}

/// What happened to one signal's chain of variants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalStatus {
    /// Signal name, e.g. `tcp_retransmit`.
    pub signal: String,
    /// The variant in use, if any worked.
    pub attached: Option<Variant>,
    /// Variants tried before (or instead of) the attached one.
    pub skipped: Vec<Skipped>,
    /// When the attached variant runs, if not always (a program loaded at start
    /// and attached only while there is something to see).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand: Option<String>,
}

/// The outcome of loading the probes: one entry per signal, plus start-up warnings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// One entry per signal, in a fixed order.
    pub signals: Vec<SignalStatus>,
    /// Degradations not tied to one signal (memlock, tracefs, BTF).
    pub warnings: Vec<String>,
}

impl Report {
    /// Whether every signal has an attached variant.
    pub fn all_attached(&self) -> bool {
        self.signals.iter().all(|s| s.attached.is_some())
    }

    /// The status of `signal`.
    pub fn signal(&self, signal: &str) -> Option<&SignalStatus> {
        self.signals.iter().find(|s| s.signal == signal)
    }
}

impl fmt::Display for Report {
    /// The table `nettune probes` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<22} {:<11} SKIPPED VARIANTS", "SIGNAL", "ATTACHED")?;
        for s in &self.signals {
            let attached = s
                .attached
                .map_or_else(|| "NONE".to_owned(), |v| v.to_string());
            let mut skipped = s.skipped.iter();
            let first = skipped.next().map_or_else(
                || "-".to_owned(),
                |k| format!("{}: {}", k.variant, k.reason),
            );
            writeln!(f, "{:<22} {attached:<11} {first}", s.signal)?;
            for k in skipped {
                writeln!(f, "{:<22} {:<11} {}: {}", "", "", k.variant, k.reason)?;
            }
            if let Some(when) = &s.on_demand {
                writeln!(f, "{:<22} {:<11} attached {when}", "", "")?;
            }
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_from_their_names() {
        for v in Variant::ALL {
            assert_eq!(v.name().parse::<Variant>(), Ok(v));
        }
        assert!(
            "fexit"
                .parse::<Variant>()
                .unwrap_err()
                .to_string()
                .contains("one of: tp_btf")
        );
    }
}
