//! Pods as a node has them: a real containerd (private socket and state, a
//! bridge CNI, the tests' pause image) makes pod sandboxes through CRI
//! `RunPodSandbox` with names, namespaces and annotations, and `nettune run`
//! names them from the runtime's CRI API.
//!
//! What is compared: the pods' traffic with their host-side veth's own
//! counters, their drops with what the test's loss program dropped, their
//! retransmits with their namespace's `RetransSegs` — all under the pods' real
//! `namespace/name`. Traffic goes only to the pods' addresses, bounded in bytes.

use std::{
    net::{SocketAddr, SocketAddrV4},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use bpf_tests::{
    agent_process::{AgentProcess, http_get, metric, series},
    containerd::{Containerd, Pod, PodSpec, require_containers},
    harness::{Outcome, Test, TestResult, require_root},
    host::TempDir,
    netns::{Netns, Veth},
    scenarios::{
        check_raised_there_only, check_retransmitted_segments, lossy_transfer, somaxconn,
        storm_until_raised,
    },
};
use xtask::process::output as run;

use crate::agent::nettune_bin;

pub const TESTS: &[Test] = &[
    Test {
        name: "pods::runtime_pods_are_named_with_their_traffic_drops_and_retransmits",
        run: runtime_pods_are_named_with_their_traffic_drops_and_retransmits,
    },
    Test {
        name: "pods::an_annotated_pod_is_tuned_in_its_own_namespace",
        run: an_annotated_pod_is_tuned_in_its_own_namespace,
    },
    Test {
        name: "pods::a_runtime_stopped_or_frozen_mid_run_leaves_collection_going_and_names_return",
        run: a_runtime_stopped_or_frozen_mid_run_leaves_collection_going_and_names_return,
    },
    Test {
        name: "pods::no_socket_or_permission_denied_is_one_warning_and_other_names_stay",
        run: no_socket_or_permission_denied_is_one_warning_and_other_names_stay,
    },
];

/// The Kubernetes namespace of the tests' pods.
const NAMESPACE: &str = "nt-cri";

/// A scratch directory with a config file (`{state}` in it: a state directory).
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new(tag: &str, config: &str) -> anyhow::Result<Self> {
        let dir = TempDir::new(&format!("pods-{tag}"))?;
        std::fs::create_dir_all(dir.join("state"))?;
        let config = config.replace("{state}", &dir.join("state").display().to_string());
        std::fs::write(dir.join("nettune.toml"), config)?;
        Ok(Self { dir })
    }

    fn config(&self) -> String {
        self.dir.join("nettune.toml").display().to_string()
    }
}

/// `[identity]` for the test's containerd, polled every 0.2 s.
fn identity(socket: &Path) -> String {
    format!(
        "[identity]\ncri_socket = \"{}\"\ncri_poll_seconds = 0.2\ncri_timeout_seconds = 0.5\n",
        socket.display()
    )
}

/// Starts `nettune run` (0.3 s ticks, logging) with `config`.
fn agent(scratch: &Scratch) -> anyhow::Result<AgentProcess> {
    AgentProcess::start_logged(
        &nettune_bin()?,
        &["--config", &scratch.config(), "--interval", "0.3"],
    )
}

/// A containerd, and `nettune run` naming pods from it (config: `config`, then
/// its `[identity]`). Dropped in reverse: the agent, its files, containerd.
fn runtime_and_agent(
    tag: &str,
    config: &str,
) -> anyhow::Result<(Containerd, Scratch, AgentProcess)> {
    let containerd = Containerd::start()?;
    let scratch = Scratch::new(tag, &format!("{config}{}", identity(&containerd.socket)))?;
    let agent = agent(&scratch)?;
    Ok((containerd, scratch, agent))
}

