//! The test and bench binaries of bpf-tests, built by cargo and found in its JSON
//! messages.

use std::process::Command;

use anyhow::Context as _;
use cargo_metadata::{Message, camino::Utf8PathBuf};
use xtask::process;

use crate::{arch::Arch, setup};

/// The path of a test or bench target's binary, built by `cargo <kind> --no-run`.
pub fn built_binary(kind: &str, target: &str) -> anyhow::Result<String> {
    built_binary_for(kind, target, None)
}

/// The same, built for `arch`'s static target (cross-built for another
/// architecture's VM) instead of this machine's.
pub fn built_binary_for(kind: &str, target: &str, arch: Option<Arch>) -> anyhow::Result<String> {
    let mut cargo = Command::new("cargo");
    cargo.args([
        kind,
        "--package",
        "bpf-tests",
        &format!("--{kind}"),
        target,
        "--no-run",
        "--message-format=json",
    ]);
    if let Some(arch) = arch {
        setup::ensure_static_target(arch)?;
        arch.cargo_target(&mut cargo);
    }
    let messages = process::output_if_ok(&mut cargo).with_context(|| {
        format!("building {target} failed (run `cargo {kind} -p bpf-tests --no-run`)")
    })?;
    Message::parse_stream(messages.as_bytes())
        .filter_map(Result::ok)
        .find_map(|message| match message {
            Message::CompilerArtifact(artifact) if artifact.target.name == target => {
                artifact.executable.map(Utf8PathBuf::into_string)
            }
            _ => None,
        })
        .with_context(|| format!("cargo did not report the {target} binary"))
}
