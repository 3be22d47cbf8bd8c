//! What containerd 1.6 leaves outside its own directories, removed (see the
//! module doc of [`super`]).

use std::{
    collections::BTreeSet,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::Context as _;

use super::{BRIDGE, Containerd, NETWORK};
use crate::host;

/// Where containerd 1.6 keeps shim sockets, whatever its configuration.
const SHIM_SOCKETS: &str = "/run/containerd/s";

/// The hex SHA-256 of `text`: how containerd names a shim's socket.
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

impl Containerd {
    /// Removes what containerd 1.6 leaves outside its directories (see the
    /// module doc).
    pub(super) fn clean_up(&mut self) {
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
