//! The DaemonSet's container as a container runtime would run it, derived from
//! the rendered manifests (`kubectl kustomize deploy/base`): capabilities,
//! securityContext, host network and PID, every volume mount with its
//! propagation, env, args, resources, probes and ports — turned into the
//! arguments of `podman run`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use xtask::process::output;

/// Every object `kubectl kustomize dir` renders, as JSON (`kubectl patch
/// --local` converts offline).
pub fn render(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let yaml = output(Command::new("kubectl").arg("kustomize").arg(dir))?;
    let mut patch = Command::new("kubectl")
        .args([
            "patch", "--local", "-p", "{}", "--type", "merge", "-o", "json", "-f", "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl patch --local")?;
    std::io::Write::write_all(&mut patch.stdin.take().context("stdin")?, yaml.as_bytes())?;
    let out = patch.wait_with_output()?;
    ensure!(
        out.status.success(),
        "kubectl patch --local: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .map(|v| v.context("kubectl's JSON"))
        .collect()
}

/// One volume mount of the container, resolved to its volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The volume's name.
    pub name: String,
    /// Where the container sees it.
    pub path: String,
    /// `readOnly`.
    pub read_only: bool,
    /// `mountPropagation` (`None`, `HostToContainer`, `Bidirectional`).
    pub propagation: String,
    /// The node's path for a `hostPath` volume.
    pub host_path: Option<String>,
    /// The files of a `configMap` volume.
    pub config_map: Option<BTreeMap<String, String>>,
}

/// An HTTP probe: its host, path and port number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    /// `host`: the address the kubelet connects to (the pod's IP, the node's
    /// for a host-network pod, when absent).
    pub host: Option<std::net::IpAddr>,
    /// The path, e.g. `/readyz`.
    pub path: String,
    /// The port number (named ports resolved).
    pub port: u16,
}

impl HttpProbe {
    /// Where a host-network pod's probe lands, seen from the node itself
    /// (loopback when the manifest names no host).
    pub fn addr(&self) -> std::net::SocketAddr {
        let host = self
            .host
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        std::net::SocketAddr::new(host, self.port)
    }
}

/// The DaemonSet's container, as the manifests say.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Image name in the manifest (a test replaces it with the image it built).
    pub image: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment; `fieldRef: spec.nodeName` becomes `node`.
    pub env: Vec<(String, String)>,
    /// `capabilities.drop`.
    pub drop: Vec<String>,
    /// `capabilities.add`.
    pub add: Vec<String>,
    /// `privileged`.
    pub privileged: bool,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// `allowPrivilegeEscalation`.
    pub privilege_escalation: bool,
    /// `runAsUser`.
    pub user: Option<u64>,
    /// `hostNetwork`, `hostPID`.
    pub host_network: bool,
    /// `hostPID`.
    pub host_pid: bool,
    /// Volume mounts.
    pub mounts: Vec<Mount>,
    /// The container's named ports (`ports[].name` → `containerPort`).
    pub ports: BTreeMap<String, u16>,
    /// `livenessProbe.httpGet`.
    pub liveness: HttpProbe,
    /// `readinessProbe.httpGet`.
    pub readiness: HttpProbe,
    /// `resources.limits.memory`, as given (e.g. `256Mi`).
    pub memory_limit: Option<String>,
    /// `resources.limits.cpu`, as given (e.g. `500m`).
    pub cpu_limit: Option<String>,
    /// `terminationGracePeriodSeconds` (30 when absent, as Kubernetes has it).
    pub grace_seconds: u64,
    /// The pod template's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// The items of a JSON array (none when `v` is not one).
fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn strings(v: &Value) -> Vec<String> {
    items(v)
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

impl RunSpec {
    /// The container of the DaemonSet named `name` in `objects`.
    pub fn from_objects(objects: &[Value], node: &str) -> anyhow::Result<Self> {
        let daemonset = objects
            .iter()
            .find(|o| o["kind"] == "DaemonSet")
            .context("no DaemonSet in the manifests")?;
        let pod = &daemonset["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().context("no containers")?;
        ensure!(
            containers.len() == 1,
            "expected one container, found {}",
            containers.len()
        );
        let c = &containers[0];
        let ports: BTreeMap<String, u16> = items(&c["ports"])
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_owned(),
                    u16::try_from(p["containerPort"].as_u64()?).ok()?,
                ))
            })
            .collect();
        let probe = |which: &str| -> anyhow::Result<HttpProbe> {
            let get = &c[which]["httpGet"];
            let port = match &get["port"] {
                Value::String(name) => *ports
                    .get(name)
                    .with_context(|| format!("{which}: no port named {name}"))?,
                n => u16::try_from(n.as_u64().context("probe port")?)?,
            };
            let host = match get["host"].as_str() {
                Some(h) => Some(
                    h.parse()
                        .with_context(|| format!("{which}: host {h:?} is not an address"))?,
                ),
                None => None,
            };
            Ok(HttpProbe {
                host,
                path: get["path"].as_str().context("probe path")?.to_owned(),
                port,
            })
        };
        let env = items(&c["env"])
            .map(|e| {
                let name = e["name"].as_str().unwrap_or_default().to_owned();
                let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                    (Value::String(v), _) => v.clone(),
                    (_, Value::String(f)) if f == "spec.nodeName" => node.to_owned(),
                    (_, other) => bail!("env {name}: unsupported source {other}"),
                };
                Ok((name, value))
            })
            .collect::<anyhow::Result<_>>()?;
        let volumes: BTreeMap<&str, &Value> = items(&pod["volumes"])
            .filter_map(|v| Some((v["name"].as_str()?, v)))
            .collect();
        let mounts = items(&c["volumeMounts"])
            .map(|m| {
                let name = m["name"].as_str().unwrap_or_default().to_owned();
                let volume = volumes
                    .get(name.as_str())
                    .with_context(|| format!("mount {name}: no such volume"))?;
                let config_map = match volume["configMap"]["name"].as_str() {
                    Some(cm) => Some(
                        objects
                            .iter()
                            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == cm)
                            .with_context(|| format!("no ConfigMap {cm}"))?["data"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect(),
                    ),
                    None => None,
                };
                let host_path = volume["hostPath"]["path"].as_str().map(str::to_owned);
                ensure!(
                    host_path.is_some() || config_map.is_some(),
                    "mount {name}: only hostPath and configMap volumes are run here"
                );
                Ok(Mount {
                    path: m["mountPath"].as_str().unwrap_or_default().to_owned(),
                    read_only: m["readOnly"].as_bool().unwrap_or(false),
                    propagation: m["mountPropagation"].as_str().unwrap_or("None").to_owned(),
                    host_path,
                    config_map,
                    name,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let security = &c["securityContext"];
        Ok(Self {
            image: c["image"].as_str().unwrap_or_default().to_owned(),
            args: strings(&c["args"]),
            env,
            drop: strings(&security["capabilities"]["drop"]),
            add: strings(&security["capabilities"]["add"]),
            privileged: security["privileged"].as_bool().unwrap_or(false),
            read_only_root: security["readOnlyRootFilesystem"]
                .as_bool()
                .unwrap_or(false),
            privilege_escalation: security["allowPrivilegeEscalation"]
                .as_bool()
                .unwrap_or(true),
            user: security["runAsUser"].as_u64(),
            host_network: pod["hostNetwork"].as_bool().unwrap_or(false),
            host_pid: pod["hostPID"].as_bool().unwrap_or(false),
            mounts,
            liveness: probe("livenessProbe")?,
            ports: ports.clone(),
            readiness: probe("readinessProbe")?,
            memory_limit: c["resources"]["limits"]["memory"]
                .as_str()
                .map(str::to_owned),
            cpu_limit: c["resources"]["limits"]["cpu"].as_str().map(str::to_owned),
            grace_seconds: pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
            annotations: daemonset["spec"]["template"]["metadata"]["annotations"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
        })
    }

    /// The arguments of `podman run` (after `run -d --name`) for this
    /// container with `image`: configMap volumes are written under `files`,
    /// and `host` gives the node's path for each hostPath (the tests' node
    /// keeps some of them in private directories).
    pub fn podman_args(
        &self,
        image: &str,
        files: &Path,
        host: &dyn Fn(&str) -> PathBuf,
    ) -> anyhow::Result<Vec<String>> {
        ensure!(!self.privileged, "the container is privileged");
        let mut args: Vec<String> = Vec::new();
        let mut push = |a: &str, b: String| {
            args.push(a.to_owned());
            args.push(b);
        };
        for cap in &self.drop {
            push("--cap-drop", cap.clone());
        }
        for cap in &self.add {
            push("--cap-add", cap.clone());
        }
        if self.host_network {
            push("--network", "host".into());
        } else {
            bail!("podman runs here with host network only");
        }
        if self.host_pid {
            push("--pid", "host".into());
        }
        if let Some(user) = self.user {
            push("--user", user.to_string());
        }
        if !self.privilege_escalation {
            push("--security-opt", "no-new-privileges".into());
        }
        if let Some(memory) = &self.memory_limit {
            push("--memory", quantity_bytes(memory)?.to_string());
        }
        if let Some(cpu) = &self.cpu_limit {
            push("--cpus", cpus(cpu)?);
        }
        for (k, v) in &self.env {
            push("--env", format!("{k}={v}"));
        }
        for m in &self.mounts {
            let source = match (&m.host_path, &m.config_map) {
                (Some(path), _) => host(path),
                (None, Some(data)) => {
                    let dir = files.join(&m.name);
                    std::fs::create_dir_all(&dir)?;
                    for (file, text) in data {
                        std::fs::write(dir.join(file), text)?;
                    }
                    dir
                }
                (None, None) => bail!("mount {}: no source", m.name),
            };
            let propagation = match m.propagation.as_str() {
                "None" => "rprivate",
                "HostToContainer" => "rslave",
                "Bidirectional" => "rshared",
                other => bail!("mount {}: mountPropagation {other}", m.name),
            };
            let mode = if m.read_only { "ro" } else { "rw" };
            push(
                "--volume",
                format!("{}:{}:{mode},{propagation}", source.display(), m.path),
            );
        }
        if self.read_only_root {
            args.push("--read-only".into());
        }
        args.push(image.to_owned());
        args.extend(self.args.iter().cloned());
        Ok(args)
    }
}

/// Bytes of a Kubernetes memory quantity (`256Mi`, `1Gi`, `500M`, `1000`).
pub fn quantity_bytes(q: &str) -> anyhow::Result<u64> {
    let units: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return Ok(n.parse::<u64>()? * factor);
        }
    }
    Ok(q.parse()?)
}

/// CPUs of a Kubernetes CPU quantity (`500m`, `2`), as podman's `--cpus` wants.
pub fn cpus(q: &str) -> anyhow::Result<String> {
    Ok(match q.strip_suffix('m') {
        Some(milli) => format!("{}", milli.parse::<f64>()? / 1000.0),
        None => q.parse::<f64>()?.to_string(),
    })
}

/// Capability numbers (`include/uapi/linux/capability.h`) of the names a
/// manifest may add.
pub fn capability_bit(name: &str) -> anyhow::Result<u32> {
    Ok(match name {
        "NET_ADMIN" => 12,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => bail!("capability {other} is not known to this test"),
    })
}

/// A capability mask field (`CapEff`, `CapBnd`, …) of `/proc/<pid>/status`.
pub fn capabilities(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(u64::from_str_radix(hex.trim(), 16)?)
}
