//! Section `kernel_cost`: what each nettune program costs the kernel per event,
//! next to bpftrace on the same tracepoint and an empty classifier on the same
//! interfaces, all attached at once and fed the same events — started afresh
//! each repetition in a rotated order, since the first program on a hook pays
//! the cache misses on the skb, device and namespace the later ones find warm.
//!
//! Two pods routed through the host (nettune's tc programs on both host-side
//! veths, the empty classifier after them on the same hooks); six bpftrace
//! processes, one script each (empty, `count()`, keyed count, on `skb:kfree_skb`
//! and `tcp:tcp_retransmit_skb`). Each repetition runs two phases, and every
//! program's `run_time_ns / run_cnt` over a phase is one sample:
//! - drop loop: 1-byte UDP datagrams to a closed port of the other pod (NO_SOCKET);
//! - netfilter loss: a TCP transfer into the other pod, whose nftables input chain
//!   drops 3 % of TCP packets at random (NETFILTER_DROP, and retransmits);
//! - DNS queries: a resolver's query datagram to port 53 of the other pod (nothing
//!   listens: each also draws an ICMP port unreachable back);
//! - SYNs: connects to a closed port of the other pod (a SYN out, an RST back).
//!
//! The tc programs' rows: per packet in the drop loop and the transfer (plain
//! packets, ≤ 1.3× the empty classifier), per DNS packet and per SYN (shown
//! next to it, without a bound: they take map lookups).

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use aya::programs::TcAttachType;
use bpf_tests::{
    bench::{
        agent::{Agent, metric_sum},
        bpf_stats::{self, ProgRun, Snapshot},
        load::{DNS_QUERY, udp_flood, udp_flood_of},
        nft,
        pods::Pods,
        report::{Row, Section, Target},
        stats::Summary,
    },
    bpftrace::Bpftrace,
    classifier::Classifier,
    netns::Netns,
    traffic::bulk_transfer,
};

use crate::mode::Mode;

const METHOD: &str = "Per-event kernel cost, `run_time_ns / run_cnt` with `kernel.bpf_stats_enabled=1` \
(restored after; it adds a fixed cost to every program alike), read from the fdinfo of each \
program's holder. Two pod namespaces routed through the host; nettune (`nettune run` in \
enforce mode, so that it arms urgent events as on a tuned node, with every sysctl excluded) \
attached with tc on both host-side veths; in the same run, bpftrace on the same tracepoints — an empty \
program, `@ = count()` and a keyed count (`@[args->reason]` on `skb:kfree_skb`, \
`@[args->skaddr]` on `tcp:tcp_retransmit_skb`) — and a test-only empty classifier \
(`bpf-tests/ebpf/src/empty.rs`) on the same tc hooks; and a second agent with \
`agent.wake_on_events = false`, whose programs send no urgent events (its kfree_skb only: \
what the ring-buffer wake-ups cost). Every program sees the same events; every repetition \
starts them all afresh in an order rotated by one (programs on one hook run in the order they \
were attached, and the first pays the cache misses the later ones find warm), then runs a 1 MiB \
lossy transfer and waits 2 s, so that each repetition measures the steady state (map entries \
made; the agent's first urgent event judged in vain and its namespace made quiet, as on a node \
whose firewall drops all day). \
Phases, repeated: *drop loop* (1-byte UDP datagrams to a closed port of the other pod: \
NO_SOCKET), *netfilter loss* (a TCP transfer into a pod whose nftables input chain drops \
`numgen random mod 100 < 3`: NETFILTER_DROP and retransmits), *DNS queries* (a resolver's \
30-byte query to port 53 of the other pod, where nothing listens) and *SYNs* (connects to a \
closed port: a SYN and an RST each). Other activity on the machine reaches the tracepoints \
too, equally for every program.";

/// After each repetition's warm-up transfer: two ticks, for its urgent event to
/// be collected and judged.
const WARM_UP_WAIT: Duration = Duration::from_secs(2);

/// A phase needs this many runs of a program for its cost to be a sample.
const MIN_RUNS: u64 = 100;

/// (label, tracepoint family, script) of each bpftrace peer.
const PEERS: &[(&str, Family, &str)] = &[
    (
        "bpftrace empty",
        Family::KfreeSkb,
        "tracepoint:skb:kfree_skb {}",
    ),
    (
        "bpftrace count()",
        Family::KfreeSkb,
        "tracepoint:skb:kfree_skb { @ = count(); }",
    ),
    (
        "bpftrace keyed count",
        Family::KfreeSkb,
        "tracepoint:skb:kfree_skb { @[args->reason] = count(); }",
    ),
    (
        "bpftrace empty",
        Family::Retransmit,
        "tracepoint:tcp:tcp_retransmit_skb {}",
    ),
    (
        "bpftrace count()",
        Family::Retransmit,
        "tracepoint:tcp:tcp_retransmit_skb { @ = count(); }",
    ),
    (
        "bpftrace keyed count",
        Family::Retransmit,
        "tracepoint:tcp:tcp_retransmit_skb { @[args->skaddr] = count(); }",
    ),
];

