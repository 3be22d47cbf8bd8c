//! Reading back the image index `cargo xtask image` wrote: every platform's
//! manifest, its config's architecture, and the ELF machine of the binary in
//! its layer — so the archive is checked by what it holds, not by what was
//! asked of buildah.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use xtask::process;

use crate::arch::Arch;

/// One platform of the index, as its manifests say.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    /// The index's `platform.architecture`.
    pub platform: String,
    /// The index's `platform.os`.
    pub os: String,
    /// The image config's `architecture`.
    pub config_arch: String,
    /// The ELF `e_machine` of the entrypoint in the layers.
    pub elf_machine: Option<u16>,
}

/// An OCI archive unpacked into a directory of its own (removed on drop).
struct Unpacked(PathBuf);

impl Unpacked {
    fn new(archive: &Path) -> anyhow::Result<Self> {
        let dir = archive.with_extension("check");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        process::output(
            Command::new("tar")
                .arg("-xf")
                .arg(archive)
                .arg("-C")
                .arg(&dir),
        )?;
        Ok(Self(dir))
    }

    fn blob(&self, digest: &str) -> anyhow::Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .with_context(|| format!("unexpected digest {digest:?}"))?;
        Ok(self.0.join("blobs/sha256").join(hex))
    }

    fn json(&self, digest: &str) -> anyhow::Result<Value> {
        let path = self.blob(digest)?;
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The first bytes of `file` in the layer `digest`, if it holds it.
    fn file_head(&self, digest: &str, file: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let layer = self.blob(digest)?;
        let listing = process::output(Command::new("tar").arg("-tf").arg(&layer))?;
        let Some(entry) = listing.lines().find(|l| l.trim_start_matches("./") == file) else {
            return Ok(None);
        };
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(&layer)
            .arg(entry)
            .output()
            .context("running tar")?;
        ensure!(
            out.status.success(),
            "tar could not read {entry} from {digest}"
        );
        Ok(Some(out.stdout.into_iter().take(64).collect()))
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every platform of the image index in `archive` (its `index.json` names one
/// index), with the binary at `entrypoint` in each.
pub fn read(archive: &Path, entrypoint: &str) -> anyhow::Result<Vec<Entry>> {
    let unpacked = Unpacked::new(archive)?;
    let top: Value = serde_json::from_str(
        &std::fs::read_to_string(unpacked.0.join("index.json")).context("index.json")?,
    )?;
    let index = unpacked.json(top["manifests"][0]["digest"].as_str().unwrap_or_default())?;
    ensure!(
        index["mediaType"] == "application/vnd.oci.image.index.v1+json",
        "{}: index.json names {}, not an image index",
        archive.display(),
        index["mediaType"]
    );
    let file = entrypoint.trim_start_matches('/');
    let mut entries = Vec::new();
    for item in index["manifests"].as_array().into_iter().flatten() {
        let manifest = unpacked.json(item["digest"].as_str().unwrap_or_default())?;
        let config = unpacked.json(manifest["config"]["digest"].as_str().unwrap_or_default())?;
        let mut elf_machine = None;
        for layer in manifest["layers"].as_array().into_iter().flatten() {
            let digest = layer["digest"].as_str().unwrap_or_default();
            if let Some(head) = unpacked.file_head(digest, file)? {
                elf_machine = elf_machine_of(&head);
            }
        }
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        entries.push(Entry {
            platform: text(&item["platform"]["architecture"]),
            os: text(&item["platform"]["os"]),
            config_arch: text(&config["architecture"]),
            elf_machine,
        });
    }
    Ok(entries)
}

/// `e_machine` of a little-endian 64-bit ELF file's header.
pub fn elf_machine_of(head: &[u8]) -> Option<u16> {
    if head.get(..4) != Some(b"\x7fELF".as_slice()) {
        return None;
    }
    Some(u16::from_le_bytes([*head.get(18)?, *head.get(19)?]))
}

/// That the index holds exactly `wanted`, each platform's manifest, config and
/// binary agreeing.
pub fn check(entries: &[Entry], wanted: &[Arch]) -> anyhow::Result<()> {
    let platforms: Vec<&str> = entries.iter().map(|e| e.platform.as_str()).collect();
    let names: Vec<&str> = wanted.iter().map(|a| a.name()).collect();
    ensure!(
        platforms == names,
        "the index holds {platforms:?}, {names:?} expected"
    );
    for (entry, arch) in entries.iter().zip(wanted) {
        if entry.os != "linux"
            || entry.config_arch != arch.name()
            || entry.elf_machine != Some(arch.elf_machine())
        {
            bail!(
                "platform {}: os {}, config architecture {}, binary's ELF machine {:?} \
                 ({} expected)",
                arch.name(),
                entry.os,
                entry.config_arch,
                entry.elf_machine,
                arch.elf_machine()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(platform: &str, config_arch: &str, elf_machine: u16) -> Entry {
        Entry {
            platform: platform.into(),
            os: "linux".into(),
            config_arch: config_arch.into(),
            elf_machine: Some(elf_machine),
        }
    }

    #[test]
    fn an_index_passes_only_when_manifest_config_and_binary_agree() {
        let both = [Arch::Amd64, Arch::Arm64];
        let good = [entry("amd64", "amd64", 62), entry("arm64", "arm64", 183)];
        check(&good, &both).unwrap();
        // An x86-64 binary under the arm64 platform.
        let wrong_binary = [entry("amd64", "amd64", 62), entry("arm64", "arm64", 62)];
        assert!(check(&wrong_binary, &both).is_err());
        let wrong_config = [entry("amd64", "amd64", 62), entry("arm64", "amd64", 183)];
        assert!(check(&wrong_config, &both).is_err());
        assert!(check(&good[..1], &both).is_err());
    }

    #[test]
    fn the_elf_machine_is_read_from_a_real_binary() {
        let head = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(
            elf_machine_of(&head),
            Arch::host().map(Arch::elf_machine),
            "this test binary"
        );
        assert_eq!(elf_machine_of(b"#!/bin/sh\n"), None);
    }
}
