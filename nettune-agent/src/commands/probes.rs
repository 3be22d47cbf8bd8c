//! `nettune probes`: attach every probe once, print which variant of each signal
//! attached and why the others were skipped, and the cluster around the node
//! (Service proxy, CNI, encapsulation, MTU), then detach.

use std::process::ExitCode;

use nettune::{
    probes::{LoadOptions, ProbeSource as _},
    sys::{Kernel, System as _},
};

use super::{exit_code, load_probes, print_json};

/// Runs `nettune probes`; exit code 1 when a signal has no variant.
pub fn run(json: bool, options: &LoadOptions) -> anyhow::Result<ExitCode> {
    let probes = load_probes(options)?;
    let report = probes.report();
    let links = Kernel.host_links().unwrap_or_default();
    let context = nettune::collect::context::read(&Kernel, &links);
    if json {
        let mut value = serde_json::to_value(report)?;
        if let Some(map) = value.as_object_mut() {
            map.insert("context".to_owned(), serde_json::to_value(&context)?);
        }
        print_json(&value)?;
    } else {
        print!("{report}");
        println!("\nnode: {}", context.summary());
        for line in &context.evidence {
            println!("  {line}");
        }
    }
    Ok(exit_code(report.all_attached()))
}
