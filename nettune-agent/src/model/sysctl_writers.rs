//! Who wrote the node's `net.*` sysctls, as the `sysctl_writers` probe saw it:
//! each (sysctl, command) with its last process, cgroup and value.

use serde::{Deserialize, Serialize};

/// One writer of one sysctl.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlWriterFigures {
    /// The sysctl, dotted (`net.core.somaxconn`).
    pub sysctl: String,
    /// The writer's command name (`comm`).
    pub command: String,
    /// The process of its last write.
    pub pid: u32,
    /// The cgroup of its last write (`/sys/fs/cgroup` inode number).
    pub cgroup_id: u64,
    /// The last value it wrote.
    pub value: String,
    /// Writes seen since the agent started.
    pub writes: u64,
    /// Written by this agent itself.
    pub own: bool,
}

/// Whom to name for a change of `sysctl`: the writer other than nettune that
/// wrote it last seen (most writes first, then name).
pub fn foreign_writer<'a>(
    writers: &'a [SysctlWriterFigures],
    sysctl: &str,
) -> Option<&'a SysctlWriterFigures> {
    writers
        .iter()
        .filter(|w| !w.own && w.sysctl == sysctl)
        .max_by(|a, b| a.writes.cmp(&b.writes).then(b.command.cmp(&a.command)))
}

impl SysctlWriterFigures {
    /// `kube-proxy (pid 812) wrote 131072`.
    pub fn describe(&self) -> String {
        format!("{} (pid {}) wrote {}", self.command, self.pid, self.value)
    }
}