/// Polls `/metrics` until `done` returns `Some` (or `seconds` pass, then fails
/// with `what` and the last text).
fn until<T>(
    agent: &AgentProcess,
    seconds: u64,
    what: &str,
    mut done: impl FnMut(&str) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let text = agent.metrics()?;
        if let Some(found) = done(&text)? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            let ours: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.contains(NAMESPACE)
                        || l.starts_with("nettune_drops_total")
                        || l.starts_with("nettune_unattributed")
                })
                .collect();
            bail!(
                "{what}: not within {seconds} s; series of {NAMESPACE}:\n{}\nlog:\n{}",
                ours.join("\n"),
                agent.log().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of `name` for `pod` (by its real namespace and name).
fn of(text: &str, name: &str, pod: &Pod, more: &[(&str, &str)]) -> Option<f64> {
    let mut labels = vec![
        ("namespace", pod.namespace.as_str()),
        ("pod", pod.name.as_str()),
    ];
    labels.extend_from_slice(more);
    metric(text, name, &labels)
}

fn counter(path: &str) -> anyhow::Result<f64> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| path.to_owned())?
        .trim()
        .parse()?)
}

fn spec<'a>(name: &'a str, annotations: &'a [(&'a str, &'a str)]) -> PodSpec<'a> {
    PodSpec {
        name,
        namespace: NAMESPACE,
        annotations,
        host_network: false,
    }
}

