//! `cargo xtask vm-test`: the kernel tests inside Debian's own kernels, booted under
//! qemu's software emulation with virtme-ng, next to the host's kernel.
//!
//! 1. Tools: qemu-system-x86 (keeping the machine's qemu-utils), kmod, udev,
//!    busybox-static and python3-venv from apt; virtme-ng in a venv under
//!    `target/vm/venv`.
//! 2. Kernels: for each series, the newest Debian package, found and downloaded
//!    through a private apt configuration (`target/vm/apt`, sources taken from the
//!    system's own) that leaves the system's apt state alone, unpacked into
//!    `target/vm/kernels/<series>` with depmod run. A later run finds it there and
//!    downloads nothing (`--refresh-kernels` looks for newer packages).
//! 3. The kernel test binary and `nettune`, built once on the host: the guest sees
//!    the host's filesystem read-only and runs them from `target/`.
//! 4. One boot per kernel, running the whole selection: bpffs mounted,
//!    `nf_conntrack` loaded (as kube-proxy has it on a node), the tests run with
//!    `NETTUNE_REQUIRE_FEATURES` set to what that kernel has (a skip of one of those
//!    fails), results written to `target/vm/results/<series>` (an `--rwdir`).
//! 5. A report per kernel and per test, and `summary: N passed, N failed, N
//!    skipped`. With `--kernel all` and no filter, the host runs the same
//!    selection and `docs/kernel-support.md` is rewritten from all the results.

mod apt;
mod boot;
mod doc;
mod kernel;
mod results;
mod rootfs;
mod selection;
mod series;
mod sources;
mod tools;

use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::{arch::Arch, setup};
use apt::LazyApt;
use boot::{Binaries, boot, host_run};
use doc::{arm64_section, kernel_support_doc};
use kernel::KernelImage;
pub use results::print_report;
use results::{RunResult, totals};
use selection::Selection;
use series::{ARM64_TESTS, Series, find_series};
pub use series::{CI_SERIES, CI_TESTS};
use tools::ensure_vm_tools;

/// Most a boot running the whole selection may take before its qemu is killed.
const FULL_SUITE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Most a boot running [`CI_TESTS`] may take.
const CI_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// `cargo xtask vm-test [--arch ARCH] --kernel KERNEL [--refresh-kernels] [-- FILTER…]`.
pub fn vm_test(kernel: &str, refresh: bool, filters: &[String], arch: Arch) -> anyhow::Result<()> {
    let series: Vec<&Series> = if kernel == "all" {
        Series::of(arch).iter().collect()
    } else {
        vec![find_series(kernel, arch)?]
    };
    setup::setup(setup::Scope::Everything)?;
    ensure_vm_tools(arch)?;
    let mut apt = LazyApt::new(arch);
    // A kernel that cannot be had (e.g. Debian 11's archive unreachable) is
    // reported as not run, and the others still run.
    let kernels: Vec<(&Series, anyhow::Result<KernelImage>)> = series
        .iter()
        .map(|s| (*s, KernelImage::fetch(s, refresh, &mut apt)))
        .collect();
    let binaries = Binaries::build_for(arch)?;
    let native = Arch::host() == Some(arch);
    let selection = if native || !filters.is_empty() {
        Selection::for_vms(filters)
    } else {
        Selection::only(&ARM64_TESTS)
    };
    let mut runs = Vec::new();
    for (series, kernel) in &kernels {
        runs.push(match kernel {
            Ok(kernel) => boot(kernel, &binaries, &selection, FULL_SUITE_TIMEOUT)?,
            Err(e) => {
                println!("vm {}: not run: {e:#}", series.label());
                RunResult::not_run(&series.label(), format!("not run: {e:#}"))
            }
        });
    }
    let whole_matrix = kernel == "all" && filters.is_empty();
    if whole_matrix && native {
        runs.insert(0, host_run(&binaries, &selection)?);
    }
    print_report(&runs);
    let path = xtask::workspace_root().join("docs/kernel-support.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let doc = match (whole_matrix, native) {
        (true, true) => Some(kernel_support_doc(&runs, &old)),
        (true, false) => Some(arm64_section(&runs, &old)),
        (false, _) => None,
    };
    if let Some(doc) = doc {
        std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
        println!("vm-test: rewrote {}", path.display());
    } else {
        println!(
            "vm-test: docs/kernel-support.md left as it is (it is rewritten by \
             `cargo xtask vm-test --kernel all` without a filter, its arm64 section by \
             `cargo xtask vm-test --arch arm64 --kernel all`)"
        );
    }
    let (passed, failed, skipped) = totals(&runs);
    println!("\nsummary: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        bail!("{failed} kernel test(s) failed in the matrix");
    }
    Ok(())
}

/// What `cargo xtask test`'s VM step found.
pub enum CiVm {
    /// The VM ran the selection: its results.
    Ran(RunResult),
    /// The VM could not be set up or did not start: why.
    CannotStart(String),
}

/// Boots [`CI_SERIES`] and runs [`CI_TESTS`] in it (setting up what it needs;
/// the kernel test binary and nettune are built already, so building is a no-op).
pub fn ci_vm() -> CiVm {
    let attempt = || -> anyhow::Result<RunResult> {
        ensure_vm_tools(Arch::Amd64)?;
        let kernel = KernelImage::fetch(
            find_series(CI_SERIES, Arch::Amd64)?,
            false,
            &mut LazyApt::new(Arch::Amd64),
        )?;
        let binaries = Binaries::build()?;
        let selection = Selection::only(&CI_TESTS);
        boot(&kernel, &binaries, &selection, CI_TIMEOUT)
    };
    match attempt() {
        Ok(run) => match &run.problem {
            Some(problem) if run.tests.is_empty() => CiVm::CannotStart(problem.clone()),
            _ => CiVm::Ran(run),
        },
        Err(e) => CiVm::CannotStart(format!("{e:#}")),
    }
}
