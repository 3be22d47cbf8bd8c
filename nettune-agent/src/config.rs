//! `/etc/nettune/nettune.toml`: every key has a default, and a bad file is refused
//! with the file, the line, the key and the reason — the agent does not start on a
//! guess.
//!
//! The file is found at `--config PATH`, else `$NETTUNE_CONFIG`, else
//! [`DEFAULT_PATH`]; only the default may be missing (then every default applies).

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::{
    model::{probes::Variant, tuning::Mode},
    tune::{Limit, TuningConfig, tunables, value::PortList},
};

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
}

/// `[identity]`: the container runtime as the source of pod names.
#[derive(Clone, Debug, Serialize)]
pub struct IdentityConfig {
    /// The runtime's CRI socket; `None`: the first of containerd's and CRI-O's
    /// usual sockets that exists; an empty path: no runtime source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cri_socket: Option<PathBuf>,
    /// Seconds between two polls of the runtime (0.1 to 300).
    pub cri_poll_seconds: f64,
    /// Seconds one call to the runtime may take (0.05 to 60).
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
    /// Seconds between two collections (0.05 to 3600).
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
    pub max_pod_series: u32,
    /// Node name for labels and the UI (default: `$NODE_NAME`, else the hostname).
    pub node_name: Option<String>,
    /// Collect at once when an urgent kernel event arrives, not only every tick.
    pub wake_on_events: bool,
}

/// `[probes]`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProbesConfig {
    /// Variants never to try (e.g. `["fentry"]`).
    pub disable_variants: Vec<Variant>,
    /// Kernel BTF file instead of /sys/kernel/btf/vmlinux.
    pub btf: Option<PathBuf>,
    /// tracefs mount instead of /sys/kernel/tracing.
    pub tracefs: Option<PathBuf>,
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
            },
            probes: ProbesConfig::default(),
            tuning: TuningConfig::default(),
            identity: IdentityConfig::default(),
        }
    }
}

