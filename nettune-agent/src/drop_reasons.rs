//! Names of the kernel's packet drop reasons (`enum skb_drop_reason`).
//!
//! The values differ between kernels (TC_INGRESS is 73 on 6.18 and something else
//! elsewhere), so nettune never compiles a table in: it reads the enum from the
//! running kernel's BTF, and when BTF lacks it, from the `__print_symbolic` list in
//! tracefs's `skb/kfree_skb` format. Names are shown without the
//! `SKB_DROP_REASON_` prefix, as the kernel's own tracepoint prints them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{btf::Btf, tracefs::Tracefs};

const PREFIX: &str = "SKB_DROP_REASON_";

/// Where the names came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Btf,
    Tracefs,
    /// Neither was available: reasons are shown as numbers.
    None,
}

/// Drop reason value → name, for the running kernel.
#[derive(Clone, Debug, Serialize)]
pub struct DropReasons {
    pub source: Source,
    names: BTreeMap<u32, String>,
}

impl DropReasons {
    /// Reads the names from `btf`, else from `tracefs`; records which worked.
    pub fn resolve(btf: Option<&Btf>, tracefs: Option<&Tracefs>) -> Self {
        if let Some(names) = btf.and_then(|b| b.enum_variants("skb_drop_reason").ok()) {
            return Self::from_enum(&names);
        }
        if let Some(names) = tracefs
            .and_then(|t| t.format_text("skb", "kfree_skb").ok())
            .and_then(|text| parse_print_symbolic(&text))
        {
            return Self {
                source: Source::Tracefs,
                names,
            };
        }
        Self {
            source: Source::None,
            names: BTreeMap::new(),
        }
    }

    /// From `enum skb_drop_reason` variants as BTF lists them.
    pub fn from_enum(variants: &[(String, i64)]) -> Self {
        let names = variants
            .iter()
            .filter_map(|(name, value)| {
                let value = u32::try_from(*value).ok()?;
                Some((value, name.strip_prefix(PREFIX).unwrap_or(name).to_owned()))
            })
            .collect();
        Self {
            source: Source::Btf,
            names,
        }
    }

    /// The name of `reason`, or its number when this kernel does not name it.
    pub fn name(&self, reason: u32) -> String {
        self.names
            .get(&reason)
            .cloned()
            .unwrap_or_else(|| format!("REASON_{reason}"))
    }

    /// The value named `name` (without prefix), if this kernel has it.
    pub fn value(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(v, _)| *v)
    }
}

/// Parses `__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, ...)`.
pub fn parse_print_symbolic(format: &str) -> Option<BTreeMap<u32, String>> {
    let start = format.find("__print_symbolic(REC->reason")?;
    let mut names = BTreeMap::new();
    for pair in format[start..].split('{').skip(1) {
        let Some((body, _)) = pair.split_once('}') else {
            continue;
        };
        let Some((value, name)) = body.split_once(',') else {
            continue;
        };
        let (Ok(value), name) = (value.trim().parse::<u32>(), name.trim().trim_matches('"')) else {
            continue;
        };
        names.insert(value, name.to_owned());
    }
    (!names.is_empty()).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_btf_lose_the_prefix() {
        let reasons = DropReasons::from_enum(&[
            ("SKB_NOT_DROPPED_YET".into(), 0),
            ("SKB_DROP_REASON_NO_SOCKET".into(), 3),
            ("SKB_DROP_REASON_TC_INGRESS".into(), 73),
        ]);
        assert_eq!(reasons.name(3), "NO_SOCKET");
        assert_eq!(reasons.name(0), "SKB_NOT_DROPPED_YET");
        assert_eq!(reasons.value("TC_INGRESS"), Some(73));
        assert_eq!(reasons.name(999), "REASON_999");
    }

    #[test]
    fn names_from_the_tracefs_format() {
        let format = r#"print fmt: "reason: %s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 73, "TC_INGRESS" })"#;
        let names = parse_print_symbolic(format).unwrap();
        assert_eq!(names.get(&73).map(String::as_str), Some("TC_INGRESS"));
        assert_eq!(names.len(), 3);
        assert!(parse_print_symbolic("print fmt: \"%d\", REC->x").is_none());
    }
}
