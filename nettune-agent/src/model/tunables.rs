//! Every sysctl nettune knows, in one table: the allow-list, the audit table, the
//! production profile, the guardrails' default ceilings and the policy all read
//! it, and nothing else in nettune matches sysctl names.
//!
//! Like bpftune's tuner tables, each entry declares what the sysctl governs and
//! how it moves: its [`Scope`] (one value per node or per network namespace), its
//! [`Shape`], which way is "more room" ([`Direction`], [`Scale`]), the network
//! tuning guide's value, the ceiling nettune stops at unless configured otherwise,
//! and, for tables that cost memory, what one unit costs.

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

/// What "complies with the guide" means for a sysctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// More room is better (queues, tables, buffers, port ranges): a value above
    /// the recommendation complies, and nettune never lowers one.
    MoreRoom,
    /// A setting (timeouts, switches, lists): the recommendation is the value.
    Setting,
}

/// How a value maps onto "how much room" (see `model::value::strength`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// Bigger is more: the integer, a range's width, a triple's maximum.
    Magnitude,
    /// An integer whose values rank in this order, least room first (e.g.
    /// `tcp_tw_reuse`: 0 off, 2 loopback only, 1 on).
    Ranked(&'static [u64]),
}

/// How the kernel rounds a value written to a sysctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Granule {
    /// Up to whole pages of slots this many bytes long (`nf_conntrack_buckets`:
    /// 8-byte hash heads, so a multiple of 512 on 4 KiB pages).
    PageOf(u64),
}

impl Granule {
    /// The multiple values are rounded up to, with pages of `page_size` bytes.
    pub fn multiple(self, page_size: u64) -> u64 {
        match self {
            Self::PageOf(bytes) => (page_size / bytes.max(1)).max(1),
        }
    }
}

/// The ceilings nettune stops at when the config sets none, on the [`Scale`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Ceiling {
    /// On the node.
    pub node: u64,
    /// In a pod's own namespace.
    pub pod: u64,
}

/// One sysctl nettune may read and, within limits, write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Tunable {
    /// Dotted name, as `sysctl` prints it.
    pub name: &'static str,
    /// Node-wide or per namespace.
    pub scope: Scope,
    /// The value's shape.
    pub shape: Shape,
    /// Room or setting.
    pub direction: Direction,
    /// How values rank.
    pub scale: Scale,
    /// The network tuning guide's value (the `production` profile), as `sysctl`
    /// prints it; `None` when the guide sets none.
    pub guide: Option<&'static str>,
    /// Where the tuner stops unless `tuning.limits` says otherwise; `None` for
    /// sysctls the tuner never raises.
    pub ceiling: Option<Ceiling>,
    /// Bytes of kernel memory one unit takes, for tables whose ceiling is also a
    /// share of RAM (`tuning.conntrack_memory_percent`).
    pub bytes_per_unit: Option<u64>,
    /// Raising it hands out more ephemeral ports: the ports nettune protects
    /// (`tuning.reserved_ports`) must be reserved first.
    pub exposes_ports: bool,
    /// How the kernel rounds what is written (`None`: it keeps it as written).
    pub granule: Option<Granule>,
    /// What it governs, for `audit` and explanations.
    pub impact: &'static str,
}

impl Tunable {
    /// The ceiling at a node or pod target, if the tuner may raise this at all.
    pub fn default_ceiling(&self, in_pod: bool) -> Option<u64> {
        self.ceiling.map(|c| if in_pod { c.pod } else { c.node })
    }

    /// The most room the kernel accepts, on the [`Scale`] (an `int` sysctl's
    /// `INT_MAX`, a port range's full width, a switch's top rank); `None` for
    /// settings, which nettune never raises.
    pub fn most_room(&self) -> Option<u64> {
        if self.direction == Direction::Setting {
            return None;
        }
        Some(match (self.shape, self.scale) {
            (_, Scale::Ranked(order)) => order.len().saturating_sub(1) as u64,
            (Shape::Pair, _) => 65_535,
            _ => i32::MAX.unsigned_abs().into(),
        })
    }

    /// `raise` for room, `reserve` for port lists: the action label of decisions.
    pub fn action(&self) -> &'static str {
        match self.shape {
            Shape::PortList => "reserve",
            _ => "raise",
        }
    }
}

const fn both(v: u64) -> Option<Ceiling> {
    Some(Ceiling { node: v, pod: v })
}

const fn room(
    name: &'static str,
    scope: Scope,
    shape: Shape,
    guide: Option<&'static str>,
    ceiling: Option<Ceiling>,
    impact: &'static str,
) -> Tunable {
    Tunable {
        name,
        scope,
        shape,
        direction: Direction::MoreRoom,
        scale: Scale::Magnitude,
        guide,
        ceiling,
        bytes_per_unit: None,
        exposes_ports: false,
        granule: None,
        impact,
    }
}

