//! `nettune diagnose`: the guide's checks on procfs alone, or with the probes.

use std::{process::ExitCode, time::Duration};

use nettune::{
    collect::Collector, config::Config, diagnose, model::snapshot::Snapshot, probes::LoadOptions,
    sys::Kernel,
};

use super::{exit_code, load_probes, print_json};

/// Measures for `seconds` (with the probes when `probes` is given), prints the
/// findings; exit code 1 if anything was found.
pub fn run(
    config: &Config,
    json: bool,
    seconds: f64,
    probes: Option<&LoadOptions>,
) -> anyhow::Result<ExitCode> {
    let interval = Duration::from_secs_f64(seconds);
    let snapshot = match probes {
        Some(options) => {
            let mut collector = Collector::new(load_probes(options)?, Kernel, config);
            diagnose::gather_with_probes(&mut collector, interval)?
        }
        None => diagnose::gather(&Kernel, interval),
    };
    let findings = diagnose::findings(&snapshot, &config.tuning);
    if json {
        print_json(&serde_json::json!({ "findings": findings, "snapshot": snapshot }))?;
    } else {
        if let Some(c) = &snapshot.context {
            println!("Node: {}\n", c.summary());
        }
        if findings.is_empty() {
            println!("No problems found ({seconds:.0} s of measurements).\n");
        }
        for f in &findings {
            println!(
                "[{:?}] {}\n  evidence: {}\n  fix: {}\n",
                f.severity, f.problem, f.evidence, f.fix
            );
        }
        print_listeners(&snapshot);
    }
    Ok(exit_code(findings.is_empty()))
}

/// The listeners table and what its columns mean for somaxconn.
fn print_listeners(snapshot: &Snapshot) {
    if snapshot.listeners.is_empty() {
        return;
    }
    println!("Listening sockets (queue / limit; the limit is what listen() got):");
    let mut listeners: Vec<_> = snapshot.listeners.iter().collect();
    listeners.sort_by_key(|l| (l.netns, l.port));
    for l in listeners {
        let owner = snapshot.workload(l.netns);
        let who = owner.map_or_else(
            || format!("netns {}", l.netns),
            |w| w.workload.display_name(),
        );
        let somaxconn = owner
            .and_then(|w| w.netns_sysctls)
            .and_then(|s| s.somaxconn);
        let address = std::net::SocketAddr::new(l.address, l.port);
        let somaxconn_text = somaxconn.map_or_else(|| "?".into(), |s| s.to_string());
        let note = match somaxconn {
            Some(s) if l.limit < s => {
                "its own backlog is the cap (a higher somaxconn would not help)"
            }
            Some(_) => "capped by somaxconn",
            None => "",
        };
        println!(
            "  {who:<14} {address:<22} {:>6} / {:<6} somaxconn {somaxconn_text:<6} {note}",
            l.queue, l.limit
        );
    }
    println!("\n{}", textwrap(nettune::tune::rules::LISTEN_FACTS, 88));
}

/// `text` wrapped at `width` columns.
fn textwrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}
