//! The listen-overflow signal (`nettune-ebpf/src/listen.rs`, and the procfs
//! fallback): a `listen(1)` server that never accepts, hammered by connects from
//! another namespace. nettune's per-netns overflow figure must equal the delta of
//! that namespace's `ListenOverflows`, and the drops seen meanwhile must equal
//! bpftrace's. Where fentry or kprobes attach, the per-listener map must name the
//! port with the queue limit of 1.

use std::{net::SocketAddrV4, time::Duration};

use anyhow::ensure;
use bpf_tests::{
    harness::{Outcome, Test, TestResult, require_root},
    netns::Netns,
    scenarios::Pair,
    sockets::{connect_nonblocking, listener_with_backlog},
};
use nettune::{
    model::probes::Variant,
    probes::{ProbeSource as _, Probes, listen::SIGNAL},
};

use crate::drops::{drops_equal_bpftrace, probes_with_drops};

pub const TESTS: &[Test] = &[Test {
    name: "listen::overflows_equal_the_namespace_listenoverflows_delta",
    run: overflows_equal_the_namespace_listenoverflows_delta,
}];

const PORT: u16 = 5300;
const CONNECTS: usize = 100;

fn agent_overflows(probes: &Probes, ns: &Netns) -> anyhow::Result<u64> {
    let sample = bpf_tests::probes::sample(probes)?;
    let inode = ns.inode()?;
    sample
        .netns
        .get(&inode)
        .and_then(|n| n.listen)
        .map(|l| l.overflows)
        .ok_or_else(|| anyhow::anyhow!("the sample has no listen counters for netns {inode}"))
}

fn overflows_equal_the_namespace_listenoverflows_delta() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = probes_with_drops()?;
    let variant = probes.report().signal(SIGNAL).and_then(|s| s.attached);
    ensure!(
        variant.is_some(),
        "listen_overflow did not attach: {:?}",
        probes.report().signal(SIGNAL)
    );
    let pair = Pair::new(6, None)?;
    let server_addr = SocketAddrV4::new(pair.veth.b_addr, PORT);
    let listener = pair
        .receiver
        .run(|| listener_with_backlog(server_addr, 1))??;

    let agent_before = agent_overflows(&probes, &pair.receiver)?;
    let kernel_before = pair.receiver.mib("netstat", "TcpExt", "ListenOverflows")?;
    drops_equal_bpftrace(&probes, &[&pair.sender, &pair.receiver], || {
        let clients = pair.sender.run(|| {
            (0..CONNECTS)
                .map(|_| connect_nonblocking(server_addr))
                .collect::<anyhow::Result<Vec<_>>>()
        })??;
        // Long enough for the SYN retransmit at 1 s to hit the full queue again.
        std::thread::sleep(Duration::from_millis(1500));
        drop(clients);
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    })?;
    let agent = agent_overflows(&probes, &pair.receiver)? - agent_before;
    let kernel =
        u64::try_from(pair.receiver.mib("netstat", "TcpExt", "ListenOverflows")? - kernel_before)?;
    println!("    {variant:?}: nettune {agent} overflows, ListenOverflows rose by {kernel}");
    ensure!(
        kernel > 0,
        "{CONNECTS} connects to a listen(1) server caused no overflow"
    );
    ensure!(
        agent == kernel,
        "nettune says {agent} overflows, the namespace's counter {kernel}"
    );

    if matches!(variant, Some(Variant::Fentry | Variant::Kprobe)) {
        let inode = pair.receiver.inode()?;
        let per_listener = probes
            .read()?
            .listeners
            .into_iter()
            .find(|(k, _)| k.netns == inode && k.port == PORT)
            .map(|(_, v)| v)
            .ok_or_else(|| anyhow::anyhow!("no per-listener entry for port {PORT}"))?;
        ensure!(
            per_listener.overflows > 0,
            "per-listener entry without overflows"
        );
        ensure!(
            per_listener.max_backlog == 1,
            "queue limit {} != 1",
            per_listener.max_backlog
        );
    }
    drop(listener);
    Ok(Outcome::Passed)
}