fn runtime_pods_are_named_with_their_traffic_drops_and_retransmits() -> TestResult {
    if let Some(skip) = require_containers(false) {
        return skip;
    }
    let (mut containerd, _scratch, agent) = runtime_and_agent("named", "")?;
    let client = containerd.run_pod(&spec("client", &[]))?;
    let server = containerd.run_pod(&spec("server", &[]))?;
    let hidden = containerd.run_pod(&spec("hidden", &[("nettune.io/ignore", "true")]))?;
    let on_node = containerd.run_pod(&PodSpec {
        host_network: true,
        ..spec("on-node", &[])
    })?;
    let server_ip = server.ip.context("the server pod has no IP")?;
    let server_veth = server.host_veth.clone().context("no host veth")?;
    // The pod's volumes are its veth's own counters (turned around: what the
    // host side transmits, the pod receives), from its first packet on.
    let veth_tx = format!("/sys/class/net/{server_veth}/statistics/tx_bytes");
    let offset = until(&agent, 10, "the server's veth watched", |text| {
        let ours = of(text, "nettune_pod_receive_bytes_total", &server, &[]);
        let before = counter(&veth_tx)?;
        std::thread::sleep(Duration::from_millis(400));
        let again = of(
            &agent.metrics()?,
            "nettune_pod_receive_bytes_total",
            &server,
            &[],
        );
        Ok(match (ours, again) {
            (Some(a), Some(b)) if a == b && counter(&veth_tx)? == before => Some(before - a),
            _ => None,
        })
    })?;
    ensure!(
        offset == 0.0,
        "the server's received bytes are {offset} short of its veth's tx_bytes"
    );
    // 2 MiB from the client pod to the server pod, 5 % lost on the server's eth0.
    let dropped = lossy_transfer(
        client.netns()?,
        (server.netns()?, "eth0"),
        SocketAddr::from((server_ip, 5201)),
        2 << 20,
        500,
    )?;
    // Datagrams to a closed port of the ignored pod: drops there, none reported.
    let socket = client
        .netns()?
        .run(|| std::net::UdpSocket::bind("0.0.0.0:0"))??;
    let hidden_ip = hidden.ip.context("the ignored pod has no IP")?;
    for _ in 0..5 {
        socket.send_to(b"nettune", SocketAddr::from((hidden_ip, 9)))?;
    }
    let retrans_segs = u64::try_from(client.mib("snmp", "Tcp", "RetransSegs")?)?;
    let (received, tc_ingress, segments, failed) =
        until(&agent, 15, "the pods' figures under their names", |text| {
            let received = of(text, "nettune_pod_receive_bytes_total", &server, &[]);
            let tc_ingress = of(
                text,
                "nettune_drops_total",
                &server,
                &[("reason", "TC_INGRESS")],
            );
            let segments = of(text, "nettune_tcp_retransmit_segments_total", &client, &[]);
            let failed = of(text, "nettune_tcp_retransmit_failures_total", &client, &[]);
            let interface = counter(&veth_tx)? - offset;
            Ok(match (received, tc_ingress, segments, failed) {
                (Some(r), Some(d), Some(s), Some(f))
                    if r == interface && d >= dropped as f64 && s > 0.0 =>
                {
                    Some((r, d, s as u64, f as u64))
                }
                _ => None,
            })
        })?;
    println!(
        "    {NAMESPACE}/server received {received} B (its veth's tx_bytes), {tc_ingress} \
         TC_INGRESS drops (the loss program dropped {dropped}); {NAMESPACE}/client \
         retransmitted {segments} segments (RetransSegs {retrans_segs}, {failed} failed)"
    );
    ensure!(
        received >= f64::from(2u32 << 20),
        "less than the transfer reached the server"
    );
    ensure!(
        tc_ingress == dropped as f64,
        "TC_INGRESS drops {tc_ingress}, the loss program dropped {dropped}"
    );
    check_retransmitted_segments(segments, failed, retrans_segs)?;

    let text = agent.metrics()?;
    ensure!(
        metric(&text, "nettune_identity_source", &[("source", "cri")]) == Some(1.0),
        "the runtime source is not up"
    );
    ensure!(
        !text.contains("pod=\"hidden\"") && !text.contains("pod=\"on-node\""),
        "the ignored or the host-network pod has series"
    );
    let snapshot = agent.snapshot()?;
    let workloads = snapshot["workloads"].as_array().context("no workloads")?;
    let hidden_inode = hidden.inode()?;
    ensure!(
        workloads.iter().all(|w| w["netns"] != hidden_inode),
        "the ignored pod's namespace is tracked under another name"
    );
    ensure!(
        workloads
            .iter()
            .all(|w| w["interface"]["name"] != hidden.host_veth.as_deref().unwrap_or_default()),
        "the ignored pod's veth is watched"
    );
    // The live view shows the pods as namespace/name.
    let frame = run(Command::new(nettune_bin()?)
        .args(["top", "-b", "-n", "1", "--agent"])
        .arg(format!("http://{}", agent.addr))
        .env("COLUMNS", "120")
        .env("LINES", "20"))?;
    let rows: Vec<&str> = frame
        .lines()
        .filter(|l| l.contains(&format!("{NAMESPACE}/")))
        .collect();
    println!("    nettune top -b:\n{}", rows.join("\n"));
    ensure!(
        ["client", "server"].iter().all(|p| rows
            .iter()
            .any(|r| r.contains(&format!("{NAMESPACE}/{p} ")))),
        "nettune top does not show the pods as namespace/name:\n{frame}"
    );
    for line in text.lines().filter(|l| {
        l.contains(&format!("namespace=\"{NAMESPACE}\""))
            && (l.starts_with("nettune_drops_total")
                || l.starts_with("nettune_pod_receive_bytes_total")
                || l.starts_with("nettune_tcp_retransmit_segments_total"))
    }) {
        println!("    {line}");
    }
    let by_name = |name: &str| workloads.iter().find(|w| w["pod"] == name);
    ensure!(
        by_name("server")
            .is_some_and(|w| w["uid"] == server.uid.as_str() && w["namespace"] == NAMESPACE),
        "the server's UID is not in the JSON API"
    );
    ensure!(
        by_name("node").is_some() && by_name("on-node").is_none(),
        "the host-network pod is not the node"
    );
    drop(on_node);

    // The kubelet deletes the server pod: its series go with it.
    containerd.remove_pod(server)?;
    until(&agent, 10, "the removed pod's series to go", |text| {
        Ok(series(text, "nettune_tcp_out_segments_total")
            .all(|(labels, _)| !labels.iter().any(|(k, v)| k == "pod" && v == "server"))
            .then_some(()))
    })?;
    Ok(Outcome::Passed)
}