const fn setting(
    name: &'static str,
    shape: Shape,
    guide: Option<&'static str>,
    impact: &'static str,
) -> Tunable {
    Tunable {
        name,
        scope: Scope::Netns,
        shape,
        direction: Direction::Setting,
        scale: Scale::Magnitude,
        guide,
        ceiling: None,
        bytes_per_unit: None,
        exposes_ports: false,
        granule: None,
        impact,
    }
}

/// Accept (listen) queue limit.
pub const SOMAXCONN: Tunable = room(
    "net.core.somaxconn",
    Scope::Netns,
    Shape::Int,
    Some("32768"),
    Some(Ceiling {
        node: 32_768,
        pod: 65_535,
    }),
    "accept (listen) queue limit",
);
/// Per-CPU input backlog.
pub const NETDEV_MAX_BACKLOG: Tunable = room(
    "net.core.netdev_max_backlog",
    Scope::Node,
    Shape::Int,
    Some("16384"),
    both(16_384),
    "per-CPU input backlog (packets)",
);
/// SYN queue length.
pub const TCP_MAX_SYN_BACKLOG: Tunable = room(
    "net.ipv4.tcp_max_syn_backlog",
    Scope::Netns,
    Shape::Int,
    Some("8192"),
    both(8_192),
    "SYN (half-open) queue length",
);
/// Reusing TIME_WAIT sockets for new outgoing connections.
pub const TCP_TW_REUSE: Tunable = Tunable {
    scale: Scale::Ranked(&[0, 2, 1]),
    ..room(
        "net.ipv4.tcp_tw_reuse",
        Scope::Netns,
        Shape::Int,
        Some("1"),
        // On (1) is the top of 0 < 2 < 1: rank 2.
        both(2),
        "reuse TIME_WAIT sockets for new connections",
    )
};
/// Ephemeral ports for outgoing connections.
pub const IP_LOCAL_PORT_RANGE: Tunable = Tunable {
    exposes_ports: true,
    ..room(
        "net.ipv4.ip_local_port_range",
        Scope::Netns,
        Shape::Pair,
        Some("1024 65535"),
        // The width of 1024-65535.
        both(65_535 - 1_024),
        "ephemeral ports for outgoing connections",
    )
};
/// Ports never handed out as ephemeral ports.
pub const IP_LOCAL_RESERVED_PORTS: Tunable = Tunable {
    scope: Scope::Netns,
    ..setting(
        "net.ipv4.ip_local_reserved_ports",
        Shape::PortList,
        None,
        "ports never used as ephemeral ports (keep the NodePort range here)",
    )
};
/// Connection tracking table size.
pub const NF_CONNTRACK_MAX: Tunable = Tunable {
    // struct nf_conn plus its hash slot, roughly.
    bytes_per_unit: Some(320),
    ..room(
        "net.netfilter.nf_conntrack_max",
        Scope::Node,
        Shape::Int,
        Some("1048576"),
        both(1_048_576),
        "connection tracking table size",
    )
};
/// Connection tracking hash buckets.
pub const NF_CONNTRACK_BUCKETS: Tunable = Tunable {
    // The hash is resized to whole pages of 8-byte heads (nf_ct_alloc_hashtable).
    granule: Some(Granule::PageOf(8)),
    ..room(
        "net.netfilter.nf_conntrack_buckets",
        Scope::Node,
        Shape::Int,
        None,
        both(262_144),
        "connection tracking hash buckets",
    )
};
/// Largest receive buffer a socket may ask for.
pub const RMEM_MAX: Tunable = room(
    "net.core.rmem_max",
    Scope::Node,
    Shape::Int,
    Some("16777216"),
    both(16_777_216),
    "largest receive buffer a socket may ask for",
);
/// Largest send buffer a socket may ask for.
pub const WMEM_MAX: Tunable = room(
    "net.core.wmem_max",
    Scope::Node,
    Shape::Int,
    Some("16777216"),
    both(16_777_216),
    "largest send buffer a socket may ask for",
);
/// TCP receive buffer sizes.
pub const TCP_RMEM: Tunable = room(
    "net.ipv4.tcp_rmem",
    Scope::Netns,
    Shape::Triple,
    Some("4096 12582912 16777216"),
    both(16_777_216),
    "TCP receive buffer min/default/max",
);
/// TCP send buffer sizes.
pub const TCP_WMEM: Tunable = room(
    "net.ipv4.tcp_wmem",
    Scope::Netns,
    Shape::Triple,
    Some("4096 12582912 16777216"),
    both(16_777_216),
    "TCP send buffer min/default/max",
);

