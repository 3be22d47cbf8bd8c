//! `cargo xtask setup`: make this machine able to build and test nettune.
//!
//! Idempotent: every step checks first and installs only what is missing, printing
//! one line per prerequisite. What it installs:
//! - the user-space toolchain named in `rust-toolchain.toml` and the eBPF nightly
//!   named in `nettune-ebpf/rust-toolchain.toml`, with their components (rustup);
//! - bpf-linker 0.13 built against Debian's LLVM 22 (cargo install; needs
//!   `llvm-22-dev` and `libpolly-22-dev` from apt, installed only for this);
//! - the tools the kernel tests drive (apt);
//! - for `cargo xtask bench`, the peers the benchmarks compare against (apt).
//!
//! When something cannot be installed (no root and no sudo, no apt), it prints the
//! exact command to run by hand and fails.

use std::process::Command;

use anyhow::{Context as _, bail};

use xtask::process::{self, can_sudo, is_root, output_if_ok};

use crate::arch::Arch;

/// What the caller is about to do, and so what it needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Build and run: toolchains and bpf-linker.
    Build,
    /// Also the tools the test suite uses.
    Everything,
    /// Build, plus the peers the benchmarks measure against.
    Bench,
}

/// The bpf-linker release series known to work with aya 0.16 and LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
/// Debian packages needed to compile bpf-linker against LLVM 22.
const LINKER_BUILD_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev"];
/// Debian packages the test suite runs: `ip` (namespaces, veth), `mount`, and the
/// peers kernel tests compare against: bpftrace, bpftool (the kernel's BTF),
/// nftables (`nft`), `conntrack`; the real container stack the pod tests drive:
/// containerd (with `ctr`), runc, the CNI plugins, buildah (images without
/// Docker), podman (the DaemonSet's container), and a C compiler with static libc
/// for the test pause image; dnsmasq, dnsperf and dig for the DNS conversations;
/// iperf3, ab (apache2-utils) and ping for `nettune check`; nginx, a server that
/// forks after `listen()`.
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "mount",
    "bpftrace",
    "bpftool",
    "nftables",
    "conntrack",
    "prometheus",
    "tmux",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "buildah",
    "podman",
    "gcc",
    "libc6-dev",
    // Real DNS peers for the conversations tests: a server and two clients.
    "dnsmasq-base",
    "dnsperf",
    "bind9-dnsutils",
    // `nettune check`'s peers, also run by hand in its kernel tests: iperf3
    // (client and server) and ab.
    "iperf3",
    "apache2-utils",
    "iputils-ping",
    // A server that forks after listen() (its daemon mode), for the listener
    // records keyed by socket.
    "nginx-light",
];

/// Debian packages `cargo xtask bench` drives: namespaces (`ip`), nftables loss
/// and counters, and the peers it measures nettune against — bpftrace on the same
/// tracepoints, iperf3 for throughput, node_exporter for scrape cost.
const BENCH_PACKAGES: &[&str] = &[
    "iproute2",
    "bpftrace",
    "nftables",
    "iperf3",
    "prometheus-node-exporter",
];

/// A toolchain as a rust-toolchain.toml file names it.
struct Toolchain {
    channel: String,
    components: Vec<String>,
}

impl Toolchain {
    fn from_file(dir: &std::path::Path) -> anyhow::Result<Self> {
        let path = dir.join("rust-toolchain.toml");
        let table: toml::Table = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .parse()
            .with_context(|| format!("parsing {}", path.display()))?;
        let toolchain = table.get("toolchain");
        let components = toolchain
            .and_then(|t| t.get("components"))
            .and_then(toml::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            channel: xtask::toolchain_channel(dir)?,
            components,
        })
    }
}

/// A command-line tool from PyPI, in a venv of its own under `target/` so that it
/// touches nothing else on the machine.
pub struct PipTool {
    /// What setup calls it.
    pub label: &'static str,
    /// The pinned requirement, `name==version`.
    pub requirement: &'static str,
    /// The venv, relative to the workspace root.
    pub venv: &'static str,
    /// The executable in the venv's `bin/` whose `--version` names the version.
    pub exe: &'static str,
    /// The interpreter that creates the venv.
    pub python: &'static str,
}

impl PipTool {
    /// The venv's directory.
    pub fn venv_dir(&self) -> std::path::PathBuf {
        xtask::workspace_root().join(self.venv)
    }

    /// The tool's executable in the venv.
    pub fn exe_path(&self) -> std::path::PathBuf {
        self.venv_dir().join("bin").join(self.exe)
    }

    /// Installs the pinned version into the venv unless it is there already.
    pub fn ensure(&self) -> anyhow::Result<()> {
        let label = self.label;
        let wanted = self.requirement.split("==").nth(1).unwrap_or_default();
        if let Some(v) = output_if_ok(Command::new(self.exe_path()).arg("--version"))
            && v.contains(wanted)
        {
            println!("setup: {label} {wanted} (venv): present");
            return Ok(());
        }
        println!(
            "setup: {label} {wanted}: installing into {} with pip",
            self.venv
        );
        let venv = self.venv_dir();
        process::run(Command::new(self.python).args(["-m", "venv"]).arg(&venv))
            .with_context(|| format!("{} -m venv failed: install python3-venv", self.python))?;
        process::run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            self.requirement,
        ]))?;
        println!("setup: {label} {wanted}: installed");
        Ok(())
    }
}

/// kubernetes-validate (PyPI) validates manifests against each Kubernetes version's
/// schemas.
const KUBERNETES_VALIDATE: PipTool = PipTool {
    label: "kubernetes-validate",
    requirement: "kubernetes-validate==1.37.0",
    venv: "target/tools/venv",
    exe: "kubernetes-validate",
    python: "python3",
};

