//! Running the tools the tests drive, failing with what they said.

use std::process::Command;

use anyhow::{Context as _, bail};

/// Runs `cmd` and returns its stdout; fails naming the command and what it
/// printed (stdout, then stderr: some tools report on stdout).
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let described = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{described}`"))?;
    if !out.status.success() {
        bail!(
            "`{described}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `program args` (from Debian package `package`) and returns its stdout.
pub fn run(program: &str, args: &[&str], package: &str) -> anyhow::Result<String> {
    output(Command::new(program).args(args))
        .with_context(|| format!("{program} (Debian package {package})"))
}