/// SYN cookies: 0 off, 1 when a SYN queue overflows, 2 always.
pub const TCP_SYNCOOKIES: Tunable = setting(
    "net.ipv4.tcp_syncookies",
    Shape::Int,
    None,
    "SYN cookies when the SYN queue overflows",
);

/// TCP's own path-MTU probing: 1 when an ICMP black hole is detected. Advice
/// only (the path-MTU rule names it): not in [`ALL`], so never written.
pub const TCP_MTU_PROBING: Tunable = setting(
    "net.ipv4.tcp_mtu_probing",
    Shape::Int,
    Some("1"),
    "TCP probes the path MTU when ICMP is filtered",
);

/// Every sysctl nettune knows, from the network tuning guide's table and its
/// DaemonSet list.
pub const ALL: &[&Tunable] = &[
    &SOMAXCONN,
    &NETDEV_MAX_BACKLOG,
    &TCP_MAX_SYN_BACKLOG,
    &TCP_TW_REUSE,
    &IP_LOCAL_PORT_RANGE,
    &IP_LOCAL_RESERVED_PORTS,
    &NF_CONNTRACK_MAX,
    &NF_CONNTRACK_BUCKETS,
    &RMEM_MAX,
    &WMEM_MAX,
    &TCP_RMEM,
    &TCP_WMEM,
    &setting(
        "net.ipv4.tcp_fin_timeout",
        Shape::Int,
        Some("30"),
        "seconds an orphaned connection stays in FIN_WAIT_2",
    ),
    &setting(
        "net.ipv4.tcp_keepalive_time",
        Shape::Int,
        Some("600"),
        "idle seconds before keepalive probes",
    ),
    &setting(
        "net.ipv4.tcp_keepalive_intvl",
        Shape::Int,
        Some("30"),
        "seconds between keepalive probes",
    ),
    &setting(
        "net.ipv4.tcp_keepalive_probes",
        Shape::Int,
        Some("10"),
        "unanswered probes before a connection is dropped",
    ),
    &TCP_SYNCOOKIES,
    &setting(
        "net.netfilter.nf_conntrack_tcp_timeout_established",
        Shape::Int,
        Some("86400"),
        "seconds an idle established connection stays tracked",
    ),
    &setting(
        "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
        Shape::Int,
        Some("3600"),
        "seconds a CLOSE_WAIT connection stays tracked",
    ),
];

/// Why a name cannot be a sysctl nettune touches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not dotted words of `[a-z0-9_]`.
    #[error("`{0}` is not a sysctl name (dotted words of a-z, 0-9 and _, like net.core.somaxconn)")]
    Malformed(String),
    /// A well-formed name outside `net.*`.
    #[error("`{0}` is outside net.*: nettune never touches other sysctls")]
    NotNet(String),
}

/// Checks that `name` is a well-formed `net.*` sysctl name: dotted words of
/// `[a-z0-9_]` after `net.`, so that no name can address a file outside
/// `/proc/sys/net` (no `..`, no `/`, no other tree).
pub fn check_name(name: &str) -> Result<(), NameError> {
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
    Ok(())
}

/// Why a name was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Not a well-formed `net.*` name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A `net.*` sysctl nettune does not manage.
    #[error("`{0}` is not a sysctl nettune manages (see `nettune audit` for the list)")]
    NotAllowed(String),
}

/// The table entry for `name`, or why it is refused.
pub fn lookup(name: &str) -> Result<&'static Tunable, LookupError> {
    check_name(name)?;
    ALL.iter()
        .copied()
        .find(|t| t.name == name)
        .ok_or_else(|| LookupError::NotAllowed(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_reachable_and_only_room_has_a_ceiling() {
        for t in ALL {
            assert_eq!(lookup(t.name).unwrap(), *t);
            assert_eq!(
                t.ceiling.is_some(),
                t.direction == Direction::MoreRoom,
                "{}: only room has a ceiling",
                t.name
            );
        }
    }

    #[test]
    fn escapes_other_trees_and_unknown_names_are_refused() {
        assert!(matches!(
            lookup("net/../../kernel/core_pattern"),
            Err(LookupError::Name(NameError::Malformed(_)))
        ));
        assert_eq!(
            lookup("kernel.core_pattern").unwrap_err().to_string(),
            "`kernel.core_pattern` is outside net.*: nettune never touches other sysctls"
        );
        assert_eq!(
            lookup("net.ipv4.ip_forward"),
            Err(LookupError::NotAllowed("net.ipv4.ip_forward".into()))
        );
    }
}
