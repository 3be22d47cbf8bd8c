//! `nettune top --prometheus` in a real terminal (tmux) against a real
//! Prometheus scraping three real agents, each on a "node" of its own.
//!
//! A node here is a network namespace with a pod (another namespace behind a
//! veth), and its agent runs inside it (`ip netns exec`) in PID and mount
//! namespaces of its own: its `/proc` shows its own processes and its
//! `/run/netns` its own pod only, so it lists that node's workloads as an agent
//! on a node of its own would. `agent.node_name` comes from each agent's config;
//! Prometheus labels each target `node` with the name the agent reports, as the
//! ServiceMonitor's relabelling does from the pod's node. One node's pod drops
//! what it is sent (nftables): that node ranks first, Enter shows the pod first
//! among its pods, `l` its listeners (the agent's own ports); with Prometheus
//! stopped the view says so, and it recovers when Prometheus is back.
//!
//! The three agents share one kernel, so each agent's programs also count the
//! drops of namespaces it does not list; until it forgets them they show on it
//! as departed namespaces (`netns:<inode>`). Only the faulty node lists the pod
//! and counts all of its drops, so it ranks first all the same.

use std::{
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    agent_process::AgentProcess,
    harness::{Outcome, Test, TestResult, require_root},
    netns::{HostVeth, Netns, Veth},
    prometheus::{Prometheus, Target},
    tmux::Session,
};

use crate::{
    agent::nettune_bin,
    conversations::nft_drop,
    top::{quit, rows_under, wrapped},
};

pub const TESTS: &[Test] = &[Test {
    name: "top::the_cluster_view_ranks_the_dropping_node_first_and_survives_prometheus_stopping",
    run: the_cluster_view_ranks_the_dropping_node_first_and_survives_prometheus_stopping,
}];

/// The port the faulty pod drops.
const DROPPED_PORT: u16 = 9999;

/// One node: its namespace, its pod, and the agent watching them.
struct Node {
    /// The name its config gives it.
    name: String,
    /// Stopped first, before its namespaces go.
    agent: Option<AgentProcess>,
    dir: PathBuf,
    ns: Netns,
    pod: Netns,
    /// The pod's address, behind the node's veth.
    pod_addr: std::net::Ipv4Addr,
    _uplink: HostVeth,
}

