//! Reading and writing sysctls: the only code in nettune that writes one.
//!
//! Everything goes through [`SysctlIo`], so the tuner, `apply` and `rollback` run
//! unchanged against `/proc/sys` ([`ProcSys`]) or against a directory in tests
//! ([`DirSysctls`]). Names reach this module only as allow-list entries
//! ([`Spec`]), so no path outside `/proc/sys/net` can be formed.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{netns, sysctl::Spec};

/// Where a sysctl is read or written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The host's (the agent's own) network namespace: node-wide values and the
    /// node's per-netns values.
    Node,
    /// A pod's network namespace, by inode, with the workload's label for people.
    Netns { inode: u32, label: String },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node => f.write_str("node"),
            Self::Netns { label, inode } => write!(f, "{label} (netns {inode})"),
        }
    }
}

/// Sysctl storage.
pub trait SysctlIo {
    fn read(&self, target: &Target, spec: &Spec) -> io::Result<String>;
    fn write(&self, target: &Target, spec: &Spec, value: &str) -> io::Result<()>;
}

/// The kernel's `/proc/sys`, entered per namespace with setns.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSys;

const PROC_SYS: &str = "/proc/sys";

fn netns_path(inode: u32) -> io::Result<PathBuf> {
    let ns = netns::discover().remove(&inode).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("network namespace {inode} is gone"),
        )
    })?;
    Ok(match ns.access {
        netns::Access::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        netns::Access::Path(path) => path,
    })
}

impl SysctlIo for ProcSys {
    fn read(&self, target: &Target, spec: &Spec) -> io::Result<String> {
        let path = spec.path_under(Path::new(PROC_SYS));
        match target {
            Target::Node => fs::read_to_string(path),
            Target::Netns { inode, .. } => {
                netns::inside(&netns_path(*inode)?, || fs::read_to_string(&path))?
            }
        }
    }

    fn write(&self, target: &Target, spec: &Spec, value: &str) -> io::Result<()> {
        let path = spec.path_under(Path::new(PROC_SYS));
        match target {
            Target::Node => fs::write(path, value),
            // A net sysctl file resolves to the namespace of the thread that opens it.
            Target::Netns { inode, .. } => {
                netns::inside(&netns_path(*inode)?, || fs::write(&path, value))?
            }
        }
    }
}

/// Sysctls as files under a directory: `<root>/node/net/core/somaxconn`,
/// `<root>/<inode>/net/...`. For tests.
#[derive(Clone, Debug)]
pub struct DirSysctls {
    pub root: PathBuf,
}

impl DirSysctls {
    fn path(&self, target: &Target, spec: &Spec) -> PathBuf {
        let dir = match target {
            Target::Node => self.root.join("node"),
            Target::Netns { inode, .. } => self.root.join(inode.to_string()),
        };
        spec.path_under(&dir)
    }
}

impl SysctlIo for DirSysctls {
    fn read(&self, target: &Target, spec: &Spec) -> io::Result<String> {
        fs::read_to_string(self.path(target, spec))
    }

    fn write(&self, target: &Target, spec: &Spec, value: &str) -> io::Result<()> {
        let path = self.path(target, spec);
        if !path.exists() {
            // Like /proc/sys: writing a sysctl that does not exist fails.
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                path.display().to_string(),
            ));
        }
        fs::write(path, value)
    }
}
