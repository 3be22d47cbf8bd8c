//! Where the workspace is, and the toolchains its `rust-toolchain.toml` files pin.

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
