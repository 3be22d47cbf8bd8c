//! Finding the node's network namespaces and reading their `/proc/net` files.
//!
//! A namespace is found through a process inside it (`/proc/<pid>/ns/net`) or a
//! bind mount (`/run/netns/<name>`, as `ip netns add` and some CNIs make). Its key
//! is the namespace inode, the same number the eBPF programs record. Files under
//! `/proc/<pid>/net/` show the counters of that pid's namespace; a namespace with no
//! process is read from a thread that joins it with `setns(2)` for the read only.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use serde::Serialize;

/// How to reach a namespace's files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Through a process inside it: `/proc/<pid>/net/...`.
    Pid(u32),
    /// Through a bind mount, joined with setns for each read.
    Path(PathBuf),
}

/// One network namespace on the node.
#[derive(Clone, Debug, Serialize)]
pub struct Namespace {
    /// The namespace inode (`ls -L -i /proc/<pid>/ns/net`).
    pub inode: u32,
    pub access: Access,
    /// Its name under `/run/netns`, if it has one.
    pub name: Option<String>,
    /// The command of the lowest pid inside it, if any.
    pub process: Option<String>,
    /// Whether this is the agent's own (the host's) namespace.
    pub is_host: bool,
}

/// Where `ip netns` keeps named namespaces.
pub const RUN_NETNS: &str = "/run/netns";

/// The inode of the namespace a `/proc/<pid>/ns/net`-like path refers to.
pub fn inode_of(path: &Path) -> io::Result<u32> {
    let ino = fs::metadata(path)?.ino();
    u32::try_from(ino).map_err(|_| io::Error::other("namespace inode above u32"))
}

/// The agent's own network namespace.
pub fn own_inode() -> io::Result<u32> {
    inode_of(Path::new("/proc/self/ns/net"))
}

/// Every network namespace reachable through `/proc` and `/run/netns`.
pub fn discover() -> BTreeMap<u32, Namespace> {
    let host = own_inode().unwrap_or(0);
    let mut found = BTreeMap::new();
    if let Ok(dir) = fs::read_dir(RUN_NETNS) {
        for entry in dir.flatten() {
            let path = entry.path();
            let Ok(inode) = inode_of(&path) else { continue };
            found.entry(inode).or_insert_with(|| Namespace {
                inode,
                access: Access::Path(path.clone()),
                name: Some(entry.file_name().to_string_lossy().into_owned()),
                process: None,
                is_host: inode == host,
            });
        }
    }
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(inode) = inode_of(Path::new(&format!("/proc/{pid}/ns/net"))) else {
            continue;
        };
        let process = fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|c| c.trim().to_owned());
        let ns = found.entry(inode).or_insert_with(|| Namespace {
            inode,
            access: Access::Pid(pid),
            name: None,
            process: None,
            is_host: inode == host,
        });
        // Prefer reading through a pid: no setns needed.
        if ns.process.is_none() {
            ns.access = Access::Pid(pid);
            ns.process = process;
        }
    }
    found
}

impl Namespace {
    /// The interfaces of this namespace (an rtnetlink dump from inside it).
    pub fn links(&self) -> io::Result<Vec<crate::netlink::Link>> {
        let path = match &self.access {
            Access::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Access::Path(path) => path.clone(),
        };
        inside(&path, crate::netlink::links)?
    }

    /// Reads `/proc/net/<file>` as seen inside this namespace, for each of `files`.
    pub fn read_net_files(&self, files: &[&str]) -> Vec<io::Result<String>> {
        match &self.access {
            Access::Pid(pid) => files
                .iter()
                .map(|f| fs::read_to_string(format!("/proc/{pid}/net/{f}")))
                .collect(),
            Access::Path(path) => match read_inside(path, files) {
                Ok(results) => results,
                Err(e) => files
                    .iter()
                    .map(|_| Err(io::Error::new(e.kind(), e.to_string())))
                    .collect(),
            },
        }
    }
}

/// Reads files of `/proc/thread-self/net/` from a thread inside the namespace.
fn read_inside(ns_path: &Path, files: &[&str]) -> io::Result<Vec<io::Result<String>>> {
    inside(ns_path, || {
        files
            .iter()
            .map(|f| fs::read_to_string(format!("/proc/thread-self/net/{f}")))
            .collect()
    })
}

/// Runs `f` on a short-lived thread that joined the namespace at `ns_path`.
pub fn inside<R: Send>(ns_path: &Path, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    let ns = File::open(ns_path)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace fd we own changes only this thread, which
            // ends right after `f`.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
    })
}
