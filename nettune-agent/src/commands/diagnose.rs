//! `nettune diagnose`: the guide's checks on procfs alone.

use std::{process::ExitCode, time::Duration};

use nettune::{diagnose, sys::Kernel};

use super::{exit_code, print_json};

/// Measures for `seconds`, prints the findings; exit code 1 if anything was found.
pub fn run(json: bool, seconds: f64) -> anyhow::Result<ExitCode> {
    let readings = diagnose::Readings::gather(&Kernel, Duration::from_secs_f64(seconds));
    let findings = diagnose::findings(&readings);
    if json {
        print_json(&serde_json::json!({ "findings": findings, "readings": readings }))?;
    } else {
        if findings.is_empty() {
            println!("No problems found ({seconds:.0} s of measurements).\n");
        }
        for f in &findings {
            println!(
                "[{:?}] {}\n  evidence: {}\n  fix: {}\n",
                f.severity, f.problem, f.evidence, f.fix
            );
        }
        print_listeners(&readings.listeners);
    }
    Ok(exit_code(findings.is_empty()))
}

/// The listeners table and what its columns mean for somaxconn.
fn print_listeners(listeners: &[diagnose::ListenerReading]) {
    if listeners.is_empty() {
        return;
    }
    println!("Listening sockets (queue / limit; the limit is what listen() got):");
    for l in listeners {
        let somaxconn = l.somaxconn.map_or_else(|| "?".into(), |s| s.to_string());
        let note = match l.somaxconn {
            Some(s) if l.limit < s => {
                "its own backlog is the cap (a higher somaxconn would not help)"
            }
            Some(_) => "capped by somaxconn",
            None => "",
        };
        println!(
            "  {:<14} {:<22} {:>6} / {:<6} somaxconn {somaxconn:<6} {note}",
            l.namespace, l.address, l.queue, l.limit
        );
    }
    println!("\n{}", textwrap(diagnose::LISTEN_FACTS, 88));
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
