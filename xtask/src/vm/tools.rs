//! What booting a kernel needs on this machine (qemu, virtme-ng and the rest),
//! and `target/vm`, where the VMs keep their tools, kernels and results.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::{
    arch::Arch,
    setup::{self, PipTool},
};

/// virtme-ng, which boots a kernel with the host's filesystem as its root. The
/// guest runs the venv's own init script, so the venv must be on the host
/// filesystem; `/usr/bin/python3` is Debian's, not a shim.
pub const VIRTME_NG: PipTool = PipTool {
    label: "virtme-ng",
    requirement: "virtme-ng==1.42",
    venv: "target/vm/venv",
    exe: "vng",
    python: "/usr/bin/python3",
};

/// Debian packages the VMs need on the host. `udev` is not optional: without it
/// virtme-ng loses the guest's output and exit code.
const VM_PACKAGES: [&str; 5] = [
    "qemu-system-x86",
    "kmod",
    "udev",
    "busybox-static",
    "python3-venv",
];

/// What an arm64 VM needs besides: qemu's aarch64 system emulator, and
/// mmdebstrap to unpack its root filesystem (installed only when `vm-test
/// --arch arm64` runs).
const ARM64_PACKAGES: [&str; 2] = ["qemu-system-arm", "mmdebstrap"];

/// `target/vm`.
pub fn vm_dir() -> PathBuf {
    xtask::workspace_root().join("target/vm")
}

/// Installs what booting a kernel of `arch` needs (idempotent, one line per
/// step).
pub fn ensure_vm_tools(arch: Arch) -> anyhow::Result<()> {
    // A plain install of qemu-system-x86 would remove a qemu-utils from another
    // release (this machine kind has one from backports): naming the release's own
    // qemu-utils keeps one installed.
    let codename = os_codename()?;
    let keep_qemu_utils = format!("qemu-utils/{codename}");
    setup::ensure_packages_with(
        "VM tools",
        &VM_PACKAGES,
        &["--allow-downgrades", &keep_qemu_utils],
    )?;
    if arch == Arch::Arm64 {
        setup::ensure_packages("arm64 VM tools", &ARM64_PACKAGES)?;
    }
    VIRTME_NG.ensure()
}

/// `VERSION_CODENAME` from /etc/os-release (e.g. `bookworm`).
pub fn os_codename() -> anyhow::Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_owned())
        .filter(|c| !c.is_empty())
        .context("/etc/os-release names no VERSION_CODENAME: is this Debian?")
}
