//! `cargo xtask image`: nettune's container image, built here without a Docker
//! engine — the static binary in an image `FROM scratch`, made with buildah in
//! private storage under `target/image/`, one per architecture (amd64 and arm64
//! by default; the other architecture's binary cross-built), written as one OCI
//! image index (`<name>.oci.tar`, checked by reading its manifests back) and as
//! this machine's platform alone (`<name>-<arch>.oci.tar`), which is what is
//! loaded into podman and containerd on request.
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

use crate::{arch::Arch, setup};

mod index;

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

/// Builds `image` for `arch` into buildah's storage as `name`.
fn commit(image: &ScratchImage<'_>, arch: Arch, name: &str) -> anyhow::Result<()> {
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
                .args(["--os", "linux", "--arch", arch.name()])
                .arg(&container),
        )?;
        process::output(
            buildah()
                .args(["commit", "--quiet", "--format", "oci", "--rm"])
                .arg(&container)
                .arg(name),
        )
        .map(drop)
    };
    steps().inspect_err(|_| {
        let _ = process::output(buildah().arg("rm").arg(&container));
    })
}

/// Writes what buildah holds as `name` (an image, or with `all` an index and
/// its images) to `archive`, recorded there as `tag`.
fn push(name: &str, tag: &str, archive: &Path, all: bool) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(archive);
    let destination = format!("oci-archive:{}:{tag}", archive.display());
    let mut cmd = buildah();
    if all {
        cmd.args(["manifest", "push", "--all", "--format", "oci"]);
    } else {
        cmd.arg("push");
    }
    process::output(cmd.args(["--quiet", name]).arg(destination)).map(drop)
}

/// Builds `image` for this machine and writes its archive.
pub fn build_scratch(image: &ScratchImage<'_>) -> anyhow::Result<()> {
    let _leftovers = xtask::Leftovers::note(&OUTSIDE_STORAGE);
    commit(image, Arch::this_machine()?, image.tag)?;
    let pushed = push(image.tag, image.tag, image.archive, false);
    // Only the archive is kept: the private storage would grow with every build.
    let _ = process::output(buildah().args(["rmi", image.tag]));
    pushed
}

/// Builds one image per `(architecture, binary)`, and writes `archive`, their
/// index named `tag`, and `host_archive`, this machine's platform alone.
fn build_index(
    tag: &str,
    archive: &Path,
    binaries: &[(Arch, PathBuf)],
    host_archive: Option<&Path>,
) -> anyhow::Result<()> {
    let _leftovers = xtask::Leftovers::note(&OUTSIDE_STORAGE);
    let names: Vec<String> = binaries
        .iter()
        .map(|(arch, _)| format!("{tag}-{}", arch.name()))
        .collect();
    let steps = || -> anyhow::Result<()> {
        let _ = process::output(buildah().args(["manifest", "rm", tag]));
        process::output(buildah().args(["manifest", "create", tag]))?;
        for ((arch, binary), name) in binaries.iter().zip(&names) {
            let image = ScratchImage {
                binary,
                entrypoint: ENTRYPOINT,
                cmd: &[CMD],
                tag,
                archive,
            };
            commit(&image, *arch, name)?;
            process::output(
                buildah()
                    .args(["manifest", "add", "--os", "linux", "--arch", arch.name()])
                    .args([tag, name]),
            )?;
            if Some(*arch) == Arch::host()
                && let Some(host_archive) = host_archive
            {
                push(name, tag, host_archive, false)?;
            }
        }
        push(tag, tag, archive, true)
    };
    let built = steps();
    // Only the archives are kept: the private storage would grow with every build.
    let _ = process::output(buildah().args(["manifest", "rm", tag]));
    for name in &names {
        let _ = process::output(buildah().args(["rmi", name]));
    }
    built
}

/// `cargo xtask image`: a static binary per architecture, their images, the
/// index's archive (checked by reading it back), this machine's platform's
/// archive, and the loads asked for (of this machine's platform). Returns the
/// index's archive.
pub fn image(tag: Option<&str>, load: &[LoadInto], arches: &[Arch]) -> anyhow::Result<PathBuf> {
    setup::setup(setup::Scope::Build)?;
    setup::ensure_packages("image tools", &["buildah"])?;
    if !process::is_root() {
        bail!("buildah needs root here (its private storage under target/image): run as root");
    }
    let mut arches: Vec<Arch> = Arch::ALL
        .into_iter()
        .filter(|a| arches.contains(a))
        .collect();
    arches.dedup();
    let host = Arch::this_machine()?;
    if !load.is_empty() && !arches.contains(&host) {
        bail!(
            "--load loads this machine's platform ({}), which --arch leaves out",
            host.name()
        );
    }
    let binaries = arches
        .iter()
        .map(|&arch| Ok((arch, crate::run::build_with(true, Some(arch))?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tag = tag.map_or_else(default_tag, str::to_owned);
    let dir = image_dir();
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let stem = tag
        .rsplit('/')
        .next()
        .unwrap_or("nettune")
        .replace(':', "-");
    let archive = dir.join(format!("{stem}.oci.tar"));
    let host_archive = dir.join(format!("{stem}-{}.oci.tar", host.name()));
    build_index(
        &tag,
        &archive,
        &binaries,
        arches.contains(&host).then_some(host_archive.as_path()),
    )?;
    let entries = index::read(&archive, ENTRYPOINT)?;
    index::check(&entries, &arches)
        .with_context(|| format!("reading back {}", archive.display()))?;
    let root = xtask::workspace_root();
    let shown = |path: &Path| {
        path.strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    for entry in &entries {
        println!(
            "image: {} platform {}/{}: config architecture {}, {ENTRYPOINT} ELF machine {}",
            shown(&archive),
            entry.os,
            entry.platform,
            entry.config_arch,
            entry.elf_machine.unwrap_or_default()
        );
    }
    println!("image: {} ({tag}, index)", shown(&archive));
    if arches.contains(&host) {
        println!(
            "image: {} ({tag}, {} only)",
            shown(&host_archive),
            host.name()
        );
    }
    for target in load {
        let mut cmd = match target {
            LoadInto::Podman => {
                let mut c = Command::new("podman");
                c.arg("load").arg("-i").arg(&host_archive);
                c
            }
            LoadInto::Containerd => {
                let mut c = Command::new("ctr");
                c.args(["-n", "k8s.io", "images", "import"])
                    .arg(&host_archive);
                c
            }
        };
        process::run(&mut cmd).with_context(|| format!("loading {tag} into {target:?}"))?;
        println!("image: loaded into {target:?} ({})", host.name());
    }
    Ok(archive)
}
