//! `cargo xtask test`: the whole suite, in order of cost.
//!
//! 1. setup (toolchains, bpf-linker, test tools);
//! 2. `cargo fmt --check` and `cargo clippy -D warnings` on every crate, the eBPF
//!    crates with their own nightly and target;
//! 3. unit tests (`cargo test`, every crate but bpf-tests);
//! 4. kernel tests (`bpf-tests`, own harness) as root, via sudo when needed;
//! 5. a subset of the kernel tests in Debian's 6.1 kernel under qemu (`vm`): the
//!    paths this host's kernel cannot take. When the VM cannot start, that fails on
//!    CI and is a skip, with the reason, elsewhere.
//!
//! Ends with `summary: N passed, N failed, N skipped` over unit, kernel and VM tests.
//!
//! On CI (`CI` set) kernel-test skips for features this machine kind has become
//! failures: `NETTUNE_REQUIRE_FEATURES` defaults to what it has (see `features`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use xtask::process::{self, is_root};

use crate::{
    features,
    format::format,
    image, setup,
    steps::{done, step},
    targets, vm,
};

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    skipped: u64,
}

impl Tally {
    /// Adds libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...` lines
    /// and our harness's `kernel: 3 passed, 0 failed, 1 skipped` line.
    fn add_output(&mut self, text: &str) {
        for line in text.lines() {
            let body = if let Some(rest) = line.strip_prefix("test result: ") {
                rest.split_once(". ").map_or(rest, |(_, counts)| counts)
            } else if let Some(rest) = line.strip_prefix("kernel: ") {
                rest
            } else {
                continue;
            };
            for part in body.split([';', ',']) {
                let mut words = part.split_whitespace();
                let (Some(n), Some(what)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" | "skipped" => self.skipped += n,
                    _ => {}
                }
            }
        }
    }
}

