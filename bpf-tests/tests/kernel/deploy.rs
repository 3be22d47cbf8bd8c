//! `deploy/`, validated offline: every manifest and every rendered overlay against
//! the Kubernetes schemas of 1.25 to 1.32; the alert rules with promtool (a firing
//! and a quiet case per alert); every metric the rules and the dashboard use is one
//! a live agent exports; the ConfigMap's nettune.toml passes the agent's own
//! validation. And run for real: the image `cargo xtask image` builds is the
//! Dockerfile's and runs under podman and containerd; the DaemonSet's container,
//! with the settings the rendered manifest gives it, runs under podman + runc
//! and does its job with those permissions only.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use bpf_tests::{
    agent_process::{AgentProcess, http_get, metric},
    command::output as run,
    containerd::{Containerd, PodSpec, nettune_image, require_containers},
    daemonset::{self, RunSpec},
    harness::{Outcome, Test, TestResult, require_root},
    host::{SharedRunNetns, TempDir, Tracefs},
    netns::{Netns, Veth},
    oci,
    podman::Podman,
    sockets::{connect_nonblocking, listener_with_backlog},
};

use crate::agent::{all_unloaded, loaded_ids, nettune_bin};

pub const TESTS: &[Test] = &[
    Test {
        name: "deploy::manifests_and_overlays_validate_for_kubernetes_1_25_to_1_32",
        run: manifests_and_overlays_validate,
    },
    Test {
        name: "deploy::alert_rules_pass_promtool_with_a_firing_and_a_quiet_case_each",
        run: alert_rules_pass_promtool,
    },
    Test {
        name: "deploy::rules_and_dashboard_use_only_metrics_the_agent_exports",
        run: rules_and_dashboard_use_only_exported_metrics,
    },
    Test {
        name: "deploy::configmap_configs_pass_the_agents_validation",
        run: configmap_configs_pass_validation,
    },
    Test {
        name: "deploy::the_image_is_the_dockerfiles_and_runs_under_podman_and_containerd",
        run: the_image_is_the_dockerfiles_and_runs_under_podman_and_containerd,
    },
    Test {
        name: "deploy::the_daemonsets_pod_runs_under_podman_with_the_manifests_settings",
        run: the_daemonsets_pod_runs_under_podman_with_the_manifests_settings,
    },
    Test {
        name: "deploy::without_mount_propagation_a_later_namespace_is_not_taken_for_its_empty_file",
        run: without_mount_propagation_a_later_namespace_is_not_taken_for_its_empty_file,
    },
];

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

const OVERLAYS: [&str; 4] = [
    "base",
    "overlays/privileged",
    "overlays/enforce",
    "overlays/no-prometheus-operator",
];

fn scratch(name: &str) -> anyhow::Result<TempDir> {
    TempDir::new(&format!("deploy-{name}"))
}

fn manifests_and_overlays_validate() -> TestResult {
    let validate = std::env::var_os("KUBERNETES_VALIDATE").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/tools/venv/bin/kubernetes-validate")
        },
        PathBuf::from,
    );
    ensure!(
        validate.exists(),
        "{} missing: run `cargo xtask setup`",
        validate.display()
    );
    let dir = scratch("validate")?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("base"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    for overlay in OVERLAYS {
        let rendered = run(Command::new("kubectl")
            .arg("kustomize")
            .arg(deploy_dir().join(overlay)))?;
        let file = dir.join(format!("{}.yaml", overlay.replace('/', "-")));
        std::fs::write(&file, rendered)?;
        files.push(file);
    }
    files.sort();
    for version in 25..=32 {
        let mut cmd = Command::new(&validate);
        cmd.args(["--strict", "-k", &format!("1.{version}.0")])
            .args(&files);
        run(&mut cmd).with_context(|| format!("Kubernetes 1.{version}"))?;
    }
    println!(
        "    {} files valid for Kubernetes 1.25 to 1.32",
        files.len()
    );
    Ok(Outcome::Passed)
}

