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
//!
//! This file runs containerd; `pods.rs` makes and removes sandboxes (with the
//! CRI messages of `nettune-cri`), `cleanup.rs` removes what it leaves behind.

mod cleanup;
mod pods;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use nettune::sys::cri::CriClient;
pub use pods::{Pod, PodSpec};

use crate::{host::Leftovers, oci, sysctl_guard::Restore};

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
        xtask::process::output(
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
        xtask::process::output(
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
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.freeze(false);
        if self.child.is_some() {
            let pods: Vec<String> = self.sandboxes.keys().cloned().collect();
            if let Ok(mut client) = CriClient::connect(&self.socket, Duration::from_secs(2)) {
                for id in pods {
                    let _ = pods::remove_sandbox(&mut client, &id);
                }
            }
            if let Err(e) = self.stop() {
                eprintln!("warning: {e}");
            }
        }
        self.clean_up();
    }
}
