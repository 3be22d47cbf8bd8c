//! `cargo xtask build` and `cargo xtask run`.

use std::{os::unix::process::CommandExt as _, path::PathBuf, process::Command};

use anyhow::bail;

use xtask::process::{self, can_sudo, is_root};

use crate::setup;

/// Builds the eBPF object and `nettune`; returns the binary's path. `static_musl`
/// links it statically (the container image's binary).
pub fn build_with(release: bool, static_musl: bool) -> anyhow::Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    let kind = if static_musl { ", static" } else { "" };
    println!("build: eBPF object and nettune ({profile}{kind})");
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--package", "nettune-agent", "--bin", "nettune"]);
    if release {
        cmd.arg("--release");
    }
    let mut dir = xtask::workspace_root().join("target");
    if static_musl {
        setup::ensure_static_target()?;
        cmd.args(["--target", setup::STATIC_TARGET]);
        dir = dir.join(setup::STATIC_TARGET);
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
    build_with(release, false)
}
