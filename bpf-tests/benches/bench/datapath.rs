//! Section `datapath`: what the agent costs the workload — pod-to-pod traffic,
//! and every system call on the node.
//!
//! Two pods routed through the host namespace (nettune attaches tc to both
//! host-side veths). Each triple of measurements runs the same loads without the
//! agent, with only an empty classifier on the same hooks (the floor any tc
//! program pays) and with the agent fully attached, each setup first, middle and
//! last in turn (so drift of a busy machine falls on all alike): iperf3 throughput, 1-byte request/response
//! over one connection, a new connection per request — both ends of each pinned
//! to one CPU — and a tight loop of `getppid(2)` on that CPU, the row that shows
//! what no program's own run time does: an attached syscall tracepoint sends
//! every system call of every task through the kernel's slow path.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use aya::programs::TcAttachType;
use bpf_tests::{
    bench::{
        agent::Agent,
        load::{bench_cpu, connect_request_response, iperf3, request_response, syscall_rate},
        pods::{Pod, Pods},
        report::{Row, Section, Target},
        stats::Summary,
    },
    classifier::Classifier,
    probes::program_linked,
};

use crate::mode::Mode;

const METHOD: &str = "Two pod namespaces, each a veth to the host, routed through the host \
namespace, where nettune attaches tc on both host-side veths. Per triple of measurements, \
the same loads run once without the agent, once with only a test-only empty classifier \
(`bpf-tests/ebpf/src/empty.rs`) on the same hooks — what any tc program costs this path, the \
floor under nettune's own — and once with `nettune run` fully attached (measured 2 s after it \
has every veth: the steady state), each setup first, middle and last in turn: iperf3 throughput (`-A cpu,cpu`: both ends on one CPU), 1-byte \
request/response over one TCP connection (transactions/s), connect-per-request \
(connect, 1-byte request, 1-byte response, close; connections/s), each pinned to the same \
CPU, and a loop of 2 million `getppid(2)` calls on that CPU (calls/s: what every system call \
of every task pays). Figure: with the agent; reference: without, same run; ratio of the \
medians over the triples.";

/// After the agent has every veth: two ticks before measuring.
const SETTLE: Duration = Duration::from_secs(2);

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

/// What runs on the node during one measurement of a pair.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    NoAgent,
    /// The test-only empty classifier on the same hooks nettune uses: what any tc
    /// program costs this path, the floor under nettune's own.
    EmptyClassifier,
    Agent,
}

const SETUPS: [Setup; 3] = [Setup::NoAgent, Setup::EmptyClassifier, Setup::Agent];

/// Runs the loads once with `setup` in place.
fn measure_with(setup: Setup, pods: &Pods, seconds: u32) -> anyhow::Result<Rates> {
    let (a, b) = (&pods.pods[0], &pods.pods[1]);
    match setup {
        Setup::NoAgent => measure(a, b, seconds),
        Setup::EmptyClassifier => {
            let mut empty = Classifier::empty(None)?;
            for iface in pods.host_ifaces() {
                empty.attach(iface, TcAttachType::Ingress, false)?;
                empty.attach(iface, TcAttachType::Egress, false)?;
            }
            measure(a, b, seconds)
        }
        Setup::Agent => {
            let agent = Agent::start("")?;
            agent.wait_for_interfaces(&pods.host_ifaces(), Duration::from_secs(30))?;
            // The steady state, not the start: the first collections read every
            // namespace and attach, on whichever CPU (their cost is the scale
            // section's); the workload's tax is what stays.
            std::thread::sleep(SETTLE);
            let rates = measure(a, b, seconds)?;
            if program_linked(STATE_PROGRAM) {
                STATE_PROGRAM_SEEN.fetch_add(1, Ordering::Relaxed);
            }
            Ok(rates)
        }
    }
}

/// The program nettune attaches only while some namespace's ports are
/// crowded: every TCP state change on the node pays it while it is.
const STATE_PROGRAM: &str = "inet_sock_set_state";

/// Agent measurements after which the state-change program was attached.
static STATE_PROGRAM_SEEN: AtomicUsize = AtomicUsize::new(0);

pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let pairs = mode.pick(3, 10);
    let seconds = mode.pick(1, 2);
    let pods = Pods::new(2, "dp")?;
    // [setup] × [throughput, rr, crr, syscalls]
    let mut samples: [[Vec<f64>; 4]; 3] = Default::default();
    // [agent / none, empty / none] × load
    let mut per_pair: [[Vec<f64>; 4]; 2] = Default::default();
    for pair in 0..pairs {
        // Each setup first, middle and last in turn, so that drift of a busy
        // machine falls on all alike.
        let mut order = SETUPS;
        order.rotate_left(pair % SETUPS.len());
        let mut this: [Option<[f64; 4]>; 3] = [None; 3];
        for setup in order {
            let r = measure_with(setup, &pods, seconds)?;
            let i = SETUPS.iter().position(|s| *s == setup).unwrap_or(0);
            let values = [r.gbit_s, r.rr, r.crr, r.syscalls];
            for (load, v) in values.into_iter().enumerate() {
                samples[i][load].push(v);
            }
            this[i] = Some(values);
        }
        if let [Some(none), Some(empty), Some(with)] = this {
            for load in 0..4 {
                per_pair[0][load].push(with[load] / none[load]);
                per_pair[1][load].push(empty[load] / none[load]);
            }
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
    // Setup `side`'s figure `i` against no agent's, labelled `setup`.
    let against_none = |i: usize, side: usize, setup: &str| {
        let (figure, unit) = figures[i];
        Row::new(
            format!("{figure}, {setup}"),
            unit,
            Summary::of(&samples[side][i]),
        )
        .against("no agent", Summary::of(&samples[0][i]))
    };
    for i in 0..figures.len() {
        section.rows.push(
            against_none(i, 2, "with agent")
                .target(Target::ratio_at_least(0.99, "≥ 0.99 of no agent")),
        );
    }
    for i in 0..figures.len() {
        section
            .rows
            .push(against_none(i, 1, "empty classifier only"));
    }
    for (i, (figure, _)) in figures.iter().enumerate() {
        section.rows.push(Row::new(
            format!("{figure}: agent / no agent within each pair"),
            "",
            Summary::of(&per_pair[0][i]),
        ));
        section.rows.push(Row::new(
            format!("{figure}: empty classifier / no agent within each pair"),
            "",
            Summary::of(&per_pair[1][i]),
        ));
    }
    section.facts.push(format!(
        "{pairs} triples of {seconds} s per load; CPU {} for both ends.",
        bench_cpu()
    ));
    section.facts.push(format!(
        "`inet_sock_set_state` (attached only while a namespace's ephemeral ports are \
         crowded) was linked at the end of {} of {pairs} agent measurements (the kernel's \
         list of BPF links).",
        STATE_PROGRAM_SEEN.load(Ordering::Relaxed)
    ));
    Ok(section)
}
