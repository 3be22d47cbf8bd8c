//! `cargo xtask build` and `cargo xtask run`.

use std::{os::unix::process::CommandExt as _, path::PathBuf, process::Command};

use anyhow::bail;

use xtask::process::{self, can_sudo, is_root};

use crate::{arch::Arch, setup};

/// Builds the eBPF object and `nettune`; returns the binary's path. `static_for`
/// links it statically for that architecture (the container image's binary),
/// cross-compiled when it is not this machine's; its eBPF object is built for
/// that architecture's kernel ABI (`xtask::build_ebpf_crate`).
pub fn build_with(release: bool, static_for: Option<Arch>) -> anyhow::Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    let kind = static_for.map_or_else(String::new, |arch| format!(", static, {}", arch.name()));
    println!("build: eBPF object and nettune ({profile}{kind})");
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--package", "nettune-agent", "--bin", "nettune"]);
    if release {
        cmd.arg("--release");
    }
    let mut dir = xtask::workspace_root().join("target");
    if let Some(arch) = static_for {
        setup::ensure_static_target(arch)?;
        arch.cargo_target(&mut cmd);
        dir = dir.join(arch.static_target());
    }
    process::run(&mut cmd)?;
    let binary = dir.join(profile).join("nettune");
    println!("build: {}", binary.display());
    Ok(binary)
}

/// Builds and runs `nettune` as root, replacing this process so that Ctrl-C and
/// SIGTERM reach the agent directly and it can detach its programs.
pub fn run(release: bool, args: Vec<String>) -> anyhow::Result<()> {
    // Fail before a long build when the agent could not start anyway.
    let use_sudo = if is_root() {
        false
    } else if can_sudo() {
        true
    } else {
        bail!(
            "nettune loads eBPF programs and needs root, but this user is not root and cannot \
             use sudo without a password: run `cargo xtask run` as root"
        );
    };
    setup::setup(setup::Scope::Build)?;
    let binary = build(release)?;
    // The local "main job": the live view, with the agent embedded in it.
    let args = if args.is_empty() {
        vec!["top".to_owned()]
    } else {
        args
    };

    let mut cmd = if use_sudo {
        let mut c = Command::new("sudo");
        c.args(["--preserve-env=RUST_LOG", "--"]).arg(&binary);
        c
    } else {
        Command::new(&binary)
    };
    cmd.args(&args);
    println!("run: {}", process::describe(&cmd));
    let err = cmd.exec();
    bail!("cannot start {}: {err}", binary.display())
}

/// Builds the dynamic binary (`target/<profile>/nettune`).
pub fn build(release: bool) -> anyhow::Result<PathBuf> {
    build_with(release, None)
}
