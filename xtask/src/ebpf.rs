//! Building an eBPF crate from a build script (`nettune-agent/build.rs`,
//! `bpf-tests/build.rs`): `cargo build` of its binaries for the BPF target with
//! the pinned nightly, the objects copied into the calling script's `OUT_DIR`.
//!
//! Cargo shows a build script's output only in three ways: `cargo::warning=`
//! lines (as `warning: <package>: …`, always), everything else only with `-vv`,
//! and the script's whole stdout and stderr when it fails. So the inner build's
//! progress (`Compiling …`) goes to the script's stderr and to
//! `OUT_DIR/ebpf-build.log`, never to `cargo::warning`; on a terminal cargo's own
//! progress bar shows the script running. Only the compiler's real diagnostics
//! of the eBPF crate (and cargo's own `warning:` lines) become warnings, and a
//! failed build's error carries its errors and names the log.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Context as _, anyhow, bail};
use cargo_metadata::{Message, diagnostic::DiagnosticLevel};

use crate::toolchain::{ebpf_toolchain, workspace_root};

/// The eBPF crates (each its own workspace), linted and formatted with the pinned
/// nightly for the BPF target.
pub const EBPF_CRATES: &[&str] = &["nettune-ebpf", "bpf-tests/ebpf"];

/// The inner build's whole output, in the calling script's `OUT_DIR`.
pub const LOG_FILE: &str = "ebpf-build.log";

/// Builds the binaries of the eBPF crate at `<root>/<dir>` (package `name`) into
/// the calling build script's OUT_DIR. For use from build.rs only.
pub fn build_ebpf_crate(name: &str, dir: &str) -> anyhow::Result<()> {
    let root = workspace_root();
    let crate_dir = root.join(dir);
    let toolchain = ebpf_toolchain()?;
    for path in [
        root.join("nettune-ebpf/rust-toolchain.toml"),
        root.join("nettune-common/src"),
        crate_dir.clone(),
    ] {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let env = |key: &str| std::env::var(key).with_context(|| format!("{key} not set"));
    let target = match env("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "big" => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let arch = env("CARGO_CFG_TARGET_ARCH")?;
    let arch = if arch.starts_with("riscv64") {
        "riscv64"
    } else {
        &arch
    };

    let mut cmd = Command::new("rustup");
    cmd.args(["run", &toolchain, "cargo", "build", "--package", name])
        .args(["--bins", "--release", "--message-format=json"])
        .args(["--target", target, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(out_dir.join("ebpf-target"))
        // Each eBPF crate is its own workspace: build from inside it.
        .current_dir(&crate_dir)
        // `\x1f` separates CARGO_ENCODED_RUSTFLAGS; BTF for CO-RE and aya.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        // The build script's own compiler is not the nightly's.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let log_path = out_dir.join(LOG_FILE);
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let log = Arc::new(Mutex::new(log));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start cargo for {name} (rustup run {toolchain})"))?;

    // Progress and cargo's notes: the log and our stderr (shown with -vv or on
    // failure); cargo's own warnings stay warnings.
    let stderr = child.stderr.take().context("no stderr")?;
    let stderr_log = Arc::clone(&log);
    let progress = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            keep(&stderr_log, &line);
            eprintln!("{line}");
            if is_cargo_warning(&line) {
                println!("cargo::warning={line}");
            }
        }
    });

    let stdout = child.stdout.take().context("no stdout")?;
    let mut binaries = Vec::new();
    let mut errors = Vec::new();
    for message in Message::parse_stream(BufReader::new(stdout)) {
        match message.context("cargo's JSON messages")? {
            Message::CompilerArtifact(artifact) => {
                if let Some(exe) = artifact.executable {
                    binaries.push((artifact.target.name, exe.into_std_path_buf()));
                }
            }
            Message::CompilerMessage(msg) => {
                let text = msg.message.rendered.unwrap_or(msg.message.message);
                keep(&log, &text);
                eprintln!("{text}");
                match msg.message.level {
                    DiagnosticLevel::Error | DiagnosticLevel::Ice => errors.push(text),
                    DiagnosticLevel::Warning => {
                        for line in text.trim_end().lines() {
                            println!("cargo::warning={line}");
                        }
                    }
                    // Notes such as "for more information, try rustc --explain".
                    _ => {}
                }
            }
            Message::TextLine(line) => keep(&log, &line),
            _ => {}
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    progress
        .join()
        .map_err(|_| anyhow!("the stderr reader panicked"))?;
    if !status.success() {
        bail!(
            "building the eBPF crate {name} failed ({status}){}\nits whole output: {}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(":\n{}", errors.join("\n").trim_end())
            },
            log_path.display()
        );
    }
    for (binary, path) in &binaries {
        copy(path, &out_dir.join(binary))?;
    }
    keep(
        &log,
        &format!(
            "{name}: {} built in {:.1}s",
            binaries
                .iter()
                .map(|(b, _)| b.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// Whether a line of the inner cargo's stderr is one of its own warnings (a
/// manifest or build-script warning), not the per-crate count of compiler
/// warnings already shown.
fn is_cargo_warning(line: &str) -> bool {
    line.starts_with("warning: ") && !line.contains(" generated ")
}

fn keep(log: &Mutex<std::fs::File>, text: &str) {
    if let Ok(mut log) = log.lock() {
        // The log is for reading later; a full disk is not the build's failure.
        let _ = writeln!(log, "{text}");
    }
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cargos_own_warnings_are_forwarded_from_its_stderr() {
        assert!(!is_cargo_warning(
            "   Compiling core v0.0.0 (/rust/library/core)"
        ));
        assert!(!is_cargo_warning(
            "warning: `nettune-ebpf` (bin \"nettune\") generated 1 warning"
        ));
        assert!(is_cargo_warning("warning: unused manifest key: package.x"));
    }
}
