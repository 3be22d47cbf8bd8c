//! The DaemonSet's container, with the settings the rendered manifest gives it,
//! run under podman + runc: it does its job with those permissions only.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use bpf_tests::{
    agent_process::{http_get, metric},
    containerd::{Containerd, PodSpec, nettune_image, require_containers},
    daemonset::{self, RunSpec},
    harness::{Outcome, TestResult},
    host::{SharedRunNetns, Tracefs},
    netns::{Netns, Veth},
    podman::Podman,
};
use xtask::process::output as run;

use crate::agent::{all_unloaded, loaded_ids, nettune_bin};

use super::files::{deploy_dir, scratch};

/// Fails if a workload's namespace is none of the node's (found through
/// processes and the namespace mounts under /run/netns): e.g. the disk inode of
/// an empty file taken for a namespace.
fn no_phantoms(workloads: &[serde_json::Value]) -> anyhow::Result<()> {
    let real: BTreeSet<u32> = nettune::sys::netns::discover().into_keys().collect();
    let phantoms: Vec<&serde_json::Value> = workloads
        .iter()
        .filter(|w| {
            w["netns"]
                .as_u64()
                .is_none_or(|i| u32::try_from(i).is_ok_and(|i| !real.contains(&i)))
        })
        .collect();
    ensure!(
        phantoms.is_empty(),
        "workloads of no namespace on the node: {phantoms:?}"
    );
    Ok(())
}

