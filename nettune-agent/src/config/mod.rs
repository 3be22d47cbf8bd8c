//! `/etc/nettune/nettune.toml`: every key has a default, and a bad file is refused
//! with the file, the line, the key and the reason — the agent does not start on a
//! guess.
//!
//! Every key is one entry in [`keys::KEYS`] (type, bounds, doc, and where its
//! value lives in [`Config`]): the parser, `--print-config` and the README's
//! table are made from it.
//!
//! The file is found at `--config PATH`, else `$NETTUNE_CONFIG`, else
//! [`DEFAULT_PATH`]; only the default may be missing (then every default applies).

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::model::probes::Variant;

pub mod keys;
mod parse;
pub use parse::OutOfRange;
pub mod print;
mod tuning;
pub use tuning::{Limit, NODE_PORTS, TuningConfig};

/// Where the agent looks when neither `--config` nor the variable names a file.
pub const DEFAULT_PATH: &str = "/etc/nettune/nettune.toml";
/// Environment variable naming the config file.
pub const ENV_VAR: &str = "NETTUNE_CONFIG";

/// A config file that cannot be used, and exactly why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line, when the problem is at a place in the file.
    pub line: Option<usize>,
    /// Dotted key, e.g. `agent.interval_seconds`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}: {}", self.file, self.key, self.reason),
            None => write!(f, "{}: {}: {}", self.file, self.key, self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The effective configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// `[agent]`: collection and serving.
    pub agent: AgentConfig,
    /// `[probes]`: which kernel programs to try, and where BTF and tracefs are.
    pub probes: ProbesConfig,
    /// `[tuning]`: the tuner.
    pub tuning: TuningConfig,
    /// `[identity]`: where pod names come from.
    pub identity: IdentityConfig,
    /// `[dns]`: when a pod's DNS query counts as unanswered.
    pub dns: DnsConfig,
    /// `[tcp]`: when a pod's handshake counts as timed out.
    pub tcp: TcpConfig,
    /// `[cluster]`: what the node cannot see of the cluster around it.
    pub cluster: ClusterConfig,
}

/// `[cluster]`: facts about the cluster the node cannot read itself.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterConfig {
    /// The idle timeout of the load balancer in front of the cluster's Services,
    /// seconds; 0: none, or not known.
    pub lb_idle_timeout_seconds: u64,
}

/// `[dns]`: the pods' DNS, as the tc programs see it.
#[derive(Clone, Debug, Serialize)]
pub struct DnsConfig {
    /// Seconds after which a DNS query with no response counts as unanswered
    /// (glibc's resolver gives up on a server after 5 by default).
    pub timeout_seconds: f64,
}

/// `[tcp]`: the pods' TCP handshakes, as the tc programs see them.
#[derive(Clone, Debug, Serialize)]
pub struct TcpConfig {
    /// Seconds after which a SYN with neither SYN-ACK nor RST counts as a timed
    /// out connect (Linux has sent it three times by then).
    pub handshake_timeout_seconds: f64,
}

/// `[identity]`: the container runtime as the source of pod names.
#[derive(Clone, Debug, Serialize)]
pub struct IdentityConfig {
    /// The runtime's CRI socket; `None`: the first of containerd's and CRI-O's
    /// usual sockets that exists; an empty path: no runtime source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cri_socket: Option<PathBuf>,
    /// Seconds between two polls of the runtime.
    pub cri_poll_seconds: f64,
    /// Seconds one call to the runtime may take.
    pub cri_timeout_seconds: f64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            cri_socket: None,
            cri_poll_seconds: 1.0,
            cri_timeout_seconds: 2.0,
        }
    }
}

impl IdentityConfig {
    /// Whether the runtime source is turned off (`cri_socket = ""`).
    pub fn cri_disabled(&self) -> bool {
        self.cri_socket
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
    }
}

/// `[agent]`.
#[derive(Clone, Debug, Serialize)]
pub struct AgentConfig {
    /// Seconds between two collections.
    pub interval_seconds: f64,
    /// Address of `/metrics`, `/healthz` and `/readyz` (the only endpoints served
    /// there: a DaemonSet binds it on every interface for Prometheus).
    pub listen: SocketAddr,
    /// Address of the JSON API (`/api/v1/snapshot`, which names pods, processes
    /// and ports): loopback unless configured otherwise. When equal to `listen`,
    /// one server serves everything.
    pub api_listen: SocketAddr,
    /// Least time between two collections triggered by urgent kernel events (a
    /// flood of events must not keep collections running back to back).
    pub min_event_interval_seconds: f64,
    /// Most pods with their own metric series; the rest are summed under `_other`.
    pub max_pod_series: u64,
    /// Node name for labels and the UI (default: `$NODE_NAME`, else the hostname).
    pub node_name: Option<String>,
    /// Collect at once when an urgent kernel event arrives, not only every tick.
    pub wake_on_events: bool,
    /// Have the kernel count each eBPF program's runs and run time, exported as
    /// `nettune_program_*` (each run then pays two clock reads).
    pub program_stats: bool,
}

