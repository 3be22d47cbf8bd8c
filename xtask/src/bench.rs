//! `cargo xtask bench`: setup, build the release agent (the measured binary is
//! the one deployed) and the bench binary, run the sections as root; the bench
//! binary regenerates docs/benchmarks.md.

use xtask::process;

use crate::{
    setup,
    steps::{done, step},
    targets,
};

/// `cargo xtask bench [--quick] [--section NAME]... [--render-only]`.
pub fn bench(quick: bool, sections: &[String], render_only: bool) -> anyhow::Result<()> {
    let t = step("setup");
    setup::setup(setup::Scope::Bench)?;
    done("setup", t);
    let nettune = crate::run::build(true)?;
    let binary = targets::built_binary("bench", "bench")?;
    let t = step("benchmarks (as root)");
    let mut cmd = process::as_root(&binary, &["NETTUNE_BIN", "NETTUNE_BENCH_RUNS"])?;
    if quick {
        cmd.arg("--quick");
    }
    for s in sections {
        cmd.args(["--section", s]);
    }
    if render_only {
        cmd.arg("--render-only");
    }
    process::run(cmd.env("NETTUNE_BIN", nettune))?;
    done("benchmarks", t);
    Ok(())
}
