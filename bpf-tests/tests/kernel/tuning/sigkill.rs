//! The real daemon SIGKILLed at every step of a real change — before its
//! intent is journaled, after it, after the sysctl is written, after the write
//! is recorded — by bpftrace (`signal("SIGKILL")` on the daemon's own system
//! call that begins the next step): after each, the daemon starts again over
//! the journal it left (the tuner is not demoted), and `nettune rollback`
//! restores the original exactly.

use std::{
    net::SocketAddrV4,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    agent_process::metric,
    bpftrace::Bpftrace,
    harness::{Outcome, TestResult, require_root},
    scenarios::{Pair, somaxconn},
    sockets::{connect_nonblocking, listener_with_backlog},
};

use super::config::{TestConfig, capped_at_8};

/// The file the daemon opens to write somaxconn (in the pod's namespace).
const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";

/// One step of a change, and the bpftrace probes that SIGKILL the daemon
/// (`PID`) there; `TMP` is the journal's temporary file.
struct Step {
    name: &'static str,
    probes: &'static str,
    /// Whether the new value was written when the daemon died.
    written: bool,
}

/// An `openat` of the somaxconn file for writing (`O_WRONLY` is 1).
const WRITE_OPEN: &str = "tracepoint:syscalls:sys_enter_openat /pid == PID && str(args->filename) == \"SYSCTL\" && (args->flags & 1)/";
/// An `openat` of the journal's temporary file.
const TMP_OPEN: &str =
    "tracepoint:syscalls:sys_enter_openat /pid == PID && str(args->filename) == \"TMP\"";
const KILL: &str = "{ printf(\"killed\\n\"); signal(\"SIGKILL\"); exit(); }";

const STEPS: [Step; 4] = [
    // The intent's temporary file opened: nothing is durable yet.
    Step {
        name: "before the intent",
        probes: "TMP_OPEN/ KILL",
        written: false,
    },
    // The intent is journaled; the write is about to begin.
    Step {
        name: "after the intent",
        probes: "WRITE_OPEN KILL",
        written: false,
    },
    // Written (and read back); the record's temporary file opened.
    Step {
        name: "after the write",
        probes: "WRITE_OPEN { @written = 1; }\nTMP_OPEN && @written == 1/ KILL",
        written: true,
    },
    // The record renamed into place.
    Step {
        name: "after the record",
        probes: "WRITE_OPEN { @written = 1; }\n\
                 tracepoint:syscalls:sys_exit_rename,tracepoint:syscalls:sys_exit_renameat,\
                 tracepoint:syscalls:sys_exit_renameat2 /pid == PID && @written == 1/ KILL",
        written: true,
    },
];

/// Whether process `pid` is gone (exited, or a zombie not yet reaped).
fn dead(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Overflows `pair`'s listener (it asked for 4096, somaxconn is 8) until
/// process `pid` dies (at most 20 s).
fn storm_until_dead(pair: &Pair, port: u16, pid: u32) -> anyhow::Result<()> {
    let addr = SocketAddrV4::new(pair.veth.b_addr, port);
    let _listener = pair.receiver.run(|| listener_with_backlog(addr, 4096))??;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dead(pid) {
        ensure!(
            Instant::now() < deadline,
            "the daemon was not killed within 20 s"
        );
        let clients = pair.sender.run(|| {
            (0..50)
                .map(|_| connect_nonblocking(addr))
                .collect::<anyhow::Result<Vec<_>>>()
        })??;
        std::thread::sleep(Duration::from_millis(200));
        drop(clients);
    }
    Ok(())
}

pub fn sigkill_at_every_step_of_a_change_leaves_what_rollback_restores() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let pair = Pair::new(26, None)?;
    let host_before = somaxconn(None)?;
    for (i, step) in STEPS.iter().enumerate() {
        let original = capped_at_8(&pair)?;
        let config = TestConfig::new(&format!("k{i}"), &[&pair.receiver])?;
        let agent = config.start_agent()?;
        let pid = agent.pid();
        let tmp = config.state.join(format!("journal.json.tmp.{pid}"));
        let script = step
            .probes
            .replace("WRITE_OPEN", WRITE_OPEN)
            .replace("TMP_OPEN", TMP_OPEN)
            .replace("KILL", KILL)
            .replace("SYSCTL", SOMAXCONN)
            .replace("TMP", tmp.to_str().context("path")?)
            .replace("PID", &pid.to_string());
        let killer = Bpftrace::start_unsafe(&script)?;
        storm_until_dead(&pair, 5805 + u16::try_from(i)?, pid)?;
        let status = agent.stop(0, Duration::from_secs(5))?;
        drop(killer);
        ensure!(
            std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL),
            "{}: the daemon ended with {status}, not by SIGKILL",
            step.name
        );
        let found = somaxconn(Some(&pair.receiver))?;
        println!(
            "    {}: daemon {status}; somaxconn {found}; journal: {}",
            step.name,
            entry_in_brief(&config.state)
        );
        ensure!(
            (found != original) == step.written,
            "{}: somaxconn {found}, written expected {}",
            step.name,
            step.written
        );
        // Restarted over what it left, the daemon keeps its tuner.
        let again = config.start_agent()?;
        let metrics = again.metrics()?;
        ensure!(
            metric(
                &metrics,
                "nettune_tuning_demoted",
                &[("reason", "journal_unusable")]
            )
            .unwrap_or(0.0)
                == 0.0,
            "{}: the restarted daemon cannot use the journal",
            step.name
        );
        drop(again);
        let (code, out) = config.nettune(&["rollback"])?;
        ensure!(
            code == Some(0),
            "{}: rollback exit {code:?}: {out}",
            step.name
        );
        let restored = somaxconn(Some(&pair.receiver))?;
        ensure!(
            restored == original,
            "{}: rollback left {restored}, the original was {original}: {out}",
            step.name
        );
        ensure!(
            entry_in_brief(&config.state) == "no entry",
            "{}: an entry is left after rollback",
            step.name
        );
    }
    ensure!(
        somaxconn(None)? == host_before,
        "the host's somaxconn changed"
    );
    Ok(Outcome::Passed)
}

/// The journal's somaxconn entry in brief: its original, pending intent and
/// last recorded write.
fn entry_in_brief(state: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(state.join("journal.json")) else {
        return "no entry".to_owned();
    };
    let Ok(journal) = serde_json::from_str::<serde_json::Value>(&text) else {
        return text;
    };
    journal["entries"]
        .as_array()
        .and_then(|e| e.first())
        .map_or_else(
            || "no entry".to_owned(),
            |e| {
                format!(
                    "original {}, pending {}, last written {}",
                    e["original"], e["pending"], e["last_written"]
                )
            },
        )
}
