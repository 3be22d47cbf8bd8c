//! A real containerd for the tests, and pod sandboxes made through its CRI API
//! the way the kubelet makes them.
//!
//! containerd runs on a private socket, root and state directory, with one
//! bridge CNI network on [`SUBNET`] (bridge [`BRIDGE`]) and the tests' pause
//! image (`NETTUNE_PAUSE_IMAGE`, built by `cargo xtask test`: nothing can be
//! pulled here). Pod network namespaces go where a node's do
//! (`/var/run/netns/cni-…`), so the agent meets them as on a node.
//!
//! Dropping [`Containerd`] removes everything it started or made, also after a
//! failed test: sandboxes (through CRI while it answers), containerd, and what
//! containerd 1.6 leaves outside its own directories — shim processes and their
//! sockets in `/run/containerd/s`, runc state, mounts, namespace files, veths and
//! the bridge, the CNI result cache in `/var/lib/cni/results`, cgroups — and puts
//! back `net.ipv4.ip_forward`, which the bridge plugin turns on.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use nettune::sys::cri::{CriClient, SandboxInfo, api};

use crate::{
    host::{self, Leftovers},
    netns::Netns,
    oci,
    sysctl_guard::Restore,
};

/// The pods' subnet (the bridge is `.1`).
pub const SUBNET: &str = "10.244.77.0/24";
/// The CNI bridge.
pub const BRIDGE: &str = "ntcri0";
/// The CNI network's name (it prefixes the CNI result cache's files).
pub const NETWORK: &str = "nettune-test";
/// What containerd and the CNI plugins need.
pub const BINARIES: [&str; 4] = [
    "/usr/bin/containerd",
    "/usr/bin/ctr",
    "/usr/sbin/runc",
    "/usr/lib/cni/bridge",
];
/// Where containerd 1.6 keeps shim sockets, whatever its configuration.
const SHIM_SOCKETS: &str = "/run/containerd/s";
/// Directories containerd and the CNI plugins create outside the private ones.
const OUTSIDE: [&str; 2] = ["/run/containerd", "/var/lib/cni"];
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Skips (or fails where `containers` is required) unless running as root with
/// containerd, runc, the CNI plugins and podman installed and the images
/// `cargo xtask test` builds (`NETTUNE_PAUSE_IMAGE`, and `NETTUNE_IMAGE` when
/// `nettune_image`) present.
pub fn require_containers(nettune_image: bool) -> Option<crate::harness::TestResult> {
    if let Some(skip) = crate::harness::require_root() {
        return Some(skip);
    }
    let mut missing: Vec<String> = BINARIES
        .iter()
        .chain(&["/usr/bin/podman"])
        .filter(|b| !Path::new(b).exists())
        .map(|b| format!("{b} (cargo xtask setup installs it)"))
        .collect();
    let images: &[&str] = if nettune_image {
        &["NETTUNE_PAUSE_IMAGE", "NETTUNE_IMAGE"]
    } else {
        &["NETTUNE_PAUSE_IMAGE"]
    };
    for var in images {
        if std::env::var_os(var).is_none_or(|p| !Path::new(&p).exists()) {
            missing.push(format!("{var} (the image archive cargo xtask test builds)"));
        }
    }
    crate::harness::require(
        crate::harness::Feature::Containers,
        missing.is_empty(),
        &format!("missing {}", missing.join(", ")),
    )
}

/// The image archive `cargo xtask test` names in `var`.
fn image_archive(var: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .with_context(|| format!("{var} is not set (cargo xtask test builds the image)"))?;
    ensure!(path.exists(), "{var}: {} does not exist", path.display());
    Ok(path)
}

/// The archive of nettune's image (`NETTUNE_IMAGE`).
pub fn nettune_image() -> anyhow::Result<PathBuf> {
    image_archive("NETTUNE_IMAGE")
}

/// The archive of the pause image (`NETTUNE_PAUSE_IMAGE`).
pub fn pause_image() -> anyhow::Result<PathBuf> {
    image_archive("NETTUNE_PAUSE_IMAGE")
}

/// A pod to create.
#[derive(Clone, Copy, Debug, Default)]
pub struct PodSpec<'a> {
    /// Pod name.
    pub name: &'a str,
    /// Kubernetes namespace.
    pub namespace: &'a str,
    /// Annotations.
    pub annotations: &'a [(&'a str, &'a str)],
    /// `hostNetwork: true`.
    pub host_network: bool,
}

