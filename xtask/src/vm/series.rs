//! The kernels of the matrix, the tests the VMs leave out, and what
//! `cargo xtask test`'s VM step boots and runs.

use anyhow::Context as _;

use crate::arch::Arch;

/// A Debian kernel series the matrix boots.
pub struct Series {
    /// `5.10`, `6.1`, `6.12`: what `--kernel` takes.
    pub name: &'static str,
    /// The kernel's architecture (`--arch`).
    pub arch: Arch,
    /// Where Debian ships it.
    pub debian: &'static str,
    /// The package name around its ABI number: (before, after).
    pub package: (&'static str, &'static str),
    /// What this kernel has, as `NETTUNE_REQUIRE_FEATURES` names it: a test that
    /// skips for one of these fails.
    pub features: &'static str,
}

/// The kernels of the matrix. Every series is the newest package of its line.
pub const SERIES: [Series; 3] = [
    Series {
        name: "5.10",
        arch: Arch::Amd64,
        debian: "Debian 11, bullseye-security",
        package: ("linux-image-5.10.0-", "-amd64"),
        // No TCX (6.6), no drop reasons (5.17).
        features: "root,btf,tp_btf,tracepoint,tc,clsact,fentry,kprobe,netem",
    },
    Series {
        name: "6.1",
        arch: Arch::Amd64,
        debian: "Debian 12, bookworm-security",
        package: ("linux-image-6.1.0-", "-amd64"),
        // No TCX; fentry is refused (ENOTSUPP at attach) on
        // tcp_v{4,6}_syn_recv_sock, so the listen signal takes kprobes. (Not for
        // their six arguments: fentry on __sys_sendto, six too, attaches.)
        features: "root,btf,tp_btf,tracepoint,tc,clsact,kprobe,netem,drop_reasons",
    },
    Series {
        name: "6.12",
        arch: Arch::Amd64,
        debian: "Debian 12, bookworm-security",
        package: ("linux-image-6.12.", "+deb12-amd64-unsigned"),
        features: "root,btf,tp_btf,tracepoint,tc,tcx,clsact,fentry,kprobe,netem,drop_reasons",
    },
];

/// Tests the VMs leave out, and why: they exercise nothing that differs between
/// kernels, and cost minutes under software emulation (≈15× slower).
pub const NOT_IN_VMS: [(&str, &str); 5] = [
    (
        "deploy::",
        "manifests, alert rules and configs checked in user space: nothing kernel-specific",
    ),
    (
        "top::",
        "the terminal UI in tmux: nothing kernel-specific, minutes under emulation",
    ),
    (
        "pods::",
        "containerd, CRI names and images in user space; the kernel paths under them \
         (veth traffic, tc drops, retransmits, somaxconn) are the other tests'",
    ),
    (
        "tuning::sigkill_at_every_step",
        "the journal's steps in user space; Debian's bpftrace 0.17 cannot build its syscall \
         tracepoint arguments against 5.10's formats (`unknown type name 's64'`)",
    ),
    (
        "exporter::hundreds_of_namespaces",
        "series caps in user space: nothing kernel-specific; 300 namespaces and \
         20 000 connects take many minutes under emulation",
    ),
];

/// The kernel `cargo xtask test` boots: Debian 12's, the most common production
/// kernel, and one without TCX.
pub const CI_SERIES: &str = "6.1";

/// The tests `cargo xtask test` runs in that VM (a few minutes under emulation):
/// the paths the host cannot take — per-socket listen overflows under kprobes,
/// pod conversations and volumes on clsact and its clean detach, netem loss, drop reasons from this
/// kernel's BTF with `NOT_SPECIFIED` = 1, every variant's verdict.
pub const CI_TESTS: [&str; 8] = [
    "listen::kprobe_per_socket",
    "listen::fentry_per_socket",
    "conversations::clsact_",
    "retransmit::under_netem",
    "drops::netem_loss",
    "drops::packet_socket",
    "drops::reason_names",
    "probes::every_variant",
];

/// Debian's arm64 kernels, booted under `qemu-system-aarch64` (software
/// emulation of another architecture, several times slower than x86-64's) with a
/// Debian arm64 root of their own (`rootfs`).
pub const ARM64_SERIES: [Series; 2] = [
    Series {
        name: "6.1",
        arch: Arch::Arm64,
        debian: "Debian 12, bookworm-security, arm64",
        package: ("linux-image-6.1.0-", "-arm64"),
        // No TCX. fentry loads but attaching is refused with ENOTSUPP (524)
        // already on tcp_conn_request (x86-64's 6.1 refuses only
        // tcp_v{4,6}_syn_recv_sock), so the listen signal takes kprobes.
        features: "root,btf,tp_btf,tracepoint,tc,clsact,kprobe,netem,drop_reasons",
    },
    Series {
        name: "6.12",
        arch: Arch::Arm64,
        debian: "Debian 12, bookworm-security, arm64",
        package: ("linux-image-6.12.", "+deb12-arm64-unsigned"),
        features: "root,btf,tp_btf,tracepoint,tc,tcx,clsact,fentry,kprobe,netem,drop_reasons",
    },
];

/// What an arm64 VM runs without filters: the tests of what differs between
/// architectures, each signal attached and counting right. The kprobe variant
/// (the only programs whose bytes differ: arguments from `user_pt_regs`) and
/// every variant loading; each signal's figures against the kernel's own
/// counters; the agent binary itself run end to end. Left out: what is user
/// space only (as in the x86-64 VMs), and the rest of the suite, which would
/// take hours under arm64 emulation.
pub const ARM64_TESTS: [&str; 17] = [
    "probes::every_signal_attaches",
    "probes::every_variant",
    "listen::kprobe_per_socket",
    "listen::fentry_per_socket",
    "listen::overflows_equal",
    "retransmit::tp_btf_count",
    "retransmit::tracepoint_count",
    "retransmit::under_netem",
    "drops::netem_loss",
    "drops::packet_socket",
    "drops::reason_names",
    "drops::no_socket",
    "connect::",
    "conversations::clsact_volumes",
    "conversations::tcx_volumes",
    "sysctl_writers::",
    "agent::run_detaches_everything_on_sigterm",
];

impl Series {
    /// The series' kernels of `arch`.
    pub fn of(arch: Arch) -> &'static [Series] {
        match arch {
            Arch::Amd64 => &SERIES,
            Arch::Arm64 => &ARM64_SERIES,
        }
    }

    /// Its label in reports, results and docs: `6.1`, `arm64 6.1`.
    pub fn label(&self) -> String {
        match self.arch {
            Arch::Amd64 => self.name.to_owned(),
            Arch::Arm64 => format!("{} {}", self.arch.name(), self.name),
        }
    }

    /// Its directory under `target/vm/kernels` and `target/vm/results`.
    pub fn dir_name(&self) -> String {
        self.label().replace(' ', "-")
    }
}

pub fn find_series(name: &str, arch: Arch) -> anyhow::Result<&'static Series> {
    let series = Series::of(arch);
    series.iter().find(|s| s.name == name).with_context(|| {
        let names: Vec<&str> = series.iter().map(|s| s.name).collect();
        format!(
            "--kernel {name}: not one of {} or all for {}",
            names.join(", "),
            arch.name()
        )
    })
}