/// The workloads of `/api/v1/snapshot` at `addr`.
fn workloads(addr: std::net::SocketAddr) -> anyhow::Result<Vec<serde_json::Value>> {
    let (status, body) = http_get(addr, "/api/v1/snapshot")?;
    ensure!(status == 200, "/api/v1/snapshot answered {status}");
    let snapshot: serde_json::Value = serde_json::from_str(&body)?;
    Ok(snapshot["workloads"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The DaemonSet's container, started under `podman` with the manifest's
/// settings (image: `image`; the node's paths from `host`).
pub(super) struct DaemonSetPod<'a> {
    pub(super) podman: &'a mut Podman,
    pub(super) name: String,
    pub(super) spec: RunSpec,
    /// `/metrics`: the manifest's `metrics` port, on every address.
    addr: std::net::SocketAddr,
    /// The JSON API: the ConfigMap's `agent.api_listen` (loopback; the pod
    /// shares the node's network).
    api: std::net::SocketAddr,
}

/// The node name the test's Downward API gives the pod.
const NODE: &str = "nettune-test-node";

impl<'a> DaemonSetPod<'a> {
    fn start(
        podman: &'a mut Podman,
        name: &str,
        files: &std::path::Path,
        host: &dyn Fn(&str) -> PathBuf,
    ) -> anyhow::Result<Self> {
        Self::start_overlay(podman, name, "base", "", files, host)
    }

    /// The container of `deploy/<overlay>`, its ConfigMap's `nettune.toml` with
    /// `tuning` (more `[tuning]` keys, a line each) added.
    pub(super) fn start_overlay(
        podman: &'a mut Podman,
        name: &str,
        overlay: &str,
        tuning: &str,
        files: &std::path::Path,
        host: &dyn Fn(&str) -> PathBuf,
    ) -> anyhow::Result<Self> {
        let objects = daemonset::render(&deploy_dir().join(overlay))?;
        let mut spec = RunSpec::from_objects(&objects, NODE)?;
        let config = spec
            .mounts
            .iter_mut()
            .find_map(|m| m.config_map.as_mut()?.get_mut("nettune.toml"))
            .context("no ConfigMap mount with nettune.toml")?;
        ensure!(
            config.contains("[tuning]\n"),
            "no [tuning] table in nettune.toml"
        );
        *config = config.replacen("[tuning]\n", &format!("[tuning]\n{tuning}"), 1);
        let config = config.clone();
        let image = podman.load(&nettune_image()?)?;
        let metrics_port = *spec
            .ports
            .get("metrics")
            .context("the container has no port named metrics")?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port));
        let api = nettune::config::Config::parse(&format!("{overlay}'s nettune.toml"), &config)?
            .agent
            .api_listen;
        for (port, what) in [(metrics_port, "the Service"), (api.port(), "the probes")] {
            ensure!(
                std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
                "port {port} (the manifest's {what}) is taken on this machine",
            );
        }
        let args = spec.podman_args(&image, files, host)?;
        podman.start(name, &args)?;
        let pod = Self {
            podman,
            name: name.to_owned(),
            spec,
            addr,
            api,
        };
        // Ready as the kubelet's readiness probe sees it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(
            http_get(pod.spec.readiness.addr(), &pod.spec.readiness.path),
            Ok((200, _))
        ) {
            ensure!(
                Instant::now() < deadline,
                "{} did not answer 200 within 30 s; log:\n{}",
                pod.spec.readiness.path,
                pod.podman.logs(name)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(pod)
    }

    /// The container's effective capabilities, the manifest's within what this
    /// machine itself may grant (what they should be), and whether
    /// no_new_privs is set.
    pub(super) fn permissions(&self) -> anyhow::Result<(u64, u64, bool)> {
        let pid = self.podman.pid(&self.name)?;
        let mut wanted = 0u64;
        for cap in &self.spec.add {
            wanted |= 1 << daemonset::capability_bit(cap)?;
        }
        let ours = daemonset::capabilities(std::process::id(), "CapBnd")?;
        let effective = daemonset::capabilities(pid, "CapEff")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        Ok((effective, wanted & ours, status.contains("NoNewPrivs:\t1")))
    }

    fn metrics(&self) -> anyhow::Result<String> {
        match http_get(self.addr, "/metrics")? {
            (200, body) => Ok(body),
            (status, _) => bail!("/metrics answered {status}"),
        }
    }

    /// Polls `/metrics` until `done` holds (or `seconds` pass).
    pub(super) fn until(
        &self,
        seconds: u64,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if done(&self.metrics()?) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{what}: not within {seconds} s; log:\n{}",
                self.podman.logs(&self.name)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

pub fn the_daemonsets_pod_runs_under_podman_with_the_manifests_settings() -> TestResult {
    if let Some(skip) = require_containers(true) {
        return skip;
    }
    let _tracefs = Tracefs::ensure()?;
    let _shared = SharedRunNetns::ensure()?;
    let dir = scratch("daemonset")?;
    let mut containerd = Containerd::start()?;
    let mut podman = Podman::new()?;
    // The test's node keeps the tuner's journal and the runtime's directory
    // (with containerd.sock in it) in private places.
    let (state, runtime) = (dir.join("state"), containerd.dir().to_path_buf());
    std::fs::create_dir_all(&state)?;
    let host = move |path: &str| match path {
        "/var/lib/nettune" => state.clone(),
        "/run/containerd" => runtime.clone(),
        other => PathBuf::from(other),
    };
    let native = run(Command::new(nettune_bin()?).args(["probes", "--json"]))?;
    let (programs_before, links_before) = loaded_ids()?;
    let pod = DaemonSetPod::start(&mut podman, "nettune-ds", &dir.join("files"), &host)?;
    let spec = pod.spec.clone();

    // The named capabilities only (less what this sandbox itself lacks), no new
    // privileges, and every signal attached as it does for root.
    let (effective, expected, no_new_privs) = pod.permissions()?;
    ensure!(
        spec.drop == ["ALL"] && !spec.privileged,
        "the manifest must drop ALL and not be privileged"
    );
    ensure!(
        effective == expected,
        "CapEff {effective:#x}, expected {expected:#x} (the manifest's {:?} within this machine's)",
        spec.add
    );
    ensure!(
        no_new_privs,
        "no_new_privs is not set (allowPrivilegeEscalation: false)"
    );
    // The public address serves metrics and health only; the API is on loopback.
    ensure!(
        matches!(http_get(pod.addr, "/api/v1/snapshot")?, (404, _)),
        "the JSON API answers on the public address"
    );
    let (code, body) = http_get(pod.api, "/api/v1/snapshot")?;
    ensure!(code == 200, "/api/v1/snapshot answered {code}");
    let snapshot: serde_json::Value = serde_json::from_str(&body)?;
    let native: serde_json::Value = serde_json::from_str(&native)?;
    let attached = |report: &serde_json::Value| -> Vec<(String, String)> {
        report["signals"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| (s["signal"].to_string(), s["attached"].to_string()))
            .collect()
    };
    ensure!(
        attached(&snapshot["probes"])
            .iter()
            .all(|(_, v)| v != "null"),
        "a signal did not attach in the container: {}",
        snapshot["probes"]
    );
    ensure!(
        attached(&snapshot["probes"]) == attached(&native),
        "the container attached {:?}, root outside {:?}",
        attached(&snapshot["probes"]),
        attached(&native)
    );
    ensure!(
        snapshot["node"] == NODE,
        "node name {} (Downward API)",
        snapshot["node"]
    );
    println!(
        "    CapEff {effective:#x} ({:?}, SYS_RESOURCE only where grantable), NoNewPrivs; \
         every signal attached as for root",
        spec.add
    );

    // The probes and the Service: liveness, readiness, and /metrics on the port
    // the Service targets and the scrape annotations name.
    ensure!(
        matches!(
            http_get(spec.liveness.addr(), &spec.liveness.path)?,
            (200, _)
        ),
        "liveness {} failed",
        spec.liveness.path
    );
    let objects = daemonset::render(&deploy_dir().join("base"))?;
    let service = objects
        .iter()
        .find(|o| o["kind"] == "Service")
        .context("no Service")?;
    ensure!(
        service["spec"]["ports"][0]["targetPort"] == "metrics"
            && spec.annotations.get("prometheus.io/port") == Some(&pod.addr.port().to_string())
            && spec
                .annotations
                .get("prometheus.io/path")
                .map(String::as_str)
                == Some("/metrics"),
        "the Service and scrape annotations do not point at the metrics port"
    );
    ensure!(
        pod.metrics()?.contains("nettune_build_info{"),
        "/metrics does not answer with nettune's metrics"
    );

    // Pods the runtime makes after the agent started: named, with their
    // traffic; a namespace mounted later (no process in it): seen through the
    // HostToContainer mount of /run/netns, with its traffic too.
    let web = containerd.run_pod(&PodSpec {
        name: "web",
        namespace: "nt-ds",
        ..PodSpec::default()
    })?;
    let later = Netns::new("ds")?;
    let _veth = Veth::to_host(&later, 63)?;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    for target in [web.ip.context("no IP")?, _veth.veth.b_addr] {
        for _ in 0..3 {
            socket.send_to(b"nettune", std::net::SocketAddr::from((target, 9)))?;
        }
    }
    let later_name = format!("netns:{}", later.name());
    pod.until(
        15,
        "the pod and the later namespace with their traffic",
        |text| {
            metric(
                text,
                "nettune_pod_receive_bytes_total",
                &[("namespace", "nt-ds"), ("pod", "web")],
            )
            .is_some_and(|b| b > 0.0)
                && metric(
                    text,
                    "nettune_pod_receive_bytes_total",
                    &[("pod", &later_name)],
                )
                .is_some_and(|b| b > 0.0)
        },
    )?;
    no_phantoms(&workloads(pod.api)?)?;

    // The runtime restarts (a new socket in the mounted directory): names return.
    containerd.stop()?;
    pod.until(10, "the runtime reported down", |text| {
        metric(text, "nettune_identity_source", &[("source", "cri")]) == Some(0.0)
    })?;
    containerd.restart()?;
    let api = containerd.run_pod(&PodSpec {
        name: "api",
        namespace: "nt-ds",
        ..PodSpec::default()
    })?;
    pod.until(15, "a pod made after the runtime's restart named", |text| {
        metric(
            text,
            "nettune_tcp_out_segments_total",
            &[("namespace", "nt-ds"), ("pod", &api.name)],
        )
        .is_some()
    })?;

    // SIGTERM, as the kubelet sends it: the agent exits 0 within the grace period
    // and leaves none of its programs or links behind.
    let (programs_running, links_running) = loaded_ids()?;
    let programs: Vec<&u32> = programs_running.difference(&programs_before).collect();
    let links: Vec<&u32> = links_running.difference(&links_before).collect();
    ensure!(
        !programs.is_empty() && !links.is_empty(),
        "nothing was attached"
    );
    let grace = Duration::from_secs(spec.grace_seconds);
    let (code, took) = pod.podman.stop(&pod.name, grace)?;
    println!(
        "    SIGTERM: exit {code} after {:.1} s (grace {} s)",
        took.as_secs_f64(),
        spec.grace_seconds
    );
    ensure!(
        code == 0,
        "exit code {code} (137: killed after the grace period)"
    );
    all_unloaded(&programs, &links)?;
    drop(web);
    Ok(Outcome::Passed)
}

/// A process living in `ns` (like a pod's pause), killed on drop.
struct Resident(std::process::Child);

impl Resident {
    fn start(ns: &Netns) -> anyhow::Result<Self> {
        Ok(Self(
            Command::new("ip")
                .args(["netns", "exec", ns.name(), "sleep", "120"])
                .spawn()?,
        ))
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// On a node whose `/run/netns` is not a shared mount, a container's view of it
/// gets no later mounts: a namespace created after the agent started is, in
/// there, the empty file it is mounted on. The agent used to take that file's
/// disk inode for a namespace: a phantom workload under the namespace's name,
/// while the real one (found through its process) lost its name. It now skips
/// entries that are not nsfs, says so (`run_netns_unpropagated` in its JSON
/// API, a warning once in its log), and still joins the real namespace
/// to its veth.
pub fn without_mount_propagation_a_later_namespace_is_not_taken_for_its_empty_file() -> TestResult {
    if let Some(skip) = require_containers(true) {
        return skip;
    }
    let _tracefs = Tracefs::ensure()?;
    let dir = scratch("propagation")?;
    // The node's /run/netns: a plain directory (not a shared mount).
    let node_netns = dir.join("run-netns");
    std::fs::create_dir_all(&node_netns)?;
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    let runtime = dir.join("no-runtime");
    std::fs::create_dir_all(&runtime)?;
    let (netns_dir, state_dir) = (node_netns.clone(), state.clone());
    let host = move |path: &str| match path {
        "/run/netns" => netns_dir.clone(),
        "/var/lib/nettune" => state_dir.clone(),
        "/run/containerd" => runtime.clone(),
        other => PathBuf::from(other),
    };
    let mut podman = Podman::new()?;
    let pod = DaemonSetPod::start(&mut podman, "nettune-prop", &dir.join("files"), &host)?;
    // After the start: a namespace with a process in it and a veth to the host,
    // mounted in the node's /run/netns as `ip netns add` does.
    let later = Netns::new("prop")?;
    let _veth = Veth::to_host(&later, 64)?;
    let _resident = Resident::start(&later)?;
    let file = node_netns.join(later.name());
    std::fs::write(&file, "")?;
    let _bound = BindMount::new(&later.path(), &file)?;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    for _ in 0..3 {
        socket.send_to(
            b"nettune",
            std::net::SocketAddr::from((_veth.veth.b_addr, 9)),
        )?;
    }
    let inode = later.inode()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let workloads = loop {
        let found = workloads(pod.api)?;
        let joined = found
            .iter()
            .any(|w| w["netns"] == inode && w["interface"]["name"] == _veth.veth.a_name.as_str());
        if joined {
            break found;
        }
        ensure!(
            Instant::now() < deadline,
            "the namespace's veth was never joined to it; workloads {found:?}; log:\n{}",
            pod.podman.logs(&pod.name)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    no_phantoms(&workloads)?;
    let (_, snapshot) = http_get(pod.api, "/api/v1/snapshot")?;
    let snapshot: serde_json::Value = serde_json::from_str(&snapshot)?;
    ensure!(
        snapshot["run_netns_unpropagated"] == true,
        "the API does not say /run/netns lacks the node's later mounts: {}",
        snapshot["run_netns_unpropagated"]
    );
    Ok(Outcome::Passed)
}

/// `mount --bind from to`, unmounted on drop.
struct BindMount(PathBuf);

impl BindMount {
    fn new(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<Self> {
        run(Command::new("mount").arg("--bind").arg(from).arg(to))?;
        Ok(Self(to.to_path_buf()))
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        bpf_tests::host::unmount(&self.0);
    }
}
