//! Static profiles for `nettune audit` and `nettune apply`: named sets of sysctl
//! values. `production` is the network tuning guide's table: every tunable's
//! `guide` value ([`crate::model::tunables`]), so the guide's numbers live in one place.

use std::collections::BTreeMap;

use serde::Serialize;

use super::actuator::Actuator;
use crate::{
    model::{
        tunables::{self, Direction, Scope},
        tuning::Target,
        value::{self, Value},
    },
    sys::System,
};

/// A named set of sysctl values.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Its name, as `--profile` takes it.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Dotted name → value as `sysctl` prints it.
    pub sysctls: BTreeMap<String, String>,
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No profile has that name.
    #[error("no profile named `{0}` (shipped: {1})")]
    Unknown(String, String),
}

/// The guide's values for every tunable it names.
pub fn production() -> Profile {
    Profile {
        name: "production".into(),
        description: "Kubernetes node network tuning guide, production values".into(),
        sysctls: tunables::ALL
            .iter()
            .filter_map(|t| Some((t.name.to_owned(), t.guide?.to_owned())))
            .collect(),
    }
}

/// The profile called `name`.
pub fn named(name: &str) -> Result<Profile, ProfileError> {
    let all = [production()];
    let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    let names = names.join(", ");
    all.into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ProfileError::Unknown(name.to_owned(), names))
}

/// One line of `nettune audit`.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRow {
    /// The sysctl's dotted name.
    pub sysctl: String,
    /// The node's value, if it can be read.
    pub current: Option<String>,
    /// The profile's value.
    pub recommended: String,
    /// Node-wide or per namespace.
    pub scope: Scope,
    /// What it governs.
    pub impact: &'static str,
    /// Whether the node's value complies.
    pub compliant: bool,
    /// Why it cannot be read, if so (e.g. conntrack not loaded).
    pub note: Option<String>,
}

/// Compares the node's values with `profile`. A room sysctl complies when it gives
/// at least the recommended room in every element (a ranked one by rank); a
/// setting when it is exactly the value.
pub fn audit<S: System>(actuator: &Actuator<S>, profile: &Profile) -> Vec<AuditRow> {
    profile
        .sysctls
        .iter()
        .filter_map(|(name, recommended)| {
            let spec = tunables::lookup(name).ok()?;
            let wanted = Value::parse(spec, recommended).ok()?;
            let read = actuator
                .read_text(&Target::Node, spec)
                .map_err(|e| e.to_string());
            let current = read.as_ref().ok().and_then(|t| Value::parse(spec, t).ok());
            let compliant = current.as_ref().is_some_and(|c| match spec.direction {
                Direction::MoreRoom => value::has_room_of(spec, c, &wanted),
                Direction::Setting => *c == wanted,
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
    use crate::sys::fake::FakeSystem;

    #[test]
    fn production_is_the_guides_table_and_valid() {
        let p = named("production").unwrap();
        assert_eq!(p.sysctls["net.core.somaxconn"], "32768");
        assert_eq!(p.sysctls["net.netfilter.nf_conntrack_max"], "1048576");
        assert_eq!(p.sysctls.len(), 16);
        for (name, v) in &p.sysctls {
            Value::parse(tunables::lookup(name).unwrap(), v).unwrap();
        }
        assert_eq!(
            named("fast").unwrap_err().to_string(),
            "no profile named `fast` (shipped: production)"
        );
    }

    #[test]
    fn audit_accepts_more_room_but_wants_settings_exact() {
        let system = FakeSystem::new();
        system.set_sysctl(&Target::Node, "net.core.somaxconn", "65535");
        system.set_sysctl(&Target::Node, "net.ipv4.tcp_fin_timeout", "60");
        system.set_sysctl(
            &Target::Node,
            "net.ipv4.ip_local_port_range",
            "32768\t60999",
        );
        let rows = audit(&Actuator::new(system), &production());
        let row = |n: &str| rows.iter().find(|r| r.sysctl == n).unwrap();
        assert!(row("net.core.somaxconn").compliant);
        assert!(!row("net.ipv4.tcp_fin_timeout").compliant);
        assert!(!row("net.ipv4.ip_local_port_range").compliant);
        assert_eq!(
            row("net.ipv4.ip_local_port_range").current.as_deref(),
            Some("32768 60999")
        );
        assert!(row("net.core.rmem_max").note.is_some());
    }

    #[test]
    fn audit_wants_the_room_of_every_element() {
        let system = FakeSystem::new();
        // The maximum complies, the default does not.
        system.set_sysctl(&Target::Node, "net.ipv4.tcp_rmem", "8192\t262144\t16777216");
        system.set_sysctl(
            &Target::Node,
            "net.ipv4.tcp_wmem",
            "8192\t16777216\t16777216",
        );
        system.set_sysctl(&Target::Node, "net.ipv4.tcp_tw_reuse", "2");
        let rows = audit(&Actuator::new(system), &production());
        let row = |n: &str| rows.iter().find(|r| r.sysctl == n).unwrap();
        assert!(!row("net.ipv4.tcp_rmem").compliant);
        assert!(row("net.ipv4.tcp_wmem").compliant);
        // 2 (loopback only) is less than the guide's 1 (on).
        assert!(!row("net.ipv4.tcp_tw_reuse").compliant);
    }
}
