//! `cargo xtask image`: nettune's container image, built here without a Docker
//! engine — the static binary in an image `FROM scratch`, made with buildah in
//! private storage under `target/image/`, written as an OCI archive, and on
//! request loaded into podman and containerd.
//!
//! The image is what `deploy/Dockerfile`'s final stage makes (a kernel test,
//! `deploy::the_image_matches_the_dockerfile`, compares binary, entrypoint,
//! command and user): [`ENTRYPOINT`], [`CMD`] and [`USER`] are said once here
//! and once there.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use xtask::process;

use crate::setup;

/// Where the binary goes in the image, and what runs.
pub const ENTRYPOINT: &str = "/nettune";
/// The default arguments: the daemon.
pub const CMD: &str = "run";
/// Root: loading eBPF programs needs it (with the DaemonSet's capabilities).
pub const USER: &str = "0:0";

/// Where `cargo xtask image` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadInto {
    /// `podman load` (its default storage, or `CONTAINERS_STORAGE_CONF`'s).
    Podman,
    /// `ctr -n k8s.io images import` (at `CONTAINERD_ADDRESS`, default
    /// `/run/containerd/containerd.sock`), where the kubelet finds it.
    Containerd,
}

/// The image's name unless `--tag` says otherwise.
pub fn default_tag() -> String {
    format!("localhost/nettune:{}", env!("CARGO_PKG_VERSION"))
}

/// One image `FROM scratch` holding one static binary.
pub struct ScratchImage<'a> {
    /// The binary on this machine.
    pub binary: &'a Path,
    /// Its path in the image, which is also the entrypoint.
    pub entrypoint: &'a str,
    /// Default arguments.
    pub cmd: &'a [&'a str],
    /// Name and tag, e.g. `localhost/nettune:0.1.0`.
    pub tag: &'a str,
    /// The OCI archive to write.
    pub archive: &'a Path,
}

/// `target/image`: the archives and buildah's private storage.
pub fn image_dir() -> PathBuf {
    xtask::workspace_root().join("target/image")
}

/// What buildah creates outside its private storage when absent.
const OUTSIDE_STORAGE: [&str; 2] = ["/var/lib/containers", "/etc/cni/net.d/cni.lock"];

fn buildah() -> Command {
    let storage = image_dir().join("buildah");
    let mut cmd = Command::new("buildah");
    cmd.args(["--storage-driver", "vfs", "--root"])
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("run"));
    cmd
}

/// Builds `image` and writes its archive.
pub fn build_scratch(image: &ScratchImage<'_>) -> anyhow::Result<()> {
    let _leftovers = xtask::Leftovers::note(&OUTSIDE_STORAGE);
    let container = process::output(buildah().args(["from", "scratch"]))?
        .trim()
        .to_owned();
    let steps = || -> anyhow::Result<()> {
        process::output(
            buildah()
                .arg("copy")
                .arg(&container)
                .arg(image.binary)
                .arg(image.entrypoint),
        )?;
        let json = |items: &[&str]| serde_json::to_string(items).unwrap_or_default();
        process::output(
            buildah()
                .args(["config", "--entrypoint", &json(&[image.entrypoint])])
                .args(["--cmd", &json(image.cmd), "--user", USER])
                .arg(&container),
        )?;
        process::output(
            buildah()
                .args(["commit", "--quiet", "--format", "oci", "--rm"])
                .arg(&container)
                .arg(image.tag),
        )
        .map(drop)
    };
    if let Err(e) = steps() {
        let _ = process::output(buildah().arg("rm").arg(&container));
        return Err(e);
    }
    let _ = std::fs::remove_file(image.archive);
    let pushed = process::output(buildah().args(["push", "--quiet", image.tag]).arg(format!(
        "oci-archive:{}:{}",
        image.archive.display(),
        image.tag
    )));
    // Only the archive is kept: the private storage would grow with every build.
    let _ = process::output(buildah().args(["rmi", image.tag]));
    pushed.map(drop)
}

/// `cargo xtask image`: the static binary, the image, its archive, and the
/// loads asked for. Returns the archive.
pub fn image(tag: Option<&str>, load: &[LoadInto]) -> anyhow::Result<PathBuf> {
    setup::setup(setup::Scope::Build)?;
    setup::ensure_packages("image tools", &["buildah"])?;
    if !process::is_root() {
        bail!("buildah needs root here (its private storage under target/image): run as root");
    }
    let binary = crate::run::build_with(true, true)?;
    let tag = tag.map_or_else(default_tag, str::to_owned);
    let dir = image_dir();
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let archive = dir.join(format!(
        "{}.oci.tar",
        tag.rsplit('/')
            .next()
            .unwrap_or("nettune")
            .replace(':', "-")
    ));
    build_scratch(&ScratchImage {
        binary: &binary,
        entrypoint: ENTRYPOINT,
        cmd: &[CMD],
        tag: &tag,
        archive: &archive,
    })?;
    println!("image: {} ({tag})", archive.display());
    for target in load {
        let mut cmd = match target {
            LoadInto::Podman => {
                let mut c = Command::new("podman");
                c.arg("load").arg("-i").arg(&archive);
                c
            }
            LoadInto::Containerd => {
                let mut c = Command::new("ctr");
                c.args(["-n", "k8s.io", "images", "import"]).arg(&archive);
                c
            }
        };
        process::run(&mut cmd).with_context(|| format!("loading {tag} into {target:?}"))?;
        println!("image: loaded into {target:?}");
    }
    Ok(archive)
}