/// Which event a program runs on.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Family {
    KfreeSkb,
    Retransmit,
    Tc,
    Other,
}

impl Family {
    fn of_nettune(name: &str) -> Self {
        if name.starts_with("kfree_skb") {
            Self::KfreeSkb
        } else if name.starts_with("tcp_retransmit") {
            Self::Retransmit
        } else if name.starts_with("pod_") {
            Self::Tc
        } else {
            Self::Other
        }
    }

    fn tracepoint(self) -> &'static str {
        match self {
            Self::KfreeSkb => "kfree_skb",
            Self::Retransmit => "tcp_retransmit_skb",
            Self::Tc => "tc",
            Self::Other => "other",
        }
    }
}

const PHASES: [&str; 4] = ["drop loop", "netfilter loss", "DNS queries", "SYNs"];

/// Phases whose packets are plain for the tc programs (no DNS, SYN or RST).
const PLAIN_PHASES: [usize; 2] = [0, 1];

/// ns/run samples per (phase, program label), and runs per phase.
#[derive(Default)]
struct Costs {
    ns: BTreeMap<(usize, String), Vec<f64>>,
    runs: BTreeMap<(usize, String), Vec<f64>>,
}

impl Costs {
    fn add(&mut self, phase: usize, label: String, run: &ProgRun) {
        if run.run_cnt >= MIN_RUNS {
            self.ns
                .entry((phase, label.clone()))
                .or_default()
                .push(run.ns_per_run());
            self.runs
                .entry((phase, label))
                .or_default()
                .push(run.run_cnt as f64);
        }
    }

    fn get(&self, phase: usize, label: &str) -> Option<Summary> {
        self.ns
            .get(&(phase, label.to_owned()))
            .map(|v| Summary::of(v))
    }
}

pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let reps = mode.pick(3, 7);
    let datagrams = mode.pick(20_000, 50_000);
    let bytes = mode.pick(16, 48) << 20;
    let mut section = Section::new(
        "kernel_cost",
        "1. Per-event kernel cost",
        METHOD,
        mode.quick,
    );

    let _stats = bpf_stats::enable()?;
    let pods = Pods::new(2, "kc")?;
    let (a, b) = (&pods.pods[0], &pods.pods[1]);
    nft::add_input_rule(&b.ns, "meta l4proto tcp numgen random mod 100 < 3 drop")?;
    // One segment per packet (no TSO/GSO super-packets from the sender): what
    // netfilter, tc and the loss see is then per MSS, as between nodes.
    a.ns.ip(&["link", "set", "dev", "eth0", "gso_max_segs", "1"])?;
    let ifaces = pods.host_ifaces();
    let mut costs = Costs::default();
    let mut events = 0.0;
    for rep in 0..reps {
        // Started afresh each repetition, in a rotated order: the programs on one
        // hook run in the order they were attached, and the first after a stretch
        // of other work pays the cache misses on the skb, its device and its
        // namespace that the later ones then find warm.
        let observing = Observing::start(rep, &ifaces)?;
        // Measure the steady state, not a start: a short lossy transfer first
        // makes the map entries and lets the agent judge its first urgent event
        // (in vain here: every sysctl is excluded) and make that namespace quiet,
        // as it stays on a node whose firewall drops all day.
        bulk_transfer(&a.ns, &b.ns, SocketAddr::from((b.addr(), 5201)), 1 << 20)?;
        std::thread::sleep(WARM_UP_WAIT);
        let pids = observing.pids();
        let events_before = observing.events_received()?;
        for (phase, name) in PHASES.iter().enumerate() {
            let before = Snapshot::take(&pids)?;
            match phase {
                0 => {
                    let closed = SocketAddr::from((b.addr(), 9));
                    udp_flood(&a.ns, closed, datagrams, None, Duration::from_secs(20))?;
                }
                1 => {
                    let server = SocketAddr::from((b.addr(), 5201));
                    bulk_transfer(&a.ns, &b.ns, server, bytes)?;
                }
                2 => {
                    let dns = SocketAddr::from((b.addr(), 53));
                    let max = Duration::from_secs(20);
                    udp_flood_of(&a.ns, dns, DNS_QUERY, datagrams, None, max)?;
                }
                _ => refused_connects(&a.ns, SocketAddr::from((b.addr(), 9)), datagrams / 10)?,
            }
            // Let the last packets and ICMP errors through.
            std::thread::sleep(Duration::from_millis(100));
            let runs = Snapshot::take(&pids)?.since(&before);
            println!(
                "  rep {rep} {name}: {} programs ran",
                runs.iter().filter(|r| r.run_cnt > 0).count()
            );
            let agents = (observing.agent.pid(), observing.quiet.pid());
            let empty_id = observing.empty.program_id()?;
            attribute(&mut costs, phase, &runs, agents, empty_id, &observing.peers);
        }
        // The collection loop drains the ring at least every 200 ms.
        std::thread::sleep(Duration::from_millis(500));
        events += observing.events_received()? - events_before;
    }
    section.facts.push(format!(
        "urgent events the agent received in the measured phases of the {reps} repetitions \
         (after each warm-up): {events:.0} \
         (`nettune_events_received_total`); each is a ring-buffer wake-up in kfree_skb."
    ));
    section.facts.push(format!(
        "every repetition starts the two agents, the empty classifier and the bpftrace \
         scripts afresh, in an order rotated by one each time ({reps} repetitions, {} orders).",
        OBSERVERS.len()
    ));

    for (phase, name) in PHASES.iter().enumerate() {
        rows_for_phase(&mut section, &costs, phase, name);
    }
    Ok(section)
}

