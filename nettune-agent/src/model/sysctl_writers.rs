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
    /// Writes a guard (`tuning.guard`) refused: each would have set the sysctl
    /// below nettune's value.
    #[serde(default)]
    pub refused: u64,
    /// The pod its cgroup belongs to (`namespace/name`, or `pod <uid>` when the
    /// runtime does not name it), when it was in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The network namespace its write went to, as far as its pod tells: the
    /// pod's own (inode), or `None` for a host-network pod, a process outside
    /// pods, or a pod the runtime does not name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
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

/// A writer that comes back (at its start, on a schedule, at boot) and how to
/// make it leave a value to nettune.
pub struct KnownWriter {
    /// Its command name (`comm`).
    pub command: &'static str,
    /// The sysctls this entry is about; empty: any.
    pub sysctls: &'static [&'static str],
    /// What it does.
    pub does: &'static str,
    /// How to make it stop.
    pub fix: &'static str,
}

/// Writers known to set the sysctls nettune manages, most specific first.
pub const KNOWN_WRITERS: &[KnownWriter] = &[
    KnownWriter {
        command: "kube-proxy",
        sysctls: &["net.netfilter.nf_conntrack_max"],
        does: "kube-proxy sets it when it starts, to conntrack.maxPerCore × CPUs (at least \
               conntrack.min), and before Kubernetes 1.37 (and 1.36 unpatched) can lower a value \
               raised since",
        fix: "set conntrack.maxPerCore: 0 (and conntrack.min: 0) in kube-proxy's configuration \
              so it leaves nf_conntrack_max alone",
    },
    KnownWriter {
        command: "kube-proxy",
        sysctls: &[
            "net.netfilter.nf_conntrack_tcp_timeout_established",
            "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
        ],
        does: "kube-proxy sets it when it starts, from conntrack.tcpEstablishedTimeout and \
               conntrack.tcpCloseWaitTimeout",
        fix: "set those to 0s in kube-proxy's configuration so it leaves the timeout alone",
    },
    KnownWriter {
        command: "tuned",
        sysctls: &[],
        does: "TuneD applies its active profile's [sysctl] section (OpenShift's Node Tuning \
               Operator runs it from Tuned resources)",
        fix: "remove the sysctl from the profile (or the Tuned resource), or list it in \
              tuning.exclude",
    },
    KnownWriter {
        command: "systemd-sysctl",
        sysctls: &[],
        does: "systemd-sysctl applies /etc/sysctl.d and /usr/lib/sysctl.d at boot",
        fix: "remove it from those files, or list it in tuning.exclude",
    },
    KnownWriter {
        command: "calico-node",
        sysctls: &[],
        does: "the CNI (Calico) sets it",
        fix: "list it in tuning.exclude: the CNI owns it",
    },
    KnownWriter {
        command: "cilium-agent",
        sysctls: &[],
        does: "the CNI (Cilium) sets it",
        fix: "list it in tuning.exclude: the CNI owns it",
    },
    KnownWriter {
        command: "flanneld",
        sysctls: &[],
        does: "the CNI (flannel) sets it",
        fix: "list it in tuning.exclude: the CNI owns it",
    },
];

impl SysctlWriterFigures {
    /// `kube-proxy (pid 812) wrote 131072`, and what to do about a writer
    /// [`KNOWN_WRITERS`] knows.
    pub fn describe(&self) -> String {
        let wrote = match &self.pod {
            Some(pod) => format!(
                "{} (pid {}, pod {pod}) wrote {}",
                self.command, self.pid, self.value
            ),
            None => format!("{} (pid {}) wrote {}", self.command, self.pid, self.value),
        };
        match self.known() {
            Some(k) => format!("{wrote}; {}: {}", k.does, k.fix),
            None => wrote,
        }
    }

    /// A writer for tests: `command` (pid 812, cgroup 1) wrote 131072 to
    /// `sysctl` once.
    #[cfg(test)]
    pub fn example(command: &str, sysctl: &str) -> Self {
        Self {
            sysctl: sysctl.into(),
            command: command.into(),
            pid: 812,
            cgroup_id: 1,
            value: "131072".into(),
            writes: 1,
            own: false,
            refused: 0,
            pod: None,
            netns: None,
        }
    }

    /// This writer in [`KNOWN_WRITERS`], for this sysctl.
    pub fn known(&self) -> Option<&'static KnownWriter> {
        KNOWN_WRITERS.iter().find(|k| {
            k.command == self.command
                && (k.sysctls.is_empty() || k.sysctls.contains(&self.sysctl.as_str()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(command: &str, sysctl: &str) -> SysctlWriterFigures {
        SysctlWriterFigures::example(command, sysctl)
    }

    #[test]
    fn a_known_writer_is_named_with_its_fix_an_unknown_one_plainly() {
        let kube_proxy = writer("kube-proxy", "net.netfilter.nf_conntrack_max").describe();
        assert!(
            kube_proxy.starts_with("kube-proxy (pid 812) wrote 131072; kube-proxy sets it")
                && kube_proxy.contains("conntrack.maxPerCore: 0"),
            "{kube_proxy}"
        );
        // kube-proxy is known for what it sets, not for every sysctl.
        assert_eq!(
            writer("kube-proxy", "net.core.somaxconn").describe(),
            "kube-proxy (pid 812) wrote 131072"
        );
        assert!(
            writer("tuned", "net.core.somaxconn")
                .describe()
                .contains("Tuned resource")
        );
        assert_eq!(
            writer("myscript", "net.core.somaxconn").describe(),
            "myscript (pid 812) wrote 131072"
        );
        let in_a_pod = SysctlWriterFigures {
            pod: Some("kube-system/kube-proxy-x2".into()),
            ..writer("myscript", "net.core.somaxconn")
        };
        assert_eq!(
            in_a_pod.describe(),
            "myscript (pid 812, pod kube-system/kube-proxy-x2) wrote 131072"
        );
    }
}
