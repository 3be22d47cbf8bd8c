//! [`Leftovers`]: what container tools leave on the host, removed again.

use std::path::Path;

/// Paths that did not exist when this was made, removed on drop: what tools
/// create outside their private directories (buildah and podman make a
/// blob-info cache under `/var/lib/containers` and `/etc/cni/net.d/cni.lock`
/// even with private storage; containerd makes `/run/containerd`, the CNI
/// plugins `/var/lib/cni`).
pub struct Leftovers(Vec<&'static str>);

impl Leftovers {
    /// Notes which of `paths` are absent now.
    pub fn note(paths: &[&'static str]) -> Self {
        Self(
            paths
                .iter()
                .copied()
                .filter(|p| !Path::new(p).exists())
                .collect(),
        )
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for path in &self.0 {
            let path = Path::new(path);
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            if let Err(e) = removed
                && e.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!("warning: could not remove {}: {e}", path.display());
            }
        }
    }
}
