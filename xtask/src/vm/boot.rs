//! One run of the kernel tests: in a VM booted with virtme-ng, or on the host's
//! own kernel for the matrix's host row.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use xtask::process;

use super::{
    kernel::KernelImage,
    results::RunResult,
    rootfs,
    selection::Selection,
    tools::{VIRTME_NG, vm_dir},
};
use crate::{arch::Arch, features, setup, targets};

/// The binaries every kernel runs, built once on the host.
pub struct Binaries {
    kernel_tests: PathBuf,
    nettune: PathBuf,
    /// The root of another architecture's guest; `None`: the host's own.
    root: Option<PathBuf>,
}

impl Binaries {
    /// Builds (or finds up to date) the kernel test binary and `nettune` for
    /// this machine's kernels (the guests share the host's filesystem).
    pub fn build() -> anyhow::Result<Self> {
        Ok(Self {
            nettune: crate::run::build(false)?,
            kernel_tests: PathBuf::from(targets::built_binary("test", "kernel")?),
            root: None,
        })
    }

    /// For `arch`'s kernels: this machine's binaries, or, for another
    /// architecture, both cross-built (statically; nettune as the image ships
    /// it) with that architecture's root filesystem.
    pub fn build_for(arch: Arch) -> anyhow::Result<Self> {
        if Arch::host() == Some(arch) {
            return Self::build();
        }
        let root = rootfs::ensure(arch, &super::tools::os_codename()?)?;
        Ok(Self {
            nettune: crate::run::build_with(true, Some(arch))?,
            kernel_tests: PathBuf::from(targets::built_binary_for("test", "kernel", Some(arch))?),
            root: Some(root),
        })
    }

    /// The environment of a kernel test run writing its results to `results`.
    fn env(&self, features: &str, results: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
        Ok(vec![
            ("NETTUNE_REQUIRE_FEATURES", features.to_owned()),
            ("NETTUNE_BIN", self.nettune.display().to_string()),
            ("XTASK_BIN", std::env::current_exe()?.display().to_string()),
            (
                "KUBERNETES_VALIDATE",
                setup::kubernetes_validate().display().to_string(),
            ),
            ("NETTUNE_RESULTS_DIR", results.display().to_string()),
        ])
    }
}

/// An empty results directory for `label`.
fn fresh_results_dir(label: &str) -> anyhow::Result<PathBuf> {
    let dir = vm_dir().join("results").join(label);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Quotes `word` for the guest's /bin/sh.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Boots `kernel` once and runs `selection` in it.
pub fn boot(
    kernel: &KernelImage,
    binaries: &Binaries,
    selection: &Selection,
    timeout: Duration,
) -> anyhow::Result<RunResult> {
    let series = kernel.series;
    let label = series.label();
    let results = fresh_results_dir(&series.dir_name())?;
    let workspace = xtask::workspace_root();
    let guest_results = match &binaries.root {
        Some(_) => PathBuf::from(rootfs::GUEST_RESULTS),
        None => results.clone(),
    };
    let env = binaries.env(series.features, &guest_results)?;
    let mut script = format!(
        "mount -t bpf bpf /sys/fs/bpf && modprobe nf_conntrack && cd {} && exec env",
        sh_quote(&workspace.display().to_string())
    );
    for (key, value) in &env {
        write!(script, " {key}={}", sh_quote(value))?;
    }
    write!(
        script,
        " {}",
        sh_quote(&binaries.kernel_tests.display().to_string())
    )?;
    for arg in selection.args() {
        write!(script, " {}", sh_quote(&arg))?;
    }
    let venv_bin = VIRTME_NG.venv_dir().join("bin");
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut vng = Command::new(venv_bin.join("vng"));
    vng.arg("--run").arg(kernel.image()).args([
        "--disable-kvm",
        "--force-9p",
        "--memory",
        "2G",
        "--cpus",
        "2",
    ]);
    match &binaries.root {
        // The host's filesystem is the guest's root.
        None => {
            vng.arg("--rwdir")
                .arg(&results)
                .arg("--cwd")
                .arg(&workspace);
        }
        // Another architecture's root, with the workspace (the binaries and
        // the files the tests read), the kernel's modules and the results
        // directory mounted into it.
        Some(root) => {
            let modules = Path::new("/lib/modules").join(&kernel.release);
            for guest in [&workspace, &modules, &guest_results] {
                rootfs::mount_point(root, guest)?;
            }
            let mapping =
                |guest: &Path, host: &Path| format!("{}={}", guest.display(), host.display());
            vng.args(["--arch", series.arch.name(), "--root"])
                .arg(root)
                .arg(format!("--rodir={}", mapping(&workspace, &workspace)))
                .arg(format!("--rodir={}", mapping(&modules, &kernel.modules())))
                .arg(format!("--rwdir={}", mapping(&guest_results, &results)))
                .arg("--cwd")
                .arg(root);
        }
    }
    vng.arg("--exec").arg(&script).env("PATH", path);
    println!(
        "\n==> vm {label}: booting {} ({}) under qemu (software emulation): {}",
        kernel.release,
        kernel.package,
        selection.describe()
    );
    let started = Instant::now();
    let streamed = process::stream_with_deadline(&mut vng, &format!("[{label}] "), timeout)?;
    let mut run = RunResult::read(&label, &results)?;
    run.package = Some(kernel.package.clone());
    run.seconds = started.elapsed().as_secs_f64();
    let ended = match streamed.status {
        None => Some(format!("timed out after {} min", timeout.as_secs() / 60)),
        Some(status) if !run.complete => Some(format!("vng exited with {status}")),
        Some(_) => None,
    };
    if let Some(ended) = ended {
        let stage = if run.release.is_none() {
            "the VM did not start the kernel tests"
        } else {
            "the kernel tests stopped before their end"
        };
        run.problem = Some(format!(
            "{stage}: {ended}; its last lines:\n    {}",
            streamed.tail.join("\n    ")
        ));
    }
    println!(
        "==> vm {label}: done in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(run)
}

/// Runs `selection` on the host's kernel, as root, for the matrix's host row.
pub fn host_run(binaries: &Binaries, selection: &Selection) -> anyhow::Result<RunResult> {
    let results = fresh_results_dir("host")?;
    let features = features::required_features().unwrap_or_default();
    let env = binaries.env(&features, &results)?;
    let names: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
    let program = binaries.kernel_tests.display().to_string();
    let mut cmd = process::as_root(&program, &names)?;
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .args(selection.args());
    println!("\n==> host: the same selection on this machine's kernel, as root");
    let started = Instant::now();
    let (_, _) = process::tee(&mut cmd)?;
    let mut run = RunResult::read("host", &results)?;
    run.seconds = started.elapsed().as_secs_f64();
    if !run.complete {
        run.problem = Some("the kernel tests stopped before their end".to_owned());
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_words_are_quoted_for_sh() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
