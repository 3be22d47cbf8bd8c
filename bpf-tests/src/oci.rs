//! Reading an OCI image archive (what `cargo xtask image` writes): its name, its
//! config (entrypoint, command, user) and the files of its layers.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use xtask::process::output;

/// An OCI archive unpacked into a temporary directory (removed on drop).
pub struct Archive {
    dir: PathBuf,
    manifest: serde_json::Value,
    /// The image's name (`org.opencontainers.image.ref.name`).
    pub name: String,
}

fn tar(args: &[&str], dir: &Path) -> anyhow::Result<()> {
    output(Command::new("tar").args(args).current_dir(dir)).map(drop)
}

/// The image name recorded in `archive`'s index, without unpacking the rest.
pub fn ref_name(archive: &Path) -> anyhow::Result<String> {
    let index = output(
        Command::new("tar")
            .arg("-xOf")
            .arg(archive)
            .arg("index.json"),
    )?;
    let index: serde_json::Value = serde_json::from_str(&index)?;
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{}: no image name in index.json", archive.display()))
}

impl Archive {
    /// Unpacks `archive`.
    pub fn open(archive: &Path) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "nettune-oci-{}-{}",
            std::process::id(),
            archive
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut unpacked = Self {
            dir,
            manifest: serde_json::Value::Null,
            name: String::new(),
        };
        let archive = std::fs::canonicalize(archive)
            .with_context(|| format!("{} (build it with cargo xtask image)", archive.display()))?;
        tar(&["-xf", &archive.to_string_lossy()], &unpacked.dir)?;
        let index = unpacked.json("index.json")?;
        unpacked.name = ref_name(&archive)?;
        unpacked.manifest =
            unpacked.blob_json(index["manifests"][0]["digest"].as_str().unwrap_or_default())?;
        Ok(unpacked)
    }

    fn json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join(path))
            .with_context(|| format!("{path} in the image archive"))?;
        Ok(serde_json::from_str(&text)?)
    }

    fn blob_path(&self, digest: &str) -> anyhow::Result<PathBuf> {
        let Some(hex) = digest.strip_prefix("sha256:") else {
            bail!("unexpected digest {digest:?}");
        };
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    fn blob_json(&self, digest: &str) -> anyhow::Result<serde_json::Value> {
        let path = self.blob_path(digest)?;
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The image config's `config` object (`Entrypoint`, `Cmd`, `User`, …).
    pub fn config(&self) -> anyhow::Result<serde_json::Value> {
        let digest = self.manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default();
        Ok(self.blob_json(digest)?["config"].clone())
    }

    /// Every file path in the image's layers, and the unpacked root.
    pub fn root(&self) -> anyhow::Result<(PathBuf, Vec<String>)> {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(&root)?;
        let mut files = Vec::new();
        for layer in self.manifest["layers"].as_array().into_iter().flatten() {
            let blob = self.blob_path(layer["digest"].as_str().unwrap_or_default())?;
            let listing = output(Command::new("tar").arg("-tf").arg(&blob))?;
            files.extend(
                listing
                    .lines()
                    .map(|l| l.trim_start_matches("./").to_owned())
                    .filter(|l| !l.is_empty()),
            );
            tar(&["-xf", &blob.to_string_lossy()], &root)?;
        }
        Ok((root, files))
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
