//! The sysctls nettune knows: the allow-list every read, audit and write goes
//! through.
//!
//! A name is accepted only if it is in [`ALLOWED`]; since every entry starts with
//! `net.` and consists of `[a-z0-9_]` words joined by dots, no accepted name can
//! address anything outside `/proc/sys/net` (no `..`, no `/`, no other tree).

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where a sysctl's value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One value for the whole node (settable only from the host namespace).
    Node,
    /// One value per network namespace (each pod has its own).
    Netns,
}

/// The shape of a sysctl's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// One integer.
    Int,
    /// Two integers, e.g. a port range `low high`.
    Pair,
    /// Three integers, e.g. `min default max` buffer sizes.
    Triple,
    /// A list of ports and port ranges, e.g. `30000-32767,40000`.
    PortList,
}

/// Which way "better" goes for a sysctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// More room is better (queues, tables, buffers, port ranges): a value above the
    /// recommendation complies, and nettune never lowers one.
    MoreRoom,
    /// A setting (timeouts, switches): the recommendation is the value.
    Exact,
}

/// One sysctl nettune may read and, within limits, write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]

pub struct Spec {
    /// Dotted name, as `sysctl` prints it.
    pub name: &'static str,
    pub scope: Scope,
    pub shape: Shape,
    /// What it governs, for `audit` and explanations.
    pub impact: &'static str,
}

impl Spec {
    /// Timeouts and switches are settings; everything else is room.
    pub fn direction(&self) -> Direction {
        let exact = self.name.contains("timeout")
            || self.name.contains("keepalive")
            || self.name.ends_with("syncookies")
            || self.shape == Shape::PortList;
        if exact {
            Direction::Exact
        } else {
            Direction::MoreRoom
        }
    }
}

const fn spec(name: &'static str, scope: Scope, shape: Shape, impact: &'static str) -> Spec {
    Spec {
        name,
        scope,
        shape,
        impact,
    }
}

/// Every sysctl nettune knows, from the network tuning guide's table and its
/// DaemonSet list.
pub const ALLOWED: &[Spec] = &[
    spec(
        "net.core.somaxconn",
        Scope::Netns,
        Shape::Int,
        "accept (listen) queue limit",
    ),
    spec(
        "net.core.netdev_max_backlog",
        Scope::Node,
        Shape::Int,
        "per-CPU input backlog (packets)",
    ),
    spec(
        "net.ipv4.tcp_max_syn_backlog",
        Scope::Netns,
        Shape::Int,
        "SYN (half-open) queue length",
    ),
    spec(
        "net.ipv4.tcp_tw_reuse",
        Scope::Netns,
        Shape::Int,
        "reuse TIME_WAIT sockets for new connections",
    ),
    spec(
        "net.ipv4.ip_local_port_range",
        Scope::Netns,
        Shape::Pair,
        "ephemeral ports for outgoing connections",
    ),
    spec(
        "net.ipv4.ip_local_reserved_ports",
        Scope::Netns,
        Shape::PortList,
        "ports never used as ephemeral ports (keep the NodePort range here)",
    ),
    spec(
        "net.netfilter.nf_conntrack_max",
        Scope::Node,
        Shape::Int,
        "connection tracking table size",
    ),
    spec(
        "net.netfilter.nf_conntrack_buckets",
        Scope::Node,
        Shape::Int,
        "connection tracking hash buckets",
    ),
    spec(
        "net.core.rmem_max",
        Scope::Node,
        Shape::Int,
        "largest receive buffer a socket may ask for",
    ),
    spec(
        "net.core.wmem_max",
        Scope::Node,
        Shape::Int,
        "largest send buffer a socket may ask for",
    ),
    spec(
        "net.ipv4.tcp_rmem",
        Scope::Netns,
        Shape::Triple,
        "TCP receive buffer min/default/max",
    ),
    spec(
        "net.ipv4.tcp_wmem",
        Scope::Netns,
        Shape::Triple,
        "TCP send buffer min/default/max",
    ),
    spec(
        "net.ipv4.tcp_fin_timeout",
        Scope::Netns,
        Shape::Int,
        "seconds an orphaned connection stays in FIN_WAIT_2",
    ),
    spec(
        "net.ipv4.tcp_keepalive_time",
        Scope::Netns,
        Shape::Int,
        "idle seconds before keepalive probes",
    ),
    spec(
        "net.ipv4.tcp_keepalive_intvl",
        Scope::Netns,
        Shape::Int,
        "seconds between keepalive probes",
    ),
    spec(
        "net.ipv4.tcp_keepalive_probes",
        Scope::Netns,
        Shape::Int,
        "unanswered probes before a connection is dropped",
    ),
    spec(
        "net.ipv4.tcp_syncookies",
        Scope::Netns,
        Shape::Int,
        "SYN cookies when the SYN queue overflows",
    ),
    spec(
        "net.netfilter.nf_conntrack_tcp_timeout_established",
        Scope::Netns,
        Shape::Int,
        "seconds an idle established connection stays tracked",
    ),
    spec(
        "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
        Scope::Netns,
        Shape::Int,
        "seconds a CLOSE_WAIT connection stays tracked",
    ),
];

/// Why a name was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{0}` is not a sysctl name (dotted words of a-z, 0-9 and _, like net.core.somaxconn)")]
    Malformed(String),
    #[error("`{0}` is outside net.*: nettune never touches other sysctls")]
    NotNet(String),
    #[error("`{0}` is not a sysctl nettune manages (see `nettune audit` for the list)")]
    NotAllowed(String),
}

/// The allow-list entry for `name`, or why it is refused.
pub fn lookup(name: &str) -> Result<&'static Spec, NameError> {
    let well_formed = !name.is_empty()
        && name.split('.').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        });
    if !well_formed {
        return Err(NameError::Malformed(name.to_owned()));
    }
    if !name.starts_with("net.") {
        return Err(NameError::NotNet(name.to_owned()));
    }
    ALLOWED
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| NameError::NotAllowed(name.to_owned()))
}

impl Spec {
    /// The file of this sysctl under `root` (normally `/proc/sys`).
    pub fn path_under(&self, root: &Path) -> PathBuf {
        root.join(self.name.replace('.', "/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_names_map_under_proc_sys_net() {
        for spec in ALLOWED {
            assert_eq!(lookup(spec.name).unwrap().name, spec.name);
            let path = spec.path_under(Path::new("/proc/sys"));
            assert!(path.starts_with("/proc/sys/net/"), "{}", path.display());
        }
        assert_eq!(
            lookup("net.core.somaxconn")
                .unwrap()
                .path_under(Path::new("/proc/sys")),
            Path::new("/proc/sys/net/core/somaxconn")
        );
    }

    #[test]
    fn escapes_and_other_trees_are_refused() {
        assert_eq!(
            lookup("net/../../kernel/core_pattern"),
            Err(NameError::Malformed("net/../../kernel/core_pattern".into()))
        );
        assert_eq!(
            lookup("net..core"),
            Err(NameError::Malformed("net..core".into()))
        );
        assert_eq!(lookup(""), Err(NameError::Malformed(String::new())));
        assert_eq!(
            lookup("kernel.core_pattern"),
            Err(NameError::NotNet("kernel.core_pattern".into()))
        );
        assert_eq!(
            lookup("net.ipv4.ip_forward"),
            Err(NameError::NotAllowed("net.ipv4.ip_forward".into()))
        );
        assert!(matches!(
            lookup("NET.core.somaxconn"),
            Err(NameError::Malformed(_))
        ));
    }
}
