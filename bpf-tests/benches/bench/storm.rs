//! Section `storm`: the agent when the node is in trouble.
//!
//! Two pods routed through the host. *Drop storm*: datagrams paced to 100k/s into
//! a pod whose nftables input chain drops them with a counter (NETFILTER_DROP: the
//! urgent-event path); nettune's count, bpftrace's (same attribution, per netns)
//! and the rule's own counter must agree exactly. *SYN flood*: connects paced to
//! 20k/s against a `listen(4)` socket that never accepts; nettune's listen
//! overflows must equal the namespace's `ListenOverflows`. The agent's CPU is
//! read every second of each storm.

use std::{
    net::{SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use bpf_tests::{
    bench::{
        agent::{Agent, metric_sum},
        load::{syn_flood, udp_flood},
        nft,
        pods::{Pod, Pods},
        process::CpuMeter,
        report::{Row, Section, Target},
        stats::Summary,
    },
    bpftrace::{Bpftrace, drops_by_netns, drops_by_netns_script},
};

use crate::mode::Mode;

const METHOD: &str = "Two pod namespaces routed through the host, `nettune run` (release, 1 s \
tick, urgent events on). *Drop storm*: 1-byte datagrams paced to 100k/s for the window into a \
pod whose nftables input rule `udp dport 7777 counter drop` drops them (NETFILTER_DROP, which \
nettune also sends as urgent events while they are armed). Totals compared \
over the window: nettune's `nettune_drops_total` for that pod, bpftrace counting \
`skb:kfree_skb` per (netns, reason) with nettune's attribution, and the rule's own counter. \
*SYN flood*: non-blocking connects (closed at once) paced to 20k/s against a `listen(4)` \
socket that never accepts; nettune's `nettune_listen_overflows_total` for the pod against the \
namespace's `TcpExt ListenOverflows`. Agent CPU from `/proc/<pid>/stat`, one lap a second, next to the same agent's idle CPU \
just before the storms.";

const DROP_RATE: u64 = 100_000;
const SYN_RATE: u64 = 20_000;

/// Runs `storm` on a thread while the agent's CPU is sampled every second.
fn with_cpu<T: Send>(
    pid: u32,
    storm: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<(T, Vec<f64>)> {
    let mut meter = CpuMeter::start(pid)?;
    let mut cpu = Vec::new();
    let out = std::thread::scope(|s| {
        let h = s.spawn(storm);
        while !h.is_finished() {
            std::thread::sleep(Duration::from_secs(1));
            cpu.push(meter.lap()? * 100.0);
        }
        h.join().map_err(|_| anyhow::anyhow!("storm panicked"))?
    })?;
    Ok((out, cpu))
}

/// The agent's `/metrics` once a whole collection has run (1.5 ticks from now).
fn settled_metrics(agent: &Agent) -> anyhow::Result<String> {
    std::thread::sleep(Duration::from_millis(1500));
    agent.process.metrics()
}

pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let window = Duration::from_secs(mode.pick(5, 30));
    let pods = Pods::new(2, "st")?;
    let (a, b) = (&pods.pods[0], &pods.pods[1]);
    nft::add_input_rule(&b.ns, "udp dport 7777 counter drop")?;
    let agent = Agent::start("")?;
    agent.wait_for_interfaces(&pods.host_ifaces(), Duration::from_secs(30))?;
    // The same agent's CPU with nothing happening: what the storms add to.
    let ((), idle) = with_cpu(agent.pid(), || {
        std::thread::sleep(Duration::from_secs(mode.pick(2, 10)));
        Ok(())
    })?;
    let idle = Summary::of(&idle);
    let mut section = Section::new("storm", "5. Storm", METHOD, mode.quick);
    let scene = Scene {
        agent: &agent,
        a,
        b,
        window,
        idle: &idle,
    };
    drop_storm(&mut section, &scene)?;
    syn_storm(&mut section, &scene)?;
    Ok(section)
}

fn drop_storm(section: &mut Section, scene: &Scene) -> anyhow::Result<()> {
    let (agent, a, b, window) = (scene.agent, scene.a, scene.b, scene.window);
    let pod = b.label();
    let inode = b.ns.inode()?;
    let drops = |m: &str| metric_sum(m, "nettune_drops_total", &[("pod", &pod)]);
    let lost =
        |m: &str, cause: &str| metric_sum(m, "nettune_events_lost_total", &[("cause", cause)]);
    let suppressed = |m: &str| metric_sum(m, "nettune_event_collections_suppressed_total", &[]);
    let received = |m: &str| {
        metric_sum(
            m,
            "nettune_events_received_total",
            &[("kind", "netfilter_drop")],
        )
    };

    let bpftrace = Bpftrace::start(&drops_by_netns_script(&[inode])?)?;
    let before = settled_metrics(agent)?;
    let nft_before = nft::counted_packets(&b.ns)?;
    let t = Instant::now();
    let (sent, cpu) = with_cpu(agent.pid(), || {
        udp_flood(
            &a.ns,
            SocketAddr::from((b.addr(), 7777)),
            DROP_RATE * window.as_secs(),
            Some(DROP_RATE),
            window,
        )
    })?;
    let elapsed = t.elapsed().as_secs_f64();
    let after = settled_metrics(agent)?;
    let peer: u64 = drops_by_netns(&bpftrace.stop()?)
        .iter()
        .filter(|((ns, _), _)| *ns == inode)
        .map(|(_, n)| n)
        .sum();
    let counted = (nft::counted_packets(&b.ns)? - nft_before) as f64;
    let ours = drops(&after) - drops(&before);

    storm_rows(
        section,
        Storm {
            name: "drop storm",
            achieved: counted / elapsed,
            paced: DROP_RATE,
            cpu: &cpu,
            idle: scene.idle,
        },
        ("drops nettune counted", ours),
        ("nft rule counter", counted),
    );
    section.rows.push(
        Row::new(
            "drop storm: drops bpftrace counted",
            "",
            Summary::one(peer as f64),
        )
        .against("nft rule counter", Summary::one(counted))
        .target(Target::exact("equal (the reference itself)")),
    );
    let ring_full = lost(&after, "ring_full") - lost(&before, "ring_full");
    let not_armed = lost(&after, "not_armed") - lost(&before, "not_armed");
    section.rows.push(Row::new(
        "drop storm: urgent events lost, ring full (counted)",
        "",
        Summary::one(ring_full),
    ));
    section.rows.push(Row::new(
        "drop storm: urgent events not sent, not armed (counted)",
        "",
        Summary::one(not_armed),
    ));
    let delivered = received(&after) - received(&before);
    section.rows.push(
        Row::new(
            "drop storm: urgent events received + lost (counted)",
            "",
            Summary::one(delivered + ring_full + not_armed),
        )
        .against("drops nettune counted", Summary::one(ours))
        .target(Target::exact("every event received or counted lost")),
    );
    section.rows.push(Row::new(
        "drop storm: event wake-ups that did not collect",
        "",
        Summary::one(suppressed(&after) - suppressed(&before)),
    ));
    section.facts.push(format!(
        "drop storm: {sent} datagrams sent in {elapsed:.1} s; urgent events received: \
         {delivered:.0} (`nettune_events_received_total`)."
    ));
    Ok(())
}

fn syn_storm(section: &mut Section, scene: &Scene) -> anyhow::Result<()> {
    let (agent, a, b, window) = (scene.agent, scene.a, scene.b, scene.window);
    let pod = b.label();
    let overflows = |m: &str| metric_sum(m, "nettune_listen_overflows_total", &[("pod", &pod)]);
    let addr = SocketAddrV4::new(b.addr(), 7100);
    let before = settled_metrics(agent)?;
    let kernel_before = b.ns.mib("netstat", "TcpExt", "ListenOverflows")?;
    let t = Instant::now();
    let (started, cpu) = with_cpu(agent.pid(), || {
        syn_flood(
            &a.ns,
            &b.ns,
            addr,
            4,
            (SYN_RATE * window.as_secs(), SYN_RATE, window),
        )
    })?;
    let elapsed = t.elapsed().as_secs_f64();
    let after = settled_metrics(agent)?;
    let kernel = (b.ns.mib("netstat", "TcpExt", "ListenOverflows")? - kernel_before) as f64;
    let ours = overflows(&after) - overflows(&before);
    storm_rows(
        section,
        Storm {
            name: "SYN flood",
            achieved: started as f64 / elapsed,
            paced: SYN_RATE,
            cpu: &cpu,
            idle: scene.idle,
        },
        ("listen overflows nettune counted", ours),
        ("namespace ListenOverflows", kernel),
    );
    Ok(())
}

/// What both storms run in: the agent, the sending pod `a` and the receiving
/// pod `b`, the storm's length, and the agent's idle CPU before.
#[derive(Clone, Copy)]
struct Scene<'a> {
    agent: &'a Agent,
    a: &'a Pod,
    b: &'a Pod,
    window: Duration,
    idle: &'a Summary,
}

/// One storm's rate and the agent's CPU meanwhile.
struct Storm<'a> {
    name: &'a str,
    /// Events per second the kernel saw.
    achieved: f64,
    /// What the sender was paced to.
    paced: u64,
    /// Agent CPU, % of a core, one sample a second.
    cpu: &'a [f64],
    /// The same, idle, just before the storms.
    idle: &'a Summary,
}

/// The rows every storm has: the rate achieved, the agent's CPU, and nettune's
/// total (`ours`) against the ground truth (`truth`).
fn storm_rows(section: &mut Section, storm: Storm, ours: (&str, f64), truth: (&str, f64)) {
    let name = storm.name;
    section.rows.push(
        Row::new(
            format!("{name}: per second achieved"),
            "/s",
            Summary::one(storm.achieved),
        )
        .against("paced to", Summary::one(storm.paced as f64)),
    );
    section.rows.push(
        Row::new(
            format!("{name}: agent CPU"),
            "% of a core",
            Summary::of(storm.cpu),
        )
        .against("same agent idle, before", storm.idle.clone())
        .target(Target::below(5.0, "< 5 % of a core")),
    );
    section.rows.push(
        Row::new(format!("{name}: {}", ours.0), "", Summary::one(ours.1))
            .against(truth.0, Summary::one(truth.1))
            .target(Target::exact("no count lost")),
    );
}