/// The rule groups of deploy/base/prometheusrule.yaml as a Prometheus rules file.
fn rules_file() -> anyhow::Result<String> {
    let rule = std::fs::read_to_string(deploy_dir().join("base/prometheusrule.yaml"))?;
    let spec = rule
        .split_once("\nspec:\n")
        .context("no spec in the PrometheusRule")?
        .1;
    Ok(spec
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn alert_rules_pass_promtool() -> TestResult {
    let dir = scratch("rules")?;
    let rules = rules_file()?;
    std::fs::write(dir.join("rules.yaml"), &rules)?;
    let tests = std::fs::read_to_string(deploy_dir().join("tests/rules_test.yaml"))?;
    std::fs::write(dir.join("rules_test.yaml"), &tests)?;
    run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.join("rules.yaml")))?;
    run(Command::new("promtool")
        .args(["test", "rules"])
        .arg(dir.join("rules_test.yaml")))?;
    // Every alert has a case that fires it and a case that does not.
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    ensure!(alerts.len() >= 9, "only {} alerts", alerts.len());
    for alert in &alerts {
        let cases: Vec<&str> = tests
            .split(&format!("alertname: {alert}\n"))
            .skip(1)
            .map(str::trim_start)
            .collect();
        ensure!(
            cases.iter().any(|c| c.starts_with("exp_alerts: []")),
            "{alert}: no quiet case"
        );
        ensure!(
            cases.iter().any(|c| c.starts_with("exp_alerts:\n")),
            "{alert}: no firing case"
        );
    }
    println!(
        "    {} alerts, each with a firing and a quiet promtool case",
        alerts.len()
    );
    Ok(Outcome::Passed)
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("nettune_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

fn rules_and_dashboard_use_only_exported_metrics() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    // Advise mode, and a journal entry that leaves the value as it is, so that the
    // tuner's metrics exist without writing anything.
    let dir = scratch("live")?;
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")?;
    std::fs::write(
        state.join("journal.json"),
        format!(
            r#"{{"version":1,"entries":[{{"sysctl":"net.core.somaxconn","target":"node","original":"{}","last_written":null,"writes":[],"stood_down":false}}]}}"#,
            somaxconn.trim()
        ),
    )?;
    let config = dir.join("nettune.toml");
    std::fs::write(
        &config,
        format!(
            "[tuning]\nmode = \"advise\"\nstate_dir = \"{}\"\n",
            state.display()
        ),
    )?;
    let agent = AgentProcess::start(
        &nettune_bin()?,
        &[
            "--config",
            config.to_str().context("path")?,
            "--interval",
            "0.3",
        ],
    )?;
    // A listen overflow on the host: a decision (advised), and a drop.
    let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 5990);
    let _listener = listener_with_backlog(addr, 0)?;
    let _clients = (0..20)
        .map(|_| connect_nonblocking(addr))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let needed: BTreeSet<String> = metric_names(&rules_file()?)
        .union(&metric_names(&std::fs::read_to_string(
            deploy_dir().join("grafana/nettune-dashboard.json"),
        )?))
        .cloned()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let exported: BTreeSet<String> = agent
            .metrics()?
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        let missing: Vec<&String> = needed.difference(&exported).collect();
        if missing.is_empty() {
            println!(
                "    {} metrics used by rules and dashboard, all exported",
                needed.len()
            );
            break;
        }
        ensure!(Instant::now() < deadline, "never exported: {missing:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agent);
    Ok(Outcome::Passed)
}

fn configmap_configs_pass_validation() -> TestResult {
    for file in ["base/nettune.toml", "overlays/enforce/nettune.toml"] {
        let path = deploy_dir().join(file);
        let text = std::fs::read_to_string(&path)?;
        let config = nettune::config::Config::parse(&path.display().to_string(), &text)?;
        ensure!(
            config.agent.listen.port() == 9977,
            "{file}: the DaemonSet's probes use port 9977"
        );
        let expected = if file.contains("enforce") {
            "Enforce"
        } else {
            "Observe"
        };
        ensure!(
            format!("{:?}", config.tuning.mode) == expected,
            "{file}: mode {:?}",
            config.tuning.mode
        );
    }
    let rendered = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir().join("overlays/enforce")))?;
    ensure!(
        rendered.contains("mode = \"enforce\""),
        "the enforce overlay's ConfigMap is not in enforce mode"
    );
    Ok(Outcome::Passed)
}

/// What the Dockerfile's last stage says: (FROM, COPY source, COPY
/// destination, USER, ENTRYPOINT, CMD), the JSON forms as JSON.
fn dockerfile_image() -> anyhow::Result<[String; 6]> {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile"))?;
    let last = text
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| format!("FROM {stage}"))
        .context("no FROM in the Dockerfile")?;
    let value = |keyword: &str| {
        last.lines()
            .find_map(|l| l.strip_prefix(&format!("{keyword} ")))
            .map(str::trim)
            .with_context(|| format!("no {keyword} in the Dockerfile's last stage"))
    };
    let copy: Vec<&str> = value("COPY")?.split_whitespace().collect();
    let [_, source, destination] = copy.as_slice() else {
        bail!("COPY --from=build SOURCE DESTINATION expected, found {copy:?}");
    };
    Ok([
        value("FROM")?.to_owned(),
        (*source).to_owned(),
        (*destination).to_owned(),
        value("USER")?.to_owned(),
        value("ENTRYPOINT")?.to_owned(),
        value("CMD")?.to_owned(),
    ])
}