/// What watches the events of one repetition.
#[derive(Clone, Copy)]
enum Observer {
    /// nettune enforcing: the daemon arms urgent events (every sysctl excluded:
    /// nothing is written).
    Enforcing,
    /// The same programs without urgent events: what sending them adds.
    WithoutEvents,
    /// The test's empty classifier on the same tc hooks.
    EmptyClassifier,
    /// The bpftrace scripts on the same tracepoints.
    Bpftrace,
}

const OBSERVERS: [Observer; 4] = [
    Observer::Enforcing,
    Observer::WithoutEvents,
    Observer::EmptyClassifier,
    Observer::Bpftrace,
];

/// Everything attached for one repetition; detached on drop.
struct Observing {
    agent: Agent,
    quiet: Agent,
    empty: Classifier<'static>,
    peers: Vec<Bpftrace>,
}

impl Observing {
    /// Starts every observer, in [`OBSERVERS`] order rotated by `rep`.
    fn start(rep: usize, ifaces: &[&str]) -> anyhow::Result<Self> {
        let mut order = OBSERVERS;
        order.rotate_left(rep % OBSERVERS.len());
        let (mut agent, mut quiet, mut empty, mut peers) = (None, None, None, Vec::new());
        let started = |config: &str, mode: &str| -> anyhow::Result<Agent> {
            let agent = Agent::start_in(mode, config)?;
            agent.wait_for_interfaces(ifaces, Duration::from_secs(30))?;
            Ok(agent)
        };
        for observer in order {
            match observer {
                Observer::Enforcing => agent = Some(started("", "enforce")?),
                Observer::WithoutEvents => {
                    quiet = Some(started("[agent]\nwake_on_events = false", "observe")?);
                }
                Observer::EmptyClassifier => {
                    let mut classifier = Classifier::empty(None)?;
                    for iface in ifaces {
                        classifier.attach(iface, TcAttachType::Ingress, false)?;
                        classifier.attach(iface, TcAttachType::Egress, false)?;
                    }
                    empty = Some(classifier);
                }
                Observer::Bpftrace => {
                    peers = PEERS
                        .iter()
                        .map(|(_, _, script)| Bpftrace::start(script))
                        .collect::<anyhow::Result<_>>()?;
                }
            }
        }
        let missing = || anyhow::anyhow!("an observer did not start");
        Ok(Self {
            agent: agent.ok_or_else(missing)?,
            quiet: quiet.ok_or_else(missing)?,
            empty: empty.ok_or_else(missing)?,
            peers,
        })
    }

    /// The processes whose programs are measured (this one holds the classifier).
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.agent.pid(), self.quiet.pid(), std::process::id()];
        pids.extend(self.peers.iter().map(Bpftrace::pid));
        pids
    }

    fn events_received(&self) -> anyhow::Result<f64> {
        let body = self.agent.process.metrics()?;
        Ok(metric_sum(&body, "nettune_events_received_total", &[]))
    }
}

/// `count` TCP connects from `from` to the closed `to`, each refused at once.
fn refused_connects(from: &Netns, to: SocketAddr, count: u64) -> anyhow::Result<()> {
    from.run(|| -> anyhow::Result<()> {
        for _ in 0..count {
            let refused = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1));
            anyhow::ensure!(refused.is_err(), "a connect to the closed {to} succeeded");
        }
        Ok(())
    })?
}

