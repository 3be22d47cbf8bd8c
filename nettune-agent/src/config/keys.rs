//! Every key of the config file, in one table: its type and bounds (which the
//! parser checks, with one message format), its default (read from
//! [`Config::default`], never written twice), and what it means. The parser,
//! `nettune run --print-config` and the README's table all come from [`KEYS`];
//! a unit test keeps the README in step.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use super::{Config, Limit};
use crate::model::{
    probes::Variant,
    tunables::{Scope, Shape, Tunable},
    tuning::Mode,
};

/// Where a key's value lives in [`Config`].
pub type Field<T> = fn(&mut Config) -> &mut T;

/// Inclusive bounds of a number, with the unit messages name.
#[derive(Clone, Copy, Debug)]
pub struct Bounds<T> {
    /// The least value accepted.
    pub min: T,
    /// The largest value accepted.
    pub max: T,
    /// `" seconds"` for durations, `""` otherwise.
    pub unit: &'static str,
}

/// What a key holds, how it is checked, and where it goes.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A number (integers accepted) within bounds.
    Number(Bounds<f64>, Field<f64>),
    /// A whole number within bounds.
    Whole(Bounds<u64>, Field<u64>),
    /// `true` or `false`.
    Switch(Field<bool>),
    /// `address:port`.
    Address(Field<SocketAddr>),
    /// A path.
    Path(Field<PathBuf>),
    /// A path that may be left unset.
    MaybePath(Field<Option<PathBuf>>),
    /// A string that may be left unset.
    MaybeText(Field<Option<String>>),
    /// The tuner's mode.
    Mode(Field<Mode>),
    /// A list of probe variants.
    Variants(Field<Vec<Variant>>),
    /// A list of allow-listed sysctl names, each of which the check admits
    /// (or says why not).
    Sysctls(Field<Vec<String>>, fn(&Tunable) -> Result<(), &'static str>),
    /// A list of ports and port ranges (`9100`, `30000-32767`).
    Ports(Field<Vec<String>>),
    /// A list of strings.
    Texts(Field<Vec<String>>),
    /// `tuning.limits`: a table per allow-listed sysctl with `floor` and `ceiling`.
    Limits(Field<BTreeMap<String, Limit>>),
}

impl Kind {
    /// What the README's table calls the type.
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::Number(b, _) if !b.unit.is_empty() => "seconds",
            Self::Number(..) => "number",
            Self::Whole(b, _) if !b.unit.is_empty() => "whole seconds",
            Self::Whole(..) => "whole number",
            Self::Switch(_) => "true/false",
            Self::Address(_) => "address:port",
            Self::Path(_) | Self::MaybePath(_) => "path",
            Self::MaybeText(_) => "string",
            Self::Mode(_) => "mode",
            Self::Variants(_) => "list of variants",
            Self::Sysctls(..) => "list of sysctls",
            Self::Ports(_) => "list of ports",
            Self::Texts(_) => "list of strings",
            Self::Limits(_) => "tables",
        }
    }

    /// `0.05–3600`, for numbers.
    pub fn bounds(&self) -> Option<String> {
        match self {
            Self::Number(b, _) => Some(format!("{}–{}", b.min, b.max)),
            Self::Whole(b, _) => Some(format!("{}–{}", b.min, b.max)),
            _ => None,
        }
    }
}

/// One key of the config file.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// Dotted, e.g. `agent.interval_seconds`.
    pub name: &'static str,
    /// Its type, bounds and place.
    pub kind: Kind,
    /// What the default is, where [`Config::default`] leaves it unset and
    /// something else decides (e.g. "`$NODE_NAME`, else the hostname").
    pub unset_means: Option<&'static str>,
    /// What it means, for people.
    pub doc: &'static str,
}

impl Key {
    /// The section, e.g. `agent`.
    pub fn section(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(s, _)| s)
    }

    /// The name within its section, e.g. `interval_seconds`.
    pub fn field(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(_, k)| k)
    }
}

const fn seconds(min: f64, max: f64) -> Bounds<f64> {
    Bounds {
        min,
        max,
        unit: " seconds",
    }
}

const fn number(min: f64, max: f64) -> Bounds<f64> {
    Bounds { min, max, unit: "" }
}

const fn whole(min: u64, max: u64) -> Bounds<u64> {
    Bounds { min, max, unit: "" }
}

const fn whole_seconds(min: u64, max: u64) -> Bounds<u64> {
    Bounds {
        min,
        max,
        unit: " seconds",
    }
}

const fn key(name: &'static str, kind: Kind, doc: &'static str) -> Key {
    Key {
        name,
        kind,
        unset_means: None,
        doc,
    }
}

const fn unset(mut key: Key, means: &'static str) -> Key {
    key.unset_means = Some(means);
    key
}

/// Shortest and longest collection interval, in seconds (the config file and
/// `nettune run --interval` share it).
pub const INTERVAL: Bounds<f64> = seconds(0.05, 3600.0);