fn the_image_is_the_dockerfiles_and_runs_under_podman_and_containerd() -> TestResult {
    if let Some(skip) = require_containers(true) {
        return skip;
    }
    let archive = nettune_image()?;
    let image = oci::Archive::open(&archive)?;
    let [from, source, destination, user, entrypoint, cmd] = dockerfile_image()?;
    let config = image.config()?;
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text);
    ensure!(from == "scratch", "the Dockerfile's image is FROM {from}");
    ensure!(
        config["Entrypoint"] == json(&entrypoint)?,
        "entrypoint {} vs the Dockerfile's {entrypoint}",
        config["Entrypoint"]
    );
    ensure!(
        config["Cmd"] == json(&cmd)?,
        "command {} vs the Dockerfile's {cmd}",
        config["Cmd"]
    );
    ensure!(
        config["User"] == user.as_str(),
        "user {} vs the Dockerfile's {user}",
        config["User"]
    );
    // The build stage runs in /src (WORKDIR) with the checkout copied there.
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(
        source
            .strip_prefix("/src/")
            .context("COPY source outside /src")?,
    );
    let (root, files) = image.root()?;
    let files: Vec<&str> = files.iter().map(|f| f.trim_end_matches('/')).collect();
    ensure!(
        files == [destination.trim_start_matches('/')],
        "the image holds {files:?}, the Dockerfile's only {destination}"
    );
    ensure!(
        std::fs::read(root.join(destination.trim_start_matches('/')))? == std::fs::read(&built)?,
        "the image's {destination} is not {}",
        built.display()
    );
    println!(
        "    {}: {destination} = {source}, entrypoint {entrypoint}, cmd {cmd}, user {user}",
        image.name
    );

    // Loaded and run by both runtimes.
    let podman = Podman::new()?;
    let name = podman.load(&archive)?;
    let version = podman.checked(&["run", "--rm", "--network", "host", &name, "--version"])?;
    let containerd = Containerd::start()?;
    containerd.import(&archive)?;
    let from_ctr = containerd.ctr_run(&image.name, &["/nettune", "--version"])?;
    let expected = format!("nettune {}", env!("CARGO_PKG_VERSION"));
    println!("    podman: {version}; containerd: {}", from_ctr.trim());
    ensure!(
        version == expected && from_ctr.trim() == expected,
        "podman said {version:?}, containerd {from_ctr:?}"
    );
    Ok(Outcome::Passed)
}

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
struct DaemonSetPod<'a> {
    podman: &'a mut Podman,
    name: String,
    spec: RunSpec,
    /// `/metrics` and the probes: the manifest's port, on every address.
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
        let objects = daemonset::render(&deploy_dir().join("base"))?;
        let spec = RunSpec::from_objects(&objects, NODE)?;
        let image = podman.load(&nettune_image()?)?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], spec.readiness.port));
        let config_path = deploy_dir().join("base/nettune.toml");
        let api = nettune::config::Config::parse(
            &config_path.display().to_string(),
            &std::fs::read_to_string(&config_path)?,
        )?
        .agent
        .api_listen;
        ensure!(
            std::net::TcpListener::bind(("0.0.0.0", spec.readiness.port)).is_ok(),
            "port {} (the manifest's probes and Service) is taken on this machine",
            spec.readiness.port
        );
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
        while !matches!(http_get(addr, &pod.spec.readiness.path), Ok((200, _))) {
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

    fn metrics(&self) -> anyhow::Result<String> {
        match http_get(self.addr, "/metrics")? {
            (200, body) => Ok(body),
            (status, _) => bail!("/metrics answered {status}"),
        }
    }

    /// Polls `/metrics` until `done` holds (or `seconds` pass).
    fn until(&self, seconds: u64, what: &str, done: impl Fn(&str) -> bool) -> anyhow::Result<()> {
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

fn the_daemonsets_pod_runs_under_podman_with_the_manifests_settings() -> TestResult {
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
    let pid = pod.podman.pid(&pod.name)?;
    let mut wanted = 0u64;
    for cap in &spec.add {
        wanted |= 1 << daemonset::capability_bit(cap)?;
    }
    let ours = daemonset::capabilities(std::process::id(), "CapBnd")?;
    let effective = daemonset::capabilities(pid, "CapEff")?;
    ensure!(
        spec.drop == ["ALL"] && !spec.privileged,
        "the manifest must drop ALL and not be privileged"
    );
    ensure!(
        effective == wanted & ours,
        "CapEff {effective:#x}, expected {:#x} (the manifest's {:?} within this machine's {ours:#x})",
        wanted & ours,
        spec.add
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    ensure!(
        status.contains("NoNewPrivs:\t1"),
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
        matches!(http_get(pod.addr, &spec.liveness.path)?, (200, _)),
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
            && spec.annotations.get("prometheus.io/port") == Some(&spec.readiness.port.to_string())
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
/// entries that are not nsfs, says so once, and still joins the real namespace
/// to its veth.
fn without_mount_propagation_a_later_namespace_is_not_taken_for_its_empty_file() -> TestResult {
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
    let log = pod.podman.logs(&pod.name);
    ensure!(
        log.matches("entries that are not namespace mounts").count() == 1,
        "the skipped entries were not said once:\n{log}"
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