// The file's shape. Numbers that are range-checked keep their span for the message.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    agent: RawAgent,
    probes: RawProbes,
    tuning: RawTuning,
    identity: RawIdentity,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawIdentity {
    cri_socket: Option<PathBuf>,
    cri_poll_seconds: Option<Spanned<f64>>,
    cri_timeout_seconds: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawAgent {
    interval_seconds: Option<Spanned<f64>>,
    listen: Option<Spanned<String>>,
    api_listen: Option<Spanned<String>>,
    min_event_interval_seconds: Option<Spanned<f64>>,
    max_pod_series: Option<Spanned<i64>>,
    node_name: Option<String>,
    wake_on_events: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawProbes {
    disable_variants: Vec<Variant>,
    btf: Option<PathBuf>,
    tracefs: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawTuning {
    mode: Option<Mode>,
    state_dir: Option<PathBuf>,
    limits: BTreeMap<Spanned<String>, RawLimit>,
    exclude: Vec<Spanned<String>>,
    pod_netns: Vec<String>,
    cooldown_seconds: Option<Spanned<i64>>,
    verdict_seconds: Option<Spanned<i64>>,
    max_changes_per_hour: Option<Spanned<i64>>,
    max_step: Option<Spanned<f64>>,
    conntrack_threshold: Option<Spanned<f64>>,
    conntrack_memory_percent: Option<Spanned<f64>>,
    lowest_ephemeral_port: Option<Spanned<i64>>,
    reserved_ports: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLimit {
    floor: Option<Spanned<i64>>,
    ceiling: Option<Spanned<i64>>,
}

/// Shortest and longest collection interval, in seconds.
pub const INTERVAL_RANGE: std::ops::RangeInclusive<f64> = 0.05..=3600.0;

/// `seconds` if it is a usable interval, else why not (the config file and the
/// command line share this check).
pub fn check_interval(seconds: f64) -> Result<f64, String> {
    check_seconds(seconds, &INTERVAL_RANGE)
}

/// `seconds` if it lies in `range`, else why not.
fn check_seconds(seconds: f64, range: &std::ops::RangeInclusive<f64>) -> Result<f64, String> {
    if seconds.is_finite() && range.contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!(
            "{seconds} is out of range: must be between {} and {} seconds",
            range.start(),
            range.end()
        ))
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted key at byte `offset`: the key on that line, under the last table
/// header above it (or the header itself when the offset is on one).
fn key_at(text: &str, offset: usize) -> String {
    let line_no = line_of(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(line_no - 1).map_or("", |l| l.trim());
    let header = |l: &str| {
        l.strip_prefix('[')
            .map(|l| l.trim_end_matches(']'))
            .map(|h| h.trim_matches(['[', ']']).trim().to_owned())
    };
    if let Some(h) = header(line) {
        return h;
    }
    let key = line.split('=').next().unwrap_or("").trim();
    let section = lines[..line_no - 1]
        .iter()
        .rev()
        .find_map(|l| header(l.trim()));
    match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key.to_owned(),
    }
}

/// Rewords serde's messages for people editing a config file.
fn reason(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let expected = rest
            .split_once("expected ")
            .map(|(_, e)| e.replace("one of ", "").replace('`', ""))
            .unwrap_or_default();
        return format!("unknown key (expected one of: {expected})");
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let rest = rest
            .replace("expected f64", "expected a number")
            .replace("expected i64", "expected a whole number");

        return format!("wrong type: found {rest}");
    }
    message.to_owned()
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
        let error =
            |span: Option<std::ops::Range<usize>>, key: String, reason: String| ConfigError {
                file: file.to_owned(),
                line: span.map(|s| line_of(text, s.start)),
                key,
                reason,
            };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let key = e
                .span()
                .map_or_else(|| "(file)".to_owned(), |s| key_at(text, s.start));
            error(e.span(), key, reason(e.message()))
        })?;
        let mut config = Self::default();

        if let Some(v) = raw.agent.interval_seconds {
            config.agent.interval_seconds = check_interval(*v.get_ref())
                .map_err(|reason| error(Some(v.span()), "agent.interval_seconds".into(), reason))?;
        }
        let address =
            |v: Option<Spanned<String>>, key: &str| -> Result<Option<SocketAddr>, ConfigError> {
                let Some(v) = v else { return Ok(None) };
                v.get_ref().parse().map(Some).map_err(|e| {
                    error(
                        Some(v.span()),
                        format!("agent.{key}"),
                        format!("`{}` is not an address:port ({e})", v.get_ref()),
                    )
                })
            };
        if let Some(a) = address(raw.agent.listen, "listen")? {
            config.agent.listen = a;
        }
        if let Some(a) = address(raw.agent.api_listen, "api_listen")? {
            config.agent.api_listen = a;
        }
        if let Some(v) = raw.agent.min_event_interval_seconds {
            let x = *v.get_ref();
            if !(x.is_finite() && (0.0..=60.0).contains(&x)) {
                return Err(error(
                    Some(v.span()),
                    "agent.min_event_interval_seconds".into(),
                    format!("{x} is out of range: must be between 0 and 60 seconds"),
                ));
            }
            config.agent.min_event_interval_seconds = x;
        }
        if let Some(v) = raw.agent.max_pod_series {
            let value = *v.get_ref();
            config.agent.max_pod_series = u32::try_from(value)
                .ok()
                .filter(|n| (1..=100_000).contains(n))
                .ok_or_else(|| {
                    error(
                        Some(v.span()),
                        "agent.max_pod_series".into(),
                        format!("{value} is out of range: must be between 1 and 100000"),
                    )
                })?;
        }
        config.agent.node_name = raw.agent.node_name;
        if let Some(wake) = raw.agent.wake_on_events {
            config.agent.wake_on_events = wake;
        }

        let seconds = |v: Option<Spanned<f64>>,
                       key: &str,
                       range: std::ops::RangeInclusive<f64>,
                       into: &mut f64| {
            if let Some(v) = v {
                *into = check_seconds(*v.get_ref(), &range)
                    .map_err(|reason| error(Some(v.span()), key.to_owned(), reason))?;
            }
            Ok(())
        };
        seconds(
            raw.identity.cri_poll_seconds,
            "identity.cri_poll_seconds",
            0.1..=300.0,
            &mut config.identity.cri_poll_seconds,
        )?;
        seconds(
            raw.identity.cri_timeout_seconds,
            "identity.cri_timeout_seconds",
            0.05..=60.0,
            &mut config.identity.cri_timeout_seconds,
        )?;
        config.identity.cri_socket = raw.identity.cri_socket;

        config.probes = ProbesConfig {
            disable_variants: raw.probes.disable_variants,
            btf: raw.probes.btf,
            tracefs: raw.probes.tracefs,
        };
        if let Some(mode) = raw.tuning.mode {
            config.tuning.mode = mode;
        }
        if let Some(dir) = raw.tuning.state_dir {
            config.tuning.state_dir = dir;
        }
        for name in raw.tuning.exclude {
            tunables::lookup(name.get_ref())
                .map_err(|e| error(Some(name.span()), "tuning.exclude".into(), e.to_string()))?;
            config.tuning.exclude.push(name.into_inner());
        }
        config.tuning.pod_netns = raw.tuning.pod_netns;
        let t = &mut config.tuning;
        let float = |v: Option<Spanned<f64>>, key: &str, lo: f64, hi: f64, into: &mut f64| {
            if let Some(v) = v {
                let x = *v.get_ref();
                if !(x.is_finite() && (lo..=hi).contains(&x)) {
                    return Err(error(
                        Some(v.span()),
                        format!("tuning.{key}"),
                        format!("{x} is out of range: must be between {lo} and {hi}"),
                    ));
                }
                *into = x;
            }
            Ok(())
        };
        float(raw.tuning.max_step, "max_step", 1.1, 4.0, &mut t.max_step)?;
        float(
            raw.tuning.conntrack_threshold,
            "conntrack_threshold",
            0.5,
            0.99,
            &mut t.conntrack_threshold,
        )?;
        float(
            raw.tuning.conntrack_memory_percent,
            "conntrack_memory_percent",
            0.1,
            50.0,
            &mut t.conntrack_memory_percent,
        )?;
        let whole =
            |v: Option<Spanned<i64>>, key: &str, hi: i64| -> Result<Option<u64>, ConfigError> {
                let Some(v) = v else { return Ok(None) };
                let x = *v.get_ref();
                if !(0..=hi).contains(&x) {
                    return Err(error(
                        Some(v.span()),
                        format!("tuning.{key}"),
                        format!("{x} is out of range: must be between 0 and {hi}"),
                    ));
                }
                Ok(u64::try_from(x).ok())
            };
        if let Some(v) = whole(raw.tuning.cooldown_seconds, "cooldown_seconds", 86_400)? {
            t.cooldown_seconds = v;
        }
        let verdict_span = raw.tuning.verdict_seconds.as_ref().map(Spanned::span);
        if let Some(v) = whole(raw.tuning.verdict_seconds, "verdict_seconds", 86_400)? {
            if v < 2 {
                return Err(error(
                    verdict_span,
                    "tuning.verdict_seconds".into(),
                    format!("{v} is out of range: must be between 2 and 86400"),
                ));
            }
            t.verdict_seconds = v;
        }
        if let Some(v) = whole(
            raw.tuning.max_changes_per_hour,
            "max_changes_per_hour",
            3600,
        )? {
            t.max_changes_per_hour = u32::try_from(v).unwrap_or(u32::MAX);
        }
        if let Some(v) = raw.tuning.lowest_ephemeral_port {
            let port = *v.get_ref();
            if !(1024..=65535).contains(&port) {
                return Err(error(
                    Some(v.span()),
                    "tuning.lowest_ephemeral_port".into(),
                    format!("{port} is out of range: must be between 1024 and 65535"),
                ));
            }
            t.lowest_ephemeral_port = u64::try_from(port).unwrap_or(1024);
        }
        if let Some(items) = raw.tuning.reserved_ports {
            t.reserved_ports.clear();
            for item in items {
                if PortList::parse(item.get_ref()).is_none_or(|p| p.to_string().is_empty()) {
                    return Err(error(
                        Some(item.span()),
                        "tuning.reserved_ports".into(),
                        format!(
                            "`{}` is not a port or a port range like 30000-32767",
                            item.get_ref()
                        ),
                    ));
                }
                t.reserved_ports.push(item.into_inner());
            }
        }

        for (name, raw_limit) in raw.tuning.limits {
            let key = format!("tuning.limits.\"{}\"", name.get_ref());
            let spec = tunables::lookup(name.get_ref())
                .map_err(|e| error(Some(name.span()), key.clone(), e.to_string()))?;
            let most = spec.most_room().ok_or_else(|| {
                error(
                    Some(name.span()),
                    key.clone(),
                    "is a setting, not room: nettune never raises it, so it takes no limits".into(),
                )
            })?;
            let bound = |v: Option<Spanned<i64>>,
                         which: &str|
             -> Result<Option<(u64, Spanned<i64>)>, ConfigError> {
                let Some(v) = v else { return Ok(None) };
                let n = u64::try_from(*v.get_ref())
                    .ok()
                    .filter(|n| *n <= most)
                    .ok_or_else(|| {
                        error(
                            Some(v.span()),
                            format!("{key}.{which}"),
                            format!(
                                "{} is out of range: must be between 0 and {most}, the most the \
                                 kernel accepts",
                                v.get_ref()
                            ),
                        )
                    })?;
                Ok(Some((n, v)))
            };
            let floor = bound(raw_limit.floor, "floor")?;
            let ceiling = bound(raw_limit.ceiling, "ceiling")?;
            if let (Some((f, _)), Some((c, span))) = (&floor, &ceiling)
                && c < f
            {
                return Err(error(
                    Some(span.span()),
                    format!("{key}.ceiling"),
                    format!("{c} is below the floor {f}"),
                ));
            }
            config.tuning.limits.insert(
                name.into_inner(),
                Limit {
                    floor: floor.map(|(n, _)| n),
                    ceiling: ceiling.map(|(n, _)| n),
                },
            );
        }
        Ok(config)
    }

    /// The tuner's settings with the agent's own HTTP port added to the ports
    /// reserved before the ephemeral range is widened.
    pub fn tuning_with_own_ports(&self) -> TuningConfig {
        let mut tuning = self.tuning.clone();
        tuning
            .reserved_ports
            .push(self.agent.listen.port().to_string());
        tuning
    }

    /// The effective config as TOML (for `nettune run --print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
