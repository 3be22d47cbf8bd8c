//! Names of the kernel's packet drop reasons (`enum skb_drop_reason`).
//!
//! The values differ between kernels (`TC_INGRESS` is 73 on 6.18 and something
//! else elsewhere), so nettune never compiles a table in: [`crate::probes`] reads
//! the running kernel's enum from BTF, else from the tracefs format of
//! `skb/kfree_skb`. Names are shown without the `SKB_DROP_REASON_` prefix, as the
//! kernel's own tracepoint prints them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

const PREFIX: &str = "SKB_DROP_REASON_";

/// Where the names came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameSource {
    /// `enum skb_drop_reason` in the kernel's BTF.
    Btf,
    /// The `__print_symbolic` list of the `skb/kfree_skb` tracefs format.
    Tracefs,
    /// Neither was available: reasons are shown as numbers.
    None,
}

/// Drop reason value → name, for the running kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropReasons {
    /// Where the names came from.
    pub source: NameSource,
    names: BTreeMap<u32, String>,
}

impl Default for DropReasons {
    fn default() -> Self {
        Self {
            source: NameSource::None,
            names: BTreeMap::new(),
        }
    }
}

impl DropReasons {
    /// From `(name, value)` pairs as `enum skb_drop_reason` lists them; the prefix
    /// is dropped.
    pub fn from_enum(variants: &[(String, i64)]) -> Self {
        let names = variants
            .iter()
            .filter_map(|(name, value)| {
                let value = u32::try_from(*value).ok()?;
                Some((value, name.strip_prefix(PREFIX).unwrap_or(name).to_owned()))
            })
            .collect();
        Self {
            source: NameSource::Btf,
            names,
        }
    }

    /// From a tracefs `__print_symbolic` table (already without the prefix).
    pub fn from_tracefs(names: BTreeMap<u32, String>) -> Self {
        Self {
            source: NameSource::Tracefs,
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
}
