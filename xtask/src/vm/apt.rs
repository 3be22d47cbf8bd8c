//! A private apt configuration (`target/vm/apt`) that finds and downloads kernel
//! packages without touching the system's apt state.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use xtask::process::{self, output_if_ok};

use super::{sources::Archives, tools::vm_dir};
use crate::arch::Arch;

/// An apt configuration of our own under `target/vm/apt` (`apt-arm64` for
/// arm64's packages): its own sources, lists, caches and an empty dpkg status,
/// so nothing of the system's apt state changes.
pub struct PrivateApt {
    config: PathBuf,
}

/// The suites the matrix's kernels come from.
const SUITES: [(&str, bool); 4] = [
    ("bookworm", false),
    ("bookworm-security", true),
    ("bullseye", false),
    ("bullseye-security", true),
];

impl PrivateApt {
    /// Writes the configuration for `arch`'s packages (sources from the
    /// system's archives).
    fn new(arch: Arch) -> anyhow::Result<Self> {
        let dir = vm_dir().join(match arch {
            Arch::Amd64 => "apt".to_owned(),
            other => format!("apt-{}", other.name()),
        });
        for sub in ["lists/partial", "archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let archives = Archives::from_system()?;
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let mut sources = String::new();
        for (suite, security) in SUITES {
            let uri = if security {
                &archives.security
            } else {
                &archives.main
            };
            writeln!(sources, "deb [signed-by={keyring}] {uri} {suite} main")?;
        }
        let sources_path = dir.join("sources.list");
        std::fs::write(&sources_path, sources)?;
        let user = output_if_ok(Command::new("id").arg("-un")).unwrap_or_else(|| "root".to_owned());
        let d = dir.display();
        let config = format!(
            "Dir::Etc::sourcelist \"{}\";\n\
             Dir::Etc::sourceparts \"-\";\n\
             Dir::State::lists \"{d}/lists\";\n\
             Dir::State::status \"/dev/null\";\n\
             Dir::Cache::archives \"{d}/archives\";\n\
             Dir::Cache::pkgcache \"{d}/pkgcache.bin\";\n\
             Dir::Cache::srcpkgcache \"{d}/srcpkgcache.bin\";\n\
             APT::Sandbox::User \"{user}\";\n\
             APT::Architecture \"{arch}\";\n\
             APT::Architectures {{ \"{arch}\"; }};\n\
             Acquire::Languages \"none\";\n\
             Acquire::IndexTargets::deb::DEP-11::DefaultEnabled \"false\";\n\
             Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled \"false\";\n\
             Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled \"false\";\n",
            sources_path.display(),
            arch = arch.name()
        );
        let config_path = dir.join("apt.conf");
        std::fs::write(&config_path, config)?;
        Ok(Self {
            config: config_path,
        })
    }

    /// An apt command that uses only this configuration.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", &self.config)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Fetches the package lists of every suite into our own lists directory.
    fn update(&self) -> anyhow::Result<()> {
        process::output(self.command("apt-get").args(["update", "-q"]))
            .with_context(|| {
                format!(
                    "updating the private apt lists ({}) failed: is the Debian archive reachable?",
                    self.config.display()
                )
            })
            .map(drop)
    }

    /// The newest package named `<before><number><after>`, with its version.
    pub fn newest(&self, (before, after): (&str, &str)) -> anyhow::Result<(String, String)> {
        let names =
            output_if_ok(self.command("apt-cache").args(["pkgnames", before])).unwrap_or_default();
        let newest = names
            .lines()
            .filter_map(|name| {
                let number = name.strip_prefix(before)?.strip_suffix(after)?;
                Some((number.parse::<u64>().ok()?, name.to_owned()))
            })
            .max()
            .map(|(_, name)| name)
            .with_context(|| format!("no package {before}N{after} in the private apt lists"))?;
        let shown =
            output_if_ok(
                self.command("apt-cache")
                    .args(["show", "--no-all-versions", &newest]),
            )
            .with_context(|| format!("apt-cache show {newest} failed"))?;
        let version = shown
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .with_context(|| format!("apt-cache show {newest}: no Version"))?
            .to_owned();
        Ok((newest, version))
    }

    /// Downloads `package` into `dir` (apt checks it against the signed lists);
    /// returns the .deb's path.
    pub fn download(&self, package: &str, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        process::output(
            self.command("apt-get")
                .args(["download", "-q", package])
                .current_dir(dir),
        )?;
        let prefix = format!("{package}_");
        std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .with_context(|| {
                format!(
                    "apt-get download left no {prefix}*.deb in {}",
                    dir.display()
                )
            })
    }
}

/// The private apt configuration of an architecture's packages, written and
/// updated on first use only: a run whose kernels are all cached never contacts
/// the archive.
pub struct LazyApt(Arch, Option<PrivateApt>);

impl LazyApt {
    pub fn new(arch: Arch) -> Self {
        Self(arch, None)
    }

    pub fn get(&mut self) -> anyhow::Result<&PrivateApt> {
        if self.1.is_none() {
            let apt = PrivateApt::new(self.0)?;
            println!(
                "setup: kernel packages: updating the private apt lists ({})",
                apt.config
                    .parent()
                    .map_or_else(String::new, |d| d.display().to_string())
            );
            apt.update()?;
            self.1 = Some(apt);
        }
        self.1.as_ref().context("private apt configuration")
    }
}
