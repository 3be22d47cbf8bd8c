//! Changes to the host that container tests make, each undone on drop: files
//! and directories tools create outside their private storage, mounts, cgroups,
//! a shared `/run/netns`, a tracefs mount.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::bail;

/// A scratch directory, removed on drop (after unmounting anything mounted
/// under it), also when the test failed.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<tmp>/nettune-<tag>-<pid>`, empty.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("nettune-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` in the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        for mount in mounts_under(&self.0) {
            unmount(&mount);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Mount points under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}/", dir.display());
    let mut found: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(PathBuf::from)
        .collect();
    found.sort();
    found.reverse();
    found
}

/// Unmounts `path` lazily; errors are ignored (it may not be a mount).
pub fn unmount(path: &Path) {
    if let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
        // SAFETY: a valid NUL-terminated path; MNT_DETACH has no other inputs.
        unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Removes the (empty) cgroup `parent` and everything under it, children
/// first, in every hierarchy.
pub fn remove_cgroups(parent: &str) {
    fn remove_tree(dir: &Path) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        remove_tree(&hierarchy.path().join(parent.trim_start_matches('/')));
    }
}

pub use xtask::Leftovers;

/// The mountinfo line whose mount point is `path`, if any.
fn mount_at(path: &str) -> Option<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(path))
        .map(str::to_owned)
}

fn mount(args: &[&str]) -> anyhow::Result<()> {
    xtask::process::tool("mount", args, "mount").map(drop)
}

/// `/run/netns` as a node has it where mount propagation works: a shared mount
/// (as `ip netns add` leaves it), so that a container's `HostToContainer`
/// mount of it sees namespaces mounted later. Made so if it was not, and put
/// back on drop.
pub struct SharedRunNetns {
    made: bool,
}

impl SharedRunNetns {
    /// Makes sure `/run/netns` is a shared mount.
    pub fn ensure() -> anyhow::Result<Self> {
        match mount_at("/run/netns") {
            Some(line) if line.contains(" shared:") => Ok(Self { made: false }),
            Some(_) => bail!(
                "/run/netns is a mount without shared propagation; not changing it under other \
                 users (make it shared: mount --make-shared /run/netns)"
            ),
            None => {
                std::fs::create_dir_all("/run/netns")?;
                mount(&["--bind", "/run/netns", "/run/netns"])?;
                mount(&["--make-shared", "/run/netns"])?;
                Ok(Self { made: true })
            }
        }
    }
}

impl Drop for SharedRunNetns {
    fn drop(&mut self) {
        if self.made {
            // Fails (and stays) while namespaces are mounted inside: harmless.
            let _ = Command::new("umount").arg("/run/netns").output();
        }
    }
}

/// tracefs at `/sys/kernel/tracing`, mounted if it was not (the DaemonSet
/// mounts the node's), unmounted on drop if this mounted it.
pub struct Tracefs {
    made: bool,
}

impl Tracefs {
    /// Makes sure tracefs is mounted at `/sys/kernel/tracing`.
    pub fn ensure() -> anyhow::Result<Self> {
        if mount_at("/sys/kernel/tracing").is_some() {
            return Ok(Self { made: false });
        }
        mount(&["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])?;
        Ok(Self { made: true })
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.made {
            unmount(Path::new("/sys/kernel/tracing"));
        }
    }
}