/// How the kfree_skb programs of the agent without urgent events are labelled.
const WITHOUT_EVENTS: &str = " (urgent events off)";

/// Files each program's phase figures under a label: `nettune <name>`, a bpftrace
/// peer's label and tracepoint, or the empty classifier. `agents` are the agent
/// with urgent events and the one without (only its kfree_skb counts: events are
/// all that differ).
fn attribute(
    costs: &mut Costs,
    phase: usize,
    runs: &[ProgRun],
    agents: (u32, u32),
    empty_id: u32,
    peers: &[Bpftrace],
) {
    for run in runs {
        if run.pid == agents.0 {
            costs.add(phase, format!("nettune {}", run.name), run);
        } else if run.pid == agents.1 && Family::of_nettune(&run.name) == Family::KfreeSkb {
            costs.add(phase, format!("nettune {}{WITHOUT_EVENTS}", run.name), run);
        } else if run.id == empty_id {
            costs.add(phase, "empty classifier".into(), run);
        }
    }
    // A bpftrace process also holds its BEGIN program: take the one that ran most.
    for (peer, (label, family, _)) in peers.iter().zip(PEERS) {
        if let Some(run) = runs
            .iter()
            .filter(|r| r.pid == peer.pid())
            .max_by_key(|r| r.run_cnt)
        {
            costs.add(phase, peer_label(label, *family), run);
        }
    }
}

fn peer_label(label: &str, family: Family) -> String {
    format!("{label} on {}", family.tracepoint())
}

fn rows_for_phase(section: &mut Section, costs: &Costs, phase: usize, name: &str) {
    let nettune: Vec<&String> = costs
        .ns
        .keys()
        .filter(|(p, l)| *p == phase && l.starts_with("nettune "))
        .map(|(_, l)| l)
        .collect();
    for label in nettune {
        let Some(value) = costs.get(phase, label) else {
            continue;
        };
        let prog = label.trim_start_matches("nettune ");
        let family = Family::of_nettune(prog);
        let (prog, variant) = prog
            .strip_suffix(WITHOUT_EVENTS)
            .map_or((prog, ""), |p| (p, WITHOUT_EVENTS));
        let figure = format!(
            "{name}: nettune `{prog}`{variant}, per {}",
            match family {
                Family::Tc => "packet",
                _ => "event",
            }
        );
        let against = |peer: &str| {
            costs
                .get(phase, &peer_label(peer, family))
                .map(|s| (format!("{peer} ({})", family.tracepoint()), s))
        };
        match family {
            Family::KfreeSkb | Family::Retransmit => {
                if let Some((peer, s)) = against("bpftrace keyed count") {
                    section.rows.push(
                        Row::new(figure.clone(), "ns", value.clone())
                            .against(peer, s)
                            .target(Target::ratio_at_most(1.0, "≤ bpftrace keyed count")),
                    );
                }
                if let Some((peer, s)) = against("bpftrace count()") {
                    section.rows.push(
                        Row::new(format!("{figure} (aim)"), "ns", value.clone())
                            .against(peer, s)
                            .target(Target::ratio_at_most(1.0, "aim: ≤ bpftrace count()").as_aim()),
                    );
                }
            }
            Family::Tc => {
                if let Some(s) = costs.get(phase, "empty classifier") {
                    let row =
                        Row::new(figure, "ns", value).against("empty classifier, same hooks", s);
                    // DNS packets and SYNs take map lookups and LRU inserts: shown
                    // next to the empty classifier, with no bound of their own.
                    section.rows.push(if PLAIN_PHASES.contains(&phase) {
                        row.target(Target::ratio_at_most(
                            1.3,
                            "plain packets: ≤ 1.3× empty classifier",
                        ))
                    } else {
                        row
                    });
                }
            }
            Family::Other => section.rows.push(Row::new(figure, "ns", value)),
        }
    }
    // The references themselves, for the record.
    for (label, family, _) in PEERS {
        if let Some(s) = costs.get(phase, &peer_label(label, *family)) {
            section.rows.push(Row::new(
                format!("{name}: {}", peer_label(label, *family)),
                "ns",
                s,
            ));
        }
    }
    let events = |label: &str| {
        costs
            .runs
            .get(&(phase, label.to_owned()))
            .map(|v| Summary::of(v).median)
    };
    if let Some(n) = events(&peer_label("bpftrace empty", Family::KfreeSkb)) {
        let retrans = events(&peer_label("bpftrace empty", Family::Retransmit)).unwrap_or(0.0);
        section.facts.push(format!(
            "{name}: {n:.0} kfree_skb and {retrans:.0} tcp_retransmit_skb events per repetition \
             (median); programs with fewer than {MIN_RUNS} runs in a phase are left out."
        ));
    }
}
