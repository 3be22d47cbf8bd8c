//! The configuration as people read it, made from the key table: the TOML of
//! `nettune run --print-config` (every key, with what it means) and the README's
//! table of keys.

use toml::Value;

use super::{
    Config,
    keys::{self, Key, Kind},
};

/// A key's value in `config`, as TOML; `None` when unset.
fn value(key: &Key, config: &Config) -> Option<Value> {
    let mut c = config.clone();
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    Some(match key.kind {
        Kind::Number(_, f) => Value::Float(*f(&mut c)),
        Kind::Whole(_, f) => Value::Integer(i64::try_from(*f(&mut c)).unwrap_or(i64::MAX)),
        Kind::Switch(f) => Value::Boolean(*f(&mut c)),
        Kind::Address(f) => Value::String(f(&mut c).to_string()),
        Kind::Path(f) => Value::String(f(&mut c).display().to_string()),
        Kind::MaybePath(f) => Value::String(f(&mut c).as_ref()?.display().to_string()),
        Kind::MaybeText(f) => Value::String(f(&mut c).clone()?),
        Kind::Mode(f) => Value::String(f(&mut c).name().to_owned()),
        Kind::Variants(f) => Value::Array(
            f(&mut c)
                .iter()
                .map(|v| Value::String(v.name().to_owned()))
                .collect(),
        ),
        Kind::Sysctls(f, _) | Kind::Ports(f) | Kind::Texts(f) => strings(f(&mut c)),
        Kind::Limits(_) => return None,
    })
}

/// The key's meaning with its bounds, on one line.
fn meaning(key: &Key) -> String {
    match key.kind.bounds() {
        Some(b) => format!("{} ({b})", key.doc),
        None => key.doc.to_owned(),
    }
}

/// `config` as TOML: every section and key, each under a comment saying what it
/// means; unset keys are commented out with what decides them instead.
pub(super) fn toml(config: &Config) -> String {
    let mut out =
        String::from("# nettune's effective configuration (nettune run --print-config)\n");
    for section in keys::sections() {
        out.push_str(&format!("\n[{section}]\n"));
        for key in keys::KEYS.iter().filter(|k| k.section() == section) {
            if matches!(key.kind, Kind::Limits(_)) {
                continue;
            }
            out.push_str(&format!("# {}\n", meaning(key)));
            match value(key, config) {
                Some(v) => out.push_str(&format!("{} = {v}\n", key.field())),
                None => out.push_str(&format!(
                    "# {} unset: {}\n",
                    key.field(),
                    key.unset_means.unwrap_or("not set")
                )),
            }
        }
    }
    for (sysctl, limit) in &config.tuning.limits {
        out.push_str(&format!("\n[tuning.limits.\"{sysctl}\"]\n"));
        if let Some(f) = limit.floor {
            out.push_str(&format!("floor = {f}\n"));
        }
        if let Some(c) = limit.ceiling {
            out.push_str(&format!("ceiling = {c}\n"));
        }
    }
    out
}

/// The README's table of keys.
pub fn markdown_table() -> String {
    let defaults = Config::default();
    let mut out = String::from("| key | type | default | meaning |\n|---|---|---|---|\n");
    for key in keys::KEYS {
        let default = match (value(key, &defaults), key.unset_means) {
            (Some(v), _) => format!("`{v}`"),
            (None, Some(means)) => means.to_owned(),
            (None, None) => "none".to_owned(),
        };
        out.push_str(&format!(
            "| `{}` | {} | {default} | {} |\n",
            key.name,
            key.kind.type_name(),
            meaning(key).replace('|', "\\|")
        ));
    }
    out
}
