//! Shared by the xtask binary, the build scripts of the crates that embed eBPF
//! objects and the kernel tests: where the pinned toolchains are named
//! ([`toolchain`]), how an eBPF crate is built ([`ebpf`]), running commands
//! ([`process`]), [`Leftovers`] (what container tools leave on the host), and the
//! module graph the cycle test reads ([`modules`]).

pub mod ebpf;
mod leftovers;
pub mod modules;
pub mod process;
pub mod toolchain;

pub use ebpf::{EBPF_CRATES, build_ebpf_crate};
pub use leftovers::Leftovers;
pub use toolchain::{ebpf_toolchain, toolchain_channel, workspace_root};