/// Every key, section by section, in the order `--print-config` and the README
/// list them.
pub const KEYS: &[Key] = &[
    key(
        "agent.interval_seconds",
        Kind::Number(INTERVAL, |c| &mut c.agent.interval_seconds),
        "seconds between collections",
    ),
    key(
        "agent.listen",
        Kind::Address(|c| &mut c.agent.listen),
        "address of `/metrics`, `/healthz`, `/readyz` (use `0.0.0.0:9977` in a DaemonSet)",
    ),
    key(
        "agent.api_listen",
        Kind::Address(|c| &mut c.agent.api_listen),
        "address of the JSON API (`nettune top --agent` reads it); equal to `agent.listen`, one \
         server serves everything",
    ),
    key(
        "agent.min_event_interval_seconds",
        Kind::Number(seconds(0.0, 60.0), |c| {
            &mut c.agent.min_event_interval_seconds
        }),
        "least time between two collections triggered by urgent events",
    ),
    key(
        "agent.max_pod_series",
        Kind::Whole(whole(1, 100_000), |c| &mut c.agent.max_pod_series),
        "pods with their own series; the rest are summed under `pod=\"_other\"`",
    ),
    unset(
        key(
            "agent.node_name",
            Kind::MaybeText(|c| &mut c.agent.node_name),
            "node name in the Snapshot",
        ),
        "`$NODE_NAME`, else the hostname",
    ),
    key(
        "agent.wake_on_events",
        Kind::Switch(|c| &mut c.agent.wake_on_events),
        "collect (and tune) at once on an urgent kernel event, not only every tick; `false` \
         also has the programs send no events at all (each costs the kernel a ring-buffer \
         wake-up, sent only while the agent has armed that kind of event: at most one per \
         kind per tick)",
    ),
    key(
        "agent.program_stats",
        Kind::Switch(|c| &mut c.agent.program_stats),
        "have the kernel count each eBPF program's runs and run time (`nettune_program_*`); \
         off by default: it costs every program run two clock reads",
    ),
    key(
        "probes.disable_variants",
        Kind::Variants(|c| &mut c.probes.disable_variants),
        "variants never to try, e.g. `[\"fentry\"]`",
    ),
    unset(
        key(
            "probes.btf",
            Kind::MaybePath(|c| &mut c.probes.btf),
            "kernel BTF file (e.g. from btfhub)",
        ),
        "`/sys/kernel/btf/vmlinux`",
    ),
    unset(
        key(
            "probes.tracefs",
            Kind::MaybePath(|c| &mut c.probes.tracefs),
            "tracefs mount point",
        ),
        "found, or mounted at `/sys/kernel/tracing`",
    ),
    key(
        "probes.drop_keys_per_namespace",
        Kind::Whole(whole(1, nettune_common::drops::MAX_DROP_KEYS as u64), |c| {
            &mut c.probes.drop_keys_per_namespace
        }),
        "most (interface, reason) keys one pod's namespace may create in the node's shared \
         drops map; past it its drops are still counted, folded under one interface \
         (`nettune_map_namespaces_over_budget`); the host's namespace has no budget",
    ),
    key(
        "probes.listen_keys_per_namespace",
        Kind::Whole(
            whole(1, nettune_common::listen::MAX_LISTENERS as u64),
            |c| &mut c.probes.listen_keys_per_namespace,
        ),
        "most ports one pod's namespace may create in the node's shared listen-overflow map; \
         past it its overflows are still counted, without their port",
    ),
    key(
        "tuning.mode",
        Kind::Mode(|c| &mut c.tuning.mode),
        "`observe` (no decisions), `advise` (decisions logged and exported, nothing written) or \
         `enforce`",
    ),
    key(
        "tuning.state_dir",
        Kind::Path(|c| &mut c.tuning.state_dir),
        "where the tuner keeps its journal",
    ),
    key(
        "tuning.proc_sys",
        Kind::Path(|c| &mut c.tuning.proc_sys),
        "the `/proc/sys` sysctls are read and written through: a container's own is read-only \
         unless it is privileged, so the `enforce` overlay mounts the node's at `/host/proc/sys` \
         (an absolute path)",
    ),
    key(
        "tuning.limits",
        Kind::Limits(|c| &mut c.tuning.limits),
        "bounds per sysctl, as tables `[tuning.limits.\"<sysctl>\"]` with `floor` and \
         `ceiling`; the name must be an allow-listed `net.*` sysctl, and the ceiling may not be \
         below the floor",
    ),
    key(
        "tuning.exclude",
        Kind::Sysctls(|c| &mut c.tuning.exclude, |_| Ok(())),
        "sysctls nettune must never touch (owned by the CNI or the admin)",
    ),
    key(
        "tuning.guard",
        Kind::Sysctls(|c| &mut c.tuning.guard, guardable),
        "node-wide whole-number sysctls whose lowering below nettune's value by any other \
         writer the kernel refuses (`EPERM`, counted in `nettune_sysctl_guard_refusals_total`) \
         while nettune manages them; off (empty) by default: a component that needs a lower \
         value then fails instead of winning",
    ),
    key(
        "tuning.pod_netns",
        Kind::Texts(|c| &mut c.tuning.pod_netns),
        "workloads whose own namespace may be tuned, by `pod` label, `namespace/name` or pod UID \
         (pods can also opt in with the annotation `nettune.io/tune-netns: \"true\"`); others \
         only get advice",
    ),
    key(
        "tuning.cooldown_seconds",
        Kind::Whole(whole_seconds(0, 86_400), |c| &mut c.tuning.cooldown_seconds),
        "seconds between two changes of one sysctl in one place",
    ),
    key(
        "tuning.verdict_seconds",
        Kind::Whole(whole_seconds(2, 86_400), |c| &mut c.tuning.verdict_seconds),
        "how long a change's evidence is watched, once the change can act, before it is judged \
         effective or ineffective",
    ),
    key(
        "tuning.max_changes_per_hour",
        Kind::Whole(whole(0, 3600), |c| &mut c.tuning.max_changes_per_hour),
        "changes of one sysctl in one place per hour",
    ),
    key(
        "tuning.max_step",
        Kind::Number(number(1.1, 4.0), |c| &mut c.tuning.max_step),
        "largest factor one change may grow a value by",
    ),
    key(
        "tuning.conntrack_threshold",
        Kind::Number(number(0.5, 0.99), |c| &mut c.tuning.conntrack_threshold),
        "conntrack usage that triggers raising the limit: the guide's alert",
    ),
    key(
        "tuning.conntrack_memory_percent",
        Kind::Number(number(0.1, 50.0), |c| {
            &mut c.tuning.conntrack_memory_percent
        }),
        "share of RAM the conntrack table may take, a cap on `nf_conntrack_max`",
    ),
    key(
        "tuning.lowest_ephemeral_port",
        Kind::Whole(whole(1024, 65_535), |c| &mut c.tuning.lowest_ephemeral_port),
        "the lowest port `ip_local_port_range` may start at",
    ),
    key(
        "tuning.reserved_ports",
        Kind::Ports(|c| &mut c.tuning.reserved_ports),
        "ports reserved in `ip_local_reserved_ports` (merged with what is there) before the \
         node's ephemeral range is widened, so outgoing connections cannot take them; the agent \
         adds its own two ports and whatever listens below the range (in a pod, only what \
         listens there is reserved)",
    ),
    unset(
        key(
            "identity.cri_socket",
            Kind::MaybePath(|c| &mut c.identity.cri_socket),
            "the container runtime's CRI socket; `\"\"` turns pod names from the runtime off",
        ),
        "the first of `/run/containerd/containerd.sock`, `/var/run/crio/crio.sock` that exists",
    ),
    key(
        "identity.cri_poll_seconds",
        Kind::Number(seconds(0.1, 300.0), |c| &mut c.identity.cri_poll_seconds),
        "seconds between two polls of the runtime; a namespace nothing names asks for an early \
         poll",
    ),
    key(
        "identity.cri_timeout_seconds",
        Kind::Number(seconds(0.05, 60.0), |c| &mut c.identity.cri_timeout_seconds),
        "seconds one call to the runtime may take",
    ),
    key(
        "dns.timeout_seconds",
        Kind::Number(seconds(0.1, 60.0), |c| &mut c.dns.timeout_seconds),
        "a pod's DNS query with no response after this long counts as unanswered \
         (`nettune_dns_unanswered_total`)",
    ),
    key(
        "tcp.handshake_timeout_seconds",
        Kind::Number(seconds(0.1, 300.0), |c| {
            &mut c.tcp.handshake_timeout_seconds
        }),
        "a pod's TCP handshake with neither SYN-ACK nor RST after this long counts as timed \
         out (`nettune_tcp_connects_total{result=\"timed_out\"}`)",
    ),
    key(
        "cluster.lb_idle_timeout_seconds",
        Kind::Whole(whole_seconds(0, 86_400), |c| {
            &mut c.cluster.lb_idle_timeout_seconds
        }),
        "the idle timeout of the load balancer in front of the Services (AWS NLB: 350, Azure \
         LB: 240 by default); `0` for none. The `idle_timeouts` rule compares \
         it with the node's keepalive",
    ),
];

/// The sections, in the order their first key appears.
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for k in KEYS {
        if !out.contains(&k.section()) {
            out.push(k.section());
        }
    }
    out
}

/// The key named `name`.
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// What `tuning.guard` can guard: node-wide sysctls of one whole number (the
/// kernel program compares the value written as one number; a pod's own
/// namespace is the pod's).
fn guardable(spec: &Tunable) -> Result<(), &'static str> {
    if spec.scope != Scope::Node {
        return Err("only node-wide sysctls can be guarded");
    }
    if spec.shape != Shape::Int {
        return Err("only sysctls of one whole number can be guarded");
    }
    Ok(())
}