impl Node {
    /// Node `index` named `name`: `10.203.(70+index).2` its address from here,
    /// its pod on `10.203.(73+index).2`.
    fn start(name: &str, index: u8) -> anyhow::Result<Self> {
        let ns = Netns::new("node")?;
        let pod = Netns::new("pod")?;
        let uplink = Veth::to_host(&ns, 70 + index)?;
        let veth = Veth::connect(&ns, &pod, 73 + index, None)?;
        let dir =
            std::env::temp_dir().join(format!("nettune-cluster-{}-{name}", std::process::id()));
        std::fs::create_dir_all(dir.join("pods"))?;
        std::fs::create_dir_all(dir.join("state"))?;
        let config = dir.join("nettune.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nnode_name = \"{name}\"\n\n[tuning]\nstate_dir = \"{}\"\n",
                dir.join("state").display()
            ),
        )?;
        // In its own mount namespace: /run/netns shows the node's pod alone,
        // tracefs and the cgroup hierarchy are where the agent looks for them
        // (`ip netns exec` mounted a /sys of the node's namespace).
        let pods = dir.join("pods");
        let script = format!(
            "set -e; mount -t tmpfs pods {pods}; touch {pods}/{pod}; \
             mount --bind /run/netns/{pod} {pods}/{pod}; mount --rbind {pods} /run/netns; \
             mount -t tracefs tracefs /sys/kernel/tracing; \
             mount -t cgroup2 cgroup2 /sys/fs/cgroup || true; exec \"$0\" \"$@\"",
            pods = pods.display(),
            pod = pod.name()
        );
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns.name(), "unshare", "--mount", "--pid"])
            .args(["--fork", "--mount-proc", "sh", "-c", &script])
            .arg(nettune_bin()?)
            .arg("--config")
            .arg(&config);
        let addr = SocketAddr::from((uplink.veth.b_addr, 9977));
        let agent = AgentProcess::start_wrapped(command, addr, &["--interval", "0.5"])
            .with_context(|| format!("starting the agent of {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            agent: Some(agent),
            dir,
            ns,
            pod,
            pod_addr: veth.b_addr,
            _uplink: uplink,
        })
    }

    fn agent(&self) -> anyhow::Result<&AgentProcess> {
        self.agent.as_ref().context("agent stopped")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.agent.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The DROP/s cell of a row.
fn drops(row: &[&str], at: usize) -> f64 {
    row.get(at)
        .and_then(|c| c.trim_end_matches(['k', 'M']).parse().ok())
        .unwrap_or(0.0)
}

fn the_cluster_view_ranks_the_dropping_node_first_and_survives_prometheus_stopping() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let nodes = ["node-a", "node-b", "node-c"]
        .iter()
        .zip(0..)
        .map(|(name, i)| Node::start(name, i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let faulty = &nodes[1];
    nft_drop(&faulty.pod, "input", &format!("udp dport {DROPPED_PORT}"))?;
    let mut targets = Vec::new();
    for node in &nodes {
        let agent = node.agent()?;
        // Each agent sees its own node: the name from its config, its pod listed.
        let pod = format!("netns:{}", node.pod.name());
        let seen = agent.wait_for("its pod", Duration::from_secs(20), |s| {
            s["workloads"]
                .as_array()?
                .iter()
                .any(|w| w["pod"] == pod.as_str())
                .then(|| s["node"].as_str().map(str::to_owned))?
        })?;
        ensure!(seen == node.name, "{} calls itself {seen}", node.name);
        targets.push(Target {
            addr: agent.addr,
            labels: vec![("node".into(), seen)],
        });
    }
    let mut prometheus = Prometheus::scraping(&targets)?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> TestResult {
        // About a thousand datagrams a second to the faulty pod, for at most 3 minutes.
        let traffic = s.spawn(|| {
            faulty.ns.run(|| -> anyhow::Result<u64> {
                let socket = UdpSocket::bind("0.0.0.0:0")?;
                let to = SocketAddrV4::new(faulty.pod_addr, DROPPED_PORT);
                let deadline = Instant::now() + Duration::from_secs(180);
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    socket.send_to(b"dropped", to)?;
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(sent)
            })
        });
        let result = watch(&mut prometheus, faulty);
        stop.store(true, Ordering::Relaxed);
        let sent = traffic
            .join()
            .map_err(|_| anyhow::anyhow!("traffic thread panicked"))???;
        println!("    {sent} datagrams sent to the faulty pod");
        result
    })
}

/// The lines of `screen` that say what went wrong.
fn error_lines(screen: &str) -> Vec<&str> {
    screen.lines().filter(|l| l.contains("error:")).collect()
}

/// Drives the view: the faulty node first, its pod first inside it, its
/// listeners, Prometheus stopped and back.
fn watch(prometheus: &mut Prometheus, faulty: &Node) -> TestResult {
    let top = format!(
        "{} top --prometheus {} --interval 0.5",
        nettune_bin()?.display(),
        prometheus.url()
    );
    let session = Session::start("top-cluster", 130, 24, &wrapped(&top))?;
    // NODE WKLDS RX/s TX/s DROP/s: drops are the fifth cell.
    let ranked = |s: &str| {
        let rows = rows_under(s, "NODE");
        rows.len() == 3
            && rows[0][0] == faulty.name
            && drops(&rows[0], 4) > 10.0
            && rows[1..].iter().all(|r| drops(r, 4) < drops(&rows[0], 4))
    };
    let screen = session.wait_for(Duration::from_secs(60), "the faulty node first", ranked)?;
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/nettune-top-cluster-screen.txt");
    let _ = std::fs::write(shot, &screen);
    println!("    nodes: {:?}", rows_under(&screen, "NODE"));
    ensure!(
        screen.contains("queries 1 in") && screen.contains("samples read"),
        "the cost of the query is not shown:\n{screen}"
    );
    ensure!(
        screen.contains("NETFILTER_DROP"),
        "the detail pane does not name the drop reason:\n{screen}"
    );

    // The node view's help, its own keys in it; any key closes it.
    session.send(&["?"])?;
    session.wait_for(Duration::from_secs(5), "the help", |s| {
        s.contains(" keys ") && s.contains("the selected node's pods")
    })?;
    session.send(&["Escape"])?;
    session.wait_for(Duration::from_secs(5), "the help to close", |s| {
        !s.contains(" keys ") && s.contains("nodes (3)")
    })?;

    session.send(&["Enter"])?;
    let pod = format!("netns:{}", faulty.pod.name());
    let title = format!("pods of {}", faulty.name);
    // POD RX/s TX/s DROP/s: drops are the fourth cell.
    let screen = session.wait_for(Duration::from_secs(20), "the faulty pod first", |s| {
        let rows = rows_under(s, "POD");
        s.contains(&title)
            && rows
                .first()
                .is_some_and(|r| r[0] == pod && drops(r, 3) > 0.0)
    })?;
    println!("    {title}: {:?}", rows_under(&screen, "POD"));
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/nettune-top-cluster-node.txt");
    let _ = std::fs::write(shot, &screen);

    session.send(&["l"])?;
    let screen = session.wait_for(Duration::from_secs(20), "the node's listeners", |s| {
        s.contains(&format!("listeners of {}", faulty.name))
            && rows_under(s, "PORT").iter().any(|r| r.contains(&"9977"))
    })?;
    println!("    listeners: {:?}", rows_under(&screen, "PORT"));
    session.send(&["Escape"])?;
    session.wait_for(Duration::from_secs(20), "the nodes again", |s| {
        s.contains("nodes (3)") && ranked(s)
    })?;

    prometheus.stop();
    let screen = session.wait_for(Duration::from_secs(20), "the view to say so", |s| {
        s.contains("Prometheus does not answer") && s.contains("cannot connect")
    })?;
    println!("    Prometheus stopped: {:?}", error_lines(&screen));
    prometheus.resume()?;
    let recovered =
        |s: &str| !s.contains("does not answer") && s.contains("queries 1 in") && ranked(s);
    session.wait_for(Duration::from_secs(60), "the view to recover", recovered)?;

    // Slow: it takes the connection and answers nothing.
    prometheus.freeze(true)?;
    let screen = session.wait_for(Duration::from_secs(30), "the view to say it is slow", |s| {
        s.contains("Prometheus does not answer") && s.contains("no answer within")
    })?;
    println!("    Prometheus frozen: {:?}", error_lines(&screen));
    prometheus.freeze(false)?;
    session.wait_for(
        Duration::from_secs(60),
        "the view to recover from slowness",
        recovered,
    )?;

    // Refusing: a sample limit every query of the view is over.
    prometheus.restart_with(&["--query.max-samples=1"])?;
    let screen = session.wait_for(Duration::from_secs(60), "the view to say it refuses", |s| {
        s.contains("Prometheus refused the query")
    })?;
    println!("    Prometheus refusing: {:?}", error_lines(&screen));
    prometheus.restart_with(&[])?;
    session.wait_for(
        Duration::from_secs(60),
        "the view to recover from refusals",
        recovered,
    )?;

    let screen = quit(&session)?;
    ensure!(
        screen.contains("AFTER-TOP rc=0") && screen.contains("MODE=cooked"),
        "top did not exit cleanly:\n{screen}"
    );
    Ok(Outcome::Passed)
}
