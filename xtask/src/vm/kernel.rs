//! Kernel packages unpacked into `target/vm/kernels/<series>`, as virtme-ng
//! boots them; a cached one is used as it is.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};
use xtask::process;

use super::{apt::LazyApt, series::Series, tools::vm_dir};

/// A kernel unpacked in the cache, as virtme-ng wants it: `boot/vmlinuz-<release>`
/// next to `lib/modules/<release>`.
pub struct KernelImage {
    /// Its series.
    pub series: &'static Series,
    dir: PathBuf,
    /// The kernel's release (`6.1.0-56-amd64`).
    pub release: String,
    /// `<package> <version>`.
    pub package: String,
}

/// The file in a cached kernel's directory naming its package; written last.
const PACKAGE_FILE: &str = "package";

impl KernelImage {
    /// The cached kernel of `series`, or the newest package downloaded and
    /// unpacked now (also when `refresh` finds a newer one).
    pub fn fetch(
        series: &'static Series,
        refresh: bool,
        apt: &mut LazyApt,
    ) -> anyhow::Result<Self> {
        let dir = vm_dir().join("kernels").join(series.dir_name());
        let label = format!("setup: kernel {} ({})", series.label(), series.debian);
        let cached = Self::cached(series, &dir);
        if !refresh && let Some(kernel) = cached {
            println!("{label}: {} (cached in target/vm/kernels)", kernel.package);
            return Ok(kernel);
        }
        let apt = apt.get()?;
        let (package, version) = apt.newest(series.package)?;
        let wanted = format!("{package} {version}");
        if let Some(kernel) = cached.filter(|k| k.package == wanted) {
            println!("{label}: {wanted} (cached, still the newest)");
            return Ok(kernel);
        }
        println!("{label}: downloading {wanted}");
        let deb = apt.download(&package, &vm_dir().join("debs"))?;
        let partial = vm_dir()
            .join("kernels")
            .join(format!("{}.partial", series.dir_name()));
        if partial.exists() {
            std::fs::remove_dir_all(&partial)?;
        }
        std::fs::create_dir_all(&partial)?;
        process::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        let release = only_entry(&partial.join("lib/modules"))?;
        ensure!(
            partial
                .join("boot")
                .join(format!("vmlinuz-{release}"))
                .exists(),
            "{package} has no boot/vmlinuz-{release}"
        );
        // virtme-ng would run depmod on the first boot and write into the cache.
        process::run(
            Command::new("depmod")
                .args(["-a", "-b"])
                .arg(&partial)
                .arg(&release),
        )?;
        std::fs::write(partial.join(PACKAGE_FILE), &wanted)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::rename(&partial, &dir)?;
        std::fs::remove_file(&deb)?;
        println!(
            "{label}: {wanted} unpacked into target/vm/kernels/{}",
            series.dir_name()
        );
        Self::cached(series, &dir).context("the unpacked kernel is incomplete")
    }

    /// A complete cached kernel in `dir`, if there is one.
    fn cached(series: &'static Series, dir: &Path) -> Option<Self> {
        let package = std::fs::read_to_string(dir.join(PACKAGE_FILE)).ok()?;
        let release = only_entry(&dir.join("lib/modules")).ok()?;
        Some(Self {
            series,
            dir: dir.to_path_buf(),
            release,
            package: package.trim().to_owned(),
        })
    }

    /// Its modules (`lib/modules/<release>`).
    pub fn modules(&self) -> PathBuf {
        self.dir.join("lib/modules").join(&self.release)
    }

    /// The kernel image virtme-ng boots.
    pub fn image(&self) -> PathBuf {
        self.dir
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }
}

/// The name of the single entry of `dir`.
fn only_entry(dir: &Path) -> anyhow::Result<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "{} should hold one kernel release, holds {names:?}",
            dir.display()
        ),
    }
}
