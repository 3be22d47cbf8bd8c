//! `cargo xtask fmt`, and the formatting check of `cargo xtask test`.

use std::process::Command;

use xtask::process;

/// Runs `cargo fmt` (with `--check` when `check`) on the workspace and each eBPF crate.
pub fn format(check: bool) -> anyhow::Result<()> {
    let root = xtask::workspace_root();
    let check_flag: &[&str] = if check { &["--check"] } else { &[] };
    process::run(
        Command::new("cargo")
            .args(["fmt", "--all"])
            .args(check_flag),
    )?;
    for dir in xtask::EBPF_CRATES {
        process::run(
            Command::new("cargo")
                .args(["fmt", "--manifest-path"])
                .arg(root.join(dir).join("Cargo.toml"))
                .args(check_flag),
        )?;
    }
    Ok(())
}
