//! `cargo xtask bench`: what nettune costs, each figure next to a reference
//! measured in the same run (issue 15), written to
//! `target/nettune-bench/<section>.json` and rendered into `docs/benchmarks.md`.
//!
//! Sections, one module each: `kernel_cost` (ns per event and per packet against
//! bpftrace and an empty classifier), `datapath` (pod-to-pod rates with and
//! without the agent), `footprint` (CPU and memory idle and under load), `scale`
//! (100 and 500 pod namespaces, against node_exporter), `storm` (a drop storm and
//! a SYN flood: CPU, lost events, exact totals), `reaction` (urgent event →
//! written sysctl).
//!
//! Usage (root): `bench [--quick] [--section NAME]... [--render-only]`. `--quick`
//! takes fewer repetitions and shorter windows (under 3 minutes in all);
//! `--render-only` rewrites the document from the JSON files already there.

mod datapath;
mod footprint;
mod kernel_cost;
mod mode;
mod reaction;
mod scale;
mod storm;

use std::time::Instant;

use anyhow::bail;
use bpf_tests::bench::report::{self, SECTIONS, Section};
use mode::Mode;

fn run_section(name: &str, mode: Mode) -> anyhow::Result<Section> {
    match name {
        "kernel_cost" => kernel_cost::run(mode),
        "datapath" => datapath::run(mode),
        "footprint" => footprint::run(mode),
        "scale" => scale::run(mode),
        "storm" => storm::run(mode),
        "reaction" => reaction::run(mode),
        other => bail!("no section {other:?}; sections: {}", SECTIONS.join(", ")),
    }
}

fn main() -> anyhow::Result<()> {
    let mut mode = Mode { quick: false };
    let mut only = Vec::new();
    let mut render_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => mode.quick = true,
            "--section" => only.push(args.next().unwrap_or_default()),
            "--render-only" => render_only = true,
            // `cargo bench` passes --bench to harness-less benches.
            "--bench" => {}
            other => bail!("unknown argument {other:?}"),
        }
    }
    for name in &only {
        if !SECTIONS.contains(&name.as_str()) {
            bail!("no section {name:?}; sections: {}", SECTIONS.join(", "));
        }
    }
    let mut failed = Vec::new();
    if !render_only {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the benchmarks need root (they load programs and create namespaces)");
        }
        let started = Instant::now();
        for name in SECTIONS
            .iter()
            .filter(|s| only.is_empty() || only.iter().any(|o| o == *s))
        {
            println!("\n==> section {name}");
            let t = Instant::now();
            match run_section(name, mode) {
                Ok(section) => {
                    for r in &section.rows {
                        println!(
                            "  {:<60} {:>14}{}",
                            r.figure,
                            report::value(r.value.median, &r.unit),
                            match (r.ratio(), r.met()) {
                                (Some(x), Some(m)) =>
                                    format!("  ratio {x:.2}  {}", if m { "met" } else { "MISSED" }),
                                (Some(x), None) => format!("  ratio {x:.2}"),
                                (None, Some(m)) => (if m { "  met" } else { "  MISSED" }).into(),
                                (None, None) => String::new(),
                            }
                        );
                    }
                    for f in &section.facts {
                        println!("  - {f}");
                    }
                    let path = section.write()?;
                    println!(
                        "==> section {name}: {:.0} s, {}",
                        t.elapsed().as_secs_f64(),
                        path.display()
                    );
                }
                Err(e) => {
                    eprintln!(
                        "==> section {name} FAILED after {:.0} s: {e:#}",
                        t.elapsed().as_secs_f64()
                    );
                    failed.push(*name);
                }
            }
        }
        println!(
            "\nbenchmarks: {:.0} s in all",
            started.elapsed().as_secs_f64()
        );
    }
    let sections: Vec<Section> = SECTIONS
        .iter()
        .filter_map(|name| Section::read(name).transpose())
        .collect::<anyhow::Result<_>>()?;
    let notes = std::fs::read_to_string(report::docs_dir().join("benchmarks-notes.md")).ok();
    let doc = report::docs_dir().join("benchmarks.md");
    std::fs::write(&doc, report::render(&sections, notes.as_deref()))?;
    println!("wrote {} ({} sections)", doc.display(), sections.len());
    if !failed.is_empty() {
        bail!("sections failed: {}", failed.join(", "));
    }
    Ok(())
}