fn an_annotated_pod_is_tuned_in_its_own_namespace() -> TestResult {
    if let Some(skip) = require_containers(false) {
        return skip;
    }
    const CEILING: u64 = 8192;
    let (mut containerd, scratch, agent) = runtime_and_agent(
        "tune",
        &format!(
            "[tuning]\nmode = \"enforce\"\nstate_dir = \"{{state}}\"\n\
             [tuning.limits.\"net.core.somaxconn\"]\nceiling = {CEILING}\n"
        ),
    )?;
    let opted = containerd.run_pod(&spec("busy", &[("nettune.io/tune-netns", "true")]))?;
    let caller = containerd.run_pod(&spec("caller", &[]))?;
    until(&agent, 10, "the annotated pod named", |text| {
        Ok(of(text, "nettune_tcp_out_segments_total", &opted, &[]).map(drop))
    })?;
    let host_before = somaxconn(None)?;
    // A server asking for more than the pod's somaxconn: raising it is the fix.
    opted.netns()?.write_sysctl("net/core/somaxconn", "8")?;
    let original = somaxconn(Some(opted.netns()?))?;
    let addr = SocketAddrV4::new(opted.ip.context("no IP")?, 5810);
    let raised = storm_until_raised(opted.netns()?, caller.netns()?, addr, 4096, original)?;
    println!("    somaxconn in {NAMESPACE}/busy: {original} → {raised}; the node's {host_before}");
    check_raised_there_only(original, raised, CEILING, host_before)?;
    let pod = format!("{NAMESPACE}/busy");
    let tuning = agent.snapshot()?["tuning"].clone();
    ensure!(
        tuning["recent"].as_array().into_iter().flatten().any(|d| {
            d["sysctl"] == "net.core.somaxconn"
                && d["result"] == "applied"
                && d["target"]["netns"]["label"] == pod.as_str()
        }),
        "no applied somaxconn decision names {pod}: {}",
        tuning["recent"]
    );
    drop(agent);
    let out = Command::new(nettune_bin()?)
        .args(["--config", &scratch.config(), "rollback"])
        .output()?;
    ensure!(out.status.success(), "rollback failed: {out:?}");
    ensure!(
        somaxconn(Some(opted.netns()?))? == original,
        "rollback did not restore {original}"
    );
    Ok(Outcome::Passed)
}