/// `[probes]`.
#[derive(Clone, Debug, Serialize)]
pub struct ProbesConfig {
    /// Variants never to try (e.g. `["fentry"]`).
    pub disable_variants: Vec<Variant>,
    /// Kernel BTF file instead of /sys/kernel/btf/vmlinux.
    pub btf: Option<PathBuf>,
    /// tracefs mount instead of /sys/kernel/tracing.
    pub tracefs: Option<PathBuf>,
    /// Most keys one pod's namespace may create in the shared drops map; past
    /// it, its new keys are folded into one (per reason).
    pub drop_keys_per_namespace: u64,
    /// Most keys one pod's namespace may create in the shared listen-overflow
    /// map; past it, its new ports are folded into one.
    pub listen_keys_per_namespace: u64,
}

impl Default for ProbesConfig {
    fn default() -> Self {
        let (drops, listen) = nettune_common::budget::default_budgets();
        Self {
            disable_variants: Vec::new(),
            btf: None,
            tracefs: None,
            drop_keys_per_namespace: u64::from(drops),
            listen_keys_per_namespace: u64::from(listen),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            agent: AgentConfig {
                interval_seconds: 1.0,
                listen: SocketAddr::from(([127, 0, 0, 1], 9977)),
                api_listen: SocketAddr::from(([127, 0, 0, 1], 9978)),
                min_event_interval_seconds: 0.1,
                max_pod_series: 1000,
                node_name: None,
                wake_on_events: true,
                program_stats: false,
            },
            probes: ProbesConfig::default(),
            tuning: TuningConfig::default(),
            identity: IdentityConfig::default(),
            dns: DnsConfig {
                timeout_seconds: 5.0,
            },
            tcp: TcpConfig {
                handshake_timeout_seconds: 5.0,
            },
            cluster: ClusterConfig {
                lb_idle_timeout_seconds: 0,
            },
        }
    }
}

/// `seconds` if it is a usable collection interval, else why not (the config
/// file and `nettune run --interval` share this check).
pub fn check_interval(seconds: f64) -> Result<f64, OutOfRange> {
    parse::check_number(seconds, &keys::INTERVAL)
}

impl Config {
    /// The defaults, with pod names from the container runtime turned off (for
    /// engines over a fake node, which must not ask the machine's runtime).
    pub fn without_runtime() -> Self {
        let mut config = Self::default();
        config.identity.cri_socket = Some(PathBuf::new());
        config
    }

    /// The file to read: `explicit`, else `$NETTUNE_CONFIG`, else the default.
    pub fn locate(explicit: Option<&Path>) -> (PathBuf, bool) {
        if let Some(p) = explicit {
            return (p.to_path_buf(), true);
        }
        if let Some(p) = std::env::var_os(ENV_VAR) {
            return (PathBuf::from(p), true);
        }
        (PathBuf::from(DEFAULT_PATH), false)
    }

    /// Reads and validates the config; a missing default file means defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = Self::locate(explicit);
        let file = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&file, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(e) => Err(ConfigError {
                file,
                line: None,
                key: "(file)".into(),
                reason: format!("cannot read: {e}"),
            }),
        }
    }

    /// Parses and validates `text`, naming `file` in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        parse::parse(file, text)
    }

    /// The tuner's settings with the agent's own ports (metrics and JSON API)
    /// added to the ports reserved before the ephemeral range is widened.
    pub fn tuning_with_own_ports(&self) -> TuningConfig {
        let mut tuning = self.tuning.clone();
        for port in [self.agent.listen.port(), self.agent.api_listen.port()] {
            tuning.reserved_ports.push(port.to_string());
        }
        tuning
    }

    /// The effective config as TOML, every key with what it means (for
    /// `nettune run --print-config`).
    pub fn to_toml(&self) -> String {
        print::toml(self)
    }
}

#[cfg(test)]
mod tests;