/// A pod sandbox, as its verbose status describes it.
pub struct Pod {
    /// Sandbox id.
    pub id: String,
    /// Pod name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// Its IP (none with host network).
    pub ip: Option<Ipv4Addr>,
    /// The pause process.
    pub pid: u32,
    /// Its network namespace (none with host network), not deleted on drop.
    pub netns: Option<Netns>,
    /// Its host-side veth.
    pub host_veth: Option<String>,
}

impl Pod {
    /// The pod's network namespace.
    pub fn netns(&self) -> anyhow::Result<&Netns> {
        self.netns
            .as_ref()
            .with_context(|| format!("pod {} has no namespace of its own", self.name))
    }

    /// The namespace's inode (what nettune keys it by).
    pub fn inode(&self) -> anyhow::Result<u32> {
        self.netns()?.inode()
    }

    /// One counter of the pod's `/proc/net/<file>`, read through its pause process.
    pub fn mib(&self, file: &str, group: &str, name: &str) -> anyhow::Result<i64> {
        let path = format!("/proc/{}/net/{file}", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
        Ok(nettune::sys::procfs::Mib::parse(&path, &text).get(group, name)?)
    }
}

// The CRI messages only the tests send (creating and removing sandboxes), written
// by hand like the agent's own in `nettune::sys::cri::api`.

#[derive(Clone, PartialEq, prost::Message)]
struct LinuxSandboxSecurityContext {
    #[prost(message, optional, tag = "1")]
    namespace_options: Option<api::NamespaceOption>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LinuxPodSandboxConfig {
    #[prost(string, tag = "1")]
    cgroup_parent: String,
    #[prost(message, optional, tag = "2")]
    security_context: Option<LinuxSandboxSecurityContext>,
    #[prost(btree_map = "string, string", tag = "3")]
    sysctls: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    metadata: Option<api::PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    hostname: String,
    #[prost(string, tag = "3")]
    log_directory: String,
    #[prost(btree_map = "string, string", tag = "6")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "7")]
    annotations: BTreeMap<String, String>,
    #[prost(message, optional, tag = "8")]
    linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    config: Option<PodSandboxConfig>,
}

/// `RunPodSandboxResponse`, and the `StopPodSandbox`/`RemovePodSandbox`
/// requests: the same one field.
#[derive(Clone, PartialEq, prost::Message)]
struct SandboxId {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

/// A private containerd (see the module doc).
pub struct Containerd {
    dir: PathBuf,
    /// Its CRI socket.
    pub socket: PathBuf,
    child: Option<Child>,
    /// Sandboxes made here and not removed, with their namespace files.
    sandboxes: BTreeMap<String, Option<PathBuf>>,
    cgroup_parent: String,
    next_pod: u32,
    _created: Leftovers,
    _ip_forward: Restore,
}

fn sha256_hex(text: &str) -> anyhow::Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running sha256sum")?;
    child
        .stdin
        .take()
        .context("sha256sum stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signals our own child, which has not been reaped.
        unsafe { libc::kill(pid, sig) };
    }
}

impl Containerd {
    /// Starts containerd and imports the pause image.
    pub fn start() -> anyhow::Result<Self> {
        let pause = pause_image()?;
        let pause_name = oci::ref_name(&pause)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/ntcri-{pid}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["root", "state", "cni/conf", "cni/ipam", "logs", "opt"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let mut containerd = Self {
            socket: dir.join("containerd.sock"),
            dir,
            child: None,
            sandboxes: BTreeMap::new(),
            cgroup_parent: format!("/nettune-test-kubepods-{pid}"),
            next_pod: 0,
            _created: Leftovers::note(&OUTSIDE),
            _ip_forward: Restore::remember("/proc/sys/net/ipv4/ip_forward")?,
        };
        containerd.write_config(&pause_name)?;
        containerd.spawn()?;
        containerd.import(&pause)?;
        Ok(containerd)
    }

    fn write_config(&self, pause: &str) -> anyhow::Result<()> {
        let d = self.dir.display();
        std::fs::write(
            self.dir.join("config.toml"),
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
oom_score = 0
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{pause}"
    restrict_oom_score_adj = true
    disable_apparmor = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{d}/cni/conf"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      snapshotter = "overlayfs"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "/usr/sbin/runc"
          SystemdCgroup = false
          Root = "{d}/state/runc"
"#
            ),
        )?;
        std::fs::write(
            self.dir.join("cni/conf/10-nettune-test.conflist"),
            format!(
                r#"{{"cniVersion": "1.0.0", "name": "{NETWORK}", "plugins": [{{
  "type": "bridge", "bridge": "{BRIDGE}", "isGateway": true, "ipMasq": false,
  "ipam": {{"type": "host-local", "dataDir": "{d}/cni/ipam", "ranges": [[{{"subnet": "{SUBNET}"}}]]}}
}}]}}"#
            ),
        )?;
        Ok(())
    }

    /// Starts the containerd process and waits until CRI answers.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = CriClient::connect(&self.socket, Duration::from_secs(2))
                .and_then(|mut c| c.version());
            if answer.is_ok() {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("containerd exited ({status}):\n{}", self.log_tail());
            }
            ensure!(
                Instant::now() < deadline,
                "containerd did not answer CRI within 20 s: {answer:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its private directory: the socket is `containerd.sock` in it, as the
    /// node's is in `/run/containerd`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Imports an image archive into the `k8s.io` namespace (the kubelet's).
    pub fn import(&self, archive: &Path) -> anyhow::Result<()> {
        crate::command::output(
            Command::new("ctr")
                .arg("-a")
                .arg(&self.socket)
                .args(["-n", "k8s.io", "images", "import"])
                .arg(archive),
        )
        .map(drop)
    }

    /// `ctr run --rm` of `image` with `args` (host network, under the test's
    /// cgroup); returns its output.
    pub fn ctr_run(&self, image: &str, args: &[&str]) -> anyhow::Result<String> {
        crate::command::output(
            Command::new("ctr")
                .arg("-a")
                .arg(&self.socket)
                .args(["-n", "k8s.io", "run", "--rm", "--net-host", "--cgroup"])
                .arg(format!("{}/ctr-run", self.cgroup_parent))
                .args([image, "nettune-ctr-run"])
                .args(args),
        )
    }

    /// The end of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn client(&self) -> anyhow::Result<CriClient> {
        Ok(CriClient::connect(&self.socket, CALL_TIMEOUT)?)
    }

    /// Creates a pod sandbox through `RunPodSandbox`, as the kubelet does.
    pub fn run_pod(&mut self, spec: &PodSpec<'_>) -> anyhow::Result<Pod> {
        self.next_pod += 1;
        let uid = format!(
            "00000000-0000-4000-8000-{:06}{:06}",
            std::process::id() % 1_000_000,
            self.next_pod
        );
        let network = if spec.host_network {
            api::NamespaceMode::Node
        } else {
            api::NamespaceMode::Pod
        };
        let labels = BTreeMap::from([
            ("io.kubernetes.pod.name".to_owned(), spec.name.to_owned()),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                spec.namespace.to_owned(),
            ),
            ("io.kubernetes.pod.uid".to_owned(), uid.clone()),
        ]);
        // No IPv6 inside: no router solicitations or DAD among the counted packets.
        let sysctls = if spec.host_network {
            BTreeMap::new()
        } else {
            BTreeMap::from([
                ("net.ipv6.conf.all.disable_ipv6".to_owned(), "1".to_owned()),
                (
                    "net.ipv6.conf.default.disable_ipv6".to_owned(),
                    "1".to_owned(),
                ),
            ])
        };
        let config = PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: spec.name.to_owned(),
                uid: uid.clone(),
                namespace: spec.namespace.to_owned(),
                attempt: 0,
            }),
            hostname: if spec.host_network {
                String::new()
            } else {
                spec.name.to_owned()
            },
            log_directory: self.dir.join("logs").join(&uid).display().to_string(),
            labels,
            annotations: spec
                .annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod{uid}", self.cgroup_parent),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(api::NamespaceOption {
                        network: network as i32,
                        pid: api::NamespaceMode::Container as i32,
                        ipc: api::NamespaceMode::Pod as i32,
                        target_id: String::new(),
                    }),
                }),
                sysctls,
            }),
        };
        let mut client = self.client()?;
        let created: SandboxId = client
            .call(
                "RunPodSandbox",
                RunPodSandboxRequest {
                    config: Some(config),
                },
            )
            .with_context(|| format!("creating pod {}\n{}", spec.name, self.log_tail()))?;
        let id = created.pod_sandbox_id;
        self.sandboxes.insert(id.clone(), None);
        let status = client.sandbox_status(&id)?;
        let info = SandboxInfo::from_status_info(&status.info);
        self.sandboxes.insert(id.clone(), info.netns_path.clone());
        let ip = status
            .status
            .as_ref()
            .and_then(|s| s.ips().first().and_then(|ip| ip.parse().ok()));
        let host_veth = info
            .host_interfaces
            .iter()
            .find(|name| name.starts_with("veth"))
            .cloned();
        if let Some(veth) = &host_veth {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{veth}/disable_ipv6"), "1");
        }
        let netns = info
            .netns_path
            .as_deref()
            .and_then(|p| p.file_name())
            .map(|n| Netns::existing(&n.to_string_lossy()));
        Ok(Pod {
            id,
            name: spec.name.to_owned(),
            namespace: spec.namespace.to_owned(),
            uid,
            ip,
            pid: info.pid.context("the sandbox's status names no pid")?,
            netns,
            host_veth,
        })
    }

    /// Stops and removes a sandbox, as the kubelet does when a pod is deleted.
    pub fn remove_pod(&mut self, pod: Pod) -> anyhow::Result<()> {
        let mut client = self.client()?;
        let id = SandboxId {
            pod_sandbox_id: pod.id.clone(),
        };
        let _: Empty = client.call("StopPodSandbox", id.clone())?;
        let _: Empty = client.call("RemovePodSandbox", id)?;
        self.sandboxes.remove(&pod.id);
        Ok(())
    }

    /// Stops containerd with SIGTERM, as a service manager does; pods keep running.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                bail!("containerd did not stop within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts containerd again on the same state (after [`Containerd::stop`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        ensure!(self.child.is_none(), "containerd is running");
        self.spawn()
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) containerd: a runtime that
    /// accepts connections and never answers.
    pub fn freeze(&self, frozen: bool) {
        if let Some(child) = &self.child {
            signal(child, if frozen { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// Removes what containerd 1.6 leaves outside its directories (see the
    /// module doc).
    fn clean_up(&mut self) {
        // Our shims, found by their `-address <our socket>` argument.
        let socket = self.socket.display().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let ours = args
                .first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-address" && w[1] == socket.as_bytes());
            if ours && let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) {
                // SAFETY: a shim of this test's containerd, by pid.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // Sandboxes runc still knows.
        let runc_root = self.dir.join("state/runc/k8s.io");
        if let Ok(out) = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "-f", id])
                    .output();
            }
        }
        // Every sandbox id containerd recorded, and the ones made here.
        let mut ids: BTreeSet<String> = self.sandboxes.keys().cloned().collect();
        for dir in [
            "state/io.containerd.runtime.v2.task/k8s.io",
            "root/io.containerd.grpc.v1.cri/sandboxes",
        ] {
            for entry in std::fs::read_dir(self.dir.join(dir))
                .into_iter()
                .flatten()
                .flatten()
            {
                ids.insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
        for id in &ids {
            if let Ok(hash) = sha256_hex(&format!("{socket}/k8s.io/{id}")) {
                let _ = std::fs::remove_file(Path::new(SHIM_SOCKETS).join(hash));
            }
            let _ = std::fs::remove_file(format!("/var/lib/cni/results/{NETWORK}-{id}-eth0"));
            let _ = std::fs::remove_file(format!("/var/lib/cni/results/cni-loopback-{id}-lo"));
        }
        for mount in host::mounts_under(&self.dir) {
            host::unmount(&mount);
        }
        for netns in self.sandboxes.values().flatten() {
            if netns.exists() {
                host::unmount(netns);
                let _ = std::fs::remove_file(netns);
            }
        }
        // Host veths on our bridge, then the bridge.
        if let Ok(out) = Command::new("ip")
            .args(["-o", "link", "show", "master", BRIDGE])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) {
                    let _ = crate::netns::ip(&["link", "del", name]);
                }
            }
        }
        let _ = crate::netns::ip(&["link", "del", BRIDGE]);
        host::remove_cgroups(&self.cgroup_parent);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.freeze(false);
        if self.child.is_some() {
            let pods: Vec<String> = self.sandboxes.keys().cloned().collect();
            if let Ok(mut client) = CriClient::connect(&self.socket, Duration::from_secs(2)) {
                for id in pods {
                    let id = SandboxId { pod_sandbox_id: id };
                    let _ = client.call::<_, Empty>("StopPodSandbox", id.clone());
                    let _ = client.call::<_, Empty>("RemovePodSandbox", id);
                }
            }
            if let Err(e) = self.stop() {
                eprintln!("warning: {e}");
            }
        }
        self.clean_up();
    }
}
