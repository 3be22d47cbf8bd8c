//! podman with runc in private storage: the container runtime that runs the
//! DaemonSet's container in the tests.
//!
//! What this sandbox needs (docs: machine-facts, "Containers on this
//! machine"): runc (crun refuses hybrid cgroups), no default ulimits (raising
//! them is not permitted), vfs storage, runc's state under the private
//! directory, host network always (podman's default bridge network would leave
//! iptables chains behind). Dropping [`Podman`] removes its containers, its
//! storage, their cgroups and what podman creates outside its storage when
//! absent (a blob-info cache, a CNI lock).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::host::{self, Leftovers};

/// Files podman creates outside its storage when they are absent.
const OUTSIDE: [&str; 2] = ["/var/lib/containers", "/etc/cni/net.d/cni.lock"];

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A private podman (see the module doc).
pub struct Podman {
    dir: PathBuf,
    /// The cgroup containers are put under.
    pub cgroup_parent: String,
    containers: Vec<String>,
    _created: Leftovers,
}

/// What `podman` printed and how it ended.
pub struct Output {
    /// Whether it succeeded.
    pub ok: bool,
    /// stdout, trimmed.
    pub stdout: String,
    /// stderr, trimmed.
    pub stderr: String,
}

impl Podman {
    /// Private storage and settings under a new temporary directory.
    pub fn new() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let dir = PathBuf::from(format!(
            "/tmp/ntpodman-{pid}-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp"))?;
        let created = Leftovers::note(&OUTSIDE);
        let d = dir.display();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n\
                 tmp_dir = \"{d}/tmp\"\nstatic_dir = \"{d}/storage/libpod\"\n\
                 volume_path = \"{d}/storage/volumes\"\nevents_logger = \"file\"\n\
                 events_logfile_path = \"{d}/events.log\"\n\n[engine.runtimes]\n\
                 runc = [\"/usr/sbin/runc\"]\n"
            ),
        )?;
        Ok(Self {
            dir,
            cgroup_parent: format!("/nettune-test-podman-{pid}"),
            containers: Vec::new(),
            _created: created,
        })
    }

    /// `podman` with the private settings.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.dir.join("storage/root"))
            .arg("--runroot")
            .arg(self.dir.join("storage/run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--runtime", "/usr/sbin/runc", "--runtime-flag"])
            .arg(format!("root={}", self.dir.join("runc").display()));
        cmd
    }

    /// Runs `podman ARGS`.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let out = self
            .command()
            .args(args)
            .output()
            .context("running podman")?;
        Ok(Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }

    /// Runs `podman ARGS`, failing with its stderr.
    pub fn checked(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        ensure!(out.ok, "podman {}: {}", args.join(" "), out.stderr);
        Ok(out.stdout)
    }

    /// Loads an OCI archive; returns the image's name.
    pub fn load(&self, archive: &Path) -> anyhow::Result<String> {
        let out = self.checked(&["load", "-i", &archive.to_string_lossy()])?;
        out.lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .or_else(|| {
                out.lines()
                    .find_map(|l| l.strip_prefix("Loaded image(s): "))
            })
            .map(|s| s.trim().to_owned())
            .with_context(|| format!("podman load did not name the image: {out}"))
    }

    /// `podman run -d --name NAME ARGS` (ARGS end with the image and its
    /// arguments); removed on drop.
    pub fn start(&mut self, name: &str, args: &[String]) -> anyhow::Result<()> {
        let mut all = vec![
            "run".to_owned(),
            "-d".to_owned(),
            "--name".to_owned(),
            name.to_owned(),
            "--cgroup-parent".to_owned(),
            self.cgroup_parent.clone(),
        ];
        all.extend_from_slice(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.containers.push(name.to_owned());
        self.checked(&all)?;
        Ok(())
    }

    /// The container's main process on the host.
    pub fn pid(&self, name: &str) -> anyhow::Result<u32> {
        let pid = self.checked(&["inspect", "--format", "{{.State.Pid}}", name])?;
        pid.parse()
            .with_context(|| format!("podman inspect {name}: pid {pid:?}"))
    }

    /// The container's log (stdout and stderr).
    pub fn logs(&self, name: &str) -> String {
        self.run(&["logs", name])
            .map(|o| format!("{}\n{}", o.stdout, o.stderr))
            .unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `grace` for the container to exit, as the
    /// kubelet does (podman sends SIGKILL after `grace`). Returns the exit code
    /// and how long it took.
    pub fn stop(&self, name: &str, grace: Duration) -> anyhow::Result<(i32, Duration)> {
        let started = Instant::now();
        self.checked(&["stop", "-t", &grace.as_secs().to_string(), name])?;
        let took = started.elapsed();
        let code = self.checked(&["inspect", "--format", "{{.State.ExitCode}}", name])?;
        Ok((code.parse().context("exit code")?, took))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = self.run(&["rm", "-f", "-t", "2", name]);
        }
        let _ = self.run(&["rmi", "-a", "-f"]);
        for mount in host::mounts_under(&self.dir) {
            host::unmount(&mount);
        }
        host::remove_cgroups(&self.cgroup_parent);
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// Fails unless `bin` exists.
pub fn require_binary(bin: &str) -> anyhow::Result<()> {
    if !Path::new(bin).exists() {
        bail!("{bin} is missing (cargo xtask setup installs it)");
    }
    Ok(())
}
