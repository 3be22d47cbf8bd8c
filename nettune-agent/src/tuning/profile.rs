//! Static profiles: named sets of sysctl values, shipped as TOML with the agent
//! (`nettune-agent/profiles/`), for `nettune audit` and `nettune apply`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    io::{SysctlIo, Target},
    value::{self, Value},
};
use crate::sysctl::{self, Direction, Scope};

/// A profile as shipped.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Dotted name → value as `sysctl` prints it.
    pub sysctls: BTreeMap<String, String>,
}

/// The profiles built into the binary.
const SHIPPED: &[&str] = &[include_str!("../../profiles/production.toml")];

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("no profile named `{0}` (shipped: {1})")]
    Unknown(String, String),
    #[error("profile `{name}` is invalid: {reason}")]
    Invalid { name: String, reason: String },
}

/// Every shipped profile, validated against the allow-list.
pub fn shipped() -> Result<Vec<Profile>, ProfileError> {
    SHIPPED
        .iter()
        .map(|text| {
            let p: Profile = toml::from_str(text).map_err(|e| ProfileError::Invalid {
                name: "?".into(),
                reason: e.to_string(),
            })?;
            for (name, v) in &p.sysctls {
                let spec = sysctl::lookup(name).map_err(|e| ProfileError::Invalid {
                    name: p.name.clone(),
                    reason: e.to_string(),
                })?;
                Value::parse(spec, v).map_err(|e| ProfileError::Invalid {
                    name: p.name.clone(),
                    reason: e.to_string(),
                })?;
            }
            Ok(p)
        })
        .collect()
}

/// The shipped profile called `name`.
pub fn named(name: &str) -> Result<Profile, ProfileError> {
    let all = shipped()?;
    let names = all
        .iter()
        .map(|p| p.name.clone())
        .collect::<Vec<_>>()
        .join(", ");
    all.into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ProfileError::Unknown(name.to_owned(), names))
}

/// One line of `nettune audit`.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRow {
    pub sysctl: String,
    pub current: Option<String>,
    pub recommended: String,
    pub scope: Scope,
    pub impact: &'static str,
    pub compliant: bool,
    /// Why it cannot be read, if so (e.g. conntrack not loaded).
    pub note: Option<String>,
}

/// Compares the node's values with `profile`. A room sysctl complies when it gives
/// at least the recommended room; a setting when it is exactly the value.
pub fn audit(io: &impl SysctlIo, profile: &Profile) -> Vec<AuditRow> {
    profile
        .sysctls
        .iter()
        .filter_map(|(name, recommended)| {
            let spec = sysctl::lookup(name).ok()?;
            let wanted = Value::parse(spec, recommended).ok()?;
            let read = io.read(&Target::Node, spec).map_err(|e| e.to_string());
            let current = read.as_ref().ok().and_then(|t| Value::parse(spec, t).ok());
            let compliant = current.as_ref().is_some_and(|c| match spec.direction() {
                Direction::MoreRoom => value::strength(spec, c) >= value::strength(spec, &wanted),
                Direction::Exact => *c == wanted,
            });
            Some(AuditRow {
                sysctl: name.clone(),
                current: current.map(|c| c.to_string().replace('\t', " ")),
                recommended: recommended.clone(),
                scope: spec.scope,
                impact: spec.impact,
                compliant,
                note: read.err(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_is_the_guides_table_and_valid() {
        let p = named("production").unwrap();
        assert_eq!(p.sysctls["net.core.somaxconn"], "32768");
        assert_eq!(p.sysctls["net.netfilter.nf_conntrack_max"], "1048576");
        assert_eq!(p.sysctls.len(), 16);
        assert_eq!(
            named("fast").unwrap_err().to_string(),
            "no profile named `fast` (shipped: production)"
        );
    }

    #[test]
    fn audit_accepts_more_room_but_wants_settings_exact() {
        let dir = std::env::temp_dir().join(format!("nettune-audit-{}", std::process::id()));
        let write = |file: &str, v: &str| {
            let path = dir.join("node").join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, v).unwrap();
        };
        write("net/core/somaxconn", "65535\n");
        write("net/ipv4/tcp_fin_timeout", "60\n");
        write("net/ipv4/ip_local_port_range", "32768\t60999\n");
        let rows = audit(
            &super::super::io::DirSysctls { root: dir.clone() },
            &named("production").unwrap(),
        );
        let row = |n: &str| rows.iter().find(|r| r.sysctl == n).unwrap();
        assert!(row("net.core.somaxconn").compliant);
        assert!(!row("net.ipv4.tcp_fin_timeout").compliant);
        assert!(!row("net.ipv4.ip_local_port_range").compliant);
        assert_eq!(
            row("net.ipv4.ip_local_port_range").current.as_deref(),
            Some("32768 60999")
        );
        assert!(row("net.core.rmem_max").note.is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
