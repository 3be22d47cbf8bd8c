//! The CPU architectures nettune is built for: the image's platforms, the
//! static binaries' Rust targets, and the VMs' Debian kernels.

use std::process::Command;

/// An architecture of the image, the static binary and the VM kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// 64-bit Arm (aarch64).
    Arm64,
}

impl Arch {
    /// Every architecture, in the order images and reports list them.
    pub const ALL: [Self; 2] = [Self::Amd64, Self::Arm64];

    /// Its name as OCI platforms and Debian say it (`amd64`, `arm64`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// The Rust target of its static binary (musl, linked statically).
    pub fn static_target(self) -> &'static str {
        match self {
            Self::Amd64 => "x86_64-unknown-linux-musl",
            Self::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// `e_machine` of its ELF binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            // EM_X86_64, EM_AARCH64
            Self::Amd64 => 62,
            Self::Arm64 => 183,
        }
    }

    /// The architecture of this machine (`None`: one nettune is not built for).
    pub fn host() -> Option<Self> {
        Self::from_rust_arch(std::env::consts::ARCH)
    }

    /// The architecture of this machine, or why nettune is not built here.
    pub fn this_machine() -> anyhow::Result<Self> {
        Self::host().ok_or_else(|| {
            anyhow::anyhow!(
                "this machine is {}: nettune is built for x86_64 and aarch64",
                std::env::consts::ARCH
            )
        })
    }

    /// From Rust's `target_arch` name (`x86_64`, `aarch64`).
    pub fn from_rust_arch(arch: &str) -> Option<Self> {
        match arch {
            "x86_64" => Some(Self::Amd64),
            "aarch64" => Some(Self::Arm64),
            _ => None,
        }
    }

    /// Sets up `cargo` to build for this architecture's static target. Another
    /// architecture's binary is linked with the toolchain's own `rust-lld`: the
    /// agent and its tests are pure Rust (no C compiler for the target is
    /// needed), and musl's start files come with rustup's target.
    pub fn cargo_target(self, cargo: &mut Command) {
        let target = self.static_target();
        cargo.args(["--target", target]);
        if Self::host() != Some(self) {
            cargo.env(linker_variable(target), "rust-lld");
        }
    }
}

/// The variable cargo reads a target's linker from.
fn linker_variable(target: &str) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace(['-', '.'], "_")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_name_their_target_elf_machine_and_linker() {
        assert_eq!(Arch::from_rust_arch("aarch64"), Some(Arch::Arm64));
        assert_eq!(Arch::from_rust_arch("riscv64"), None);
        assert_eq!(Arch::Arm64.static_target(), "aarch64-unknown-linux-musl");
        assert_eq!(
            linker_variable(Arch::Arm64.static_target()),
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER"
        );
        let mut cargo = Command::new("cargo");
        let other = if Arch::host() == Some(Arch::Amd64) {
            Arch::Arm64
        } else {
            Arch::Amd64
        };
        other.cargo_target(&mut cargo);
        assert!(cargo.get_args().any(|a| a == other.static_target()));
        assert!(
            cargo
                .get_envs()
                .any(|(k, v)| k.to_string_lossy().ends_with("_LINKER")
                    && v.is_some_and(|v| v == "rust-lld"))
        );
    }
}

#[cfg(test)]
mod deploy_tests {
    use super::Arch;

    #[test]
    fn the_daemonset_schedules_on_every_platform_of_the_image() {
        let path = xtask::workspace_root().join("deploy/base/daemonset.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let after_key = text
            .split_once("key: kubernetes.io/arch")
            .expect("the DaemonSet selects nodes by kubernetes.io/arch")
            .1;
        let values = after_key
            .lines()
            .find_map(|l| l.trim().strip_prefix("values: "))
            .expect("its values");
        let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(values, format!("[{}]", names.join(", ")));
    }
}
