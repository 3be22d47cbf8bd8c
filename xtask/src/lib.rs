//! Shared by the xtask binary, the build scripts of the crates that embed eBPF
//! objects and the kernel tests: where the pinned toolchains are named, how an
//! eBPF crate is built, and [`Leftovers`] (what container tools leave on the
//! host).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};

/// The workspace root (this crate lives in `<root>/xtask`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// The `channel` named in `<dir>/rust-toolchain.toml`.
pub fn toolchain_channel(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    table
        .get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{}: no [toolchain] channel", path.display()))
}

/// The nightly that builds every eBPF crate: named once, in
/// `nettune-ebpf/rust-toolchain.toml`.
pub fn ebpf_toolchain() -> anyhow::Result<String> {
    toolchain_channel(&workspace_root().join("nettune-ebpf"))
}

/// Builds the binaries of the eBPF crate at `<root>/<dir>` (package `name`) into
/// the calling build script's OUT_DIR. For use from build.rs only.
pub fn build_ebpf_crate(name: &str, dir: &str) -> anyhow::Result<()> {
    let root = workspace_root();
    let crate_dir = root.join(dir);
    let toolchain = ebpf_toolchain()?;
    println!(
        "cargo::rerun-if-changed={}",
        root.join("nettune-ebpf/rust-toolchain.toml").display()
    );
    println!(
        "cargo::rerun-if-changed={}",
        root.join("nettune-common/src").display()
    );
    // aya-build runs `cargo build --package` in the current directory; each eBPF
    // crate is its own workspace, so build from inside it.
    std::env::set_current_dir(&crate_dir).with_context(|| crate_dir.display().to_string())?;
    let root_dir = crate_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name,
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}

/// Paths that did not exist when this was made, removed on drop: what tools
/// create outside their private directories (buildah and podman make a
/// blob-info cache under `/var/lib/containers` and `/etc/cni/net.d/cni.lock`
/// even with private storage; containerd makes `/run/containerd`, the CNI
/// plugins `/var/lib/cni`).
pub struct Leftovers(Vec<&'static str>);

impl Leftovers {
    /// Notes which of `paths` are absent now.
    pub fn note(paths: &[&'static str]) -> Self {
        Self(
            paths
                .iter()
                .copied()
                .filter(|p| !Path::new(p).exists())
                .collect(),
        )
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for path in &self.0 {
            let path = Path::new(path);
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            if let Err(e) = removed
                && e.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!("warning: could not remove {}: {e}", path.display());
            }
        }
    }
}
