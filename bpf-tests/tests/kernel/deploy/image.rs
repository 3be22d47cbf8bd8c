//! The image `cargo xtask image` builds is the Dockerfile's, and runs under
//! podman and containerd.

use std::path::PathBuf;

use anyhow::{Context as _, bail, ensure};
use bpf_tests::{
    containerd::{Containerd, nettune_image, require_containers},
    harness::{Outcome, TestResult},
    oci,
    podman::Podman,
};

use super::files::deploy_dir;

/// What the Dockerfile's last stage says: (FROM, COPY source, COPY
/// destination, USER, ENTRYPOINT, CMD), the JSON forms as JSON.
fn dockerfile_image() -> anyhow::Result<[String; 6]> {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile"))?;
    let last = text
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| format!("FROM {stage}"))
        .context("no FROM in the Dockerfile")?;
    let value = |keyword: &str| {
        last.lines()
            .find_map(|l| l.strip_prefix(&format!("{keyword} ")))
            .map(str::trim)
            .with_context(|| format!("no {keyword} in the Dockerfile's last stage"))
    };
    let copy: Vec<&str> = value("COPY")?.split_whitespace().collect();
    let [_, source, destination] = copy.as_slice() else {
        bail!("COPY --from=build SOURCE DESTINATION expected, found {copy:?}");
    };
    Ok([
        value("FROM")?.to_owned(),
        (*source).to_owned(),
        (*destination).to_owned(),
        value("USER")?.to_owned(),
        value("ENTRYPOINT")?.to_owned(),
        value("CMD")?.to_owned(),
    ])
}

pub fn the_image_is_the_dockerfiles_and_runs_under_podman_and_containerd() -> TestResult {
    if let Some(skip) = require_containers(true) {
        return skip;
    }
    let archive = nettune_image()?;
    let image = oci::Archive::open(&archive)?;
    let [from, source, destination, user, entrypoint, cmd] = dockerfile_image()?;
    let config = image.config()?;
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text);
    ensure!(from == "scratch", "the Dockerfile's image is FROM {from}");
    ensure!(
        config["Entrypoint"] == json(&entrypoint)?,
        "entrypoint {} vs the Dockerfile's {entrypoint}",
        config["Entrypoint"]
    );
    ensure!(
        config["Cmd"] == json(&cmd)?,
        "command {} vs the Dockerfile's {cmd}",
        config["Cmd"]
    );
    ensure!(
        config["User"] == user.as_str(),
        "user {} vs the Dockerfile's {user}",
        config["User"]
    );
    // The build stage runs in /src (WORKDIR) with the checkout copied there.
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(
        source
            .strip_prefix("/src/")
            .context("COPY source outside /src")?,
    );
    let (root, files) = image.root()?;
    let files: Vec<&str> = files.iter().map(|f| f.trim_end_matches('/')).collect();
    ensure!(
        files == [destination.trim_start_matches('/')],
        "the image holds {files:?}, the Dockerfile's only {destination}"
    );
    ensure!(
        std::fs::read(root.join(destination.trim_start_matches('/')))? == std::fs::read(&built)?,
        "the image's {destination} is not {}",
        built.display()
    );
    println!(
        "    {}: {destination} = {source}, entrypoint {entrypoint}, cmd {cmd}, user {user}",
        image.name
    );

    // Loaded and run by both runtimes.
    let podman = Podman::new()?;
    let name = podman.load(&archive)?;
    let version = podman.checked(&["run", "--rm", "--network", "host", &name, "--version"])?;
    let containerd = Containerd::start()?;
    containerd.import(&archive)?;
    let from_ctr = containerd.ctr_run(&image.name, &["/nettune", "--version"])?;
    let expected = format!("nettune {}", env!("CARGO_PKG_VERSION"));
    println!("    podman: {version}; containerd: {}", from_ctr.trim());
    ensure!(
        version == expected && from_ctr.trim() == expected,
        "podman said {version:?}, containerd {from_ctr:?}"
    );
    Ok(Outcome::Passed)
}
