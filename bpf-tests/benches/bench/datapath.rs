//! Section `datapath`: what the agent costs the workload — pod-to-pod traffic,
//! and every system call on the node.
//!
//! Two pods routed through the host namespace (nettune attaches tc to both
//! host-side veths). Each pair of measurements runs the same loads without the
//! agent and with it fully attached, in alternating order (so drift of a busy
//! machine falls on both sides alike): iperf3 throughput, 1-byte request/response
//! over one connection, a new connection per request — both ends of each pinned
//! to one CPU — and a tight loop of `getppid(2)` on that CPU, the row that shows
//! what no program's own run time does: an attached syscall tracepoint sends
//! every system call of every task through the kernel's slow path.

use std::{net::SocketAddr, time::Duration};

use bpf_tests::bench::{
    agent::Agent,
    load::{bench_cpu, connect_request_response, iperf3, request_response, syscall_rate},
    pods::{Pod, Pods},
    report::{Row, Section, Target},
    stats::Summary,
};

use crate::mode::Mode;

const METHOD: &str = "Two pod namespaces, each a veth to the host, routed through the host \
namespace, where nettune attaches tc on both host-side veths. Per pair of measurements, the \
same loads run once without the agent and once with `nettune run` fully attached, in \
alternating order: iperf3 throughput (`-A cpu,cpu`: both ends on one CPU), 1-byte \
request/response over one TCP connection (transactions/s), connect-per-request \
(connect, 1-byte request, 1-byte response, close; connections/s), each pinned to the same \
CPU, and a loop of 2 million `getppid(2)` calls on that CPU (calls/s: what every system call \
of every task pays). Figure: with the agent; reference: without, same run; ratio of the \
medians over pairs.";

/// `getppid(2)` calls per measurement of the syscall loop.
const SYSCALLS: u64 = 2_000_000;

/// One pass of the three loads.
struct Rates {
    gbit_s: f64,
    rr: f64,
    crr: f64,
    syscalls: f64,
}

fn measure(a: &Pod, b: &Pod, seconds: u32) -> anyhow::Result<Rates> {
    let cpu = bench_cpu();
    let window = Duration::from_secs(seconds.into());
    let bits = iperf3(&a.ns, &b.ns, b.addr(), seconds, cpu)?;
    let rr = request_response(
        &a.ns,
        &b.ns,
        SocketAddr::from((b.addr(), 5301)),
        window,
        cpu,
    )?;
    let crr = connect_request_response(
        &a.ns,
        &b.ns,
        SocketAddr::from((b.addr(), 5302)),
        window,
        200_000,
        cpu,
    )?;
    let syscalls = syscall_rate(cpu, SYSCALLS)?;
    Ok(Rates {
        gbit_s: bits / 1e9,
        rr,
        crr,
        syscalls,
    })
}

pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let pairs = mode.pick(3, 10);
    let seconds = mode.pick(1, 2);
    let pods = Pods::new(2, "dp")?;
    let (a, b) = (&pods.pods[0], &pods.pods[1]);
    // [without, with] × [throughput, rr, crr, syscalls]
    let mut samples: [[Vec<f64>; 4]; 2] = Default::default();
    let mut per_pair: [Vec<f64>; 4] = Default::default();
    for pair in 0..pairs {
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut this = [None, None];
        for with_agent in order {
            let agent = if with_agent {
                let agent = Agent::start("")?;
                agent.wait_for_interfaces(&pods.host_ifaces(), Duration::from_secs(30))?;
                Some(agent)
            } else {
                None
            };
            let r = measure(a, b, seconds)?;
            drop(agent);
            let side = usize::from(with_agent);
            for (i, v) in [r.gbit_s, r.rr, r.crr, r.syscalls].into_iter().enumerate() {
                samples[side][i].push(v);
            }
            this[side] = Some(r);
        }
        if let [Some(without), Some(with)] = this {
            per_pair[0].push(with.gbit_s / without.gbit_s);
            per_pair[1].push(with.rr / without.rr);
            per_pair[2].push(with.crr / without.crr);
            per_pair[3].push(with.syscalls / without.syscalls);
        }
        println!("  pair {pair} done");
    }
    let mut section = Section::new(
        "datapath",
        "2. Datapath: pod to pod through the host",
        METHOD,
        mode.quick,
    );
    let figures = [
        ("iperf3 throughput, one CPU", "Gbit/s"),
        ("1-byte request/response", "/s"),
        ("connect per request", "/s"),
        ("getppid(2) loop, system calls", "/s"),
    ];
    for (i, (figure, unit)) in figures.iter().enumerate() {
        section.rows.push(
            Row::new(
                format!("{figure}, with agent"),
                unit,
                Summary::of(&samples[1][i]),
            )
            .against("no agent", Summary::of(&samples[0][i]))
            .target(Target::ratio_at_least(0.99, "≥ 0.99 of no agent")),
        );
    }
    for (i, (figure, _)) in figures.iter().enumerate() {
        section.rows.push(Row::new(
            format!("{figure}: ratio within each pair"),
            "",
            Summary::of(&per_pair[i]),
        ));
    }
    section.facts.push(format!(
        "{pairs} pairs of {seconds} s per load; CPU {} for both ends.",
        bench_cpu()
    ));
    Ok(section)
}