/// The container runtime as a source of names, from the JSON API.
fn runtime_source(agent: &AgentProcess) -> anyhow::Result<serde_json::Value> {
    agent.snapshot()?["identity_sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["source"] == "cri")
        .cloned()
        .context("no cri source in the JSON API")
}

/// How many outages of the runtime the agent counted (each one warning).
fn outages(agent: &AgentProcess) -> anyhow::Result<u64> {
    runtime_source(agent)?["outages"]
        .as_u64()
        .context("no outages in the cri source")
}

fn source_is(text: &str, up: bool) -> Option<()> {
    let value = if up { 1.0 } else { 0.0 };
    (metric(text, "nettune_identity_source", &[("source", "cri")]) == Some(value)).then_some(())
}

fn a_runtime_stopped_or_frozen_mid_run_leaves_collection_going_and_names_return() -> TestResult {
    if let Some(skip) = require_containers(false) {
        return skip;
    }
    let (mut containerd, _scratch, agent) = runtime_and_agent("restart", "")?;
    let before = containerd.run_pod(&spec("before", &[]))?;
    until(&agent, 10, "the first pod named", |text| {
        Ok(of(text, "nettune_tcp_out_segments_total", &before, &[]).map(drop))
    })?;

    // The runtime stops (a containerd upgrade): one warning, the gauge drops.
    containerd.stop()?;
    until(&agent, 10, "the runtime reported down", |text| {
        Ok(source_is(text, false))
    })?;
    // Collection goes on: the known pod keeps its name and its traffic counts,
    // and a namespace made meanwhile is named by the other sources.
    let received_before = of(
        &agent.metrics()?,
        "nettune_pod_receive_bytes_total",
        &before,
        &[],
    )
    .context("no traffic series for the pod")?;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    for _ in 0..5 {
        socket.send_to(
            b"nettune",
            SocketAddr::from((before.ip.context("no IP")?, 9)),
        )?;
    }
    let meanwhile = Netns::new("cri")?;
    let _veth = Veth::to_host(&meanwhile, 61)?;
    let fallback = format!("netns:{}", meanwhile.name());
    until(
        &agent,
        10,
        "collection going on while the runtime is down",
        |text| {
            let counted = of(text, "nettune_pod_receive_bytes_total", &before, &[])
                .is_some_and(|r| r > received_before);
            let other = metric(
                text,
                "nettune_tcp_out_segments_total",
                &[("pod", &fallback)],
            );
            Ok((counted && other.is_some()).then_some(()))
        },
    )?;
    ensure!(
        outages(&agent)? == 1,
        "{} outages counted for one",
        outages(&agent)?
    );

    // It comes back: the gauge rises, a pod made now is named.
    containerd.restart()?;
    until(&agent, 10, "the runtime reported up again", |text| {
        Ok(source_is(text, true))
    })?;
    let after = containerd.run_pod(&spec("after", &[]))?;
    until(&agent, 10, "a pod made after the restart named", |text| {
        Ok(of(text, "nettune_tcp_out_segments_total", &after, &[]).map(drop))
    })?;

    // Frozen (accepts connections, never answers): calls time out, ticks go on.
    containerd.freeze(true);
    let frozen = (|| -> anyhow::Result<(f64, f64)> {
        until(&agent, 10, "the frozen runtime reported down", |text| {
            Ok(source_is(text, false))
        })?;
        let first = agent.snapshot()?["taken_at_unix_seconds"]
            .as_f64()
            .unwrap_or(0.0);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = agent.snapshot()?["taken_at_unix_seconds"]
                .as_f64()
                .unwrap_or(0.0);
            if now > first {
                return Ok((first, now));
            }
            ensure!(
                Instant::now() < deadline,
                "no collection while the runtime is frozen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })();
    containerd.freeze(false);
    let (first, next) = frozen?;
    ensure!(
        matches!(http_get(agent.addr, "/healthz")?, (200, _)),
        "/healthz failed after a frozen runtime"
    );
    until(&agent, 10, "the thawed runtime reported up", |text| {
        Ok(source_is(text, true))
    })?;
    let counted = outages(&agent)?;
    println!(
        "    {counted} outages counted for two; snapshots went on while frozen ({first:.1} → {next:.1})"
    );
    ensure!(counted == 2, "{counted} outages counted for two");
    Ok(Outcome::Passed)
}

fn no_socket_or_permission_denied_is_one_warning_and_other_names_stay() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let scratch = Scratch::new("nosocket", "")?;
    // No runtime at the configured socket.
    let missing = scratch.dir.join("missing.sock");
    std::fs::write(scratch.dir.join("nettune.toml"), identity(&missing))?;
    // A socket the agent may not open: mode 000, and no CAP_DAC_OVERRIDE.
    let denied = scratch.dir.join("denied.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&denied)?;
    std::fs::set_permissions(&denied, std::os::unix::fs::PermissionsExt::from_mode(0o000))?;
    std::fs::write(scratch.dir.join("denied.toml"), identity(&denied))?;
    let named = Netns::new("cri")?;
    let _veth = Veth::to_host(&named, 62)?;
    let fallback = format!("netns:{}", named.name());
    for (config, reason) in [
        ("nettune.toml", "No such file or directory"),
        ("denied.toml", "Permission denied"),
    ] {
        let config = scratch.dir.join(config).display().to_string();
        let mut command = Command::new("setpriv");
        command
            .args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
            .arg(nettune_bin()?);
        let agent =
            AgentProcess::start_logged_with(command, &["--config", &config, "--interval", "0.3"])?;
        until(
            &agent,
            10,
            "the runtime reported down, other names kept",
            |text| {
                let other = metric(
                    text,
                    "nettune_tcp_out_segments_total",
                    &[("pod", &fallback)],
                );
                Ok((source_is(text, false).is_some() && other.is_some()).then_some(()))
            },
        )?;
        // Several polls later, still one outage, naming the socket and why.
        std::thread::sleep(Duration::from_secs(1));
        let source = runtime_source(&agent)?;
        let detail = source["detail"].as_str().unwrap_or_default();
        println!("    outages {}: {detail}", source["outages"]);
        ensure!(
            source["outages"] == 1,
            "{} outages counted for one: {source}",
            source["outages"]
        );
        ensure!(
            detail.contains(reason) && detail.contains(&scratch.dir.path().display().to_string()),
            "the API does not say {reason:?} and name the socket: {detail}"
        );
    }
    Ok(Outcome::Passed)
}