/// `cargo xtask test`; with `vm_only`, setup and the VM step alone.
pub fn test(kernel_filter: Option<&str>, vm_only: bool) -> anyhow::Result<()> {
    let root = xtask::workspace_root();
    let t = step("setup");
    setup::setup(setup::Scope::Everything)?;
    done("setup", t);
    if vm_only {
        let mut tally = Tally::default();
        let vm_ok = vm_step(&mut tally);
        return summary(&tally, vm_ok);
    }

    let t = step("format (cargo fmt --check)");
    format(true).context("formatting differs: run `cargo xtask fmt`")?;
    done("format", t);

    let t = step("lints (cargo clippy -D warnings)");
    process::run(Command::new("cargo").args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let nightly = xtask::ebpf_toolchain()?;
    for dir in xtask::EBPF_CRATES {
        clippy_ebpf(&root.join(dir), &nightly)?;
    }
    done("lints", t);

    let mut tally = Tally::default();
    let t = step("unit tests");
    let (unit_ok, out) = process::tee(Command::new("cargo").args([
        "test",
        "--workspace",
        "--exclude",
        "bpf-tests",
    ]))?;
    tally.add_output(&out);
    done("unit tests", t);

    let t = step("static release build (the container image's binary)");
    let binary = static_build()?;
    done("static release build", t);

    let t = step("container images (cargo xtask image, and the tests' pause image)");
    let images = test_images(&binary)?;
    done("container images", t);

    let t = step("kernel tests (bpf-tests, as root)");
    let (kernel_ok, out) = kernel_tests(kernel_filter, images.as_ref())?;
    tally.add_output(&out);
    done("kernel tests", t);

    let vm_ok = vm_step(&mut tally);
    summary(&tally, unit_ok && kernel_ok && vm_ok)
}

/// Prints the summary line; fails unless `ok` and nothing failed.
fn summary(tally: &Tally, ok: bool) -> anyhow::Result<()> {
    println!(
        "\nsummary: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    if !ok || tally.failed > 0 {
        bail!("tests failed");
    }
    Ok(())
}

/// The VM step: boots the VM kernel and runs the kernel tests the host cannot
/// (see [`vm::CI_TESTS`]); adds their results to `tally`; prints its duration. A
/// VM that cannot start fails on CI (`CI` set) and is one skip, with the reason,
/// elsewhere.
fn vm_step(tally: &mut Tally) -> bool {
    let t = step(&format!(
        "kernel tests in a VM: Debian's Linux {} (no TCX: clsact; kprobes; netem), \
         under qemu",
        vm::CI_SERIES
    ));
    let ok = vm_run(tally);
    done("kernel tests in a VM", t);
    ok
}

fn vm_run(tally: &mut Tally) -> bool {
    println!(
        "vm {}: {} (the whole matrix: cargo xtask vm-test)",
        vm::CI_SERIES,
        vm::CI_TESTS.join(", ")
    );
    match vm::ci_vm() {
        vm::CiVm::Ran(run) => {
            vm::print_report(std::slice::from_ref(&run));
            let (passed, failed, skipped) = run.counts();
            tally.passed += passed;
            tally.failed += failed;
            tally.skipped += skipped;
            failed == 0
        }
        vm::CiVm::CannotStart(why) if std::env::var_os("CI").is_some() => {
            println!(
                "vm {}: FAILED: the VM cannot start on CI: {why}",
                vm::CI_SERIES
            );
            tally.failed += 1;
            false
        }
        vm::CiVm::CannotStart(why) => {
            println!(
                "vm {}: SKIPPED: the VM cannot start here: {why}",
                vm::CI_SERIES
            );
            tally.skipped += 1;
            true
        }
    }
}

fn clippy_ebpf(dir: &Path, nightly: &str) -> anyhow::Result<()> {
    process::run(
        Command::new("rustup")
            .args(["run", nightly, "cargo", "clippy", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"])
            .current_dir(dir),
    )
    .with_context(|| format!("clippy on {}", dir.display()))
}

/// Builds the static binary the Dockerfile ships and checks it is static and runs.
fn static_build() -> anyhow::Result<PathBuf> {
    let binary = crate::run::build_with(true, Some(crate::arch::Arch::this_machine()?))?;
    let ldd = Command::new("ldd")
        .arg(&binary)
        .output()
        .context("running ldd")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    if !(said.contains("statically linked") || said.contains("not a dynamic executable")) {
        bail!(
            "{} is not static: ldd says {}",
            binary.display(),
            said.trim()
        );
    }
    let version = process::output_if_ok(Command::new(&binary).arg("--version"))
        .with_context(|| format!("{} --version failed", binary.display()))?;
    println!(
        "static build: {} ({version}, statically linked)",
        binary.display()
    );
    Ok(binary)
}

/// The archives the container tests load: nettune's image and a pause image.
struct Images {
    nettune: PathBuf,
    pause: PathBuf,
}

/// The pause program of the tests' pod sandboxes (no image can be pulled here).
const PAUSE_SOURCE: &str = "bpf-tests/images/pause.c";

/// Builds nettune's image as `cargo xtask image` does, and the pause image of
/// the tests' pod sandboxes; `None` (the container tests then skip, saying
/// why) when not root: buildah's private storage needs it.
fn test_images(nettune: &Path) -> anyhow::Result<Option<Images>> {
    if !is_root() {
        println!("images: skipped: buildah needs root; the container tests will skip");
        return Ok(None);
    }
    let dir = image::image_dir();
    std::fs::create_dir_all(&dir)?;
    let archive = dir.join("nettune-test.oci.tar");
    image::build_scratch(&image::ScratchImage {
        binary: nettune,
        entrypoint: image::ENTRYPOINT,
        cmd: &[image::CMD],
        tag: &image::default_tag(),
        archive: &archive,
    })?;
    let pause = dir.join("pause");
    process::run(
        Command::new("cc")
            .args(["-static", "-Os", "-s", "-o"])
            .arg(&pause)
            .arg(xtask::workspace_root().join(PAUSE_SOURCE)),
    )
    .context("compiling the pause program (gcc and libc6-dev)")?;
    let pause_archive = dir.join("nettune-pause.oci.tar");
    image::build_scratch(&image::ScratchImage {
        binary: &pause,
        entrypoint: "/pause",
        cmd: &[],
        tag: "localhost/nettune-pause:test",
        archive: &pause_archive,
    })?;
    println!(
        "images: {} and {}",
        archive.display(),
        pause_archive.display()
    );
    Ok(Some(Images {
        nettune: archive,
        pause: pause_archive,
    }))
}

/// Builds the kernel test binary, then runs it as root.
fn kernel_tests(filter: Option<&str>, images: Option<&Images>) -> anyhow::Result<(bool, String)> {
    // The end-to-end tests run the real binaries.
    let nettune = crate::run::build(false)?;
    let binary = targets::built_binary("test", "kernel")?;
    let required = features::required_features();
    if let Some(list) = &required {
        println!("kernel tests: skips for [{list}] count as failures (NETTUNE_REQUIRE_FEATURES)");
    }
    let env = [
        "NETTUNE_REQUIRE_FEATURES",
        "NETTUNE_BIN",
        "XTASK_BIN",
        "KUBERNETES_VALIDATE",
        "RUST_LOG",
        "NETTUNE_IMAGE",
        "NETTUNE_PAUSE_IMAGE",
    ];
    let mut cmd = process::as_root(&binary, &env).unwrap_or_else(|_| {
        println!("kernel tests: not root and no sudo: every kernel test will report a skip");
        Command::new(&binary)
    });
    if let Some(list) = required {
        cmd.env("NETTUNE_REQUIRE_FEATURES", list);
    }
    cmd.env("NETTUNE_BIN", nettune);
    cmd.env("XTASK_BIN", std::env::current_exe()?);
    cmd.env("KUBERNETES_VALIDATE", setup::kubernetes_validate());
    if let Some(images) = images {
        cmd.env("NETTUNE_IMAGE", &images.nettune);
        cmd.env("NETTUNE_PAUSE_IMAGE", &images.pause);
    }

    if let Some(f) = filter {
        cmd.arg(f);
    }
    process::tee(&mut cmd)
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn tally_adds_libtest_and_kernel_lines() {
        let mut t = Tally::default();
        t.add_output(
            "test result: ok. 12 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out\n\
             test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured\n\
             kernel: 4 passed, 0 failed, 1 skipped\n\
             test foo ... ok\n",
        );
        assert_eq!((t.passed, t.failed, t.skipped), (19, 1, 3));
    }
}
