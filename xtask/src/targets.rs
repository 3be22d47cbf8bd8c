//! The test and bench binaries of bpf-tests, built by cargo and found in its JSON
//! messages.

use std::process::Command;

use anyhow::Context as _;
use cargo_metadata::{Message, camino::Utf8PathBuf};
use xtask::process;

/// The path of a test or bench target's binary, built by `cargo <kind> --no-run`.
pub fn built_binary(kind: &str, target: &str) -> anyhow::Result<String> {
    let messages = process::output_if_ok(Command::new("cargo").args([
        kind,
        "--package",
        "bpf-tests",
        &format!("--{kind}"),
        target,
        "--no-run",
        "--message-format=json",
    ]))
    .with_context(|| {
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