/// The venv's kubernetes-validate executable.
pub fn kubernetes_validate() -> std::path::PathBuf {
    KUBERNETES_VALIDATE.exe_path()
}

/// The musl target of `arch`, for `cargo xtask build --static` and the image
/// (another architecture's only when a command builds for it).
pub fn ensure_static_target(arch: Arch) -> anyhow::Result<()> {
    let target = arch.static_target();
    let root = xtask::workspace_root();
    let channel = xtask::toolchain_channel(&root)?;
    let installed = output_if_ok(Command::new("rustup").args([
        "target",
        "list",
        "--installed",
        "--toolchain",
        &channel,
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.trim() == target) {
        println!("setup: {target} target for {channel}: present");
        return Ok(());
    }
    println!("setup: {target} target for {channel}: installing with rustup");
    process::run(Command::new("rustup").args(["target", "add", target, "--toolchain", &channel]))?;
    println!("setup: {target} target for {channel}: installed");
    Ok(())
}

pub fn setup(scope: Scope) -> anyhow::Result<()> {
    let root = xtask::workspace_root();
    ensure_toolchain("user-space toolchain", &Toolchain::from_file(&root)?)?;
    ensure_toolchain(
        "eBPF toolchain",
        &Toolchain::from_file(&root.join("nettune-ebpf"))?,
    )?;
    ensure_bpf_linker()?;
    if scope == Scope::Everything {
        ensure_packages("test tools", TEST_PACKAGES)?;
        KUBERNETES_VALIDATE.ensure()?;
        ensure_static_target(Arch::this_machine()?)?;
    }
    if scope == Scope::Bench {
        ensure_packages("benchmark peers", BENCH_PACKAGES)?;
    }

    Ok(())
}

fn ensure_toolchain(what: &str, toolchain: &Toolchain) -> anyhow::Result<()> {
    let channel = &toolchain.channel;
    let installed = output_if_ok(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is required (https://rustup.rs) but `rustup toolchain list` failed")?;
    let has_toolchain = installed.lines().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|t| t.starts_with(channel.as_str()))
    });
    let missing: Vec<&String> = if has_toolchain {
        let have = output_if_ok(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            channel,
        ]))
        .unwrap_or_default();
        toolchain
            .components
            .iter()
            .filter(|c| !have.lines().any(|l| l.starts_with(c.as_str())))
            .collect()
    } else {
        toolchain.components.iter().collect()
    };
    let label = format!("{what} {channel} ({})", toolchain.components.join(", "));
    if has_toolchain && missing.is_empty() {
        println!("setup: {label}: present");
        return Ok(());
    }
    println!("setup: {label}: installing with rustup");
    let mut cmd = Command::new("rustup");
    cmd.args(["toolchain", "install", channel, "--profile", "minimal"]);
    for c in &toolchain.components {
        cmd.args(["--component", c]);
    }
    process::run(&mut cmd)?;
    println!("setup: {label}: installed");
    Ok(())
}

fn bpf_linker_version() -> Option<String> {
    output_if_ok(Command::new("bpf-linker").arg("--version"))
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION}.");
    if let Some(version) = bpf_linker_version()
        && version.starts_with(&wanted)
    {
        println!("setup: {version}: present");
        return Ok(());
    }
    ensure_packages("LLVM 22 for bpf-linker", LINKER_BUILD_PACKAGES)?;
    println!("setup: bpf-linker {BPF_LINKER_VERSION}: building against LLVM 22 (about a minute)");
    let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    process::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--version",
                &format!("~{BPF_LINKER_VERSION}"),
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", path),
    )?;
    match bpf_linker_version() {
        Some(v) if v.starts_with(&wanted) => {
            println!("setup: {v}: installed");
            Ok(())
        }
        other => bail!(
            "bpf-linker was installed but `bpf-linker --version` says {other:?}: is ~/.cargo/bin \
             on PATH?"
        ),
    }
}

fn package_installed(name: &str) -> bool {
    output_if_ok(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", name]))
        .is_some_and(|s| s == "installed")
}

pub fn ensure_packages(what: &str, packages: &[&str]) -> anyhow::Result<()> {
    ensure_packages_with(what, packages, &[])
}

/// Installs the missing ones of `packages` with apt-get, adding `also` (more
/// package names or options, e.g. a release pin) to the install command when
/// anything is missing.
pub fn ensure_packages_with(what: &str, packages: &[&str], also: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        println!("setup: {what} ({}): present", packages.join(", "));
        return Ok(());
    }
    let by_hand = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        [missing.as_slice(), also].concat().join(" ")
    );
    if output_if_ok(Command::new("apt-get").arg("--version")).is_none() {
        bail!(
            "{what}: apt-get not found; install {} by hand",
            missing.join(", ")
        );
    }
    let sudo = if is_root() {
        None
    } else if can_sudo() {
        Some("sudo")
    } else {
        bail!(
            "{what}: missing {}; as root, run: {by_hand}",
            missing.join(", ")
        );
    };
    println!(
        "setup: {what}: installing {} with apt-get",
        missing.join(", ")
    );
    let apt = |args: &[&str]| {
        let mut cmd = match sudo {
            Some(sudo) => {
                let mut c = Command::new(sudo);
                c.arg("apt-get");
                c
            }
            None => Command::new("apt-get"),
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    process::run(&mut apt(&["update", "-q"]))
        .with_context(|| format!("{what}: apt-get update failed; by hand: {by_hand}"))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing).args(also);
    process::run(&mut install)
        .with_context(|| format!("{what}: install failed; by hand: {by_hand}"))?;
    println!("setup: {what}: installed");
    Ok(())
}
