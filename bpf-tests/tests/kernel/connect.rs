//! The port-exhaustion signal (`nettune-ebpf/src/sock_state.rs`): in a namespace
//! whose `ip_local_port_range` holds two ports, connects beyond the second fail
//! with EADDRNOTAVAIL; nettune counts exactly those failures, for that namespace,
//! and not the connects a closed port refused before them. The program is on
//! demand: the agent attaches it only while a namespace's ports are crowded,
//! which the kernel's own list of BPF links shows.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    agent_process::{AgentProcess, workload_in},
    harness::{Feature, Outcome, Test, TestResult, require_root},
    netns::Netns,
    probes::{load, program_linked, read, require_variant},
};
use nettune::{
    model::probes::Variant,
    probes::{ProbeSource as _, connect::SIGNAL},
};

pub const TESTS: &[Test] = &[
    Test {
        name: "connect::eaddrnotavail_is_counted_for_its_namespace",
        run: eaddrnotavail_is_counted_for_its_namespace,
    },
    Test {
        name: "connect::the_agent_attaches_the_program_only_while_ports_are_crowded",
        run: the_agent_attaches_the_program_only_while_ports_are_crowded,
    },
];

/// The on-demand program, as the object names it.
const STATE_PROGRAM: &str = "inet_sock_set_state";

const ATTEMPTS: usize = 6;
/// Connects to a closed port first: refused, not for lack of a port.
const REFUSED: usize = 3;

fn eaddrnotavail_is_counted_for_its_namespace() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let mut probes = load(&[])?;
    if let Some(skip) = require_variant(&probes, SIGNAL, Variant::TpBtf, Feature::TpBtf) {
        return skip;
    }
    ensure!(
        probes.watch_connects(true),
        "the on-demand program did not attach"
    );
    let ns = Netns::new("cn")?;
    ns.write_sysctl("net/ipv4/ip_local_port_range", "40000 40001")?;
    let inode = ns.inode()?;
    let count = || -> anyhow::Result<u64> {
        Ok(read(&probes)?
            .connect_eaddrnotavail
            .get(&inode)
            .copied()
            .unwrap_or(0))
    };
    let before = count()?;
    let failures = ns.run(|| refused_then_exhausted(ATTEMPTS))??;
    let counted = count()? - before;
    println!(
        "    {REFUSED} connects refused, then {failures} of {ATTEMPTS} failed with EADDRNOTAVAIL; \
         nettune counted {counted}"
    );
    ensure!(
        failures > 0,
        "no connect failed: is the port range really two ports?"
    );
    ensure!(
        counted == failures as u64,
        "counted {counted}, expected {failures}"
    );
    Ok(Outcome::Passed)
}

/// In the calling thread's namespace (two local ports): [`REFUSED`] connects
/// to a closed port, then `attempts` to a listener; returns how many of those
/// failed with EADDRNOTAVAIL.
fn refused_then_exhausted(attempts: usize) -> anyhow::Result<usize> {
    // Refused connects (a closed port) fail after a port was found: not
    // counted.
    let closed: SocketAddr = "127.0.0.1:5501".parse()?;
    for _ in 0..REFUSED {
        match TcpStream::connect(closed) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            other => anyhow::bail!("a connect to a closed port: {other:?}"),
        }
    }
    let listener = TcpListener::bind("127.0.0.1:5500")?;
    let target: SocketAddr = "127.0.0.1:5500".parse()?;
    let mut open = Vec::new();
    let mut failures = 0;
    for _ in 0..attempts {
        match TcpStream::connect(target) {
            Ok(stream) => open.push(stream),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => failures += 1,
            Err(e) => return Err(e.into()),
        }
    }
    drop((open, listener));
    Ok(failures)
}

/// Polls whether the program is linked until it is `want`, for at most `timeout`.
fn wait_attached(want: bool, timeout: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = program_linked(STATE_PROGRAM);
        if now == want || Instant::now() > deadline {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent with nothing crowded has no state-change program attached (every
/// TCP state change on the node would pay it); a namespace whose two-port range
/// one connection half fills gets it attached within a few ticks, and the
/// failures that follow are counted for that namespace, equal to what connect()
/// returned.
fn the_agent_attaches_the_program_only_while_ports_are_crowded() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    {
        let probes = load(&[])?;
        if let Some(skip) = require_variant(&probes, SIGNAL, Variant::TpBtf, Feature::TpBtf) {
            return skip;
        }
    }
    let ns = Netns::new("cw")?;
    ns.write_sysctl("net/ipv4/ip_local_port_range", "40000 40001")?;
    let inode = ns.inode()?;
    let agent = AgentProcess::start(&crate::agent::nettune_bin()?, &["--interval", "0.3"])?;
    agent.wait_for("a first snapshot", Duration::from_secs(20), |s| {
        workload_in(s, inode)
    })?;
    // Two ticks with nothing crowded.
    std::thread::sleep(Duration::from_millis(700));
    ensure!(
        !program_linked(STATE_PROGRAM),
        "the state-change program is attached with no namespace crowded"
    );
    // One connection holds one of the two ports: half the range.
    let (listener, held) = ns.run(|| -> anyhow::Result<_> {
        let listener = TcpListener::bind("127.0.0.1:5600")?;
        let held = TcpStream::connect("127.0.0.1:5600")?;
        Ok((listener, held))
    })??;
    ensure!(
        wait_attached(true, Duration::from_secs(20))?,
        "the state-change program was not attached for a half-full port range"
    );
    let failures = ns.run(|| refused_then_exhausted(ATTEMPTS))??;
    let counted = agent.wait_for(
        "the namespace's failed connects",
        Duration::from_secs(10),
        |s| {
            workload_in(s, inode)?["connect_eaddrnotavail"]["total"]
                .as_u64()
                .filter(|n| *n >= failures as u64)
        },
    );
    println!(
        "    attached once one connection held half the range; {failures} connects failed \
         with EADDRNOTAVAIL, nettune counted {counted:?}"
    );
    ensure!(failures > 0, "no connect failed");
    let counted = counted.context("nettune never counted the failures")?;
    ensure!(
        counted == failures as u64,
        "counted {counted}, expected {failures}"
    );
    drop((held, listener));
    Ok(Outcome::Passed)
}
