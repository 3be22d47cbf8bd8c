//! The root filesystem of a VM of another architecture (arm64 on this x86-64
//! machine): the host's own filesystem cannot be the guest's root there, its
//! programs are x86-64. Debian's arm64 packages of the tools the kernel tests
//! run, unpacked by mmdebstrap (`--variant=extract`: no maintainer script runs,
//! so nothing needs to execute arm64 code on the host) into
//! `target/vm/rootfs-<arch>`, built once and reused while its package list is
//! the same.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use xtask::process;

use super::{sources::Archives, tools::vm_dir};
use crate::arch::Arch;

/// What the guest runs: virtme-ng's init script (bash, mount, udev, kmod, ip),
/// and the tools of [`super::series::ARM64_TESTS`] (tc, nft, bpftrace, bpftool,
/// sysctl, ss, setpriv, iperf3).
const PACKAGES: [&str; 17] = [
    "bash",
    "coreutils",
    "util-linux",
    "mount",
    "udev",
    "kmod",
    "iproute2",
    "procps",
    "busybox-static",
    "nftables",
    "iptables",
    "iperf3",
    "conntrack",
    "sed",
    "grep",
    "bpftrace",
    "bpftool",
];

/// The file in a finished root naming its packages; written last.
const PACKAGES_FILE: &str = ".nettune-packages";

/// Where the kernel tests' results are written in the guest (an `--rwdir`).
pub const GUEST_RESULTS: &str = "/nettune-results";

/// The root of `arch`'s VMs, built now unless a finished one is there.
pub fn ensure(arch: Arch, codename: &str) -> anyhow::Result<PathBuf> {
    let dir = vm_dir().join(format!("rootfs-{}", arch.name()));
    let wanted = PACKAGES.join(",");
    let label = format!(
        "setup: {} root filesystem (target/vm/rootfs-{0})",
        arch.name()
    );
    if std::fs::read_to_string(dir.join(PACKAGES_FILE)).is_ok_and(|p| p == wanted) {
        println!("{label}: present");
        return Ok(dir);
    }
    println!("{label}: unpacking Debian {codename}'s {wanted} with mmdebstrap");
    let partial = dir.with_extension("partial");
    for old in [&partial, &dir] {
        if old.exists() {
            std::fs::remove_dir_all(old).with_context(|| old.display().to_string())?;
        }
    }
    let archive = Archives::from_system()?.main;
    process::run(
        Command::new("mmdebstrap")
            .args(["--variant=extract", "--mode=root", "--quiet"])
            .arg(format!("--architectures={}", arch.name()))
            .arg(format!("--include={wanted}"))
            .arg(codename)
            .arg(&partial)
            .arg(format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {archive} \
                 {codename} main"
            )),
    )?;
    // What maintainer scripts would have made: /bin/sh (dash's, not unpacked)
    // and the root user.
    std::os::unix::fs::symlink("bash", partial.join("bin/sh"))?;
    std::fs::write(
        partial.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\n",
    )?;
    std::fs::write(partial.join("etc/group"), "root:x:0:\n")?;
    std::fs::write(partial.join(PACKAGES_FILE), &wanted)?;
    std::fs::rename(&partial, &dir)?;
    println!("{label}: unpacked");
    Ok(dir)
}

/// Creates in `root` the directory a host directory is mounted on at
/// `guest_path` (the guest's root is read-only).
pub fn mount_point(root: &Path, guest_path: &Path) -> anyhow::Result<()> {
    let dir = root.join(guest_path.strip_prefix("/").unwrap_or(guest_path));
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())
}
