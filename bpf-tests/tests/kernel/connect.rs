//! The port-exhaustion signal (`nettune-ebpf/src/sock_state.rs`): in a namespace
//! whose `ip_local_port_range` holds two ports, connects beyond the second fail
//! with EADDRNOTAVAIL; nettune counts exactly those failures, for that namespace,
//! and not the connects a closed port refused before them.

use std::net::{SocketAddr, TcpListener, TcpStream};

use anyhow::ensure;
use bpf_tests::{
    harness::{Feature, Outcome, Test, TestResult, require_root},
    netns::Netns,
    probes::{load, read, require_variant},
};
use nettune::{model::probes::Variant, probes::connect::SIGNAL};

pub const TESTS: &[Test] = &[Test {
    name: "connect::eaddrnotavail_is_counted_for_its_namespace",
    run: eaddrnotavail_is_counted_for_its_namespace,
}];

const ATTEMPTS: usize = 6;
/// Connects to a closed port first: refused, not for lack of a port.
const REFUSED: usize = 3;

fn eaddrnotavail_is_counted_for_its_namespace() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = load(&[])?;
    if let Some(skip) = require_variant(&probes, SIGNAL, Variant::TpBtf, Feature::TpBtf) {
        return skip;
    }
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
    let failures = ns.run(|| -> anyhow::Result<usize> {
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
        for _ in 0..ATTEMPTS {
            match TcpStream::connect(target) {
                Ok(stream) => open.push(stream),
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => failures += 1,
                Err(e) => return Err(e.into()),
            }
        }
        drop((open, listener));
        Ok(failures)
    })??;
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
